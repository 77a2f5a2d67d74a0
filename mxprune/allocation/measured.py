"""Measured latency: whole nets built and timed beside the dense net, the table's predictor calibrated on them
(NetAdapt's loop: `search`)."""
import dataclasses
import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .. import latency as latency_mod
from ..errors import OverPruneError
from ..flops import Shapes, group_keep_from_counts
from ..graph import DependencyGraph
from .problem import Allocator, Problem


def shrunk_twin(net, graph: DependencyGraph, keep: Dict[int, np.ndarray], input_shape, batch: int,
                backend: str = 'auto'):
    """A copy of `net` shrunk to `keep`, hybridized for inference at `batch` (the net itself is not touched)."""
    import copy
    from .. import masks as masks_mod
    from ..benchmark import prepare
    from ..shrink import apply_plan, plan_from_keep
    masks_mod.clear_cached(net)
    twin = copy.deepcopy(net)
    for block in list(masks_mod.masked_blocks(twin)):
        masks_mod.remove(block, fold_first=False)  # timing does not depend on the values
    apply_plan(twin, plan_from_keep(graph, {gi: k for gi, k in keep.items() if not k.all()}), input_shape)
    return prepare(twin, (batch,) + tuple(input_shape[1:]), backend)


def timed_ms(twin, shape, repeats: int = 10, reference: Optional[tuple] = None) -> float:
    """Median call (ms) of a prepared net over `repeats` rounds of 3 calls; with reference = (prepared net, its ms),
    the two are timed interleaved and the result rescaled by ref ms / ref ms now, because a shared machine's speed
    drifts while ratios of nets timed together hold. The median, not the fastest call: some calls run fast."""
    from ..benchmark import compare
    if reference is None:
        return compare({'net': twin}, shape, repeats=repeats, per_repeat=3)['net']['ms']
    ref_net, ref_ms = reference
    t = compare({'net': twin, 'ref': ref_net}, shape, repeats=repeats, per_repeat=3)
    return t['net']['ms'] * ref_ms / t['ref']['ms']


class LatencyModel:
    """The latency cost model of one net on this machine: the table's predictor (`latency.Predictor`) calibrated on
    the dense net and a uniformly halved one. Whole nets are measured against the dense net timed beside them
    (`measure`), in the milliseconds of its first measurement (`dense_net`: that dense net, prepared at `batch`)."""

    def __init__(self, net, graph: DependencyGraph, input_shape, batch: int, step: int, backend: str = 'auto',
                 shapes: Optional[Shapes] = None):
        self.net, self.graph, self.input_shape, self.batch, self.step = net, graph, tuple(input_shape), batch, step
        self.backend = backend
        self.table = latency_mod.LatencyTable(batch, backend)
        self.predictor = latency_mod.Predictor(graph, self.table, shapes)
        self.dense_keep = {g.index: np.ones(g.size, bool) for g in graph.groups}
        self.dense_net = shrunk_twin(net, graph, self.dense_keep, input_shape, batch, backend)
        self.dense_ms = timed_ms(self.dense_net, (batch,) + tuple(input_shape[1:]))
        half = dict(self.dense_keep)
        for g in graph.groups:
            if not g.frozen and g.producers:
                unit = step * g.blocks // math.gcd(step, g.blocks)
                n = max(unit, int(np.ceil(g.size / 2 / unit)) * unit)
                if n < g.size:
                    half[g.index] = group_keep_from_counts(g, n)
        self.half_ms = self.measure(half)
        self.predictor.calibrate([(self.dense_keep, self.dense_ms), (half, self.half_ms)])
        self.calibration = {'dense_ms': self.dense_ms, 'dense_predicted_ms': self.predict(self.dense_keep),
                            'half_ms': self.half_ms, 'half_predicted_ms': self.predict(half),
                            'a': self.predictor.a, 'b': self.predictor.b}
        self.table.save()

    def measure(self, keep: Dict[int, np.ndarray]) -> float:
        """Measured ms of the net shrunk to `keep`, timed beside the dense net."""
        twin = shrunk_twin(self.net, self.graph, {**self.dense_keep, **keep}, self.input_shape, self.batch,
                           self.backend)
        return timed_ms(twin, (self.batch,) + tuple(self.input_shape[1:]), reference=(self.dense_net, self.dense_ms))

    def predict(self, keep: Dict[int, np.ndarray]) -> float:
        return self.predictor.total({**self.dense_keep, **keep})


def search(allocator: Allocator, p: Problem, model, target_ms: float, *,
           measure: Optional[Callable[[Dict[int, np.ndarray]], float]] = None, rounds: int = 4,
           tolerance: float = 0.02, goal: Optional[float] = None) -> Tuple[Dict[int, int], dict]:
    """Kept counts whose *measured* latency meets `target_ms`, and a report of every pass (NetAdapt's loop).

    Each pass allocates to a budget in predicted milliseconds (p.cost must be model.predictor), builds and times the
    chosen net (`measure`, default `model.measure`) and rescales the next budget by predicted/measured of that net,
    so a table a few per cent off near the target is corrected where it matters. Stops when a measured net lies
    within `tolerance` below the target. `goal`: the first pass's budget in predicted milliseconds (default the
    target; a caller that measured nets before passes the target corrected by them). Returns the measured net that
    met the target keeping the most saliency,
    else the fastest one measured (report['met'] False). When the table says the target is out of reach, the
    fastest allowed net (`Problem.cheapest`) is timed before the target is refused.
    """
    measure = measure or model.measure
    goal, tried, seen, at_limit = target_ms if goal is None else goal, [], set(), False
    for _ in range(max(1, rounds)):
        q = dataclasses.replace(p, budget=goal)
        try:
            counts = allocator.allocate(q)
        except OverPruneError:
            if tried:
                break  # the corrected budget is beyond the cheapest widths: keep what was measured
            counts, at_limit = q.cheapest(), True  # the table may be pessimistic: time the fastest net first
        key = tuple(sorted(counts.items()))
        if key in seen:  # the correction led back to a net already measured
            break
        seen.add(key)
        keep = p.keep(counts)
        tried.append({'counts': counts, 'goal_ms': goal, 'predicted_ms': float(p.cost.total(keep)),
                      'measured_ms': float(measure(keep)), 'value': p.value(counts)})
        predicted, measured = tried[-1]['predicted_ms'], tried[-1]['measured_ms']
        if at_limit and measured > target_ms:
            raise OverPruneError(f'latency target {target_ms:.2f} ms cannot be reached: the fastest widths the '
                                 f'limits allow measured {measured:.2f} ms (predicted {predicted:.2f} ms, dense '
                                 f'{model.dense_ms:.2f} ms)')
        at_limit = False
        if target_ms * (1.0 - tolerance) <= measured <= target_ms:
            break
        goal = target_ms * predicted / measured
    met = [t for t in tried if t['measured_ms'] <= target_ms]
    pick = max(met, key=lambda t: t['value']) if met else min(tried, key=lambda t: t['measured_ms'])
    report = {'target_ms': target_ms, 'met': bool(met), 'predicted_ms': pick['predicted_ms'],
              'measured_ms': pick['measured_ms'],
              'rounds': [{k: v for k, v in t.items() if k != 'counts'} for t in tried]}
    return pick['counts'], report

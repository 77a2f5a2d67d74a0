"""Latency-aware pruning: a measured latency table of the layers at candidate widths, a whole-net predictor
calibrated on real measurements, and a NetAdapt-style greedy that removes channels where they save the most
predicted time per unit of importance lost.

Why: FLOPs mislead on real hardware. oneDNN computes in blocks of channels (16 on an AVX-512 CPU, 8 on AVX2), so
widths that are not multiples of the block can be slower than the dense layer (on an AVX-512 EPYC,
cifar_resnet56_v1 at 12/24/48 ran 0.77x of dense), and which widths are fast differs from one CPU to the next.

The table holds, per layer signature (kind, kernel, stride, spatial size, depthwise or not) and (in, out) width, the
time of that layer (conv + BN + ReLU, hybridized the way inference runs: the fused oneDNN backend when the build has
it) at the target batch, timed in context: behind a producer layer, whose own time is subtracted, relative to a
fixed reference layer timed in the same interleaved rounds (the machine's speed drifts). It is
cached per machine (CPU model, threads, MXNet version, backend) in $MXNET_HOME/mxprune/latency-<key>.json.
Whole-net latency is predicted as a * sum(layers) + b, with a and b fitted on measured whole nets (dense and a
uniformly halved one), and every prediction reported next to a measurement.

`search` closes the loop the way NetAdapt does: the greedy picks widths by prediction, the picked net is then built
and measured, and the measured/predicted ratio of that net corrects the target for the next greedy pass (from the
same starting widths). The net returned is one that was measured, not only predicted, to meet the target.
"""
import hashlib
import json
import os
import platform
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from . import io
from .errors import OverPruneError
from .flops import group_keep_from_counts, keep_top
from .graph import DependencyGraph, Group, Layer


def machine_key(batch: int, backend: str) -> str:
    cpu = platform.processor() or ''
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), cpu)
    except OSError:
        pass
    # 'in-context-ref-median': entries are timed behind a producer layer, residual convs with their add, in units of
    # a reference layer timed in the same rounds, median over rounds (LatencyTable._measure); older tables were
    # timed otherwise and are not mixed in
    raw = (f'{cpu}|{os.cpu_count()}|{os.environ.get("OMP_NUM_THREADS", "")}|{mx.__version__}|{backend}|{batch}|'
           f'in-context-ref-median')
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def cache_path(batch: int, backend: str) -> str:
    home = os.environ.get('MXNET_HOME', os.path.join('~', '.mxnet'))
    return os.path.expanduser(os.path.join(home, 'mxprune', f'latency-{machine_key(batch, backend)}.json'))


def signature(layer: Layer, residual: bool = False) -> Optional[tuple]:
    """What a layer's time depends on besides its widths; None for layers the table does not model. `residual`: the
    conv's output is added to a tensor of its own shape (see `residual_convs`), timed with that add."""
    a = layer.attrs
    if layer.kind == 'conv':
        sig = ('conv', a.get('kernel'), a.get('stride', '(1, 1)'), a.get('pad', '(0, 0)'), a.get('dilate', '(1, 1)'),
               tuple(int(v) for v in layer.in_shape[2:]), 'chan' in layer.spaces)
        sig += (('groups', layer.groups),) if layer.groups > 1 else ()  # grouped: timed with its groups
        return sig + ('sum',) if residual and tuple(layer.in_shape[2:]) == tuple(layer.out_shape[2:]) else sig
    if layer.kind == 'dense':
        return ('dense', int(np.prod(layer.in_shape[1:])) // max(1, layer.in_shape[1]))
    return None


_ADDS = {'elemwise_add', '_plus', '_Plus', '_add', 'broadcast_add', 'broadcast_plus', 'add_n', 'ElementWiseSum'}


def residual_convs(graph: DependencyGraph) -> set:
    """Node names of the convs whose output (through BatchNorm) is added to another tensor: one per add, the one
    computed last, into which oneDNN fuses the sum. Measured here (AVX2 EPYC, fused oneDNN, batch 64): a residual
    block at widths 29/13 ran 12.2 ms against 7.8 ms without its add, so the add is part of the layer's time, and
    far from constant across widths."""
    from . import masks as masks_mod
    with masks_mod.bypassed():
        out = graph.net(mx.sym.var('data'))
    sym = mx.sym.Group(list(out)) if isinstance(out, (list, tuple)) else out
    nodes = json.loads(sym.tojson())['nodes']

    def conv_behind(nid: int) -> Optional[int]:
        while nodes[nid]['op'] == 'BatchNorm':
            nid = nodes[nid]['inputs'][0][0]
        return nid if nodes[nid]['op'] == 'Convolution' else None
    found = set()
    for node in nodes:
        if node['op'] in _ADDS:
            convs = [c for c in (conv_behind(i[0]) for i in node['inputs']) if c is not None]
            if convs:
                found.add(nodes[max(convs)]['name'])
    return found


def _tuple(text: str) -> tuple:
    return tuple(int(v) for v in str(text).strip('()[] ').split(',') if v.strip())


def _build(sig: tuple, cin: int, cout: int):
    """The layer alone (conv + BN + ReLU, as the fused graph runs it), initialised, and its input shape."""
    from mxnet.gluon import nn
    net = nn.HybridSequential()
    if sig[0] == 'conv':
        _, kernel, stride, pad, dilate, side, depthwise = sig[:7]
        groups = next((x[1] for x in sig[7:] if isinstance(x, (tuple, list)) and x[0] == 'groups'), 1)
        net.add(nn.Conv2D(cout, _tuple(kernel), _tuple(stride), _tuple(pad), _tuple(dilate),
                          groups=cin if depthwise else groups, in_channels=cin, use_bias=False),
                nn.BatchNorm(in_channels=cout))
        if 'sum' not in sig[7:]:
            net.add(nn.Activation('relu'))
        shape = (cin,) + tuple(side)
    else:
        net.add(nn.Dense(cout, in_units=cin * sig[1]))
        shape = (cin * sig[1],)
    net.initialize(mx.init.Xavier())
    return net, shape


class _Residual(mx.gluon.HybridBlock):
    """producer -> layer, plus the producer's input, then ReLU: a residual block's last conv in context."""

    def __init__(self, producer, layer):
        super().__init__()
        self.producer, self.layer = producer, layer

    def hybrid_forward(self, F, x):
        return F.Activation(self.layer(self.producer(x)) + x, act_type='relu')


# The layer every table entry is timed beside (3x3 conv 32->32 + BN + ReLU on 16x16 maps, at the table's batch)
REFERENCE = ('conv', '(3, 3)', '(1, 1)', '(1, 1)', '(1, 1)', (16, 16), False)


class LatencyTable:
    """Measured per-layer latencies (ms) at one batch size, cached on disk.

    Entries are measured in units of a fixed reference layer (`REFERENCE`) timed in the same interleaved rounds,
    then expressed in milliseconds through the reference's time when the table was started (`reference_ms`, kept
    with the table). A table fills up over many runs, and a shared VM's speed drifts by 15 % from minute to
    minute: entries in plain milliseconds measured at different times did not add up (a fresh table predicted the
    latency bench's nets within 2-7 %, the same machine's table filled over a day was 9-20 % off).
    """

    def __init__(self, batch: int = 64, backend: str = 'auto', repeats: int = 7, path: Optional[str] = None):
        from .benchmark import fused_backend_available
        self.batch = batch
        self.fused = fused_backend_available() if backend == 'auto' else backend == 'MKLDNN'
        self.backend = 'MKLDNN' if self.fused else 'plain'
        self.repeats = repeats
        self.path = path or cache_path(batch, self.backend)
        self.entries: Dict[str, float] = {}
        self.reference_ms: Optional[float] = None
        self.measured = 0
        self._reference = None
        if os.path.exists(self.path):
            with open(self.path, encoding='utf-8') as f:
                saved = json.load(f)
            self.entries, self.reference_ms = saved.get('entries', {}), saved.get('reference_ms')

    def save(self) -> None:
        io.write_json(self.path, {'batch': self.batch, 'backend': self.backend, 'reference_ms': self.reference_ms,
                                  'entries': self.entries})

    def get(self, sig: tuple, cin: int, cout: int) -> float:
        key = json.dumps([list(sig), cin, cout])
        if key not in self.entries:
            self.entries[key] = self._measure(sig, cin, cout)
            self.measured += 1
        return self.entries[key]

    def _measure(self, sig: tuple, cin: int, cout: int) -> float:
        """A conv is timed in context: behind a 1x1 producer conv (+ BN + ReLU) of `cin` channels, minus that producer
        alone. Inside a fused net a layer's input already is in oneDNN's layout (or in whatever layout an odd width
        forces), so timing the layer on a plain array would count a reorder the net does not do, and miss the ones
        it does. A residual block's last conv is timed with its add: producer (`cout` -> `cin`), conv + BN, plus the
        producer's input, ReLU. Each round's difference is divided by the reference's time in that round; the entry
        is the median over rounds, in the reference's milliseconds."""
        from mxnet.gluon import nn
        net, shape = _build(sig, cin, cout)
        if self._reference is None:
            self._reference = _build(REFERENCE, 32, 32)
        if sig[0] != 'conv':
            t_net, t_ref = self._time([(net, shape), self._reference])
            units = t_net / t_ref
        else:
            if 'sum' in sig[7:]:  # the skip tensor has the layer's output width: the producer maps it to `cin`
                producer, shape = _build(('conv', '(1, 1)', '(1, 1)', '(0, 0)', '(1, 1)', sig[5], False), cout, cin)
                both = _Residual(producer, net)
            else:
                producer, _ = _build(('conv', '(1, 1)', '(1, 1)', '(0, 0)', '(1, 1)', sig[5], False), cin, cin)
                both = nn.HybridSequential()
                both.add(producer, net)
            t_both, t_producer, t_ref = self._time([(both, shape), (producer, shape), self._reference])
            # a difference of two timings: never zero or negative
            units = np.maximum(t_both - t_producer, 0.05 * t_both) / t_ref
        if self.reference_ms is None:  # the first entry of a table fixes its milliseconds
            self.reference_ms = float(np.median(t_ref))
        return float(np.median(units)) * self.reference_ms

    def _time(self, nets: Sequence[tuple], calls: int = 3) -> List[np.ndarray]:
        """Per-call ms of each (net, input shape) in each of `repeats` rounds of `calls` calls, the nets interleaved
        round by round, so that a layer, its producer and the reference run under the same load when they are
        compared."""
        inputs = [mx.nd.random.uniform(shape=(self.batch,) + tuple(shape)) for _, shape in nets]
        for (net, _), x in zip(nets, inputs):
            if self.fused:
                net.hybridize(backend='MKLDNN', static_alloc=True, static_shape=True)
            else:
                net.hybridize(static_alloc=True, static_shape=True)
            for _ in range(3):
                net(x).wait_to_read()
        out = np.zeros((len(nets), self.repeats))
        for r in range(self.repeats):
            for i, ((net, _), x) in enumerate(zip(nets, inputs)):
                t = time.perf_counter()
                for _ in range(calls):
                    net(x)
                mx.nd.waitall()
                out[i, r] = (time.perf_counter() - t) / calls * 1000
        return list(out)


class Predictor:
    """Whole-net latency = a * sum over Conv/Dense layers of the table's entries + b (a, b fitted on measurements)."""

    def __init__(self, graph: DependencyGraph, table: LatencyTable):
        self.graph, self.table = graph, table
        residual = residual_convs(graph)
        self.layers = [(layer, sig) for layer in graph.weighted_layers()
                       for sig in [signature(layer, layer.node in residual)] if sig]
        self.a, self.b = 1.0, 0.0
        self._members: Dict[str, List[tuple]] = {}
        for g in graph.groups:
            for m in g.members:
                if m.attr == 'weight' and m.layer.weighted:
                    self._members.setdefault(m.layer.path, []).append((g.index, m.role, m.channels, m.axis,
                                                                       m.positions, m.groups))

    def widths(self, layer: Layer, keep: Dict[int, np.ndarray]) -> Tuple[int, int]:
        """(in, out) channel counts of a layer when groups keep `keep` (group index -> bool mask)."""
        shape = layer.param_shapes['weight']
        dropped = {'in': 0, 'out': 0, 'chan': 0}
        for gi, role, chans, _, _, _ in self._members.get(layer.path, []):
            k = keep.get(gi)
            if k is not None:
                dropped[role] += int((~k[chans]).sum())
        if 'chan' in layer.spaces:
            c = shape[0] - dropped['chan']
            return c, c
        if layer.kind == 'dense':
            return layer.in_shape[1] - dropped['in'], shape[0] - dropped['out']
        return shape[1] * layer.groups - dropped['in'], shape[0] - dropped['out']  # grouped: C_in = groups x axis 1

    def macs(self, keep: Dict[int, np.ndarray]) -> int:
        """MACs of the net when groups keep `keep` (as `flops.structured` counts them, at a fraction of its cost: the
        greedy asks this for every width it tries)."""
        total = 0
        for layer in self.graph.weighted_layers():
            sizes = list(layer.param_shapes['weight'])
            for gi, _, chans, axis, positions, groups in self._members.get(layer.path, []):
                k = keep.get(gi)
                if k is not None:  # a grouped conv's input: `groups` dropped channels narrow axis 1 by one
                    sizes[axis] -= int(positions[~k[chans]].size) // groups
            total += int(np.prod(sizes)) * layer.spatial()
        return total

    def raw(self, keep: Dict[int, np.ndarray]) -> float:
        return sum(self.table.get(sig, *self.widths(layer, keep)) for layer, sig in self.layers)

    def predict(self, keep: Dict[int, np.ndarray]) -> float:
        return self.a * self.raw(keep) + self.b

    def calibrate(self, points: Sequence[Tuple[Dict[int, np.ndarray], float]]) -> None:
        """Fits a, b by least squares on (keep, measured ms) pairs (one pair: scale only)."""
        xs = np.array([self.raw(k) for k, _ in points])
        ys = np.array([ms for _, ms in points])
        if len(points) == 1:
            self.a, self.b = float(ys[0] / xs[0]), 0.0
        else:
            self.a, self.b = (float(v) for v in np.polyfit(xs, ys, 1))


# ----------------------------------------------------------------------------------------------------------------
# Measuring whole nets and the NetAdapt-style search


def shrunk_twin(net, graph: DependencyGraph, keep: Dict[int, np.ndarray], input_shape, batch: int,
                backend: str = 'auto'):
    """A copy of `net` shrunk to `keep`, hybridized for inference at `batch` (the net itself is not touched)."""
    import copy
    from . import masks as masks_mod
    from .benchmark import prepare
    from .shrink import apply_plan, plan_from_keep
    masks_mod.clear_cached(net)
    twin = copy.deepcopy(net)
    for block in list(masks_mod.masked_blocks(twin)):
        masks_mod.remove(block, fold_first=False)  # timing does not depend on the values
    apply_plan(twin, plan_from_keep(graph, {gi: k for gi, k in keep.items() if not k.all()}), input_shape)
    return prepare(twin, (batch,) + tuple(input_shape[1:]), backend)


def measure_keep(net, graph: DependencyGraph, keep: Dict[int, np.ndarray], input_shape, batch: int,
                 backend: str = 'auto', repeats: int = 10, reference: Optional[tuple] = None) -> float:
    """Latency (ms) of `net` shrunk to `keep`, at `batch`: the median of `repeats` x 3 calls.

    reference: (prepared net, its ms): timed interleaved with the net, and the result rescaled by ref ms / ref ms
    now. On a shared VM the whole machine drifts: the same dense resnet56 measured 122 and 148 ms a minute apart,
    while dense/pruned ratios timed interleaved held; so a net is judged against the dense net timed beside it.
    """
    twin = shrunk_twin(net, graph, keep, input_shape, batch, backend)
    return _timed_ms(twin, (batch,) + tuple(input_shape[1:]), repeats, reference)


def _timed_ms(twin, shape, repeats: int, reference: Optional[tuple] = None) -> float:
    """Median call (ms) of a prepared net, rescaled by a reference timed beside it (see `measure_keep`).

    The median, not the fastest call: this VM also has calls that run fast. Four runs of 20 interleaved rounds gave
    the x16 FLOPs net of the latency bench speed-ups of 1.76-1.94x from fastest calls and 1.90-1.93x from medians.
    """
    from .benchmark import compare
    if reference is None:
        return compare({'net': twin}, shape, repeats=repeats, per_repeat=3)['net']['ms']
    ref_net, ref_ms = reference
    t = compare({'net': twin, 'ref': ref_net}, shape, repeats=repeats, per_repeat=3)
    return t['net']['ms'] * ref_ms / t['ref']['ms']


class LatencyModel:
    """Table + predictor for one net, calibrated on the dense net and a uniformly halved one. Whole nets are
    measured against the dense net timed beside them (`measure`), in the milliseconds of its first measurement
    (`dense_net`: that dense net, prepared for inference at `batch`)."""

    def __init__(self, net, graph: DependencyGraph, input_shape, batch: int, step: int, backend: str = 'auto'):
        self.net, self.graph, self.input_shape, self.batch, self.step = net, graph, tuple(input_shape), batch, step
        self.backend = backend
        self.table = LatencyTable(batch, backend)
        self.predictor = Predictor(graph, self.table)
        self.dense_keep = {g.index: np.ones(g.size, bool) for g in graph.groups}
        self.dense_net = shrunk_twin(net, graph, self.dense_keep, input_shape, batch, backend)
        self.dense_ms = _timed_ms(self.dense_net, (batch,) + tuple(input_shape[1:]), 10)
        half = dict(self.dense_keep)
        for g in graph.groups:
            if not g.frozen and g.producers:
                gstep = _step(step, g)
                n = max(gstep, int(np.ceil(g.size / 2 / gstep)) * gstep)
                if n < g.size:
                    half[g.index] = group_keep_from_counts(g, n)
        self.half_ms = self.measure(half)
        self.predictor.calibrate([(self.dense_keep, self.dense_ms), (half, self.half_ms)])
        self.calibration = {'dense_ms': self.dense_ms, 'dense_predicted_ms': self.predictor.predict(self.dense_keep),
                            'half_ms': self.half_ms, 'half_predicted_ms': self.predictor.predict(half),
                            'a': self.predictor.a, 'b': self.predictor.b}
        self.table.save()

    def measure(self, keep: Dict[int, np.ndarray]) -> float:
        """Measured ms of the net shrunk to `keep`, timed beside the dense net (see `measure_keep`)."""
        return measure_keep(self.net, self.graph, keep, self.input_shape, self.batch, self.backend,
                            reference=(self.dense_net, self.dense_ms))

    def predict(self, keep: Dict[int, np.ndarray]) -> float:
        return self.predictor.predict({**self.dense_keep, **keep})


def _step(step: int, group: Group) -> int:
    """The width step of a group: a multiple of its blocks (Group.blocks), so every width tried is valid."""
    return step * group.blocks // int(np.gcd(step, group.blocks))


def _importance(scores: np.ndarray, gone: np.ndarray, macs: float) -> float:
    """Importance of the channels `gone` (a bool mask over a group) that carry `macs` MACs over every layer the group
    couples: their mean score times those MACs (Torch-Pruning sums a group over its layers; MACs also weigh a
    channel by its layers' kernel, spatial size and fan-in). Scores are normalised per group, so without this a
    channel of a 16-wide stage-1 group (32x32 maps) would count as much as one of a 64-wide stage-3 group (8x8 maps)
    while carrying 4x the compute. With equal scores the greedy then removes the MACs that cost the most time."""
    return float(np.mean(scores[gone])) * float(macs) if gone.any() else 0.0


def refill(model: LatencyModel, groups: Sequence[Group], scores: Dict[int, np.ndarray],
           current: Dict[int, np.ndarray], counts: Dict[int, int], budget_ms: float) -> Dict[int, int]:
    """Widens groups back, most importance regained per predicted millisecond first, while the predicted latency
    stays within `budget_ms`: the greedy's last step can overshoot the target by a whole width step."""
    by_index = {g.index: g for g in groups}
    counts = dict(counts)
    keep = {gi: keep_top(scores[gi], current[gi], n, by_index[gi].blocks) for gi, n in counts.items()}
    now = model.predict(keep)
    while True:
        best, macs_now = None, model.predictor.macs(keep)
        for gi, n in counts.items():
            cap = int(current[gi].sum())
            step = _step(model.step, by_index[gi])
            w = (n // step + 1) * step
            while n < cap:
                w = min(w, cap)
                trial = dict(keep)
                trial[gi] = keep_top(scores[gi], current[gi], w, by_index[gi].blocks)
                t = model.predict(trial)
                if t <= budget_ms:
                    regained = _importance(scores[gi], trial[gi] & ~keep[gi], model.predictor.macs(trial) - macs_now)
                    value = regained / max(t - now, 1e-6)
                    if best is None or value > best[0]:
                        best = (value, gi, w, trial[gi], t)
                if w >= cap:
                    break
                w += step
        if best is None:
            return counts
        _, gi, w, k, now = best
        counts[gi], keep[gi] = w, k


def greedy(model: LatencyModel, groups: Sequence[Group], scores: Dict[int, np.ndarray],
           current: Dict[int, np.ndarray], target_ms: float, min_keep: Callable[[int, int], int],
           narrowest: bool = False) -> Dict[int, int]:
    """Kept channel counts per group meeting the predicted latency `target_ms` (with `narrowest`, when the target
    is beyond the limits, the narrowest widths reached instead of an error).

    NetAdapt-style (Yang et al. 2018): repeatedly narrow the group whose next faster width saves the most
    predicted time per unit of importance removed (`_importance`: the mean normalised score of the channels cut
    times the MACs they carry). A group's next width is the widest multiple of the step below its width
    that the table predicts to be faster, so widths that are slow on this machine are skipped over, never chosen.
    """
    by_index = {g.index: g for g in groups}
    keep = {g.index: current[g.index].copy() for g in groups if g.index in scores}

    now = model.predict(keep)
    while now > target_ms:
        best, macs_now = None, model.predictor.macs(keep)
        for gi in keep:
            n = int(keep[gi].sum())
            lo = min_keep(gi, n)
            step = _step(model.step, by_index[gi])
            w = (n - 1) // step * step
            while w >= max(lo, 1):
                trial = dict(keep)
                trial[gi] = keep_top(scores[gi], keep[gi], w, by_index[gi].blocks)
                t = model.predict(trial)
                if t < now:
                    lost = _importance(scores[gi], keep[gi] & ~trial[gi], macs_now - model.predictor.macs(trial))
                    gain = (now - t) / (lost + 1e-9)
                    if best is None or gain > best[0]:
                        best = (gain, gi, trial[gi], t)
                    break
                w -= step
        if best is None:
            if narrowest:
                break
            raise OverPruneError(f'latency target {target_ms:.2f} ms cannot be reached: the narrowest widths the '
                                 f'limits allow are predicted at {now:.2f} ms (dense {model.dense_ms:.2f} ms)')
        _, gi, k, now = best
        keep[gi] = k
    model.table.save()
    return {gi: int(k.sum()) for gi, k in keep.items()}


def search(model: LatencyModel, groups: Sequence[Group], scores: Dict[int, np.ndarray],
           current: Dict[int, np.ndarray], target_ms: float, min_keep: Callable[[int, int], int], *,
           measure: Optional[Callable[[Dict[int, np.ndarray]], float]] = None, rounds: int = 4,
           tolerance: float = 0.02) -> Tuple[Dict[int, int], dict]:
    """Kept counts per group whose *measured* latency meets `target_ms`, and a report of every round.

    Each round runs `greedy` to a target in predicted milliseconds, builds and times the chosen net (`measure`,
    default: `model.measure`, timed beside the dense net) and rescales the next round's target by predicted/measured
    of that net, so a table that is a few per cent off near the target is corrected where it matters. Stops when a
    measured net lies within `tolerance` below the target; a net that met it with more slack is then widened back
    (`refill`) and measured once more. Returns the measured net that met the target with the most predicted latency
    left (the least pruned), else the fastest one measured (report['met'] is False).
    """
    by_index = {g.index: g for g in groups}
    measure = measure or model.measure
    goal, tried, seen, at_limit = target_ms, [], set(), False

    def key(counts: Dict[int, int]) -> tuple:
        return tuple(sorted(counts.items()))

    def time_net(counts: Dict[int, int], goal_ms: float, **extra) -> dict:
        seen.add(key(counts))
        keep = {gi: group_keep_from_counts(by_index[gi], n) for gi, n in counts.items()}
        tried.append({'counts': counts, 'goal_ms': goal_ms, 'predicted_ms': model.predict(keep),
                      'measured_ms': float(measure(keep)), **extra})
        return tried[-1]

    for _ in range(max(1, rounds)):
        try:
            counts = greedy(model, groups, scores, current, goal, min_keep)
        except OverPruneError:
            if tried:
                break  # the corrected goal is beyond the narrowest widths: keep what was measured
            # the table may be pessimistic: time the narrowest widths before giving up on the target
            counts = greedy(model, groups, scores, current, goal, min_keep, narrowest=True)
            at_limit = True
        if key(counts) in seen:  # the correction led back to a net already measured
            break
        t = time_net(counts, goal)
        predicted, measured = t['predicted_ms'], t['measured_ms']
        if at_limit and measured > target_ms:
            raise OverPruneError(f'latency target {target_ms:.2f} ms cannot be reached: the narrowest widths the '
                                 f'limits allow measured {measured:.2f} ms (predicted {predicted:.2f} ms, dense '
                                 f'{model.dense_ms:.2f} ms)')
        at_limit = False
        if target_ms * (1.0 - tolerance) <= measured <= target_ms:
            break
        goal = target_ms * predicted / measured
    met = [t for t in tried if t['measured_ms'] <= target_ms]
    pick = max(met, key=lambda t: t['predicted_ms']) if met else min(tried, key=lambda t: t['measured_ms'])
    if met and pick['measured_ms'] < target_ms * (1.0 - tolerance):
        # the greedy stepped past the target: widen back into the measured slack, then measure that net too
        budget = target_ms * pick['predicted_ms'] / pick['measured_ms']
        counts = refill(model, groups, scores, current, pick['counts'], budget)
        if key(counts) not in seen:
            t = time_net(counts, budget, widened=True)
            if t['measured_ms'] <= target_ms:
                pick = t
    report = {'target_ms': target_ms, 'met': bool(met), 'predicted_ms': pick['predicted_ms'],
              'measured_ms': pick['measured_ms'],
              'rounds': [{k: v for k, v in t.items() if k != 'counts'} for t in tried]}
    return pick['counts'], report

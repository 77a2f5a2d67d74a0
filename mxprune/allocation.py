"""Allocation: how many channels each coupled group keeps, given per-channel saliency, a cost model and a budget.

A structured pruning step is a resource-allocation problem (HALP: Shen et al., "Structural Pruning via
Latency-Saliency Knapsack", NeurIPS 2022): choose one width per group so that the net's cost fits a budget while the
saliency kept is as large as possible. Allocators, by name or object (`ALLOCATORS`):

    uniform    the same fraction of every group (Torch-Pruning's default): the smallest fraction that fits
    threshold  one threshold on all groups' scores (global ranking): the lowest threshold that fits
    knapsack   the widths that keep the most saliency within the budget: a multiple-choice knapsack, solved exactly
               by dynamic programming over the cost in whole units (`solve`)

Cost models (`cost_model`): `channels` (kept channels of the pruned groups: a sparsity target), `macs` and `params`
(exact counts of the shrunk net, `mxprune.flops`), `latency` (the measured per-layer table, `mxprune.latency`).
Each gives the cost of the whole net for keep-masks (`total`) and, for one group, the cost at each of its candidate
widths with the other groups held (`curve`).

Costs are not additive over groups: a conv's MACs or time depend on the widths of its input and its output group, and
a residual group's width changes every layer it feeds. The knapsack therefore solves the problem linearised at the
current widths (the curves), re-linearises at the solution it found, and checks each solution against the true
cost; the best one that fits is widened into whatever budget is left, one allowed width at a time, most saliency per
cost first. On a cost that is additive (channels) the first solution is the exact optimum.

`LatencyModel` and `search` close the loop on real time the way NetAdapt does: the allocation is built as a net and
timed beside the dense net, and the measured/predicted ratio corrects the budget of the next pass.
"""
import dataclasses
import heapq
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import latency as latency_mod
from .errors import MxPruneError, OverPruneError
from .flops import MacsCost, ParamsCost, Shapes, group_keep_from_counts, top_counts
from .graph import DependencyGraph
from .registry import Registry

ALLOCATORS: Registry['Allocator'] = Registry('allocator')


# ----------------------------------------------------------------------------------------------------------------
# Cost models


class ChannelCost:
    """Kept channels of a set of groups (what a sparsity target counts)."""
    name = 'channels'
    monotone = True  # never cheaper wider

    def __init__(self, sizes: Dict[int, int]):
        self.sizes = dict(sizes)

    @property
    def dense(self) -> float:
        return float(sum(self.sizes.values()))

    def _kept(self, gi: int, keep: Dict[int, np.ndarray]) -> int:
        k = keep.get(gi)
        return self.sizes[gi] if k is None else int(k.sum())

    def total(self, keep: Dict[int, np.ndarray]) -> float:
        return float(sum(self._kept(gi, keep) for gi in self.sizes))

    def curve(self, gi: int, stack: np.ndarray, keep: Dict[int, np.ndarray], total: Optional[float] = None) \
            -> np.ndarray:
        total = self.total(keep) if total is None else total
        return total - self._kept(gi, keep) + stack.sum(axis=1).astype(np.float64)


def cost_model(kind: str, graph: DependencyGraph, groups: Sequence = (), shapes: Optional[Shapes] = None,
               layers: Optional[frozenset] = None):
    """The cost model a target kind sums: channels (of `groups`), macs (of the layer paths `layers`, default all)
    or params. Latency is `LatencyModel`'s."""
    if kind == 'channels':
        return ChannelCost({g.index: g.size for g in groups})
    if kind == 'macs':
        return MacsCost(graph, shapes, layers)
    if kind == 'params':
        return ParamsCost(graph, shapes)
    raise MxPruneError(f'cost model {kind!r}; choose one of channels, macs, params (latency: LatencyModel)')


# ----------------------------------------------------------------------------------------------------------------
# The problem an allocator solves


@dataclasses.dataclass
class Problem:
    """One allocation: per group its channel scores (higher is kept first) and the channels still alive; the cost
    model and the budget the net's cost must not exceed; the widths each group may take.

    A group's candidate widths are the multiples of `step` (and of its `blocks`: grouped convolutions keep equal
    counts per conv group) from its `lo` up to what it keeps now, plus what it keeps now; groups narrower than `step`
    take any width. `step_ratio` < 1 also keeps each group within that fraction of its live channels of where it is
    (at least one width down is always allowed): a trust region for one step of a gradual schedule. `whole_steps`:
    a width left between steps by a gradual schedule that is not an allowed width itself must be left (the last
    step). `fixed` holds the keep-masks of the groups not allocated here (their cost counts, unchanged).
    """
    scores: Dict[int, np.ndarray]
    current: Dict[int, np.ndarray]
    cost: Any
    budget: float
    lo: Dict[int, int] = dataclasses.field(default_factory=dict)
    step: int = 1
    blocks: Dict[int, int] = dataclasses.field(default_factory=dict)
    fixed: Dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    describe: Optional[Callable[[float], str]] = None  # a cost in the target's words, for messages
    step_ratio: float = 1.0
    whole_steps: bool = False  # what a group keeps now is a candidate only if it is an allowed width itself

    def __post_init__(self):
        self._widths: Dict[int, np.ndarray] = {}

    @property
    def groups(self) -> List[int]:
        return list(self.current)

    def alive(self, gi: int) -> int:
        return int(self.current[gi].sum())

    def widths(self, gi: int) -> np.ndarray:
        """Candidate kept counts of group gi, ascending."""
        if gi not in self._widths:
            size, alive, b = len(self.current[gi]), self.alive(gi), self.blocks.get(gi, 1)
            unit = b * self.step // math.gcd(b, self.step)
            unit = unit if size >= unit else b
            lo = min(max(1, self.lo.get(gi, 1)), alive)
            first = -(-lo // unit) * unit
            widths = set(range(first, alive, unit))
            if not widths or not self.whole_steps or alive % unit == 0 or alive == size:
                widths.add(alive)
            widths = np.array(sorted(widths), np.int64)
            if self.step_ratio < 1.0 and len(widths) > 1:
                floor = alive - max(unit, int(self.step_ratio * alive + 1e-9) // unit * unit)
                if not getattr(self.cost, 'monotone', False):
                    # a latency table has slow widths: the next width that is faster is always within reach
                    curve = self.cost.curve(gi, self.masks(gi, widths), self.keep(self.alive_counts()))
                    cheaper = widths[:-1][curve[:-1] < curve[-1] - 1e-9 * max(1.0, abs(curve[-1]))]
                    floor = min(floor, int(cheaper.max())) if len(cheaper) else floor
                widths = widths[widths >= floor]
            self._widths[gi] = widths
        return self._widths[gi]

    def masks(self, gi: int, widths: Sequence[int]) -> np.ndarray:
        """Keep-masks (one row per width) of the best-scored live channels."""
        return top_counts(self.scores[gi], self.current[gi], widths, self.blocks.get(gi, 1))

    def keep(self, counts: Dict[int, int]) -> Dict[int, np.ndarray]:
        return {**self.fixed, **{gi: self.masks(gi, [n])[0] for gi, n in counts.items()}}

    def total(self, counts: Dict[int, int]) -> float:
        return float(self.cost.total(self.keep(counts)))

    def value(self, counts: Dict[int, int]) -> float:
        """Saliency kept: the sum of the scores of the channels kept."""
        return float(sum(np.sort(self.scores[gi][self.current[gi]])[::-1][:n].sum() for gi, n in counts.items()))

    def fits(self, cost: float) -> bool:
        return cost <= self.budget + 1e-9 * max(1.0, abs(self.budget))

    def alive_counts(self) -> Dict[int, int]:
        return {gi: self.alive(gi) for gi in self.groups}

    def narrowest(self) -> Dict[int, int]:
        return {gi: int(self.widths(gi)[0]) for gi in self.groups}

    def cheapest(self) -> Dict[int, int]:
        """The allowed widths of least cost (the narrowest, for MACs, parameters and channels). On a latency table
        narrow odd widths can be slower than wider ones, and only when the layers on both sides of a conv change
        together: so the start is the cheapest of the narrowest widths and the narrowest multiples of 2, 4, ... 64,
        from which each group in turn moves to its cheapest width with the others held, until none moves."""
        if getattr(self.cost, 'monotone', False):
            return self.narrowest()
        starts = [self.narrowest()]
        for m in (2, 4, 8, 16, 32, 64):
            starts.append({gi: int(next((w for w in self.widths(gi) if w % m == 0), self.widths(gi)[0]))
                           for gi in self.groups})
        counts = min(starts, key=self.total)
        for _ in range(10):
            moved = False
            for gi in self.groups:
                keep = self.keep(counts)
                curve = self.cost.curve(gi, self.masks(gi, self.widths(gi)), keep)
                best = int(self.widths(gi)[int(np.argmin(curve))])
                if curve.min() < curve[int(np.searchsorted(self.widths(gi), counts[gi]))] - 1e-12:
                    counts[gi], moved = best, True
            if not moved:
                break
        return counts

    def words(self, cost: float) -> str:
        return self.describe(cost) if self.describe else f'{self.cost.name} {cost:.6g}'

    def refusal(self) -> OverPruneError:
        reach = self.total(self.cheapest())
        return OverPruneError(f'target {self.words(self.budget)} cannot be reached: the widths allowed (max_ratio, '
                              f'round_to {self.step}, never emptying a group) over {len(self.groups)} prunable groups '
                              f'reach at least {self.words(reach)}; raise max_ratio or select more layers')

    def check(self, counts: Dict[int, int]) -> Dict[int, int]:
        """Refuses counts outside the candidate widths (an allocator's contract)."""
        for gi, n in counts.items():
            if n not in self.widths(gi):
                raise MxPruneError(f'allocation gave group {gi} {n} channels; allowed: {self.widths(gi).tolist()}')
        return counts


class Allocator:
    """Base: `allocate(problem)` returns the kept count of every group, each one of its candidate widths, whose net
    costs at most the budget; raises OverPruneError (naming the smallest reachable cost) when no allowed net does."""

    def allocate(self, p: Problem) -> Dict[int, int]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


def _at_least(widths: np.ndarray, n: int) -> int:
    """The smallest candidate width >= n (the widest one when none is)."""
    i = int(np.searchsorted(widths, n, side='left'))
    return int(widths[min(i, len(widths) - 1)])


def _smallest_fitting(p: Problem, counts_at: Callable[[float], Dict[int, int]], lo: float, hi: float,
                      integer: bool) -> Dict[int, int]:
    """Bisection on a knob where counts_at(hi) prunes the most: the least pruning whose net fits the budget."""
    if not p.fits(p.total(counts_at(hi))):
        raise p.refusal()
    if p.fits(p.total(counts_at(lo))):
        return counts_at(lo)
    for _ in range(200 if integer else 40):
        if integer and hi - lo <= 1:
            break
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        if p.fits(p.total(counts_at(mid))):
            hi = mid
        else:
            lo = mid
    return counts_at(hi)


@ALLOCATORS.register('uniform')
class Uniform(Allocator):
    """The same fraction of every group's channels removed, rounded up to an allowed width: the smallest fraction
    whose net fits the budget. On a channel budget the fraction is the budget's own (rounding may keep more)."""

    def counts(self, p: Problem, ratio: float) -> Dict[int, int]:
        out = {}
        for gi in p.groups:
            size = len(p.current[gi])
            out[gi] = _at_least(p.widths(gi), size - int(np.floor(ratio * size + 1e-9)))
        return out

    def allocate(self, p):
        if isinstance(p.cost, ChannelCost):
            return self.counts(p, 1.0 - p.budget / p.cost.dense)
        return _smallest_fitting(p, lambda r: self.counts(p, r), 0.0, 1.0, integer=False)


@ALLOCATORS.register('threshold')
class Threshold(Allocator):
    """One threshold on the scores of every group (global ranking): a group keeps its live channels scoring at least
    the threshold, rounded up to an allowed width; the lowest threshold whose net fits the budget."""

    def allocate(self, p):
        cands = np.unique(np.concatenate([p.scores[gi][p.current[gi]] for gi in p.groups]))

        def counts(i: float) -> Dict[int, int]:
            tau = cands[int(i)]
            return {gi: _at_least(p.widths(gi), int(((p.scores[gi] >= tau) & p.current[gi]).sum()))
                    for gi in p.groups}
        return _smallest_fitting(p, counts, 0, len(cands) - 1, integer=True)


def solve(values: Sequence[np.ndarray], costs: Sequence[np.ndarray], budget: float, unit: Optional[float] = None,
          bins: int = 2048) -> Optional[List[int]]:
    """Multiple-choice knapsack: one option per item, the largest total value whose total cost is <= budget.

    Dynamic programming over the cost counted in whole `unit`s, each option's cost (above its item's cheapest)
    rounded up, so every answer fits the real budget; no choice that fits after rounding has more value. With
    integer costs and unit 1 the answer is the exact optimum. The default unit is the items' summed cost range /
    `bins`, which does not depend on the budget: a larger budget can then never give less value.

    Returns the chosen option of each item, or None when even the cheapest options exceed the budget.
    """
    mins = [float(np.min(c)) for c in costs]
    room = budget - sum(mins)
    if room < -1e-9 * max(1.0, abs(budget)):
        return None
    if sum(float(np.max(c)) for c in costs) <= budget:  # everything fits: the best option of each item
        return [int(np.argmax(v)) for v in values]
    if unit is None:
        span = sum(float(np.max(c)) - m for c, m in zip(costs, mins))
        unit = span / bins if span > 0 else 1.0
    ints = [np.ceil((np.asarray(c, np.float64) - m) / unit - 1e-9).astype(np.int64) for c, m in zip(costs, mins)]
    cap = min(int(np.floor(max(room, 0.0) / unit + 1e-9)), int(sum(int(i.max()) for i in ints)))
    dp = np.zeros(cap + 1)
    choice = np.zeros((len(ints), cap + 1), np.int32)
    for n, (v, c) in enumerate(zip(values, ints)):
        new = np.full(cap + 1, -np.inf)
        pick = choice[n]
        for o in np.argsort(c, kind='stable'):
            w = int(c[o])
            if w > cap:
                break
            cand = dp[:cap + 1 - w] + float(v[o])
            better = cand > new[w:]
            new[w:][better] = cand[better]
            pick[w:][better] = o
        dp = new
    if not np.isfinite(dp[cap]):
        return None
    out, c = [0] * len(ints), cap
    for n in reversed(range(len(ints))):
        out[n] = int(choice[n, c])
        c -= int(ints[n][out[n]])
    return out


@ALLOCATORS.register('knapsack')
class Knapsack(Allocator):
    """The widths that keep the most saliency within the budget (HALP's latency-saliency knapsack).

    Each round linearises the cost at the current widths (each group's cost curve over its candidate widths, the
    others held), solves that multiple-choice knapsack exactly (`solve`), and checks the answer's true cost; the next
    round linearises at the answer. On a latency table the rounds run twice, from the current widths and from the
    cheapest net (`Problem.cheapest`). The most valuable answer that fits is then widened greedily into the budget
    left (`fill`); when none fits, the cheapest net is widened. A group with more than `options` candidate widths
    offers every k-th of them to the dynamic programme; `fill` moves one candidate at a time, so the result still
    lands on the finest widths allowed.

    Args:
        bins: cost resolution of the dynamic programme (units over the summed range of the cost curves).
        rounds: linearise-and-solve rounds at most.
        options: candidate widths per group offered to the dynamic programme at most.
    """

    def __init__(self, bins: int = 2048, rounds: int = 8, options: int = 64):
        if bins < 16 or rounds < 1 or options < 2:
            raise MxPruneError(f'knapsack: bins {bins} must be >= 16, rounds {rounds} >= 1 and options {options} >= 2')
        self.bins, self.rounds, self.options = bins, rounds, options
        self.report: Dict[str, Any] = {}

    def _offered(self, widths: np.ndarray) -> np.ndarray:
        if len(widths) <= self.options:
            return widths
        pick = np.unique(np.round(np.linspace(0, len(widths) - 1, self.options)).astype(int))
        return widths[pick]

    def allocate(self, p):
        groups = p.groups
        widths = {gi: self._offered(p.widths(gi)) for gi in groups}
        masks = {gi: p.masks(gi, widths[gi]) for gi in groups}
        values = [(masks[gi] * np.where(p.current[gi], p.scores[gi], 0.0)[None, :]).sum(axis=1) for gi in groups]
        # Linearised at the current widths, a latency table hides joint moves: two groups on both sides of a conv
        # may each be slower alone at a narrow width and faster together. So the rounds also start from the
        # cheapest net, where widening one group is costed beside narrow neighbours.
        starts = [p.alive_counts()]
        cheap = p.cheapest()
        if not getattr(p.cost, 'monotone', False) and cheap != starts[0]:
            starts.append(cheap)
        best, best_value, rounds = None, -np.inf, []
        for start, counts in enumerate(starts):
            seen = set()
            for _ in range(self.rounds):
                keep = p.keep(counts)
                now = float(p.cost.total(keep))
                deltas = [p.cost.curve(gi, masks[gi], keep, now) - now for gi in groups]
                choice = solve(values, deltas, p.budget - now, bins=self.bins)
                if choice is None:
                    break
                new = {gi: int(widths[gi][o]) for gi, o in zip(groups, choice)}
                rounds.append({'start': start, 'predicted': now + sum(float(d[o]) for d, o in zip(deltas, choice)),
                               'true': p.total(new), 'value': float(sum(v[o] for v, o in zip(values, choice)))})
                if p.fits(rounds[-1]['true']) and rounds[-1]['value'] > best_value:
                    best, best_value = new, rounds[-1]['value']
                key = tuple(new[gi] for gi in groups)
                if key in seen:
                    break
                seen.add(key)
                counts = new
        if best is None:  # no linearisation found a net that fits: from the cheapest one, if it fits
            if not p.fits(p.total(cheap)):
                raise p.refusal()
            best = cheap
        best = self.fill(p, best)
        self.report = {'rounds': rounds, 'cost': p.total(best), 'budget': p.budget, 'value': p.value(best)}
        return p.check(best)

    def fill(self, p: Problem, counts: Dict[int, int]) -> Dict[int, int]:
        """Widens one group at a time by one candidate width, most saliency regained per cost added, while the net
        still fits. A net of hundreds of groups at round_to 1 needs thousands of such moves, so a move costs again
        only what it can change: on MACs, parameters or channels (monotone costs, scores >= 0) widening a group never
        makes widening another cheaper, so a ratio costed before a neighbour moved is an upper bound and only the
        best one is costed again before it is taken (lazy greedy); on a latency table every neighbour of the moved
        group (`_neighbours`) is costed again at once."""
        counts = dict(counts)
        keep = p.keep(counts)
        state = {'now': float(p.cost.total(keep)), 'moves': 0}
        near = _neighbours(p.cost, p.groups)
        kept = {gi: float(np.where(keep[gi], p.scores[gi], 0.0).sum()) for gi in p.groups}
        order = {gi: k for k, gi in enumerate(p.groups)}

        def step(gi):  # (width, mask, cost added, saliency regained) of group gi's next candidate width, or None
            widths = p.widths(gi)
            i = int(np.searchsorted(widths, counts[gi])) + 1
            if i >= len(widths):
                return None
            mask = p.masks(gi, [widths[i]])
            now = state['now']
            added = float(p.cost.curve(gi, mask, keep, now)[0]) - now
            return int(widths[i]), mask[0], added, float(np.where(mask[0], p.scores[gi], 0.0).sum()) - kept[gi]

        def ratio(s) -> float:
            return s[3] / max(s[2], 1e-12)

        def move(gi, s) -> None:
            counts[gi], keep[gi], kept[gi] = s[0], s[1], kept[gi] + s[3]
            state['moves'] += 1
            # the running sum is exact up to rounding; summed again now and then so that it cannot drift
            state['now'] = float(p.cost.total(keep)) if state['moves'] % 64 == 0 else state['now'] + s[2]

        steps = {gi: step(gi) for gi in p.groups}
        if getattr(p.cost, 'monotone', False) and all((p.scores[gi] >= 0).all() for gi in p.groups):
            heap = [(-ratio(s), order[gi], gi) for gi, s in steps.items() if s is not None]
            heapq.heapify(heap)
            dirty = set()
            while heap:
                _, _, gi = heapq.heappop(heap)
                if gi in dirty:  # costed before a neighbour moved: cost it again and put it back in line
                    dirty.discard(gi)
                    steps[gi] = step(gi)
                elif p.fits(state['now'] + steps[gi][2]):
                    move(gi, steps[gi])
                    dirty |= near[gi] - {gi}
                    steps[gi] = step(gi)
                else:
                    continue  # costs only grow and the budget left only shrinks: it will never fit
                if steps[gi] is not None:
                    heapq.heappush(heap, (-ratio(steps[gi]), order[gi], gi))
            return counts
        while True:
            fit = [(gi, s) for gi, s in steps.items() if s is not None and p.fits(state['now'] + s[2])]
            if not fit:
                return counts
            gi, s = max(fit, key=lambda t: ratio(t[1]))
            move(gi, s)
            for gj in near[gi]:
                steps[gj] = step(gj)


def _neighbours(cost, groups: Sequence[int]) -> Dict[int, set]:
    """For each group, the groups whose cost of widening can change when it moves: those sharing a layer with it
    on a layer-sum cost (`flops.LayerCost`), none on a channel count, every group on a cost model of unknown form."""
    if isinstance(cost, ChannelCost):
        return {gi: {gi} for gi in groups}
    touching = getattr(getattr(cost, 'index', None), 'touching', None)
    if touching is None:
        return {gi: set(groups) for gi in groups}
    on_layer: Dict[int, set] = {}
    for gi in groups:
        for i in touching.get(gi, ()):
            on_layer.setdefault(i, set()).add(gi)
    return {gi: {gi}.union(*(on_layer[i] for i in touching.get(gi, ()))) for gi in groups}


def get(spec, **kwargs) -> Allocator:
    """An allocator from a name (with options) or an object."""
    return ALLOCATORS.create(spec, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Measured latency: whole nets timed beside the dense net, the table's predictor calibrated on them


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


def timed_ms(twin, shape, repeats: int = 10, reference: Optional[tuple] = None) -> float:
    """Median call (ms) of a prepared net over `repeats` rounds of 3 calls; with reference = (prepared net, its ms),
    the two are timed interleaved and the result rescaled by ref ms / ref ms now, because a shared machine's speed
    drifts while ratios of nets timed together hold. The median, not the fastest call: some calls run fast."""
    from .benchmark import compare
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

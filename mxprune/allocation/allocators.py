"""The allocators: uniform, threshold and knapsack (with `solve`, the multiple-choice knapsack by dynamic
programming)."""
import heapq
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import MxPruneError
from .problem import ALLOCATORS, Allocator, ChannelCost, Problem


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

"""The allocation problem: cost models, the Problem of one pruning step, the Allocator base and its registry."""
import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import MxPruneError, OverPruneError
from ..flops import MacsCost, ParamsCost, Shapes, top_counts
from ..graph import DependencyGraph
from ..registry import Registry

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


def get(spec, **kwargs) -> Allocator:
    """An allocator from a name (with options) or an object."""
    return ALLOCATORS.create(spec, **kwargs)

"""Modifiers: pruning (criterion + granularity + scope + target + schedule + selection) and sparsity regularisers.

A PruningModifier decides masks; the Session applies them. Structured ('channel') pruning decides a keep-mask per
coupled group; unstructured ('weight') pruning a keep-mask per weight tensor. Both are monotone: what was pruned
stays pruned. Targets: `sparsity` (the fraction of channels of the prunable groups, or of the selected weights,
removed), `macs` or `params` (the fraction of the dense count to keep, reached by bisection on the ratio (local)
or on the score threshold (global)).
"""
import dataclasses
import warnings
from typing import Dict, List, Optional, Sequence

import mxnet as mx
import numpy as np

from . import criteria as criteria_mod
from . import flops as flops_mod
from . import schedules as schedules_mod
from .config import spec
from .errors import MxPruneError, OverPruneError, RecipeError
from .graph import DependencyGraph, Group, Layer, Selection
from .graph.core import _match

# ------------------------------------------------------------------------------------------------------------------
# Configuration (the recipe's `pruning:` and `regularizers:` items)


@dataclasses.dataclass
class LatencySpec:
    ms: float = spec(lo=0.0, lo_open=True, help='predicted (and then measured) latency per batch')
    batch: int = spec(64, lo=1, hi=65536)


TARGET_KINDS = ('sparsity', 'macs', 'params', 'latency', 'speedup')


@dataclasses.dataclass
class TargetConfig:
    sparsity: Optional[float] = spec(None, lo=0.0, hi=1.0, hi_open=True,
                                     help='fraction of channels (or weights) removed')
    macs: Optional[float] = spec(None, lo=0.0, lo_open=True, hi=1.0, help='fraction of dense MACs kept')
    params: Optional[float] = spec(None, lo=0.0, lo_open=True, hi=1.0, help='fraction of dense parameters kept')
    latency: Optional[LatencySpec] = spec(None, help='{ms, batch}: a measured-latency budget on this machine')
    speedup: Optional[float] = spec(None, lo=1.0, lo_open=True, help='dense latency / pruned latency at `batch`')
    batch: int = spec(64, lo=1, hi=65536, help='batch size a speedup target is measured at')

    def check(self, where: str, path: str) -> None:
        set_ = [k for k in TARGET_KINDS if getattr(self, k) is not None]
        if len(set_) != 1:
            shown = {k: getattr(self, k) for k in TARGET_KINDS if getattr(self, k) is not None}
            raise RecipeError(f'{where}: {path}: {shown!r} is not allowed; expected exactly one of '
                              f'{", ".join(TARGET_KINDS)}')

    @property
    def kind(self) -> str:
        return next(k for k in TARGET_KINDS if getattr(self, k) is not None)

    @property
    def value(self) -> float:
        return self.latency.ms if self.kind == 'latency' else getattr(self, self.kind)

    @property
    def timed_batch(self) -> int:
        return self.latency.batch if self.kind == 'latency' else self.batch


@dataclasses.dataclass
class ScheduleConfig:
    kind: str = spec('oneshot', choices=tuple(schedules_mod.SCHEDULES.names()))
    epoch: float = spec(0.0, lo=0.0, help='oneshot: prune when this many epochs are done')
    start_epoch: float = spec(0.0, lo=0.0, help='iterative, agp')
    end_epoch: float = spec(1.0, lo=0.0, help='iterative, agp')
    rounds: int = spec(3, lo=1, help='iterative')
    frequency: int = spec(100, lo=1, help='agp: steps between updates')

    def check(self, where: str, path: str) -> None:
        if self.end_epoch < self.start_epoch:
            raise RecipeError(f'{where}: {path}.end_epoch: {self.end_epoch!r} is not allowed; expected a value >= '
                              f'start_epoch ({self.start_epoch})')

    def build(self) -> schedules_mod.Schedule:
        if self.kind == 'oneshot':
            return schedules_mod.OneShot(self.epoch)
        if self.kind == 'iterative':
            return schedules_mod.Iterative(self.start_epoch, self.end_epoch, self.rounds)
        return schedules_mod.AGP(self.start_epoch, self.end_epoch, self.frequency)


@dataclasses.dataclass
class PruningConfig:
    criterion: str = spec('l2', choices=tuple(criteria_mod.CRITERIA.names()))
    granularity: str = spec('channel', choices=('channel', 'weight'))
    scope: str = spec('local', choices=('local', 'global'))
    target: TargetConfig = spec(factory=lambda: TargetConfig(sparsity=0.5))
    initial_sparsity: float = spec(0.0, lo=0.0, hi=1.0, hi_open=True, help='sparsity target at the first update')
    schedule: ScheduleConfig = spec(factory=ScheduleConfig)
    include: List[str] = spec(factory=lambda: ['*'], help='glob (or re:regex) on layer paths or block names')
    exclude: List[str] = spec(factory=list)
    skip_first: bool = spec(True, help='leave the first conv (on the input) out')
    skip_last: bool = spec(True, help='leave the classifier (producing the output) out')
    round_to: int = spec(1, lo=1, hi=4096, help='kept channels per group a multiple of this')
    max_ratio: float = spec(0.9, lo=0.0, hi=1.0, help='at most this fraction of a group (or layer) is removed')
    ratios: Dict[str, float] = spec(factory=dict, help='layer-wise sparsity per glob pattern (local scope)')
    reduction: str = spec('mean', choices=criteria_mod.REDUCTIONS)
    normalizer: Optional[str] = spec('mean', choices=criteria_mod.NORMALIZERS)
    members: str = spec('all', choices=criteria_mod.MEMBERS)
    seed: int = spec(0, lo=0)
    score_batches: int = spec(32, lo=0, help='grad/taylor: batches of gradients gathered before an update at step 0')

    def check(self, where: str, path: str) -> None:
        crit = criteria_mod.CRITERIA.get(self.criterion)
        if self.granularity == 'weight' and getattr(crit, 'structured_only', False):
            raise RecipeError(f'{where}: {path}.criterion: {self.criterion!r} is not allowed with granularity '
                              f'weight; expected one of l1, l2, grad, taylor, random')
        if self.granularity == 'weight' and self.target.kind != 'sparsity':
            raise RecipeError(f'{where}: {path}.target: {self.target.kind} is not allowed with granularity weight; '
                              f'expected sparsity (unstructured zeros do not shrink a dense layer)')
        if self.target.kind in ('latency', 'speedup') and (self.scope != 'global' or self.ratios):
            raise RecipeError(f'{where}: {path}.scope: {self.scope!r} is not allowed with a {self.target.kind} target; '
                              f'expected global (the latency search chooses every width)')
        if self.ratios and self.scope == 'global':
            raise RecipeError(f'{where}: {path}.ratios: layer-wise ratios are not allowed with scope global')
        for k, v in self.ratios.items():
            if not 0.0 <= v < 1.0:
                raise RecipeError(f'{where}: {path}.ratios.{k}: {v!r} is not allowed; expected 0 <= ratio < 1')
        if self.target.kind == 'sparsity' and self.initial_sparsity > self.target.value:
            raise RecipeError(f'{where}: {path}.initial_sparsity: {self.initial_sparsity!r} is not allowed; '
                              f'expected a value <= target.sparsity ({self.target.value})')

    def build(self) -> 'PruningModifier':
        kwargs = {'reduction': self.reduction, 'normalizer': self.normalizer, 'members': self.members}
        if self.criterion == 'random':
            kwargs['seed'] = self.seed
        crit = criteria_mod.get(self.criterion, **kwargs)
        return PruningModifier(crit, granularity=self.granularity, scope=self.scope, target=self.target,
                               schedule=self.schedule.build(), initial_sparsity=self.initial_sparsity,
                               selection=Selection(tuple(self.include), tuple(self.exclude), self.skip_first,
                                                   self.skip_last),
                               round_to=self.round_to, max_ratio=self.max_ratio, ratios=dict(self.ratios))


@dataclasses.dataclass
class RegularizerConfig:
    kind: str = spec('bn_l1', choices=('bn_l1', 'l1', 'l2', 'group_lasso'))
    strength: float = spec(1e-4, lo=0.0)
    start_epoch: float = spec(0.0, lo=0.0)
    end_epoch: Optional[float] = spec(None, lo=0.0, help='null: until training ends')
    include: List[str] = spec(factory=lambda: ['*'])
    exclude: List[str] = spec(factory=list)
    skip_first: bool = spec(True)
    skip_last: bool = spec(True)

    def build(self) -> 'Regularizer':
        return Regularizer(self.kind, self.strength, self.start_epoch, self.end_epoch,
                           Selection(tuple(self.include), tuple(self.exclude), self.skip_first, self.skip_last))


# ------------------------------------------------------------------------------------------------------------------
# Pruning


class PruningModifier:
    """Decides masks on a schedule. See the module docstring for the targets."""

    def __init__(self, criterion='l2', *, granularity: str = 'channel', scope: str = 'local', target=0.5,
                 schedule=None, initial_sparsity: float = 0.0, selection: Optional[Selection] = None,
                 round_to: int = 1, max_ratio: float = 0.9, ratios: Optional[Dict[str, float]] = None):
        """
        Args:
            criterion: a name ('l1', 'l2', 'grad', 'taylor', 'bn_gamma', 'fpgm', 'random') or a Criterion.
            granularity: 'channel' (structured, per coupled group) or 'weight' (unstructured).
            scope: 'local' (each group/layer by the same ratio) or 'global' (one threshold on normalised scores).
            target: a sparsity (float), or a TargetConfig / dict like {'macs': 0.5}.
            schedule: a Schedule or a name ('oneshot', 'iterative', 'agp'); default one-shot at the start.
            initial_sparsity: the sparsity at the schedule's first update (AGP's s_i).
            selection: which layers may be pruned (default: all but the first conv and the classifier).
            round_to: kept channels per group are a multiple of this (fast widths for oneDNN / cuDNN).
            max_ratio: at most this fraction of any group (or layer) is removed; groups are never emptied.
            ratios: {glob: sparsity} layer-wise ratios for groups whose producing layers match (local scope).
        """
        self.criterion = criteria_mod.get(criterion)
        if granularity not in ('channel', 'weight'):
            raise MxPruneError(f'granularity {granularity!r}; choose channel or weight')
        if scope not in ('local', 'global'):
            raise MxPruneError(f'scope {scope!r}; choose local or global')
        if granularity == 'weight' and self.criterion.structured_only:
            raise MxPruneError(f'criterion {self.criterion.registry_name} scores channels only; use granularity '
                               f'channel')
        if isinstance(target, (int, float)):
            target = TargetConfig(sparsity=float(target))
        elif isinstance(target, dict):
            from .config import from_dict
            target = from_dict(TargetConfig, target, 'PruningModifier', 'target')
        target.check('PruningModifier', 'target')
        if granularity == 'weight' and target.kind != 'sparsity':
            raise MxPruneError('unstructured (weight) pruning takes a sparsity target')
        if target.kind in ('latency', 'speedup') and (scope != 'global' or ratios):
            raise MxPruneError('latency and speedup targets choose the widths themselves: use scope global and no '
                               'ratios')
        if not 0.0 <= max_ratio <= 1.0 or round_to < 1:
            raise MxPruneError(f'max_ratio {max_ratio} must be in [0, 1] and round_to {round_to} >= 1')
        self.granularity, self.scope, self.target = granularity, scope, target
        self.schedule = schedules_mod.get(schedule) if schedule is not None else schedules_mod.OneShot(0)
        self.initial_sparsity = initial_sparsity
        self.selection = selection or Selection()
        self.round_to, self.max_ratio, self.ratios = round_to, max_ratio, dict(ratios or {})
        self.groups: List[Group] = []
        self.layers: List[Layer] = []
        self.last_fraction = 0.0
        self.latency_model = None
        self.latency_report: Optional[dict] = None

    @property
    def structured(self) -> bool:
        return self.granularity == 'channel'

    def bind(self, graph: DependencyGraph) -> None:
        """Finds the groups (structured) or layers (unstructured) this modifier may prune."""
        if self.structured:
            self.groups = graph.prunable_groups(self.selection)
            if isinstance(self.criterion, criteria_mod.BNGamma):
                self.groups = [g for g in self.groups if any(m.attr == 'gamma' for m in g.members)]
            if not self.groups:
                raise OverPruneError('no prunable channel group: every group is frozen or holds an unselected '
                                     'layer (see DependencyGraph.summary() and the selection patterns)')
        else:
            self.layers = [layer for layer in graph.selected(self.selection) if layer.weighted]
            if not self.layers:
                raise OverPruneError('no selected Conv/Dense layer to prune')

    def current_target(self, fraction: float) -> float:
        t = self.target
        if t.kind == 'sparsity':
            return self.initial_sparsity + (t.value - self.initial_sparsity) * fraction
        if t.kind in ('latency', 'speedup'):
            return fraction  # turned into milliseconds against the measured dense latency in _latency_counts
        return 1.0 - (1.0 - t.value) * fraction

    # --- structured
    def decide_groups(self, session, fraction: float) -> Dict[int, np.ndarray]:
        """New keep-masks {group index: bool mask} for this modifier's groups at schedule `fraction`."""
        params = session.effective_params()
        scores = {}
        for g in self.groups:
            s = self.criterion.group_scores(g, params)
            if s is not None:
                scores[g.index] = s
        if not scores:
            raise OverPruneError(f'criterion {self.criterion.registry_name} scores none of the prunable groups')
        current = {gi: session.group_keep[gi].copy() for gi in scores}
        goal = self.current_target(fraction)
        if self.target.kind == 'sparsity' and goal <= 0 and not self.ratios:
            return current
        if self.target.kind in ('latency', 'speedup'):
            counts = self._latency_counts(session, scores, current, fraction)
        else:
            counts = self._search(session, scores, current, goal, fraction)
        return {gi: flops_mod.keep_top(scores[gi], current[gi], counts[gi], session.groups_by_index[gi].blocks)
                for gi in scores}

    def _latency_counts(self, session, scores, current, fraction) -> Dict[int, int]:
        """Widths from the measured latency table (mxprune.latency), the dense latency measured on this machine."""
        from . import latency
        if self.latency_model is None:
            step = self.round_to if self.round_to > 1 else 8
            self.latency_model = latency.LatencyModel(session.net, session.graph, session.input_shape,
                                                      self.target.timed_batch, step)
        m = self.latency_model
        final_ms = self.target.value if self.target.kind == 'latency' else m.dense_ms / self.target.value
        target_ms = m.dense_ms - (m.dense_ms - final_ms) * fraction
        groups = [session.groups_by_index[gi] for gi in scores]
        counts, found = latency.search(m, groups, scores, current, target_ms,
                                       lambda gi, n: self._limits(session.group_size[gi], n)[0])
        self.latency_report = {**m.calibration, **found, 'table_entries': len(m.table.entries),
                               'table': m.table.path}
        if not found['met']:
            warnings.warn(f'latency target {target_ms:.2f} ms not met: the fastest net measured ran '
                          f'{found["measured_ms"]:.2f} ms (predicted {found["predicted_ms"]:.2f} ms)', stacklevel=3)
        return counts

    def _limits(self, size: int, kept_now: int) -> tuple:
        lo = max(1, int(np.ceil(size * (1.0 - self.max_ratio) - 1e-9)))
        return min(lo, kept_now), kept_now

    def _round(self, n_keep: int, size: int, lo: int, hi: int, blocks: int = 1) -> int:
        """Clamps to the limits first, then rounds up to a multiple of round_to (never above what is kept now).

        A group in `blocks` equal runs (Group.blocks: grouped convolutions) rounds to lcm(round_to, blocks), or to
        blocks when the group is narrower than that; `hi` (kept now) is a multiple of blocks already."""
        n_keep = max(lo, n_keep)
        r = self.round_to * blocks // int(np.gcd(self.round_to, blocks))
        r = r if size >= r else blocks
        if r > 1:
            n_keep = int(np.ceil(n_keep / r)) * r
        return int(min(hi, n_keep))

    def _counts_for_ratio(self, sizes, kept, ratio_of, blocks) -> Dict[int, int]:
        out = {}
        for gi, size in sizes.items():
            lo, hi = self._limits(size, kept[gi])
            out[gi] = self._round(size - int(np.floor(ratio_of(gi) * size + 1e-9)), size, lo, hi, blocks[gi])
        return out

    def _counts_for_threshold(self, masked, sizes, kept, tau, blocks) -> Dict[int, int]:
        """Keeps, per group, the live channels scoring at least tau (masked: pruned channels score -inf)."""
        out = {}
        for gi, s in masked.items():
            lo, hi = self._limits(sizes[gi], kept[gi])
            out[gi] = self._round(int((s >= tau).sum()), sizes[gi], lo, hi, blocks[gi])
        return out

    def _measure(self, session, counts: Dict[int, int]) -> float:
        kind = self.target.kind
        if kind == 'sparsity':
            total = sum(session.group_size[gi] for gi in counts)
            return 1.0 - sum(counts.values()) / total
        keep = dict(session.group_keep)
        for gi, n in counts.items():
            keep[gi] = flops_mod.group_keep_from_counts(session.groups_by_index[gi], n)
        c = flops_mod.structured(session.graph, keep)
        return (c.macs if kind == 'macs' else c.params) / getattr(session.dense_count, kind)

    def _met(self, value: float, goal: float) -> bool:
        return value >= goal - 1e-9 if self.target.kind == 'sparsity' else value <= goal + 1e-9

    def _search(self, session, scores, current, goal, fraction) -> Dict[int, int]:
        sizes = {gi: session.group_size[gi] for gi in scores}
        kept = {gi: int(current[gi].sum()) for gi in scores}
        blocks = {gi: session.groups_by_index[gi].blocks for gi in scores}
        if self.scope == 'local' and self.ratios:
            return self._counts_for_ratio(sizes, kept, self._layerwise_ratio(session, goal, fraction), blocks)
        if self.scope == 'local':
            fn = lambda x: self._counts_for_ratio(sizes, kept, lambda gi: x, blocks)  # noqa: E731
            lo_x, hi_x = 0.0, 1.0
        else:
            masked = {gi: np.where(current[gi], scores[gi], -np.inf) for gi in scores}
            cands = np.unique(np.concatenate([scores[gi][current[gi]] for gi in scores]))
            fn = lambda i: self._counts_for_threshold(masked, sizes, kept, cands[int(i)], blocks)  # noqa: E731
            lo_x, hi_x = 0, len(cands) - 1
        if self.scope == 'local' and self.target.kind == 'sparsity':
            return fn(goal)
        best = fn(hi_x)
        if not self._met(self._measure(session, best), goal):
            got = self._measure(session, best)
            raise OverPruneError(f'target {self.target.kind} {goal:.4g} cannot be reached: at most '
                                 f'{"removed" if self.target.kind == "sparsity" else "down to"} {got:.4g} with '
                                 f'max_ratio {self.max_ratio} over {len(scores)} prunable groups (never emptying a '
                                 f'group); raise max_ratio or select more layers')
        if self.scope == 'local':
            for _ in range(40):  # smallest ratio that meets the goal
                mid = (lo_x + hi_x) / 2
                if self._met(self._measure(session, fn(mid)), goal):
                    hi_x = mid
                else:
                    lo_x = mid
            return fn(hi_x)
        lo_i, hi_i = 0, len(cands) - 1  # global: smallest threshold index that meets the goal
        if self._met(self._measure(session, fn(lo_i)), goal):
            return fn(lo_i)
        while hi_i - lo_i > 1:
            mid = (lo_i + hi_i) // 2
            if self._met(self._measure(session, fn(mid)), goal):
                hi_i = mid
            else:
                lo_i = mid
        return fn(hi_i)

    def _layerwise_ratio(self, session, goal: float, fraction: float):
        """Groups whose producing layers match a pattern take its ratio (times the schedule's fraction); the
        others take the sparsity target (or nothing, when the target is MACs or parameters)."""
        def ratio_of(gi):
            g = session.groups_by_index[gi]
            names = [m.layer.path for m in g.producers] + [m.layer.block.name for m in g.producers]
            for pattern, r in self.ratios.items():
                if _match(pattern, names):
                    return r * fraction
            return goal if self.target.kind == 'sparsity' else 0.0
        return ratio_of

    # --- unstructured
    def decide_weights(self, session, fraction: float) -> Dict[str, np.ndarray]:
        goal = self.current_target(fraction)
        params = session.effective_params()
        out = {}
        scores = {}
        for layer in self.layers:
            w = params[layer.params['weight'].name]
            s = self.criterion.weight_scores(layer, w).astype(np.float64)
            keep_now = session.weight_keep.get(layer.path)
            if keep_now is None:
                keep_now = np.ones(w.shape, bool)
            s = np.where(keep_now, s, -np.inf)
            scores[layer.path] = (s, keep_now)
        if goal <= 0:
            return {p: k.copy() for p, (_, k) in scores.items()}
        if self.scope == 'local':
            for path, (s, keep_now) in scores.items():
                out[path] = self._keep_fraction(s, keep_now, self._ratio_for(path, goal))
            return out
        flat = np.concatenate([s.ravel() for s, _ in scores.values()])
        n_prune = int(np.floor(goal * flat.size))
        if n_prune <= 0:
            return {p: k.copy() for p, (_, k) in scores.items()}
        tau = np.partition(flat, n_prune - 1)[n_prune - 1]
        for path, (s, keep_now) in scores.items():
            keep = s > tau
            cap = int(np.floor(self.max_ratio * s.size))
            if s.size - keep.sum() > cap or keep.sum() == 0:  # never empty a layer; honour max_ratio
                keep = self._keep_fraction(s, keep_now, min(self.max_ratio, 1 - 1 / s.size))
            out[path] = keep & keep_now
        return out

    def _ratio_for(self, path: str, goal: float) -> float:
        for pattern, r in self.ratios.items():
            if _match(pattern, [path]):
                return r
        return min(goal, self.max_ratio)

    @staticmethod
    def _keep_fraction(s: np.ndarray, keep_now: np.ndarray, ratio: float) -> np.ndarray:
        n_prune = min(int(np.floor(ratio * s.size)), s.size - 1)
        n_prune = max(n_prune, int((~keep_now).sum()))
        if n_prune <= 0:
            return keep_now.copy()
        order = np.argsort(s.ravel(), kind='stable')
        keep = np.ones(s.size, bool)
        keep[order[:n_prune]] = False
        return keep.reshape(s.shape) & keep_now

    def __repr__(self) -> str:
        return (f'PruningModifier({self.criterion.registry_name}, {self.granularity}, {self.scope}, '
                f'{self.target.kind}={self.target.value}, {type(self.schedule).__name__})')


# ------------------------------------------------------------------------------------------------------------------
# Sparsity regularisers


class Regularizer:
    """Adds a sparsity-inducing gradient before the optimizer step.

    bn_l1        lambda * sign(gamma) on the BatchNorms of prunable groups (Network Slimming)
    l1 / l2      lambda * sign(w) / lambda * w on the selected Conv/Dense weights
    group_lasso  lambda * w_c / ||W_c|| for every channel c of every prunable group, over all its members' slices
    """

    KINDS = ('bn_l1', 'l1', 'l2', 'group_lasso')

    def __init__(self, kind: str = 'bn_l1', strength: float = 1e-4, start_epoch: float = 0.0,
                 end_epoch: Optional[float] = None, selection: Optional[Selection] = None):
        if kind not in self.KINDS:
            raise MxPruneError(f'regularizer {kind!r}; choose one of {", ".join(self.KINDS)}')
        self.kind, self.strength = kind, strength
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.selection = selection or Selection()
        self.targets: List = []

    def bind(self, graph: DependencyGraph) -> None:
        groups = graph.prunable_groups(self.selection)
        if self.kind == 'bn_l1':
            seen, self.targets = set(), []
            for g in groups:
                for m in g.members:
                    p = m.layer.params.get('gamma')
                    if m.attr == 'gamma' and p is not None and p.name not in seen and p.grad_req != 'null':
                        seen.add(p.name)
                        self.targets.append(p)
        elif self.kind in ('l1', 'l2'):
            self.targets = [layer.params['weight'] for layer in graph.selected(self.selection) if layer.weighted]
        else:
            self.targets = groups
        if not self.targets:
            raise OverPruneError(f'regularizer {self.kind} has nothing to act on (no prunable groups / selected '
                                 f'layers{" with BatchNorm" if self.kind == "bn_l1" else ""})')

    def active(self, step: int, steps_per_epoch: int) -> bool:
        epoch = step / max(1, steps_per_epoch)
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch < self.end_epoch)

    def apply(self, batch_size: int) -> None:
        """Adds to the gradients; scaled by batch_size because Trainer.step divides gradients by it."""
        lam = self.strength * batch_size
        if self.kind == 'group_lasso':
            self._group_lasso(lam)
            return
        for p in self.targets:
            ctx = p.list_ctx()[0]  # once: devices' gradients are summed before the update
            w, g = p.data(ctx), p.grad(ctx)
            g += lam * (mx.nd.sign(w) if self.kind in ('bn_l1', 'l1') else w)

    def _group_lasso(self, lam: float) -> None:
        for g in self.targets:
            members = [m for m in g.members if m.attr == 'weight' and m.layer.weighted]
            datas = {}
            sq = np.zeros(g.size)
            for m in members:
                p = m.layer.params['weight']
                if p.name not in datas:
                    datas[p.name] = p.data(p.list_ctx()[0]).asnumpy()
                np.add.at(sq, m.channels, (m.take(datas[p.name]) ** 2).sum(axis=2).sum(axis=1))
            inv = lam / np.sqrt(sq + 1e-12)
            for m in members:  # Member.take/spread: a grouped conv's input channel is a slice of its block's rows
                p = m.layer.params['weight']
                ctx = p.list_ctx()[0]
                p.grad(ctx)[:] += p.data(ctx) * mx.nd.array(m.spread(inv[m.channels]), ctx=ctx)

    def __repr__(self) -> str:
        return f'Regularizer({self.kind}, strength={self.strength})'


def build_all(configs: Sequence) -> list:
    return [c.build() for c in configs]

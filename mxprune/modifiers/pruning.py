"""The pruning modifier: criterion + granularity + allocator + target + schedule + selection.

A PruningModifier decides masks; the Session applies them. Structured ('channel') pruning decides a keep-mask per
coupled group: at each scheduled update the criterion scores the channels, the target gives a budget (the fraction
of it reached so far) in a cost model's units, and the allocator (mxprune.allocation) chooses every group's width.
Unstructured ('weight') pruning decides a keep-mask per weight tensor. Both are monotone: what was pruned stays
pruned. Targets: `sparsity` (the fraction of channels of the prunable groups, or of the selected weights, removed),
`macs` or `params` (the fraction of the dense count kept), `speedup` or `latency` (measured on this machine).
"""
import dataclasses
import warnings
from typing import Callable, Dict, List, Optional, Union

import numpy as np

from .. import allocation as allocation_mod
from .. import criteria as criteria_mod
from .. import latency as latency_mod
from .. import schedules as schedules_mod
from ..errors import MxPruneError, OverPruneError
from ..graph import DependencyGraph, Group, Layer, Selection, match
from .configs import as_target, check_pruning, resolve_allocator


class PruningModifier:
    """Decides masks on a schedule. See the module docstring for the targets."""

    def __init__(self, criterion='l2', *, granularity: str = 'channel', allocator=None, scope: Optional[str] = None,
                 target=0.5, schedule=None, initial_sparsity: float = 0.0, selection: Optional[Selection] = None,
                 round_to: Union[int, str] = 'auto', max_ratio: float = 0.9, ratios: Optional[Dict[str, float]] = None,
                 step_ratio: float = 1.0, path: Optional[str] = None, macs_layers: Optional[Selection] = None):
        """
        Args:
            criterion: a name ('l1', 'l2', 'grad', 'taylor', 'group_taylor', 'bn_gamma', 'fpgm', 'random') or a
                Criterion.
            granularity: 'channel' (structured, per coupled group) or 'weight' (unstructured).
            allocator: how the budget is spread over the groups: 'knapsack' (default), 'threshold', 'uniform' or an
                Allocator (mxprune.allocation). Unstructured pruning ranks weights locally or globally (`scope`).
            scope: the older name: 'local' = uniform, 'global' = threshold.
            target: a sparsity (float), or a TargetConfig / dict like {'macs': 0.5} or {'speedup': 1.6}.
            schedule: a Schedule or a name ('oneshot', 'iterative', 'agp', 'gradual'); default one-shot at the start.
            initial_sparsity: the sparsity at the schedule's first update (AGP's s_i).
            selection: which layers may be pruned (default: all but the first conv and the classifier).
            round_to: kept channels per group are a multiple of this; 'auto' (default) takes the channel block of
                the device the net lives on when it is bound (mxprune.latency.channel_block: 16 on an AVX-512 CPU,
                8 on AVX2, 1 on a GPU), the width oneDNN computes in anyway.
            max_ratio: at most this fraction of any group (or layer) is removed; groups are never emptied.
            ratios: {glob: sparsity} layer-wise ratios for groups whose producing layers match (uniform allocator).
            step_ratio: at most this fraction of a group's live channels is removed by one update before the last,
                so a gradual schedule spreads a deep cut over steps that re-score in between ('budget' path).
            path: how the updates before the last approach the target: 'plan' (each plans the final widths with
                the current scores and moves part of the way; the default with the knapsack) or 'budget' (each
                meets the schedule's budget for its step; the default with the other allocators).
            macs_layers: the Conv/Dense layers a macs target counts (e.g. a detector's backbone, whatever its heads
                cost); default: every layer.
        """
        check_pruning('PruningModifier', '', {
            'criterion': criterion, 'granularity': granularity, 'allocator': allocator, 'scope': scope,
            'target': target, 'initial_sparsity': initial_sparsity, 'round_to': round_to, 'max_ratio': max_ratio,
            'path': path, 'step_ratio': step_ratio, 'ratios': ratios})
        self.criterion = criteria_mod.get(criterion)
        target = as_target(target, 'PruningModifier', 'target')
        self.allocator = allocation_mod.get(resolve_allocator(allocator, scope, ratios))
        self.granularity, self.target = granularity, target
        # unstructured pruning ranks weights per layer (local) or over all layers (global)
        self.scope = scope or ('global' if allocator is not None and
                               not isinstance(self.allocator, allocation_mod.Uniform) else 'local')
        self.schedule = schedules_mod.get(schedule) if schedule is not None else schedules_mod.OneShot(0)
        self.initial_sparsity = initial_sparsity
        self.selection = selection or Selection()
        self.round_to_setting = round_to
        self.round_to = 1 if round_to == 'auto' else round_to  # 'auto' is resolved by bind, on the net's device
        self.max_ratio, self.ratios = max_ratio, dict(ratios or {})
        self.step_ratio = step_ratio
        self.path = path or ('plan' if isinstance(self.allocator, allocation_mod.Knapsack) else 'budget')
        self.groups: List[Group] = []
        self.layers: List[Layer] = []
        self.last_fraction = 0.0
        self.latency_model = None
        self.latency_report: Optional[dict] = None
        self.latency_steps: List[dict] = []
        self.plan_steps: List[dict] = []
        self.correction = 1.0  # predicted / measured ms of the last net timed (latency targets)
        self.macs_layers = macs_layers
        self.macs_paths: Optional[frozenset] = None  # macs_layers resolved on the bound graph
        self._cost = None

    @property
    def structured(self) -> bool:
        return self.granularity == 'channel'

    @property
    def reset_scores(self) -> bool:
        """Whether gradient scores start afresh after each update. On the 'plan' path they accumulate over the whole
        schedule: each step re-plans the final widths, and a plan that follows the last few dozen batches alone swings
        between very different architectures of nearly equal saliency."""
        return self.path != 'plan'

    def bind(self, graph: DependencyGraph, gpu: bool = False) -> None:
        """Finds the groups (structured) or layers (unstructured) this modifier may prune; `gpu`: the net lives on a
        GPU (round_to 'auto' then takes no channel block)."""
        if self.round_to_setting == 'auto':
            self.round_to = latency_mod.channel_block(gpu)
        if self.structured:
            self.groups = graph.prunable_groups(self.selection)
            if isinstance(self.criterion, criteria_mod.BNGamma):
                self.groups = [g for g in self.groups if any(m.attr == 'gamma' for m in g.members)]
            if not self.groups:
                raise OverPruneError('no prunable channel group: every group is frozen or holds an unselected '
                                     'layer (see DependencyGraph.summary() and the selection patterns)')
            self.criterion.bind(self.groups)
        else:
            self.layers = [layer for layer in graph.selected(self.selection) if layer.weighted]
            if not self.layers:
                raise OverPruneError('no selected Conv/Dense layer to prune')
        if self.macs_layers is not None:
            self.macs_paths = frozenset(layer.path for layer in graph.selected(self.macs_layers) if layer.weighted)
            if not self.macs_paths:
                raise MxPruneError(f'macs_layers: {list(self.macs_layers.include)} matches no Conv/Dense layer path')
        self._cost = None

    def current_target(self, fraction: float) -> float:
        t = self.target
        if t.kind == 'sparsity':
            return self.initial_sparsity + (t.value - self.initial_sparsity) * fraction
        if t.kind in ('latency', 'speedup'):
            return fraction  # turned into milliseconds against the measured dense latency in `budget`
        return 1.0 - (1.0 - t.value) * fraction

    # --- structured
    def cost_model(self, session):
        """What the target counts: channels of this modifier's groups (sparsity), MACs or parameters of the whole
        net, or its predicted latency (the measured table; built, and the dense net timed, on first use)."""
        if self._cost is None:
            kind = self.target.kind
            if kind in ('latency', 'speedup'):
                step = self.round_to if self.round_to > 1 else 8
                self.latency_model = allocation_mod.LatencyModel(session.net, session.graph, session.input_shape,
                                                                 self.target.timed_batch, step)
                self._cost = self.latency_model.predictor
            else:
                self._cost = allocation_mod.cost_model('channels' if kind == 'sparsity' else kind, session.graph,
                                                       self.groups, layers=self.macs_paths)
        return self._cost

    def budget(self, session, fraction: float) -> float:
        """The cost the net may have at schedule `fraction` (in the cost model's units)."""
        kind, goal = self.target.kind, self.current_target(fraction)
        cost = self.cost_model(session)
        if kind in ('latency', 'speedup'):
            dense = self.latency_model.dense_ms
            final = self.target.value if kind == 'latency' else dense / self.target.value
            return dense - (dense - final) * fraction
        if kind == 'sparsity':
            return (1.0 - goal) * cost.dense
        return goal * cost.dense

    def _describe(self, cost) -> Callable[[float], str]:
        """A cost in the target's own words, for messages."""
        kind = self.target.kind
        if kind == 'sparsity':
            return lambda c: f'sparsity {1.0 - c / cost.dense:.4g} (fraction of channels removed)'
        if kind in ('latency', 'speedup'):
            return lambda c: f'latency {c:.2f} ms (predicted)'
        return lambda c: f'{kind} {c / cost.dense:.4g} of dense'

    def problem(self, session, scores: Dict[int, np.ndarray], current: Dict[int, np.ndarray],
                fraction: float) -> allocation_mod.Problem:
        """The allocation problem of one update: this modifier's groups, scores and live channels, the cost model,
        the budget at `fraction` and the widths allowed (round_to, max_ratio); other groups are held as they are."""
        cost = self.cost_model(session)
        return allocation_mod.Problem(
            scores=scores, current=current, cost=cost, budget=self.budget(session, fraction),
            lo={gi: self._limits(session.group_size[gi], int(current[gi].sum()))[0] for gi in scores},
            step=self.round_to, blocks={gi: session.groups_by_index[gi].blocks for gi in scores},
            fixed={gi: k for gi, k in session.group_keep.items() if gi not in scores},
            describe=self._describe(cost), step_ratio=self.step_ratio if fraction < 1.0 - 1e-9 else 1.0,
            whole_steps=fraction >= 1.0 - 1e-9)

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
        if self.target.kind == 'sparsity' and self.current_target(fraction) <= 0 and not self.ratios:
            return current
        p = self.problem(session, scores, current, fraction)
        if self.ratios:
            counts = self._layerwise_counts(session, p, fraction)
        elif self.path == 'plan' and fraction < 1.0 - 1e-9:
            counts = self._toward_plan(session, scores, current, fraction)
        elif self.target.kind in ('latency', 'speedup'):
            counts = self._measured_counts(p, fraction)
        else:
            try:
                counts = self.allocator.allocate(p)
            except OverPruneError:
                if p.step_ratio >= 1.0:
                    raise
                counts = p.cheapest()  # a step before the last, held back by step_ratio: as far as it may go
        return {gi: p.masks(gi, [counts[gi]])[0] for gi in scores}

    def _toward_plan(self, session, scores, current, fraction: float) -> Dict[int, int]:
        """A step before the last on the 'plan' path: the allocator plans the final widths against the final budget
        with today's scores, and every group moves part of the way there: the share of the distance left that the
        schedule covers in this step (a group whose plan is its width stays). The plan is made again at every step,
        so it follows the scores as the net adapts, and the last step solves the final budget itself.

        Why not meet the schedule's own budget at each step: the steps then commit, one by one, to the cuts that
        are cheapest for a loose budget, and masks never grow back; on a latency table the widths that suit the
        final budget (two groups narrowed together to a fast width) are then out of reach."""
        final = self.problem(session, scores, current, 1.0)
        if self.target.kind in ('latency', 'speedup'):
            # the plan itself is built and timed (NetAdapt's passes): a table a few per cent pessimistic would
            # otherwise steer every step toward a net faster than asked, and masks never grow back at the last step
            plan, found = allocation_mod.search(self.allocator, final, self.latency_model, final.budget,
                                                goal=final.budget * self.correction)
            self._timed(fraction, final.budget, found, plan=True)
        else:
            plan = self.allocator.allocate(final)
        share = (fraction - self.last_fraction) / max(1e-12, 1.0 - self.last_fraction)
        counts = {}
        for gi, goal in plan.items():
            # any width in between, not only round_to's: the steps before the last are masks, never timed, and a cut
            # of a narrow group (16 -> 8) then comes a few channels at a time
            alive, blocks = final.alive(gi), final.blocks.get(gi, 1)
            want = alive - share * (alive - goal)
            counts[gi] = int(min(alive, max(goal, int(np.floor(want / blocks + 0.5)) * blocks)))
        self.plan_steps.append({'fraction': fraction, 'plan_cost': final.total(plan), 'step_cost': final.total(counts),
                                'budget': final.budget})
        return counts

    def _timed(self, fraction: float, budget: float, found: dict, **extra) -> None:
        """Records a net built and timed at schedule `fraction` (`allocation.search`'s report): its predicted/measured
        ratio corrects the next budget, and the table entries measured for it serve the next run on this machine."""
        self.correction = found['predicted_ms'] / found['measured_ms']
        self.latency_model.table.save()
        self.latency_steps.append({'fraction': fraction, 'budget_ms': budget, **extra,
                                   'predicted_ms': found['predicted_ms'], 'measured_ms': found['measured_ms'],
                                   'passes': len(found['rounds'])})

    def _measured_counts(self, p: allocation_mod.Problem, fraction: float) -> Dict[int, int]:
        """A latency budget, NetAdapt's way: every step's net is built and timed beside the dense net, and the
        predicted/measured ratio of the latest one corrects the next step's budget, so the steps before the last do
        not overshoot on a table that is a few per cent off (the mask is monotone: the last step cannot widen what
        an earlier one cut). The last step searches up to 4 measured passes (`allocation.search`)."""
        m, last = self.latency_model, fraction >= 1.0 - 1e-9
        try:
            counts, found = allocation_mod.search(self.allocator, p, m, p.budget, goal=p.budget * self.correction,
                                                  rounds=4 if last else 1)
        except OverPruneError:
            if last:
                raise
            counts = p.cheapest()  # a step before the last, held back by step_ratio: as far as it may go
            keep = p.keep(counts)
            found = {'predicted_ms': p.total(counts), 'measured_ms': m.measure(keep), 'rounds': [{}]}
        self._timed(fraction, p.budget, found)
        if last:
            self.latency_report = {**m.calibration, **found, 'steps': list(self.latency_steps),
                                   'table_entries': len(m.table.entries), 'table': m.table.path}
            if not found['met']:
                warnings.warn(f'latency target {p.budget:.2f} ms not met: the fastest net measured ran '
                              f'{found["measured_ms"]:.2f} ms (predicted {found["predicted_ms"]:.2f} ms)',
                              stacklevel=4)
        return counts

    def _limits(self, size: int, kept_now: int) -> tuple:
        lo = max(1, int(np.ceil(size * (1.0 - self.max_ratio) - 1e-9)))
        return min(lo, kept_now), kept_now

    def _layerwise_counts(self, session, p: allocation_mod.Problem, fraction: float) -> Dict[int, int]:
        """Groups whose producing layers match a pattern take its ratio (times the schedule's fraction); the
        others take the sparsity target (or nothing, when the target is MACs or parameters)."""
        goal = self.current_target(fraction)
        out = {}
        for gi in p.groups:
            g = session.groups_by_index[gi]
            names = [m.layer.path for m in g.producers] + [m.layer.block.name for m in g.producers]
            r = next((r * fraction for pattern, r in self.ratios.items() if match(pattern, names)),
                     goal if self.target.kind == 'sparsity' else 0.0)
            out[gi] = allocation_mod.Uniform().counts(dataclasses.replace(p, current={gi: p.current[gi]}), r)[gi]
        return out

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
            if match(pattern, [path]):
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

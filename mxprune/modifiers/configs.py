"""The recipe's `pruning:` and `regularizers:` items as dataclasses, and the rules a pruning modifier's settings obey.

The rules live here once: `PruningConfig.check` (a recipe) and `PruningModifier.__init__` (Python arguments) both
call `check_pruning`, so a bad setting gives the same RecipeError (naming the object, the key, the value and what is
allowed) whichever way it came in. The names allowed (criteria, allocators, schedules, regularisers) are read from
the registries.
"""
import dataclasses
import inspect
from typing import Any, Dict, List, Optional, Union

from .. import allocation as allocation_mod
from .. import criteria as criteria_mod
from .. import schedules as schedules_mod
from ..config import check_value, from_dict, spec
from ..errors import MxPruneError, RecipeError
from ..graph import Selection
from .regularizers import REGULARIZERS, Regularizer


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


def as_target(target: Any, where: str, path: str) -> TargetConfig:
    """A TargetConfig from a sparsity (number), a mapping like {'macs': 0.5} or a TargetConfig, validated."""
    if isinstance(target, (int, float)) and not isinstance(target, bool):
        target = {'sparsity': float(target)}
    if isinstance(target, dict):
        return from_dict(TargetConfig, target, where, path)
    target.check(where, path)
    return target


@dataclasses.dataclass
class ScheduleConfig:
    kind: str = spec('oneshot', choices=tuple(schedules_mod.SCHEDULES.names()))
    epoch: float = spec(0.0, lo=0.0, help='oneshot: prune when this many epochs are done')
    start_epoch: float = spec(0.0, lo=0.0, help='iterative, agp, gradual')
    end_epoch: float = spec(1.0, lo=0.0, help='iterative, agp, gradual (gradual: the last step lands here)')
    rounds: int = spec(3, lo=1, help='iterative')
    frequency: int = spec(100, lo=1, help='agp: steps between updates')
    steps: int = spec(8, lo=1, hi=10000, help='gradual: pruning steps from start_epoch to end_epoch')
    curve: str = spec('cubic', choices=tuple(schedules_mod.CURVES), help='gradual: how the budget tightens over the '
                                                                         'steps')

    def check(self, where: str, path: str) -> None:
        if self.end_epoch < self.start_epoch:
            raise RecipeError(f'{where}: {path}.end_epoch: {self.end_epoch!r} is not allowed; expected a value >= '
                              f'start_epoch ({self.start_epoch})')

    def build(self) -> schedules_mod.Schedule:
        """The registered schedule of this kind, given the fields its constructor takes."""
        cls = schedules_mod.SCHEDULES.get(self.kind)
        taken = inspect.signature(cls.__init__).parameters
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in taken})


@dataclasses.dataclass
class PruningConfig:
    criterion: str = spec('l2', choices=tuple(criteria_mod.CRITERIA.names()))
    granularity: str = spec('channel', choices=('channel', 'weight'))
    allocator: Optional[str] = spec(None, choices=(None,) + tuple(allocation_mod.ALLOCATORS.names()),
                                    help='how the budget is spread over the groups (default: knapsack; uniform '
                                         'with ratios)')
    scope: Optional[str] = spec(None, choices=(None, 'local', 'global'),
                                help='older name of the allocator: local = uniform, global = threshold')
    target: TargetConfig = spec(factory=lambda: TargetConfig(sparsity=0.5))
    initial_sparsity: float = spec(0.0, lo=0.0, hi=1.0, hi_open=True, help='sparsity target at the first update')
    schedule: ScheduleConfig = spec(factory=ScheduleConfig)
    include: List[str] = spec(factory=lambda: ['*'], help='glob (or re:regex) on layer paths or block names')
    exclude: List[str] = spec(factory=list)
    skip_first: bool = spec(True, help='leave the first conv (on the input) out')
    skip_last: bool = spec(True, help='leave the classifier (producing the output) out')
    round_to: Union[int, str] = spec('auto', lo=1, hi=4096,
                                     help='kept channels per group a multiple of this; auto: the device\'s channel '
                                          'block (16 on an AVX-512 CPU, 8 on AVX2, 1 on a GPU)')
    max_ratio: float = spec(0.9, lo=0.0, hi=1.0, help='at most this fraction of a group (or layer) is removed')
    path: Optional[str] = spec(None, choices=(None, 'plan', 'budget'),
                               help='updates before the last: plan (move toward the final widths, re-planned each '
                                    'step; default with knapsack) or budget (meet the step\'s own budget)')
    step_ratio: float = spec(1.0, lo=0.0, lo_open=True, hi=1.0,
                             help='at most this fraction of a group\'s live channels removed by one update before '
                                  'the last (gradual schedules re-score in between)')
    ratios: Dict[str, float] = spec(factory=dict, help='layer-wise sparsity per glob pattern (uniform allocator)')
    reduction: str = spec('mean', choices=criteria_mod.REDUCTIONS)
    normalizer: Optional[str] = spec(criteria_mod.AUTO, choices=(criteria_mod.AUTO,) + criteria_mod.NORMALIZERS,
                                     help='per-group score normalisation; auto: the default of the criterion (mean; '
                                          'group_taylor: null)')
    members: str = spec('all', choices=criteria_mod.MEMBERS)
    seed: int = spec(0, lo=0)
    score_batches: int = spec(32, lo=0, help='grad/taylor: batches of gradients gathered before an update at step 0')
    recalibrate_batches: int = spec(20, lo=0, help='training batches that refresh the BatchNorm statistics after each '
                                                   'structured update (0: none)')

    def check(self, where: str, path: str) -> None:
        check_pruning(where, path, {name: getattr(self, name) for name in RULED})

    def build(self) -> Any:
        """The PruningModifier this item describes."""
        from .pruning import PruningModifier  # the modifier module imports this one
        kwargs = {'reduction': self.reduction, 'normalizer': self.normalizer, 'members': self.members}
        if self.criterion == 'random':
            kwargs['seed'] = self.seed
        crit = criteria_mod.get(self.criterion, **kwargs)
        return PruningModifier(crit, granularity=self.granularity, allocator=self.allocator, scope=self.scope,
                               target=self.target, schedule=self.schedule.build(),
                               initial_sparsity=self.initial_sparsity,
                               selection=Selection(tuple(self.include), tuple(self.exclude), self.skip_first,
                                                   self.skip_last),
                               round_to=self.round_to, max_ratio=self.max_ratio, ratios=dict(self.ratios),
                               step_ratio=self.step_ratio, path=self.path)


# the settings check_pruning rules on; PruningModifier takes each as an argument of the same name
RULED = ('criterion', 'granularity', 'allocator', 'scope', 'target', 'initial_sparsity', 'round_to', 'max_ratio',
         'path', 'step_ratio', 'ratios')
# the fields whose type, range and choices also hold for PruningModifier's arguments (criterion, allocator and target
# may be objects there: they are checked by the rules below)
_TYPED = ('granularity', 'scope', 'initial_sparsity', 'round_to', 'max_ratio', 'path', 'step_ratio')


def unstructured_criteria() -> List[str]:
    """The criteria that score single weights (granularity weight)."""
    return [n for n in criteria_mod.CRITERIA.names() if not criteria_mod.CRITERIA.get(n).structured_only]


def check_pruning(where: str, path: str, settings: Dict[str, Any]) -> None:
    """The rules of a pruning item, on its settings (the RULED names; criterion and allocator as names or objects).

    Args:
        where: the file or object named in errors.
        path: the dotted key path of the item ('' for a modifier's own arguments).
    """
    def key(name: str) -> str:
        return f'{path}.{name}' if path else name

    for name in _TYPED:
        check_value(PruningConfig, name, settings[name], where, key(name))
    s = dict(settings, ratios=settings['ratios'] or {})
    target = as_target(s['target'], where, key('target'))
    if isinstance(s['round_to'], str) and s['round_to'] != 'auto':
        raise RecipeError(f'{where}: {key("round_to")}: {s["round_to"]!r} is not allowed; expected auto or an '
                          f'integer from 1 to 4096')
    try:
        chosen = resolve_allocator(s['allocator'], s['scope'], ())
    except MxPruneError as e:
        raise RecipeError(f'{where}: {key("allocator")}: {s["allocator"]!r} is not allowed with scope '
                          f'{s["scope"]!r} ({e})') from None
    chosen = getattr(chosen, 'registry_name', chosen)
    if s['ratios'] and (s['allocator'] or s['scope']) and chosen != 'uniform':
        raise RecipeError(f'{where}: {key("ratios")}: layer-wise ratios are not allowed with the {chosen} allocator; '
                          f'expected allocator uniform (or scope local)')
    crit = s['criterion']
    crit = criteria_mod.CRITERIA.get(crit) if isinstance(crit, str) else crit
    if s['granularity'] == 'weight' and crit.structured_only:
        raise RecipeError(f'{where}: {key("criterion")}: {getattr(crit, "registry_name", crit)!r} is not allowed '
                          f'with granularity weight; expected one of {", ".join(unstructured_criteria())}')
    if s['granularity'] == 'weight' and target.kind != 'sparsity':
        raise RecipeError(f'{where}: {key("target")}: {target.kind} is not allowed with granularity weight; '
                          f'expected sparsity (unstructured zeros do not shrink a dense layer)')
    if target.kind in ('latency', 'speedup') and s['ratios']:
        raise RecipeError(f'{where}: {key("ratios")}: layer-wise ratios are not allowed with a {target.kind} '
                          f'target; expected none (the allocator chooses every width)')
    for k, v in s['ratios'].items():
        if not 0.0 <= v < 1.0:
            raise RecipeError(f'{where}: {key("ratios")}.{k}: {v!r} is not allowed; expected 0 <= ratio < 1')
    if target.kind == 'sparsity' and s['initial_sparsity'] > target.value:
        raise RecipeError(f'{where}: {key("initial_sparsity")}: {s["initial_sparsity"]!r} is not allowed; '
                          f'expected a value <= target.sparsity ({target.value})')


def resolve_allocator(allocator: Any, scope: Optional[str], ratios: Any) -> Any:
    """The allocator's name from the `allocator` and older `scope` settings (an object passes as it is)."""
    by_scope = {None: None, 'local': 'uniform', 'global': 'threshold'}
    if scope not in by_scope:
        raise MxPruneError(f'scope {scope!r}; choose local or global (or an allocator)')
    name = allocator if allocator is not None else by_scope[scope] or ('uniform' if ratios else 'knapsack')
    if isinstance(name, str):
        allocation_mod.ALLOCATORS.get(name)
    if scope is not None and allocator is not None and by_scope[scope] != getattr(name, 'registry_name', name):
        raise MxPruneError(f'scope {scope} means allocator {by_scope[scope]}, not {allocator!r}; give one of them')
    if ratios and getattr(name, 'registry_name', name) != 'uniform':
        raise MxPruneError(f'layer-wise ratios take the uniform allocator, not {getattr(name, "registry_name", name)}'
                           f' (scope global / threshold and knapsack choose the widths themselves)')
    return name


@dataclasses.dataclass
class RegularizerConfig:
    kind: str = spec('bn_l1', choices=tuple(REGULARIZERS.names()))
    strength: float = spec(1e-4, lo=0.0)
    start_epoch: float = spec(0.0, lo=0.0)
    end_epoch: Optional[float] = spec(None, lo=0.0, help='null: until training ends')
    include: List[str] = spec(factory=lambda: ['*'])
    exclude: List[str] = spec(factory=list)
    skip_first: bool = spec(True)
    skip_last: bool = spec(True)

    def build(self) -> Regularizer:
        return Regularizer(self.kind, self.strength, self.start_epoch, self.end_epoch,
                           Selection(tuple(self.include), tuple(self.exclude), self.skip_first, self.skip_last))

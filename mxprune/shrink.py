"""Physical removal of pruned channels: a plan (data) and its application to a net (in place).

A Plan lists, for every coupled group that loses channels, the channel indices kept, keyed by the group's
structural name (the path of its first producing layer, e.g. 'features.2.0.body.0:out'), so it applies to any
instance of the same architecture whatever its parameter name prefix. Applying it edits the Gluon blocks in place
(Conv2D incl. depthwise and grouped, Dense, BatchNorm widths and parameter data; cached graphs and symbols
cleared): the same Python object then hybridizes, trains and exports as the smaller net. A pruned model is saved
as its .params plus the plan beside it; `load_pruned` rebuilds a fresh model to the pruned shape and loads the
weights.
"""
import dataclasses
import json
import os
from typing import Dict, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from . import flops as flops_mod
from . import io
from . import masks as masks_mod
from .errors import ModelError, MxPruneError, reason
from .graph import DependencyGraph
from .graph.core import finish_init

PLAN_VERSION = 1


@dataclasses.dataclass
class Plan:
    """Kept channel indices per coupled group, by structural group name."""
    input_shape: Tuple[int, ...]
    groups: Dict[str, dict]  # name -> {'size': original channels, 'keep': [kept indices]}
    model: str = ''

    def to_json(self) -> dict:
        return {'version': PLAN_VERSION, 'model': self.model, 'input_shape': list(self.input_shape),
                'groups': self.groups}

    @classmethod
    def from_json(cls, obj: dict, where: str = 'plan') -> 'Plan':
        if not isinstance(obj, dict) or obj.get('version') != PLAN_VERSION:
            raise ModelError(f'{where}: not a version-{PLAN_VERSION} mxprune plan')
        groups = obj.get('groups')
        shape = obj.get('input_shape')
        if not isinstance(groups, dict) or not isinstance(shape, list) or not all(isinstance(v, int) for v in shape):
            raise ModelError(f'{where}: malformed plan (expected groups: {{name: {{size, keep}}}}, input_shape: '
                             f'[N, C, H, W])')
        for name, g in groups.items():
            ok = isinstance(g, dict) and isinstance(g.get('size'), int) and isinstance(g.get('keep'), list)
            keep = g.get('keep') if ok else None
            if not ok or not keep or not all(isinstance(i, int) and 0 <= i < g['size'] for i in keep) \
                    or len(set(keep)) != len(keep):
                raise ModelError(f'{where}: group {name!r}: keep must be distinct indices in [0, size) and not '
                                 f'empty')
        return cls(tuple(shape), groups, str(obj.get('model', '')))

    def save(self, path: str) -> None:
        io.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> 'Plan':
        if not os.path.isfile(path):
            raise ModelError(f'{path}: plan file not found')
        try:
            with open(path, encoding='utf-8') as f:
                obj = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f'{path}: not a JSON plan ({e})') from None
        return cls.from_json(obj, path)

    def channels_removed(self) -> int:
        return sum(g['size'] - len(g['keep']) for g in self.groups.values())

    def keep_masks(self, graph: DependencyGraph) -> Dict[int, np.ndarray]:
        """{group index: bool keep-mask} of this plan on `graph`, checked against it (same groups and sizes, none
        frozen)."""
        by_name = {g.name: g for g in graph.groups}
        keep = {}
        for name, spec in self.groups.items():
            g = by_name.get(name)
            if g is None:
                raise ModelError(f'the plan names group {name!r}, which {type(graph.net).__name__} does not have; was '
                                 f'the plan made for another model?')
            if g.size != spec['size']:
                raise ModelError(f'group {name!r} has {g.size} channels here but {spec["size"]} in the plan; was the '
                                 f'plan made for another model or already applied?')
            if g.frozen:
                raise ModelError(f'group {name!r} is frozen here ({g.frozen})')
            k = np.zeros(g.size, bool)
            k[spec['keep']] = True
            problem = g.keep_error(k)
            if problem:
                raise ModelError(f'the plan does not fit this model: {problem}')
            keep[g.index] = k
        return keep


def plan_from_keep(graph: DependencyGraph, keep: Dict[int, np.ndarray], model: str = '') -> Plan:
    groups = {}
    for g in graph.groups:
        k = keep.get(g.index)
        if k is None or k.all():
            continue
        if g.frozen:
            raise MxPruneError(f'group {g.name} is frozen ({g.frozen}) and cannot be cut')
        if not k.any():
            raise MxPruneError(f'group {g.name} would lose all {g.size} channels; a group is never emptied')
        problem = g.keep_error(k)
        if problem:
            raise MxPruneError(problem)
        groups[g.name] = {'size': g.size, 'keep': np.flatnonzero(k).tolist()}
    return Plan(graph.input_shape, groups, model or type(graph.net).__name__)


def apply_plan(net: mx.gluon.HybridBlock, plan: Plan, input_shape: Optional[Sequence[int]] = None) -> Dict:
    """Cuts `net` in place to the plan. Returns {layer path: {role: kept count}} for the layers it changed."""
    shape = tuple(input_shape or plan.input_shape)
    graph = DependencyGraph.trace(net, shape)
    axis_keep = flops_mod.axis_masks(graph, plan.keep_masks(graph))
    changed = {}
    for layer in graph.layers:
        role_keep = {}
        for attr, axes in layer.axes.items():
            for axis, role in axes.items():
                m = axis_keep.get((id(layer), attr, axis))
                if m is not None and not m.all():
                    role_keep.setdefault(role, np.flatnonzero(m))
        if role_keep:
            layer.handler.cut(layer.block, role_keep)
            changed[layer.path] = {r: len(v) for r, v in role_keep.items()}
    masks_mod.clear_cached(net)
    return changed


def shrink_session(session) -> Tuple[mx.gluon.HybridBlock, Plan]:
    """Session.finalize(shrink=True): plan from the group masks, fold and remove masks, cut the net."""
    plan = plan_from_keep(session.graph, session.group_keep, type(session.net).__name__)
    for layer in session.masked:
        masks_mod.remove(layer.block, fold_first=True)
    session.masked = []
    masks_mod.clear_cached(session.net)
    apply_plan(session.net, plan, session.input_shape)
    session.needs_new_trainer = True
    return session.net, plan


def save_pruned(net: mx.gluon.HybridBlock, plan: Plan, prefix: str) -> Tuple[str, str]:
    """Writes <prefix>.params and <prefix>.plan.json (atomically); returns both paths."""
    params, plan_path = prefix + '.params', prefix + '.plan.json'
    mx.nd.waitall()
    io.write_with(params, net.save_parameters)
    plan.save(plan_path)
    return params, plan_path


def load_pruned(net: mx.gluon.HybridBlock, prefix_or_params: str, ctx: Optional[Sequence[mx.Context]] = None,
                plan_path: Optional[str] = None) -> Plan:
    """Cuts a freshly built (initialised) `net` to a saved plan and loads the pruned weights into it."""
    params = prefix_or_params if prefix_or_params.endswith('.params') else prefix_or_params + '.params'
    plan_path = plan_path or params[:-len('.params')] + '.plan.json'
    plan = Plan.load(plan_path)
    ctx = list(ctx or [mx.cpu()])
    finish_init(net, plan.input_shape)
    apply_plan(net, plan)
    if not os.path.isfile(params):
        raise ModelError(f'{params}: parameter file not found')
    try:
        net.load_parameters(params, ctx=ctx)
    except (AssertionError, mx.base.MXNetError, ValueError, RuntimeError) as e:
        raise ModelError(f'{params}: does not fit the model cut to {plan_path} ({reason(e)})') from None
    return plan

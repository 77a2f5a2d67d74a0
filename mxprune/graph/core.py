"""The DependencyGraph: a HybridBlock traced to its Symbol (tracer.py), its layers and coupled groups (groups.py)."""
import json
from typing import Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np

from .. import masks as masks_mod
from ..errors import MxPruneError
from ..layers import HANDLERS, gluon_compat
from .attrs import flat
from .groups import Group, Layer, Member, Selection, Space
from .rules import RULES, unknown
from .tracer import Node, Tracer, param_owners


class DependencyGraph:
    """Coupled channel groups of a HybridBlock, traced from its Symbol."""

    def __init__(self, net: mx.gluon.HybridBlock, input_shape: Tuple[int, ...], layers: List[Layer],
                 groups: List[Group], unsupported: List[Tuple[str, str]], param_shapes: Dict[str, tuple],
                 outputs: List[Layer], firsts: List[Layer]):
        self.net, self.input_shape = net, tuple(input_shape)
        self.param_shapes = param_shapes  # parameter name -> shape, as traced (also before deferred init ends)
        self.layers, self.groups, self.unsupported = layers, groups, unsupported
        self.outputs, self.firsts = outputs, firsts
        self._by_path = {layer.path: layer for layer in layers}

    # --- construction
    @classmethod
    def trace(cls, net: mx.gluon.HybridBlock, input_shape: Tuple[int, ...]) -> 'DependencyGraph':
        """Traces `net` on a Symbol input of `input_shape` (N, C, H, W) and builds the groups."""
        with masks_mod.bypassed():
            out = net(mx.sym.var('data'))
        sym = mx.sym.Group(flat(out)) if isinstance(out, (list, tuple)) else out
        # Re-read from the JSON: tojson() drops amp_cast/amp_multicast nodes that get_internals() still lists (GluonCV's
        # box decoders insert them), which would shift every shape after them by one.
        sym = mx.sym.load_json(sym.tojson())
        js = json.loads(sym.tojson())
        internals = sym.get_internals()
        names = internals.list_outputs()
        try:
            _, out_shapes, _ = internals.infer_shape(data=tuple(input_shape))
        except mx.base.MXNetError as e:
            raise MxPruneError(f'cannot infer the shapes of {type(net).__name__} for input {tuple(input_shape)}: '
                               f'{str(e).splitlines()[0][:200]}') from None
        owners, pmap = param_owners(net)
        t = Tracer(owners, pmap)
        shape_of = _shape_table(js, names, out_shapes)
        t.param_shapes = {node['name']: shape_of.get((nid, 0)) for nid, node in enumerate(js['nodes'])
                          if node['op'] == 'null' and node['name'] in owners}
        for nid, node in enumerate(js['nodes']):
            n_out = len([k for k in shape_of if k[0] == nid])
            shapes = [shape_of.get((nid, k)) for k in range(max(n_out, 1))]
            if node['op'] == 'null':
                key = (nid, 0)
                t.shapes[key] = shapes[0]
                if node['name'] in owners:
                    t.spaces[key] = None  # a parameter: its channels are handled by the layer that owns it
                else:
                    t.spaces[key] = t.opaque(shapes[0], f'network input {node["name"]}')
                continue
            inputs = [(i[0], i[1]) for i in node['inputs']]
            is_layer = node['op'] in HANDLERS and (node['op'] != 'LeakyReLU' or
                                                   node.get('attrs', {}).get('act_type') == 'prelu')
            params = []
            data = inputs
            if is_layer:
                data = inputs[:1]
                for src in inputs[1:]:
                    raw = js['nodes'][src[0]]
                    if raw['op'] == 'null' and raw['name'] in owners:
                        params.append(raw['name'])
                    else:
                        params = []  # a computed weight: the layer cannot be cut
                        break
                if not params:
                    is_layer = False
                    data = inputs
            view = Node(t, nid, node, data, params, shapes)
            computed_weight = node['op'] in HANDLERS and not is_layer and node['op'] != 'LeakyReLU'
            rule = unknown if computed_weight else RULES.get(node['op'], unknown)
            outs = rule(t, view)
            for k, space in enumerate(outs):
                t.spaces[(nid, k)] = space
                t.shapes[(nid, k)] = shapes[k] if k < len(shapes) else None
        heads = [(h[0], h[1]) for h in js['heads']]
        for h in heads:
            t.freeze(t.spaces.get(h), 'network output')
        return cls._build(net, input_shape, t, heads)

    @classmethod
    def _build(cls, net, input_shape, t: Tracer, heads) -> 'DependencyGraph':
        roots: Dict[int, List[Member]] = {}
        order: List[int] = []
        for layer in t.layers:
            for attr, axes in layer.axes.items():
                if attr not in layer.params:
                    continue
                for axis, role in axes.items():
                    space = layer.spaces.get(role)
                    if space is None:
                        continue
                    pos = 0
                    for s in space.segs:
                        r = t.find(s.atom)
                        chans = np.arange(s.start, s.start + s.length)
                        positions = (pos + np.arange(s.length))[:, None] * space.repeat + \
                            np.arange(space.repeat)[None, :]
                        if r not in roots:
                            roots[r] = []
                            order.append(r)
                        grouped = layer.groups if role == 'in' and attr == 'weight' else 1
                        roots[r].append(Member(layer, attr, axis, role, chans, positions, grouped))
                        pos += s.length
        groups = []
        for r in order:
            members = roots[r]
            producers = [m for m in members if m.producer]
            first = (producers or members)[0]
            name = f'{first.layer.path}:{first.role}'
            blocks, frozen = t.blocks.get(r, 1), t.frozen.get(r)
            if blocks > 1 and blocks == t.atom_size[r] and not frozen:
                frozen = f'one channel per block ({blocks} blocks of grouped convolutions or splits): none can be cut'
            groups.append(Group(len(groups), name, t.atom_size[r], members, frozen, blocks))
        outputs = [layer for layer in t.layers if layer.weighted and
                   any(t.find(s.atom) in {t.find(x.atom) for h in heads if t.spaces.get(h) for x in t.spaces[h].segs}
                       for s in layer.spaces.get('out', Space(())).segs)]
        data_atoms = {t.find(s.atom) for k, sp in t.spaces.items() if sp is not None and k[1] == 0
                      for s in sp.segs if t.frozen.get(t.find(s.atom), '').startswith('network input')}
        firsts = [layer for layer in t.layers if layer.weighted and
                  any(t.find(s.atom) in data_atoms for s in layer.spaces.get('in', Space(())).segs)]
        return cls(net, input_shape, t.layers, groups, t.unsupported, t.param_shapes, outputs, firsts)

    # --- queries
    def layer(self, path_or_block) -> Layer:
        if isinstance(path_or_block, str):
            try:
                return self._by_path[path_or_block]
            except KeyError:
                raise MxPruneError(f'no layer {path_or_block!r} in the graph') from None
        for layer in self.layers:
            if layer.block is path_or_block:
                return layer
        raise MxPruneError(f'block {getattr(path_or_block, "name", path_or_block)!r} is not a traced layer')

    def group_of(self, layer, role: str = 'out') -> Group:
        """The group holding a layer's output channels (role 'out'; 'in' for its inputs)."""
        layer = layer if isinstance(layer, Layer) else self.layer(layer)
        roles = (role, 'chan') if role == 'out' else (role,)
        for g in self.groups:
            for m in g.members:
                if m.layer is layer and m.role in roles:
                    return g
        raise MxPruneError(f'{layer.path} has no {role} channel group')

    def selected(self, selection: Selection) -> List[Layer]:
        return [layer for layer in self.layers if selection.matches(layer, self.firsts, self.outputs)]

    def prunable_groups(self, selection: Optional[Selection] = None) -> List[Group]:
        """Groups that are not frozen, have a producing layer, and whose producers are all selected."""
        selection = selection or Selection()
        chosen = {id(layer) for layer in self.selected(selection)}
        out = []
        for g in self.groups:
            producers = g.producers
            if g.frozen or not producers or g.size < 2:
                continue
            if all(id(m.layer) in chosen for m in producers):
                out.append(g)
        return out

    def weighted_layers(self) -> List[Layer]:
        return [layer for layer in self.layers if layer.weighted]

    def summary(self) -> str:
        n_frozen = sum(1 for g in self.groups if g.frozen)
        lines = [f'{type(self.net).__name__}: {len(self.layers)} layers, {len(self.groups)} groups '
                 f'({len(self.groups) - n_frozen} prunable, {n_frozen} frozen)']
        if self.unsupported:
            ops = sorted({op for op, _ in self.unsupported})
            lines.append(f'operators without a channel rule (their channels are frozen): {", ".join(ops)}')
        return '\n'.join(lines)


def _shape_table(js: dict, names: List[str], shapes: List[tuple]) -> Dict[Tuple[int, int], tuple]:
    """Maps (node id, output index) to the inferred shape.

    The internals list their outputs node by node in the JSON's topological order, so a cursor walks both together:
    names alone are ambiguous when a Gluon block runs twice (both nodes are called e.g. 'pool0_fwd').
    """
    table = {}
    cursor = 0
    for nid, node in enumerate(js['nodes']):
        if node['op'] == 'null':
            if cursor < len(names) and names[cursor] == node['name']:
                table[(nid, 0)] = tuple(shapes[cursor])
                cursor += 1
            continue
        base = node['name'] + '_output'
        k = 0
        while cursor < len(names) and (names[cursor] == base or names[cursor] == f'{base}{k}'):
            table[(nid, k)] = tuple(shapes[cursor])
            cursor += 1
            k += 1
    return table


def finish_init(net: mx.gluon.HybridBlock, input_shape: Tuple[int, ...]) -> None:
    """Completes deferred initialisation with one zero forward pass; refuses an uninitialised net."""
    params = list(net.collect_params().values())
    if not params:
        raise MxPruneError(f'{type(net).__name__} has no parameters to prune')
    if any(not gluon_compat.has_data(p) and not gluon_compat.is_deferred(p) for p in params):
        raise MxPruneError(f'{type(net).__name__} is not initialised: call net.initialize() (or load weights) first')
    if any(not gluon_compat.has_data(p) for p in params):
        ctx = gluon_compat.deferred_ctx(next(p for p in params if gluon_compat.is_deferred(p)))
        net(mx.nd.zeros(input_shape, ctx=ctx))

"""SymbolBlock -> native Gluon layers.

GluonCV builds the SSD backbones it borrows from classifiers (mobilenet, resnet) as a `FeatureExpander`, a
SymbolBlock: its convolutions are nodes of one Symbol, not Gluon blocks, so they cannot be masked or cut in place.
`native(net)` replaces every SymbolBlock in a net by a `SymbolGraph`, which replays the same Symbol node by node with
real Gluon layers (Conv, BatchNorm, Dense) as children, holding the same weights under the same parameter names.
After that the dependency graph, masks, shrinking and export work on the detector as on a classifier: the backbone,
the extra feature layers and the predictor convs that read them are coupled; anchor, decoding and NMS operators
freeze what they touch; the predictor outputs stay whole.
"""
import json
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple

import mxnet as mx
from mxnet import gluon

from .. import layers as layers_mod
from .. import masks as masks_mod
from ..errors import ModelError
from ..graph.attrs import flag, ints
from ..graph.core import finish_init
from ..layers import gluon_compat


def _conv(attrs: dict, shapes: Dict[str, tuple], prefix: str) -> mx.gluon.HybridBlock:
    kernel = ints(attrs['kernel'])
    nd = len(kernel)
    groups = int(attrs.get('num_group', 1))
    kwargs = {'channels': int(attrs['num_filter']), 'kernel_size': kernel, 'groups': groups,
              'strides': ints(attrs.get('stride'), nd, 1), 'padding': ints(attrs.get('pad'), nd, 0),
              'dilation': ints(attrs.get('dilate'), nd, 1), 'use_bias': not flag(attrs.get('no_bias'), False),
              'in_channels': shapes['weight'][1] * groups, 'prefix': prefix}
    if attrs.get('layout') not in (None, 'None'):
        kwargs['layout'] = attrs['layout']
    return CONV_CLASSES[nd](**kwargs)


def _batchnorm(attrs: dict, shapes: Dict[str, tuple], prefix: str) -> mx.gluon.HybridBlock:
    # Missing attributes take the operator's defaults (mx.sym.BatchNorm: eps 1e-3, fix_gamma True), not Gluon's.
    return gluon.nn.BatchNorm(axis=int(attrs.get('axis', 1)), momentum=float(attrs.get('momentum', 0.9)),
                              epsilon=float(attrs.get('eps', 1e-3)), scale=not flag(attrs.get('fix_gamma'), True),
                              use_global_stats=flag(attrs.get('use_global_stats'), False),
                              in_channels=shapes['gamma'][0], prefix=prefix)


def _dense(attrs: dict, shapes: Dict[str, tuple], prefix: str) -> mx.gluon.HybridBlock:
    return gluon.nn.Dense(int(attrs['num_hidden']), use_bias=not flag(attrs.get('no_bias'), False),
                          flatten=flag(attrs.get('flatten'), True), in_units=shapes['weight'][1], prefix=prefix)


CONV_CLASSES = {1: gluon.nn.Conv1D, 2: gluon.nn.Conv2D, 3: gluon.nn.Conv3D}
# Operator -> (Gluon attribute of each parameter input in order, builder of the equivalent Gluon layer).
NATIVE_LAYERS: Dict[str, Tuple[Tuple[str, ...], Callable]] = {
    'Convolution': (('weight', 'bias'), _conv),
    'BatchNorm': (('gamma', 'beta', 'running_mean', 'running_var'), _batchnorm),
    'FullyConnected': (('weight', 'bias'), _dense),
}


def _op_function(F, op: str):
    """The nd/sym function of a JSON operator name ('Convolution', '_plus_scalar', '_contrib_box_nms')."""
    contrib = op[len('_contrib_'):] if op.startswith('_contrib_') else None
    for space, name in ((F, op), (gluon_compat.internal_ops(F), op), (F.contrib, contrib)):
        fn = getattr(space, name, None) if name else None
        if fn is not None:
            return fn
    return None


class SymbolGraph(gluon.HybridBlock):
    """A Symbol replayed node by node: Convolution / BatchNorm / FullyConnected nodes run as native Gluon child
    layers (so they can be masked and cut in place), every other node as its nd/sym operator."""

    def __init__(self, symbol: mx.sym.Symbol, input_names: Sequence[str], params: Dict[str, gluon.Parameter],
                 strip: str = ''):
        """
        Args:
            symbol: the graph (one or a Group of outputs).
            input_names: its data inputs, in the order forward() takes them.
            params: initialised Parameters for its other variables, by name; their values are copied.
            strip: a common prefix removed from node names to form the children's structural names.
        """
        super().__init__(prefix='', params=None)
        js = json.loads(symbol.tojson())
        self._nodes = js['nodes']
        self._heads = [(h[0], h[1]) for h in js['heads']]
        self._inputs = {name: i for i, name in enumerate(input_names)}
        self._layer_of: Dict[int, str] = {}      # node id -> child name
        self._param_attr: Dict[str, str] = {}    # variable name -> attribute on self (non-layer operators)
        self._attrs: Dict[int, dict] = {}
        used_by: Dict[str, Tuple[str, Tuple[str, ...]]] = {}
        missing = [n['name'] for n in self._nodes if n['op'] == 'null' and n['name'] not in self._inputs
                   and n['name'] not in params]
        if missing:
            raise ModelError(f'SymbolGraph: variable {missing[0]!r} is neither an input ({", ".join(input_names)}) '
                             f'nor a parameter')
        for nid, node in enumerate(self._nodes):
            op = node['op']
            if op == 'null':
                continue
            if _op_function(mx.sym, op) is None:
                raise ModelError(f'SymbolGraph: operator {op} ({node["name"]}) has no mx.sym function to replay')
            self._attrs[nid] = {k: v for k, v in node.get('attrs', {}).items() if not k.startswith('__')}
            srcs = [self._nodes[i[0]] for i in node['inputs']]
            pnames = tuple(s['name'] for s in srcs[1:])
            native = NATIVE_LAYERS.get(op)
            as_layer = native is not None and len(pnames) <= len(native[0]) and \
                all(s['op'] == 'null' and s['name'] in params and s['name'] not in self._inputs for s in srcs[1:])
            if as_layer and pnames and pnames[0] in used_by:  # shared weights: call the same child again
                child, same = used_by[pnames[0]]
                if same == pnames:
                    self._layer_of[nid] = child
                    continue
                as_layer = False
            shared = [p for p in pnames if p in used_by] if as_layer else \
                [s['name'] for s in srcs if s['name'] in used_by]
            shared += [p for p in pnames if p in self._param_attr] if as_layer else []
            if shared:  # one copy of a weight must stay one copy: refuse rather than train two
                raise ModelError(f'SymbolGraph: {op} {node["name"]} shares parameter {shared[0]!r} with another node '
                                 f'in a way that cannot be replayed by one Gluon layer')
            if as_layer:
                self._layer_of[nid] = self._add_layer(node, nid, pnames, params, strip)
                for p in pnames:
                    used_by[p] = (self._layer_of[nid], pnames)
                continue
            for s in srcs:
                if s['op'] == 'null' and s['name'] in params and s['name'] not in self._param_attr:
                    self._add_param(s['name'], params[s['name']])
        for node in self._nodes:
            for src, k, _ in node.get('inputs', []):
                if src in self._layer_of and k > 0:
                    raise ModelError(f'SymbolGraph: {node["name"]} reads output {k} of layer '
                                     f'{self._nodes[src]["name"]}; only a layer\'s first output can be replayed')

    def _add_layer(self, node: dict, nid: int, pnames: Tuple[str, ...], params: Dict[str, gluon.Parameter],
                   strip: str) -> str:
        attrs_of, build = NATIVE_LAYERS[node['op']]
        base = node['name'][:-len('_fwd')] if node['name'].endswith('_fwd') else node['name']
        shapes = {attr: params[p].shape for attr, p in zip(attrs_of, pnames)}
        block = build(self._attrs[nid], shapes, prefix=base + '_')
        ctx = params[pnames[0]].list_ctx()
        block.initialize(ctx=ctx)
        for attr, p in zip(attrs_of, pnames):
            src, dst = params[p], getattr(block, attr)
            dst.set_data(src.data(ctx[0]))
            dst.lr_mult, dst.wd_mult = src.lr_mult, src.wd_mult
        name = base[len(strip):] if base.startswith(strip) and len(base) > len(strip) else base
        if name in self._children:  # two nodes with one name: keep both layers apart
            name = f'{name}_{len(self._children)}'
        self.register_child(block, name)
        return name

    def _add_param(self, name: str, src: gluon.Parameter) -> None:
        attr = f'param{len(self._param_attr)}'
        p = self.params.get(name, shape=src.shape, dtype=src.dtype, grad_req=src.grad_req,
                            differentiable=src.grad_req != 'null')
        p.lr_mult, p.wd_mult = src.lr_mult, src.wd_mult
        p.initialize(ctx=src.list_ctx())
        p.set_data(src.data(src.list_ctx()[0]))
        setattr(self, attr, p)
        self._param_attr[name] = attr

    def hybrid_forward(self, F, x, *args, **params):
        inputs = [x, *args]
        values: Dict[Tuple[int, int], Any] = {}
        for nid, node in enumerate(self._nodes):
            if node['op'] == 'null':
                name = node['name']
                if name in self._inputs:
                    values[(nid, 0)] = inputs[self._inputs[name]]
                elif name in self._param_attr:
                    values[(nid, 0)] = params[self._param_attr[name]]
                continue
            if nid in self._layer_of:  # its parameters live in the child layer
                src, k, _ = node['inputs'][0]
                out = self._children[self._layer_of[nid]](values[(src, k)])
            else:
                out = _op_function(F, node['op'])(*[values[(src, k)] for src, k, _ in node['inputs']],
                                                  **self._attrs[nid])
            if isinstance(out, (list, tuple)):
                outs = list(out)
            elif F is mx.sym and len(out.list_outputs()) > 1:
                outs = [out[k] for k in range(len(out.list_outputs()))]
            else:
                outs = [out]
            for k, o in enumerate(outs):
                values[(nid, k)] = o
        heads = [values[h] for h in self._heads]
        return heads[0] if len(heads) == 1 else heads


def _common_prefix(names: List[str]) -> str:
    prefix = os.path.commonprefix(names)
    return prefix[:prefix.rfind('_') + 1] if '_' in prefix else ''


def to_native(block: gluon.SymbolBlock) -> SymbolGraph:
    """The SymbolGraph of an initialised SymbolBlock (same outputs, same parameter values and names)."""
    input_names, out = layers_mod.symbol_of(block)
    params = {p.name: p for p in block.collect_params().values()}
    if any(not gluon_compat.has_data(p) for p in params.values()):
        raise ModelError(f'{block.name}: initialise the net and run one forward pass before converting it')
    return SymbolGraph(out, input_names, params, strip=_common_prefix(list(params)))


def native(net: gluon.HybridBlock, input_shape: Sequence[int]) -> gluon.HybridBlock:
    """Replaces every SymbolBlock inside `net` by its SymbolGraph (in place) and returns the net.

    Deferred shapes are completed first with one forward pass of `input_shape`. A net that is itself a SymbolBlock
    is returned converted.
    """
    finish_init(net, tuple(input_shape))
    if isinstance(net, gluon.SymbolBlock):
        return to_native(net)

    def walk(block):
        for name, child in layers_mod.child_blocks(block).items():
            if isinstance(child, gluon.SymbolBlock):
                layers_mod.replace_child(block, name, to_native(child))
            else:
                walk(child)
    walk(net)
    masks_mod.clear_cached(net)
    return net


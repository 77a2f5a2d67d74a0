"""One handler per layer kind: which parameter axes carry which channel space, and how to cut a layer.

The graph finds layers by the operator that consumes their weights (`Convolution`, `FullyConnected`, ...). A handler
names, per parameter, the axes that index input channels ('in'), output channels ('out') or a layer's one
channel space ('chan', for BatchNorm and friends). Cutting (physical removal) edits the Gluon block in place; this is
the only module that touches Gluon's private attributes.
"""
from typing import Dict, Sequence

import mxnet as mx
import numpy as np

from ..errors import MxPruneError


class LayerHandler:
    """Base: the channel roles of a layer's parameters and how to cut them."""
    kind = 'layer'

    def axes(self, attrs: dict, in_shape: Sequence[int]) -> Dict[str, Dict[int, str]]:
        """{param attr: {axis: role}} for a node with these operator attributes."""
        raise NotImplementedError

    def cut(self, block: mx.gluon.Block, keep: Dict[str, np.ndarray]) -> None:
        """Keeps only `keep[role]` indices along each role's axes (roles absent are untouched)."""
        # every role is read before any parameter changes shape (a depthwise conv is told by its weight's shape)
        roles_of = {attr: self.param_roles(block, 'weight' if attr == 'weight_mask' else attr)
                    for attr in block._reg_params}
        for attr, param in list(block._reg_params.items()):
            roles = roles_of[attr]
            if not roles:
                continue
            if param._data is None:
                raise MxPruneError(f'{block.name}.{attr} is not initialised; run one forward pass before cutting')
            index = [slice(None)] * len(param.shape)
            changed = False
            for axis, role in roles.items():
                if role in keep:
                    index[axis] = keep[role]
                    changed = True
            if changed:
                data = param.data(param.list_ctx()[0]).asnumpy()
                for axis, idx in enumerate(index):
                    if not isinstance(idx, slice):
                        data = np.take(data, idx, axis=axis)
                replace_param(param, data)
        self.update_attrs(block, keep)

    def param_roles(self, block: mx.gluon.Block, attr: str) -> Dict[int, str]:
        raise NotImplementedError

    def update_attrs(self, block: mx.gluon.Block, keep: Dict[str, np.ndarray]) -> None:
        """Updates the block's width attributes after its parameters were cut."""


def replace_param(param: mx.gluon.Parameter, data: np.ndarray) -> None:
    """Gives a Parameter new data of a new shape on its contexts; drops its cached symbol variable."""
    ctx = param.list_ctx()
    param._shape = tuple(data.shape)
    param._var = None
    param._data = None
    param._grad = None
    param._deferred_init = ()
    param._init_impl(mx.nd.array(data, dtype=param.dtype), ctx)


class ConvHandler(LayerHandler):
    """Convolution (Conv1D/2D/3D): weight (C_out, C_in/g, k...). Depthwise (g == C_in == C_out): one space.

    Grouped (1 < g, not depthwise): the roles of a plain conv, but 'in' keeps are indices into the C_in input
    channels (the graph's grouped input slice, see graph.Member), and both keeps must hold the same number of
    channels in each of the g blocks: the cut conv has g groups again, weight (g*b', a', k...), where the rows of
    output block j keep the columns of the input channels kept in input block j.
    """
    kind = 'conv'

    def axes(self, attrs, in_shape):
        g = int(attrs.get('num_group', 1))
        c_in = in_shape[1]
        c_out = int(attrs['num_filter'])
        if g == c_in == c_out and g > 1:
            return {'weight': {0: 'chan'}, 'bias': {0: 'chan'}}
        return {'weight': {0: 'out', 1: 'in'}, 'bias': {0: 'out'}}

    @staticmethod
    def _depthwise(block) -> bool:
        """g == C_in == C_out; read from the weight (C_out, C_in/g, ...) once it has a shape, since a deferred
        `_in_channels` is 0 and g == C_out alone does not make a conv depthwise (C_in = 8, C_out = g = 4)."""
        g = block._kwargs.get('num_group', 1)
        shape = block._reg_params['weight'].shape
        if shape and all(shape):
            return g > 1 and shape[0] == g and shape[1] == 1
        return g > 1 and (block._channels == block._in_channels == g or
                          (g == block._channels and block._in_channels == 0))

    def param_roles(self, block, attr):
        if self._depthwise(block):
            return {'weight': {0: 'chan'}, 'bias': {0: 'chan'}}.get(attr, {})
        return {'weight': {0: 'out', 1: 'in'}, 'bias': {0: 'out'}}.get(attr, {})

    def cut(self, block, keep):
        g = block._kwargs.get('num_group', 1)
        if g == 1 or self._depthwise(block):
            super().cut(block, keep)
            return
        for attr, param in list(block._reg_params.items()):
            if attr not in ('weight', 'weight_mask', 'bias') or not ({'in', 'out'} & set(keep)):
                continue
            if param._data is None:
                raise MxPruneError(f'{block.name}.{attr} is not initialised; run one forward pass before cutting')
            data = param.data(param.list_ctx()[0]).asnumpy()
            rows = np.asarray(keep.get('out', np.arange(data.shape[0])))
            _equal_blocks(block, 'out', rows, g, data.shape[0])
            if attr != 'bias' and 'in' in keep:
                cols_per = data.shape[1]
                _equal_blocks(block, 'in', keep['in'], g, cols_per * g)
                local = (np.sort(keep['in']) % cols_per).reshape(g, -1)  # kept columns of each input block
                data = data[rows[:, None], local[rows // (data.shape[0] // g)]]
            else:
                data = data[rows]
            replace_param(param, data)
        self.update_attrs(block, keep)

    def update_attrs(self, block, keep):
        if 'chan' in keep:
            n = len(keep['chan'])
            block._channels = n
            block._in_channels = n
            block._kwargs['num_filter'] = n
            block._kwargs['num_group'] = n
        if 'out' in keep:
            block._channels = len(keep['out'])
            block._kwargs['num_filter'] = len(keep['out'])
        if 'in' in keep:
            block._in_channels = len(keep['in'])


def _equal_blocks(block, role: str, kept, groups: int, size: int) -> None:
    counts = np.bincount(np.asarray(kept) // (size // groups), minlength=groups)
    if not (counts == counts[0]).all():
        raise MxPruneError(f'{block.name}: a convolution with {groups} groups keeps {counts.min()} to '
                           f'{counts.max()} {role} channels per group; it needs the same number in each')


class DeconvHandler(ConvHandler):
    """Deconvolution: weight (C_in, C_out/g, k...). Grouped ones are frozen (no axes)."""
    kind = 'deconv'
    cut = LayerHandler.cut

    def axes(self, attrs, in_shape):
        if int(attrs.get('num_group', 1)) == 1:
            return {'weight': {0: 'in', 1: 'out'}, 'bias': {0: 'out'}}
        return {}

    def param_roles(self, block, attr):
        if block._kwargs.get('num_group', 1) == 1:
            return {'weight': {0: 'in', 1: 'out'}, 'bias': {0: 'out'}}.get(attr, {})
        return {}


class DenseHandler(LayerHandler):
    """FullyConnected: weight (units, in_units)."""
    kind = 'dense'

    def axes(self, attrs, in_shape):
        return {'weight': {0: 'out', 1: 'in'}, 'bias': {0: 'out'}}

    def param_roles(self, block, attr):
        return {'weight': {0: 'out', 1: 'in'}, 'bias': {0: 'out'}}.get(attr, {})

    def update_attrs(self, block, keep):
        if 'out' in keep:
            block._units = len(keep['out'])
        if 'in' in keep:
            block._in_units = len(keep['in'])


class ChannelParamHandler(LayerHandler):
    """Layers whose parameters are one vector per channel: BatchNorm, InstanceNorm, PReLU."""
    kind = 'norm'
    PARAMS = ('gamma', 'beta', 'running_mean', 'running_var', 'alpha')

    def axes(self, attrs, in_shape):
        axis = int(attrs.get('axis', 1))
        if axis not in (1, 1 - len(in_shape)):
            return {}
        return {p: {0: 'chan'} for p in self.PARAMS}

    def param_roles(self, block, attr):
        if attr not in self.PARAMS:
            return {}
        param = block._reg_params[attr]
        if param.shape and param.shape[0] == 1 and len(param.shape) == 1 and attr == 'alpha':
            return {}  # a PReLU with one shared slope
        return {0: 'chan'}

    def update_attrs(self, block, keep):
        if 'chan' in keep and hasattr(block, '_kwargs') and 'in_channels' in block._kwargs:
            block._kwargs['in_channels'] = len(keep['chan'])
        if 'chan' in keep and hasattr(block, 'in_channels'):
            block.in_channels = len(keep['chan'])


class PReLUHandler(ChannelParamHandler):
    kind = 'prelu'

    def axes(self, attrs, in_shape):
        if attrs.get('act_type') != 'prelu':
            return {}
        return {'alpha': {0: 'chan'}}


# Operator name -> handler for the layer owning the operator's parameters.
HANDLERS: Dict[str, LayerHandler] = {
    'Convolution': ConvHandler(),
    'Deconvolution': DeconvHandler(),
    'FullyConnected': DenseHandler(),
    'BatchNorm': ChannelParamHandler(),
    'InstanceNorm': ChannelParamHandler(),
    'LeakyReLU': PReLUHandler(),
}

# The layers whose weights reduce over input channels: mask-carrying layers (Conv2D, Dense, ...).
WEIGHTED_KINDS = ('conv', 'deconv', 'dense')


def child_blocks(block: mx.gluon.Block) -> Dict[str, mx.gluon.Block]:
    """A block's registered children by their structural name."""
    return dict(block._children)


def replace_child(parent: mx.gluon.Block, name: str, new: mx.gluon.Block) -> None:
    """Puts `new` in the place of the child `name` (same structural name and position), e.g. a SymbolBlock by a
    native block; Gluon's __setattr__ refuses a change of type, so the registry and the attribute are set here."""
    old = parent._children[name]
    parent._children[name] = new
    for attr, value in list(vars(parent).items()):
        if value is old:
            object.__setattr__(parent, attr, new)
    if hasattr(parent, '_clear_cached_op'):
        parent._clear_cached_op()


def symbol_of(block: mx.gluon.SymbolBlock):
    """(input variable names, output Symbol) of a SymbolBlock."""
    inputs, out = block._cached_graph
    return [s.name for s in inputs], out

"""Channel rules: for each MXNet operator, how the channel spaces of its inputs map to its outputs.

A rule gets the tracer and a node view and returns one Space (or None: no channel axis) per output. Rules are a
lookup table keyed by operator name; an operator with no entry is handled by `unknown`, which freezes every channel
it touches and records the operator, so the graph never cuts through what it does not understand.
"""
from typing import Callable, Dict, List, Optional

import numpy as np

from .attrs import flag, ints

# (tracer, node) -> [Space | None per output]
Rule = Callable[..., List[Optional[object]]]


def _axis(value, ndim: int, default: int = 1) -> int:
    a = default if value in (None, 'None', '') else int(value)
    return a % ndim if ndim else a


def identity(t, n):
    """Elementwise, per-channel or spatial operators: the channel layout passes through."""
    space = n.in_space(0)
    out = []
    for shape in n.out_shapes:
        if shape is not None and len(shape) >= 2 and space is not None and _channels(shape) == space.size:
            out.append(space)
        else:  # the layout does not pass: freeze what goes in, so no cut can cross this operator
            t.freeze(space, f'{n.op} {n.name} changes the channel axis')
            out.append(t.opaque(shape, f'{n.op} {n.name} changes the channel axis'))
    return out


def _channels(shape) -> int:
    return int(shape[1]) if shape is not None and len(shape) >= 2 else 0


def unknown(t, n):
    t.unsupported.append((n.op, n.name))
    for i in range(len(n.data)):
        t.freeze(n.in_space(i), f'operator {n.op} ({n.name}) has no channel rule')
    return [t.opaque(s, f'output of {n.op} ({n.name}), an operator with no channel rule') for s in n.out_shapes]


def output_layer(kind: str):
    """Convolution / FullyConnected / Deconvolution: consume the input space, create a new output atom."""
    def rule(t, n):
        x = n.in_space(0)
        in_shape = n.in_shape(0)
        out_shape = n.out_shapes[0]
        axes = t.layer_axes(n, in_shape)
        if kind == 'dense':
            flatten = flag(n.attrs.get('flatten'), True)
            if flatten and len(in_shape) > 2:
                x = t.flatten(x, in_shape)
            elif not flatten and len(in_shape) > 2:
                t.freeze(x, f'FullyConnected {n.name} with flatten=False on a {len(in_shape)}-d input')
                x = None
        groups = int(n.attrs.get('num_group', 1))
        if not axes:  # a grouped deconvolution, or weights no Gluon block of ours owns: nothing is cut
            what = f'grouped {n.op} {n.name} (num_group={groups})' if groups > 1 else f'{n.op} {n.name}'
            t.freeze(x, what)
            out = t.opaque(out_shape, f'output of {what}')
            t.add_layer(n, {}, in_shape, out_shape)
            return [out]
        roles = {r for per_param in axes.values() for r in per_param.values()}
        if 'chan' in roles:  # depthwise: one space in and out
            out = x if x is not None else t.opaque(out_shape, f'input of {n.name} has no channel space')
            t.add_layer(n, {'chan': out}, in_shape, out_shape)
            return [out]
        out = t.new_atom(_channels(out_shape))
        if x is None:
            x = t.opaque(in_shape, f'input of {n.name} has no channel space')
        if groups > 1:  # grouped: both spaces cut in equal blocks, one per conv group
            why = f'grouped convolution {t.path_of(n)} (num_group={groups})'
            t.constrain(x, groups, why)
            t.constrain(out, groups, why)
        t.add_layer(n, {'in': x, 'out': out}, in_shape, out_shape)
        return [out]
    return rule


def channel_layer(t, n):
    """BatchNorm / InstanceNorm / PReLU: per-channel parameters, identity on the layout."""
    x = n.in_space(0)
    in_shape = n.in_shape(0)
    axes = t.layer_axes(n, in_shape)
    outs = identity(t, n)
    if axes and x is not None:
        t.add_layer(n, {'chan': x}, in_shape, n.out_shapes[0])
    else:
        t.freeze(x, f'{n.op} {n.name} normalises over an axis other than the channels')
        t.add_layer(n, {}, in_shape, n.out_shapes[0])
    if n.op == 'BatchNorm':  # optional mean/var outputs are per-channel vectors, not feature maps
        outs = outs[:1] + [None] * (len(n.out_shapes) - 1)
    return outs


def leaky_relu(t, n):
    if n.attrs.get('act_type') == 'prelu':
        return channel_layer(t, n)
    return identity(t, n)


def binary(t, n):
    """Elementwise arithmetic with numpy broadcasting: inputs that carry the output's channels are coupled."""
    out_shape = n.out_shapes[0]
    if out_shape is None or len(out_shape) < 2 or _channels(out_shape) == 1:
        for i in range(len(n.data)):
            if _channels(n.in_shape(i)) > 1:
                t.freeze(n.in_space(i), f'{n.op} {n.name} reduces the channels to one')
        return [t.opaque(out_shape, f'{n.op} {n.name}')]
    carriers = []
    for i in range(len(n.data)):
        shape = n.in_shape(i)
        aligned = 1 - (len(out_shape) - len(shape))
        if aligned < 0 or shape[aligned] == 1:
            continue  # broadcast along the channels: does not carry them
        space = n.in_space(i)
        if aligned != 1 or space is None:
            for j in range(len(n.data)):
                t.freeze(n.in_space(j), f'{n.op} {n.name} combines the channels with a tensor we cannot cut')
            return [t.opaque(out_shape, f'{n.op} {n.name}')]
        carriers.append(space)
    if not carriers:
        return [t.opaque(out_shape, f'{n.op} {n.name}')]
    for other in carriers[1:]:
        t.union(carriers[0], other, f'{n.op} {n.name}')
    return [carriers[0]]


def concat(t, n):
    out_shape = n.out_shapes[0]
    dim = _axis(n.attrs.get('dim', 1), len(out_shape))
    spaces = [n.in_space(i) if n.in_space(i) is not None else t.opaque(n.in_shape(i), f'input of {n.name}')
              for i in range(len(n.data))]
    if dim != 1:
        for s in spaces[1:]:
            t.union(spaces[0], s, f'{n.op} {n.name}')
        return [spaces[0]]
    return [t.concat(spaces, f'{n.op} {n.name}')]


def split(t, n):
    in_shape = n.in_shape(0)
    axis = _axis(n.attrs.get('axis', 1), len(in_shape))
    x = n.in_space(0)
    if axis != 1:
        return [x] * len(n.out_shapes)
    parts = int(n.attrs.get('num_outputs', len(n.out_shapes)))
    squeeze = flag(n.attrs.get('squeeze_axis'), False)
    if x is None or squeeze or x.repeat != 1:
        t.freeze(x, f'{n.op} {n.name} splits the channels in a way we do not cut')
        return [t.opaque(s, f'{n.op} {n.name}') for s in n.out_shapes]
    # the op splits whatever width it gets into equal parts: each part must keep the same number of channels
    t.constrain(x, parts, f'{n.op} {n.name} (num_outputs={parts})')
    size = x.size // parts
    return [t.sub(x, i * size, size) for i in range(parts)]


def slice_axis(t, n):
    in_shape = n.in_shape(0)
    axis = _axis(n.attrs.get('axis'), len(in_shape))
    x = n.in_space(0)
    if axis != 1:
        return [x]
    begin = int(n.attrs.get('begin', 0))
    end = n.attrs.get('end')
    end = in_shape[1] if end in (None, 'None') else int(end)
    begin, end = begin % in_shape[1] if begin < 0 else begin, end % in_shape[1] if end < 0 else end
    if x is None or x.repeat != 1:
        t.freeze(x, f'{n.op} {n.name} slices channels we cannot follow')
        return [t.opaque(n.out_shapes[0], f'{n.op} {n.name}')]
    if (begin, end) != (0, in_shape[1]):  # begin and end stay as written: a cut channel would shift the slice
        t.freeze(x, f'{n.op} {n.name} takes channels [{begin}:{end}] at fixed offsets')
    return [t.sub(x, begin, end - begin)]


def reshape(t, n):
    """Reshape/Flatten: keeps the layout when axis 1 is unchanged; flattening gives a repeat factor."""
    in_shape, out_shape = n.in_shape(0), n.out_shapes[0]
    x = n.in_space(0)
    if x is None or len(in_shape) < 2 or len(out_shape) < 2:
        t.freeze(x, f'{n.op} {n.name} moves the channel axis')
        return [t.opaque(out_shape, f'{n.op} {n.name}')]
    rest_in = int(np.prod(in_shape[2:])) if len(in_shape) > 2 else 1
    rest_out = int(np.prod(out_shape[2:])) if len(out_shape) > 2 else 1
    if in_shape[1] == out_shape[1] and rest_in == rest_out:
        return [x]
    if len(out_shape) == 2 and out_shape[1] == in_shape[1] * rest_in:
        return [t.flatten(x, in_shape)]
    if len(in_shape) == 2 and x.repeat == rest_out and out_shape[1] * rest_out == in_shape[1]:
        return [t.unflatten(x)]
    t.freeze(x, f'{n.op} {n.name} regroups the channels ({tuple(in_shape)} -> {tuple(out_shape)})')
    return [t.opaque(out_shape, f'{n.op} {n.name}')]


def reduce_op(t, n):
    in_shape = n.in_shape(0)
    axes = ints(n.attrs.get('axis'))
    exclude = flag(n.attrs.get('exclude'), False)
    nd = len(in_shape)
    reduced = {a % nd for a in axes} if axes else set(range(nd))
    if exclude:
        reduced = set(range(nd)) - reduced
    keep = flag(n.attrs.get('keepdims'), False)
    if 1 in reduced or 0 in reduced and not keep:
        t.freeze(n.in_space(0), f'{n.op} {n.name} reduces over the channels')
        return [t.opaque(n.out_shapes[0], f'{n.op} {n.name}')]
    return identity(t, n)


def softmax(t, n):
    shape = n.in_shape(0)
    if _axis(n.attrs.get('axis', -1), len(shape)) == 1:
        t.freeze(n.in_space(0), f'{n.op} {n.name} normalises over the channels')
        return [t.opaque(n.out_shapes[0], f'{n.op} {n.name}')]
    return identity(t, n)


def transpose(t, n):
    """Keeps the layout when axes 0 and 1 stay; else the channels move (detector heads go NCHW -> NHWC): frozen."""
    axes = ints(n.attrs.get('axes'))
    if axes and len(axes) > 1 and axes[0] == 0 and axes[1] == 1:
        return identity(t, n)
    return _moved(t, n, f'{n.op} {n.name} moves the channel axis (axes={n.attrs.get("axes", "reversed")})')


def _moved(t, n, reason: str):
    """An operator we understand but whose output has no channel axis 1 we follow: inputs frozen, output opaque."""
    for i in range(len(n.data)):
        t.freeze(n.in_space(i), reason)
    return [t.opaque(s, reason) for s in n.out_shapes]


def slice_like(t, n):
    """slice_like(data, like, axes): the output's channels are data's unless axis 1 is sliced; `like` gives only a
    shape (detector anchors are cut to a feature map's height and width), so its channels stay free."""
    shape = n.in_shape(0)
    axes = {_axis(a, len(shape)) for a in ints(n.attrs.get('axes'))} or set(range(len(shape)))
    if 1 in axes and _channels(n.in_shape(1)) != _channels(shape):
        return _moved(t, n, f'{n.op} {n.name} slices the channels to another tensor\'s width')
    if 1 in axes:  # equal widths: data and like are cut together or not at all
        t.union(n.in_space(0), n.in_space(1), f'{n.op} {n.name}')
    return [n.in_space(0)]


def repeat(t, n):
    """repeat along a spatial axis (YOLOv3's nearest upsampling) keeps the channels; along 1 or flat it does not."""
    shape = n.in_shape(0)
    axis = n.attrs.get('axis')
    if axis in (None, 'None') or _axis(axis, len(shape)) in (0, 1):
        return _moved(t, n, f'{n.op} {n.name} repeats along axis {axis} (the channels or the flattened tensor)')
    return identity(t, n)


def tile(t, n):
    """tile keeps the channel layout when its repetition along axis 1 is one (reps align to the trailing axes)."""
    shape = n.in_shape(0)
    reps = ints(n.attrs.get('reps'))
    ndim = max(len(shape), len(reps))
    reps = (1,) * (ndim - len(reps)) + tuple(reps)
    if ndim == len(shape) and len(shape) >= 2 and reps[1] == 1:
        return identity(t, n)
    return _moved(t, n, f'{n.op} {n.name} repeats or adds the channel axis (reps={n.attrs.get("reps")})')


def source(t, n):
    """Operators that make a tensor from attributes only (_arange, _zeros): a constant whose channels never cut."""
    return [t.opaque(s, f'{n.op} {n.name} (a constant tensor)') for s in n.out_shapes]


def expand_squeeze(t, n):
    in_shape, out_shape = n.in_shape(0), n.out_shapes[0]
    if len(in_shape) >= 2 and len(out_shape) >= 2 and in_shape[:2] == out_shape[:2]:
        return identity(t, n)
    t.freeze(n.in_space(0), f'{n.op} {n.name} moves the channel axis')
    return [t.opaque(out_shape, f'{n.op} {n.name}')]


def pad(t, n):
    widths = ints(n.attrs.get('pad_width'))
    if len(widths) >= 4 and widths[2] == widths[3] == 0:
        return identity(t, n)
    return unknown(t, n)


def l2norm(t, n):
    if n.attrs.get('mode', 'instance') == 'spatial':
        return identity(t, n)
    t.freeze(n.in_space(0), f'{n.op} {n.name} normalises across the channels')
    return [t.opaque(n.out_shapes[0], f'{n.op} {n.name}')]


def upsampling(t, n):
    if n.attrs.get('sample_type', 'nearest') == 'nearest' and len(n.data) == 1:
        return identity(t, n)
    return unknown(t, n)  # bilinear upsampling carries a per-channel weight we do not cut


def output_freeze(reason: str):
    def rule(t, n):
        for i in range(len(n.data)):
            t.freeze(n.in_space(i), reason.format(name=n.name))
        return [t.opaque(s, reason.format(name=n.name)) for s in n.out_shapes]
    return rule


IDENTITY_OPS = (
    'Activation', 'relu', 'sigmoid', 'tanh', 'softrelu', 'softsign', 'hard_sigmoid', 'erf', 'gelu', 'Dropout',
    'BlockGrad', 'stop_gradient', 'Cast', 'amp_cast', '_copy', 'identity', 'clip', 'abs', 'exp', 'log', 'sqrt',
    'square', 'negative', 'reciprocal', 'sign', 'round', 'floor', 'ceil', 'Pooling',
    '_contrib_BilinearResize2D', '_contrib_AdaptiveAvgPooling2D', 'Crop', 'zeros_like', 'ones_like',
    '_plus_scalar', '_minus_scalar', '_rminus_scalar', '_mul_scalar', '_div_scalar', '_rdiv_scalar',
    '_power_scalar', '_rpower_scalar', '_maximum_scalar', '_minimum_scalar', '_mod_scalar', '_equal_scalar',
    '_greater_scalar', '_lesser_scalar',
)
BINARY_OPS = (
    'elemwise_add', 'elemwise_sub', 'elemwise_mul', 'elemwise_div', '_plus', '_Plus', '_add', '_minus', '_Minus',
    '_sub', '_mul', '_Mul', '_div', '_Div', '_maximum', '_minimum', '_power', 'broadcast_add', 'broadcast_plus',
    'broadcast_sub', 'broadcast_minus', 'broadcast_mul', 'broadcast_div', 'broadcast_maximum',
    'broadcast_minimum', 'broadcast_power', 'add_n', 'ElementWiseSum', '_grad_add', 'where',
)
SOURCE_OPS = ('_arange', '_zeros', '_ones', '_full', '_eye', '_linspace', '_zeros_without_dtype')
# Anchor generation, box coding, matching and suppression (SSD, YOLO, Faster R-CNN): their tensors are (batch,
# anchors, box fields); channel layouts end at the predictor convs that feed them.
DETECTION_OPS = (
    '_contrib_MultiBoxPrior', '_contrib_MultiBoxDetection', '_contrib_MultiBoxTarget', '_contrib_box_nms',
    '_contrib_box_non_maximum_suppression', '_contrib_box_decode', '_contrib_box_encode', '_contrib_box_iou',
    '_contrib_bipartite_matching', '_contrib_Proposal', '_contrib_MultiProposal',
)

RULES: Dict[str, Rule] = {op: identity for op in IDENTITY_OPS}
RULES.update({op: binary for op in BINARY_OPS})
RULES.update({
    'Convolution': output_layer('conv'),
    'Deconvolution': output_layer('deconv'),
    'FullyConnected': output_layer('dense'),
    'BatchNorm': channel_layer,
    'InstanceNorm': channel_layer,
    'LeakyReLU': leaky_relu,
    'Concat': concat,
    'concat': concat,
    'SliceChannel': split,
    'split': split,
    'slice_axis': slice_axis,
    'Reshape': reshape,
    'reshape': reshape,
    'Flatten': reshape,
    'flatten': reshape,
    'mean': reduce_op,
    'sum': reduce_op,
    'max': reduce_op,
    'min': reduce_op,
    'softmax': softmax,
    'log_softmax': softmax,
    'transpose': transpose,
    'expand_dims': expand_squeeze,
    'squeeze': expand_squeeze,
    'Pad': pad,
    'pad': pad,
    'L2Normalization': l2norm,
    'UpSampling': upsampling,
    'SoftmaxOutput': output_freeze('loss layer {name}'),
    'slice_like': slice_like,
    'repeat': repeat,
    'tile': tile,
})
RULES.update({op: source for op in SOURCE_OPS})
RULES.update({op: output_freeze('detection op {name} (boxes and anchors on the last axis)') for op in DETECTION_OPS})

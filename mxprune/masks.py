"""Mask parameters on Conv/Dense blocks: attach, set, fold into the weights, remove.

A mask is a Parameter registered on the existing block (`<prefix>weight_mask`, grad_req 'null', ones), and the
block's class is swapped for a cached subclass whose hybrid_forward multiplies the weight by the mask before calling
the original. Parameter names stay as they were, so dense checkpoints still load (allow_missing=True for the masks),
masks save and load with the model's .params, and the hybridized graph pays one elementwise multiply per layer
(bench/mask_overhead.py measures what that costs a training step). Masked weights get exactly zero gradient.
"""
import contextlib
import threading
from typing import Dict, Iterator, Type

import mxnet as mx
import numpy as np

from .layers import gluon_compat as gc

MASK = 'weight_mask'
_STATE = threading.local()
_CLASSES: Dict[type, type] = {}


@contextlib.contextmanager
def bypassed() -> Iterator[None]:
    """Within this block masked layers compute with their raw weights (used to trace the graph)."""
    old = getattr(_STATE, 'bypass', False)
    _STATE.bypass = True
    try:
        yield
    finally:
        _STATE.bypass = old


def _masked_class(cls: Type[mx.gluon.HybridBlock]) -> type:
    if cls in _CLASSES:
        return _CLASSES[cls]
    if getattr(cls, '_mxprune_base', None) is not None:
        return cls

    def hybrid_forward(self, F, x, *args, **kwargs):
        mask = kwargs.pop(MASK, None)
        if mask is not None and not getattr(_STATE, 'bypass', False):
            kwargs['weight'] = F.elemwise_mul(kwargs['weight'], mask)
        return cls.hybrid_forward(self, F, x, *args, **kwargs)

    sub = type('Masked' + cls.__name__, (cls,), {'hybrid_forward': hybrid_forward, '_mxprune_base': cls,
                                                   '__module__': __name__})
    _CLASSES[cls] = sub
    return sub


def is_masked(block: mx.gluon.Block) -> bool:
    return MASK in gc.own_params(block)


def attach(block: mx.gluon.HybridBlock) -> mx.gluon.Parameter:
    """Adds a ones mask shaped like `block.weight` (already initialised) and swaps in the masked class."""
    if is_masked(block):
        return gc.own_params(block)[MASK]
    weight = gc.own_params(block)['weight']
    if not gc.has_data(weight):
        raise ValueError(f'{block.name}: initialise the net and run one forward pass before attaching masks')
    param = block.params.get(MASK, shape=weight.shape, init=mx.init.One(), grad_req='null',
                             differentiable=False, dtype=weight.dtype)
    param.initialize(ctx=weight.list_ctx())
    setattr(block, MASK, param)
    block.__class__ = _masked_class(type(block))
    return param


def mask_of(block: mx.gluon.Block) -> np.ndarray:
    param = gc.own_params(block)[MASK]
    return param.data(param.list_ctx()[0]).asnumpy()


def set_mask(block: mx.gluon.Block, mask: np.ndarray, zero_weights: bool = True) -> None:
    """Sets the mask; with zero_weights the masked raw weights are zeroed too (so they are zero on export)."""
    param = gc.own_params(block)[MASK]
    arr = mx.nd.array(mask.astype(np.float32), dtype=param.dtype)
    param.set_data(arr)
    if zero_weights:
        weight = gc.own_params(block)['weight']
        for ctx in weight.list_ctx():
            w = weight.data(ctx)
            w *= arr.as_in_context(ctx)


def fold(block: mx.gluon.Block) -> None:
    """Bakes the mask into the weight (weight *= mask); the mask stays attached."""
    weight = gc.own_params(block)['weight']
    mask = gc.own_params(block)[MASK]
    for ctx in weight.list_ctx():
        w = weight.data(ctx)
        w *= mask.data(ctx)


def remove(block: mx.gluon.Block, fold_first: bool = True) -> None:
    """Folds and removes the mask; the block computes as a plain layer again."""
    if not is_masked(block):
        return
    if fold_first:
        fold(block)
    gc.unregister_param(block, MASK)
    object.__delattr__(block, MASK)
    base = getattr(type(block), '_mxprune_base', None)
    if base is not None:
        block.__class__ = base


def clear_cached(net: mx.gluon.Block) -> None:
    """Drops every cached graph so the next forward rebuilds it (needed after attaching, removing or cutting)."""
    gc.clear_cached_op(net)
    for child in gc.children(net).values():
        clear_cached(child)


def masked_blocks(net: mx.gluon.Block) -> Iterator[mx.gluon.Block]:
    if is_masked(net):
        yield net
    for child in gc.children(net).values():
        yield from masked_blocks(child)

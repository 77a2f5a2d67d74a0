"""Named access to the Gluon and MXNet 1.x internals mxprune relies on; every private attribute is read here.

Gluon 1.x offers no public way to ask whether a Parameter holds data yet, to list a block's own parameters by
attribute name, or to reach a Trainer's optimizer states, and mxprune needs all of them (masks, cutting, exact
resumption). Keeping the accesses behind these functions means an MXNet upgrade is checked in one file, and a test
(tests/test_package.py) refuses private attributes anywhere else.
"""
from typing import Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np


# --- Parameters

def has_data(param: mx.gluon.Parameter) -> bool:
    """True once the Parameter holds arrays (initialised and, if deferred, shaped by a forward pass)."""
    return param._data is not None


def is_deferred(param: mx.gluon.Parameter) -> bool:
    """True while initialisation waits for the first forward pass to know the shape."""
    return bool(param._deferred_init)


def deferred_ctx(param: mx.gluon.Parameter) -> mx.Context:
    """The first context a deferred Parameter will be created on."""
    return param._deferred_init[1][0]


# --- Blocks

def own_params(block: mx.gluon.Block) -> Dict[str, mx.gluon.Parameter]:
    """The block's own registered Parameters by attribute name ('weight', 'weight_mask', 'gamma', ...), the live
    dict (children's parameters are not in it)."""
    return block._reg_params


def unregister_param(block: mx.gluon.Block, attr: str) -> mx.gluon.Parameter:
    """Removes a Parameter from the block's registry and its ParameterDict; returns it."""
    param = block._reg_params.pop(attr)
    block.params._params.pop(param.name, None)
    return param


def children(block: mx.gluon.Block) -> Dict[str, mx.gluon.Block]:
    """The block's registered children by structural name, the live dict."""
    return block._children


def clear_cached_op(block: mx.gluon.Block) -> None:
    """Drops the block's own cached graph (a HybridBlock's CachedOp) so the next forward rebuilds it."""
    if hasattr(block, '_clear_cached_op'):
        block._clear_cached_op()


# --- Trainers

def trainer_params(trainer: mx.gluon.Trainer) -> List[mx.gluon.Parameter]:
    """The Trainer's parameters in its index order (the order of the optimizer state indices)."""
    return trainer._params


def trainer_param_index(trainer: mx.gluon.Trainer, name: str) -> Optional[int]:
    """The optimizer-state index of a parameter, or None if the Trainer does not update it."""
    return getattr(trainer, '_param2idx', {}).get(name)


def trainer_updaters(trainer: mx.gluon.Trainer) -> list:
    """One Updater per device (each holds `states` and `states_synced` by parameter index); empty before the first
    step when no KVStore was initialised."""
    return getattr(trainer, '_updaters', None) or []


def init_trainer_kvstore(trainer: mx.gluon.Trainer, with_params: bool = False) -> None:
    """Sets up the Trainer's KVStore now rather than at its first step (once); `with_params` also pushes the
    initial parameters (a data-parallel start broadcasts them)."""
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if with_params:
        trainer._init_params()


# --- Datasets and the C library

def dataset_arrays(ds: mx.gluon.data.Dataset) -> Tuple[mx.nd.NDArray, np.ndarray]:
    """(images, labels) held in memory by a Gluon vision dataset (CIFAR10/100, MNIST)."""
    return ds._data, ds._label


def free_kvstore(kv: mx.kvstore.KVStore) -> None:
    """Frees a KVStore's handle now (MXNet has no public close)."""
    if kv.handle is not None:
        mx.base.check_call(mx.base._LIB.MXKVStoreFree(kv.handle))
        kv.handle = None  # KVStore.__del__ frees NULL then, which is a no-op


def internal_ops(F):
    """The `_internal` operator namespace of mx.nd or mx.sym (operators whose JSON names start with '_')."""
    return F._internal

"""MACs (multiply-accumulates, the number papers call FLOPs) and parameter counts from a traced graph.

Counted as in Torch-Pruning and the papers it reproduces: convolutions (C_out x C_in/g x k x k per output position),
deconvolutions and fully connected layers; BatchNorm, activations, pooling and additions are left out of MACs.
Parameters: every trainable parameter (weights, biases, BN gamma/beta), not running statistics or masks.

Three views: dense (as traced), effective (masked: nonzero weights only) and, for structured masks, the shape the
net would have after shrinking, which must equal a re-trace of the shrunk net (tested).
"""
import dataclasses
from typing import Dict, Optional

import numpy as np

from . import masks as masks_mod
from .errors import MxPruneError
from .graph import DependencyGraph, Group


@dataclasses.dataclass
class Count:
    macs: int
    params: int
    per_layer: Dict[str, int]

    def ratio(self, dense: 'Count') -> Dict[str, float]:
        return {'macs': self.macs / max(dense.macs, 1), 'params': self.params / max(dense.params, 1)}


def _is_counted(name: str) -> bool:
    return not name.endswith(('running_mean', 'running_var', masks_mod.MASK))


def dense(graph: DependencyGraph) -> Count:
    """MACs and parameters of the net as traced."""
    per = {layer.path: int(np.prod(layer.param_shapes['weight'])) * layer.spatial()
           for layer in graph.weighted_layers()}
    return Count(sum(per.values()), _params(graph), per)


def _params(graph: DependencyGraph, skip: frozenset = frozenset()) -> int:
    every = graph.net.collect_params()  # once: it walks every block (seconds per call-site loop on a detector)
    return sum(int(np.prod(shape)) for name, shape in graph.param_shapes.items()
               if _is_counted(name) and name not in skip and every[name].grad_req != 'null')


def effective(graph: DependencyGraph) -> Count:
    """MACs and parameters counting only nonzero (mask * weight) entries of masked layers."""
    per, saved_params = {}, 0
    for layer in graph.weighted_layers():
        size = int(np.prod(layer.param_shapes['weight']))
        if masks_mod.is_masked(layer.block):
            nnz = int(np.count_nonzero(masks_mod.mask_of(layer.block)))
            saved_params += size - nnz
        else:
            nnz = size
        per[layer.path] = nnz * layer.spatial()
    return Count(sum(per.values()), dense(graph).params - saved_params, per)


def structured(graph: DependencyGraph, keep: Dict[int, np.ndarray]) -> Count:
    """MACs and parameters of the net shrunk to `keep` (group index -> kept channel indices or a bool mask).

    Every parameter along a cut axis loses its cut slices (weights, biases, BN vectors), as shrinking does.
    """
    kept = {gi: _as_bool(k, next(g for g in graph.groups if g.index == gi).size) for gi, k in keep.items()}
    axis_keep = _axis_masks(graph, kept)
    per, params = {}, 0
    counted = set()
    for layer in graph.layers:
        for attr, p in layer.params.items():
            name = p.name
            sizes = list(layer.param_shapes[attr])
            for axis in range(len(sizes)):
                m = axis_keep.get((id(layer), attr, axis))
                if m is not None:  # a grouped conv's input mask covers the axis `groups` times (see _axis_masks)
                    sizes[axis] = int(m.sum()) * sizes[axis] // len(m)
            n = int(np.prod(sizes))
            if attr == 'weight' and layer.weighted:
                per[layer.path] = n * layer.spatial()
            if _is_counted(name) and p.grad_req != 'null':
                params += n
                counted.add(name)
    return Count(sum(per.values()), params + _params(graph, frozenset(counted)), per)


def _as_bool(k: np.ndarray, size: int) -> np.ndarray:
    k = np.asarray(k)
    if k.dtype == bool:
        return k
    m = np.zeros(size, bool)
    m[k.astype(int)] = True
    return m


def _axis_masks(graph: DependencyGraph, kept: Dict[int, np.ndarray]) -> Dict[tuple, np.ndarray]:
    """(layer id, attr, axis) -> bool mask over the axis, for axes touched by a group in `kept`.

    A grouped convolution's input axis is the exception: its mask is over the layer's C_in input channels (its
    member's positions, see graph.Member), `groups` times the axis; the kept counts per block are equal.
    """
    out: Dict[tuple, np.ndarray] = {}
    for g in graph.groups:
        if g.index not in kept:
            continue
        k = kept[g.index]
        for m in g.members:
            key = (id(m.layer), m.attr, m.axis)
            if key not in out:
                out[key] = np.ones(m.layer.param_shapes[m.attr][m.axis] * m.groups, bool)
            out[key][m.positions[~k[m.channels]].ravel()] = False
    return out


def keep_top(score: np.ndarray, current: np.ndarray, n_keep: int, blocks: int = 1) -> np.ndarray:
    """Keeps the n_keep best channels among those still kept (pruned channels stay pruned).

    blocks > 1 (Group.blocks): the channels are `blocks` equal contiguous runs and each run keeps n_keep // blocks,
    its best; n_keep must be a multiple of blocks.
    """
    if blocks < 1 or n_keep % blocks or len(score) % blocks:
        raise MxPruneError(f'keep_top: cannot keep {n_keep} of {len(score)} channels in {blocks} equal blocks; '
                           f'n_keep must be a multiple of blocks and blocks must divide the channels')
    per = n_keep // blocks
    s = np.where(current, score, -np.inf).reshape(blocks, -1)
    keep = np.zeros(s.shape, bool)
    np.put_along_axis(keep, np.argsort(-s, axis=1, kind='stable')[:, :per], True, axis=1)
    return keep.ravel() & current


def group_keep_from_counts(group: Group, n_keep: int, order: Optional[np.ndarray] = None) -> np.ndarray:
    """A bool keep-mask for a group keeping `n_keep` channels, the highest in `order` (default: the first), the
    same number in each of the group's blocks (n_keep must be a multiple of group.blocks)."""
    score = -np.arange(group.size, dtype=float) if order is None else np.asarray(order, float)
    return keep_top(score, np.ones(group.size, bool), n_keep, group.blocks)

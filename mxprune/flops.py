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
                if m is not None:
                    sizes[axis] = int(m.sum())
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
    """(layer id, attr, axis) -> bool mask over the axis, for axes touched by a group in `kept`."""
    out: Dict[tuple, np.ndarray] = {}
    for g in graph.groups:
        if g.index not in kept:
            continue
        k = kept[g.index]
        for m in g.members:
            key = (id(m.layer), m.attr, m.axis)
            if key not in out:
                out[key] = np.ones(m.layer.param_shapes[m.attr][m.axis], bool)
            out[key][m.positions[~k[m.channels]].ravel()] = False
    return out


def keep_top(score: np.ndarray, current: np.ndarray, n_keep: int) -> np.ndarray:
    """Keeps the n_keep best channels among those still kept (pruned channels stay pruned)."""
    s = np.where(current, score, -np.inf)
    keep = np.zeros(len(score), bool)
    keep[np.argsort(-s, kind='stable')[:n_keep]] = True
    return keep & current


def group_keep_from_counts(group: Group, n_keep: int, order: Optional[np.ndarray] = None) -> np.ndarray:
    """A bool keep-mask for a group keeping `n_keep` channels, the highest in `order` (default: the first)."""
    m = np.zeros(group.size, bool)
    idx = np.arange(n_keep) if order is None else np.argsort(-order, kind='stable')[:n_keep]
    m[idx] = True
    return m

"""MACs (multiply-accumulates, the number papers call FLOPs) and parameter counts from a traced graph.

Counted as in Torch-Pruning and the papers it reproduces: convolutions (C_out x C_in/g x k x k per output position),
deconvolutions and fully connected layers; BatchNorm, activations, pooling and additions are left out of MACs.
Parameters: every trainable parameter (weights, biases, BN gamma/beta), not running statistics or masks.

Three views: dense (as traced), effective (masked: nonzero weights only) and, for structured masks, the shape the
net would have after shrinking, which must equal a re-trace of the shrunk net (tested).

`Shapes` and the `LayerCost` models (`MacsCost`, `ParamsCost`) give the same shrunk counts fast, and for every
candidate width of one group at once: allocation reads them thousands of times per pruning step.
"""
import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from . import masks as masks_mod
from .errors import MxPruneError
from .graph import DependencyGraph, Group, Layer


@dataclasses.dataclass
class Count:
    macs: int
    params: int
    per_layer: Dict[str, int]



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
    axis_keep = axis_masks(graph, kept)
    per, params = {}, 0
    counted = set()
    for layer in graph.layers:
        for attr, p in layer.params.items():
            name = p.name
            sizes = list(layer.param_shapes[attr])
            for axis in range(len(sizes)):
                m = axis_keep.get((id(layer), attr, axis))
                if m is not None:  # a grouped conv's input mask covers the axis `groups` times (see axis_masks)
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


def axis_masks(graph: DependencyGraph, kept: Dict[int, np.ndarray]) -> Dict[tuple, np.ndarray]:
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


# ----------------------------------------------------------------------------------------------------------------
# Shrunk shapes and layer-sum cost models, vectorised over the candidate masks of one group


class Shapes:
    """Every layer's parameter shapes when groups keep given channels (as shrinking would leave them).

    `shapes(i, keep, gi, stack)` gives, per parameter, its sizes along each axis as arrays over the rows of `stack`
    (candidate keep-masks of group `gi`; the other groups keep `keep`), so a cost model evaluates every width of a
    group in one pass over the layers that group touches (`touching[gi]`).
    """

    def __init__(self, graph: DependencyGraph):
        self.graph = graph
        self.layers = list(graph.layers)
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        self.cuts: Dict[int, List[tuple]] = {}
        self.touching: Dict[int, List[int]] = {}
        for g in graph.groups:
            for m in g.members:
                i = index[id(m.layer)]
                # a grouped conv's input member counts C_in channels on an axis of C_in / groups
                self.cuts.setdefault(i, []).append((m.attr, m.axis, g.index, m.channels, m.positions.shape[1],
                                                    m.groups))
                if i not in self.touching.setdefault(g.index, []):
                    self.touching[g.index].append(i)

    def shapes(self, i: int, keep: Dict[int, np.ndarray], gi: Optional[int] = None,
               stack: Optional[np.ndarray] = None) -> Dict[str, List[np.ndarray]]:
        layer = self.layers[i]
        k = 1 if stack is None else len(stack)
        out = {attr: [np.full(k, n, np.int64) for n in shape]
               for attr, shape in layer.param_shapes.items() if shape is not None}
        for attr, axis, g, chans, repeat, groups in self.cuts.get(i, ()):
            if attr not in out:
                continue
            if g == gi and stack is not None:
                out[attr][axis] = out[attr][axis] - (~stack[:, chans]).sum(axis=1) * repeat // groups
            elif keep.get(g) is not None:
                out[attr][axis] = out[attr][axis] - int((~keep[g][chans]).sum()) * repeat // groups
        return out


class LayerCost:
    """A cost that is a sum over layers of a function of their shrunk shapes, plus a constant.

    The interface every allocation cost model has: `total(keep)` for one choice of keep-masks (groups missing from
    `keep` are dense) and `curve(gi, stack, keep)` for each row of `stack` as group gi's mask, the others held.
    `name` and `dense` (the cost of the unpruned net) label and scale it.
    """
    name = 'cost'

    def __init__(self, graph: DependencyGraph, shapes: Optional[Shapes] = None):
        self.graph = graph
        self.index = shapes or Shapes(graph)
        self.counted = [i for i, layer in enumerate(self.index.layers) if self.counts(layer)]
        self._counted = set(self.counted)
        self.constant = 0.0

    def counts(self, layer: Layer) -> bool:
        raise NotImplementedError

    def layer_cost(self, i: int, shapes: Dict[str, List[np.ndarray]]) -> np.ndarray:
        raise NotImplementedError

    @property
    def dense(self) -> float:
        return self.total({})

    def total(self, keep: Dict[int, np.ndarray]) -> float:
        return self.constant + float(sum(self.layer_cost(i, self.index.shapes(i, keep))[0] for i in self.counted))

    def curve(self, gi: int, stack: np.ndarray, keep: Dict[int, np.ndarray], total: Optional[float] = None) \
            -> np.ndarray:
        """The net's cost with each row of `stack` (bool, candidates x group size) as group gi's keep-mask."""
        total = self.total(keep) if total is None else total
        out = np.full(len(stack), total, np.float64)
        for i in self.index.touching.get(gi, ()):
            if i in self._counted:
                out += self.layer_cost(i, self.index.shapes(i, keep, gi, stack)) - \
                    self.layer_cost(i, self.index.shapes(i, keep))[0]
        return out


class MacsCost(LayerCost):
    """MACs of the shrunk net (as `structured` counts them); `layers`: only these layer paths (e.g. a backbone)."""
    name = 'macs'
    monotone = True  # a narrower group never costs more

    def __init__(self, graph: DependencyGraph, shapes: Optional[Shapes] = None, layers: Optional[Iterable[str]] = None):
        self.only = None if layers is None else frozenset(layers)
        super().__init__(graph, shapes)

    def counts(self, layer):
        return layer.weighted and (self.only is None or layer.path in self.only)

    def layer_cost(self, i, shapes):
        return np.prod(np.stack(shapes['weight']), axis=0).astype(np.float64) * self.index.layers[i].spatial()


class ParamsCost(LayerCost):
    """Trainable parameters of the shrunk net (as `structured` counts them)."""
    name = 'params'
    monotone = True

    def __init__(self, graph: DependencyGraph, shapes: Optional[Shapes] = None):
        super().__init__(graph, shapes)
        counted = {p.name for i in self.counted for attr, p in self.index.layers[i].params.items()
                   if self._param_counted(p)}
        self.constant = float(_params(graph, frozenset(counted)))

    @staticmethod
    def _param_counted(p) -> bool:
        return _is_counted(p.name) and p.grad_req != 'null'

    def counts(self, layer):
        return any(self._param_counted(p) for p in layer.params.values())

    def layer_cost(self, i, shapes):
        layer = self.index.layers[i]
        total = 0.0
        for attr, p in layer.params.items():
            if self._param_counted(p) and attr in shapes:
                total = total + np.prod(np.stack(shapes[attr]), axis=0).astype(np.float64)
        return np.atleast_1d(total)


def top_counts(scores: np.ndarray, current: np.ndarray, widths: Sequence[int], blocks: int = 1) -> np.ndarray:
    """Keep-masks (one row per width) of the best-scored live channels, as `keep_top` would choose them (with
    `blocks`, width // blocks in each block)."""
    widths = np.asarray(widths)
    if len(scores) % blocks or (widths % blocks).any():
        raise MxPruneError(f'top_counts: widths {widths.tolist()} of {len(scores)} channels are not in {blocks} '
                           f'equal blocks')
    s = np.where(current, scores, -np.inf).reshape(blocks, -1)
    order = np.argsort(-s, axis=1, kind='stable')
    rank = np.empty(s.shape, np.int64)
    np.put_along_axis(rank, order, np.arange(s.shape[1])[None, :].repeat(blocks, axis=0), axis=1)
    return (rank.ravel()[None, :] < (widths // blocks)[:, None]) & current[None, :]

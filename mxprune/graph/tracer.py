"""The tracer: walks the Symbol JSON in topological order, gives every tensor a channel space (operator rules say
how spaces flow), and unites atoms (union-find) into coupled groups; frozen atoms and block constraints ride along."""
import math
from typing import Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np

from ..layers import HANDLERS, gluon_compat


from .groups import Layer, Seg, Space


class Node:
    """A view of one JSON graph node for the rules."""

    def __init__(self, tracer: 'Tracer', nid: int, raw: dict, data: List[Tuple[int, int]],
                 params: List[str], out_shapes: List[Optional[tuple]]):
        self.t, self.id, self.op, self.name = tracer, nid, raw['op'], raw['name']
        self.attrs = raw.get('attrs', {})
        self.data, self.params, self.out_shapes = data, params, out_shapes

    def in_space(self, i: int) -> Optional[Space]:
        return self.t.spaces.get(self.data[i])

    def in_shape(self, i: int) -> tuple:
        return self.t.shapes[self.data[i]]


class Tracer:
    def __init__(self, owners: Dict[str, Tuple[mx.gluon.Block, str, str]], params: Dict[str, mx.gluon.Parameter]):
        self.owners = owners
        self.owners_param = params
        self.parent: List[int] = []
        self.atom_size: List[int] = []
        self.frozen: Dict[int, str] = {}
        self.blocks: Dict[int, int] = {}  # root atom -> equal runs its keep-masks must respect (Group.blocks)
        self.spaces: Dict[Tuple[int, int], Optional[Space]] = {}
        self.shapes: Dict[Tuple[int, int], Optional[tuple]] = {}
        self.layers: List[Layer] = []
        self.param_shapes: Dict[str, tuple] = {}
        self.by_block: Dict[int, Layer] = {}
        self.unsupported: List[Tuple[str, str]] = []

    # --- atoms and union-find
    def new_atom(self, size: int, frozen: Optional[str] = None) -> Space:
        a = len(self.parent)
        self.parent.append(a)
        self.atom_size.append(size)
        if frozen:
            self.frozen[a] = frozen
        return Space((Seg(a, 0, size),))

    def opaque(self, shape, reason: str) -> Optional[Space]:
        if shape is None or len(shape) < 2 or shape[1] < 1:
            return None
        return self.new_atom(int(shape[1]), reason)

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def _union_atoms(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if rb in self.frozen and ra not in self.frozen:
            self.frozen[ra] = self.frozen[rb]
        if rb in self.blocks:
            self._add_blocks(ra, self.blocks.pop(rb), 'a coupled layer')

    def _add_blocks(self, root: int, runs: int, why: str) -> None:
        """Both partitions hold when each run of the finer one (lcm of the two counts) keeps the same number."""
        old = self.blocks.get(root, 1)
        new = old * runs // math.gcd(old, runs)
        size = self.atom_size[root]
        if size % new:
            self.frozen.setdefault(root, f'{why} needs {runs} equal blocks where coupled layers need {old}: no '
                                         f'partition of the {size} channels into equal blocks fits both')
            return
        self.blocks[root] = new

    def constrain(self, space: Optional[Space], runs: int, why: str) -> None:
        """The channels of `space` split into `runs` equal contiguous runs that must keep equal counts (a grouped
        convolution's groups). Expressible as the group's `blocks` only when the space is one whole atom; a space
        made of several layers' channels (concatenation) or of part of one is frozen."""
        if space is None or runs <= 1:
            return
        if space.repeat != 1 or len(space.segs) != 1 or not self._full(space.segs[0]):
            self.freeze(space, f'{why} groups channels that come from several layers or from part of one (equal '
                               f'counts per group cannot be kept)')
            return
        self._add_blocks(self.find(space.segs[0].atom), runs, why)

    def freeze(self, space: Optional[Space], reason: str) -> None:
        if space is None:
            return
        for s in space.segs:
            r = self.find(s.atom)
            self.frozen.setdefault(r, reason)

    def _full(self, s: Seg) -> bool:
        return s.start == 0 and s.length == self.atom_size[s.atom]

    def union(self, a: Optional[Space], b: Optional[Space], why: str) -> None:
        if a is None or b is None or a.repeat != b.repeat or a.channels != b.channels:
            self.freeze(a, f'{why} couples channels of different layouts')
            self.freeze(b, f'{why} couples channels of different layouts')
            return
        pa, pb = _pieces(a), _pieces(b)
        cuts = sorted(set(pa) | set(pb))
        for lo, hi in zip(cuts, cuts[1:]):
            sa, sb = _at(a, lo, hi), _at(b, lo, hi)
            if self._full(sa) and self._full(sb):
                self._union_atoms(sa.atom, sb.atom)
            elif not (self.find(sa.atom) == self.find(sb.atom) and sa.start == sb.start):
                self.freeze(Space((sa,)), f'{why} couples parts of channel runs')
                self.freeze(Space((sb,)), f'{why} couples parts of channel runs')

    def concat(self, spaces: List[Space], why: str) -> Space:
        if any(s.repeat != 1 for s in spaces):
            for s in spaces:
                self.freeze(s, f'{why} concatenates flattened features')
        return Space(tuple(seg for s in spaces for seg in s.segs))

    def sub(self, space: Space, start: int, length: int) -> Space:
        out, pos = [], 0
        for s in space.segs:
            lo, hi = max(start, pos), min(start + length, pos + s.length)
            if lo < hi:
                out.append(Seg(s.atom, s.start + lo - pos, hi - lo))
            pos += s.length
        return Space(tuple(out))

    def flatten(self, space: Optional[Space], in_shape) -> Optional[Space]:
        if space is None:
            return None
        rest = int(np.prod(in_shape[2:])) if len(in_shape) > 2 else 1
        return Space(space.segs, space.repeat * rest)

    def unflatten(self, space: Space) -> Space:
        return Space(space.segs, 1)

    # --- layers
    def path_of(self, n: Node) -> str:
        """The structural path of the block owning a node's parameters (the node's name if none does)."""
        owner = self._owner(n)
        return owner[1] if owner else n.name

    def _owner(self, n: Node):
        owners = [self.owners.get(p) for p in n.params]
        if not owners or owners[0] is None or any(o is None or o[0] is not owners[0][0] for o in owners):
            return None
        return owners[0][0], owners[0][2]

    def layer_axes(self, n: Node, in_shape) -> Dict[str, Dict[int, str]]:
        owner = self._owner(n)
        if owner is None or isinstance(owner[0], mx.gluon.SymbolBlock):
            return {}
        handler = HANDLERS[n.op]
        attrs_of = {self.owners[p][1] for p in n.params}
        return {a: ax for a, ax in handler.axes(n.attrs, in_shape).items() if a in attrs_of}

    def add_layer(self, n: Node, spaces: Dict[str, Space], in_shape, out_shape) -> None:
        owner = self._owner(n)
        if owner is None:
            for s in spaces.values():
                self.freeze(s, f'{n.op} {n.name} uses parameters that belong to no single Gluon block')
            return
        block, path = owner
        axes = self.layer_axes(n, in_shape) if spaces else {}
        params = {self.owners[p][1]: self.owners_param[p] for p in n.params}
        if id(block) in self.by_block:  # the block runs twice (shared weights): its spaces are coupled
            prev = self.by_block[id(block)]
            for role, s in spaces.items():
                if role in prev.spaces:
                    self.union(prev.spaces[role], s, f'shared block {path}')
            return
        layer = Layer(path, block, n.op, n.name, HANDLERS[n.op], params, axes, dict(spaces), tuple(in_shape),
                      tuple(out_shape), dict(n.attrs), {self.owners[p][1]: self.param_shapes.get(p) for p in n.params})
        self.by_block[id(block)] = layer
        self.layers.append(layer)


def _pieces(space: Space) -> List[int]:
    out, pos = [0], 0
    for s in space.segs:
        pos += s.length
        out.append(pos)
    return out


def _at(space: Space, lo: int, hi: int) -> Seg:
    pos = 0
    for s in space.segs:
        if pos <= lo < pos + s.length:
            return Seg(s.atom, s.start + lo - pos, hi - lo)
        pos += s.length
    raise AssertionError('offset outside the space')


def param_owners(net: mx.gluon.Block):
    """Parameter name -> (owning block, attribute, structural path of the block); and name -> Parameter."""
    owners, params = {}, {}

    def walk(block, path):
        for attr, p in gluon_compat.own_params(block).items():
            owners.setdefault(p.name, (block, attr, path))
            params.setdefault(p.name, p)
        for name, child in gluon_compat.children(block).items():
            walk(child, f'{path}.{name}' if path else name)
    walk(net, '')
    return owners, params

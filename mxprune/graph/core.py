"""Tracing a HybridBlock to its Symbol, channel spaces, union-find over atoms, and the coupled groups."""
import dataclasses
import fnmatch
import json
import math
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from .. import masks as masks_mod
from ..errors import MxPruneError
from ..layers import HANDLERS, LayerHandler, gluon_compat
from .attrs import flat
from .rules import RULES, unknown


@dataclasses.dataclass(frozen=True)
class Seg:
    atom: int
    start: int
    length: int


@dataclasses.dataclass(frozen=True)
class Space:
    """The channel layout of a tensor's axis 1: segments of atoms; `repeat` > 1 after Flatten (features)."""
    segs: Tuple[Seg, ...]
    repeat: int = 1

    @property
    def channels(self) -> int:
        return sum(s.length for s in self.segs)

    @property
    def size(self) -> int:
        return self.channels * self.repeat


@dataclasses.dataclass
class Layer:
    """A Gluon block whose parameters carry channels (Conv, Dense, BatchNorm, ...), as traced."""
    path: str                      # structural name, e.g. features.2.0.body.0 (stable across instances)
    block: mx.gluon.Block
    op: str
    node: str
    handler: LayerHandler
    params: Dict[str, mx.gluon.Parameter]
    axes: Dict[str, Dict[int, str]]  # param attr -> {axis: role}
    spaces: Dict[str, Space]          # role -> space ('in', 'out', 'chan')
    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]
    attrs: dict
    param_shapes: Dict[str, Tuple[int, ...]] = dataclasses.field(default_factory=dict)  # as traced

    @property
    def kind(self) -> str:
        return self.handler.kind

    @property
    def weighted(self) -> bool:
        return self.kind in ('conv', 'deconv', 'dense') and 'weight' in self.params

    @property
    def groups(self) -> int:
        """num_group of a grouped convolution (1 < num_group, not depthwise); 1 for every other layer."""
        if self.kind != 'conv' or 'chan' in self.spaces:
            return 1
        return int(self.attrs.get('num_group', 1))

    def spatial(self) -> int:
        """Multiply-accumulates per weight element for one sample."""
        if self.kind == 'conv':
            return int(np.prod(self.out_shape[2:])) if len(self.out_shape) > 2 else 1
        if self.kind == 'deconv':
            return int(np.prod(self.in_shape[2:])) if len(self.in_shape) > 2 else 1
        return 1

    def __repr__(self) -> str:
        return f'Layer({self.path}, {type(self.block).__name__})'


@dataclasses.dataclass
class Member:
    """One parameter axis of one layer that indexes (part of) a group's channels.

    `positions[i]` are the indices along `axis` of channel `channels[i]` (several after Flatten: `repeat` features
    per channel). A grouped convolution's input slice (`groups` > 1; the weight is (C_out, C_in/groups, k, k)) is the
    one exception: there `positions` index the layer's C_in input channels, and input channel p is column
    p % (C_in/groups) of the rows of output block p // (C_in/groups) (rows [j*C_out/groups, (j+1)*C_out/groups)).
    `index`, `take` and `spread` turn either layout into numpy indexing, so callers need not tell them apart.
    """
    layer: Layer
    attr: str
    axis: int
    role: str
    channels: np.ndarray   # group channel indices covered
    positions: np.ndarray  # (len(channels), repeat) indices along the axis (grouped input: input channels)
    groups: int = 1        # > 1: a grouped convolution's input slice (see above)

    @property
    def producer(self) -> bool:
        """Its layer computes these channels (a conv's filters, a depthwise conv), not only reads them."""
        return self.layer.weighted and self.attr == 'weight' and self.role in ('out', 'chan')

    def _grouped(self, pos: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(rows, column) per input channel in `pos` of a grouped input slice: rows (len(pos), C_out/groups)."""
        shape = self.layer.param_shapes[self.attr]
        rows_per, cols = shape[0] // self.groups, shape[1]
        rows = (pos // cols)[:, None] * rows_per + np.arange(rows_per)[None, :]
        return rows, pos % cols

    def index(self, which: np.ndarray) -> tuple:
        """A numpy index into the parameter selecting every entry of the channels `which` (bool over channels)."""
        if self.groups > 1:
            rows, cols = self._grouped(self.positions[which, 0])
            return rows.ravel(), np.repeat(cols, rows.shape[1])
        index = [slice(None)] * len(self.layer.param_shapes[self.attr])
        index[self.axis] = self.positions[which].ravel()
        return tuple(index)

    def take(self, data: np.ndarray) -> np.ndarray:
        """The parameter's entries per channel: (len(channels), positions per channel, entries per position)."""
        if self.groups > 1:
            rows, cols = self._grouped(self.positions[:, 0])
            return data[rows, cols[:, None]].reshape(len(cols), 1, -1)
        moved = np.moveaxis(data, self.axis, 0)
        return moved.reshape(moved.shape[0], -1)[self.positions]

    def spread(self, values: np.ndarray) -> np.ndarray:
        """Per-channel `values` as an array that broadcasts against the parameter (zero outside this member)."""
        shape = self.layer.param_shapes[self.attr]
        if self.groups > 1:
            out = np.zeros(tuple(shape[:2]) + (1,) * (len(shape) - 2), np.float32)
            rows, cols = self._grouped(self.positions[:, 0])
            out[rows, cols[:, None]] = np.asarray(values, np.float32).reshape((-1, 1) + (1,) * (len(shape) - 2))
            return out
        out = np.zeros(shape[self.axis], np.float32)
        out[self.positions] = np.asarray(values, np.float32)[:, None]
        view = [1] * len(shape)
        view[self.axis] = -1
        return out.reshape(view)

    def describe(self) -> str:
        what = {'out': 'out channels', 'in': 'in channels', 'chan': 'channels'}[self.role]
        cls = type(self.layer.block)
        name = getattr(cls, '_mxprune_base', cls).__name__
        dw = ' depthwise' if self.role == 'chan' and self.layer.weighted else ''
        grouped = f', {self.layer.groups} groups' if self.layer.groups > 1 and self.attr == 'weight' else ''
        rep = f' x{self.positions.shape[1]} features' if self.positions.shape[1] > 1 else ''
        return f'{self.layer.path} ({name}{dw}{grouped}) {what} {_ranges(self.positions[:, 0])}{rep}'


def _ranges(idx: np.ndarray) -> str:
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return f'[{idx[0]}:{idx[0] + len(idx)}]'
    return str(idx.tolist())


@dataclasses.dataclass
class Group:
    """Channels that must be cut together: every member axis indexes the same `size` channels.

    `blocks` > 1: the channels fall into `blocks` equal contiguous runs ([j*size/blocks, (j+1)*size/blocks)) and a
    keep-mask must keep the same number in each run: a grouped convolution reads or writes them group by group, and
    a convolution with G groups stays one only with the same width in each (G divides `blocks`); a split into K
    equal parts likewise needs K equal runs.
    """
    index: int
    name: str
    size: int
    members: List[Member]
    frozen: Optional[str] = None
    blocks: int = 1

    def block_counts(self, keep: np.ndarray) -> np.ndarray:
        """Channels kept per run of a bool keep-mask over the group."""
        return np.asarray(keep, bool).reshape(self.blocks, -1).sum(axis=1)

    def keep_error(self, keep: np.ndarray) -> Optional[str]:
        """Why a bool keep-mask does not fit this group's blocks (None when it fits)."""
        if self.blocks == 1:
            return None
        counts = self.block_counts(keep)
        if (counts == counts[0]).all():
            return None
        return (f'group {self.name!r} keeps {counts.min()} to {counts.max()} channels in its {self.blocks} blocks of '
                f'{self.size // self.blocks}; each block must keep the same number (grouped convolutions and splits '
                f'cut in equal blocks)')

    @property
    def producers(self) -> List[Member]:
        return [m for m in self.members if m.producer]

    @property
    def layers(self) -> List[Layer]:
        seen, out = set(), []
        for m in self.members:
            if id(m.layer) not in seen:
                seen.add(id(m.layer))
                out.append(m.layer)
        return out

    def details(self) -> str:
        """The cascade of coupled layers, one member a line (like Torch-Pruning's group.details())."""
        state = f'frozen: {self.frozen}' if self.frozen else 'cuttable'
        if self.blocks > 1 and not self.frozen:
            state += f' in {self.blocks} blocks of {self.size // self.blocks} (the same number kept in each)'
        lines = [f'Group {self.index} "{self.name}": {self.size} channels, {len(self.layers)} layers, {state}']
        seen = set()
        for m in self.members:
            key = (m.layer.path, m.role)
            if key in seen:
                continue
            seen.add(key)
            arrow = '  => ' if len(seen) > 1 else '     '
            lines.append(arrow + m.describe())
        return '\n'.join(lines)

    def __repr__(self) -> str:
        return f'Group({self.index}, {self.name!r}, size={self.size}, members={len(self.members)}' + \
            (f', blocks={self.blocks}' if self.blocks > 1 else '') + (', frozen)' if self.frozen else ')')


@dataclasses.dataclass
class Selection:
    """Which layers may be pruned: glob patterns (or 're:<regex>') on structural paths or block names."""
    include: Sequence[str] = ('*',)
    exclude: Sequence[str] = ()
    skip_first: bool = True
    skip_last: bool = True

    def matches(self, layer: Layer, first: Iterable[Layer], last: Iterable[Layer]) -> bool:
        if self.skip_first and any(layer is f for f in first):
            return False
        if self.skip_last and any(layer is f for f in last):
            return False
        names = (layer.path, layer.block.name)
        return any(match(p, names) for p in self.include) and not any(match(p, names) for p in self.exclude)


def match(pattern: str, names: Sequence[str]) -> bool:
    """Whether a glob (or 're:<regex>') matches any of `names`."""
    if pattern.startswith('re:'):
        rx = re.compile(pattern[3:])
        return any(rx.search(n) for n in names)
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


class _Node:
    """A view of one JSON graph node for the rules."""

    def __init__(self, tracer: '_Tracer', nid: int, raw: dict, data: List[Tuple[int, int]],
                 params: List[str], out_shapes: List[Optional[tuple]]):
        self.t, self.id, self.op, self.name = tracer, nid, raw['op'], raw['name']
        self.attrs = raw.get('attrs', {})
        self.data, self.params, self.out_shapes = data, params, out_shapes

    def in_space(self, i: int) -> Optional[Space]:
        return self.t.spaces.get(self.data[i])

    def in_shape(self, i: int) -> tuple:
        return self.t.shapes[self.data[i]]


class _Tracer:
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
    def path_of(self, n: _Node) -> str:
        """The structural path of the block owning a node's parameters (the node's name if none does)."""
        owner = self._owner(n)
        return owner[1] if owner else n.name

    def _owner(self, n: _Node):
        owners = [self.owners.get(p) for p in n.params]
        if not owners or owners[0] is None or any(o is None or o[0] is not owners[0][0] for o in owners):
            return None
        return owners[0][0], owners[0][2]

    def layer_axes(self, n: _Node, in_shape) -> Dict[str, Dict[int, str]]:
        owner = self._owner(n)
        if owner is None or isinstance(owner[0], mx.gluon.SymbolBlock):
            return {}
        handler = HANDLERS[n.op]
        attrs_of = {self.owners[p][1] for p in n.params}
        return {a: ax for a, ax in handler.axes(n.attrs, in_shape).items() if a in attrs_of}

    def add_layer(self, n: _Node, spaces: Dict[str, Space], in_shape, out_shape) -> None:
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


def _owners(net: mx.gluon.Block):
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
        owners, pmap = _owners(net)
        t = _Tracer(owners, pmap)
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
            view = _Node(t, nid, node, data, params, shapes)
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
    def _build(cls, net, input_shape, t: _Tracer, heads) -> 'DependencyGraph':
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

"""What the graph is made of: channel spaces (segments of atoms), layers, the members of a coupled group, the
groups themselves (`Group.details()`), and layer selection by glob."""
import dataclasses
import fnmatch
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from ..layers import LayerHandler


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

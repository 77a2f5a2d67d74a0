"""Latency as a cost model: a measured table of the layers at candidate widths, and a whole-net predictor.

Why: FLOPs mislead on real hardware. oneDNN computes in blocks of channels (16 on an AVX-512 CPU, 8 on AVX2), so
widths that are not multiples of the block can be slower than the dense layer, and which widths are fast differs from
one CPU to the next.

The table holds, per layer signature (kind, kernel, stride, spatial size, depthwise or not) and (in, out) width, the
time of that layer (conv + BN + ReLU, hybridized the way inference runs: the fused oneDNN backend when the build has
it) at the target batch, timed in context: behind a producer layer, whose own time is subtracted, relative to a
fixed reference layer timed in the same interleaved rounds (the machine's speed drifts). It is
cached per machine (CPU model, threads, MXNet version, backend) in $MXNET_HOME/mxprune/latency-<key>.json.
Whole-net latency is predicted as a * sum(layers) + b, with a > 0 and b >= 0 fitted on measured whole nets, so a
prediction is never zero or negative. Measuring whole nets and correcting the allocation by them (NetAdapt's loop)
is `mxprune.allocation`'s part.
"""
import hashlib
import json
import os
import platform
import time
from typing import Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from . import io, progress
from .flops import LayerCost, Shapes
from .graph.attrs import ints
from .graph import DependencyGraph, Layer


def fused_backend_available() -> bool:
    """Whether this MXNet build has oneDNN (MKLDNN), whose fused graph inference runs on."""
    try:
        return mx.runtime.Features().is_enabled('MKLDNN')
    except Exception:  # older builds without the features API
        return False


def cpu_flags() -> List[str]:
    """This CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            return next((ln.split(':', 1)[1].split() for ln in f if ln.startswith('flags')), [])
    except OSError:
        return []


def channel_block(gpu: bool = False, flags: Optional[Sequence[str]] = None) -> int:
    """The channel multiple this device computes in: oneDNN lays CPU tensors out in blocks of 16 channels with
    AVX-512 and of 8 with AVX2 (a width between two multiples runs as the next one up); a GPU, or a CPU that is not
    x86, has no such block here (1). `flags`: the CPU's feature flags (default: this CPU's)."""
    if gpu:
        return 1
    flags = cpu_flags() if flags is None else flags
    if 'avx512f' in flags:
        return 16
    return 8 if 'avx2' in flags else 1


def machine_key(batch: int, backend: str) -> str:
    cpu = platform.processor() or ''
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), cpu)
    except OSError:
        pass
    # 'in-context-ref-median': entries are timed behind a producer layer, residual convs with their add, in units of
    # a reference layer timed in the same rounds, median over rounds (LatencyTable._measure); older tables were
    # timed otherwise and are not mixed in
    raw = (f'{cpu}|{os.cpu_count()}|{os.environ.get("OMP_NUM_THREADS", "")}|{mx.__version__}|{backend}|{batch}|'
           f'in-context-ref-median')
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def cache_path(batch: int, backend: str) -> str:
    home = os.environ.get('MXNET_HOME', os.path.join('~', '.mxnet'))
    return os.path.expanduser(os.path.join(home, 'mxprune', f'latency-{machine_key(batch, backend)}.json'))


def signature(layer: Layer, residual: bool = False) -> Optional[tuple]:
    """What a layer's time depends on besides its widths; None for layers the table does not model. `residual`: the
    conv's output is added to a tensor of its own shape (see `residual_convs`), timed with that add."""
    a = layer.attrs
    if layer.kind == 'conv':
        sig = ('conv', a.get('kernel'), a.get('stride', '(1, 1)'), a.get('pad', '(0, 0)'), a.get('dilate', '(1, 1)'),
               tuple(int(v) for v in layer.in_shape[2:]), 'chan' in layer.spaces)
        sig += (('groups', layer.groups),) if layer.groups > 1 else ()  # grouped: timed with its groups
        return sig + ('sum',) if residual and tuple(layer.in_shape[2:]) == tuple(layer.out_shape[2:]) else sig
    if layer.kind == 'dense':
        return ('dense', int(np.prod(layer.in_shape[1:])) // max(1, layer.in_shape[1]))
    return None


_ADDS = {'elemwise_add', '_plus', '_Plus', '_add', 'broadcast_add', 'broadcast_plus', 'add_n', 'ElementWiseSum'}


def residual_convs(graph: DependencyGraph) -> set:
    """Node names of the convs whose output (through BatchNorm) is added to another tensor: one per add, the one
    computed last, into which oneDNN fuses the sum. The fused add changes how the conv's time depends on its widths
    (most at narrow odd widths), so it is timed as part of that layer rather than as a constant beside it
    (docs/results.md)."""
    from . import masks as masks_mod
    with masks_mod.bypassed():
        out = graph.net(mx.sym.var('data'))
    sym = mx.sym.Group(list(out)) if isinstance(out, (list, tuple)) else out
    nodes = json.loads(sym.tojson())['nodes']

    def conv_behind(nid: int) -> Optional[int]:
        while nodes[nid]['op'] == 'BatchNorm':
            nid = nodes[nid]['inputs'][0][0]
        return nid if nodes[nid]['op'] == 'Convolution' else None
    found = set()
    for node in nodes:
        if node['op'] in _ADDS:
            convs = [c for c in (conv_behind(i[0]) for i in node['inputs']) if c is not None]
            if convs:
                found.add(nodes[max(convs)]['name'])
    return found


def _build(sig: tuple, cin: int, cout: int):
    """The layer alone (conv + BN + ReLU, as the fused graph runs it), initialised, and its input shape."""
    from mxnet.gluon import nn
    net = nn.HybridSequential()
    if sig[0] == 'conv':
        _, kernel, stride, pad, dilate, side, depthwise = sig[:7]
        groups = next((x[1] for x in sig[7:] if isinstance(x, (tuple, list)) and x[0] == 'groups'), 1)
        net.add(nn.Conv2D(cout, ints(kernel), ints(stride), ints(pad), ints(dilate),
                          groups=cin if depthwise else groups, in_channels=cin, use_bias=False),
                nn.BatchNorm(in_channels=cout))
        if 'sum' not in sig[7:]:
            net.add(nn.Activation('relu'))
        shape = (cin,) + tuple(side)
    else:
        net.add(nn.Dense(cout, in_units=cin * sig[1]))
        shape = (cin * sig[1],)
    net.initialize(mx.init.Xavier())
    return net, shape


class _Residual(mx.gluon.HybridBlock):
    """producer -> layer, plus the producer's input, then ReLU: a residual block's last conv in context."""

    def __init__(self, producer, layer):
        super().__init__()
        self.producer, self.layer = producer, layer

    def hybrid_forward(self, F, x):
        return F.Activation(self.layer(self.producer(x)) + x, act_type='relu')


# The layer every table entry is timed beside (3x3 conv 32->32 + BN + ReLU on 16x16 maps, at the table's batch)
REFERENCE = ('conv', '(3, 3)', '(1, 1)', '(1, 1)', '(1, 1)', (16, 16), False)


class LatencyTable:
    """Measured per-layer latencies (ms) at one batch size, cached on disk.

    Entries are measured in units of a fixed reference layer (`REFERENCE`) timed in the same interleaved rounds,
    then expressed in milliseconds through the reference's time when the table was started (`reference_ms`, kept
    with the table). A table fills up over many runs, and a shared VM's speed drifts from minute to minute: entries
    in plain milliseconds measured at different times do not add up.
    """

    def __init__(self, batch: int = 64, backend: str = 'auto', repeats: int = 7, path: Optional[str] = None):
        self.batch = batch
        self.fused = fused_backend_available() if backend == 'auto' else backend == 'MKLDNN'
        self.backend = 'MKLDNN' if self.fused else 'plain'
        self.repeats = repeats
        self.path = path or cache_path(batch, self.backend)
        self.entries: Dict[str, float] = {}
        self.reference_ms: Optional[float] = None
        self.measured = 0
        self._reference = None
        self._bar = None
        if os.path.exists(self.path):
            with open(self.path, encoding='utf-8') as f:
                saved = json.load(f)
            self.entries, self.reference_ms = saved.get('entries', {}), saved.get('reference_ms')

    def save(self) -> None:
        io.write_json(self.path, {'batch': self.batch, 'backend': self.backend, 'reference_ms': self.reference_ms,
                                  'entries': self.entries})
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def get(self, sig: tuple, cin: int, cout: int) -> float:
        key = json.dumps([list(sig), cin, cout])
        if key not in self.entries:
            self.entries[key] = self._measure(sig, cin, cout)
            self.measured += 1
            self._tick()
        return self.entries[key]

    def _tick(self) -> None:
        """A counter of the entries timed (a new machine times hundreds, for minutes): how many are needed is only
        known as the allocator asks for them."""
        if self._bar is None:
            self._bar = progress.bar(desc=f'latency table (batch {self.batch})', unit=' entries')
        self._bar.update(1)

    def _measure(self, sig: tuple, cin: int, cout: int) -> float:
        """A conv is timed in context: behind a 1x1 producer conv (+ BN + ReLU) of `cin` channels, minus that producer
        alone. Inside a fused net a layer's input already is in oneDNN's layout (or in whatever layout an odd width
        forces), so timing the layer on a plain array would count a reorder the net does not do, and miss the ones
        it does. A residual block's last conv is timed with its add: producer (`cout` -> `cin`), conv + BN, plus the
        producer's input, ReLU. Each round's difference is divided by the reference's time in that round; the entry
        is the median over rounds, in the reference's milliseconds."""
        from mxnet.gluon import nn
        net, shape = _build(sig, cin, cout)
        if self._reference is None:
            self._reference = _build(REFERENCE, 32, 32)
        if sig[0] != 'conv':
            t_net, t_ref = self._time([(net, shape), self._reference])
            units = t_net / t_ref
        else:
            if 'sum' in sig[7:]:  # the skip tensor has the layer's output width: the producer maps it to `cin`
                producer, shape = _build(('conv', '(1, 1)', '(1, 1)', '(0, 0)', '(1, 1)', sig[5], False), cout, cin)
                both = _Residual(producer, net)
            else:
                producer, _ = _build(('conv', '(1, 1)', '(1, 1)', '(0, 0)', '(1, 1)', sig[5], False), cin, cin)
                both = nn.HybridSequential()
                both.add(producer, net)
            t_both, t_producer, t_ref = self._time([(both, shape), (producer, shape), self._reference])
            # a difference of two timings: never zero or negative
            units = np.maximum(t_both - t_producer, 0.05 * t_both) / t_ref
        if self.reference_ms is None:  # the first entry of a table fixes its milliseconds
            self.reference_ms = float(np.median(t_ref))
        return float(np.median(units)) * self.reference_ms

    def _time(self, nets: Sequence[tuple], calls: int = 3) -> List[np.ndarray]:
        """Per-call ms of each (net, input shape) in each of `repeats` rounds of `calls` calls, the nets interleaved
        round by round, so that a layer, its producer and the reference run under the same load when they are
        compared."""
        inputs = [mx.nd.random.uniform(shape=(self.batch,) + tuple(shape)) for _, shape in nets]
        for (net, _), x in zip(nets, inputs):
            if self.fused:
                net.hybridize(backend='MKLDNN', static_alloc=True, static_shape=True)
            else:
                net.hybridize(static_alloc=True, static_shape=True)
            for _ in range(3):
                net(x).wait_to_read()
        out = np.zeros((len(nets), self.repeats))
        for r in range(self.repeats):
            for i, ((net, _), x) in enumerate(zip(nets, inputs)):
                t = time.perf_counter()
                for _ in range(calls):
                    net(x)
                mx.nd.waitall()
                out[i, r] = (time.perf_counter() - t) / calls * 1000
        return list(out)


class Predictor(LayerCost):
    """Whole-net latency (ms) = a * sum over Conv/Dense layers of the table's entries + b; a cost model
    (`mxprune.flops.LayerCost`) whose `curve` times every candidate width of a group against the table at once.

    a and b are fitted on measured whole nets (`calibrate`) with a > 0 and b >= 0: a negative intercept fitted on
    two wide nets made narrow nets predict negative times.
    """
    name = 'latency'

    def __init__(self, graph: DependencyGraph, table: 'LatencyTable', shapes: Optional[Shapes] = None):
        self.table = table
        residual = residual_convs(graph)
        self.signatures = {}
        for layer in graph.weighted_layers():
            sig = signature(layer, layer.node in residual)
            if sig:
                self.signatures[id(layer)] = sig
        super().__init__(graph, shapes)
        self.a, self.b = 1.0, 0.0

    def counts(self, layer):
        return id(layer) in self.signatures

    def widths(self, i: int, shapes: Dict[str, List[np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
        """(in, out) channel counts of layer i, arrays over the candidates in `shapes`."""
        layer = self.index.layers[i]
        w = shapes['weight']
        if 'chan' in layer.spaces:
            return w[0], w[0]
        if layer.kind == 'dense':
            return w[1] // self.signatures[id(layer)][1], w[0]
        return w[1] * layer.groups, w[0]  # a grouped conv's weight holds C_in / groups per output channel

    def table_ms(self, i: int, shapes: Dict[str, List[np.ndarray]]) -> np.ndarray:
        sig = self.signatures[id(self.index.layers[i])]
        cin, cout = self.widths(i, shapes)
        return np.array([self.table.get(sig, int(a), int(b)) for a, b in zip(cin, cout)])

    def layer_cost(self, i, shapes):
        return self.a * self.table_ms(i, shapes)

    def total(self, keep):
        return super().total(keep) + self.b

    def raw(self, keep: Dict[int, np.ndarray]) -> float:
        """The sum of the table's entries (a = 1, b = 0)."""
        return float(sum(self.table_ms(i, self.index.shapes(i, keep))[0] for i in self.counted))

    def predict(self, keep: Dict[int, np.ndarray]) -> float:
        return self.total(keep)

    def calibrate(self, points: Sequence[Tuple[Dict[int, np.ndarray], float]]) -> None:
        """Fits a > 0, b >= 0 by least squares on (keep, measured ms) pairs; the scale alone when one pair is given or
        the free fit's intercept is negative."""
        xs = np.array([self.raw(k) for k, _ in points])
        ys = np.array([ms for _, ms in points])
        a, b = (float(v) for v in np.polyfit(xs, ys, 1)) if len(points) > 1 and np.ptp(xs) > 0 else (0.0, -1.0)
        if a <= 0 or b < 0:
            a, b = float((xs @ ys) / (xs @ xs)), 0.0
        self.a, self.b = a, b

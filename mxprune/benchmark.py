"""Inference speed: dense vs pruned, measured in one run (interleaved repeats, medians), beside the MACs ratio.

Both nets are hybridized the same way: with MXNet's fused oneDNN backend (conv + BN + ReLU + add folded;
`backend='MKLDNN'`) when the build has it, else the plain static graph. The fused net's outputs are checked against
the plain graph's before any timing (they must agree within 1e-4 x the output scale).
"""
import time
from typing import Callable, Dict, Optional, Sequence

import mxnet as mx
import numpy as np

from . import progress
from .errors import MxPruneError
from .latency import fused_backend_available

__all__ = ['fused_backend_available', 'prepare', 'compare', 'speedup']


def prepare(net: mx.gluon.HybridBlock, shape: Sequence[int], backend: Optional[str] = 'auto',
            ctx: Optional[mx.Context] = None) -> mx.gluon.HybridBlock:
    """Hybridizes `net` for inference (fused when available and asked), checked against the plain graph."""
    ctx = ctx or mx.cpu()
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, tuple(shape)), ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    plain = net(x).asnumpy()
    use = fused_backend_available() if backend == 'auto' else bool(backend)
    if use:
        net.hybridize(backend='MKLDNN', static_alloc=True, static_shape=True)
        fused = net(x).asnumpy()
        diff = float(np.abs(fused - plain).max())
        if diff > 1e-4 * max(1.0, float(np.abs(plain).max())):
            raise MxPruneError(f'the fused MKLDNN graph differs from the plain one by {diff:.3g}; benchmark with '
                               f'backend=None')
    return net


def _time(net, x, n: int) -> list:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        net(x).wait_to_read()
        out.append(time.perf_counter() - t)
    return out


def compare(nets: Dict[str, mx.gluon.HybridBlock], shape: Sequence[int], *, repeats: int = 7, per_repeat: int = 3,
            warmup: int = 3, ctx: Optional[mx.Context] = None,
            on_round: Optional[Callable[[], None]] = None) -> Dict[str, dict]:
    """Times several nets on the same input, interleaved (noisy machines); returns per net median ms and images/s.
    `on_round` is called after each round of all nets (a progress bar)."""
    ctx = ctx or mx.cpu()
    x = mx.nd.array(np.random.RandomState(1).uniform(-1, 1, tuple(shape)), ctx=ctx)
    for net in nets.values():
        _time(net, x, warmup)
    samples = {k: [] for k in nets}
    for _ in range(repeats):
        for k, net in nets.items():
            samples[k].extend(_time(net, x, per_repeat))
        if on_round is not None:
            on_round()
    out = {}
    for k, ts in samples.items():
        med = float(np.median(ts))
        out[k] = {'ms': med * 1000, 'images_per_s': shape[0] / med, 'spread': float(np.std(ts) / med)}
    return out


def speedup(dense: mx.gluon.HybridBlock, pruned: mx.gluon.HybridBlock, input_shape: Sequence[int],
            batches: Sequence[int] = (1, 64), macs_ratio: Optional[float] = None, backend: Optional[str] = 'auto',
            repeats: int = 7) -> dict:
    """Dense vs pruned latency per batch size, with the measured speed-up beside the MACs speed-up; a progress bar
    counts the timing rounds (mxprune.progress).

    The nets are hybridized in place; pass copies if the originals must stay as they are.
    """
    report = {'backend': 'MKLDNN (fused)' if (backend == 'auto' and fused_backend_available()) or backend
              not in ('auto', None) else 'plain static graph', 'batches': {}}
    with progress.bar(desc='timing dense and pruned', total=len(batches) * repeats, unit='round') as pb:
        for b in batches:
            report['batches'][str(b)] = _speedup_at(dense, pruned, (b,) + tuple(input_shape[1:]), macs_ratio,
                                                    backend, repeats, pb.update)
    return report


def _speedup_at(dense, pruned, shape, macs_ratio, backend, repeats, on_round) -> dict:
    prepare(dense, shape, backend)
    prepare(pruned, shape, backend)
    t = compare({'dense': dense, 'pruned': pruned}, shape, repeats=repeats, on_round=on_round)
    row = {'dense_ms': t['dense']['ms'], 'pruned_ms': t['pruned']['ms'],
           'dense_images_per_s': t['dense']['images_per_s'], 'pruned_images_per_s': t['pruned']['images_per_s'],
           'speedup': t['dense']['ms'] / t['pruned']['ms']}
    if macs_ratio:
        row['macs_speedup'] = 1.0 / macs_ratio
        row['speedup_over_macs_speedup'] = row['speedup'] * macs_ratio
    return row


"""Dense vs pruned detector latency: the whole detector (with box decoding and NMS) and the network alone."""
from typing import Sequence

import mxnet as mx
import numpy as np
from mxnet import gluon

from .. import benchmark as bench_mod
from ..errors import MxPruneError
from .model import raw_outputs


class _Joined(gluon.HybridBlock):
    """A detector's outputs joined into one array, for timing with mxprune.benchmark (which takes one output)."""

    def __init__(self, net):
        super().__init__(prefix='')
        self.net = net

    def hybrid_forward(self, F, x):
        return F.concat(*self.net(x), dim=-1)


def speedup(dense, pruned, input_shape: Sequence[int], batches: Sequence[int] = (1, 8), repeats: int = 5,
            fused: bool = True) -> dict:
    """Dense vs pruned latency, interleaved medians: of the whole detector (backbone, heads, box decoding and NMS)
    and of the network alone (NMS off, per-anchor outputs).

    With `fused` the nets run through MXNet's oneDNN graph backend (conv + BN + ReLU fused) when the build has it;
    its per-anchor outputs are checked against the plain graph's first.
    """
    from ..export import max_abs_diff
    use_fused = fused and bench_mod.fused_backend_available()
    report = {'backend': 'MKLDNN (fused)' if use_fused else 'plain static graph', 'batches': {}, 'network': {}}
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (1,) + tuple(input_shape[1:])))
    nets = {'dense': dense, 'pruned': pruned}
    for key, net in nets.items():
        net.hybridize(static_alloc=True, static_shape=True)
        plain = raw_outputs(net, x)
        if use_fused:
            net.hybridize(backend='MKLDNN', static_alloc=True, static_shape=True)
            diff = max_abs_diff(raw_outputs(net, x), plain)
            if not diff <= 1e-3 * max(1.0, max(float(np.abs(p[np.isfinite(p)]).max(initial=0)) for p in plain)):
                raise MxPruneError(f'the fused MKLDNN graph of the {key} detector differs from the plain one by '
                                   f'{diff:.3g}; time it with benchmark.backend plain')
    joined = {k: _Joined(net) for k, net in nets.items()}
    saved = {k: (net.nms_thresh, net.nms_topk, net.post_nms) for k, net in nets.items()}
    for what, nms in (('batches', None), ('network', 0)):
        for k, net in nets.items():
            net.set_nms(nms_thresh=saved[k][0] if nms is None else nms, nms_topk=saved[k][1], post_nms=saved[k][2])
        for b in batches:
            t = bench_mod.compare(joined, (b,) + tuple(input_shape[1:]), repeats=repeats)
            report[what][str(b)] = {'dense_ms': t['dense']['ms'], 'pruned_ms': t['pruned']['ms'],
                                    'speedup': t['dense']['ms'] / t['pruned']['ms']}
    for k, net in nets.items():
        net.set_nms(*saved[k])
    return report

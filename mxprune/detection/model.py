"""The detector: a GluonCV SSD / YOLOv3 built for a class list, seeded and made native (prunable); its backbone
(layer globs) and MACs by part; its raw outputs, for comparing two nets element by element."""
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .. import flops as flops_mod
from .. import masks as masks_mod
from ..errors import ModelError
from ..graph import DependencyGraph, Selection
from ..graph.attrs import flat
from ..zoo import load_params
from .native import native



# Which layers are "the backbone" by default: an SSD's FeatureExpander (base network and extra feature layers), a
# YOLOv3's stages (the base network); the rest are the predictor heads (and YOLOv3's detection blocks).
BACKBONES = {'ssd': ('features.*',), 'yolo3': ('stages.*',)}


def backbone_of(name: str, patterns: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
    return tuple(patterns) if patterns else BACKBONES[family(name)]


def family(name: str) -> str:
    """'ssd' or 'yolo3' for a GluonCV detector name; anything else is refused."""
    for prefix, fam in (('ssd_', 'ssd'), ('yolo3_', 'yolo3')):
        if name.startswith(prefix):
            return fam
    raise ModelError(f'model.name: {name!r} is not allowed for detection; expected a GluonCV SSD (ssd_*) or YOLOv3 '
                     f'(yolo3_*) model, e.g. ssd_300_mobilenet0.25_custom')


def build_detector(name: str, classes: Sequence[str], input_size: int, ctx: Optional[list] = None,
                   pretrained: Optional[str] = None, seed: int = 0) -> gluon.HybridBlock:
    """A GluonCV detector for `classes`, initialised (Xavier, seeded) or loaded from a local .params, then made
    native (no SymbolBlock left), so that it can be pruned. Backbone weights are not downloaded."""
    from gluoncv import model_zoo
    family(name)
    ctx = ctx or [mx.cpu()]
    kwargs = {'classes': list(classes), 'pretrained_base': False}
    try:
        with warnings.catch_warnings():  # SymbolBlock's "Cannot decide type for ... data" on every build
            warnings.simplefilter('ignore', UserWarning)
            net = model_zoo.get_model(name, **kwargs)
    except (ValueError, TypeError) as e:
        raise ModelError(f'model.name: {name!r}: {str(e).splitlines()[0][:200]}') from None
    initialize(net, ctx, seed)
    native(net, (1, 3, input_size, input_size))
    if pretrained:
        load_params(net, pretrained, ctx)
    return net


# Parameters a SymbolBlock creates for layers appended to a backbone (GluonCV's FeatureExpander) have no initializer
# of their own, and Gluon then hands the global one (Xavier) to BatchNorm vectors too: they get these by name.
VECTOR_INITS = (('gamma', mx.init.One), ('running_var', mx.init.One), ('moving_var', mx.init.One),
                ('beta', mx.init.Zero), ('running_mean', mx.init.Zero), ('moving_mean', mx.init.Zero),
                ('bias', mx.init.Zero))


def initialize(net: gluon.Block, ctx: Sequence[mx.Context], seed: int = 0) -> None:
    """Seeded initialisation: He-style Xavier for weights (as GluonCV's FeatureExpander), ones/zeros for vectors."""
    mx.random.seed(seed)
    np.random.seed(seed)
    for p in net.collect_params().values():
        if p.init is None:
            p.init = next((init() for suffix, init in VECTOR_INITS if p.name.endswith(suffix)), None)
    net.initialize(mx.init.Xavier(rnd_type='gaussian', factor_type='out', magnitude=2), ctx=list(ctx))


def raw_outputs(net: gluon.HybridBlock, x: mx.nd.NDArray) -> List[np.ndarray]:
    """The detector's per-anchor outputs in inference mode with NMS switched off: (class ids, scores, boxes) for
    every anchor and class, in a fixed order, so two nets can be compared element by element."""
    thresh, topk, post = net.nms_thresh, net.nms_topk, net.post_nms
    net.set_nms(nms_thresh=0, nms_topk=topk, post_nms=post)  # also drops a cached training-mode graph
    try:
        out = net(x)
    finally:
        net.set_nms(nms_thresh=thresh, nms_topk=topk, post_nms=post)
    return [o.asnumpy() for o in out]


def train_outputs(net: gluon.HybridBlock, x: mx.nd.NDArray) -> List[np.ndarray]:
    """The raw head outputs of a training-mode forward pass (not recorded; BatchNorm on batch statistics): SSD's
    class logits, box offsets and anchors; YOLOv3's boxes, anchors, offsets, centers, scales, objectness and class
    logits."""
    # GluonCV detectors choose their outputs by autograd.is_training() when the graph is built, and a hybridized
    # net caches one graph: drop it before and after, as GluonCV's scripts do around validation.
    masks_mod.clear_cached(net)
    try:
        with autograd.train_mode():
            out = net(x)
        return [o.asnumpy() for o in flat(out)]
    finally:
        masks_mod.clear_cached(net)





def backbone_selection(backbone: Sequence[str]) -> Selection:
    """The layers matching the backbone globs, the first conv included (the MACs it costs are the backbone's)."""
    return Selection(tuple(backbone), skip_first=False, skip_last=False)


def parts_of(graph: DependencyGraph, backbone: Sequence[str]) -> Dict[str, List[str]]:
    """Layer paths of the weighted layers, split into 'backbone' (matching a glob) and 'heads' (the rest)."""
    chosen = {id(layer) for layer in graph.selected(backbone_selection(backbone))}
    out = {'backbone': [], 'heads': []}
    for layer in graph.weighted_layers():
        out['backbone' if id(layer) in chosen else 'heads'].append(layer.path)
    return out


def macs_by_part(graph: DependencyGraph, backbone: Sequence[str]) -> Dict[str, int]:
    """Dense MACs of the traced net: whole net, backbone layers, the rest (predictor heads)."""
    per = flops_mod.dense(graph).per_layer
    parts = parts_of(graph, backbone)
    return {'net': int(sum(per.values())), **{k: int(sum(per[p] for p in v)) for k, v in parts.items()}}


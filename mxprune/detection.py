"""Object detection: GluonCV SSD / YOLOv3 detectors made prunable, a VOC-layout reader, training, VOC mAP, speed.

GluonCV builds the SSD backbones it borrows from classifiers (mobilenet, resnet) as a `FeatureExpander`, a
SymbolBlock: its convolutions are nodes of one Symbol, not Gluon blocks, so they cannot be masked or cut in place.
`native(net)` replaces every SymbolBlock in a net by a `SymbolGraph`, which replays the same Symbol node by node with
real Gluon layers (Conv, BatchNorm, Dense) as children, holding the same weights under the same parameter names.
After that the dependency graph, masks, shrinking and export work on the detector as on a classifier: the backbone,
the extra feature layers and the predictor convs that read them are coupled; anchor, decoding and NMS operators
freeze what they touch; the predictor outputs stay whole.

Data, training and evaluation follow GluonCV's `train_ssd.py` / `train_yolo3.py`: Pascal VOC XML, GluonCV's SSD and
YOLOv3 train/validation transforms (augmentation and target generation), SSDMultiBoxLoss or the YOLOv3 losses,
and VOC07 mAP through GluonCV's metric.
"""
import dataclasses
import json
import os
import random
import time
import warnings
import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from . import benchmark as bench_mod
from . import flops as flops_mod
from . import layers as layers_mod
from . import masks as masks_mod
from . import progress
from .errors import DataError, ModelError, MxPruneError, NumericsError
from .graph import DependencyGraph
from .graph import match
from .graph.core import finish_init
from .modifiers import PruningModifier

# ----------------------------------------------------------------------------------------------------------------
# SymbolBlock -> native Gluon layers


def _tuple(text, n: int = 0, default: int = 0) -> tuple:
    if text in (None, 'None', '()', ''):
        return (default,) * n
    return tuple(int(v) for v in str(text).strip('()[] ').split(',') if v.strip())


def _bool(text, default: bool) -> bool:
    if text is None:
        return default
    return str(text) in ('True', 'true', '1')


def _conv(attrs: dict, shapes: Dict[str, tuple], prefix: str) -> mx.gluon.HybridBlock:
    kernel = _tuple(attrs['kernel'])
    nd = len(kernel)
    groups = int(attrs.get('num_group', 1))
    kwargs = {'channels': int(attrs['num_filter']), 'kernel_size': kernel, 'groups': groups,
              'strides': _tuple(attrs.get('stride'), nd, 1), 'padding': _tuple(attrs.get('pad'), nd, 0),
              'dilation': _tuple(attrs.get('dilate'), nd, 1), 'use_bias': not _bool(attrs.get('no_bias'), False),
              'in_channels': shapes['weight'][1] * groups, 'prefix': prefix}
    if attrs.get('layout') not in (None, 'None'):
        kwargs['layout'] = attrs['layout']
    return CONV_CLASSES[nd](**kwargs)


def _batchnorm(attrs: dict, shapes: Dict[str, tuple], prefix: str) -> mx.gluon.HybridBlock:
    # Missing attributes take the operator's defaults (mx.sym.BatchNorm: eps 1e-3, fix_gamma True), not Gluon's.
    return gluon.nn.BatchNorm(axis=int(attrs.get('axis', 1)), momentum=float(attrs.get('momentum', 0.9)),
                              epsilon=float(attrs.get('eps', 1e-3)), scale=not _bool(attrs.get('fix_gamma'), True),
                              use_global_stats=_bool(attrs.get('use_global_stats'), False),
                              in_channels=shapes['gamma'][0], prefix=prefix)


def _dense(attrs: dict, shapes: Dict[str, tuple], prefix: str) -> mx.gluon.HybridBlock:
    return gluon.nn.Dense(int(attrs['num_hidden']), use_bias=not _bool(attrs.get('no_bias'), False),
                          flatten=_bool(attrs.get('flatten'), True), in_units=shapes['weight'][1], prefix=prefix)


CONV_CLASSES = {1: gluon.nn.Conv1D, 2: gluon.nn.Conv2D, 3: gluon.nn.Conv3D}
# Operator -> (Gluon attribute of each parameter input in order, builder of the equivalent Gluon layer).
NATIVE_LAYERS: Dict[str, Tuple[Tuple[str, ...], Callable]] = {
    'Convolution': (('weight', 'bias'), _conv),
    'BatchNorm': (('gamma', 'beta', 'running_mean', 'running_var'), _batchnorm),
    'FullyConnected': (('weight', 'bias'), _dense),
}


def _op_function(F, op: str):
    """The nd/sym function of a JSON operator name ('Convolution', '_plus_scalar', '_contrib_box_nms')."""
    for space, name in ((F, op), (F._internal, op), (F.contrib, op[len('_contrib_'):] if op.startswith('_contrib_')
                                                         else None)):
        fn = getattr(space, name, None) if name else None
        if fn is not None:
            return fn
    return None


class SymbolGraph(gluon.HybridBlock):
    """A Symbol replayed node by node: Convolution / BatchNorm / FullyConnected nodes run as native Gluon child
    layers (so they can be masked and cut in place), every other node as its nd/sym operator."""

    def __init__(self, symbol: mx.sym.Symbol, input_names: Sequence[str], params: Dict[str, gluon.Parameter],
                 strip: str = ''):
        """
        Args:
            symbol: the graph (one or a Group of outputs).
            input_names: its data inputs, in the order forward() takes them.
            params: initialised Parameters for its other variables, by name; their values are copied.
            strip: a common prefix removed from node names to form the children's structural names.
        """
        super().__init__(prefix='', params=None)
        js = json.loads(symbol.tojson())
        self._nodes = js['nodes']
        self._heads = [(h[0], h[1]) for h in js['heads']]
        self._inputs = {name: i for i, name in enumerate(input_names)}
        self._layer_of: Dict[int, str] = {}      # node id -> child name
        self._param_attr: Dict[str, str] = {}    # variable name -> attribute on self (non-layer operators)
        self._attrs: Dict[int, dict] = {}
        used_by: Dict[str, Tuple[str, Tuple[str, ...]]] = {}
        missing = [n['name'] for n in self._nodes if n['op'] == 'null' and n['name'] not in self._inputs
                   and n['name'] not in params]
        if missing:
            raise ModelError(f'SymbolGraph: variable {missing[0]!r} is neither an input ({", ".join(input_names)}) '
                             f'nor a parameter')
        for nid, node in enumerate(self._nodes):
            op = node['op']
            if op == 'null':
                continue
            if _op_function(mx.sym, op) is None:
                raise ModelError(f'SymbolGraph: operator {op} ({node["name"]}) has no mx.sym function to replay')
            self._attrs[nid] = {k: v for k, v in node.get('attrs', {}).items() if not k.startswith('__')}
            srcs = [self._nodes[i[0]] for i in node['inputs']]
            pnames = tuple(s['name'] for s in srcs[1:])
            native = NATIVE_LAYERS.get(op)
            as_layer = native is not None and len(pnames) <= len(native[0]) and \
                all(s['op'] == 'null' and s['name'] in params and s['name'] not in self._inputs for s in srcs[1:])
            if as_layer and pnames and pnames[0] in used_by:  # shared weights: call the same child again
                child, same = used_by[pnames[0]]
                if same == pnames:
                    self._layer_of[nid] = child
                    continue
                as_layer = False
            shared = [p for p in pnames if p in used_by] if as_layer else \
                [s['name'] for s in srcs if s['name'] in used_by]
            shared += [p for p in pnames if p in self._param_attr] if as_layer else []
            if shared:  # one copy of a weight must stay one copy: refuse rather than train two
                raise ModelError(f'SymbolGraph: {op} {node["name"]} shares parameter {shared[0]!r} with another node '
                                 f'in a way that cannot be replayed by one Gluon layer')
            if as_layer:
                self._layer_of[nid] = self._add_layer(node, nid, pnames, params, strip)
                for p in pnames:
                    used_by[p] = (self._layer_of[nid], pnames)
                continue
            for s in srcs:
                if s['op'] == 'null' and s['name'] in params and s['name'] not in self._param_attr:
                    self._add_param(s['name'], params[s['name']])
        for node in self._nodes:
            for src, k, _ in node.get('inputs', []):
                if src in self._layer_of and k > 0:
                    raise ModelError(f'SymbolGraph: {node["name"]} reads output {k} of layer '
                                     f'{self._nodes[src]["name"]}; only a layer\'s first output can be replayed')

    def _add_layer(self, node: dict, nid: int, pnames: Tuple[str, ...], params: Dict[str, gluon.Parameter],
                   strip: str) -> str:
        attrs_of, build = NATIVE_LAYERS[node['op']]
        base = node['name'][:-len('_fwd')] if node['name'].endswith('_fwd') else node['name']
        shapes = {attr: params[p].shape for attr, p in zip(attrs_of, pnames)}
        block = build(self._attrs[nid], shapes, prefix=base + '_')
        ctx = params[pnames[0]].list_ctx()
        block.initialize(ctx=ctx)
        for attr, p in zip(attrs_of, pnames):
            src, dst = params[p], getattr(block, attr)
            dst.set_data(src.data(ctx[0]))
            dst.lr_mult, dst.wd_mult = src.lr_mult, src.wd_mult
        name = base[len(strip):] if base.startswith(strip) and len(base) > len(strip) else base
        if name in self._children:  # two nodes with one name: keep both layers apart
            name = f'{name}_{len(self._children)}'
        self.register_child(block, name)
        return name

    def _add_param(self, name: str, src: gluon.Parameter) -> None:
        attr = f'param{len(self._param_attr)}'
        p = self.params.get(name, shape=src.shape, dtype=src.dtype, grad_req=src.grad_req,
                            differentiable=src.grad_req != 'null')
        p.lr_mult, p.wd_mult = src.lr_mult, src.wd_mult
        p.initialize(ctx=src.list_ctx())
        p.set_data(src.data(src.list_ctx()[0]))
        setattr(self, attr, p)
        self._param_attr[name] = attr

    def hybrid_forward(self, F, x, *args, **params):
        inputs = [x, *args]
        values: Dict[Tuple[int, int], Any] = {}
        for nid, node in enumerate(self._nodes):
            if node['op'] == 'null':
                name = node['name']
                if name in self._inputs:
                    values[(nid, 0)] = inputs[self._inputs[name]]
                elif name in self._param_attr:
                    values[(nid, 0)] = params[self._param_attr[name]]
                continue
            if nid in self._layer_of:  # its parameters live in the child layer
                src, k, _ = node['inputs'][0]
                out = self._children[self._layer_of[nid]](values[(src, k)])
            else:
                out = _op_function(F, node['op'])(*[values[(src, k)] for src, k, _ in node['inputs']],
                                                  **self._attrs[nid])
            if isinstance(out, (list, tuple)):
                outs = list(out)
            elif F is mx.sym and len(out.list_outputs()) > 1:
                outs = [out[k] for k in range(len(out.list_outputs()))]
            else:
                outs = [out]
            for k, o in enumerate(outs):
                values[(nid, k)] = o
        heads = [values[h] for h in self._heads]
        return heads[0] if len(heads) == 1 else heads


def _common_prefix(names: List[str]) -> str:
    prefix = os.path.commonprefix(names)
    return prefix[:prefix.rfind('_') + 1] if '_' in prefix else ''


def to_native(block: gluon.SymbolBlock) -> SymbolGraph:
    """The SymbolGraph of an initialised SymbolBlock (same outputs, same parameter values and names)."""
    input_names, out = layers_mod.symbol_of(block)
    params = {p.name: p for p in block.collect_params().values()}
    if any(p._data is None for p in params.values()):  # noqa: SLF001 (deferred init is not public in Gluon 1.x)
        raise ModelError(f'{block.name}: initialise the net and run one forward pass before converting it')
    return SymbolGraph(out, input_names, params, strip=_common_prefix(list(params)))


def native(net: gluon.HybridBlock, input_shape: Sequence[int]) -> gluon.HybridBlock:
    """Replaces every SymbolBlock inside `net` by its SymbolGraph (in place) and returns the net.

    Deferred shapes are completed first with one forward pass of `input_shape`. A net that is itself a SymbolBlock
    is returned converted.
    """
    finish_init(net, tuple(input_shape))
    if isinstance(net, gluon.SymbolBlock):
        return to_native(net)

    def walk(block):
        for name, child in layers_mod.child_blocks(block).items():
            if isinstance(child, gluon.SymbolBlock):
                layers_mod.replace_child(block, name, to_native(child))
            else:
                walk(child)
    walk(net)
    masks_mod.clear_cached(net)
    return net


# ----------------------------------------------------------------------------------------------------------------
# Pascal VOC layout


@dataclasses.dataclass
class VOCItem:
    image: str
    label: np.ndarray  # (boxes, 6): xmin, ymin, xmax, ymax, class, difficult (pixels, 0-based)


class VOCFolder(gluon.data.Dataset):
    """A Pascal VOC layout folder (JPEGImages/, Annotations/, ImageSets/Main/<split>.txt) as GluonCV's
    VOCDetection returns it: (image as uint8 HWC NDArray, label (boxes, 6) float32)."""

    def __init__(self, root: str, split: str, classes: Sequence[str], *, skip_empty: bool = False,
                 cache: bool = True):
        """
        Args:
            root: the folder.
            split: the image-id list ImageSets/Main/<split>.txt.
            classes: class names in label order; objects of other classes are left out.
            skip_empty: leave out images with no object of `classes` (training: the SSD crops need a box).
            cache: decode every image once and keep it in memory.
        """
        self.root, self.split, self.classes = os.path.abspath(root), split, tuple(classes)
        ids_file = os.path.join(self.root, 'ImageSets', 'Main', f'{split}.txt')
        if not os.path.isdir(self.root):
            raise DataError(f'VOC folder {self.root} does not exist; give it with --data-dir or data.root')
        if not os.path.isfile(ids_file):
            raise DataError(f'{ids_file}: image list of split {split!r} not found (expected a Pascal VOC layout: '
                            f'JPEGImages/, Annotations/, ImageSets/Main/<split>.txt)')
        with open(ids_file, encoding='utf-8') as f:
            ids = [line.split()[0] for line in f if line.strip()]
        if not ids:
            raise DataError(f'{ids_file}: lists no image')
        self.items: List[VOCItem] = []
        self.skipped = 0
        for i in ids:
            item = self._read(i)
            if skip_empty and not len(item.label):
                self.skipped += 1
                continue
            self.items.append(item)
        if not self.items:
            raise DataError(f'{ids_file}: no image holds an object of the classes {list(self.classes)}')
        self._cache: Dict[int, mx.nd.NDArray] = {} if cache else None

    def _read(self, image_id: str) -> VOCItem:
        xml_path = os.path.join(self.root, 'Annotations', f'{image_id}.xml')
        img_path = os.path.join(self.root, 'JPEGImages', f'{image_id}.jpg')
        for path in (xml_path, img_path):
            if not os.path.isfile(path):
                raise DataError(f'{path}: listed in ImageSets/Main/{self.split}.txt but missing')
        try:
            root = ET.parse(xml_path).getroot()
            width, height = float(root.find('size/width').text), float(root.find('size/height').text)
            rows = []
            for obj in root.iter('object'):
                name = obj.find('name').text.strip()
                if name not in self.classes:
                    continue
                diff = obj.find('difficult')
                box = obj.find('bndbox')
                # VOC pixel coordinates are 1-based; GluonCV's VOCDetection subtracts 1 and clips to the image
                xmin, ymin, xmax, ymax = (float(box.find(k).text) - 1 for k in ('xmin', 'ymin', 'xmax', 'ymax'))
                xmin, xmax = np.clip([xmin, xmax], 0, width - 1)
                ymin, ymax = np.clip([ymin, ymax], 0, height - 1)
                if not (xmax > xmin and ymax > ymin):
                    raise DataError(f'{xml_path}: object {name!r} has an empty box ({xmin}, {ymin}, {xmax}, '
                                    f'{ymax})')
                rows.append([xmin, ymin, xmax, ymax, self.classes.index(name),
                             int(diff.text) if diff is not None and diff.text else 0])
        except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
            raise DataError(f'{xml_path}: not a Pascal VOC annotation ({type(e).__name__}: {e})') from None
        return VOCItem(img_path, np.array(rows, np.float32).reshape(-1, 6))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int):
        item = self.items[idx]
        img = self._cache.get(idx) if self._cache is not None else None
        if img is None:
            img = mx.image.imread(item.image)
            if self._cache is not None:
                self._cache[idx] = img
        return img, item.label.copy()

    def num_boxes(self) -> int:
        return int(sum(len(item.label) for item in self.items))


# ----------------------------------------------------------------------------------------------------------------
# Models


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


def load_params(net: gluon.Block, path: str, ctx: list) -> None:
    if not os.path.isfile(path):
        raise ModelError(f'{path}: parameter file not found')
    try:
        net.load_parameters(path, ctx=ctx)
    except (AssertionError, mx.base.MXNetError, ValueError, RuntimeError) as e:
        first = [line for line in str(e).splitlines() if line.strip()]
        raise ModelError(f'{path}: does not fit this detector ({first[0][:300] if first else type(e).__name__})') \
            from None


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
        return [o.asnumpy() for o in _flat(out)]
    finally:
        masks_mod.clear_cached(net)


def _flat(out) -> list:
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _flat(o)]
    return [out]


# ----------------------------------------------------------------------------------------------------------------
# Data loaders (GluonCV's transforms and batchify functions)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _ssd_loaders(net, train_set, test_set, size: int, batch: int, test_batch: int, workers: int):
    # The training targets are made per batch in the loop (as GluonCV's train_ssd.py does with DALI), not per image
    # in the transform: one SSDTargetGenerator call per batch costs what one per image does (small nd operators).
    from gluoncv.data.batchify import Pad, Stack, Tuple as BTuple
    from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform, SSDDefaultValTransform
    train = gluon.data.DataLoader(train_set.transform(SSDDefaultTrainTransform(size, size, None, MEAN, STD)), batch,
                                  shuffle=True, batchify_fn=BTuple(Stack(), Pad(pad_val=-1)), last_batch='rollover',
                                  num_workers=workers, thread_pool=True)
    test = gluon.data.DataLoader(test_set.transform(SSDDefaultValTransform(size, size, MEAN, STD)), test_batch,
                                 shuffle=False, batchify_fn=BTuple(Stack(), Pad(pad_val=-1)), last_batch='keep',
                                 num_workers=workers, thread_pool=True)
    return train, test


def _yolo_loaders(net, train_set, test_set, size: int, batch: int, test_batch: int, workers: int):
    from gluoncv.data.batchify import Pad, Stack, Tuple as BTuple
    from gluoncv.data.transforms.presets.yolo import YOLO3DefaultTrainTransform, YOLO3DefaultValTransform
    stack = [Stack() for _ in range(6)] + [Pad(axis=0, pad_val=-1)]
    train = gluon.data.DataLoader(train_set.transform(YOLO3DefaultTrainTransform(size, size, net, mean=MEAN,
                                                                                 std=STD)),
                                  batch, shuffle=True, batchify_fn=BTuple(*stack), last_batch='rollover',
                                  num_workers=workers, thread_pool=True)
    test = gluon.data.DataLoader(test_set.transform(YOLO3DefaultValTransform(size, size, MEAN, STD)), test_batch,
                                 shuffle=False, batchify_fn=BTuple(Stack(), Pad(pad_val=-1)), last_batch='keep',
                                 num_workers=workers, thread_pool=True)
    return train, test


LOADERS = {'ssd': _ssd_loaders, 'yolo3': _yolo_loaders}


def build_loaders(name: str, net, train_set: VOCFolder, test_set: VOCFolder, size: int, batch: int,
                  test_batch: int, workers: int = 0):
    """(train loader, test loader) with GluonCV's train/validation transforms for the detector family."""
    return LOADERS[family(name)](net, train_set, test_set, size, batch, test_batch, workers)


# ----------------------------------------------------------------------------------------------------------------
# Training (as GluonCV's train_ssd.py / train_yolo3.py) and evaluation


def _ssd_step(net, batch, ctx, state):
    from gluoncv.loss import SSDMultiBoxLoss
    from gluoncv.model_zoo.ssd.target import SSDTargetGenerator
    if 'loss' not in state:
        with autograd.train_mode():
            _, _, anchors = net(mx.nd.zeros((1,) + tuple(batch[0].shape[1:]), ctx=ctx[0]))
        state['anchors'] = [anchors.as_in_context(c) for c in ctx]
        state['targets'] = SSDTargetGenerator(iou_thresh=0.5, stds=(0.1, 0.1, 0.2, 0.2), negative_mining_ratio=-1)
        state['loss'] = SSDMultiBoxLoss()
    xs, labels = (gluon.utils.split_and_load(b, ctx, even_split=False) for b in batch)
    cls_t, box_t = [], []
    for anchors, y in zip(state['anchors'], labels):
        c, b, _ = state['targets'](anchors, None, y.slice_axis(axis=-1, begin=0, end=4),
                                   y.slice_axis(axis=-1, begin=4, end=5))
        cls_t.append(c)
        box_t.append(b)
    with autograd.record():
        cls_preds, box_preds = [], []
        for x in xs:
            c, b, _ = net(x)
            cls_preds.append(c)
            box_preds.append(b)
        total, cls_loss, box_loss = state['loss'](cls_preds, box_preds, cls_t, box_t)
        autograd.backward(total)
    # SSDMultiBoxLoss is already normalised by the positive anchors: GluonCV steps with batch size 1
    return 1, {'cls': sum(v.sum() for v in cls_loss), 'box': sum(v.sum() for v in box_loss)}


def _yolo_step(net, batch, ctx, state):
    parts = [gluon.utils.split_and_load(b, ctx, even_split=False) for b in batch]
    xs, targets, gt_boxes = parts[0], parts[1:6], parts[6]
    with autograd.record():
        losses, named = [], {'obj': 0, 'center': 0, 'scale': 0, 'cls': 0}
        for i, x in enumerate(xs):
            obj, center, scale, cls = net(x, gt_boxes[i], *[t[i] for t in targets])
            losses.append(obj + center + scale + cls)
            for k, v in zip(named, (obj, center, scale, cls)):
                named[k] = named[k] + v.sum()
        autograd.backward(losses)
    return batch[0].shape[0], named


STEPS = {'ssd': _ssd_step, 'yolo3': _yolo_step}


def train(net, name: str, loader, cfg, ctx: Sequence[mx.Context], *, start_epoch: int = 0,
          until: Optional[int] = None, hooks: Iterable = (), trainer: Optional[gluon.Trainer] = None,
          log: Optional[Callable[[dict], None]] = None, phase: str = 'train',
          on_epoch: Optional[Callable[[int], Optional[dict]]] = None) -> gluon.Trainer:
    """Trains a detector through epochs [start_epoch, until or cfg.epochs) of cfg (a TrainConfig): GluonCV's targets,
    loss and step; mxprune's optimizer and learning-rate schedule over cfg.epochs; the pruning Session (or any
    Hooks) around each update. Returns the trainer (build a new one after shrinking)."""
    from . import train as train_mod
    step_fn = STEPS[family(name)]
    hooks = list(hooks)
    trainer = trainer or train_mod.make_trainer(net, cfg, ctx)
    steps = len(loader)
    state: Dict[str, Any] = {}
    # GluonCV detectors pick their outputs (and YOLOv3 its inputs) by autograd.is_training() when a hybridized graph
    # is built, and one graph is cached: drop an inference graph before training on it (GluonCV re-hybridizes too).
    masks_mod.clear_cached(net)
    for epoch in range(start_epoch, cfg.epochs if until is None else min(until, cfg.epochs)):
        train_mod.seed_epoch(cfg.seed, epoch)
        random.seed((cfg.seed * 100003 + epoch + 1) % (2 ** 31))  # GluonCV's box crops draw from Python's random
        tic, seen, sums = time.time(), 0, {}
        bar = progress.bar(loader, desc=f'{phase} {epoch + 1}/{cfg.epochs}', total=len(loader))
        for b, batch in enumerate(bar):
            trainer.set_learning_rate(train_mod.lr_at(cfg, epoch * steps + b, steps))
            scale, losses = step_fn(net, batch, ctx, state)
            for h in hooks:
                h.before_update(batch[0].shape[0])
            trainer.step(scale)
            for h in hooks:
                h.after_update()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v
            seen += batch[0].shape[0]
        mx.nd.waitall()
        bar.close()
        row = {'phase': phase, 'epoch': epoch, 'lr': trainer.learning_rate, 'images_per_s': seen / (time.time() - tic),
               **{f'loss_{k}': float(v.asscalar()) / steps for k, v in sums.items()}}
        bad = [k for k, v in row.items() if k.startswith('loss_') and not np.isfinite(v)]
        if bad:
            raise NumericsError(f'{phase}: {bad[0]} is {row[bad[0]]} in epoch {epoch}; lower the learning rate')
        if on_epoch is not None:
            row.update(on_epoch(epoch) or {})
        if log is not None:
            log(row)
    return trainer


def evaluate(net, loader, ctx: Sequence[mx.Context], classes: Sequence[str], *, metric: str = 'voc07',
             iou_thresh: float = 0.5, nms_thresh: float = 0.45, nms_topk: int = 400, post_nms: int = 100) -> dict:
    """VOC mAP (GluonCV's VOC07MApMetric: 11-point, or VOCMApMetric: area) at `iou_thresh`, as train_ssd.py's
    validate(): NMS on, boxes clipped to the input, difficult objects ignored. Returns the mAP, per class AP and
    the number of images."""
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric, VOCMApMetric
    m = METRICS[metric](VOC07MApMetric, VOCMApMetric)(iou_thresh=iou_thresh, class_names=list(classes))
    old = (net.nms_thresh, net.nms_topk, net.post_nms) if hasattr(net, 'set_nms') else None
    if old:  # a reloaded export (SymbolBlock) keeps the NMS settings it was exported with
        net.set_nms(nms_thresh=nms_thresh, nms_topk=nms_topk, post_nms=post_nms)
    n = 0
    try:
        for batch in progress.bar(loader, desc='mAP', total=len(loader)):
            xs = gluon.utils.split_and_load(batch[0], ctx, even_split=False)
            ys = gluon.utils.split_and_load(batch[1], ctx, even_split=False)
            det_b, det_i, det_s, gt_b, gt_i, gt_d = [], [], [], [], [], []
            for x, y in zip(xs, ys):
                ids, scores, bboxes = net(x)
                det_i.append(ids)
                det_s.append(scores)
                det_b.append(bboxes.clip(0, batch[0].shape[2]))
                gt_i.append(y.slice_axis(axis=-1, begin=4, end=5))
                gt_b.append(y.slice_axis(axis=-1, begin=0, end=4))
                gt_d.append(y.slice_axis(axis=-1, begin=5, end=6) if y.shape[-1] > 5 else None)
            m.update(det_b, det_i, det_s, gt_b, gt_i, gt_d)
            n += batch[0].shape[0]
    finally:
        if old:
            net.set_nms(nms_thresh=old[0], nms_topk=old[1], post_nms=old[2])
    names, values = m.get()
    names, values = (names, values) if isinstance(names, list) else ([names], [values])
    per_class = {k: float(v) for k, v in zip(names, values) if k != 'mAP'}
    return {'map': float(values[names.index('mAP')]), 'per_class': per_class, 'images': n, 'metric': metric,
            'iou_thresh': iou_thresh}


METRICS = {'voc07': lambda v07, v: v07, 'voc': lambda v07, v: v}


# ----------------------------------------------------------------------------------------------------------------
# Pruning the backbone: MACs by part, a MACs target over the backbone only


def parts_of(graph: DependencyGraph, backbone: Sequence[str]) -> Dict[str, List[str]]:
    """Layer paths of the weighted layers, split into 'backbone' (matching a glob) and 'heads' (the rest)."""
    out = {'backbone': [], 'heads': []}
    for layer in graph.weighted_layers():
        key = 'backbone' if any(match(p, (layer.path, layer.block.name)) for p in backbone) else 'heads'
        out[key].append(layer.path)
    return out


def macs_by_part(graph: DependencyGraph, backbone: Sequence[str]) -> Dict[str, int]:
    """Dense MACs of the traced net: whole net, backbone layers, the rest (predictor heads)."""
    per = flops_mod.dense(graph).per_layer
    parts = parts_of(graph, backbone)
    return {'net': int(sum(per.values())), **{k: int(sum(per[p] for p in v)) for k, v in parts.items()}}


class BackboneMacs(PruningModifier):
    """A PruningModifier whose `macs` target counts only the backbone layers' MACs (the layers matching globs):
    {'macs': 0.5} keeps half of the backbone's MACs, whatever the heads cost."""

    def __init__(self, backbone: Sequence[str], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.backbone = tuple(backbone)
        self._paths: Optional[frozenset] = None

    @classmethod
    def wrap(cls, mod: PruningModifier, backbone: Sequence[str]) -> 'BackboneMacs':
        """The same modifier (criterion, schedule, selection, ...) with its MACs target over the backbone."""
        new = cls.__new__(cls)
        new.__dict__.update(mod.__dict__)
        new.backbone, new._paths = tuple(backbone), None
        return new

    def bind(self, graph: DependencyGraph, gpu: bool = False) -> None:
        super().bind(graph, gpu)
        self._paths = frozenset(parts_of(graph, self.backbone)['backbone'])
        if not self._paths:
            raise MxPruneError(f'detection.backbone: {list(self.backbone)} matches no Conv/Dense layer path')

    def cost_model(self, session):
        """A macs target counts the backbone's MACs only; other targets as a PruningModifier counts them."""
        if self.target.kind != 'macs':
            return super().cost_model(session)
        if self._cost is None:
            from .flops import MacsCost
            self._cost = MacsCost(session.graph, layers=self._paths)
        return self._cost


# ----------------------------------------------------------------------------------------------------------------
# Speed


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
    from .export import max_abs_diff
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

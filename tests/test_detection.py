"""Detection: SymbolBlock backbones made native, detector graphs (anchors, decoding, NMS frozen), shrink == masked on
GluonCV SSD / YOLOv3, the VOC reader, the detection recipe section. The zoo detectors at full size are marked slow:
python -m pytest -m slow -k detection."""
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon
from mxnet.gluon import nn

import mxprune as mp
from mxprune import detection as D
from mxprune import flops
from mxprune import recipe as R
from mxprune.errors import DataError, RecipeError
from mxprune.graph import DependencyGraph

from conftest import run_tool


@pytest.fixture(scope='module')
def raccoon(raccoon_root):
    return raccoon_root


# ------------------------------------------------------------------------------------------ a tiny detector


def _features() -> gluon.SymbolBlock:
    """A SymbolBlock backbone as GluonCV's FeatureExpander builds them: raw symbols, default BatchNorm attributes
    (fix_gamma, eps 1e-3) on one layer, a depthwise conv, a residual add, two feature-map outputs."""
    data = mx.sym.var('data')
    x = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1), name='t_conv0')
    x = mx.sym.Activation(mx.sym.BatchNorm(x, name='t_bn0'), act_type='relu')
    y = mx.sym.Convolution(x, num_filter=8, kernel=(3, 3), pad=(1, 1), num_group=8, no_bias=True, name='t_dw1')
    y = mx.sym.Activation(mx.sym.BatchNorm(y, fix_gamma=False, eps=1e-5, name='t_bn1'), act_type='relu')
    y = mx.sym.Convolution(y, num_filter=8, kernel=(1, 1), no_bias=True, name='t_pw1')
    f1 = mx.sym.Activation(x + y, act_type='relu')
    z = mx.sym.Convolution(f1, num_filter=12, kernel=(3, 3), stride=(2, 2), pad=(1, 1), no_bias=True, name='t_conv2')
    f2 = mx.sym.Activation(mx.sym.BatchNorm(z, fix_gamma=False, name='t_bn2'), act_type='relu')
    return gluon.SymbolBlock(mx.sym.Group([f1, f2]), data)


class TinyDetector(gluon.HybridBlock):
    """Predictor convs on two feature maps, NHWC-flattened as SSD does; anchors cut to the map size by slice_like."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.features = _features()
            self.heads = nn.HybridSequential()
            self.heads.add(nn.Conv2D(6, 3, padding=1), nn.Conv2D(6, 3, padding=1))
            self.anchors = self.params.get_constant('anchors', np.random.RandomState(0).uniform(size=(1, 4, 16, 16)))

    def hybrid_forward(self, F, x, anchors):
        feats = self.features(x)
        preds = [F.flatten(F.transpose(h(f), (0, 2, 3, 1))) for f, h in zip(feats, self.heads)]
        boxes = F.slice_like(anchors, feats[0] * 0, axes=(2, 3)).reshape((1, -1))
        return F.concat(*preds, dim=1), boxes


def _tiny():
    net = TinyDetector()
    D.initialize(net, [mx.cpu()])
    net(mx.nd.zeros((1, 3, 16, 16)))
    rng = np.random.RandomState(1)
    for name, p in net.collect_params().items():  # BN statistics and affine terms away from their defaults
        if name.endswith(('gamma', 'moving_var', 'running_var')):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))
        elif name.endswith(('beta', 'moving_mean', 'running_mean')):
            p.set_data(mx.nd.array(rng.uniform(-0.3, 0.3, p.shape)))
    return net


def _outputs(net, x):
    return [o.asnumpy() for o in net(x)]


def test_native_replaces_the_symbolblock_with_gluon_layers_and_computes_the_same():
    net = _tiny()
    x = mx.nd.array(np.random.RandomState(2).uniform(-1, 1, (2, 3, 16, 16)))
    before = _outputs(net, x)
    names = {p.name for p in net.features.collect_params().values() if p.name.endswith('weight')}
    D.native(net, (1, 3, 16, 16))
    assert isinstance(net.features, D.SymbolGraph) and not isinstance(net.features, gluon.SymbolBlock)
    kinds = {k: type(c).__name__ for k, c in net.features._children.items()}
    assert kinds == {'conv0': 'Conv2D', 'bn0': 'BatchNorm', 'dw1': 'Conv2D', 'bn1': 'BatchNorm', 'pw1': 'Conv2D',
                     'conv2': 'Conv2D', 'bn2': 'BatchNorm'}
    assert names == {p.name for p in net.features.collect_params().values() if p.name.endswith('weight')}
    bn0 = net.features._children['bn0']
    assert bn0._kwargs['fix_gamma'] is True and bn0._kwargs['eps'] == 1e-3  # the operator's defaults, not Gluon's
    for got, want in zip(_outputs(net, x), before):
        np.testing.assert_array_equal(got, want)
    net.hybridize()
    for got, want in zip(_outputs(net, x), before):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_tiny_detector_graph_couples_backbone_and_heads_and_freezes_predictions():
    net = D.native(_tiny(), (1, 3, 16, 16))
    g = DependencyGraph.trace(net, (1, 3, 16, 16))
    assert not g.unsupported  # transpose and slice_like have rules now
    trunk = g.group_of('features.pw1')
    assert g.group_of('features.conv0') is trunk and not trunk.frozen  # residual add; slice_like froze nothing
    assert any(m.layer.path == 'heads.0' and m.role == 'in' for m in trunk.members)
    assert 'moves the channel axis' in g.group_of('heads.0').frozen
    assert trunk.name == 'features.conv0:out' and g.group_of('features.dw1', 'out') is trunk  # depthwise: one space
    assert {grp.name for grp in g.prunable_groups()} == {'features.conv2:out'}  # conv0 reads the input
    assert {grp.name for grp in g.prunable_groups(mp.Selection(skip_first=False))} == {trunk.name,
                                                                                      'features.conv2:out'}


def test_tiny_detector_shrinks_to_the_masked_outputs():
    net = D.native(_tiny(), (1, 3, 16, 16))
    x = mx.nd.array(np.random.RandomState(3).uniform(-1, 1, (2, 3, 16, 16)))
    net.hybridize()
    mod = mp.PruningModifier('l2', target=0.5, selection=mp.Selection(include=('features.*',), skip_first=False))
    s = mp.Session(net, (1, 3, 16, 16), 10, [mod])
    s.prune_now()
    masked = _outputs(net, x)
    small, plan = s.finalize()
    assert plan.groups and all(len(v['keep']) < v['size'] for v in plan.groups.values())
    for got, want in zip(_outputs(small, x), masked):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert flops.dense(DependencyGraph.trace(small, (1, 3, 16, 16))).macs == s.sparsity()['shrunk_macs']


def test_symbolgraph_refuses_what_it_cannot_replay():
    data = mx.sym.var('data')
    bn = mx.sym.BatchNorm(data, output_mean_var=True, name='bn')
    sym = mx.sym.Group([bn[0], mx.sym.BlockGrad(bn[1])])
    sb = gluon.SymbolBlock(sym, data)
    sb.initialize()
    sb(mx.nd.zeros((1, 2, 3, 3)))
    with pytest.raises(mp.ModelError, match='only a layer\'s first output'):
        D.to_native(sb)


# ------------------------------------------------------------------------------------------ GluonCV detectors


def _calibrate(net, x):
    """BatchNorm running statistics set to one batch's (hooks on an imperative training-mode pass), so that a
    random-init detector gives finite, well-scaled outputs in inference mode too."""
    def hook(block, inputs, output):
        a = inputs[0]
        mean = a.mean(axis=(0, 2, 3))
        block.running_mean.set_data(mean)
        block.running_var.set_data(((a - mean.reshape((1, -1, 1, 1))) ** 2).mean(axis=(0, 2, 3)))
    handles = [b.register_forward_hook(hook) for b in _blocks(net) if isinstance(b, nn.BatchNorm)]
    D.train_outputs(net, x)
    for h in handles:
        h.detach()


def _tame_heads(net, shape):
    """Random predictor convs give YOLOv3 box-scale logits near 30, whose exp() turns float rounding into
    relative errors of 0.2 on the decoded boxes: scale the predictors (outputs frozen by the NHWC transpose) down."""
    for g in DependencyGraph.trace(net, shape).groups:
        for m in g.producers if g.frozen and 'moves the channel axis' in g.frozen else []:
            w = m.layer.params['weight']
            w.set_data(w.data() * 0.05)


def _blocks(block):
    yield block
    for c in block._children.values():
        yield from _blocks(c)


def check_detector(name, size, target=0.5, export_dir=None, thorough=True):
    """Prunes the backbone to `target` of its MACs; the shrunk detector's raw outputs (inference without NMS; with
    `thorough` also training-mode heads, after BatchNorm calibration) equal the masked one's; MACs agree with the
    prediction; optional export round trip."""
    from gluoncv import model_zoo
    shape = (1, 3, size, size)
    net = model_zoo.get_model(name, classes=['raccoon', 'dog'], pretrained_base=False)
    D.initialize(net, [mx.cpu()], seed=0)
    D.native(net, shape)
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (2, 3, size, size)))
    if thorough:
        _calibrate(net, x)
    _tame_heads(net, shape)
    net.hybridize()
    backbone = D.backbone_of(name)
    mod = mp.PruningModifier('l2', scope='global', target={'macs': target}, round_to=8,
                             selection=mp.Selection(include=backbone), macs_layers=D.backbone_selection(backbone))
    s = mp.Session(net, shape, 10, [mod])
    assert not s.graph.unsupported, s.graph.unsupported
    dense_parts = D.macs_by_part(s.graph, backbone)
    s.prune_now()
    masked, masked_train = D.raw_outputs(net, x), D.train_outputs(net, x) if thorough else []
    small, plan = s.finalize()
    small.hybridize()
    for got, want in zip(D.raw_outputs(small, x), masked):
        assert np.isfinite(want).mean() > 0.99
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    for got, want in zip(D.train_outputs(small, x) if thorough else [], masked_train):
        # looser: batch statistics over the 1x1 maps of two images amplify rounding
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * max(1.0, float(np.abs(want).max())))
    parts = D.macs_by_part(DependencyGraph.trace(small, shape), backbone)
    assert parts['net'] == s.sparsity()['shrunk_macs']
    assert target - 0.1 < parts['backbone'] / dense_parts['backbone'] <= target + 1e-9
    if export_dir is not None:
        files = mp.export_symbol(small, os.path.join(export_dir, 'det'), (1, 3, size, size))
        assert float(files['max_abs_diff']) <= 1e-4
    return plan


def test_ssd_mobilenet_tiny_input_shrinks_to_the_masked_outputs_and_exports(tmp_path):
    plan = check_detector('ssd_300_mobilenet0.25_custom', 128, export_dir=str(tmp_path), thorough=False)
    assert len(plan.groups) >= 15
    exported = mp.load_exported(str(tmp_path / 'det'))
    outs = exported(mx.nd.zeros((1, 3, 128, 128)))
    assert [o.shape for o in outs] == [(1, 100, 1), (1, 100, 1), (1, 100, 4)]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize('name, size', [('ssd_300_mobilenet0.25_custom', 300), ('ssd_512_resnet50_v1_custom', 512),
                                        ('yolo3_mobilenet1.0_custom', 416), ('yolo3_darknet53_custom', 416)])
def test_detection_zoo_shrinks_to_the_masked_outputs(name, size, tmp_path):
    check_detector(name, size, export_dir=str(tmp_path))


# ------------------------------------------------------------------------------------------ data


def test_voc_reader_on_raccoon(raccoon):
    train = D.VOCFolder(raccoon, 'train', ['raccoon'], skip_empty=True)
    test = D.VOCFolder(raccoon, 'test', ['raccoon'])
    assert (len(train), len(test)) == (160, 40)
    assert train.num_boxes() + test.num_boxes() == 217  # README: 217 boxes in 200 images
    img, label = test[0]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert label.shape[1] == 6 and (label[:, 4] == 0).all() and set(label[:, 5]) <= {0.0, 1.0}
    h, w = img.shape[:2]
    assert (label[:, 0] >= 0).all() and (label[:, 2] <= w - 1).all() and (label[:, 3] <= h - 1).all()
    assert (label[:, 2] > label[:, 0]).all() and (label[:, 3] > label[:, 1]).all()


def test_voc_reader_errors(raccoon, tmp_path):
    with pytest.raises(DataError, match='does not exist'):
        D.VOCFolder(str(tmp_path / 'none'), 'train', ['raccoon'])
    with pytest.raises(DataError, match='image list of split'):
        D.VOCFolder(raccoon, 'val', ['raccoon'])
    with pytest.raises(DataError, match="no image holds an object of the classes \\['cat'\\]"):
        D.VOCFolder(raccoon, 'test', ['cat'], skip_empty=True)
    assert D.VOCFolder(raccoon, 'test', ['cat']).num_boxes() == 0  # evaluation keeps images without objects
    bad = tmp_path / 'voc'
    (bad / 'ImageSets' / 'Main').mkdir(parents=True)
    (bad / 'ImageSets' / 'Main' / 'train.txt').write_text('a\n')
    with pytest.raises(DataError, match='a.xml: listed in ImageSets/Main/train.txt but missing'):
        D.VOCFolder(str(bad), 'train', ['x'])


class Counter:
    """Hooks that count the updates a training loop reports."""

    def __init__(self):
        self.before, self.after = [], 0

    def before_update(self, batch_size):
        self.before.append(batch_size)

    def after_update(self):
        self.after += 1


def _subset(ds, n):
    ds.items = ds.items[:n]
    return ds


def test_ssd_loaders_training_steps_and_evaluation_contract(raccoon):
    """GluonCV's transforms through our reader (batch shapes, padded labels); two training steps with hooks and
    finite losses; the mAP of a detector that returns the ground truth is 1."""
    name = 'ssd_300_mobilenet0.25_custom'
    test = D.VOCFolder(raccoon, 'test', ['raccoon'])
    train = _subset(D.VOCFolder(raccoon, 'train', ['raccoon'], skip_empty=True), 8)
    net = D.build_detector(name, ['raccoon'], 128)
    net.hybridize(static_alloc=True, static_shape=True)
    tr, te = D.build_loaders(name, net, train, test, 128, 4, 8, workers=1)
    x, y = next(iter(tr))
    assert x.shape == (4, 3, 128, 128) and y.shape[0] == 4 and y.shape[2] >= 5
    x, y = next(iter(te))
    assert x.shape == (8, 3, 128, 128) and y.shape[2] == 6
    rows, hooks = [], Counter()
    D.train(net, name, tr, R.TrainConfig(epochs=1, lr=0.01), [mx.cpu()], hooks=[hooks], log=rows.append)
    assert hooks.before == [4, 4] and hooks.after == 2
    assert np.isfinite(rows[0]['loss_cls']) and np.isfinite(rows[0]['loss_box'])
    assert 0.0 <= D.evaluate(net, te, [mx.cpu()], ['raccoon'])['map'] <= 1.0

    class Oracle(gluon.Block):  # returns the ground truth of the batch it is given, as detections
        def __init__(self, batches):
            super().__init__()
            self.batches = iter(batches)

        def forward(self, x):
            y = next(self.batches)[1]
            return y[:, :, 4:5], mx.nd.ones_like(y[:, :, 4:5]) * (y[:, :, 4:5] >= 0), y[:, :, :4]
    r = D.evaluate(Oracle(list(te)), te, [mx.cpu()], ['raccoon'])
    assert r['map'] == pytest.approx(1.0) and r['images'] == 40


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_detection_yolo_training_steps_and_evaluation(raccoon):
    name = 'yolo3_mobilenet1.0_custom'
    train = _subset(D.VOCFolder(raccoon, 'train', ['raccoon'], skip_empty=True), 8)
    test = _subset(D.VOCFolder(raccoon, 'test', ['raccoon']), 8)
    net = D.build_detector(name, ['raccoon'], 160)
    net.hybridize(static_alloc=True, static_shape=True)
    tr, te = D.build_loaders(name, net, train, test, 160, 4, 4, workers=1)
    rows, hooks = [], Counter()
    D.train(net, name, tr, R.TrainConfig(epochs=1, lr=0.001), [mx.cpu()], hooks=[hooks], log=rows.append)
    assert hooks.before == [4, 4] and all(np.isfinite(v) for k, v in rows[0].items() if k.startswith('loss_'))
    assert set(k for k in rows[0] if k.startswith('loss_')) == {'loss_obj', 'loss_center', 'loss_scale', 'loss_cls'}
    assert D.evaluate(net, te, [mx.cpu()], ['raccoon'])['images'] == 8


@pytest.mark.slow
@pytest.mark.timeout(2700)  # two tool runs of up to 1200 s each
def test_detection_tool_end_to_end(raccoon, tmp_path):
    """tools/detect.py on the raccoon set at a small input for one epoch each: the report has what the issue asks."""
    out = run_tool(['tools/detect.py', '--recipe', 'recipes/raccoon_ssd_l2.yaml', '--data-dir', raccoon, '--out',
                    str(tmp_path / 'run'), '--quiet', '--set', 'train.epochs=1', '--set', 'finetune.epochs=1',
                    '--set', 'train.warmup_epochs=0', '--set', 'model.input_size=128', '--set',
                    'benchmark.batches=[1]', '--set', 'benchmark.repeats=1'], timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    import json
    r = json.loads((tmp_path / 'run' / 'report.json').read_text())
    assert set(r['dense']) == set(r['pruned']) == {'map', 'macs', 'backbone_macs', 'head_macs', 'params'}
    assert 0.4 < r['ratios']['backbone_macs'] <= 0.5 and r['ratios']['macs'] < 1
    assert r['export']['map'] == pytest.approx(r['pruned']['map'], abs=1e-6)
    assert r['speed']['batches']['1']['speedup'] > 0 and r['wall_time_s'] > 0
    again = run_tool(['tools/detect.py', '--recipe', 'recipes/raccoon_ssd_l2.yaml', '--data-dir', raccoon, '--out',
                      str(tmp_path / 'run'), '--quiet'])
    assert again.returncode == 2 and 'already exists' in again.stderr


# ------------------------------------------------------------------------------------------ recipe and tool

MIN = {'version': 1, 'model': {'name': 'ssd_300_mobilenet0.25_custom', 'input_size': 300},
       'data': {'dataset': 'voc'}, 'detection': {'classes': ['raccoon']}}


def test_detection_recipe_section():
    r = R.from_mapping(dict(MIN))
    assert r.detection.classes == ['raccoon'] and r.detection.metric == 'voc07' and r.detection.backbone is None
    assert R.from_mapping(R.to_dict(r)) == r
    assert R.from_mapping({'version': 1, 'model': {'name': 'x'}}).detection is None


@pytest.mark.parametrize('raw, needle', [
    ({**MIN, 'detection': None}, 'detection: None is not allowed with data.dataset voc'),
    ({**MIN, 'data': {'dataset': 'cifar10'}}, "data.dataset: 'cifar10' is not allowed with a detection section"),
    ({**MIN, 'detection': {'classes': []}}, 'detection.classes: [] is not allowed; expected a non-empty list'),
    ({**MIN, 'detection': {'classes': ['a', 'a']}}, "detection.classes: ['a', 'a'] is not allowed"),
    ({**MIN, 'detection': {'classes': ['a'], 'metric': 'coco'}}, "detection.metric: 'coco' is not allowed"),
    ({**MIN, 'detection': {'classes': ['a'], 'macs_of': 'heads'}}, "detection.macs_of: 'heads' is not allowed"),
])
def test_detection_recipe_errors(raw, needle):
    with pytest.raises(RecipeError) as e:
        R.from_mapping(raw, 'r.yaml')
    assert needle in str(e.value) and '\n' not in str(e.value), str(e.value)


def test_detect_tool_refuses_a_classification_recipe_in_one_line():
    out = run_tool(['tools/detect.py', '--recipe', 'recipes/quickstart.yaml'])
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and 'detection: missing' in out.stderr

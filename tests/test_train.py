import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from conftest import run_tool
from mxprune import data as D
from mxprune import train as T
from mxprune.errors import NumericsError, RecipeError
from mxprune.recipe import TrainConfig


def test_lr_schedule_shapes():
    cfg = TrainConfig(epochs=4, lr=0.4, warmup_epochs=1, final_lr=0.0)
    lrs = [T.lr_at(cfg, s, 10) for s in range(40)]
    assert lrs[0] == pytest.approx(0.04) and lrs[9] == pytest.approx(0.4)
    assert all(b <= a + 1e-12 for a, b in zip(lrs[10:], lrs[11:]))  # cosine decays monotonically
    assert lrs[-1] < 0.01
    step = TrainConfig(epochs=4, lr=0.1, lr_schedule='step', lr_steps=[2, 3], lr_factor=0.1)
    assert [round(T.lr_at(step, s, 10), 6) for s in (0, 19, 20, 30)] == [0.1, 0.1, 0.01, 0.001]


def test_parse_ctx():
    assert T.parse_ctx('cpu') == [mx.cpu(0)]
    assert T.parse_ctx('cpu:0,1') == [mx.cpu(0), mx.cpu(1)]
    if mx.context.num_gpus() == 0:
        with pytest.raises(RecipeError, match="gpu 0 is not available"):
            T.parse_ctx('gpu:0')
    for bad in ('tpu', 'gpu:x'):
        with pytest.raises(RecipeError):
            T.parse_ctx(bad)


def _tiny_net():
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(8, 3, padding=1), gluon.nn.BatchNorm(), gluon.nn.Activation('relu'),
            gluon.nn.AvgPool2D(8), gluon.nn.Dense(4))  # 2x2 cells keep the quadrant
    net.initialize(mx.init.Xavier())
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def _blob_set(n=256, seed=0):
    """Four classes told apart by which quadrant is bright: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n).astype(np.int32)
    images = rng.integers(0, 60, (n, 16, 16, 3)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        images[i, r * 8:(r + 1) * 8, q * 8:(q + 1) * 8] += 150
    return D.ImageSet(images, labels, 'blobs')


def _fit(net, data, cfg, run_dir, *hooks):
    """fit as a tool runs it: a Trainer from make_trainer, checkpoints under run_dir/ckpt."""
    fit_cfg = T.FitConfig(cfg, [mx.cpu()], classes=4, progress=False)
    return T.fit(net, lambda: T.make_trainer(net, cfg, [mx.cpu()]), data, fit_cfg,
                 [T.Checkpoints(str(run_dir), 'train'), *hooks])


def test_training_lowers_loss_and_learns_and_metrics_are_right(tmp_path):
    mx.random.seed(0)
    net = _tiny_net()
    aug = D.BatchAugment(D.CIFAR_MEAN, D.CIFAR_STD, crop_pad=1)  # no flip: the classes are left/right quadrants
    train = D.ArrayLoader(_blob_set(), 32, aug, train=True, classes=4)
    test = D.ArrayLoader(_blob_set(64, 1), 32, D.BatchAugment(D.CIFAR_MEAN, D.CIFAR_STD), train=False, classes=4)
    cfg = TrainConfig(epochs=4, lr=0.1, log_interval=2)
    hist = _fit(net, (train, test), cfg, tmp_path)
    assert hist[-1]['train_loss'] < hist[0]['train_loss']
    assert hist[-1]['test_top1'] > 0.8
    # the on-device metric sums agree with a plain numpy evaluation
    ev = T.evaluate(net, test, [mx.cpu()])
    xs, ys = zip(*test.batches(0))
    logits = np.concatenate([net(mx.nd.array(x)).asnumpy() for x in xs])
    y = np.concatenate(ys)
    assert ev['top1'] == pytest.approx((logits.argmax(1) == y).mean())
    top4 = np.argsort(-logits, 1)[:, :4]
    assert ev['top5'] == pytest.approx(1.0) and (top4 == y[:, None]).any(1).all()


def test_nan_loss_stops_with_step(tmp_path):
    net = _tiny_net()
    aug = D.BatchAugment(D.CIFAR_MEAN, D.CIFAR_STD)
    train = D.ArrayLoader(_blob_set(), 32, aug, train=True, classes=4)
    cfg = TrainConfig(epochs=1, lr=0.1, log_interval=1)
    net(mx.nd.zeros((1, 3, 16, 16)))  # finish deferred initialisation
    dense = [p for name, p in net.collect_params().items() if 'dense' in name and name.endswith('weight')][0]
    dense.set_data(dense.data() * float('nan'))  # (NaN in a conv before ReLU would be zeroed by oneDNN's ReLU)
    with pytest.raises(NumericsError, match=r'the training loss is nan at step 0 \(epoch 0\); stopping; no check'):
        _fit(net, (train, None), cfg, tmp_path)


def test_nan_weights_stop_at_the_epoch_end_with_the_last_checkpoint(tmp_path):
    net = _tiny_net()
    aug = D.BatchAugment(D.CIFAR_MEAN, D.CIFAR_STD)
    train = D.ArrayLoader(_blob_set(), 32, aug, train=True, classes=4)
    cfg = TrainConfig(epochs=2, lr=0.1, log_interval=1)

    class Poison(T.Hooks):  # running statistics do not touch the training loss: only the weight check sees this
        def on_epoch_end(self, epoch):
            if epoch == 1:
                var = [p for name, p in net.collect_params().items() if name.endswith('running_var')][0]
                var.set_data(var.data() * float('nan'))
    with pytest.raises(NumericsError, match=r'weight norms is nan at step 15 \(epoch 1\); stopping; the last good '
                                            r'checkpoint is .*train-e0000'):
        _fit(net, (train, None), cfg, tmp_path, Poison())
    assert json.load(open(tmp_path / 'ckpt' / 'train.json'))['epoch'] == 0


def test_optimizer_states_round_trip(tmp_path):
    net = _tiny_net()
    cfg = TrainConfig(epochs=1, lr=0.1)
    tr = T.make_trainer(net, cfg, [mx.cpu()])
    x = mx.nd.random.uniform(shape=(4, 3, 16, 16))
    with mx.autograd.record():
        loss = net(x).sum()
    loss.backward()
    tr.step(4)
    states = T.optimizer_states(tr)
    assert states and all(np.abs(v.asnumpy()).sum() > 0 for v in states.values())
    tr2 = T.make_trainer(net, cfg, [mx.cpu()])
    T.load_optimizer_states(tr2, states)
    for k, v in T.optimizer_states(tr2).items():
        assert np.array_equal(v.asnumpy(), states[k].asnumpy())


RESUME_SETS = ['data.train_limit=384', 'data.test_limit=128', 'data.batch_size=64', 'train.epochs=3',
               'train.log_interval=2']


def _train_args(out, resume=False):
    args = ['tools/train.py', '--recipe', 'recipes/quickstart.yaml', '--out', str(out), '--quiet']
    for s in RESUME_SETS:
        args += ['--set', s]
    return args + (['--resume'] if resume else [])


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_killed_run_resumes_to_the_same_parameters(tmp_path, cifar_root):
    env = {'MXPRUNE_DATA': cifar_root}
    full = run_tool(_train_args(tmp_path / 'full'), env)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = run_tool(['tests/kill_at.py', 'dense:1:3', *_train_args(tmp_path / 'cut')], env)
    assert killed.returncode == -9  # SIGKILL, mid-epoch 1
    pointer = json.load(open(tmp_path / 'cut' / 'ckpt' / 'dense.json'))
    assert pointer['epoch'] == 0 and not (tmp_path / 'cut' / 'dense.params').exists()
    again = run_tool(_train_args(tmp_path / 'cut'), env)
    assert again.returncode == 2 and 'pass --resume' in again.stderr and 'Traceback' not in again.stderr
    resumed = run_tool(_train_args(tmp_path / 'cut', resume=True), env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = mx.nd.load(str(tmp_path / 'full' / 'dense.params'))
    b = mx.nd.load(str(tmp_path / 'cut' / 'dense.params'))
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k].asnumpy() - b[k].asnumpy()).max()) for k in a)
    assert worst == 0.0, worst
    rows = [json.loads(line) for line in open(tmp_path / 'cut' / 'log.jsonl')]
    assert [r['epoch'] for r in rows if r.get('phase') == 'dense'] == [0, 1, 2]
    assert json.load(open(tmp_path / 'full' / 'report.json'))['test_top1'] == \
        json.load(open(tmp_path / 'cut' / 'report.json'))['test_top1']


@pytest.mark.e2e
def test_resume_with_a_different_recipe_is_refused(tmp_path, cifar_root):
    env = {'MXPRUNE_DATA': cifar_root}
    args = _train_args(tmp_path / 'r')
    killed = run_tool(['tests/kill_at.py', 'dense:0:1', *args], env)
    assert killed.returncode == -9
    before = open(tmp_path / 'r' / 'recipe.yaml').read()
    res = run_tool(_train_args(tmp_path / 'r', resume=True) + ['--set', 'train.lr=0.3'], env)
    assert res.returncode == 2 and 'train.lr (0.1 -> 0.3)' in res.stderr and 'Traceback' not in res.stderr
    assert open(tmp_path / 'r' / 'recipe.yaml').read() == before


def test_tool_errors_are_one_line(tmp_path, cifar_root):
    res = run_tool(['tools/train.py', '--recipe', 'recipes/quickstart.yaml', '--set', 'model.name=resnet_20',
                    '--out', str(tmp_path / 'x')], {'MXPRUNE_DATA': cifar_root})
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert "model.name: 'resnet_20' is not a GluonCV model" in res.stderr
    assert not (tmp_path / 'x').exists()
    res = run_tool(['tools/train.py', '--recipe', 'recipes/quickstart.yaml', '--data-dir', str(tmp_path / 'none'),
                    '--set', 'data.format=rec', '--out', str(tmp_path / 'y')])
    assert res.returncode == 2 and 'data folder' in res.stderr and len(res.stderr.strip().splitlines()) == 1

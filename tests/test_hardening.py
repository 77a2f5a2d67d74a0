"""Bad input everywhere a user can reach: one line on stderr, exit code 2, no traceback, no existing file touched.
Plus property-based fuzzing of the recipe loader, the override parser and the plan loader."""
import hashlib
import importlib
import json
import os
import shutil
import sys

import mxnet as mx
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from test_prune_tool import MALFORMED

sys.path.insert(0, os.path.join(ROOT, 'tools'))

from mxprune import cli, recipe as R  # noqa: E402
from mxprune.errors import ModelError, RecipeError  # noqa: E402
from mxprune.shrink import Plan  # noqa: E402


def _write_rec(folder, split, images, labels, fmt='.png'):
    from mxnet import recordio
    w = recordio.MXIndexedRecordIO(os.path.join(folder, f'{split}.idx'), os.path.join(folder, f'{split}.rec'), 'w')
    for i, (img, lab) in enumerate(zip(images, labels)):
        w.write_idx(i, recordio.pack_img(recordio.IRHeader(0, float(lab), i, 0), img, img_fmt=fmt))
    w.close()


@pytest.fixture(scope='module')
def world(tmp_path_factory, cifar_root):
    """A folder of inputs the corpus points at: small real data (good and broken), weights, plans, runs."""
    w = tmp_path_factory.mktemp('world')
    from mxprune import data as D
    s = D.load_cifar('cifar10', cifar_root, True, 'rec', limit=64)
    good = w / 'good'
    good.mkdir()
    _write_rec(str(good), 'train', s.images[:48], s.labels[:48])
    _write_rec(str(good), 'test', s.images[48:], s.labels[48:])
    for name, mutate in (('trunc', 'trunc'), ('badidx', 'idx'), ('small', 'size'), ('labels', 'labels')):
        d = w / name
        shutil.copytree(good, d)
        if mutate == 'trunc':
            raw = (d / 'train.rec').read_bytes()
            (d / 'train.rec').write_bytes(raw[:len(raw) // 2])
        elif mutate == 'idx':
            (d / 'train.idx').write_text('0\t0\ngarbage\n')
        elif mutate == 'size':
            _write_rec(str(d), 'train', [np.zeros((28, 28, 3), np.uint8)] * 4, [1] * 4)
        else:
            _write_rec(str(d), 'test', s.images[48:52], [42] * 4)
    (w / 'empty').mkdir()
    nine = w / 'nine' / 'train'
    for c in range(9):
        (nine / f'c{c}').mkdir(parents=True)
    (w / 'a_file.txt').write_text('not a folder')
    # weights: resnet20 params, garbage params, a run folder with a dense model only, a plan of another model
    from mxprune import zoo
    net = zoo.get_model('cifar_resnet20_v1', classes=10)
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.save_parameters(str(w / 'r20.params'))
    (w / 'garbage.params').write_bytes(os.urandom(3000))
    run = w / 'dense_run'
    run.mkdir()
    rec = R.from_mapping({'version': 1, 'model': {'name': 'cifar_resnet20_v1'}, 'train': {'epochs': 1}})
    (run / 'recipe.yaml').write_text(R.dump(rec))
    shutil.copy(w / 'r20.params', run / 'dense.params')
    (w / 'other.plan.json').write_text(json.dumps({'version': 1, 'model': 'X', 'input_shape': [1, 3, 32, 32],
                                                   'groups': {'nowhere.conv:out': {'size': 16, 'keep': [0, 1]}}}))
    (w / 'broken.plan.json').write_text('{"version": 1, "groups": ')
    shutil.copy(w / 'r20.params', w / 'cut.params')
    (w / 'cut.plan.json').write_text((w / 'other.plan.json').read_text())
    (w / 'recipe.yaml').write_text(yaml.safe_dump({'version': 1, 'model': {'name': 'cifar_resnet20_v1'},
                                                   'train': {'epochs': 1},
                                                   'data': {'train_limit': 32, 'batch_size': 16},
                                                   'pruning': [{'criterion': 'l2', 'target': {'macs': 0.5}}]}))
    existing = w / 'existing_run'
    existing.mkdir()
    (existing / 'recipe.yaml').write_text((w / 'recipe.yaml').read_text())
    (existing / 'log.jsonl').write_text('{"event": "start"}\n')
    return w


def snapshot(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, 'rb') as fh:
                out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


R_ = '{w}/recipe.yaml'
CASES = [
    ('data folder missing', 'prune', ['--recipe', R_, '--data-dir', '{w}/nowhere', '--set', 'data.format=rec'],
     'data folder'),
    ('data folder empty', 'prune', ['--recipe', R_, '--data-dir', '{w}/empty', '--set', 'data.format=bin'],
     'no cifar10 train data found in the data folder'),
    ('data dir is a file', 'prune', ['--recipe', R_, '--data-dir', '{w}/a_file.txt', '--set', 'data.format=rec'],
     'does not exist'),
    ('truncated rec', 'prune', ['--recipe', R_, '--data-dir', '{w}/trunc'], 'truncated or corrupt'),
    ('corrupt idx', 'prune', ['--recipe', R_, '--data-dir', '{w}/badidx'], 'train.idx: line 2 is not'),
    ('wrong image size', 'prune', ['--recipe', R_, '--data-dir', '{w}/small'], 'expected 32x32x3'),
    ('wrong class labels', 'prune', ['--recipe', R_, '--data-dir', '{w}/labels'], 'has label 42; cifar10 labels are'),
    ('wrong class count', 'prune', ['--recipe', R_, '--data-dir', '{w}/nine', '--set', 'data.format=folder'],
     '9 class folders; the dataset has 10 classes'),
    ('gpu on a cpu build', 'prune', ['--recipe', R_, '--data-dir', '{w}/good', '--set', 'train.ctx=gpu:0'],
     'gpu 0 is not available'),
    ('pretrained of another model', 'prune', ['--recipe', R_, '--data-dir', '{w}/good', '--set',
                                              'model.name=cifar_resnet56_v1', '--set',
                                              'model.pretrained={w}/r20.params'],
     'does not fit this model'),
    ('pretrained garbage', 'prune', ['--recipe', R_, '--data-dir', '{w}/good', '--set',
                                     'model.pretrained={w}/garbage.params'], 'garbage.params: does not fit'),
    ('out folder holds a run', 'prune', ['--recipe', R_, '--data-dir', '{w}/good', '--out', '{w}/existing_run'],
     'already exists and is not empty; pass --resume'),
    ('out is a file', 'prune', ['--recipe', R_, '--data-dir', '{w}/good', '--out', '{w}/a_file.txt'],
     'a_file.txt is a file'),
    ('resume without a run', 'prune', ['--recipe', R_, '--data-dir', '{w}/good', '--out', '{w}/empty', '--resume'],
     'holds no run'),
    ('resume with another recipe', 'prune', ['--recipe', R_, '--data-dir', '{w}/good', '--out', '{w}/existing_run',
                                             '--resume', '--set', 'train.lr=0.5'], 'the recipe differs'),
    ('recipe file missing', 'prune', ['--recipe', '{w}/none.yaml'], 'recipe file not found'),
    ('override without =', 'prune', ['--recipe', R_, '--set', 'train.lr'], 'expected key.path=value'),
    ('override into a scalar', 'prune', ['--recipe', R_, '--set', 'train.epochs.x=1'],
     'train.epochs is 1, not a mapping'),
    ('export: plan of another model', 'export', ['--model', 'cifar_resnet20_v1', '--classes', '10', '--params',
                                                 '{w}/cut.params', '--out', '{w}/exp/m'],
     "names group 'nowhere.conv:out', which CIFARResNetV1 does not have"),
    ('export: broken plan', 'export', ['--model', 'cifar_resnet20_v1', '--classes', '10', '--params', '{w}/r20.params',
                                       '--plan', '{w}/broken.plan.json', '--out', '{w}/exp/m'], 'not a JSON plan'),
    ('export: no model given', 'export', ['--out', '{w}/exp/m'], 'give either --run DIR or --model NAME'),
    ('export: params missing', 'export', ['--model', 'cifar_resnet20_v1', '--params', '{w}/none.params'],
     'none.params: parameter file not found'),
    ('benchmark: dense-only run', 'benchmark', ['--run', '{w}/dense_run'], 'holds no pruned model'),
    ('benchmark: bad batches', 'benchmark', ['--run', '{w}/dense_run', '--batches', 'x'],
     'expected comma-separated integers'),
    ('benchmark: not a run', 'benchmark', ['--run', '{w}/empty'], 'not a run folder'),
    ('sensitivity: bad ratio', 'sensitivity', ['--run', '{w}/dense_run', '--ratios', '0.5,1.5'],
     'each ratio must be in (0, 1)'),
    ('sensitivity: recipe without target', 'sensitivity', ['--run', '{w}/dense_run', '--write-recipe', '{w}/x.yaml'],
     '--write-recipe needs --target-macs'),
    ('robustness: bad eps', 'robustness', ['--run', '{w}/dense_run', '--eps', 'abc'], 'expected numbers in 1/255'),
    ('robustness: unknown model spec', 'robustness', ['--a', '{w}/nowhere', '--b', '{w}/nowhere'],
     'not a run folder, an export prefix'),
    ('compare: unfinished run', 'compare', ['{w}/dense_run', '--out', '{w}/c.png'], 'no report.json'),
    ('train: unknown model', 'train', ['--recipe', R_, '--set', 'model.name=resnet_20'], 'is not a GluonCV model'),
    ('prune: a detection recipe', 'prune', ['--recipe', 'recipes/raccoon_ssd_l2.yaml'],
     'run it with python tools/detect.py --recipe recipes/raccoon_ssd_l2.yaml'),
    ('train: negative batch', 'train', ['--recipe', R_, '--set', 'data.batch_size=-4'], 'data.batch_size: -4'),
]


@pytest.mark.parametrize('what, tool, argv, needle', CASES, ids=[c[0] for c in CASES])
def test_bad_input_corpus(world, capsys, what, tool, argv, needle):
    module = importlib.import_module(tool)
    argv = [a.replace('{w}', str(world)) for a in argv]
    if tool in ('prune', 'train') and '--out' not in argv:
        argv += ['--out', str(world / 'new_run')]
    before = snapshot(world)
    with pytest.raises(SystemExit) as e:
        cli.run(module.main, argv + (['--quiet'] if tool in ('prune', 'train') else []))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith('[')]  # '[hh:mm:ss] mxnet log'
    assert e.value.code == 2, err
    assert len(lines) == 1 and needle in lines[0], err
    assert 'Traceback' not in err
    assert snapshot(world) == before, 'an existing file changed'
    assert not (world / 'new_run').exists()


@pytest.mark.parametrize('raw, needle', MALFORMED[:12], ids=[f'recipe{i:02d}' for i in range(12)])
def test_malformed_recipes_leave_every_file_alone(world, capsys, raw, needle):
    import prune
    path = world / 'case.yaml'
    before = None
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    before = snapshot(world)
    with pytest.raises(SystemExit) as e:
        cli.run(prune.main, ['--recipe', str(path), '--out', str(world / 'existing_run'), '--resume', '--quiet'])
    assert e.value.code == 2 and needle in capsys.readouterr().err
    assert snapshot(world) == before
    path.unlink()


# ---------------------------------------------------------------------------------------------------- fuzzing

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 6), st.floats(allow_nan=True),
                    st.text(max_size=12))
trees = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), kids, max_size=5)),
                     max_leaves=20)
known = st.sampled_from(['version', 'model', 'data', 'train', 'pruning', 'finetune', 'export', 'benchmark',
                         'regularizers', 'sparsity', 'distill', 'robustness'])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(known, st.text(max_size=8)), trees, max_size=6))
def test_fuzz_recipe_loader_only_raises_recipe_errors(raw):
    raw.setdefault('version', 1)
    try:
        r = R.from_mapping(raw, 'fuzz.yaml')
    except RecipeError as e:
        assert str(e).startswith('fuzz.yaml: ') and '\n' not in str(e)
        return
    assert R.from_mapping(yaml.safe_load(R.dump(r))) == r


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_override_parser(text):
    base = {'version': 1, 'model': {'name': 'x'}, 'pruning': [{'criterion': 'l2'}]}
    try:
        out = R.apply_overrides(json.loads(json.dumps(base)), [text])
    except RecipeError as e:
        assert str(e).startswith('--set ') and '\n' not in str(e)
        return
    assert isinstance(out, dict)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_fuzz_plan_loader(obj):
    try:
        plan = Plan.from_json(obj, 'fuzz.plan.json')
    except ModelError as e:
        assert str(e).startswith('fuzz.plan.json: ')
        return
    for g in plan.groups.values():
        assert g['keep'] and all(0 <= i < g['size'] for i in g['keep'])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8),
                       st.fixed_dictionaries({'size': st.integers(1, 64),
                                              'keep': st.lists(st.integers(-3, 70), max_size=8)}), max_size=3))
def test_fuzz_plan_groups(groups):
    obj = {'version': 1, 'model': 'm', 'input_shape': [1, 3, 8, 8], 'groups': groups}
    try:
        Plan.from_json(obj, 'p')
    except ModelError:
        assert any(not g['keep'] or len(set(g['keep'])) != len(g['keep']) or
                   any(not 0 <= i < g['size'] for i in g['keep']) for g in groups.values())

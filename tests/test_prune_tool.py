"""tools/prune.py end to end on a real-data slice, its malformed-recipe corpus, and crash/resume."""
import json
import os
import sys

import mxnet as mx
import numpy as np
import pytest
import yaml

from conftest import ROOT, run_tool

sys.path.insert(0, os.path.join(ROOT, 'tools'))

SMALL = ['data.train_limit=512', 'data.test_limit=256', 'train.epochs=1', 'finetune.epochs=1',
         'benchmark.batches=[1, 8]', 'benchmark.repeats=1', 'robustness.images=40', 'robustness.pgd_steps=2']


def _args(recipe, out, sets=(), resume=False):
    args = ['tools/prune.py', '--recipe', recipe, '--out', str(out), '--quiet']
    for s in sets:
        args += ['--set', s]
    return args + (['--resume'] if resume else [])


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_quickstart_end_to_end_on_a_slice(tmp_path, cifar_root):
    res = run_tool(_args('recipes/quickstart.yaml', tmp_path / 'q', SMALL), {'MXPRUNE_DATA': cifar_root})
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'test top-1' in res.stdout and 'MACs (M)' in res.stdout and 'latency batch 8' in res.stdout
    run = tmp_path / 'q'
    report = json.load(open(run / 'report.json'))
    assert report['ratios']['macs'] <= 0.55 and report['groups_cut'] > 0
    assert 0 <= report['pruned']['top1'] <= 1 and report['dense']['top1'] > 0.1
    # the masked net's accuracy when the last mask update was done survives the later phases' state writes
    assert report['at_pruning'] is not None and 0 <= report['at_pruning']['top1'] <= 1
    assert set(report['speed']['batches']) == {'1', '8'} and report['speed']['batches']['8']['speedup'] > 0
    assert float(report['export']['max_abs_diff']) <= 1e-4
    rob = report['robustness']
    assert rob['images'] == 40 and set(rob['pruned']['pgd']) == {'2/255', '8/255'}
    assert rob['dense']['pgd']['8/255'] <= rob['dense']['fgsm']['2/255'] + 0.1 and 0 <= rob['dense']['clean'] <= 1
    for f in ('recipe.yaml', 'log.jsonl', 'pruned.plan.json', 'pruned.params', 'dense.params', 'channels.png',
              'curves.png', 'export/model-symbol.json', 'export/model-0000.params', 'export/model.sha256.json'):
        assert (run / f).exists(), f
    layer_rows = report['layers']
    assert any(r['out_kept'] < r['out'] for r in layer_rows)
    # the saved recipe is the resolved one, and it loads back to the same object
    from mxprune import recipe as R
    saved = R.load(str(run / 'recipe.yaml'))
    assert saved.train.epochs == 1 and saved.data.train_limit == 512
    # exported files reload with plain MXNet and match the pruned model rebuilt from its plan
    from mxprune import pipeline
    rec, dense, pruned, plan = pipeline.load_run(str(run))
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (1, 3, 32, 32)))
    sym = mx.gluon.SymbolBlock.imports(str(run / 'export/model-symbol.json'), ['data'],
                                       str(run / 'export/model-0000.params'))
    np.testing.assert_allclose(sym(x).asnumpy(), pruned(x).asnumpy(), atol=1e-4)
    # tools/export.py and tools/benchmark.py work on the run folder
    exp = run_tool(['tools/export.py', '--run', str(run), '--out', str(tmp_path / 'exp' / 'm')])
    assert exp.returncode == 0 and 'max abs diff' in exp.stdout, exp.stderr[-2000:]
    bench = run_tool(['tools/benchmark.py', '--run', str(run), '--batches', '1,4', '--repeats', '1'])
    assert bench.returncode == 0 and 'speed-up' in bench.stdout, bench.stderr[-2000:]
    derived = tmp_path / 'derived.yaml'
    sens = run_tool(['tools/sensitivity.py', '--run', str(run), '--test-limit', '128', '--ratios', '0.5,0.75',
                     '--target-macs', '0.7', '--write-recipe', str(derived), '--quiet'], {'MXPRUNE_DATA': cifar_root})
    assert sens.returncode == 0, sens.stderr[-2000:]
    import csv
    rows = list(csv.DictReader(open(run / 'sensitivity' / 'sensitivity.csv')))
    assert len(rows) == 2 * len({r['group'] for r in rows}) and (run / 'sensitivity' / 'sensitivity.png').exists()
    derived_recipe = R.load(str(derived))
    assert derived_recipe.pruning[0].ratios and derived_recipe.pruning[0].scope == 'local'
    cmp = run_tool(['tools/compare.py', str(run), '--out', str(tmp_path / 'cmp.png')])
    assert cmp.returncode == 0 and (tmp_path / 'cmp.png').exists()
    head, row = cmp.stdout.splitlines()[:2]
    assert head.split()[1:4] == ['metric', 'dense', 'pruned'] and row.split()[:2] == [run.name, 'top-1']


BASE = {'version': 1, 'model': {'name': 'cifar_resnet20_v1'}, 'train': {'epochs': 1},
        'pruning': [{'criterion': 'l2', 'target': {'macs': 0.5}}]}


def _with(path, value):
    raw = json.loads(json.dumps(BASE))
    node = raw
    keys = path.split('.')
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return raw


MALFORMED = [
    (_with('trian', {}), "top level: unknown key 'trian'"),
    (_with('train.lrate', 0.1), "train: unknown key 'lrate'"),
    (_with('train.epochs', 'ten'), "train.epochs: 'ten' is not allowed; expected an integer"),
    (_with('train.lr', -0.1), 'train.lr: -0.1 is not allowed'),
    (_with('version', 2), 'version: 2 is not allowed'),
    ({'version': 1, 'train': {'epochs': 1}}, 'model: missing'),
    (_with('model', 'resnet'), "model: 'resnet' is not allowed; expected a mapping"),
    (_with('pruning', {'criterion': 'l2'}), 'pruning: '),
    (_with('pruning.0.criterion', 'l3'), "pruning[0].criterion: 'l3' is not allowed; expected one of"),
    (_with('pruning.0.granularity', 'filter'), "pruning[0].granularity: 'filter' is not allowed"),
    (_with('pruning.0.scope', 'everywhere'), "pruning[0].scope: 'everywhere' is not allowed"),
    (_with('pruning.0.target', {'sparsity': 0.5, 'macs': 0.5}), 'expected exactly one of sparsity, macs, params'),
    (_with('pruning.0.target', {'macs': 1.5}), 'pruning[0].target.macs: 1.5 is not allowed'),
    (_with('pruning.0.target', {'sparsity': 1.0}), 'pruning[0].target.sparsity: 1.0 is not allowed'),
    (_with('pruning.0.schedule', {'kind': 'linear'}), "pruning[0].schedule.kind: 'linear' is not allowed"),
    (_with('pruning.0.schedule', {'kind': 'agp', 'start_epoch': 2, 'end_epoch': 1}),
     'pruning[0].schedule.end_epoch: 1.0 is not allowed'),
    (_with('pruning.0', {'criterion': 'fpgm', 'granularity': 'weight', 'target': {'sparsity': 0.5}}),
     "pruning[0].criterion: 'fpgm' is not allowed with granularity weight"),
    (_with('pruning.0', {'criterion': 'l1', 'granularity': 'weight', 'target': {'macs': 0.5}}),
     'pruning[0].target: macs is not allowed with granularity weight'),
    (_with('pruning.0', {'scope': 'global', 'ratios': {'a*': 0.5}}), 'ratios: layer-wise ratios are not allowed'),
    (_with('pruning.0.ratios', {'features.*': 1.5}), "pruning[0].ratios.features.*: 1.5 is not allowed"),
    (_with('pruning.0.round_to', 0), 'pruning[0].round_to: 0 is not allowed'),
    (_with('regularizers', [{'kind': 'bn_l1'}]), 'sparsity.epochs: 0 is not allowed with regularizers'),
    (_with('regularizers', [{'kind': 'l0'}]), "regularizers[0].kind: 'l0' is not allowed"),
    (_with('data.dataset', 'mnist'), "data.dataset: 'mnist' is not allowed"),
    (_with('data.batch_size', 0), 'data.batch_size: 0 is not allowed'),
    (_with('train.epochs', 0), 'train.epochs: 0 is not allowed without model.pretrained'),
    (_with('finetune.optimizer', 'adam'), "finetune.optimizer: 'adam' is not allowed"),
    (_with('pruning.0.schedule', {'kind': 'agp', 'end_epoch': 9}), 'ends at epoch 9.0 but finetune.epochs is 2'),
    (_with('distill.alpha', 2), 'distill.alpha: 2 is not allowed'),
    (_with('benchmark.batches', []), 'benchmark.batches: [] is not allowed'),
    (_with('data.augment.flip', 'yes'), "data.augment.flip: 'yes' is not allowed; expected true or false"),
    (_with('export', True), 'export: True is not allowed; expected a mapping'),
    (_with('train.ctx', 'tpu'), "train.ctx: 'tpu' is not allowed"),
    (_with('model.name', 'resnet_1000'), "model.name: 'resnet_1000' is not a GluonCV model"),
    (_with('model.pretrained', 'nowhere.params'), 'model.pretrained: nowhere.params not found'),
    (_with('model.pretrained', 'no_runs/cifar_dense_r56/dense.params'),
     'it is written by python tools/prune.py --recipe recipes/cifar_dense_r56.yaml --out no_runs/cifar_dense_r56'),
    ('version: 1\nmodel: {name: [\n', 'not valid YAML at line'),
    ('- a\n- b\n', "top level: ['a', 'b'] is not allowed"),
    ('version: !!python/object/apply:os.system ["echo owned"]\n', 'not valid YAML'),
]


@pytest.mark.parametrize('raw, needle', MALFORMED, ids=[f'bad{i:02d}' for i in range(len(MALFORMED))])
def test_malformed_recipes_get_one_line_and_exit_2(tmp_path, capsys, raw, needle):
    import prune
    from mxprune import cli
    path = tmp_path / 'bad.yaml'
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    out = tmp_path / 'run'
    with pytest.raises(SystemExit) as e:
        cli.run(prune.main, ['--recipe', str(path), '--out', str(out), '--quiet'])
    err = capsys.readouterr().err
    assert e.value.code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: ') and needle in lines[0], err
    assert 'Traceback' not in err and not out.exists()


def test_malformed_recipe_in_a_real_process(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump(_with('pruning.0.criterion', 'l3')))
    res = run_tool(_args(str(bad), tmp_path / 'run'))
    assert res.returncode == 2 and res.stderr.count('\n') == 1 and 'Traceback' not in res.stderr
    res = run_tool(_args('recipes/quickstart.yaml', tmp_path / 'run', ['pruning.5.criterion=l1']))
    assert res.returncode == 2 and "no list item '5'" in res.stderr


RESUME = ['data.train_limit=384', 'data.test_limit=128', 'data.batch_size=64', 'train.epochs=2',
          'finetune.epochs=3', 'pruning.0.schedule={kind: agp, start_epoch: 0, end_epoch: 2, frequency: 3}',
          'pruning.0.target={macs: 0.6}', 'benchmark.enabled=false', 'export.enabled=false',
          'robustness.enabled=false']


@pytest.mark.e2e
@pytest.mark.timeout(900)
@pytest.mark.parametrize('kill_at', ['dense:1:2', 'prune:1:1', 'finetune:2:3'])
def test_killed_prune_run_resumes_bit_identical(tmp_path_factory, cifar_root, kill_at):
    env = {'MXPRUNE_DATA': cifar_root}
    ref_dir = tmp_path_factory.getbasetemp() / 'prune_reference'
    if not (ref_dir / 'pruned.params').exists():
        ref = run_tool(_args('recipes/quickstart.yaml', ref_dir, RESUME), env)
        assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path_factory.mktemp('cut')
    killed = run_tool(['tests/kill_at.py', kill_at, *_args('recipes/quickstart.yaml', out / 'r', RESUME)], env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = run_tool(_args('recipes/quickstart.yaml', out / 'r', RESUME, resume=True), env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = mx.nd.load(str(ref_dir / 'pruned.params'))
    b = mx.nd.load(str(out / 'r' / 'pruned.params'))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k].asnumpy(), b[k].asnumpy()) for k in a)
    assert json.load(open(ref_dir / 'pruned.plan.json')) == json.load(open(out / 'r' / 'pruned.plan.json'))
    ra, rb = json.load(open(ref_dir / 'report.json')), json.load(open(out / 'r' / 'report.json'))
    assert ra['pruned']['top1'] == rb['pruned']['top1'] and ra['ratios'] == rb['ratios']

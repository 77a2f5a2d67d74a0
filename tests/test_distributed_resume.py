"""Faults in a data-parallel run: a worker or the server SIGKILLed mid-phase, the launcher's stop, a consistent run
folder, and `--resume` ending bit-identical to the uninterrupted 2-worker run (tools/launch.py on loopback)."""
import glob
import json
import os
import re
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest

from conftest import ROOT, run_tool

LAUNCH = os.path.join(ROOT, 'tools', 'launch.py')
PRUNE = os.path.join(ROOT, 'tools', 'prune.py')
KILL_AT = os.path.join(ROOT, 'tests', 'kill_at.py')
RECIPE = os.path.join(ROOT, 'recipes', 'quickstart.yaml')
# 2 workers x 32 images per step, 6 steps per epoch; the AGP schedule spans two epochs of the prune phase, so the
# Taylor scores gathered since the last decision cross an epoch boundary (and a checkpoint)
SMALL = ['data.train_limit=384', 'data.test_limit=128', 'data.batch_size=64', 'train.epochs=2',
         'finetune.epochs=3', 'pruning.0.schedule={kind: agp, start_epoch: 0, end_epoch: 2, frequency: 3}',
         'pruning.0.target={macs: 0.6}', 'benchmark.enabled=false', 'export.enabled=false',
         'robustness.enabled=false']


def _prune_args(out, resume=False):
    args = ['--recipe', RECIPE, '--out', str(out), '--quiet']
    for s in SMALL:
        args += ['--set', s]
    return args + (['--resume'] if resume else [])


def _launch(worker_cmd, env, workers=2, timeout=400):
    # the launcher splits the cores itself (conftest sets OMP_NUM_THREADS for this process only)
    e = {k: v for k, v in os.environ.items() if not k.startswith('DMLC_') and k != 'OMP_NUM_THREADS'}
    e.update(env)
    cmd = [sys.executable, LAUNCH, '-n', str(workers), '-s', '1', '--deadline', '300', '--', sys.executable,
           *worker_cmd]
    res = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
    res.ended = time.time()
    return res


def _reference(tmp_path_factory, env):
    ref = tmp_path_factory.getbasetemp() / 'dist_reference'
    if not (ref / 'report.json').exists():
        tic = time.time()
        res = _launch([PRUNE, *_prune_args(ref)], env)
        assert res.returncode == 0, res.stderr[-3000:]
        print(f'uninterrupted 2-worker run: {time.time() - tic:.1f} s')
    return ref


def _consistent(run) -> None:
    """Every checkpoint pointer names a complete checkpoint, and every published weights file loads."""
    for pointer in glob.glob(str(run / 'ckpt' / '*.json')):
        folder = run / 'ckpt' / json.load(open(pointer))['dir']
        assert (folder / 'meta.json').exists() and (folder / 'net.params').exists(), pointer
        mx.nd.load(str(folder / 'net.params'))
    for f in glob.glob(str(run / '**' / '*.params'), recursive=True):
        if '.tmp' not in f:
            mx.nd.load(f)
    json.load(open(run / 'state.json'))


def _max_diff(a_file, b_file) -> float:
    a, b = mx.nd.load(str(a_file)), mx.nd.load(str(b_file))
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].asnumpy() - b[k].asnumpy()).max()) for k in a)


# (kill spec for tests/kill_at.py, what dies, the launcher's label of it): a step in the dense, the pruning and the
# fine-tuning phase; the writer (rank 0), another worker and the parameter server
FAULTS = [('dense:1:2:rank0', 'worker', r'worker \d \(pid \d+\) was killed by SIGKILL'),
          ('prune:1:1:rank1', 'worker', r'worker \d \(pid \d+\) was killed by SIGKILL'),
          ('finetune:2:3:server', 'server', r'server 0 \(pid \d+\) was killed by SIGKILL')]


@pytest.mark.e2e
@pytest.mark.timeout(1200)
@pytest.mark.parametrize('kill_at, victim, line', FAULTS, ids=[f[0] for f in FAULTS])
def test_killed_two_worker_run_resumes_bit_identical(tmp_path_factory, cifar_root, kill_at, victim, line):
    env = {'MXPRUNE_DATA': cifar_root}
    ref = _reference(tmp_path_factory, env)
    run = tmp_path_factory.mktemp('killed') / 'r'
    tic = time.time()
    killed = _launch([KILL_AT, kill_at, PRUNE, *_prune_args(run)], env)
    assert killed.returncode == 137, killed.stderr[-3000:]  # 128 + SIGKILL, from the dead process
    said = re.search(r'kill_at: SIGKILL .* at (\d+\.\d+)', killed.stderr)
    assert said, killed.stderr[-3000:]
    stop_s = killed.ended - float(said.group(1))
    stops = [ln for ln in killed.stderr.splitlines() if ln.startswith('launch: error:')]
    assert len(stops) == 1 and re.search(line, stops[0]), killed.stderr[-3000:]
    assert stop_s < 15
    _consistent(run)
    assert not (run / 'pruned.params').exists()
    if kill_at.startswith('prune'):  # the Taylor scores since the last decision cross the checkpoint
        assert glob.glob(str(run / 'ckpt' / 'prune-e*' / 'criteria.nd'))
    cut_s = time.time() - tic
    tic = time.time()
    resumed = _launch([PRUNE, *_prune_args(run, resume=True)], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    diff = _max_diff(ref / 'pruned.params', run / 'pruned.params')
    assert json.load(open(ref / 'pruned.plan.json')) == json.load(open(run / 'pruned.plan.json'))  # same channels
    ra, rb = json.load(open(ref / 'report.json')), json.load(open(run / 'report.json'))
    print(f'{kill_at}: {victim} killed; job stopped {stop_s:.2f} s after the kill ("{stops[0]}"); killed run '
          f'{cut_s:.1f} s, resume {time.time() - tic:.1f} s; max abs diff of the pruned parameters vs the '
          f'uninterrupted run {diff:g}; resumed top-1 {rb["pruned"]["top1"]:.4f} (uninterrupted '
          f'{ra["pruned"]["top1"]:.4f}) on {rb["pruned"]["test_images"]} test images')
    assert diff == 0.0
    assert _max_diff(ref / 'dense.params', run / 'dense.params') == 0.0
    assert ra['pruned']['top1'] == rb['pruned']['top1'] and ra['ratios'] == rb['ratios']
    assert rb['resumed'] is True


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_two_worker_run_resumes_in_one_process(tmp_path_factory, cifar_root):
    """Another worker count keeps the global batch and the steps per epoch: the run continues (on other shards)."""
    env = {'MXPRUNE_DATA': cifar_root}
    ref = _reference(tmp_path_factory, env)
    run = tmp_path_factory.mktemp('regrown') / 'r'
    killed = _launch([KILL_AT, 'prune:1:1:rank1', PRUNE, *_prune_args(run)], env)
    assert killed.returncode == 137, killed.stderr[-3000:]
    alone = run_tool([PRUNE, *_prune_args(run, resume=True)], env)
    assert alone.returncode == 0, alone.stderr[-3000:]
    state = json.load(open(run / 'state.json'))
    assert state['workers'] == 1 and state['steps_per_epoch'] == 6
    ra, rb = json.load(open(ref / 'report.json')), json.load(open(run / 'report.json'))
    print(f'2 workers -> 1 process: top-1 {rb["pruned"]["top1"]:.4f} (uninterrupted 2 workers '
          f'{ra["pruned"]["top1"]:.4f}), max abs diff {_max_diff(ref / "pruned.params", run / "pruned.params"):g}')
    assert rb['ratios']['macs'] <= 0.65 and 0 <= rb['pruned']['top1'] <= 1


def test_a_worker_count_that_changes_the_steps_is_refused(tmp_path):
    from mxprune import recipe
    from mxprune.errors import RecipeError
    from mxprune.pipeline import folder, resume
    rec = recipe.load(RECIPE)
    run = folder.RunFolder(str(tmp_path / 'r'), rec)
    resume.check_workers(run, 2, 6, resume=False)
    resume.check_workers(run, 1, 6, resume=True)  # the same steps per epoch: accepted
    with pytest.raises(RecipeError, match=r'was run with 1 worker\(s\) and this job has 3, which makes 4 steps per '
                                          r'epoch instead of 6; resume it with 1 worker\(s\)'):
        resume.check_workers(run, 3, 4, resume=True)


@pytest.mark.e2e
def test_horovod_two_processes(tmp_path, cifar_root):
    try:
        import horovod.mxnet  # noqa: F401
    except ImportError:
        pytest.skip('horovod is not installed here (it is an optional extra: docs/distributed.md)')
    res = subprocess.run(['horovodrun', '-np', '2', '-H', 'localhost:2', '--gloo', '--network-interface', 'lo',
                          sys.executable, PRUNE, *_prune_args(tmp_path / 'h')], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, 'MXPRUNE_DATA': cifar_root})
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.load(open(tmp_path / 'h' / 'report.json'))
    print(f'horovod 2 processes: pruned top-1 {report["pruned"]["top1"]:.4f}')
    assert report['ratios']['macs'] <= 0.65


def _horovod(worker_cmd, env):
    tic = time.time()
    res = subprocess.run(['horovodrun', '-np', '2', '-H', 'localhost:2', '--gloo', '--network-interface', 'lo',
                          sys.executable, *worker_cmd], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, **env})
    res.ended = time.time()
    res.took = res.ended - tic
    return res


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_horovod_killed_worker_stops_the_job_and_resume_finishes_it(tmp_path, cifar_root):
    pytest.importorskip('horovod.mxnet', reason='horovod is not installed here (an optional extra)')
    env = {'MXPRUNE_DATA': cifar_root}
    ref = _horovod([PRUNE, *_prune_args(tmp_path / 'ref')], env)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = tmp_path / 'r'
    killed = _horovod([KILL_AT, 'prune:1:1:rank1', PRUNE, *_prune_args(run)], env)
    assert killed.returncode != 0
    said = re.search(r'kill_at: SIGKILL .* at (\d+\.\d+)', killed.stdout + killed.stderr)
    assert said, killed.stderr[-3000:]
    stop_s = killed.ended - float(said.group(1))
    _consistent(run)
    assert not (run / 'pruned.params').exists()
    resumed = _horovod([PRUNE, *_prune_args(run, resume=True)], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    diff = _max_diff(tmp_path / 'ref' / 'pruned.params', run / 'pruned.params')
    ra, rb = json.load(open(tmp_path / 'ref' / 'report.json')), json.load(open(run / 'report.json'))
    print(f'horovod: rank 1 killed in prune 1:1; horovodrun exited {killed.returncode} {stop_s:.2f} s after the '
          f'kill; resume {resumed.took:.1f} s; max abs diff of the pruned parameters vs the uninterrupted horovod '
          f'run {diff:g}; resumed top-1 {rb["pruned"]["top1"]:.4f} (uninterrupted {ra["pruned"]["top1"]:.4f})')
    assert stop_s < 30
    assert json.load(open(tmp_path / 'ref' / 'pruned.plan.json')) == json.load(open(run / 'pruned.plan.json'))
    assert diff == 0.0 and ra['pruned']['top1'] == rb['pruned']['top1'] and rb['resumed'] is True

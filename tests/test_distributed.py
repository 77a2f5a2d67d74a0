"""Data-parallel pruning on MXNet's parameter-server KVStore: real processes on loopback (tools/launch.py)."""
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, 'tools', 'launch.py')

# Each worker: its own initial weights and its own data (so Taylor scores differ per worker), a Taylor AGP schedule
# over two epochs, shrinking, a rebuilt Trainer and two more steps. It saves what the test compares.
WORKER = textwrap.dedent('''
    import json, os, sys
    sys.path[:0] = [{root!r}, os.path.join({root!r}, 'tests')]
    import mxnet as mx
    import numpy as np
    from mxnet import autograd, gluon
    import mxprune as mp
    import nets
    from mxprune import distributed

    out = sys.argv[1]
    workers = distributed.from_env()
    with workers.failing_fast():
        r = workers.rank
        mx.random.seed(100 + r)  # different initial weights on purpose: the Trainer broadcasts rank 0's
        net = nets.Residual()
        net.initialize(mx.init.Xavier())
        net.hybridize(static_alloc=True, static_shape=True)
        session = mp.Session(net, (1, 3, 16, 16), steps_per_epoch=4, modifiers=[
            mp.PruningModifier('taylor', target=0.5, schedule=mp.schedules.AGP(start_epoch=0, end_epoch=1,
                                                                               frequency=2), round_to=1)])
        session.sync = workers

        def trainer():
            params = {{k: p for k, p in net.collect_params().items() if p.grad_req != 'null'}}
            return workers.make_trainer(params, mx.optimizer.SGD(learning_rate=0.1, momentum=0.9, wd=1e-3))

        rng = np.random.RandomState(r)  # each worker its own shard
        batches = [(mx.nd.array(rng.uniform(-1, 1, (8, 3, 16, 16))), mx.nd.array(rng.randint(0, 4, 8)))
                   for _ in range(4)]
        loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

        def epochs(n, t, hooks):
            for epoch in range(n):
                for x, y in batches:
                    with autograd.record():
                        loss = loss_fn(net(x), y)
                    loss.backward()
                    for h in hooks:
                        h.before_update(x.shape[0])
                    t.step(x.shape[0])
                    for h in hooks:
                        h.after_update()
                for h in hooks:
                    h.on_epoch_end(epoch)

        t = trainer()
        session.bind_trainer(t)
        epochs(2, t, [session, workers.hooks(net, session)])
        session.catch_up()
        mx.nd.waitall()
        np.savez(os.path.join(out, f'masked-{{r}}.npz'),
                 **{{k: p.data().asnumpy() for k, p in net.collect_params().items()}})
        small, plan = session.finalize()
        epochs(1, trainer(), [workers.hooks(small)])  # shrunk: a new Trainer on a new key space
        mx.nd.waitall()
        np.savez(os.path.join(out, f'shrunk-{{r}}.npz'),
                 **{{k: p.data().asnumpy() for k, p in small.collect_params().items()}})
        summed = {{'a': mx.nd.ones(3) * (r + 1)}}
        workers.sum_arrays(summed)
        with open(os.path.join(out, f'info-{{r}}.json'), 'w') as f:
            json.dump({{'rank': r, 'workers': workers.num_workers, 'sum': summed['a'].asnumpy().tolist(),
                       'history': session.history, 'groups_cut': len(plan.groups)}}, f)
''')


def _launch(args, tmp_path, timeout=120, env=None):
    # the launcher splits the cores itself (conftest sets OMP_NUM_THREADS for this process only)
    e = {k: v for k, v in os.environ.items() if not k.startswith('DMLC_') and k != 'OMP_NUM_THREADS'}
    e.update(env or {})
    return subprocess.run([sys.executable, LAUNCH, *args], cwd=str(tmp_path), env=e, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_two_workers_one_server_prune_in_step(tmp_path):
    script = tmp_path / 'worker.py'
    script.write_text(WORKER.format(root=ROOT))
    tic = time.time()
    res = _launch(['-n', '2', '-s', '1', '--deadline', '50', '--', sys.executable, str(script), str(tmp_path)],
                  tmp_path)
    elapsed = time.time() - tic
    assert res.returncode == 0, res.stderr[-3000:]
    assert elapsed < 60
    assert 'launch: 2 worker(s) and 1 server(s) finished' in res.stderr  # scheduler and server left by themselves
    assert 'warning' not in res.stderr
    infos = [json.load(open(tmp_path / f'info-{r}.json')) for r in (0, 1)]
    assert [i['workers'] for i in infos] == [2, 2]
    assert infos[0]['sum'] == infos[1]['sum'] == [3.0, 3.0, 3.0]  # spare-key sums over workers
    assert infos[0]['history'] == infos[1]['history'] and len(infos[0]['history']) >= 2
    assert infos[0]['groups_cut'] > 0
    for stage in ('masked', 'shrunk'):
        a, b = (np.load(tmp_path / f'{stage}-{r}.npz') for r in (0, 1))
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:  # weights, masks and BN statistics: bit-identical on both workers
            assert a[k].shape == b[k].shape and np.array_equal(a[k], b[k]), (stage, k)
    masked = np.load(tmp_path / 'masked-0.npz')
    masks = [k for k in masked.files if k.endswith('weight_mask')]
    assert masks and any((masked[k] == 0).any() for k in masks)
    for k in masks:  # pruned weights exactly zero
        w = masked[k[:-len('_mask')]]
        assert np.all(w[masked[k] == 0] == 0), k
    shrunk = np.load(tmp_path / 'shrunk-0.npz')
    assert sum(v.size for v in shrunk.values()) < sum(masked[k].size for k in masked.files if k not in masks)


FAIL = textwrap.dedent('''
    import sys
    sys.path.insert(0, {root!r})
    from mxprune import distributed
    from mxprune.errors import MxPruneError
    workers = distributed.from_env()
    with workers.failing_fast():
        if workers.rank == 1:
            raise MxPruneError('something the user can fix')
        workers.sum_numpy([1.0])  # rank 0 waits here for a partner that never comes
''')


@pytest.mark.e2e
def test_a_failing_worker_stops_the_job_fast(tmp_path):
    script = tmp_path / 'fail.py'
    script.write_text(FAIL.format(root=ROOT))
    tic = time.time()
    res = _launch(['-n', '2', '--deadline', '50', '--', sys.executable, str(script)], tmp_path)
    assert time.time() - tic < 30
    assert res.returncode == 2, res.stderr[-2000:]
    assert 'error: rank 1: something the user can fix' in res.stderr
    assert 'exited with code 2; stopped the other 3 process(es)' in res.stderr


@pytest.mark.e2e
def test_deadline_stops_a_hung_job(tmp_path):
    tic = time.time()
    res = _launch(['-n', '1', '--deadline', '2', '--', sys.executable, '-c', 'import time; time.sleep(60)'], tmp_path)
    assert time.time() - tic < 20
    assert res.returncode == 124 and 'deadline of 2 s passed' in res.stderr


def test_launcher_plan_sets_the_dmlc_environment_and_splits_threads():
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    import launch
    nodes = launch.plan(3, 2, ['a', 'b'], ['python', 'w.py'], root_uri='10.0.0.1', port=9000, python='py',
                        base_env={})
    roles = [(n.role, n.host) for n in nodes]
    assert roles == [('scheduler', '10.0.0.1'), ('server', 'a'), ('server', 'b'), ('worker', 'a'), ('worker', 'b'),
                     ('worker', 'a')]
    for n in nodes:
        assert n.env['DMLC_PS_ROOT_URI'] == '10.0.0.1' and n.env['DMLC_PS_ROOT_PORT'] == '9000'
        assert n.env['DMLC_NUM_WORKER'] == '3' and n.env['DMLC_NUM_SERVER'] == '2' and n.env['DMLC_ROLE'] == n.role
    workers = [n for n in nodes if n.role == 'worker']
    assert [w.env['MXPRUNE_LOCAL_PROCS'] for w in workers] == ['2', '1', '2']
    cmd = launch.remote_command(workers[0], '/work dir')
    assert cmd[:4] == ['ssh', '-tt', '-o', 'BatchMode=yes'] and cmd[4] == 'a'
    assert "cd '/work dir' && OMP_NUM_THREADS=$(( $(nproc) / 2" in cmd[5] and 'DMLC_ROLE=worker' in cmd[5]
    local = launch.plan(2, 1, [launch.LOOPBACK], ['w'], root_uri=launch.LOOPBACK, port=1, python='py', base_env={})
    assert all(int(n.env['OMP_NUM_THREADS']) >= 1 for n in local)
    kept = launch.plan(2, 1, [launch.LOOPBACK], ['w'], root_uri=launch.LOOPBACK, port=1, python='py',
                       base_env={'OMP_NUM_THREADS': '7'})
    assert [n.env['OMP_NUM_THREADS'] for n in kept if n.role == 'worker'] == ['7', '7']


def test_launcher_errors_are_one_line(tmp_path):
    res = _launch(['-n', '2'], tmp_path)
    assert res.returncode == 2 and res.stderr.strip().count('\n') == 0 and 'no worker command' in res.stderr
    bad = tmp_path / 'hosts'
    bad.write_text('a b\n')
    res = _launch(['-n', '2', '--hostfile', str(bad), '--', 'true'], tmp_path)
    assert res.returncode == 2 and 'line 1' in res.stderr and res.stderr.strip().count('\n') == 0


def test_single_process_and_backend_errors(monkeypatch):
    from mxprune import distributed
    monkeypatch.delenv('DMLC_ROLE', raising=False)
    for k in distributed.HOROVOD_ENV:
        monkeypatch.delenv(k, raising=False)
    assert distributed.from_env() is None and distributed.from_env('none') is None
    with pytest.raises(distributed.DistributedError, match='tools/launch.py'):
        distributed.from_env('dist_sync')
    with pytest.raises(distributed.DistributedError, match="expected one of auto, none, dist_sync"):
        distributed.from_env('dist_async')
    try:
        import horovod.mxnet  # noqa: F401
    except ImportError:
        with pytest.raises(distributed.DistributedError, match='HOROVOD_WITH_MXNET=1 .*pip install'):
            distributed.from_env('horovod')


def test_recipe_choices_match_the_backends():
    from mxprune import distributed, recipe
    fields = {f.name: f for f in recipe.DistributedConfig.__dataclass_fields__.values()}
    assert tuple(fields['backend'].metadata['choices']) == distributed.CHOICES
    assert tuple(fields['bn'].metadata['choices']) == tuple(distributed.BN_POLICIES)


def test_a_measured_latency_target_is_refused_with_several_workers():
    import types
    from mxprune import pipeline, recipe
    from mxprune.errors import RecipeError
    rec = recipe.load(os.path.join(ROOT, 'recipes', 'quickstart.yaml'),
                      ['pruning.0.target={speedup: 1.5}'])
    two = types.SimpleNamespace(num_workers=2, rank=0)
    with pytest.raises(RecipeError, match=r'pruning\.0\.target: a speedup target is not allowed with 2 workers'):
        pipeline.worker_data(rec, two)
    one = types.SimpleNamespace(num_workers=1, rank=0)
    assert pipeline.worker_data(rec, one).batch_size == rec.data.batch_size

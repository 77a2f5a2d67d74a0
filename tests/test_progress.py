"""Progress bars of the long phases (latency table, timing, attacks) reach stderr, and the switch turns them off."""
import numpy as np
import pytest
from mxnet import gluon

import nets
from mxprune import benchmark, latency, progress, robustness


@pytest.fixture
def bars_on(monkeypatch):
    monkeypatch.setattr(progress, 'ENABLED', True)
    monkeypatch.setattr(progress, 'bar', lambda *a, **kw: _eager(*a, **kw))


def _eager(iterable=None, **kw):
    """tqdm redraws at most once a second; a test of a sub-second phase asks for every update."""
    from tqdm import tqdm
    enabled = kw.pop('enabled', None)
    on = progress.ENABLED if enabled is None else enabled
    return tqdm(iterable, desc=kw['desc'], total=kw.get('total'), unit=kw.get('unit', 'it'), disable=not on,
                leave=True, mininterval=0)


def _tiny():
    net = nets.build('residual')
    net.hybridize()
    return net


def test_benchmark_counts_its_timing_rounds(bars_on, capsys):
    benchmark.speedup(_tiny(), _tiny(), nets.SHAPE, batches=(1, 2), backend=None, repeats=2)
    err = capsys.readouterr().err
    assert 'timing dense and pruned' in err and '4/4' in err


def test_quiet_benchmark_prints_nothing(capsys, monkeypatch):
    monkeypatch.setattr(progress, 'ENABLED', False)
    benchmark.speedup(_tiny(), _tiny(), nets.SHAPE, batches=(1,), backend=None, repeats=2)
    assert capsys.readouterr().err == ''


def test_robustness_counts_its_batches(bars_on, capsys):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 255, (4,) + nets.SHAPE[2:] + (3,)).astype(np.uint8)
    robustness.evaluate({'a': _tiny()}, images, rng.randint(0, 4, 4), (0.5,) * 3, (0.25,) * 3,
                        eps_list=(8 / 255,), pgd_steps=1, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert 'FGSM/PGD attacks' in err and '2/2' in err


def test_latency_table_counts_the_entries_it_times(bars_on, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(latency, '_build', _dense)
    table = latency.LatencyTable(2, 'plain', repeats=2, path=str(tmp_path / 'table.json'))
    table.get(('dense', 1), 3, 4)
    table.get(('dense', 1), 5, 4)
    err = capsys.readouterr().err
    assert 'latency table (batch 2)' in err and '2 entries' in err


def _dense(sig, cin, cout):
    """Every entry (and the reference) timed as a small Dense layer: the bar, not the timing, is under test."""
    net = gluon.nn.Dense(cout, in_units=cin)
    net.initialize()
    return net, (cin,)

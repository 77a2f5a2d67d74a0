"""Latency-aware pruning: the table, the predictor, the greedy search (on a synthetic table), and a real target."""
import re

import numpy as np
import pytest

import nets
import mxprune as mp
from mxprune import latency
from mxprune.errors import OverPruneError
from mxprune.graph import DependencyGraph, Selection

IN = (1,) + nets.SHAPE[1:]


class FakeTable:
    """Cost = cin * cout, except widths that are not multiples of 4 cost ten times more (a 'slow' width)."""
    path = 'memory'
    entries = {}

    def get(self, sig, cin, cout):
        slow = 10.0 if (cin % 4 or cout % 4) and sig[0] == 'conv' else 1.0
        return cin * cout * slow / 100.0

    def save(self):
        pass


def fake_model(net):
    graph = DependencyGraph.trace(net, IN)
    m = object.__new__(latency.LatencyModel)
    m.net, m.graph, m.input_shape, m.batch, m.step = net, graph, IN, 8, 2
    m.table = FakeTable()
    m.predictor = latency.Predictor(graph, m.table)
    m.dense_keep = {g.index: np.ones(g.size, bool) for g in graph.groups}
    m.dense_ms = m.predict({})
    return m, graph


def depthwise_problem():
    """The depthwise net on the synthetic table: model, prunable groups, random scores, every channel kept."""
    m, graph = fake_model(nets.build('depthwise'))
    groups = graph.prunable_groups(Selection(skip_first=False))
    rng = np.random.RandomState(0)
    scores = {g.index: rng.uniform(size=g.size) for g in groups}
    current = {g.index: np.ones(g.size, bool) for g in groups}
    return m, groups, scores, current


def first(current, counts):
    """Keep-masks of the first `n` channels per group: what the table's predictions depend on."""
    return {gi: np.arange(len(current[gi])) < n for gi, n in counts.items()}


def test_predictor_counts_widths_through_the_groups():
    m, graph = fake_model(nets.build('residual'))
    keep = {graph.group_of('b1.0.0').index: np.array([1, 1, 0, 0, 1, 1], bool)}
    b1 = graph.layer('b1.0.0')
    assert m.predictor.widths(b1, {**m.dense_keep, **keep}) == (8, 4)
    assert m.predictor.widths(graph.layer('b1.1'), {**m.dense_keep, **keep}) == (4, 8)
    assert m.predict(keep) < m.dense_ms


def test_greedy_meets_the_target_and_never_picks_a_slow_width():
    m, groups, scores, current = depthwise_problem()
    target = 0.6 * m.dense_ms
    counts = latency.greedy(m, groups, scores, current, target, lambda gi, n: 1)
    assert m.predict(first(current, counts)) <= target
    assert all(n % 4 == 0 or n == len(current[gi]) for gi, n in counts.items()), counts
    with pytest.raises(OverPruneError, match='cannot be reached'):
        latency.greedy(m, groups, scores, current, 1e-6, lambda gi, n: n)


def test_the_greedy_spends_importance_where_it_is_cheap():
    m, graph = fake_model(nets.build('residual'))
    groups = [graph.group_of('b1.0.0'), graph.group_of('b2.0.0')]
    scores = {groups[0].index: np.full(6, 10.0), groups[1].index: np.full(6, 0.01)}  # b2's channels are cheap to lose
    current = {g.index: np.ones(6, bool) for g in groups}
    counts = latency.greedy(m, groups, scores, current, m.dense_ms - 1e-3, lambda gi, n: 1)
    assert counts[groups[1].index] < 6 and counts[groups[0].index] == 6


def test_the_greedy_weighs_a_channel_by_the_macs_it_carries():
    # equal scores; on a table where a layer's time is cin * cout (no slow widths, kernel and map size ignored),
    # `down` (stride 2) saves far more time per MAC than b1's 3x3 convs at full resolution: cut it first.
    # Counting channels (or coupled layers) instead would cut b1 first (it saves more time per channel).
    m, graph = fake_model(nets.build('residual'))
    m.predictor.table.get = lambda sig, cin, cout: cin * cout / 100.0
    m.dense_ms = m.predict({})
    b1, down = graph.group_of('b1.0.0'), graph.group_of('down.0')
    scores = {g.index: np.ones(g.size) for g in (b1, down)}
    current = {g.index: np.ones(g.size, bool) for g in (b1, down)}
    counts = latency.greedy(m, [b1, down], scores, current, m.dense_ms - 1e-3, lambda gi, n: 1)
    assert counts == {b1.index: 6, down.index: 14}


@pytest.mark.parametrize('name', ['residual', 'depthwise', 'concat', 'flatten'])
def test_predicted_macs_are_the_flops_count(name):
    m, graph = fake_model(nets.build(name))
    rng = np.random.RandomState(1)
    for _ in range(3):
        keep = {g.index: rng.uniform(size=g.size) < 0.6 for g in graph.prunable_groups(Selection(skip_first=False))}
        for k in keep.values():
            k[0] = True
        assert m.predictor.macs(keep) == mp.flops.structured(graph, keep).macs


def test_every_width_the_greedy_tries_keeps_the_highest_scored_channels():
    m, graph = fake_model(nets.build('depthwise'))
    group = graph.group_of('expand.0')
    scores = {group.index: np.arange(group.size, dtype=float)}
    current = {group.index: np.ones(group.size, bool)}
    tried = []
    predict = m.predict
    m.predict = lambda keep: tried.append(keep[group.index].copy()) or predict(keep)
    counts = latency.greedy(m, [group], scores, current, 0.0, lambda gi, n: 1, narrowest=True)
    assert counts[group.index] <= 8  # narrowed at least twice (16 -> 12 -> 8), so later trials start from a cut
    for k in tried:
        assert np.flatnonzero(k).tolist() == list(range(group.size - int(k.sum()), group.size)), k


def test_search_corrects_the_target_by_measuring_the_chosen_net():
    m, groups, scores, current = depthwise_problem()
    target = 0.9 * m.dense_ms
    nets_timed = []

    def measure(keep):  # the real net runs 15 % slower than the table predicts
        nets_timed.append(keep)
        return 1.15 * m.predict(keep)
    counts, rep = latency.search(m, groups, scores, current, target, lambda gi, n: 1, measure=measure)
    assert len(rep['rounds']) >= 2 and len(nets_timed) == len(rep['rounds'])
    r0 = rep['rounds'][0]
    assert r0['predicted_ms'] <= target < r0['measured_ms']  # the table alone would have missed the target
    assert rep['met'] and rep['measured_ms'] <= target and rep['rounds'][1]['goal_ms'] < target
    assert rep['measured_ms'] == rep['rounds'][1]['measured_ms']
    assert 1.15 * m.predict(first(current, counts)) == pytest.approx(rep['measured_ms'])
    # a table that is too pessimistic: the first net is faster than needed, the next one keeps more
    counts, rep = latency.search(m, groups, scores, current, 0.7 * m.dense_ms, lambda gi, n: 1,
                                 measure=lambda keep: 0.8 * m.predict(keep))
    assert rep['met'] and rep['measured_ms'] > rep['rounds'][0]['measured_ms']


def test_refill_widens_back_into_the_budget_and_never_past_it():
    m, groups, scores, current = depthwise_problem()
    narrow = latency.greedy(m, groups, scores, current, 0.4 * m.dense_ms, lambda gi, n: 1)
    predict = lambda counts: m.predict(first(current, counts))  # noqa: E731
    budget = 0.75 * m.dense_ms
    wide = latency.refill(m, groups, scores, current, narrow, budget)
    assert predict(narrow) < predict(wide) <= budget
    assert all(wide[gi] >= narrow[gi] for gi in narrow) and wide != narrow
    assert latency.refill(m, groups, scores, current, narrow, predict(narrow)) == narrow


def test_search_times_the_narrowest_net_before_refusing_a_target():
    m, groups, _, current = depthwise_problem()
    scores = {g.index: np.arange(g.size, dtype=float) for g in groups}
    narrowest = latency.greedy(m, groups, scores, current, 0.0, lambda gi, n: 1, narrowest=True)
    floor = m.predict(first(current, narrowest))
    target = 0.9 * floor  # the table says the limits cannot reach it; the real net is faster than the table
    counts, rep = latency.search(m, groups, scores, current, target, lambda gi, n: 1,
                                 measure=lambda keep: 0.8 * m.predict(keep))
    assert rep['met'] and rep['rounds'][0]['predicted_ms'] == pytest.approx(floor)
    with pytest.raises(OverPruneError, match='narrowest widths the limits allow measured'):
        latency.search(m, groups, scores, current, target, lambda gi, n: 1, measure=m.predict)


def test_a_speedup_target_prunes_by_measured_latency(tmp_path, monkeypatch):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))  # a fresh table, measured here and cached
    net = nets.build('residual')
    mod = mp.PruningModifier('l2', scope='global', target={'speedup': 1.2, 'batch': 64}, round_to=2)
    s = mp.Session(net, IN, 1, [mod])
    try:
        s.prune_now()
    except OverPruneError as e:
        # on a CPU whose oneDNN blocks are 8 channels wide (AVX2) this 8-channel net has no faster width: the
        # narrowest one is timed and the target refused, naming both times
        narrowest, dense = (float(v) for v in re.search(r'measured ([\d.]+) ms .* dense ([\d.]+) ms', str(e)).groups())
        assert narrowest > dense / 1.2 and (tmp_path / 'mxprune').exists()
        return
    rep = mod.latency_report
    assert rep['target_ms'] == pytest.approx(rep['dense_ms'] / 1.2) and rep['rounds']
    assert all(r['measured_ms'] > 0 for r in rep['rounds'])
    assert rep['measured_ms'] <= rep['target_ms'] if rep['met'] else rep['measured_ms'] == min(
        r['measured_ms'] for r in rep['rounds'])
    assert rep['table_entries'] > 0 and (tmp_path / 'mxprune').exists()
    assert s.sparsity()['macs_ratio'] < 1.0
    small, plan = s.finalize()
    assert plan.groups
    with pytest.raises(mp.MxPruneError, match='use scope global'):
        mp.PruningModifier('l2', scope='local', target={'speedup': 1.2})
    with pytest.raises(mp.RecipeError, match='expected exactly one of sparsity, macs, params, latency, speedup'):
        mp.PruningModifier('l2', target={'speedup': 1.2, 'macs': 0.5})


def test_the_convs_feeding_a_residual_add_are_timed_with_it():
    paths = {}
    for name in ('residual', 'depthwise', 'concat'):
        graph = DependencyGraph.trace(nets.build(name), IN)
        found = latency.residual_convs(graph)
        paths[name] = sorted(layer.path for layer in graph.layers if layer.node in found)
    assert paths == {'residual': ['b1.1', 'b2.1'], 'depthwise': ['project.0'], 'concat': []}
    graph = DependencyGraph.trace(nets.build('residual'), IN)
    p = latency.Predictor(graph, FakeTable())
    sigs = {layer.path: sig for layer, sig in p.layers}
    assert sigs['b1.1'][-1] == 'sum' and sigs['b1.0.0'][-1] is False and sigs['down.0'][-1] is False


def test_table_entries_are_in_reference_units_and_do_not_drift_with_the_machine(monkeypatch, tmp_path):
    import mxnet as mx
    clock, calls, load = [0.0], [], [1.0]

    class Net:  # each call advances a fake clock by its ms times the machine's current load
        def __init__(self, name, ms):
            self.name, self.ms = name, ms

        def hybridize(self, **kw):
            pass

        def __call__(self, x):
            calls.append(self.name)
            clock[0] += self.ms / 1000 * load[0] * (3 if len(calls) == 9 else 1)  # round 1 has a slow call
            return mx.nd.zeros(1)
    monkeypatch.setattr(latency.time, 'perf_counter', lambda: clock[0])
    monkeypatch.setattr(latency, '_build', lambda sig, cin, cout: (Net('ref', 0.5), (1,)) if sig == latency.REFERENCE
                        else (Net('fc', 2.0), (cin,)))
    path = str(tmp_path / 'table.json')
    table = latency.LatencyTable(4, 'plain', repeats=5, path=path)
    assert table.get(('dense', 1), 3, 4) == pytest.approx(2.0)
    assert calls[6:9] == ['fc'] * 3 and calls[9:12] == ['ref'] * 3  # warm-up, then rounds of 3 calls alternate
    assert calls[6:] == (['fc'] * 3 + ['ref'] * 3) * 5
    table.save()
    load[0] = 1.5  # the machine is slower for the next entries: they are still in the first entry's milliseconds
    later = latency.LatencyTable(4, 'plain', repeats=5, path=path)
    assert later.reference_ms == pytest.approx(0.5)
    assert later.get(('dense', 1), 5, 4) == pytest.approx(2.0)

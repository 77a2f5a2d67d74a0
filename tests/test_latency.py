"""Latency-aware pruning: the table, the predictor, the greedy search (on a synthetic table), and a real target."""
import dataclasses

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon
from mxnet.gluon import nn

import nets
import mxprune as mp
from mxprune import allocation, latency
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
    """A LatencyModel on the synthetic table, its 'measured' dense latency the prediction (nothing is timed)."""
    graph = DependencyGraph.trace(net, IN)
    m = object.__new__(allocation.LatencyModel)
    m.net, m.graph, m.input_shape, m.batch, m.step = net, graph, IN, 8, 2
    m.table = FakeTable()
    m.predictor = latency.Predictor(graph, m.table)
    m.dense_keep = {g.index: np.ones(g.size, bool) for g in graph.groups}
    m.dense_ms = m.predict({})
    return m, graph


def depthwise_problem(budget_fraction=0.6, step=2):
    """The depthwise net on the synthetic table as an allocation problem: random scores, every channel alive."""
    m, graph = fake_model(nets.build('depthwise'))
    groups = graph.prunable_groups(Selection(skip_first=False))
    rng = np.random.RandomState(0)
    scores = {g.index: rng.uniform(size=g.size) for g in groups}
    current = {g.index: np.ones(g.size, bool) for g in groups}
    p = allocation.Problem(scores, current, m.predictor, budget_fraction * m.dense_ms, step=step)
    return m, p


def test_predictor_counts_widths_through_the_groups():
    m, graph = fake_model(nets.build('residual'))
    keep = {graph.group_of('b1.0.0').index: np.array([1, 1, 0, 0, 1, 1], bool)}
    index = {layer.path: i for i, layer in enumerate(m.predictor.index.layers)}
    full = {**m.dense_keep, **keep}
    for path, want in (('b1.0.0', (8, 4)), ('b1.1', (4, 8))):
        i = index[path]
        assert tuple(int(v[0]) for v in m.predictor.widths(i, m.predictor.index.shapes(i, full))) == want
    assert m.predict(keep) < m.dense_ms


def test_the_knapsack_meets_a_latency_budget_and_never_keeps_a_slow_width():
    m, p = depthwise_problem()
    counts = allocation.Knapsack().allocate(p)
    assert p.total(counts) <= p.budget
    # widths that are not multiples of 4 cost ten times more here: dominated, never chosen
    assert all(n % 4 == 0 or n == p.alive(gi) for gi, n in counts.items()), counts
    with pytest.raises(OverPruneError, match='cannot be reached'):
        allocation.Knapsack().allocate(dataclasses.replace(p, budget=1e-6))


def test_the_predictor_never_predicts_a_non_positive_time():
    # two wide nets whose times fit a line with a negative intercept: a narrow net would be predicted below zero
    m, p = depthwise_problem()
    narrow = p.keep(p.narrowest())
    half = p.keep({gi: max(2, p.alive(gi) // 2) for gi in p.groups})
    raw_dense, raw_half = m.predictor.raw(m.dense_keep), m.predictor.raw(half)
    c = 0.5 * raw_dense
    m.predictor.calibrate([(m.dense_keep, 2.0 * raw_dense - c), (half, 2.0 * raw_half - c)])
    assert np.polyfit([raw_dense, raw_half], [2.0 * raw_dense - c, 2.0 * raw_half - c], 1)[1] < 0
    assert m.predictor.a > 0 and m.predictor.b >= 0
    assert m.predictor.total(narrow) > 0
    for _ in range(20):
        rng = np.random.RandomState(_)
        keep = {gi: rng.uniform(size=len(k)) < 0.3 for gi, k in p.current.items()}
        for k in keep.values():
            k[0] = True
        assert m.predictor.total(keep) > 0


def test_search_corrects_the_budget_by_measuring_the_chosen_net():
    m, p = depthwise_problem()
    target = 0.9 * m.dense_ms
    nets_timed = []

    def measure(keep):  # the real net runs 15 % slower than the table predicts
        nets_timed.append(keep)
        return 1.15 * m.predict(keep)
    knap = allocation.Knapsack()
    counts, rep = allocation.search(knap, p, m, target, measure=measure)
    assert len(rep['rounds']) >= 2 and len(nets_timed) == len(rep['rounds'])
    r0 = rep['rounds'][0]
    assert r0['predicted_ms'] <= target < r0['measured_ms']  # the table alone would have missed the target
    assert rep['met'] and rep['measured_ms'] <= target and rep['rounds'][1]['goal_ms'] < target
    assert 1.15 * m.predict(p.keep(counts)) == pytest.approx(rep['measured_ms'])
    # a table that is too pessimistic: the first net is faster than needed, the next one keeps more
    counts, rep = allocation.search(knap, p, m, 0.7 * m.dense_ms, measure=lambda keep: 0.8 * m.predict(keep))
    assert rep['met'] and rep['measured_ms'] > rep['rounds'][0]['measured_ms']


def test_a_gradual_latency_target_times_its_plan_at_every_step_so_the_end_is_not_over_cut():
    net = nets.build('depthwise')
    m, _ = fake_model(net)
    m.measure = lambda keep: 0.8 * m.predict(keep)  # the table is 20 % pessimistic
    m.calibration = {}
    mod = mp.PruningModifier('l2', target={'speedup': 1.5, 'batch': 8}, round_to=2,
                             schedule=mp.schedules.Gradual(0, 1, steps=4, curve='cubic'))
    s = mp.Session(net, IN, 8, [mod])
    mod.latency_model, mod._cost = m, m.predictor
    for _ in range(9):
        s.before_update(2)
        s.after_update()
    plans = [t for t in mod.latency_steps if t.get('plan')]
    assert len(plans) == 3 and all(t['passes'] >= 1 for t in plans)
    target = m.dense_ms / 1.5
    # every planned net was measured; after the first, the plan is corrected toward the target, not 20 % under it
    assert all(t['measured_ms'] <= target + 1e-9 for t in plans)
    assert plans[-1]['measured_ms'] >= 0.9 * target
    final = mod.latency_steps[-1]
    assert not final.get('plan') and 0.9 * target <= final['measured_ms'] <= target + 1e-9


def test_search_times_the_narrowest_net_before_refusing_a_target():
    m, p = depthwise_problem()
    floor = p.total(p.cheapest())
    assert floor < p.total(p.narrowest())  # 2 channels are a slow width here: 4 are faster
    target = 0.9 * floor  # the table says the limits cannot reach it; the real net is faster than the table
    counts, rep = allocation.search(allocation.Knapsack(), p, m, target, measure=lambda keep: 0.8 * m.predict(keep))
    assert rep['met'] and rep['rounds'][0]['predicted_ms'] == pytest.approx(floor)
    with pytest.raises(OverPruneError, match='fastest widths the limits allow measured'):
        allocation.search(allocation.Knapsack(), p, m, target, measure=m.predict)


class Wide(gluon.HybridBlock):
    """A 16 -> 64 -> 64 conv chain: its 64-channel group dominates the time and can be cut in blocks of 16."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.stem, self.c1, self.c2 = nets.conv_bn(16), nets.conv_bn(64), nets.conv_bn(64)
            self.pool, self.fc = nn.GlobalAvgPool2D(), nn.Dense(4)

    def hybrid_forward(self, F, x):
        return self.fc(self.pool(self.c2(self.c1(self.stem(x)))))


@pytest.mark.e2e
def test_a_speedup_target_prunes_by_measured_latency(tmp_path, monkeypatch):
    # real timing, so the net is chosen to make the outcome certain on any CPU: oneDNN's channel blocks are 8 or 16
    # wide, so 64 channels cut in blocks of 16 run several times faster and a 2x target must be met, with a margin
    # that timing noise on a shared machine does not close (a refused target is checked on a synthetic table in
    # test_search_times_the_narrowest_net_before_refusing_a_target)
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))  # a fresh table, measured here and cached
    mx.random.seed(0)
    net = Wide()
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros(IN))
    net.hybridize()
    mod = mp.PruningModifier('l2', target={'speedup': 2.0, 'batch': 16}, round_to=16)
    s = mp.Session(net, IN, 1, [mod])
    s.prune_now()
    rep = mod.latency_report
    assert rep['met'] and rep['target_ms'] == pytest.approx(rep['dense_ms'] / 2.0)
    assert rep['rounds'] and all(r['measured_ms'] > 0 for r in rep['rounds'])
    assert rep['measured_ms'] <= rep['target_ms'] and rep['measured_ms'] in [r['measured_ms'] for r in rep['rounds']]
    assert rep['table_entries'] > 0 and (tmp_path / 'mxprune').exists()
    assert s.sparsity()['macs_ratio'] < 1.0
    small, plan = s.finalize()
    assert plan.groups and all(len(g['keep']) % 16 == 0 for g in plan.groups.values())


def test_a_speedup_target_takes_no_ratios_and_no_second_target():
    with pytest.raises(mp.MxPruneError, match='ratios: layer-wise ratios are not allowed with a speedup target'):
        mp.PruningModifier('l2', ratios={'b1.*': 0.5}, target={'speedup': 1.2})
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
    sigs = {layer.path: p.signatures[id(layer)] for layer in graph.weighted_layers()}
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

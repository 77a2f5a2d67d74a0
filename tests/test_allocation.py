"""Allocation: the knapsack solver against brute force, the cost models against flops.structured, every allocator's
contract (budget met, candidate widths, refusals), the gradual schedule, and the group Taylor saliency."""
import dataclasses
import itertools

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

import nets
import mxprune as mp
from mxprune import allocation, criteria, flops, schedules
from mxprune.errors import OverPruneError
from mxprune.graph import DependencyGraph, Selection

IN = (1,) + nets.SHAPE[1:]


def brute_force(values, costs, budget):
    best = None
    for choice in itertools.product(*[range(len(v)) for v in values]):
        cost = sum(c[o] for c, o in zip(costs, choice))
        value = sum(v[o] for v, o in zip(values, choice))
        if cost <= budget and (best is None or value > best):
            best = value
    return best


@pytest.mark.parametrize('seed', range(12))
def test_the_knapsack_equals_brute_force_on_small_instances(seed):
    rng = np.random.RandomState(seed)
    items = rng.randint(2, 5)
    values = [np.sort(rng.uniform(0, 10, rng.randint(2, 5))) for _ in range(items)]
    costs = [np.sort(rng.randint(0, 12, len(v))) for v in values]
    budget = int(rng.randint(0, sum(c.max() for c in costs) + 1))
    want = brute_force(values, costs, budget)
    got = allocation.solve(values, costs, budget, unit=1.0)
    if want is None:
        assert got is None
        return
    assert sum(c[o] for c, o in zip(costs, got)) <= budget
    assert sum(v[o] for v, o in zip(values, got)) == pytest.approx(want)


def test_more_budget_never_keeps_less_saliency():
    rng = np.random.RandomState(3)
    values = [np.cumsum(rng.uniform(0, 1, 6)) for _ in range(8)]
    costs = [np.cumsum(rng.uniform(0, 5, 6)) for _ in range(8)]
    kept, last = [], -1.0
    for budget in np.linspace(sum(c.min() for c in costs), sum(c.max() for c in costs), 40):
        choice = allocation.solve(values, costs, budget)
        assert sum(c[o] for c, o in zip(costs, choice)) <= budget + 1e-9
        value = sum(v[o] for v, o in zip(values, choice))
        assert value >= last - 1e-12
        kept.append(value)
        last = value
    assert kept[-1] == pytest.approx(sum(v.max() for v in values))


def test_an_infeasible_budget_is_none_for_the_solver():
    assert allocation.solve([np.array([1.0, 2.0])], [np.array([3.0, 4.0])], 2.0) is None


@pytest.mark.parametrize('name', ['residual', 'depthwise', 'concat', 'flatten'])
def test_macs_and_params_cost_models_are_the_flops_count(name):
    graph = DependencyGraph.trace(nets.build(name), IN)
    macs, params = flops.MacsCost(graph), flops.ParamsCost(graph)
    rng = np.random.RandomState(1)
    groups = graph.prunable_groups(Selection(skip_first=False))
    for _ in range(3):
        keep = {g.index: rng.uniform(size=g.size) < 0.6 for g in groups}
        for k in keep.values():
            k[0] = True
        want = flops.structured(graph, keep)
        assert macs.total(keep) == want.macs and params.total(keep) == want.params
        g = groups[0]  # a curve: every candidate mask of one group, the others held, in one pass
        stack = np.stack([rng.uniform(size=g.size) < 0.5 for _ in range(4)])
        stack[:, 0] = True
        for row, got in zip(stack, macs.curve(g.index, stack, keep)):
            assert got == flops.structured(graph, {**keep, g.index: row}).macs


def problem(name='residual', kind='macs', fraction=0.5, step=1, seed=0, max_ratio=0.9):
    graph = DependencyGraph.trace(nets.build(name), IN)
    groups = graph.prunable_groups(Selection(skip_first=False))
    rng = np.random.RandomState(seed)
    cost = allocation.cost_model(kind, graph, groups)
    current = {g.index: np.ones(g.size, bool) for g in groups}
    lo = {g.index: max(1, int(np.ceil(g.size * (1 - max_ratio)))) for g in groups}
    return allocation.Problem({g.index: rng.uniform(size=g.size) for g in groups}, current, cost,
                              fraction * cost.dense, lo=lo, step=step)


@pytest.mark.parametrize('allocator', sorted(allocation.ALLOCATORS.names()))
class TestAllocatorContract:
    """Every registered allocator: the budget is met, only candidate widths are used, an impossible budget is
    refused naming the smallest reachable cost."""

    @pytest.mark.parametrize('name, kind, step', [('residual', 'macs', 1), ('depthwise', 'macs', 4),
                                                  ('concat', 'params', 2), ('residual', 'channels', 2)])
    def test_meets_the_budget_with_candidate_widths(self, allocator, name, kind, step):
        p = problem(name, kind, 0.6, step)
        counts = allocation.get(allocator).allocate(p)
        assert set(counts) == set(p.groups)
        for gi, n in counts.items():
            assert n in p.widths(gi)
            assert n % step == 0 or n == p.alive(gi) or len(p.current[gi]) < step
        if allocator != 'uniform' or kind != 'channels':  # uniform on channels rounds up, like Torch-Pruning
            assert p.total(counts) <= p.budget

    def test_an_impossible_budget_is_refused_in_one_line(self, allocator):
        p = problem('residual', 'macs', 0.05, 1, max_ratio=0.5)
        reach = p.total(p.cheapest())
        with pytest.raises(OverPruneError) as e:
            allocation.get(allocator).allocate(p)
        msg = str(e.value)
        assert '\n' not in msg and 'cannot be reached' in msg and f'{reach:.6g}' in msg

    def test_a_name_or_an_object(self, allocator):
        obj = allocation.get(allocator)
        assert allocation.get(obj) is obj and obj.registry_name == allocator


def test_the_knapsack_keeps_at_least_the_saliency_of_the_other_allocators():
    for seed in range(4):
        p = problem('depthwise', 'macs', 0.5, 2, seed)
        values = {a: p.value(allocation.get(a).allocate(p)) for a in ('uniform', 'threshold', 'knapsack')}
        assert values['knapsack'] >= max(values['uniform'], values['threshold']) - 1e-9, values


def test_the_knapsack_lands_close_under_the_budget():
    for name, kind in (('residual', 'macs'), ('concat', 'macs'), ('depthwise', 'params')):
        p = problem(name, kind, 0.5, 1)
        counts = allocation.Knapsack().allocate(p)
        cost = p.total(counts)
        assert cost <= p.budget
        # no single group could be widened one width without breaking the budget: the budget is used
        for gi in p.groups:
            w = p.widths(gi)
            i = int(np.searchsorted(w, counts[gi]))
            if i + 1 < len(w):
                assert p.total({**counts, gi: int(w[i + 1])}) > p.budget


def rescanning_fill(p, counts):
    """The knapsack's fill written the slow way: every group's next width costed on the whole net at every move."""
    counts = dict(counts)
    while True:
        best = None
        for gi in p.groups:
            w = p.widths(gi)
            i = int(np.searchsorted(w, counts[gi])) + 1
            if i < len(w):
                wider = {**counts, gi: int(w[i])}
                cost = p.total(wider)
                if p.fits(cost):
                    key = (p.value(wider) - p.value(counts)) / max(cost - p.total(counts), 1e-12)
                    best = best if best is not None and best[0] >= key else (key, gi, int(w[i]))
        if best is None:
            return counts
        counts[best[1]] = best[2]


class NotMonotone:
    """A cost model as a latency table looks to the fill: not known to be monotone (every neighbour costed again)."""
    monotone = False

    def __init__(self, cost):
        self.cost = cost

    def __getattr__(self, name):
        return getattr(self.cost, name)


@pytest.mark.parametrize('lazy', [True, False])
@pytest.mark.parametrize('name, kind', [('residual', 'macs'), ('concat', 'params'), ('depthwise', 'macs'),
                                        ('residual', 'channels')])
def test_the_fill_costing_only_what_a_move_changes_equals_a_rescan_of_the_whole_net(name, kind, lazy):
    for seed in range(3):
        p = problem(name, kind, 0.55, 1, seed)
        if not lazy:
            p = dataclasses.replace(p, cost=NotMonotone(p.cost))
        start = p.narrowest()
        assert allocation.Knapsack().fill(p, start) == rescanning_fill(p, start)


def test_the_knapsack_cuts_where_saliency_is_cheap():
    p = problem('residual', 'macs', 0.8, 1)
    b1, b2 = p.groups[1], p.groups[2]  # two block-internal groups of the same shape
    p.scores[b1] = np.full(6, 10.0)
    p.scores[b2] = np.full(6, 0.01)
    counts = allocation.Knapsack().allocate(p)
    assert counts[b2] < counts[b1]


def test_an_impossible_macs_target_names_the_target_in_the_modifier():
    s = mp.Session(nets.build('residual'), IN, 10, [mp.PruningModifier('l2', target={'macs': 0.05}, max_ratio=0.5)])
    with pytest.raises(OverPruneError, match=r'target macs 0.05 of dense cannot be reached: .* reach at least macs'):
        s.prune_now()


@pytest.mark.parametrize('steps, curve', [(1, 'cubic'), (4, 'cubic'), (5, 'linear'), (30, 'cubic')])
def test_a_gradual_schedule_reaches_its_budget_at_its_last_step_exactly(steps, curve):
    sched = schedules.Gradual(start_epoch=0.0, end_epoch=1.0, steps=steps, curve=curve)
    spe = 10
    updates = [t for t in range(40) if sched.is_update(t, spe)]
    assert updates[-1] == 10 == sched.last_update(spe) and updates[0] > 0
    fr = [sched.fraction(t, spe) for t in updates]
    assert fr[-1] == 1.0 and all(0 < a < b for a, b in zip(fr, fr[1:])) and sched.fraction(9, spe) < 1.0
    net = nets.build('residual')
    mod = mp.PruningModifier('l2', target={'macs': 0.6}, schedule=sched, path='budget')
    s = mp.Session(net, IN, spe, [mod])
    ratios = []
    for t in range(12):
        s.before_update(2)
        if sched.is_update(t, spe):
            ratios.append(s.sparsity()['shrunk_macs'] / s.dense_count.macs)
        s.after_update()
    assert len(ratios) == len(updates)
    assert all(a >= b for a, b in zip(ratios, ratios[1:]))
    assert mod.budget(s, sched.fraction(updates[-1], spe)) == pytest.approx(0.6 * s.dense_count.macs)
    assert 0.5 <= ratios[-1] <= 0.6  # a tiny net: one channel of a 6-wide group is a big step
    for t, r in zip(updates[:-1], ratios[:-1]):
        assert r <= 1.0 - 0.4 * sched.fraction(t, spe) + 1e-9


def test_group_taylor_scores_the_loss_change_of_removing_a_channel():
    net = nets.build('residual')
    mod = mp.PruningModifier('group_taylor', target=0.5, allocator='uniform')
    s = mp.Session(net, IN, 10, [mod])
    x, y = nets.data(0, shape=(16, 3, 16, 16)), mx.nd.array(np.arange(16) % 4)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    s.accumulate([(x, y)], loss_fn, [mx.cpu()])
    g = s.graph.group_of('b1.0.0')
    scores = mod.criterion.group_scores(g, s.effective_params())
    assert mod.criterion.normalizer is None and scores.shape == (6,) and (scores >= 0).all()

    def loss():
        with mx.autograd.train_mode():  # the mode the gradients were taken in (batch statistics)
            return float(loss_fn(net(x), y).sum().asnumpy())
    base, bn, changes = loss(), s.graph.layer('b1.0.1'), []
    for c in range(g.size):  # remove channel c at the BatchNorm gate, measure the loss, put it back
        saved = {k: bn.params[k].data().copy() for k in ('gamma', 'beta')}
        for k, v in saved.items():
            cut = v.asnumpy()
            cut[c] = 0
            bn.params[k].set_data(mx.nd.array(cut))
        changes.append(abs(loss() - base))
        for k, v in saved.items():
            bn.params[k].set_data(v)
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    assert np.corrcoef(rank(scores), rank(changes))[0, 1] >= 0.6, (scores, changes)
    assert np.argmax(scores) in np.argsort(changes)[-2:]
    mod.criterion.reset()
    with pytest.raises(mp.MxPruneError, match='no gradients for group'):
        mod.criterion.group_scores(g, s.effective_params())


def test_a_knapsack_modifier_with_group_taylor_prunes_and_shrinks_equal_to_the_masked_net():
    net = nets.build('residual')
    sched = schedules.Gradual(0, 1, steps=3)
    s = mp.Session(net, IN, 6, [mp.PruningModifier('group_taylor', target={'macs': 0.55}, schedule=sched)])
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.01})
    s.bind_trainer(trainer)
    for t in range(7):
        x, y = nets.data(t), mx.nd.array([t % 4, (t + 1) % 4])
        with mx.autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        s.before_update(2)
        trainer.step(2)
        s.after_update()
    s.catch_up()
    assert s.sparsity()['shrunk_macs'] <= 0.55 * s.dense_count.macs
    x = nets.data(9)
    masked = net(x).asnumpy()
    small, plan = s.finalize()
    np.testing.assert_allclose(small(x).asnumpy(), masked, atol=1e-4)


def test_config_allocator_and_scope():
    from mxprune.modifiers import PruningConfig, resolve_allocator
    assert resolve_allocator(None, None, {}) == 'knapsack'
    assert resolve_allocator(None, 'local', {}) == 'uniform' and resolve_allocator(None, 'global', {}) == 'threshold'
    assert resolve_allocator(None, None, {'a': 0.5}) == 'uniform'
    with pytest.raises(mp.MxPruneError, match='not .knapsack'):
        resolve_allocator('knapsack', 'local', {})
    cfg = PruningConfig(allocator='threshold', target=dataclasses.replace(PruningConfig().target))
    assert isinstance(cfg.build().allocator, allocation.Threshold)
    assert isinstance(mp.PruningModifier('l2', allocator=allocation.Knapsack(bins=64)).allocator, allocation.Knapsack)
    with pytest.raises(mp.MxPruneError, match='unknown allocator'):
        mp.PruningModifier('l2', allocator='greedy')
    assert criteria.get('group_taylor', normalizer='auto').normalizer is None


def test_a_step_ratio_keeps_each_group_near_where_it_is_but_always_lets_it_move():
    p = problem('depthwise', 'macs', 0.3, 2)
    q = dataclasses.replace(p, step_ratio=0.25)
    for gi in q.groups:
        alive, w = q.alive(gi), q.widths(gi)
        assert w[-1] == alive and len(w) >= 2  # one width down is always allowed
        assert w[0] >= alive - max(2, int(0.25 * alive) // 2 * 2)
    counts = allocation.Knapsack().allocate(dataclasses.replace(q, budget=0.8 * q.cost.dense))
    assert all(n in q.widths(gi) for gi, n in counts.items())
    with pytest.raises(OverPruneError):  # the trust region makes the far budget unreachable in one step
        allocation.Knapsack().allocate(q)
    assert p.total(allocation.Knapsack().allocate(p)) <= p.budget


def test_recalibration_refreshes_the_batchnorm_statistics_of_the_pruned_net():
    net = nets.build('residual')
    s = mp.Session(net, IN, 10, [mp.PruningModifier('l2', target=0.5, allocator='uniform')])
    s.prune_now()
    stats = s.graph.layer('b1.2').block.running_mean
    before = stats.data().asnumpy().copy()
    x = nets.data(3, shape=(8, 3, 16, 16))
    out = net(x).asnumpy()
    with mx.autograd.record():  # a training step's backward: its gradients must survive the recalibration
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(x), mx.nd.zeros(8))
    loss.backward()
    weight = s.graph.layer('b1.0.0').params['weight']
    grad = weight.grad().asnumpy().copy()
    assert s.recalibrate([(x, mx.nd.zeros(8))] * 5, [mx.cpu()]) == 5
    np.testing.assert_array_equal(weight.grad().asnumpy(), grad)
    after = stats.data().asnumpy()
    assert not np.allclose(before, after)
    with mx.autograd.train_mode():
        batch_out = net(x).asnumpy()  # what the batch statistics give
    recal_out = net(x).asnumpy()
    assert np.abs(recal_out - batch_out).mean() < np.abs(out - batch_out).mean()


def test_a_gradual_schedule_with_a_step_ratio_spreads_the_cut_and_still_ends_on_its_target():
    net = nets.build('depthwise')
    sched = schedules.Gradual(0, 1, steps=3, curve='cubic')
    mod = mp.PruningModifier('l2', target={'macs': 0.45}, schedule=sched, step_ratio=0.25, round_to=2, path='budget')
    s = mp.Session(net, IN, 6, [mod])
    for _ in range(7):
        s.before_update(2)
        s.after_update()
    widths = [h['widths'] for h in s.history]
    assert len(widths) == 3
    for before, after in zip([{}] + widths, widths[:-1]):  # steps before the last: a quarter of a group at most
        for name, n in after.items():
            was = before.get(name, s.graph.groups[[g.name for g in s.graph.groups].index(name)].size)
            assert n >= was - max(2, int(0.25 * was) // 2 * 2)
    assert s.sparsity()['shrunk_macs'] <= 0.45 * s.dense_count.macs  # the last step is free to reach the target


def test_the_plan_path_moves_every_group_part_of_the_way_to_the_final_plan_and_ends_on_the_target():
    net = nets.build('depthwise')
    sched = schedules.Gradual(0, 1, steps=4, curve='cubic')
    mod = mp.PruningModifier('l2', target={'macs': 0.5}, schedule=sched, round_to=4)
    assert mod.path == 'plan'
    s = mp.Session(net, IN, 8, [mod])
    for _ in range(9):
        s.before_update(2)
        s.after_update()
    assert len(mod.plan_steps) == 3 and len(s.history) == 4
    for step in mod.plan_steps:  # between where the net was and the plan: never past the final budget
        assert step['plan_cost'] <= step['budget'] + 1e-6 and step['step_cost'] >= step['plan_cost'] - 1e-6
    costs = [h['shrunk_macs'] for h in s.history]
    assert all(a >= b for a, b in zip(costs, costs[1:])) and costs[0] < s.dense_count.macs
    assert costs[-1] <= 0.5 * s.dense_count.macs
    sizes = {g.name: g.size for g in s.graph.groups}
    assert all(n % 4 == 0 or n == sizes[name] for name, n in s.history[-1]['widths'].items())  # round_to at the end
    with pytest.raises(mp.MxPruneError, match='path'):
        mp.PruningModifier('l2', path='greedy')

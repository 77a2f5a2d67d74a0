"""The pruning engine on tiny nets: graph, masks, criteria, schedules, modifiers, session, FLOPs, shrink."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

import nets
import mxprune as mp
from mxprune import criteria, flops, masks, schedules
from mxprune.errors import OverPruneError, RecipeError
from mxprune.graph import DependencyGraph, Selection
from mxprune.modifiers import PruningModifier, Regularizer

IN = (1,) + nets.SHAPE[1:]
COUPLED = ['residual', 'concat', 'depthwise', 'flatten', 'se', 'shared_pool']


def session(net, **kw):
    if 'skip_first' in kw:
        kw['selection'] = Selection(skip_first=kw.pop('skip_first'))
    if not {'scope', 'allocator', 'ratios', 'modifiers'} & set(kw):
        kw['allocator'] = 'uniform'  # these tests were written for the same fraction in every group
    kw.setdefault('round_to', 1)  # the toy nets' groups are narrower than a CPU's channel block ('auto')
    mods = kw.pop('modifiers', None) or [PruningModifier(kw.pop('criterion', 'l2'), **kw)]
    return mp.Session(net, IN, steps_per_epoch=10, modifiers=mods)


# ------------------------------------------------------------------------------------------------ graph

def test_residual_groups_couple_stem_and_block_outputs():
    g = DependencyGraph.trace(nets.build('residual'), IN)
    stem = g.group_of('stem.0')
    paths = {(m.layer.path, m.role) for m in stem.members}
    assert {('stem.0', 'out'), ('b1.1', 'out'), ('b2.1', 'out'), ('b1.0.0', 'in'), ('b2.0.0', 'in'),
            ('down.0', 'in'), ('b1.2', 'chan'), ('b2.2', 'chan')} <= paths
    assert g.group_of('b1.0.0').size == 6 and g.group_of('b1.0.0') is not stem
    assert 'stem.0 (Conv2D) out channels [0:8]' in stem.details() and '=> b1.1 (Conv2D) out channels' in \
        stem.details()


def test_concat_maps_channel_ranges():
    g = DependencyGraph.trace(nets.build('concat'), IN)
    l1 = g.group_of('l1.0')
    bn1 = [m for m in l1.members if m.layer.path == 'bn1']
    assert bn1[0].positions[:, 0].tolist() == [8, 9, 10, 11]  # l1's 4 channels sit after the stem's 8
    trans_in = [m for m in l1.members if m.layer.path == 'trans.0' and m.role == 'in']
    assert trans_in[0].positions[:, 0].tolist() == [8, 9, 10, 11]
    l2_trans = [m for m in g.group_of('l2.0').members if m.layer.path == 'trans.0']
    assert l2_trans[0].positions[:, 0].tolist() == list(range(12, 18))


def test_depthwise_couples_its_input_and_output():
    g = DependencyGraph.trace(nets.build('depthwise'), IN)
    expand = g.group_of('expand.0')
    roles = {(m.layer.path, m.role) for m in expand.members}
    assert ('dw.0', 'chan') in roles and ('project.0', 'in') in roles
    assert g.group_of('stem.0') is g.group_of('project.0')  # the shortcut add


def test_flatten_feeds_dense_with_repeats():
    g = DependencyGraph.trace(nets.build('flatten'), IN)
    fc1_in = [m for m in g.group_of('conv.0').members if m.layer.path == 'fc1' and m.role == 'in'][0]
    assert fc1_in.positions.shape == (6, 16)  # 6 channels x (4 x 4) positions after pooling
    assert fc1_in.positions[1].tolist() == list(range(16, 32))


def test_squeeze_excitation_couples_gate_and_trunk():
    g = DependencyGraph.trace(nets.build('se'), IN)
    trunk = g.group_of('conv.0')
    assert g.group_of('se_up') is trunk
    assert any(m.layer.path == 'se_down' and m.role == 'in' for m in trunk.members)


def test_a_block_called_twice_keeps_both_nodes_apart():
    g = DependencyGraph.trace(nets.build('shared_pool'), IN)
    fc_in = [m for grp in g.groups for m in grp.members if m.layer.path == 'fc' and m.role == 'in']
    assert sorted((m.positions[0, 0], len(m.channels)) for m in fc_in) == [(0, 6), (6, 10)]
    assert not g.unsupported


def test_unknown_operator_is_reported_and_frozen():
    g = DependencyGraph.trace(nets.build('unknown'), IN)
    assert [op for op, _ in g.unsupported] == ['reverse']
    assert 'reverse' in g.group_of('a.0').frozen and 'softmax' in g.group_of('b.0').frozen
    assert 'operators without a channel rule' in g.summary()
    prunable = {grp.name for grp in g.prunable_groups()}
    assert prunable == {'c.0:out'}


def test_selection_patterns_and_defaults():
    g = DependencyGraph.trace(nets.build('residual'), IN)
    assert [la.path for la in g.firsts] == ['stem.0'] and [la.path for la in g.outputs] == ['fc']
    assert {grp.name for grp in g.prunable_groups()} == {'b1.0.0:out', 'b2.0.0:out', 'down.0:out'}
    everything = Selection(skip_first=False)
    assert 'stem.0:out' in {grp.name for grp in g.prunable_groups(everything)}
    only_b1 = Selection(include=('b1.*',))
    assert {grp.name for grp in g.prunable_groups(only_b1)} == {'b1.0.0:out'}
    regex = Selection(exclude=('re:^b\\d',))
    assert {grp.name for grp in g.prunable_groups(regex)} == {'down.0:out'}


# ------------------------------------------------------------------------------------------------ masks

def test_masks_keep_names_hybridized_equals_imperative_and_grads_are_zero():
    net = nets.build('residual', hybridize=False)
    s = session(net, target=0.5)
    names = set(net.collect_params().keys())
    assert all(n.endswith('weight_mask') or n in names for n in names)
    layer = s.graph.layer('b1.0.0')
    rng = np.random.RandomState(0)
    mask = (rng.uniform(size=layer.params['weight'].shape) > 0.5).astype(np.float32)
    masks.set_mask(layer.block, mask)
    x = nets.data()
    imperative = net(x).asnumpy()
    net.hybridize()
    hybrid = net(x).asnumpy()
    np.testing.assert_allclose(imperative, hybrid, atol=1e-5)
    for p in net.collect_params().values():
        if p.grad_req != 'null':
            p.data()[:] += 0.01  # raw weights away from zero: only the mask can zero the gradient
    with autograd.record():
        loss = net(x).sum()
    loss.backward()
    g = layer.params['weight'].grad().asnumpy()
    assert np.all(g[mask == 0] == 0) and np.any(g[mask == 1] != 0)


def test_pruned_weights_stay_zero_under_momentum_and_weight_decay():
    net = nets.build('residual')
    trainer = gluon.Trainer(net.collect_params(), 'nag', {'learning_rate': 0.1, 'momentum': 0.9, 'wd': 1e-3})
    s = mp.Session(net, IN, 5, [PruningModifier('l1', target=0.5, schedule=schedules.OneShot(1), round_to=1)],
                   trainer=trainer)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    y = mx.nd.array([0, 1])
    for step in range(12):
        x = nets.data(step)
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        s.before_update(2)
        trainer.step(2)
        s.after_update()
    assert s.step == 12 and s.history and s.history[0]['step'] == 5
    for layer in s.masked:
        m = masks.mask_of(layer.block)
        w = layer.params['weight'].data().asnumpy()
        assert (m == 0).any()
        assert np.all(w[m == 0] == 0.0), layer.path


def test_masks_save_and_load_with_params_and_dense_checkpoints_still_load(tmp_path):
    net = nets.build('concat')
    dense_file = str(tmp_path / 'dense.params')
    net.save_parameters(dense_file)
    s = session(net, target=0.5)
    s.prune_now()
    x = nets.data()
    out = net(x).asnumpy()
    masked_file = str(tmp_path / 'masked.params')
    net.save_parameters(masked_file)
    assert any(k.endswith('weight_mask') for k in mx.nd.load(masked_file))
    fresh = nets.build('concat', seed=5)
    fs = session(fresh, target=0.5)
    fresh.load_parameters(masked_file)
    fs.load_state_dict(s.state_dict())
    np.testing.assert_allclose(fresh(x).asnumpy(), out, atol=1e-5)
    again = nets.build('concat', seed=6)
    session(again, target=0.5)
    again.load_parameters(dense_file, allow_missing=True)  # masks stay at ones
    np.testing.assert_allclose(again(x).asnumpy(), nets.build('concat')(x).asnumpy(), atol=1e-5)


def test_saved_state_carries_what_the_next_update_decides_with(tmp_path):
    # scores are a mean over the batches gathered so far and a latency target's budget is corrected by the last net
    # measured: a resumed run must decide its next update with both, as the uninterrupted run does
    net = nets.build('concat')
    s = session(net, target=0.5)
    s.modifiers[0].criterion.batches = 7
    s.modifiers[0].correction = 0.93
    s.save_state(str(tmp_path))
    fresh = session(nets.build('concat'), target=0.5)
    fresh.load_state(str(tmp_path))
    assert fresh.modifiers[0].criterion.batches == 7 and fresh.modifiers[0].correction == 0.93


def test_fold_and_remove_restore_a_plain_block():
    net = nets.build('depthwise')
    s = session(net, target=0.4)
    s.prune_now()
    x = nets.data()
    out = net(x).asnumpy()
    small, plan = s.finalize(shrink=False)
    assert plan is None and not list(masks.masked_blocks(net))
    assert type(s.graph.layer('expand.0').block) is gluon.nn.Conv2D
    assert not any(k.endswith('weight_mask') for k in net.collect_params())
    np.testing.assert_allclose(net(x).asnumpy(), out, atol=1e-5)


# ------------------------------------------------------------------------------------------------ criteria

@pytest.mark.parametrize('name', criteria.CRITERIA.names())
class TestCriterionContract:
    """Every registered criterion: scores per channel, deterministic, and pruning removes what it scores lowest."""

    def _session(self, name, net):
        s = mp.Session(net, IN, 10, [PruningModifier(name, target=0.5, allocator='uniform', round_to=1)])
        if criteria.get(name).needs_grad:
            s.accumulate([(nets.data(i), mx.nd.array([0, 1])) for i in range(3)],
                         gluon.loss.SoftmaxCrossEntropyLoss(), [mx.cpu()])
        return s

    def test_scores_cover_every_group_channel_and_are_finite(self, name):
        s = self._session(name, nets.build('residual'))
        mod = s.modifiers[0]
        params = s.effective_params()
        for g in mod.groups:
            sc = mod.criterion.group_scores(g, params)
            assert sc is not None and sc.shape == (g.size,) and np.isfinite(sc).all()

    def test_pruning_halves_each_group_and_zeroes_its_weights(self, name):
        s = self._session(name, nets.build('residual'))
        s.prune_now()
        for g in s.modifiers[0].groups:
            kept = s.group_keep[g.index]
            assert kept.sum() == g.size - g.size // 2
            for m in g.members:
                if m.layer.weighted and m.attr == 'weight':
                    w = s.effective_params()[m.layer.params['weight'].name]
                    cut = np.take(w, m.positions[~kept[m.channels]].ravel(), axis=m.axis)
                    assert np.all(cut == 0)

    def test_a_name_or_an_object(self, name):
        crit = criteria.get(name)
        assert criteria.get(crit) is crit and crit.registry_name == name


def test_magnitude_prunes_the_smallest_filters():
    net = nets.build('residual')
    s = session(net, criterion='l1', target=0.5, schedule='oneshot')
    w = s.graph.layer('b1.0.0').params['weight']
    data = w.data().asnumpy()
    data[[1, 4]] *= 1e-3
    w.set_data(mx.nd.array(data))
    s.prune_now()
    assert not s.group_keep[s.graph.group_of('b1.0.0').index][[1, 4]].any()


def test_bn_gamma_and_fpgm_choose_as_documented():
    net = nets.build('residual')
    s = session(net, criterion='bn_gamma', target=0.5)
    g = s.graph.group_of('b1.0.0')
    gamma = s.graph.layer('b1.0.1').params['gamma']
    gamma.set_data(mx.nd.array([1, 0.01, 1, 1, 0.02, 0.03]))
    s.prune_now()
    assert s.group_keep[g.index].tolist() == [True, False, True, True, False, False]
    crit = criteria.get('fpgm')
    member = [m for m in g.members if m.producer][0]
    filters = np.ones((6, 8, 3, 3), np.float32) * np.arange(6)[:, None, None, None]
    scores = crit.member_scores(member, filters)
    assert np.argmin(scores) in (2, 3) and np.argmax(scores) in (0, 5)  # the median is replaceable


def test_unknown_criterion_lists_the_choices():
    with pytest.raises(mp.MxPruneError, match='unknown criterion .*one of: bn_gamma, fpgm, grad, group_taylor'):
        criteria.get('l3')


# ------------------------------------------------------------------------------------------------ schedules

def _schedule(name):
    """The registered schedule `name` as a recipe builds it, with its updates between epochs 1 and 3."""
    cfg = mp.modifiers.ScheduleConfig(kind=name, epoch=1.0, start_epoch=1.0, end_epoch=3.0, rounds=3, frequency=4,
                                      steps=4)
    return cfg.build()


@pytest.mark.parametrize('name', schedules.SCHEDULES.names())
class TestScheduleContract:
    """Every registered schedule: a pure, monotone function of the step from 0 to 1 that changes only at updates."""
    SPE = 10

    def test_fraction_is_monotone_from_zero_to_one(self, name):
        sched = _schedule(name)
        fr = [sched.fraction(t, self.SPE) for t in range(60)]
        assert fr[0] == 0.0 and all(b >= a for a, b in zip(fr, fr[1:]))
        assert fr[-1] == 1.0 and sched.fraction(sched.last_update(self.SPE), self.SPE) == 1.0

    def test_fraction_changes_only_at_updates(self, name):
        sched = _schedule(name)
        for t in range(1, 60):
            if sched.fraction(t, self.SPE) != sched.fraction(t - 1, self.SPE):
                assert sched.is_update(t, self.SPE), t

    def test_pure_function_of_the_step(self, name):
        sched = _schedule(name)
        assert [sched.fraction(t, self.SPE) for t in (7, 3, 7)] == [sched.fraction(t, self.SPE) for t in (7, 3, 7)]

    def test_a_name_or_an_object(self, name):
        sched = _schedule(name)
        assert type(sched) is schedules.SCHEDULES.get(name) and schedules.get(sched) is sched
        assert schedules.get(name).registry_name == name


def test_a_zero_length_agp_updates_once_at_its_start():
    agp = schedules.AGP(0, 0, 1)
    assert [t for t in range(20) if agp.is_update(t, 10)] == [0] and agp.fraction(0, 10) == 1.0


def test_agp_is_cubic_with_its_endpoints():
    agp = schedules.AGP(start_epoch=0, end_epoch=1, frequency=1)
    spe = 100
    assert agp.fraction(0, spe) == 0.0 and agp.fraction(100, spe) == 1.0
    assert agp.fraction(50, spe) == pytest.approx(1 - 0.5 ** 3)
    mod = PruningModifier('l1', granularity='weight', target=0.9, schedule=agp)
    assert mod.current_target(agp.fraction(50, spe)) == pytest.approx(0.9 * 0.875)
    updates = [t for t in range(0, 200) if agp.is_update(t, spe)]
    assert updates[0] == 0 and updates[-1] == 100


def test_iterative_rounds():
    it = schedules.Iterative(start_epoch=1, end_epoch=4, rounds=3)
    assert [t for t in range(60) if it.is_update(t, 10)] == [10, 20, 30]
    assert [it.fraction(t, 10) for t in (9, 10, 25, 35)] == [0.0, pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]


# ------------------------------------------------------------------------------------------------ modifiers

def test_global_ranks_across_groups_local_cuts_each_equally():
    net = nets.build('residual')
    layer = DependencyGraph.trace(net, IN).layer('b2.0.0')
    layer.params['weight'].set_data(layer.params['weight'].data() * 1e-3)  # b2's filters are all weak
    local = session(net, target=0.5, scope='local')
    local.prune_now()
    kept_local = {g.name: int(local.group_keep[g.index].sum()) for g in local.modifiers[0].groups}
    net2 = nets.build('residual')
    DependencyGraph.trace(net2, IN).layer('b2.0.0').params['weight'].set_data(
        layer.params['weight'].data())
    glob = session(net2, target=0.5, scope='global', criterion=criteria.L1(normalizer=None, members='out'))
    glob.prune_now()
    kept_global = {g.name: int(glob.group_keep[g.index].sum()) for g in glob.modifiers[0].groups}
    assert kept_local == {'b1.0.0:out': 3, 'b2.0.0:out': 3, 'down.0:out': 8}
    assert kept_global['b2.0.0:out'] < kept_global['b1.0.0:out']
    removed = sum(g.size - kept_global[g.name] for g in glob.modifiers[0].groups)
    assert removed >= 0.5 * (6 + 6 + 16)


def test_round_to_auto_is_the_channel_block_of_the_device_the_net_is_on():
    from mxprune import latency
    assert latency.channel_block(flags=['sse4_2', 'avx2', 'avx512f']) == 16
    assert latency.channel_block(flags=['sse4_2', 'avx2']) == 8
    assert latency.channel_block(flags=['neon']) == 1
    assert latency.channel_block(gpu=True, flags=['avx512f']) == 1
    s = mp.Session(nets.build('residual'), IN, 10, [PruningModifier('l2', target=0.5)])  # on the CPU
    assert s.modifiers[0].round_to == latency.channel_block() > 0
    assert PruningModifier('l2', round_to=4).round_to == 4
    with pytest.raises(RecipeError, match="^PruningModifier: round_to: 'fast' is not allowed; expected auto or an "
                                          "integer from 1 to 4096$"):
        PruningModifier('l2', round_to='fast')
    with pytest.raises(RecipeError, match=r"pruning\[0\]\.round_to: 'fast' is not allowed; expected auto or an "
                                          r"integer from 1 to 4096"):
        mp.config.from_dict(mp.PruningConfig, {'round_to': 'fast'}, 'r.yaml', 'pruning[0]')


@pytest.mark.parametrize('bad', [{'criterion': 'fpgm', 'granularity': 'weight'}, {'granularity': 'filter'},
                                 {'max_ratio': 1.5}, {'path': 'greedy'}, {'step_ratio': 0.0}, {'scope': 'everywhere'},
                                 {'target': {'macs': 0.5}, 'granularity': 'weight'}, {'initial_sparsity': 0.7},
                                 {'ratios': {'b1.*': 0.5}, 'target': {'speedup': 1.2}}])
def test_a_modifier_and_its_recipe_item_obey_one_set_of_rules(bad):
    with pytest.raises(RecipeError) as from_args:
        PruningModifier(**bad)
    with pytest.raises(RecipeError) as from_recipe:
        mp.config.from_dict(mp.PruningConfig, bad, 'PruningModifier', '')
    assert str(from_args.value) == str(from_recipe.value)


def test_the_criteria_allowed_on_weights_are_read_from_the_registry():
    unstructured = [n for n in criteria.CRITERIA.names() if not criteria.CRITERIA.get(n).structured_only]
    assert 'l2' in unstructured and 'fpgm' not in unstructured
    with pytest.raises(RecipeError, match=f"'fpgm' is not allowed with granularity weight; expected one of "
                                          f"{', '.join(unstructured)}$"):
        PruningModifier('fpgm', granularity='weight')


def test_layerwise_ratios():
    s = session(nets.build('residual'), target=0.5, ratios={'b1.*': 0.0, 'down.*': 0.75})
    s.prune_now()
    kept = {g.name: int(s.group_keep[g.index].sum()) for g in s.modifiers[0].groups}
    assert kept == {'b1.0.0:out': 6, 'b2.0.0:out': 3, 'down.0:out': 4}


def test_macs_target_is_met_and_predicted_by_the_plan():
    net = nets.build('residual')
    s = session(net, target={'macs': 0.6}, skip_first=False)
    s.prune_now()
    assert s.sparsity()['macs_ratio'] <= 0.6
    predicted = s.sparsity()['shrunk_macs']
    small, plan = s.finalize()
    assert flops.dense(DependencyGraph.trace(small, IN)).macs == predicted


def test_never_empties_a_group_and_impossible_targets_are_refused():
    s = session(nets.build('residual'), target=0.99, max_ratio=1.0)
    s.prune_now()
    assert all(s.group_keep[g.index].sum() >= 1 for g in s.modifiers[0].groups)
    with pytest.raises(OverPruneError, match='cannot be reached'):
        session(nets.build('residual'), target={'macs': 0.05}, max_ratio=0.5).prune_now()
    with pytest.raises(mp.MxPruneError, match='never emptied'):
        from mxprune.shrink import plan_from_keep
        s2 = session(nets.build('residual'), target=0.5)
        s2.group_keep[s2.modifiers[0].groups[0].index][:] = False
        plan_from_keep(s2.graph, s2.group_keep)


@pytest.mark.parametrize('round_to', [2, 4, 8])
def test_round_to_keeps_multiples(round_to):
    s = session(nets.build('depthwise'), target=0.3, round_to=round_to, skip_first=False)
    s.prune_now()
    for g in s.modifiers[0].groups:
        n = int(s.group_keep[g.index].sum())
        assert n % round_to == 0 or n == g.size, (g.name, n)  # a cut group keeps a multiple; others stay whole


def test_pruning_is_monotone_under_agp():
    net = nets.build('concat')
    s = mp.Session(net, IN, 4, [PruningModifier('l2', target=0.6, schedule=schedules.AGP(0, 2, 2))])
    prev = {gi: k.copy() for gi, k in s.group_keep.items()}
    for _ in range(10):
        s.before_update(2)
        s.after_update()
        for gi, k in s.group_keep.items():
            assert not (k & ~prev[gi]).any()  # nothing comes back
            prev[gi] = k.copy()
    assert [h['step'] for h in s.history] == [0, 2, 4, 6, 8]


def test_unstructured_local_and_global_agp_to_90_percent():
    net = nets.build('residual')
    mod = PruningModifier('l1', granularity='weight', target=0.9, schedule=schedules.AGP(0, 1, 5))
    s = mp.Session(net, IN, 10, [mod])
    for _ in range(11):
        s.before_update(2)
        s.after_update()
    for layer in mod.layers:
        assert (masks.mask_of(layer.block) == 0).mean() == pytest.approx(0.9, abs=0.01)
    glob = mp.Session(nets.build('residual'), IN, 10, [PruningModifier('l1', granularity='weight', target=0.9,
                                                                        scope='global', max_ratio=0.99)])
    glob.prune_now()
    zeros = sum(int((masks.mask_of(la.block) == 0).sum()) for la in glob.masked)
    total = sum(masks.mask_of(la.block).size for la in glob.masked)
    assert zeros / total == pytest.approx(0.9, abs=0.005)
    per_layer = [(masks.mask_of(la.block) == 0).mean() for la in glob.masked]
    assert max(per_layer) - min(per_layer) > 0.02 and all(p < 1.0 for p in per_layer)


def test_regularizers_shrink_what_they_target():
    def train(regs):
        net = nets.build('residual')
        trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.05})
        s = mp.Session(net, IN, 10, [], regularizers=regs, trainer=trainer)
        for step in range(20):
            with autograd.record():
                loss = net(nets.data(step)).square().mean()
            loss.backward()
            s.before_update(2)
            trainer.step(2)
            s.after_update()
        bn = s.graph.layer('b1.0.1').params['gamma'].data().abs().sum().asscalar()
        w = s.graph.layer('b1.0.0').params['weight'].data().norm().asscalar()
        return bn, w
    base_bn, base_w = train([])
    bn, _ = train([Regularizer('bn_l1', strength=0.2)])
    _, w = train([Regularizer('group_lasso', strength=0.2)])
    assert bn < base_bn * 0.9 and w < base_w * 0.95


# ------------------------------------------------------------------------------------------------ shrink

@pytest.mark.parametrize('name', COUPLED)
def test_shrunk_net_equals_masked_net_and_flops_fall_as_planned(name):
    net = nets.build(name)
    s = session(net, target=0.5, skip_first=False)
    s.prune_now()
    x = nets.data()
    masked = net(x).asnumpy()
    predicted = s.sparsity()
    small, plan = s.finalize()
    assert small is net and plan.channels_removed() > 0
    np.testing.assert_allclose(small(x).asnumpy(), masked, atol=1e-4)
    after = flops.dense(DependencyGraph.trace(small, IN))
    assert after.macs == predicted['shrunk_macs'] == predicted['macs']
    assert after.params == predicted['shrunk_params']
    # the shrunk net trains: a new Trainer, one step
    trainer = gluon.Trainer(small.collect_params(), 'sgd', {'learning_rate': 0.01})
    with autograd.record():
        loss = small(x).sum()
    loss.backward()
    trainer.step(2)


def test_plan_rebuilds_a_fresh_instance_with_another_prefix(tmp_path):
    net = nets.build('concat')
    s = session(net, target=0.5)
    s.prune_now()
    small, plan = s.finalize()
    x = nets.data()
    out = small(x).asnumpy()
    from mxprune import shrink
    shrink.save_pruned(small, plan, str(tmp_path / 'pruned'))
    other = nets.Residual(prefix='x_')
    other.initialize()
    with pytest.raises(mp.ModelError, match='which Residual does not have; was the plan made for another model'):
        shrink.load_pruned(other, str(tmp_path / 'pruned'))
    fresh = nets.Concat(prefix='other_')
    fresh.initialize()
    shrink.load_pruned(fresh, str(tmp_path / 'pruned'))
    np.testing.assert_allclose(fresh(x).asnumpy(), out, atol=1e-5)


def test_distillation_loss_is_the_softened_cross_entropy_and_vanishes_in_gradient_at_the_teacher():
    from mxprune import pipeline
    teacher = gluon.nn.Dense(5, in_units=4)
    teacher.initialize(mx.init.Normal(1.0))
    x = mx.nd.random.normal(shape=(3, 4))
    alpha, t = 0.7, 4.0
    extra_loss, ce_weight = pipeline.distiller(teacher, alpha, t)
    assert ce_weight == pytest.approx(0.3)
    student = mx.nd.random.normal(shape=(3, 5))
    p = mx.nd.softmax(teacher(x) / t).asnumpy()
    log_q = mx.nd.log_softmax(student / t).asnumpy()
    assert np.allclose(extra_loss(x, student).asnumpy(), -alpha * t * t * (p * log_q).sum(axis=1), atol=1e-5)
    out = teacher(x).copy()
    out.attach_grad()
    with autograd.record():
        loss = extra_loss(x, out).sum()
    loss.backward()
    assert np.abs(out.grad.asnumpy()).max() < 1e-5  # the student's optimum is the teacher's outputs

"""Grouped convolutions (1 < num_group < channels): cut in equal blocks, one per conv group."""
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import nets
import mxprune as mp
from mxprune import allocation, criteria, flops, latency, shrink
from mxprune.graph import DependencyGraph, Selection
from mxprune.modifiers import PruningModifier, Regularizer

IN = (1,) + nets.SHAPE[1:]


def _session(net, **kw):
    if 'scope' not in kw and 'allocator' not in kw:
        kw['allocator'] = 'uniform'  # written for the same fraction in every group
    kw.setdefault('round_to', 1)  # groups narrower than a CPU's channel block ('auto')
    mod = PruningModifier(kw.pop('criterion', 'l2'), selection=Selection(skip_first=False), **kw)
    return mp.Session(net, IN, steps_per_epoch=10, modifiers=[mod])


def _random_keep(group, rng):
    """A random keep-mask keeping the same (random) number of channels in each of the group's blocks; it cuts
    some of each (run > 1 in every prunable group)."""
    run = group.size // group.blocks
    per = rng.randint(1, run)
    keep = np.zeros((group.blocks, run), bool)
    for row in keep:
        row[rng.choice(run, per, replace=False)] = True
    return keep.ravel()


def test_grouped_conv_spaces_are_prunable_in_blocks_of_its_groups():
    g = DependencyGraph.trace(nets.build('resnext'), IN)
    g_in, g_out = g.group_of('grouped.0', 'in'), g.group_of('grouped.0')
    assert (g_in.name, g_in.size, g_in.blocks, g_in.frozen) == ('reduce.0:out', 16, 4, None)
    assert (g_out.name, g_out.size, g_out.blocks, g_out.frozen) == ('grouped.0:out', 24, 4, None)
    assert {grp.name for grp in g.prunable_groups()} == {'reduce.0:out', 'grouped.0:out'}
    assert g.group_of('stem.0').blocks == 1
    assert 'cuttable in 4 blocks of 4 (the same number kept in each)' in g_in.details()
    assert '=> grouped.0 (Conv2D, 4 groups) in channels [0:16]' in g_in.details()
    member = next(m for m in g_in.members if m.layer.path == 'grouped.0')
    assert member.groups == 4 and member.positions[:, 0].tolist() == list(range(16))


def test_grouped_convs_that_meet_take_the_finer_blocks_or_freeze():
    g = DependencyGraph.trace(nets.build('grouped_mix'), IN)
    stem = g.group_of('stem.0')
    assert (stem.blocks, stem.frozen) == (6, None)  # read by convs with 2 and 3 groups: lcm
    for path in ('a.0', 'b.0'):  # concatenated into mixed.0, whose 2 groups would span both
        assert g.group_of(path).frozen == ('grouped convolution mixed.0 (num_group=2) groups channels that come '
                                           'from several layers or from part of one (equal counts per group cannot '
                                           'be kept)')
    for path in ('mixed.0', 'squeeze.0'):
        assert 'one channel per block' in g.group_of(path).frozen
    assert (g.group_of('up.0').blocks, g.group_of('up.0').frozen) == (6, None)
    assert {grp.name for grp in g.prunable_groups(Selection(skip_first=False))} == {'stem.0:out', 'up.0:out'}


def test_member_layout_of_a_grouped_input():
    """Input channel p of a conv with 4 groups (weight (24, 4, 3, 3)) is column p % 4 of rows 6*(p // 4) ...+6."""
    g = DependencyGraph.trace(nets.build('resnext'), IN)
    member = next(m for m in g.group_of('grouped.0', 'in').members if m.layer.path == 'grouped.0')
    w = np.random.RandomState(0).normal(size=(24, 4, 3, 3)).astype(np.float32)
    taken = member.take(w)
    assert taken.shape == (16, 1, 6 * 9)
    np.testing.assert_array_equal(taken[9, 0], w[12:18, 1].ravel())
    mask = np.ones_like(w)
    mask[member.index(np.arange(16) == 9)] = 0
    assert (mask == 0).sum() == 6 * 9 and not mask[12:18, 1].any()
    spread = member.spread(np.arange(16, dtype=np.float32))
    assert spread.shape == (24, 4, 1, 1) and spread[13, 1, 0, 0] == 9 and spread[0, 3, 0, 0] == 3
    l1 = criteria.get('l1', normalizer=None).member_scores(member, w)
    assert l1[9] == pytest.approx(np.abs(w[12:18, 1]).sum(), rel=1e-6)
    # the layout is MXNet's: zeroing those weights is zeroing input channel 9
    x = np.random.RandomState(1).normal(size=(1, 16, 5, 5)).astype(np.float32)
    conv = lambda data, weight: mx.nd.Convolution(mx.nd.array(data), mx.nd.array(weight), kernel=(3, 3),  # noqa: E731
                                                  num_filter=24, num_group=4, no_bias=True).asnumpy()
    x_cut = x.copy()
    x_cut[:, 9] = 0
    np.testing.assert_allclose(conv(x, w * mask), conv(x_cut, w), atol=1e-5)


def _check_random_masks(name, seed, folder=None):
    """Random keep-masks with equal counts per block on every prunable group: the shrunk net computes what the masked
    net did, its MACs and parameters re-traced are the ones flops.structured predicted, and it exports."""
    net = nets.build(name, seed=seed)
    s = _session(net, target=0.5)
    rng = np.random.RandomState(seed)
    for grp in s.modifiers[0].groups:
        s.group_keep[grp.index] = _random_keep(grp, rng)
    s.apply_masks()
    x = nets.data(seed)
    masked = net(x).asnumpy()
    predicted = flops.structured(s.graph, dict(s.group_keep))
    small, _ = s.finalize()
    np.testing.assert_allclose(small(x).asnumpy(), masked, atol=1e-4)
    after = flops.dense(DependencyGraph.trace(small, IN))
    assert (after.macs, after.params, after.per_layer) == (predicted.macs, predicted.params, predicted.per_layer)
    if folder is not None:
        files = mp.export_symbol(small, str(folder), nets.SHAPE)
        assert float(files['max_abs_diff']) <= 1e-5
        reloaded = mx.gluon.SymbolBlock.imports(files['symbol'], ['data'], files['params'])
        np.testing.assert_allclose(reloaded(x).asnumpy(), masked, atol=1e-4)
    return s, small, x


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_random_block_masks_shrink_to_the_masked_net_count_and_export(seed, tmp_path):
    _check_random_masks('grouped_mix', seed, tmp_path / 'mix')
    s, small, x = _check_random_masks('resnext', seed, tmp_path / 'rx')
    grouped = s.graph.layer('grouped.0').block
    kept_in, kept_out = (int(s.group_keep[s.graph.group_of('grouped.0', r).index].sum()) for r in ('in', 'out'))
    assert grouped.weight.shape == (kept_out, kept_in // 4, 3, 3) and grouped.bias.shape == (kept_out,)
    assert grouped._kwargs['num_group'] == 4 and grouped._kwargs['num_filter'] == kept_out
    hybrid = small(x).asnumpy()
    small.hybridize(active=False)
    np.testing.assert_allclose(small(x).asnumpy(), hybrid, atol=1e-5)


def test_a_fresh_model_loads_a_grouped_plan(tmp_path):
    net = nets.build('resnext')
    s = _session(net, target=0.5)
    s.prune_now()
    small, plan = s.finalize()
    shrink.save_pruned(small, plan, str(tmp_path / 'p'))
    fresh = nets.ResNeXt(prefix='fresh_')
    fresh.initialize()
    shrink.load_pruned(fresh, str(tmp_path / 'p'))
    fresh.hybridize()
    x = nets.data()
    np.testing.assert_allclose(fresh(x).asnumpy(), small(x).asnumpy(), atol=1e-5)


def test_keep_top_keeps_the_best_of_each_block():
    score = np.array([5, 1, 3, 2, 9, 8, 0, 7], float)
    current = np.ones(8, bool)
    keep = flops.keep_top(score, current, 4, blocks=2)
    assert keep.tolist() == [True, False, True, False, True, True, False, False]
    current[0] = False  # pruned channels stay pruned
    assert flops.keep_top(score, current, 2, blocks=2).tolist() == [False, False, True, False, True, False, False,
                                                                     False]
    assert flops.keep_top(score, np.ones(8, bool), 5).sum() == 5
    with pytest.raises(mp.MxPruneError, match='multiple of blocks'):
        flops.keep_top(score, np.ones(8, bool), 3, blocks=2)
    g = DependencyGraph.trace(nets.build('resnext'), IN).group_of('grouped.0')
    assert g.block_counts(flops.group_keep_from_counts(g, 8)).tolist() == [2, 2, 2, 2]
    with pytest.raises(mp.MxPruneError, match='multiple of blocks'):
        flops.group_keep_from_counts(g, 6)


def test_masks_with_unequal_blocks_are_refused():
    net = nets.build('resnext')
    graph = DependencyGraph.trace(net, IN)
    g = graph.group_of('grouped.0')
    keep = np.ones(24, bool)
    keep[[0, 1, 6]] = False  # block 0 keeps 4, block 1 keeps 5
    with pytest.raises(mp.MxPruneError, match=r"^group 'grouped.0:out' keeps 4 to 6 channels in its 4 blocks of 6; "
                                              r"each block must keep the same number \(grouped convolutions and "
                                              r"splits cut in equal blocks\)$"):
        shrink.plan_from_keep(graph, {g.index: keep})
    plan = shrink.plan_from_keep(graph, {g.index: np.arange(24) % 6 != 0})
    plan.groups['grouped.0:out']['keep'] = np.flatnonzero(keep).tolist()
    with pytest.raises(mp.ModelError, match="grouped.0:out' keeps 4 to 6 channels"):
        shrink.apply_plan(net, mp.shrink.Plan.from_json(plan.to_json()))


@pytest.mark.parametrize('round_to', [1, 3, 8])
def test_modifier_counts_are_whole_blocks(round_to):
    s = _session(nets.build('resnext'), target=0.6, round_to=round_to)
    s.prune_now()
    for g in s.modifiers[0].groups:
        k = s.group_keep[g.index]
        assert g.keep_error(k) is None
        step = np.lcm(round_to, g.blocks) if g.size >= np.lcm(round_to, g.blocks) else g.blocks
        assert k.sum() % step == 0 or k.all(), (g.name, k.sum())


@pytest.mark.parametrize('scope', ['local', 'global'])
def test_macs_target_reaches_through_grouped_convs_and_is_predicted(scope):
    net = nets.build('resnext')
    s = _session(net, target={'macs': 0.4}, scope=scope, criterion='l1')
    s.prune_now()
    predicted = s.sparsity()['shrunk_macs']
    assert predicted / s.dense_count.macs <= 0.4
    x = nets.data()
    masked = net(x).asnumpy()
    small, _ = s.finalize()
    np.testing.assert_allclose(small(x).asnumpy(), masked, atol=1e-4)
    assert flops.dense(DependencyGraph.trace(small, IN)).macs == predicted


def test_latency_predictor_widths_and_macs_of_a_grouped_conv():
    net = nets.build('resnext')
    graph = DependencyGraph.trace(net, IN)
    keep = {g.index: np.ones(g.size, bool) for g in graph.groups}
    keep[graph.group_of('grouped.0', 'in').index] = np.arange(16) % 4 < 2   # 8 of 16 in, 2 per block
    keep[graph.group_of('grouped.0').index] = np.arange(24) % 6 < 3          # 12 of 24 out, 3 per block
    pred = latency.Predictor(graph, table=None)
    layer = graph.layer('grouped.0')
    i = pred.index.layers.index(layer)
    assert tuple(int(v[0]) for v in pred.widths(i, pred.index.shapes(i, keep))) == (8, 12)
    assert flops.MacsCost(graph).total(keep) == flops.structured(graph, keep).macs
    assert flops.ParamsCost(graph).total(keep) == flops.structured(graph, keep).params
    assert latency.signature(layer)[7:] == (('groups', 4),)
    built, shape = latency._build(latency.signature(layer), 8, 12)
    assert built[0].weight.shape == (12, 2, 3, 3) and shape == (8, 16, 16)


@pytest.mark.parametrize('allocator', ['uniform', 'threshold', 'knapsack'])
def test_latency_allocation_widths_are_whole_blocks(allocator):
    class Table:  # a stand-in cost: time grows with every layer's in x out width
        def get(self, sig, cin, cout):
            return cin * cout / 100.0

    graph = DependencyGraph.trace(nets.build('resnext'), IN)
    groups = graph.prunable_groups(Selection(skip_first=False))
    pred = latency.Predictor(graph, Table())
    scores = {g.index: np.random.RandomState(g.index).uniform(size=g.size) for g in groups}
    current = {g.index: np.ones(g.size, bool) for g in groups}
    p = allocation.Problem(scores, current, pred, 0.5 * pred.dense, step=3, blocks={g.index: g.blocks for g in groups})
    counts = allocation.get(allocator).allocate(p)
    by_index = {g.index: g for g in groups}
    assert p.total(counts) <= p.budget
    assert all(n % np.lcm(3, by_index[gi].blocks) == 0 for gi, n in counts.items() if n < by_index[gi].size)
    for gi, n in counts.items():
        assert by_index[gi].keep_error(p.masks(gi, [n])[0]) is None


def test_group_lasso_and_grad_criteria_cover_the_grouped_input():
    net = nets.build('resnext')
    s = mp.Session(net, IN, 10, [PruningModifier('taylor', target=0.5, schedule=mp.schedules.OneShot(1))],
                   regularizers=[Regularizer('group_lasso', strength=0.1)])
    x = nets.data()
    with autograd.record():
        loss = net(x).sum()
    loss.backward()
    conv = s.graph.layer('grouped.0').params['weight']
    before = conv.grad().asnumpy().copy()
    s.before_update(2)  # group lasso adds lam * w_c / ||W_c|| over every member slice of channel c
    added = conv.grad().asnumpy() - before
    w = conv.data().asnumpy()
    g_in = s.graph.group_of('grouped.0', 'in')
    reduce_w = s.graph.layer('reduce.0').params['weight'].data().asnumpy()
    c = 9  # input channel 9: reduce.0's filter 9, and column 1 of grouped.0's rows 12..17
    norm = np.sqrt((reduce_w[c] ** 2).sum() + (w[12:18, 1] ** 2).sum())
    expected = 0.1 * 2 * w[12:18, 1] / norm
    out_part = added[12:18, 1] - 0.1 * 2 * w[12:18, 1] / _out_norms(s, w)[12:18, None, None]
    np.testing.assert_allclose(out_part, expected, rtol=1e-4, atol=1e-7)
    taylor = s.modifiers[0].criterion.group_scores(g_in, s.effective_params())
    assert taylor.shape == (16,) and np.isfinite(taylor).all() and (taylor > 0).all()


def _out_norms(s, w):
    """||W_c|| of each of grouped.0's output channels over their members (its filter, BN has no weight, expand's
    input column)."""
    e = s.graph.layer('expand.0').params['weight'].data().asnumpy()
    return np.sqrt((w ** 2).reshape(24, -1).sum(axis=1) + (e[:, :, 0, 0] ** 2).sum(axis=0))


def test_shrunk_plan_reloads_in_plain_mxnet(tmp_path):
    net = nets.build('resnext')
    s = _session(net, target={'macs': 0.5})
    s.prune_now()
    small, _ = s.finalize()
    files = mp.export_symbol(small, str(tmp_path / 'rx'), nets.SHAPE)
    x = nets.data(3)
    np.save(tmp_path / 'x.npy', x.asnumpy())
    np.save(tmp_path / 'y.npy', small(x).asnumpy())
    code = f'''
import numpy as np, mxnet as mx
net = mx.gluon.SymbolBlock.imports(r"{files['symbol']}", ["data"], r"{files['params']}")
y = net(mx.nd.array(np.load(r"{tmp_path / 'x.npy'}"))).asnumpy()
print(float(np.abs(y - np.load(r"{tmp_path / 'y.npy'}")).max()))
'''
    out = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    assert out.returncode == 0, out.stderr[-1500:]
    assert float(out.stdout.strip().splitlines()[-1]) <= 1e-5


def test_a_split_cuts_in_equal_parts_and_a_fixed_slice_freezes():
    """Before Group.blocks a split's input was cut unevenly and the shrunk split failed ('Shape inconsistent'); a
    slice_axis keeps its begin/end, so a cut before `end` would shift what it takes."""
    g = DependencyGraph.trace(nets.build('split'), IN)
    stem = g.group_of('stem.0')
    assert (stem.blocks, stem.frozen) == (2, None)
    _check_random_masks('split', 0, None)
    sliced = DependencyGraph.trace(nets.build('slice'), IN).group_of('stem.0')
    assert 'takes channels [0:4] at fixed offsets' in sliced.frozen

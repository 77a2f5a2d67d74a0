"""Contract tests for the modifier kinds: every pruning item a recipe can describe and every registered regulariser
obeys the same rules (a new kind joins the parametrisation and must pass them). The criterion, schedule and allocator
contracts sit beside their own tests (TestCriterionContract and TestScheduleContract in test_engine.py,
TestAllocatorContract in test_allocation.py)."""
import numpy as np
import pytest

import nets
import mxprune as mp
from mxprune import config
from mxprune.modifiers import REGULARIZERS, PruningConfig, Regularizer

IN = (1,) + nets.SHAPE[1:]

# one item per granularity and per counted target (latency and speedup time real nets: tests/test_latency.py)
ITEMS = {
    'channel-sparsity': {'target': {'sparsity': 0.5}},
    'channel-macs': {'target': {'macs': 0.6}},
    'channel-params': {'target': {'params': 0.6}, 'allocator': 'threshold'},
    'channel-ratios': {'target': {'sparsity': 0.25}, 'allocator': 'uniform', 'ratios': {'b1.*': 0.5}},
    'weight-sparsity': {'granularity': 'weight', 'target': {'sparsity': 0.5}, 'criterion': 'l1'},
}


@pytest.mark.parametrize('item', sorted(ITEMS))
class TestModifierContract:
    """Every pruning item: its recipe form round-trips, it builds a modifier that binds, reaches its target in one
    update, and never brings back what it pruned."""

    def _modifier(self, item):
        return config.from_dict(PruningConfig, {**ITEMS[item], 'round_to': 1}, 'contract', item).build()

    def test_the_recipe_item_round_trips(self, item):
        cfg = config.from_dict(PruningConfig, ITEMS[item], 'contract', item)
        assert config.from_dict(PruningConfig, config.to_dict(cfg), 'contract', item) == cfg

    def test_one_update_reaches_the_target_and_masks_only_shrink(self, item):
        mod = self._modifier(item)
        s = mp.Session(nets.build('residual'), IN, 10, [mod])
        before = {gi: k.copy() for gi, k in s.group_keep.items()}
        s.prune_now()
        sp = s.sparsity()
        kind, value = mod.target.kind, mod.target.value
        if mod.structured:
            assert all(not (s.group_keep[gi] & ~k).any() for gi, k in before.items())
            assert any(s.group_keep[gi].sum() < k.sum() for gi, k in before.items())
        if kind in ('macs', 'params'):  # the count the net will have once shrunk
            assert sp[f'shrunk_{kind}'] <= value * getattr(s.dense_count, kind) + 1e-6
        elif not mod.structured:
            layers = {layer.path for layer in mod.layers}
            kept = sum(int(s.weight_keep[p].sum()) for p in layers)
            total = sum(s.weight_keep[p].size for p in layers)
            assert 1 - kept / total == pytest.approx(value, abs=0.02)
        assert repr(mod).startswith('PruningModifier(')


@pytest.mark.parametrize('kind', REGULARIZERS.names())
class TestRegularizerContract:
    """Every registered regulariser: a name or an object, bound to something, adds a gradient only while active and
    only to the parameters it acts on."""

    def test_a_name_or_an_object(self, kind):
        reg = Regularizer(kind)
        assert reg.kind == kind and type(reg.penalty) is REGULARIZERS.get(kind)
        assert Regularizer(REGULARIZERS.get(kind)()).kind == kind

    def test_adds_a_gradient_only_while_active(self, kind):
        net = nets.build('residual')
        graph = mp.DependencyGraph.trace(net, IN)
        reg = Regularizer(kind, strength=0.1, start_epoch=1.0, end_epoch=2.0)
        reg.bind(graph)
        assert reg.targets
        assert not reg.active(5, 10) and reg.active(10, 10) and not reg.active(20, 10)
        params = net.collect_params()
        for p in params.values():
            if p.grad_req != 'null':
                p.zero_grad()
        reg.apply(batch_size=2)
        touched = {name for name, p in params.items() if p.grad_req != 'null' and np.abs(p.grad().asnumpy()).sum() > 0}
        assert touched
        weighted = {p.name for layer in graph.weighted_layers() for p in layer.params.values()}
        gammas = {name for name in params if name.endswith('gamma')}
        assert touched <= (gammas if kind == 'bn_l1' else weighted)

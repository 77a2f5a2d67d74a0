"""Sparsity regularisers: a penalty's gradient added before the optimizer step, on a schedule of epochs.

The penalties are a registry (`REGULARIZERS`), one class a kind; `Regularizer(kind, ...)` runs one of them:

    bn_l1        lambda * sign(gamma) on the BatchNorms of prunable groups (Network Slimming)
    l1 / l2      lambda * sign(w) / lambda * w on the selected Conv/Dense weights
    group_lasso  lambda * w_c / ||W_c|| for every channel c of every prunable group, over all its members' slices
"""
from typing import List, Optional

import mxnet as mx
import numpy as np

from ..errors import OverPruneError
from ..graph import DependencyGraph, Selection
from ..registry import Registry

REGULARIZERS: Registry['Penalty'] = Registry('regularizer')


class Penalty:
    """What a regulariser acts on and the gradient it adds."""

    def targets(self, graph: DependencyGraph, selection: Selection) -> list:
        raise NotImplementedError

    def add(self, targets: list, lam: float) -> None:
        """Adds lam * (the penalty's gradient) to the targets' gradients."""
        raise NotImplementedError


class _WeightPenalty(Penalty):
    def targets(self, graph, selection):
        return [layer.params['weight'] for layer in graph.selected(selection) if layer.weighted]

    def add(self, targets, lam):
        for p in targets:
            ctx = p.list_ctx()[0]  # once: devices' gradients are summed before the update
            w, g = p.data(ctx), p.grad(ctx)
            g += lam * self.grad(w)

    @staticmethod
    def grad(w: mx.nd.NDArray) -> mx.nd.NDArray:
        raise NotImplementedError


@REGULARIZERS.register('l1')
class L1(_WeightPenalty):
    grad = staticmethod(mx.nd.sign)


@REGULARIZERS.register('l2')
class L2(_WeightPenalty):
    @staticmethod
    def grad(w):
        return w


@REGULARIZERS.register('bn_l1')
class BNL1(L1):
    def targets(self, graph, selection):
        seen, out = set(), []
        for g in graph.prunable_groups(selection):
            for m in g.members:
                p = m.layer.params.get('gamma')
                if m.attr == 'gamma' and p is not None and p.name not in seen and p.grad_req != 'null':
                    seen.add(p.name)
                    out.append(p)
        return out


@REGULARIZERS.register('group_lasso')
class GroupLasso(Penalty):
    def targets(self, graph, selection):
        return graph.prunable_groups(selection)

    def add(self, targets, lam):
        for g in targets:
            members = [m for m in g.members if m.attr == 'weight' and m.layer.weighted]
            datas = {}
            sq = np.zeros(g.size)
            for m in members:
                p = m.layer.params['weight']
                if p.name not in datas:
                    datas[p.name] = p.data(p.list_ctx()[0]).asnumpy()
                np.add.at(sq, m.channels, (m.take(datas[p.name]) ** 2).sum(axis=2).sum(axis=1))
            inv = lam / np.sqrt(sq + 1e-12)
            for m in members:  # Member.take/spread: a grouped conv's input channel is a slice of its block's rows
                p = m.layer.params['weight']
                ctx = p.list_ctx()[0]
                p.grad(ctx)[:] += p.data(ctx) * mx.nd.array(m.spread(inv[m.channels]), ctx=ctx)


class Regularizer:
    """Adds a sparsity-inducing gradient before the optimizer step, from start_epoch until end_epoch."""

    def __init__(self, kind: str = 'bn_l1', strength: float = 1e-4, start_epoch: float = 0.0,
                 end_epoch: Optional[float] = None, selection: Optional[Selection] = None):
        self.penalty: Penalty = REGULARIZERS.create(kind)
        self.kind, self.strength = getattr(self.penalty, 'registry_name', kind), strength
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.selection = selection or Selection()
        self.targets: List = []

    def bind(self, graph: DependencyGraph) -> None:
        self.targets = self.penalty.targets(graph, self.selection)
        if not self.targets:
            raise OverPruneError(f'regularizer {self.kind} has nothing to act on (no prunable groups / selected '
                                 f'layers{" with BatchNorm" if self.kind == "bn_l1" else ""})')

    def active(self, step: int, steps_per_epoch: int) -> bool:
        epoch = step / max(1, steps_per_epoch)
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch < self.end_epoch)

    def apply(self, batch_size: int) -> None:
        """Adds to the gradients; scaled by batch_size because Trainer.step divides gradients by it."""
        self.penalty.add(self.targets, self.strength * batch_size)

    def __repr__(self) -> str:
        return f'Regularizer({self.kind}, strength={self.strength})'

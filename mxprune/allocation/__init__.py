"""Allocation: how many channels each coupled group keeps, given per-channel saliency, a cost model and a budget.

A structured pruning step is a resource-allocation problem (HALP: Shen et al., "Structural Pruning via
Latency-Saliency Knapsack", NeurIPS 2022): choose one width per group so that the net's cost fits a budget while the
saliency kept is as large as possible. Allocators, by name or object (`ALLOCATORS`):

    uniform    the same fraction of every group (Torch-Pruning's default): the smallest fraction that fits
    threshold  one threshold on all groups' scores (global ranking): the lowest threshold that fits
    knapsack   the widths that keep the most saliency within the budget: a multiple-choice knapsack, solved exactly
               by dynamic programming over the cost in whole units (`solve`)

Cost models (`cost_model`): `channels` (kept channels of the pruned groups: a sparsity target), `macs` and `params`
(exact counts of the shrunk net, `mxprune.flops`), `latency` (the measured per-layer table, `mxprune.latency`).
Each gives the cost of the whole net for keep-masks (`total`) and, for one group, the cost at each of its candidate
widths with the other groups held (`curve`).

Costs are not additive over groups: a conv's MACs or time depend on the widths of its input and its output group, and
a residual group's width changes every layer it feeds. The knapsack therefore solves the problem linearised at the
current widths (the curves), re-linearises at the solution it found, and checks each solution against the true
cost; the best one that fits is widened into whatever budget is left, one allowed width at a time, most saliency per
cost first. On a cost that is additive (channels) the first solution is the exact optimum.

`LatencyModel` and `search` close the loop on real time the way NetAdapt does: the allocation is built as a net and
timed beside the dense net, and the measured/predicted ratio corrects the budget of the next pass.
"""
from .allocators import Knapsack, Threshold, Uniform, solve
from .measured import LatencyModel, search, shrunk_twin, timed_ms
from .problem import ALLOCATORS, Allocator, ChannelCost, Problem, cost_model, get

__all__ = ['ALLOCATORS', 'Allocator', 'ChannelCost', 'Problem', 'cost_model', 'get', 'Knapsack', 'Threshold', 'Uniform',
           'solve', 'LatencyModel', 'search', 'shrunk_twin', 'timed_ms']

"""Importance criteria: what to cut. A registry of names; every pruning argument takes a name or an object.

A criterion scores weights (unstructured) or the channels of a coupled group (structured). For a group, each
member (a parameter axis of one layer: a conv's filters, the matching input slices of its consumers, BN gammas)
gives per-channel scores; `reduction` combines the members and `normalizer` rescales the group's scores so that
groups can be ranked together (global scope). Higher score = more important = kept.

    l1, l2   magnitude (Li et al. 2017 filter pruning; Torch-Pruning GroupMagnitudeImportance)
    grad     accumulated |g|
    taylor   accumulated |w * g| over batches, per weight
    group_taylor  the loss change of removing a whole group channel, first order: per batch the sum over the
             group's BatchNorm gates of |gamma g_gamma + beta g_beta| (Molchanov et al. 2019; HALP), averaged over
             batches; in loss units, so groups compare without normalisation
    bn_gamma |gamma| of the group's BatchNorms (Network Slimming, Liu et al. 2017)
    fpgm     distance of each filter to the others (geometric median; He et al. 2019)
    random   uniform, seeded
"""
from typing import Dict, List, Optional, Sequence

import mxnet as mx
import numpy as np

from ..errors import MxPruneError
from ..graph import Group, Layer, Member
from ..registry import Registry

CRITERIA: Registry['Criterion'] = Registry('criterion')
REDUCTIONS = ('mean', 'sum', 'max', 'prod', 'first')
NORMALIZERS = (None, 'mean', 'max', 'sum', 'standardization')
AUTO = 'auto'  # a config's normalizer: the criterion's own default
MEMBERS = ('all', 'out', 'in')


class Criterion:
    """Base class. Subclasses override `weight_scores` (per element) and/or `member_scores` (per channel)."""
    needs_grad = False      # gradients are accumulated in Session.before_update while it is active
    structured_only = False

    def __init__(self, reduction: str = 'mean', normalizer: Optional[str] = 'mean', members: str = 'all'):
        if reduction not in REDUCTIONS:
            raise MxPruneError(f'criterion reduction {reduction!r}; choose one of {", ".join(REDUCTIONS)}')
        if normalizer not in NORMALIZERS:
            raise MxPruneError(f'criterion normalizer {normalizer!r}; choose one of '
                               f'{", ".join(str(n) for n in NORMALIZERS)}')
        if members not in MEMBERS:
            raise MxPruneError(f'criterion members {members!r}; choose one of {", ".join(MEMBERS)}')
        self.reduction, self.normalizer, self.members = reduction, normalizer, members
        self.acc: Dict[str, mx.nd.NDArray] = {}
        self.batches = 0

    def bind(self, groups: Sequence[Group]) -> None:
        """Called once with the groups the criterion will score (before any accumulation)."""

    # --- gradient accumulation (grad, taylor)
    def accumulate(self, layers: List[Layer]) -> None:
        """Called after backward, before the optimizer step."""

    def reset(self) -> None:
        self.acc = {}
        self.batches = 0

    # --- scores
    def weight_scores(self, layer: Layer, weight: np.ndarray) -> np.ndarray:
        """Per-element scores of a weight (same shape)."""
        raise MxPruneError(f'criterion {self.registry_name} scores whole channels only; use granularity channel')

    def member_scores(self, member: Member, data: np.ndarray) -> Optional[np.ndarray]:
        """Per-channel scores of one member, indexed like member.channels (None: this member does not vote)."""
        elem = self.weight_scores(member.layer, data) if member.attr == 'weight' else np.abs(data)
        return member.take(elem).sum(axis=2).sum(axis=1)  # a grouped conv's input: its slice in its block's rows

    def votes(self, member: Member) -> bool:
        """Which members take part: weights of conv/dense layers by default, per `members`."""
        if member.attr != 'weight' or not member.layer.weighted:
            return False
        if self.members == 'out':
            return member.role in ('out', 'chan')
        if self.members == 'in':
            return member.role == 'in'
        return True

    def group_scores(self, group: Group, params: Dict[str, np.ndarray]) -> Optional[np.ndarray]:
        """Scores of a group's channels (None when no member votes); `params` maps parameter name -> data."""
        per: List[np.ndarray] = []
        for m in group.members:
            if not self.votes(m):
                continue
            s = self.member_scores(m, params[m.layer.params[m.attr].name])
            if s is None:
                continue
            full = np.zeros(group.size)
            np.add.at(full, m.channels, s)
            per.append(full)
        if not per:
            return None
        stack = np.stack(per)
        score = {'mean': np.mean, 'sum': np.sum, 'max': np.max, 'prod': np.prod,
                 'first': lambda a, axis: a[0]}[self.reduction](stack, axis=0)
        return normalize(score, self.normalizer)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(reduction={self.reduction!r}, normalizer={self.normalizer!r})'


def normalize(score: np.ndarray, how: Optional[str]) -> np.ndarray:
    if how is None:
        return score
    if how == 'standardization':
        return (score - score.min()) / max(score.max() - score.min(), 1e-12)
    scale = {'mean': np.mean, 'max': np.max, 'sum': np.sum}[how](score)
    return score / max(float(scale), 1e-12)


@CRITERIA.register('l1')
class L1(Criterion):
    def weight_scores(self, layer, weight):
        return np.abs(weight)


@CRITERIA.register('l2')
class L2(Criterion):
    def weight_scores(self, layer, weight):
        return np.abs(weight)

    def member_scores(self, member, data):
        return np.sqrt((member.take(data) ** 2).sum(axis=2).sum(axis=1))


class _Accumulating(Criterion):
    """Keeps a per-weight running sum over the batches since the last reset."""
    needs_grad = True

    def term(self, w: mx.nd.NDArray, g: mx.nd.NDArray) -> mx.nd.NDArray:
        raise NotImplementedError

    def accumulate(self, layers):
        for layer in layers:
            p = layer.params['weight']
            if p.grad_req == 'null':
                continue
            ctxs = p.list_ctx()
            total = None
            for c in ctxs:  # gradients of all devices count
                t = self.term(p.data(c), p.grad(c)).as_in_context(ctxs[0])
                total = t if total is None else total + t
            name = p.name
            self.acc[name] = total if name not in self.acc else self.acc[name] + total
        self.batches += 1

    def weight_scores(self, layer, weight):
        name = layer.params['weight'].name
        if name not in self.acc:
            raise MxPruneError(f'criterion {self.registry_name} has no gradients for {layer.path}: run training '
                               f'batches (or Session.accumulate) before pruning')
        return self.acc[name].asnumpy()


@CRITERIA.register('grad')
class Grad(_Accumulating):
    def term(self, w, g):
        return mx.nd.abs(g)


@CRITERIA.register('taylor')
class Taylor(_Accumulating):
    def term(self, w, g):
        return mx.nd.abs(w * g)


@CRITERIA.register('group_taylor')
class GroupTaylor(Criterion):
    """First-order estimate of the loss change when one channel of a coupled group is removed everywhere.

    Zeroing a BatchNorm's output channel c changes the loss by about -(gamma_c dL/dgamma_c + beta_c dL/dbeta_c)
    (Molchanov et al. 2019, "Importance Estimation for Neural Network Pruning", the gate form HALP also uses). A
    group's channel is removed from every layer it couples, and its score is the sum of the absolute terms of the
    group's BatchNorms (HALP's group importance): summed with their signs first, the terms of a residual stream's
    producers can cancel and make a channel that every block reads look free to remove. A group without BatchNorm
    uses its producers' |sum of w dL/dw| over the channel's filter and bias instead. Scores are the mean over the
    batches (since the last update, or over the whole schedule on the 'plan' path); `squared` takes the mean of the
    squares (Fisher-like). They are in units of loss, comparable from one group to the next as they are: the
    default normalizer is None.
    """
    needs_grad = True
    structured_only = True

    def __init__(self, reduction: str = 'sum', normalizer: Optional[str] = None, members: str = 'all',
                 squared: bool = False):
        super().__init__(reduction, normalizer, members)
        self.squared = squared
        self.plans: List[tuple] = []

    def bind(self, groups):
        self.plans = []
        for g in groups:
            gates = [(m.layer, m.channels, m.positions[:, 0]) for m in g.members
                     if m.attr == 'gamma' and 'beta' in m.layer.params and m.layer.params['gamma'].grad_req != 'null']
            filters = [(m, 'bias' in m.layer.params and m.layer.params['bias'].grad_req != 'null')
                       for m in g.producers if m.layer.params['weight'].grad_req != 'null']
            self.plans.append((g, gates, [] if gates else filters))

    @staticmethod
    def _summed(p, fn) -> np.ndarray:
        """fn(data, grad) summed over the devices (each holds the gradient of its part of the batch)."""
        ctxs = p.list_ctx()
        return sum(fn(p.data(c), p.grad(c)).asnumpy() for c in ctxs)

    def accumulate(self, layers):
        cache: Dict[int, np.ndarray] = {}
        for g, gates, filters in self.plans:
            t = np.zeros(g.size)
            power = (lambda v: v * v) if self.squared else np.abs
            for layer, chans, pos in gates:
                if id(layer) not in cache:
                    cache[id(layer)] = self._summed(layer.params['gamma'], lambda w, d: w * d) + \
                        self._summed(layer.params['beta'], lambda w, d: w * d)
                np.add.at(t, chans, power(cache[id(layer)][pos]))
            for m, bias in filters:
                w = self._summed(m.layer.params['weight'], lambda w, d: w * d)
                moved = np.moveaxis(w, m.axis, 0)
                per = moved.reshape(moved.shape[0], -1).sum(axis=1)
                if bias:
                    per = per + self._summed(m.layer.params['bias'], lambda w, d: w * d)
                np.add.at(t, m.channels, power(per[m.positions].sum(axis=1)))
            term = mx.nd.array(t, dtype='float64')
            self.acc[g.name] = term if g.name not in self.acc else self.acc[g.name] + term
        self.batches += 1

    def group_scores(self, group, params):
        if group.name not in self.acc:
            raise MxPruneError(f'criterion group_taylor has no gradients for group {group.name}: run training batches '
                               f'(or Session.accumulate) before pruning')
        return normalize(self.acc[group.name].asnumpy() / max(1, self.batches), self.normalizer)


@CRITERIA.register('bn_gamma')
class BNGamma(Criterion):
    """|gamma| of the BatchNorms in the group; groups without BatchNorm get no score (left unpruned)."""
    structured_only = True

    def votes(self, member):
        return member.attr == 'gamma'

    def member_scores(self, member, data):
        return np.abs(data)[member.positions].sum(axis=1)


@CRITERIA.register('fpgm')
class FPGM(Criterion):
    """Filters near the geometric median of a layer's filters are replaceable: score = sum of distances."""
    structured_only = True

    def votes(self, member):
        return member.producer

    def member_scores(self, member, data):
        moved = np.moveaxis(data, member.axis, 0)
        flat = moved.reshape(moved.shape[0], -1)[member.positions.ravel()]
        flat = flat.reshape(member.positions.shape[0], -1)
        sq = (flat ** 2).sum(axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0)
        return np.sqrt(d2).sum(axis=1)


@CRITERIA.register('random')
class Random(Criterion):
    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.rng = np.random.default_rng(seed)

    def weight_scores(self, layer, weight):
        return self.rng.random(weight.shape)

    def member_scores(self, member, data):
        return self.rng.random(len(member.channels))

    def votes(self, member):
        return member.producer


def get(spec, **kwargs) -> Criterion:
    """A criterion from a name (with options) or an object; normalizer 'auto' is the criterion's own default."""
    if kwargs.get('normalizer') == AUTO:
        del kwargs['normalizer']
    return CRITERIA.create(spec, **kwargs)

"""Cost of masks in the hybridized training step: masked vs dense cifar_resnet20_v1, batch 128, one run.

    python bench/mask_overhead.py [--rounds 15 --steps 5]

Two nets with the same weights: one plain, one with a full-shape mask on every Conv2D and Dense (the worst case:
unstructured masks everywhere, first conv and classifier included). Each round times `steps` training steps
(forward, backward, NAG update) of each net in turn on the same batch; medians over rounds.
Last line: ratio <masked step time / dense step time> (the goal is at most 1.02).
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
import _bootstrap  # noqa: E402,F401

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

import mxprune as mp  # noqa: E402
from mxprune import zoo  # noqa: E402
from mxprune.graph import Selection  # noqa: E402


def step_time(net, trainer, x, y, loss_fn, steps):
    tic = time.perf_counter()
    for _ in range(steps):
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(x.shape[0])
    mx.nd.waitall()
    return (time.perf_counter() - tic) / steps


def main() -> None:
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument('--rounds', type=int, default=15)
    p.add_argument('--steps', type=int, default=5)
    args = p.parse_args()
    mx.random.seed(0)
    nets = {}
    for kind in ('dense', 'masked'):
        net = zoo.get_model('cifar_resnet20_v1', classes=10)
        net(mx.nd.zeros((1, 3, 32, 32)))
        if kind == 'masked':
            for a, b in zip(nets['dense'].collect_params().values(), net.collect_params().values()):
                b.set_data(a.data())
            mod = mp.PruningModifier('l1', granularity='weight', target=0.5,
                                     selection=Selection(skip_first=False, skip_last=False))
            s = mp.Session(net, (1, 3, 32, 32), 1, [mod])
            s.prune_now()
            zeros = s.sparsity()['masked_weight_sparsity']
            print(f'masked: {len(s.masked)} layers carry a full-shape mask, {zeros:.2f} of their weights zero')
        net.hybridize(static_alloc=True, static_shape=True)
        nets[kind] = net
    rng = np.random.RandomState(0)
    x = mx.nd.array(rng.uniform(-1, 1, (128, 3, 32, 32)))
    y = mx.nd.array(rng.randint(0, 10, 128))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainers = {k: gluon.Trainer({n: p for n, p in v.collect_params().items() if p.grad_req != 'null'}, 'nag',
                                 {'learning_rate': 0.01, 'momentum': 0.9, 'wd': 5e-4}) for k, v in nets.items()}
    for k in nets:  # warm-up: graph build, oneDNN primitive caches
        step_time(nets[k], trainers[k], x, y, loss_fn, 3)
    times = {k: [] for k in nets}
    for _ in range(args.rounds):
        for k in nets:
            times[k].append(step_time(nets[k], trainers[k], x, y, loss_fn, args.steps))
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k in nets:
        print(f'{k:6s}: {med[k] * 1000:.1f} ms per step = {128 / med[k]:.0f} images/s '
              f'(spread {np.std(times[k]) / med[k] * 100:.1f} %)')
    print(f'ratio {med["masked"] / med["dense"]:.4f}')


if __name__ == '__main__':
    main()

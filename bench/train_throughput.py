"""Training speed: images/s of the full training loop vs the bare forward/backward/step on one batch.

    python bench/train_throughput.py [--data-dir ../shared/datasets/cifar10] [--steps 40 --rounds 3]

Full loop: mxprune.train.train_epoch as the tools run it (real CIFAR-10 images decoded in memory, random crop and
flip in the background thread, copy into NDArrays, NAG step, on-device metrics, a sync and progress-bar refresh every
20 steps). Bare: the same net, optimizer and batch size, one batch already in an NDArray, only forward, backward and
trainer.step. cifar_resnet20_v1, batch 128, hybridized with static memory; rounds alternate the two.
Last line: ratio <full-loop images/s / bare images/s> (the goal is at least 0.95).
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
import _bootstrap  # noqa: E402,F401

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

from mxprune import data as D, train as T, zoo  # noqa: E402
from mxprune.recipe import TrainConfig  # noqa: E402


def main() -> None:
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument('--data-dir', default=os.path.join(_bootstrap.ROOT, '..', 'shared', 'datasets', 'cifar10'))
    p.add_argument('--steps', type=int, default=40)
    p.add_argument('--rounds', type=int, default=3)
    args = p.parse_args()
    print(_bootstrap.THREADS_NOTE)
    images = D.load_cifar('cifar10', args.data_dir, True, limit=128 * (args.steps + 1))
    aug = D.BatchAugment(D.CIFAR_MEAN, D.CIFAR_STD, crop_pad=4, flip=True)
    loader = D.ArrayLoader(images, 128, aug, train=True, classes=10)
    mx.random.seed(0)
    net = zoo.get_model('cifar_resnet20_v1', classes=10)
    net.hybridize(static_alloc=True, static_shape=True)
    cfg = TrainConfig(epochs=10 ** 6, lr=0.05, log_interval=20)
    trainer = T.make_trainer(net, cfg, [mx.cpu()])
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    x0, y0 = next(iter(loader.batches(0)))
    x, y = mx.nd.array(x0), mx.nd.array(y0)

    def bare(steps):
        tic = time.perf_counter()
        for _ in range(steps):
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(128)
        mx.nd.waitall()
        return steps * 128 / (time.perf_counter() - tic)

    def full(epoch):
        r = T.train_epoch(net, trainer, loader, cfg, [mx.cpu()], epoch, 10 ** 6, classes=10, progress=True)
        return r['images_per_s']

    bare(5)
    full(0)  # warm-up: graph build, oneDNN primitives
    res = {'full': [], 'bare': []}
    for r in range(args.rounds):
        res['full'].append(full(r + 1))
        res['bare'].append(bare(len(loader)))
    f, b = float(np.median(res['full'])), float(np.median(res['bare']))
    print(f'full loop: {f:.0f} images/s (rounds: {", ".join(f"{v:.0f}" for v in res["full"])})')
    print(f'bare step: {b:.0f} images/s (rounds: {", ".join(f"{v:.0f}" for v in res["bare"])})')
    print(f'ratio {f / b:.3f}')


if __name__ == '__main__':
    main()

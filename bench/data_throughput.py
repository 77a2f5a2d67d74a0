"""Augmented data throughput vs cifar_resnet20_v1 training throughput, measured in one run.

    python bench/data_throughput.py [--data-dir ../shared/datasets/cifar10]

Data: a full epoch of the 50,000 CIFAR-10 training images through the loader (random crop with padding, flip,
normalise, in the background thread) including the copy into NDArrays the training loop makes. Training: the real
training loop (tools' train_epoch: hybridized, static memory, NAG) on batches of 128 from the same loader.
Last line: ratio <data images/s / training images/s> (the goal is at least 10).
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
import _bootstrap  # noqa: E402,F401

import mxnet as mx  # noqa: E402

from mxprune import data as D, train as T, zoo  # noqa: E402
from mxprune.recipe import AugmentConfig, DataConfig, TrainConfig  # noqa: E402


def main() -> None:
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument('--data-dir', default=os.path.join(_bootstrap.ROOT, '..', 'shared', 'datasets', 'cifar10'))
    p.add_argument('--train-steps', type=int, default=60)
    args = p.parse_args()
    tic = time.time()
    train_set = D.load_cifar('cifar10', args.data_dir, True)
    print(f'decoded {len(train_set)} training images once in {time.time() - tic:.1f} s; {_bootstrap.THREADS_NOTE}')
    cfg = DataConfig(augment=AugmentConfig(crop_pad=4, flip=True))
    aug = D.BatchAugment(D.CIFAR_MEAN, D.CIFAR_STD, cfg.augment.crop_pad, cfg.augment.flip)
    loader = D.ArrayLoader(train_set, 128, aug, train=True, classes=10, prefetch=cfg.prefetch)

    n = 0
    tic = time.time()
    for x, y in loader.epoch(0):
        xs = mx.nd.array(x)
        ys = mx.nd.array(y)
        n += len(y)
    mx.nd.waitall()
    data_ips = n / (time.time() - tic)
    print(f'data: {n} augmented images in {n / data_ips:.2f} s = {data_ips:.0f} images/s')
    del xs, ys

    net = zoo.get_model('cifar_resnet20_v1', classes=10)
    net.hybridize(static_alloc=True, static_shape=True)
    small = D.ArrayLoader(train_set.head(128 * (args.train_steps + 5)), 128, aug, train=True, classes=10)
    tcfg = TrainConfig(epochs=2, lr=0.1, log_interval=20)
    trainer = T.make_trainer(net, tcfg, [mx.cpu()])
    T.train_epoch(net, trainer, small, tcfg, [mx.cpu()], 0, 2, classes=10, progress=False)  # warm-up epoch
    r = T.train_epoch(net, trainer, small, tcfg, [mx.cpu()], 1, 2, classes=10, progress=False)
    train_ips = r['images_per_s']
    print(f'train: cifar_resnet20_v1 batch 128, {len(small)} steps: {train_ips:.0f} images/s')
    print(f'ratio {data_ips / train_ips:.2f}')


if __name__ == '__main__':
    main()

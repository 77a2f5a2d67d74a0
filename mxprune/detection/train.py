"""Detector training as GluonCV's train_ssd.py / train_yolo3.py: its transforms and batchify functions, target
generation, SSDMultiBoxLoss or the YOLOv3 losses; mxprune's optimizer, learning-rate schedule and hooks."""
import random
import time
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .. import masks as masks_mod
from .. import progress
from ..errors import NumericsError
from .model import family
from .voc import VOCFolder

# Data loaders (GluonCV's transforms and batchify functions)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _ssd_loaders(net, train_set, test_set, size: int, batch: int, test_batch: int, workers: int):
    # The training targets are made per batch in the loop (as GluonCV's train_ssd.py does with DALI), not per image
    # in the transform: one SSDTargetGenerator call per batch costs what one per image does (small nd operators).
    from gluoncv.data.batchify import Pad, Stack, Tuple as BTuple
    from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform, SSDDefaultValTransform
    train = gluon.data.DataLoader(train_set.transform(SSDDefaultTrainTransform(size, size, None, MEAN, STD)), batch,
                                  shuffle=True, batchify_fn=BTuple(Stack(), Pad(pad_val=-1)), last_batch='rollover',
                                  num_workers=workers, thread_pool=True)
    test = gluon.data.DataLoader(test_set.transform(SSDDefaultValTransform(size, size, MEAN, STD)), test_batch,
                                 shuffle=False, batchify_fn=BTuple(Stack(), Pad(pad_val=-1)), last_batch='keep',
                                 num_workers=workers, thread_pool=True)
    return train, test


def _yolo_loaders(net, train_set, test_set, size: int, batch: int, test_batch: int, workers: int):
    from gluoncv.data.batchify import Pad, Stack, Tuple as BTuple
    from gluoncv.data.transforms.presets.yolo import YOLO3DefaultTrainTransform, YOLO3DefaultValTransform
    stack = [Stack() for _ in range(6)] + [Pad(axis=0, pad_val=-1)]
    train = gluon.data.DataLoader(train_set.transform(YOLO3DefaultTrainTransform(size, size, net, mean=MEAN,
                                                                                 std=STD)),
                                  batch, shuffle=True, batchify_fn=BTuple(*stack), last_batch='rollover',
                                  num_workers=workers, thread_pool=True)
    test = gluon.data.DataLoader(test_set.transform(YOLO3DefaultValTransform(size, size, MEAN, STD)), test_batch,
                                 shuffle=False, batchify_fn=BTuple(Stack(), Pad(pad_val=-1)), last_batch='keep',
                                 num_workers=workers, thread_pool=True)
    return train, test


LOADERS = {'ssd': _ssd_loaders, 'yolo3': _yolo_loaders}


def build_loaders(name: str, net, train_set: VOCFolder, test_set: VOCFolder, size: int, batch: int,
                  test_batch: int, workers: int = 0):
    """(train loader, test loader) with GluonCV's train/validation transforms for the detector family."""
    return LOADERS[family(name)](net, train_set, test_set, size, batch, test_batch, workers)


# Training steps: (the scale trainer.step divides by, the losses by name)

def _ssd_step(net, batch, ctx, state):
    from gluoncv.loss import SSDMultiBoxLoss
    from gluoncv.model_zoo.ssd.target import SSDTargetGenerator
    if 'loss' not in state:
        with autograd.train_mode():
            _, _, anchors = net(mx.nd.zeros((1,) + tuple(batch[0].shape[1:]), ctx=ctx[0]))
        state['anchors'] = [anchors.as_in_context(c) for c in ctx]
        state['targets'] = SSDTargetGenerator(iou_thresh=0.5, stds=(0.1, 0.1, 0.2, 0.2), negative_mining_ratio=-1)
        state['loss'] = SSDMultiBoxLoss()
    xs, labels = (gluon.utils.split_and_load(b, ctx, even_split=False) for b in batch)
    cls_t, box_t = [], []
    for anchors, y in zip(state['anchors'], labels):
        c, b, _ = state['targets'](anchors, None, y.slice_axis(axis=-1, begin=0, end=4),
                                   y.slice_axis(axis=-1, begin=4, end=5))
        cls_t.append(c)
        box_t.append(b)
    with autograd.record():
        cls_preds, box_preds = [], []
        for x in xs:
            c, b, _ = net(x)
            cls_preds.append(c)
            box_preds.append(b)
        total, cls_loss, box_loss = state['loss'](cls_preds, box_preds, cls_t, box_t)
        autograd.backward(total)
    # SSDMultiBoxLoss is already normalised by the positive anchors: GluonCV steps with batch size 1
    return 1, {'cls': sum(v.sum() for v in cls_loss), 'box': sum(v.sum() for v in box_loss)}


def _yolo_step(net, batch, ctx, state):
    parts = [gluon.utils.split_and_load(b, ctx, even_split=False) for b in batch]
    xs, targets, gt_boxes = parts[0], parts[1:6], parts[6]
    with autograd.record():
        losses, named = [], {'obj': 0, 'center': 0, 'scale': 0, 'cls': 0}
        for i, x in enumerate(xs):
            obj, center, scale, cls = net(x, gt_boxes[i], *[t[i] for t in targets])
            losses.append(obj + center + scale + cls)
            for k, v in zip(named, (obj, center, scale, cls)):
                named[k] = named[k] + v.sum()
        autograd.backward(losses)
    return batch[0].shape[0], named


STEPS = {'ssd': _ssd_step, 'yolo3': _yolo_step}


def train(net, name: str, loader, cfg, ctx: Sequence[mx.Context], *, start_epoch: int = 0,
          until: Optional[int] = None, hooks: Iterable = (), trainer: Optional[gluon.Trainer] = None,
          log: Optional[Callable[[dict], None]] = None, phase: str = 'train',
          on_epoch: Optional[Callable[[int], Optional[dict]]] = None) -> gluon.Trainer:
    """Trains a detector through epochs [start_epoch, until or cfg.epochs) of cfg (a TrainConfig): GluonCV's targets,
    loss and step; mxprune's optimizer and learning-rate schedule over cfg.epochs; the pruning Session (or any
    Hooks) around each update. Returns the trainer (build a new one after shrinking)."""
    from .. import train as train_mod
    step_fn = STEPS[family(name)]
    hooks = list(hooks)
    trainer = trainer or train_mod.make_trainer(net, cfg, ctx)
    steps = len(loader)
    state: Dict[str, Any] = {}
    # GluonCV detectors pick their outputs (and YOLOv3 its inputs) by autograd.is_training() when a hybridized graph
    # is built, and one graph is cached: drop an inference graph before training on it (GluonCV re-hybridizes too).
    masks_mod.clear_cached(net)
    for epoch in range(start_epoch, cfg.epochs if until is None else min(until, cfg.epochs)):
        train_mod.seed_epoch(cfg.seed, epoch)
        random.seed((cfg.seed * 100003 + epoch + 1) % (2 ** 31))  # GluonCV's box crops draw from Python's random
        tic, seen, sums = time.time(), 0, {}
        bar = progress.bar(loader, desc=f'{phase} {epoch + 1}/{cfg.epochs}', total=len(loader))
        for b, batch in enumerate(bar):
            trainer.set_learning_rate(train_mod.lr_at(cfg, epoch * steps + b, steps))
            scale, losses = step_fn(net, batch, ctx, state)
            for h in hooks:
                h.before_update(batch[0].shape[0])
            trainer.step(scale)
            for h in hooks:
                h.after_update()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v
            seen += batch[0].shape[0]
        mx.nd.waitall()
        bar.close()
        row = {'phase': phase, 'epoch': epoch, 'lr': trainer.learning_rate, 'images_per_s': seen / (time.time() - tic),
               **{f'loss_{k}': float(v.asscalar()) / steps for k, v in sums.items()}}
        bad = [k for k, v in row.items() if k.startswith('loss_') and not np.isfinite(v)]
        if bad:
            raise NumericsError(f'{phase}: {bad[0]} is {row[bad[0]]} in epoch {epoch}; lower the learning rate')
        if on_epoch is not None:
            row.update(on_epoch(epoch) or {})
        if log is not None:
            log(row)
    return trainer


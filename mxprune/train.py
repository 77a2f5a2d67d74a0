"""The Gluon training loop: hybridized, multi-context, checkpointed every epoch, resumable to the same result.

Resumption is exact because nothing random carries over an epoch boundary: at the start of epoch e the MXNet RNG
is seeded from (seed, e), and the data order and augmentation are pure functions of (seed, e) too (see
mxprune.data.ArrayLoader). A checkpoint holds the parameters (masks included), the optimizer's momentum buffers
(saved as NDArrays, never pickled), the epoch and the metrics so far.
"""
import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from . import io
from .errors import MxPruneError, NumericsError, RecipeError
from .layers import gluon_compat as gc


def parse_ctx(text: str) -> List[mx.Context]:
    """'cpu' | 'cpu:0,1' | 'gpu:0' | 'gpu:0,1' -> contexts; a GPU on a CPU-only build is refused."""
    kind, _, ids = text.strip().lower().partition(':')
    if kind not in ('cpu', 'gpu'):
        raise RecipeError(f'train.ctx: {text!r} is not allowed; expected cpu, cpu:0,1, gpu:0 or gpu:0,1')
    try:
        idx = [int(i) for i in ids.split(',')] if ids else [0]
    except ValueError:
        raise RecipeError(f'train.ctx: {text!r} is not allowed; device ids must be integers, e.g. gpu:0,1') from None
    if kind == 'gpu':
        have = mx.context.num_gpus()
        missing = [i for i in idx if i >= have]
        if missing:
            raise RecipeError(f'train.ctx: {text!r}: gpu {missing[0]} is not available (this MXNet build sees '
                              f'{have} GPU(s); install mxnet-cu1xx for CUDA, or use cpu)')
        return [mx.gpu(i) for i in idx]
    return [mx.cpu(i) for i in idx]


def lr_at(cfg, step: int, steps_per_epoch: int, epochs: Optional[int] = None) -> float:
    """Learning rate at a global step: linear warm-up, then cosine, step or constant (a pure function)."""
    epochs = cfg.epochs if epochs is None else epochs
    total = max(1, epochs * steps_per_epoch)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.lr_schedule == 'constant':
        return cfg.lr
    if cfg.lr_schedule == 'step':
        done = sum(1 for s in cfg.lr_steps if step >= s * steps_per_epoch)
        return cfg.lr * cfg.lr_factor ** done
    t = min(1.0, (step - warm) / max(1, total - warm))
    return cfg.final_lr + (cfg.lr - cfg.final_lr) * 0.5 * (1 + math.cos(math.pi * t))


def seed_epoch(seed: int, epoch: int) -> None:
    """Seeds MXNet and numpy from (seed, epoch); epoch -1 is the weight initialisation."""
    value = (seed * 100003 + epoch + 1) % (2 ** 31)
    mx.random.seed(value)
    np.random.seed(value)


def trainable(net: gluon.Block) -> Dict[str, gluon.Parameter]:
    """Parameters the optimizer updates (masks and BN running statistics are grad_req='null')."""
    return {k: p for k, p in net.collect_params().items() if p.grad_req != 'null'}


class NAG(mx.optimizer.NAG):
    """Nesterov momentum that never writes the weight it is reading.

    MXNet 1.9's nag_mom_update, called with out=weight as mx.optimizer.NAG does, uses the already-updated weight in
    the momentum's weight-decay term when out and weight share memory, and the old weight when they do not;
    which one happens depends on the array's oneDNN storage layout, i.e. on the history of the process (measured:
    an uninterrupted and a resumed run drifted apart by 1e-5 relative per step). Computing into a new array and
    copying it back gives the documented update every time, so resumed runs stay bit-identical.
    """

    def _update_impl(self, index, weight, grad, state, multi_precision=False):
        if multi_precision or state is None:
            return super()._update_impl(index, weight, grad, state, multi_precision)
        self._update_count(index)
        kwargs = {'rescale_grad': self.rescale_grad, 'momentum': self.momentum}
        if self.clip_gradient:
            kwargs['clip_gradient'] = self.clip_gradient
        new = mx.nd.nag_mom_update(weight, grad, state, lr=self._get_lr(index), wd=self._get_wd(index), **kwargs)
        weight[:] = new


def make_trainer(net: gluon.Block, cfg, ctx: Sequence[mx.Context], kvstore=None) -> gluon.Trainer:
    params = trainable(net)
    if cfg.no_wd:
        for name, p in params.items():
            if name.endswith(('_gamma', '_beta', '_bias')):
                p.wd_mult = 0.0
    hyper = {'learning_rate': cfg.lr, 'momentum': cfg.momentum, 'wd': cfg.wd}
    opt = NAG(**hyper) if cfg.optimizer == 'nag' else mx.optimizer.SGD(**hyper)
    if hasattr(kvstore, 'make_trainer'):  # data-parallel workers (mxprune.distributed): their KVStore or Horovod
        return kvstore.make_trainer(params, opt)
    if kvstore is None:
        kvstore = 'device' if len(ctx) > 1 else None
    return gluon.Trainer(params, opt, kvstore=kvstore, update_on_kvstore=False if kvstore is not None else None)


def optimizer_states(trainer: gluon.Trainer) -> Dict[str, mx.nd.NDArray]:
    """Momentum buffers by parameter name (from the first device's updater)."""
    out = {}
    updaters = gc.trainer_updaters(trainer)
    if not updaters:
        return out
    states = updaters[0].states
    for i, p in enumerate(gc.trainer_params(trainer)):
        s = states.get(i)
        if isinstance(s, mx.nd.NDArray):
            out[p.name] = s.copyto(mx.cpu())
    return out


def load_optimizer_states(trainer: gluon.Trainer, states: Dict[str, mx.nd.NDArray]) -> None:
    """Restores momentum buffers, already on each device and marked synced: the Updater then takes the same
    (aggregated) update path as in an uninterrupted run, which keeps a resumed run bit-identical."""
    params = gc.trainer_params(trainer)
    by_name = {p.name: i for i, p in enumerate(params)}
    unknown = [k for k in states if k not in by_name]
    if unknown:
        raise MxPruneError(f'optimizer state for {unknown[0]!r} matches no trained parameter')
    gc.init_trainer_kvstore(trainer)
    for k, updater in enumerate(gc.trainer_updaters(trainer)):
        for name, arr in states.items():
            i = by_name[name]
            ctx = params[i].list_ctx()
            updater.states[i] = arr.as_in_context(ctx[k % len(ctx)]).copy()
            updater.states_synced[i] = True


class Checkpointer:
    """Per-epoch checkpoints under <run>/ckpt/<phase>-eNNNN/, published atomically, the newest kept."""

    def __init__(self, run_dir: str, phase: str):
        self.root = os.path.join(run_dir, 'ckpt')
        self.phase = phase
        self.pointer = os.path.join(self.root, f'{phase}.json')

    def latest(self) -> Optional[dict]:
        if not os.path.exists(self.pointer):
            return None
        with open(self.pointer, encoding='utf-8') as f:
            return json.load(f)

    def save(self, net: gluon.Block, trainer: Optional[gluon.Trainer], meta: dict,
             extra: Optional[Callable[[str], None]] = None):
        mx.nd.waitall()  # BN statistics of the last step land asynchronously
        name = f'{self.phase}-e{meta["epoch"]:04d}'
        final = os.path.join(self.root, name)
        tmp = final + '.tmp'
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        net.save_parameters(os.path.join(tmp, 'net.params'))
        if trainer is not None:
            states = optimizer_states(trainer)
            mx.nd.save(os.path.join(tmp, 'optimizer.states'), states) if states else None
        if extra is not None:
            extra(tmp)  # more state (the pruning session's) written into the same checkpoint folder
        with open(os.path.join(tmp, 'meta.json'), 'w', encoding='utf-8') as f:
            json.dump(meta, f)
        io.publish_dir(tmp, final)
        previous = self.latest()
        io.write_json(self.pointer, {'dir': name, **meta})
        if previous and previous['dir'] != name:
            shutil.rmtree(os.path.join(self.root, previous['dir']), ignore_errors=True)

    def path(self, fname: str) -> Optional[str]:
        latest = self.latest()
        return os.path.join(self.root, latest['dir'], fname) if latest else None

    def load(self, net: gluon.Block, ctx: Sequence[mx.Context]) -> dict:
        """Loads the newest checkpoint's parameters; returns its meta (epoch, history)."""
        folder = self.folder()
        net.load_parameters(os.path.join(folder, 'net.params'), ctx=list(ctx))
        with open(os.path.join(folder, 'meta.json'), encoding='utf-8') as f:
            return json.load(f)

    def load_states(self, trainer: gluon.Trainer) -> None:
        states_file = os.path.join(self.folder(), 'optimizer.states')
        if os.path.exists(states_file):
            load_optimizer_states(trainer, mx.nd.load(states_file))

    def folder(self) -> str:
        return os.path.join(self.root, self.latest()['dir'])


def evaluate(net: gluon.Block, loader, ctx: Sequence[mx.Context], progress: bool = False,
             desc: str = 'eval', reduce: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Dict[str, float]:
    """Top-1, top-5 and mean cross-entropy over a loader (labels as integers).

    reduce: sums [loss, top-1, top-5, images] over data-parallel workers that each evaluated their shard.
    """
    from tqdm import tqdm
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    sums = [mx.nd.zeros(3, ctx=c) for c in ctx]  # loss, top1, top5
    n = 0
    with tqdm(total=len(loader), desc=desc, leave=False, disable=not progress, mininterval=1.0) as bar:
        for x, y in loader.epoch(0):
            xs = gluon.utils.split_and_load(x, ctx, even_split=False)
            ys = gluon.utils.split_and_load(y, ctx, even_split=False)
            for xi, yi, s in zip(xs, ys, sums):
                out = net(xi)
                yi = yi.astype('float32')
                k = min(5, out.shape[1])
                top = mx.nd.topk(out, k=k, axis=1)
                hit1 = (top[:, 0] == yi).sum()
                hit5 = (top == yi.reshape((-1, 1))).sum()
                s += mx.nd.concat(loss_fn(out, yi).sum(), hit1, hit5, dim=0)
            n += len(y)
            bar.update(1)
    total = sum(s.asnumpy().astype(np.float64) for s in sums)
    if reduce is not None:
        total = reduce(np.append(total, n))
        n = int(total[3])
    return {'loss': float(total[0] / n), 'top1': float(total[1] / n), 'top5': float(total[2] / n), 'n': n}


class Hooks:
    """What the training loop calls. The four methods below are called on every hook; fit also calls these on the
    hooks that define them: resume(net, cfg) -> the checkpoint's meta or None (before the Trainer is built);
    on_trainer(trainer) once it is built; reduce(totals) -> totals summed over data-parallel workers (see evaluate);
    on_epoch_done(net, trainer, epoch, history) after the epoch's evaluation; last_path() -> the newest checkpoint.
    """

    def on_epoch_start(self, epoch: int) -> None:
        """Before the first batch of an epoch."""

    def before_update(self, batch_size: int) -> None:
        """After backward, before trainer.step (gradients are final here)."""

    def after_update(self) -> None:
        """After trainer.step."""

    def on_epoch_end(self, epoch: int) -> None:
        """After the last update of an epoch, before evaluation and checkpoint."""


class Checkpoints(Hooks):
    """Resumes a phase from its newest checkpoint and writes one after every epoch (Checkpointer as a hook).

    Args:
        run_dir: ckpt/ goes under it.
        phase: names the checkpoints (dense, prune, finetune...).
        resume: continue from the phase's newest checkpoint if there is one.
        write: write a checkpoint after every epoch (data-parallel workers other than rank 0 do not).
        state: saves more state into each checkpoint folder and restores it after the parameters are loaded
            (`save_state(folder)`, `load_state(folder)`: the pruning Session).
    """

    def __init__(self, run_dir: str, phase: str, *, resume: bool = True, write: bool = True, state: Any = None):
        self.ck = Checkpointer(run_dir, phase)
        self.resuming, self.write, self.state = resume, write, state
        self.resumed = False

    def resume(self, net: gluon.Block, cfg: 'FitConfig') -> Optional[dict]:
        if not self.resuming or self.ck.latest() is None:
            return None
        meta = self.ck.load(net, cfg.ctx)
        if self.state is not None:
            self.state.load_state(self.ck.folder())
        self.resumed = True
        return meta

    def on_trainer(self, trainer: gluon.Trainer) -> None:
        if self.resumed:
            self.ck.load_states(trainer)

    def on_epoch_done(self, net: gluon.Block, trainer: gluon.Trainer, epoch: int, history: List[dict]) -> None:
        if self.write:
            extra = self.state.save_state if self.state is not None else None
            self.ck.save(net, trainer, {'epoch': epoch, 'history': history}, extra=extra)

    def last_path(self) -> Optional[str]:
        return self.ck.path('')


def _finite_or_raise(value: float, what: str, step: int, epoch: int, ckpt: Optional[str]) -> None:
    if not math.isfinite(value):
        kept = f'; the last good checkpoint is {ckpt}' if ckpt else '; no checkpoint was written yet'
        raise NumericsError(f'{what} is {value} at step {step} (epoch {epoch}); stopping{kept}. Lower train.lr or '
                            f'check the data')


def train_epoch(net: gluon.Block, trainer: gluon.Trainer, loader, cfg, ctx: Sequence[mx.Context], epoch: int,
                epochs: int, *, classes: int, hooks: Iterable[Hooks] = (), progress: bool = True,
                desc: str = 'train', last_ckpt: Optional[str] = None,
                extra_loss: Optional[Callable] = None, mixup: bool = True,
                ce_weight: float = 1.0) -> Dict[str, float]:
    """One epoch of SGD/NAG over the loader; returns mean loss, accuracy, images/s.

    Syncs only every cfg.log_interval steps (metrics are summed on the device in between).
    """
    from tqdm import tqdm
    hooks = list(hooks)
    steps = len(loader)
    sparse_loss = gluon.loss.SoftmaxCrossEntropyLoss()
    soft_loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
    eps = cfg.label_smoothing
    sums = [mx.nd.zeros(2, ctx=c) for c in ctx]  # loss, correct
    seen = 0
    logged = {'loss': float('nan'), 'acc': float('nan')}
    for h in hooks:
        h.on_epoch_start(epoch)
    tic = time.time()
    with tqdm(total=steps, desc=f'{desc} {epoch + 1}/{epochs}', disable=not progress, mininterval=1.0,
              dynamic_ncols=True) as bar:
        for b, (x, y) in enumerate(loader.epoch(epoch, mixup)):
            step = epoch * steps + b
            trainer.set_learning_rate(lr_at(cfg, step, steps, epochs))
            xs = gluon.utils.split_and_load(x, ctx, even_split=False)
            ys = gluon.utils.split_and_load(y, ctx, even_split=False)
            with autograd.record():
                outs = [net(xi) for xi in xs]
                losses = []
                for xi, out, yi in zip(xs, outs, ys):
                    soft = yi.ndim == 2
                    if eps:
                        yi = (yi if soft else mx.nd.one_hot(yi, classes)) * (1 - eps) + eps / classes
                        soft = True
                    loss = soft_loss(out, yi) if soft else sparse_loss(out, yi)
                    if extra_loss is not None:
                        loss = ce_weight * loss + extra_loss(xi, out)
                    losses.append(loss)
            autograd.backward(losses)
            for h in hooks:
                h.before_update(x.shape[0])
            trainer.step(x.shape[0])
            for h in hooks:
                h.after_update()
            for s, out, yi, loss in zip(sums, outs, ys, losses):
                target = yi.argmax(axis=1) if yi.ndim == 2 else yi.astype('float32')
                s += mx.nd.concat(loss.sum(), (out.argmax(axis=1) == target).sum(), dim=0)
            seen += x.shape[0]
            if (b + 1) % cfg.log_interval == 0 or b + 1 == steps:
                total = sum(s.asnumpy().astype(np.float64) for s in sums)
                logged = {'loss': float(total[0] / seen), 'acc': float(total[1] / seen)}
                _finite_or_raise(logged['loss'], 'the training loss', step, epoch, last_ckpt)
                bar.set_postfix(loss=f'{logged["loss"]:.3f}', acc=f'{logged["acc"]:.3f}',
                                img_s=f'{seen / (time.time() - tic):.0f}', lr=f'{trainer.learning_rate:.4f}')
            bar.update(1)
    for h in hooks:
        h.on_epoch_end(epoch)
    mx.nd.waitall()
    elapsed = time.time() - tic
    return {'train_loss': logged['loss'], 'train_acc': logged['acc'], 'images_per_s': seen / max(elapsed, 1e-9),
            'epoch_time_s': elapsed, 'lr': trainer.learning_rate}


def check_weights(net: gluon.Block, step: int, epoch: int, last_ckpt: Optional[str]) -> None:
    """Stops on NaN/inf anywhere in the parameters (one sync per epoch)."""
    norms = [p.data().norm() for p in net.collect_params().values() if gc.has_data(p)]
    if norms:
        total = float(mx.nd.add_n(*[n.as_in_context(mx.cpu()) for n in norms]).asscalar())
        _finite_or_raise(total, 'the sum of the weight norms', step, epoch, last_ckpt)


@dataclasses.dataclass
class FitConfig:
    """The settings of one training loop; the optimizer's and the LR schedule's are in `train` (a TrainConfig).

    Attributes:
        train: a TrainConfig.
        ctx: contexts from parse_ctx.
        classes: number of classes (for label smoothing).
        phase: names the progress bar and the log rows (and, by convention, the checkpoints).
        epochs: the LR schedule's length in epochs (default train.epochs).
        start_epoch: the first epoch when not resuming (a phase that continues another's LR schedule).
        until: stop before this epoch, keeping the LR schedule of `epochs` (a phase cut in two).
        mixup_off_epochs: the last epochs train without mixup.
        extra_loss: f(x, out) -> per-sample loss added to ce_weight x cross-entropy (distillation).
        log: called with one row per epoch, after the hooks' on_epoch_done.
    """
    train: Any
    ctx: Sequence[mx.Context]
    classes: int
    phase: str = 'train'
    epochs: Optional[int] = None
    start_epoch: int = 0
    until: Optional[int] = None
    mixup_off_epochs: int = 0
    extra_loss: Optional[Callable] = None
    ce_weight: float = 1.0
    progress: bool = True
    log: Optional[Callable[[dict], None]] = None

    @property
    def total_epochs(self) -> int:
        return self.train.epochs if self.epochs is None else self.epochs


def _defining(hooks: Sequence[Any], method: str) -> list:
    return [getattr(h, method) for h in hooks if callable(getattr(h, method, None))]


def fit(net: gluon.Block, trainer: Union[gluon.Trainer, Callable[[], gluon.Trainer]], data: Tuple[Any, Any],
        cfg: FitConfig, hooks: Sequence[Any] = ()) -> List[dict]:
    """Trains for cfg.total_epochs (or until cfg.until), evaluating after every epoch; returns one row per epoch.

    Args:
        net: an initialised (and usually hybridized) net.
        trainer: a Trainer, or a function that builds one. It is called after the hooks' resume, because a
            data-parallel Trainer broadcasts the weights as it is built and must see the resumed ones.
        data: (train loader, test loader or None), mxprune.data loaders.
        hooks: objects with the Hooks methods: the pruning Session, Checkpoints, a worker's hooks.
    """
    hooks = list(hooks)
    epochs = cfg.total_epochs
    history: List[dict] = []
    start = cfg.start_epoch
    for resume in _defining(hooks, 'resume'):
        meta = resume(net, cfg)
        if meta is not None:
            history, start = meta.get('history', []), meta['epoch'] + 1
    if not isinstance(trainer, gluon.Trainer):
        trainer = trainer()
    for on_trainer in _defining(hooks, 'on_trainer'):
        on_trainer(trainer)
    reducers = _defining(hooks, 'reduce')
    reduce = reducers[0] if reducers else None

    def last_ckpt() -> Optional[str]:  # named when training stops on NaN
        return next((p for p in (f() for f in _defining(hooks, 'last_path')) if p), None)

    train_loader, test_loader = data
    for epoch in range(start, epochs if cfg.until is None else min(cfg.until, epochs)):
        seed_epoch(cfg.train.seed, epoch)
        row = {'phase': cfg.phase, 'epoch': epoch}
        row.update(train_epoch(net, trainer, train_loader, cfg.train, cfg.ctx, epoch, epochs, classes=cfg.classes,
                               hooks=hooks, progress=cfg.progress, desc=cfg.phase, last_ckpt=last_ckpt(),
                               extra_loss=cfg.extra_loss, mixup=epoch < epochs - cfg.mixup_off_epochs,
                               ce_weight=cfg.ce_weight))
        check_weights(net, (epoch + 1) * len(train_loader) - 1, epoch, last_ckpt())
        if test_loader is not None:
            ev = evaluate(net, test_loader, cfg.ctx, progress=cfg.progress, desc=f'{cfg.phase} eval', reduce=reduce)
            row.update({'test_top1': ev['top1'], 'test_top5': ev['top5'], 'test_loss': ev['loss']})
        history.append(row)
        for done in _defining(hooks, 'on_epoch_done'):
            done(net, trainer, epoch, history)
        if cfg.log is not None:
            cfg.log(row)
    return history

"""The phases of a classification run: dense training, sparsity training, pruning with fine-tuning (shrunk right
after the last structured update), measuring."""
import os
from typing import Any, Dict, Optional

import mxnet as mx

from .. import io, train as train_mod, zoo
from .context import Setup, build_net, fresh_model, input_shape_of, reducer, worker_hooks, writer
from .folder import State


def shrink_epoch(mods, steps_per_epoch: int, epochs: int) -> int:
    """The epoch at which the net is shrunk: the first epoch boundary after the last structured update, or the end of
    fine-tuning when a modifier is unstructured or updates until then."""
    last = max(m.schedule.last_update(steps_per_epoch) for m in mods)
    if not all(m.structured for m in mods) or last >= epochs * steps_per_epoch:
        return epochs
    return -(-last // steps_per_epoch)


def train_dense(s: Setup, net: Optional[mx.gluon.HybridBlock] = None) -> mx.gluon.HybridBlock:
    """Trains (or resumes) the dense baseline for train.epochs; writes dense.params and returns the net.

    With train.epochs 0 the model's pretrained weights are the baseline.
    """
    net = net or build_net(s)
    final = s.run.file('dense.params')
    if os.path.exists(final):
        zoo.load_params(net, final, s.ctx)
        return net
    if s.recipe.train.epochs > 0:
        _fit(s, net, s.recipe.train, 'dense', mixup_off_epochs=s.recipe.data.augment.mixup_off_epochs,
             hooks=worker_hooks(s, net))
    else:
        net(mx.nd.zeros(input_shape_of(s.recipe), ctx=s.ctx[0]))
    mx.nd.waitall()
    io.write_with(final, net.save_parameters)
    return net


def _distiller(s: Setup):
    """(extra_loss, ce_weight) for knowledge distillation from the dense model, or (None, 1.0)."""
    d = s.recipe.distill
    if d.alpha <= 0:
        return None, 1.0
    teacher = fresh_model(s.recipe, s.ctx)
    zoo.load_params(teacher, s.run.file('dense.params'), s.ctx)
    return distiller(teacher, d.alpha, d.temperature)


def distiller(teacher: mx.gluon.HybridBlock, alpha: float, temperature: float):
    """(extra_loss, ce_weight) for knowledge distillation from `teacher` (Hinton et al.), as train.fit takes them:
    the student's loss is (1 - alpha) x cross-entropy + alpha x T^2 x the cross-entropy of its softened outputs
    against the teacher's (the KL divergence up to a constant)."""
    teacher.hybridize(static_alloc=True, static_shape=True)
    t = temperature

    def extra_loss(x, out):
        with mx.autograd.pause():
            soft = mx.nd.softmax(teacher(x) / t)
        return -alpha * t * t * (soft * mx.nd.log_softmax(out / t)).sum(axis=1)
    return extra_loss, 1.0 - alpha


def _fit(s: Setup, net, cfg, phase: str, hooks=(), state=None, **kw):
    """Trains one phase: resumed from and checkpointed to <run>/ckpt (`state`, the Session, saved with it); a worker's
    hooks sum the evaluation over the workers."""
    fit_cfg = train_mod.FitConfig(cfg, s.ctx, s.classes, phase=phase, progress=s.progress, log=s.run.log, **kw)
    ckpt = train_mod.Checkpoints(s.run.path, phase, write=writer(s), state=state)
    return train_mod.fit(net, lambda: train_mod.make_trainer(net, cfg, s.ctx, s.workers),
                         (s.train_loader, s.test_loader), fit_cfg, [ckpt, *hooks])


def sparsity_phase(s: Setup, net) -> mx.gluon.HybridBlock:
    """Training with the recipe's regularisers (e.g. L1 on BN gammas for network slimming); writes sparse.params."""
    from ..session import Session
    final = s.run.file('sparse.params')
    if os.path.exists(final):
        zoo.load_params(net, final, s.ctx)
        return net
    regs = [r.build() for r in s.recipe.regularizers]
    session = Session(net, input_shape_of(s.recipe), len(s.train_loader), [], regs)
    session.sync = s.workers
    cfg = s.recipe.sparsity
    _fit(s, net, cfg, 'sparsity', hooks=[session, *worker_hooks(s, net, session)], state=session)
    mx.nd.waitall()
    io.write_with(final, net.save_parameters)
    return net


def prune_phase(s: Setup, net):
    """Pruning on schedule with fine-tuning; shrinks as soon as the last structured update is done.

    Returns:
        (pruned net, plan, per-layer report of the masked net, session summary)
    """
    from .. import shrink as shrink_mod
    from ..session import Session
    rec = s.recipe
    shape = input_shape_of(rec)
    spe = len(s.train_loader)
    epochs = rec.finetune.epochs
    extra_loss, ce_weight = _distiller(s)
    state = State(s.run)
    final_prefix = s.run.file('pruned')
    if os.path.exists(final_prefix + '.params') and os.path.exists(final_prefix + '.plan.json'):
        net = fresh_model(rec, s.ctx)
        plan = shrink_mod.load_pruned(net, final_prefix, s.ctx)
        net.hybridize(static_alloc=True, static_shape=True)
        return net, plan, state.get('layers'), state.get('prune_summary')

    shrunk_prefix = s.run.file('shrunk')
    if os.path.exists(shrunk_prefix + '.params'):  # the masked part is done: continue on the small net
        net = fresh_model(rec, s.ctx)
        plan = shrink_mod.load_pruned(net, shrunk_prefix, s.ctx)
        split = state.get('shrunk_at_epoch')
    else:
        mods = [c.build() for c in rec.pruning]
        session = Session(net, shape, spe, mods)
        session.sync = s.workers  # scores summed over the workers, masks verified equal (data-parallel runs)
        last = max(m.schedule.last_update(spe) for m in mods)
        split = shrink_epoch(mods, spe, epochs)

        recal = max(c.recalibrate_batches for c in rec.pruning)

        def evaluate_step(sess) -> None:
            """BatchNorm statistics refreshed after a pruning step (training batches of their own, no update), then
            the top-1 of the masked net right after every step before the last (the last is 'at_pruning')."""
            if recal and any(m.structured for m in mods):
                batches = s.train_loader.epoch(1_000_000 + sess.step, mixup=False)
                sess.recalibrate((b for _, b in zip(range(recal), batches)), s.ctx)
                batches.close()
                if s.workers is not None:  # each recalibrated on its shard; after the last step rank 0's are saved
                    s.workers.sync_aux(net)
            if sess.step >= last:
                return
            ev = train_mod.evaluate(net, s.test_loader, s.ctx, reduce=reducer(s))
            row = {'step': sess.step, 'epoch': round(sess.epoch, 3), 'top1': ev['top1'],
                   'macs_ratio': sess.history[-1]['shrunk_macs'] / sess.dense_count.macs,
                   'widths': sess.history[-1]['widths']}
            timed = [m.latency_steps[-1] for m in mods if m.latency_steps]
            if timed:
                row['latency'] = timed[0]
            state.set('prune_steps', [r for r in state.get('prune_steps', []) if r['step'] < sess.step] + [row])
            s.run.log({'event': 'prune_step', **row})
        session.after_prune.append(evaluate_step)
        batches = max(c.score_batches for c in rec.pruning)
        if batches and any(m.criterion.needs_grad for m in mods) and not train_mod.Checkpointer(s.run.path,
                                                                                                 'prune').latest():
            # gradient scores of the trained net before any fine-tuning step, for the first update (one-shot at
            # epoch 0, or the first plan of a gradual schedule)
            session.accumulate(_take(s.train_loader.epoch(0), batches), mx.gluon.loss.SoftmaxCrossEntropyLoss(),
                               s.ctx)
        if split > 0:
            _fit(s, net, rec.finetune, 'prune', hooks=[session, *worker_hooks(s, net, session)], state=session,
                 until=split, extra_loss=extra_loss, ce_weight=ce_weight)
            ck = train_mod.Checkpointer(s.run.path, 'prune')
            if ck.latest() and session.step == 0:  # resumed past the end of this phase
                ck.load(net, s.ctx)
                session.load_state(ck.folder())
        session.catch_up()
        at = train_mod.evaluate(net, s.test_loader, s.ctx, progress=s.progress, desc='eval at pruning',
                                reduce=reducer(s))
        state.set('at_pruning', {'epoch': split, 'top1': at['top1'], 'top5': at['top5'], 'loss': at['loss'],
                                 'step': session.step})
        s.run.log({'event': 'pruned', 'epoch': split, 'test_top1': at['top1'], 'test_top5': at['top5']})
        layers = session.layer_report()
        summary = {**session.sparsity(), 'history': session.history,
                   'graph': session.graph.summary(), 'unsupported': session.graph.unsupported,
                   'latency': [m.latency_report for m in mods if m.latency_report]}
        state.set('layers', layers)
        state.set('prune_summary', summary)
        net, plan = session.finalize(shrink=any(m.structured for m in mods))
        if plan is None:
            plan = shrink_mod.Plan(shape, {}, type(net).__name__)
        shrink_mod.save_pruned(net, plan, shrunk_prefix)
        state.set('shrunk_at_epoch', split)
        s.run.log({'event': 'shrunk', 'epoch': split, 'groups_cut': len(plan.groups),
                   'macs_ratio': summary['macs_ratio']})
    if split < epochs:
        net.hybridize(static_alloc=True, static_shape=True)
        _fit(s, net, rec.finetune, 'finetune', start_epoch=split, extra_loss=extra_loss, ce_weight=ce_weight,
             hooks=worker_hooks(s, net))  # a new Trainer (new KVStore keys) for the shrunk net
    shrink_mod.save_pruned(net, plan, final_prefix)
    return net, plan, state.get('layers'), state.get('prune_summary')


def _take(it, n: int):
    for i, item in enumerate(it):
        if i >= n:
            break
        yield item


def measure(s: Setup, dense, pruned) -> Dict[str, Any]:
    """Accuracy, MACs and parameters of both nets."""
    from .. import flops as flops_mod
    from ..graph import DependencyGraph
    shape = input_shape_of(s.recipe)
    out = {}
    for name, net in (('dense', dense), ('pruned', pruned)):
        ev = train_mod.evaluate(net, s.test_loader, s.ctx, progress=s.progress, desc=f'{name} eval',
                                reduce=reducer(s))
        count = flops_mod.dense(DependencyGraph.trace(net, shape))
        out[name] = {'top1': ev['top1'], 'top5': ev['top5'], 'test_loss': ev['loss'], 'test_images': ev['n'],
                     'macs': count.macs, 'params': count.params}
    return out


"""The run folder and the phases the tools chain: dense training (then pruning, fine-tuning, export).

A run folder holds the resolved recipe (recipe.yaml), one JSON line per event (log.jsonl), checkpoints (ckpt/),
final weights and report.json. Every file is written atomically; `resume=True` continues from the last checkpoint.
"""
import dataclasses
import os
import time
from typing import Any, Dict, Optional

import mxnet as mx

from . import data as data_mod
from . import io, progress as progress_mod, recipe as recipe_mod, train as train_mod, zoo
from .config import to_dict
from .errors import ModelError, RecipeError
from .version import __version__


class RunFolder:
    """A run's output folder; refuses to overwrite another run, checks that a resume uses the same recipe."""

    def __init__(self, path: str, recipe: recipe_mod.Recipe, resume: bool = False):
        self.path = os.path.abspath(path)
        self.recipe = recipe
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RecipeError(f'--out: {self.path} is a file; choose a folder for the run')
        saved = os.path.join(self.path, 'recipe.yaml')
        text = recipe_mod.dump(recipe)
        if resume:
            if not os.path.isfile(saved):
                raise RecipeError(f'--resume: {self.path} holds no run (no recipe.yaml); start it without --resume')
            old = recipe_mod.from_mapping(recipe_mod.load_yaml(saved), saved)
            diff = _first_difference(to_dict(old), to_dict(recipe))
            if diff:
                raise RecipeError(f'--resume: the recipe differs from the one {self.path} was started with at '
                                  f'{diff}; resume with the same recipe and --set values, or use a new --out')
        else:
            if os.path.isdir(self.path) and os.listdir(self.path):
                raise RecipeError(f'--out: {self.path} already exists and is not empty; pass --resume to continue '
                                  f'that run, or choose another --out')
            os.makedirs(self.path, exist_ok=True)
            io.write_text(saved, text)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def log(self, row: Dict[str, Any]) -> None:
        io.append_line(self.file('log.jsonl'), {'time': round(time.time(), 3), **row})


def _first_difference(a: Any, b: Any, path: str = '') -> Optional[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = _first_difference(a.get(k), b.get(k), f'{path}.{k}' if path else k)
            if d:
                return d
        return None
    return None if a == b else f'{path} ({a!r} -> {b!r})'


@dataclasses.dataclass
class Setup:
    """What every phase needs: recipe, contexts, loaders, classes, run folder."""
    recipe: recipe_mod.Recipe
    ctx: list
    train_loader: Any
    test_loader: Any
    classes: int
    run: RunFolder
    data_root: str
    progress: bool = True
    resumed: bool = False
    workers: Any = None  # mxprune.distributed.Workers in a data-parallel run, else None
    data_source: str = ''  # where data_root came from: --data-dir, data.root, $MXPRUNE_DATA or the MXNet cache


def _producer(pretrained: str) -> str:
    """What to run first for a missing `model.pretrained`: a run folder's dense.params is written by the recipe
    of the same name (runs/<name>/dense.params <- recipes/<name>.yaml)."""
    parts = os.path.normpath(pretrained).split(os.sep)
    recipe = os.path.join('recipes', parts[-2] + '.yaml') if len(parts) >= 2 else ''
    if parts[-1] == 'dense.params' and os.path.isfile(recipe):
        return (f'it is written by python tools/prune.py --recipe {recipe} --out {os.path.dirname(pretrained)} '
                f'(run that first)')
    return 'give a .params file, or "zoo" for GluonCV\'s published weights'


def setup(recipe: recipe_mod.Recipe, out: str, *, data_dir: Optional[str] = None, resume: bool = False,
          progress: bool = True, threads_note: str = '', num_parts: int = 1, part_index: int = 0,
          workers=None) -> Setup:
    """Validates what the recipe names (model, contexts, data) before creating the run folder.

    With `workers` (mxprune.distributed) each worker reads its shard (part kv.rank of num_workers) with
    data.batch_size / num_workers per step; only rank 0 writes `out`, the others a private scratch folder.
    """
    zoo.check_name(recipe.model.name)
    pretrained = recipe.model.pretrained
    if pretrained and pretrained != 'zoo' and not os.path.isfile(pretrained):
        raise ModelError(f'model.pretrained: {pretrained} not found (relative paths are read from '
                         f'{os.getcwd()}); {_producer(pretrained)}')
    ctx = train_mod.parse_ctx(recipe.train.ctx)
    for section in ('finetune', 'sparsity'):
        train_mod.parse_ctx(getattr(recipe, section).ctx)
    root, source = data_mod.root_source(recipe.data.dataset, recipe.data.root, data_dir)
    data_cfg = recipe.data
    if workers is not None:
        num_parts, part_index, data_cfg = workers.num_workers, workers.rank, _worker_data(recipe, workers, resume)
        progress, out = progress and workers.is_writer, workers.run_dir(out)
    train_loader, test_loader, classes = data_mod.build_loaders(
        data_cfg, root, seed=recipe.train.seed, num_parts=num_parts, part_index=part_index,
        input_size=recipe.model.input_size, classes=recipe.model.classes, source=source)
    if pretrained and pretrained != 'zoo':  # a file that does not fit fails here, before the run folder exists
        zoo.load_params(zoo.get_model(recipe.model.name, classes=classes), pretrained, [mx.cpu()])
    run = RunFolder(out, recipe, resume)
    run.log({'event': 'start', 'resume': resume, 'mxprune': __version__, 'mxnet': mx.__version__,
             'threads': threads_note, 'ctx': [str(c) for c in ctx], 'data_root': root,
             'train_images': train_loader.num_samples, 'test_images': test_loader.num_samples,
             **({'workers': workers.num_workers, 'rank': workers.rank} if workers is not None else {})})
    progress_mod.ENABLED = progress
    return Setup(recipe, ctx, train_loader, test_loader, classes, run, root, progress, resume, workers, source)


def _worker_data(recipe: recipe_mod.Recipe, workers, resume: bool):
    """A worker's data section: the recipe's batch is the global one, split evenly over the workers."""
    n, batch = workers.num_workers, recipe.data.batch_size
    if resume and n > 1:
        raise RecipeError(f'--resume is not supported with {n} workers yet (only rank 0 keeps checkpoints); start '
                          f'a new run, or resume in one process')
    for i, item in enumerate(recipe.pruning):
        if n > 1 and item.target.kind in ('latency', 'speedup'):
            raise RecipeError(f'pruning.{i}.target: a {item.target.kind} target is not allowed with {n} workers; '
                              f'each worker would time its own CPU and could choose other widths. Expected one '
                              f'process, or a macs/params/sparsity target')
    if batch % n:
        raise RecipeError(f'data.batch_size: {batch} is not allowed with {n} workers; expected a multiple of {n} '
                          f'(the global batch is split evenly over the workers)')
    return dataclasses.replace(recipe.data, batch_size=batch // n)


def _writer(s: Setup) -> bool:
    return s.workers is None or s.workers.is_writer


def _reduce(s: Setup):
    """Sums evaluation counts over the workers (each evaluates its shard of the test set)."""
    return s.workers.sum_numpy if s.workers is not None else None


def _worker_hooks(s: Setup, net, session=None) -> list:
    """BN statistics made equal and parameters verified at each epoch end; masks re-applied after each step."""
    return [s.workers.hooks(net, session)] if s.workers is not None else []


def build_net(s: Setup) -> mx.gluon.HybridBlock:
    m = s.recipe.model
    train_mod.seed_epoch(s.recipe.train.seed, -1)  # the initial weights are a function of the seed too
    net = zoo.get_model(m.name, classes=s.classes, pretrained=m.pretrained, ctx=s.ctx)
    if s.recipe.train.hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    if s.workers is not None:  # no deferred shapes left when rank 0's weights are broadcast
        net(mx.nd.zeros(input_shape_of(s.recipe), ctx=s.ctx[0]))
    return net


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
        train_mod.fit(net, s.train_loader, s.test_loader, s.recipe.train, s.ctx, s.run.path, phase='dense',
                      classes=s.classes, resume=True, progress=s.progress, log=s.run.log,
                      mixup_off_epochs=s.recipe.data.augment.mixup_off_epochs, kvstore=s.workers,
                      hooks=_worker_hooks(s, net), reduce=_reduce(s), checkpoint=_writer(s))
    else:
        net(mx.nd.zeros(input_shape_of(s.recipe), ctx=s.ctx[0]))
    mx.nd.waitall()
    io.write_with(final, net.save_parameters)
    return net


def finish_dense(s: Setup, net: mx.gluon.HybridBlock, started: float) -> Dict[str, Any]:
    """Evaluates the dense net, writes report.json and logs 'done'."""
    ev = train_mod.evaluate(net, s.test_loader, s.ctx, progress=s.progress, reduce=_reduce(s))
    report = {'model': s.recipe.model.name, 'test_top1': ev['top1'], 'test_top5': ev['top5'],
              'test_images': ev['n'], 'epochs': s.recipe.train.epochs,
              'wall_time_s': round(time.time() - started, 1), 'weights': s.run.file('dense.params')}
    if not _writer(s):
        return report
    io.write_json(s.run.file('report.json'), report)
    s.run.log({'event': 'done', **report})
    return report


def input_shape_of(recipe: recipe_mod.Recipe, batch: int = 1) -> tuple:
    return (batch, 3, recipe.model.input_size, recipe.model.input_size)


def classes_of(recipe: recipe_mod.Recipe) -> int:
    return recipe.model.classes or data_mod.dataset_info(recipe.data.dataset).classes


def fresh_model(recipe: recipe_mod.Recipe, ctx: Optional[list] = None) -> mx.gluon.HybridBlock:
    """An initialised model of the recipe's architecture with its deferred shapes resolved."""
    net = zoo.get_model(recipe.model.name, classes=classes_of(recipe), ctx=ctx)
    net(mx.nd.zeros(input_shape_of(recipe), ctx=(ctx or [mx.cpu()])[0]))
    return net


def load_run(run_dir: str, ctx: Optional[list] = None):
    """The dense and the pruned nets of a finished run folder (pruned is None if the run has no pruned model).

    Returns:
        (recipe, dense_net, pruned_net, plan)
    """
    from .shrink import load_pruned
    saved = os.path.join(run_dir, 'recipe.yaml')
    if not os.path.isfile(saved):
        raise RecipeError(f'{run_dir}: not a run folder (no recipe.yaml)')
    rec = recipe_mod.from_mapping(recipe_mod.load_yaml(saved), saved)
    dense = fresh_model(rec, ctx)
    dense_params = os.path.join(run_dir, 'dense.params')
    if os.path.isfile(dense_params):
        zoo.load_params(dense, dense_params, ctx or [mx.cpu()])
    pruned, plan = None, None
    if os.path.isfile(os.path.join(run_dir, 'pruned.params')):
        pruned = fresh_model(rec, ctx)
        plan = load_pruned(pruned, os.path.join(run_dir, 'pruned'), ctx)
    return rec, dense, pruned, plan


# ----------------------------------------------------------------------------------------------------------------
# The main job: dense -> (sparsity training) -> pruning with fine-tuning -> shrink -> evaluate -> export -> measure


class State:
    """Small facts a resumed run must not recompute (dense accuracy, phase times), in state.json.

    Several State objects of one run may be alive at once (the pipeline keeps one, the prune phase opens its own), so
    every read and write goes to the file: a write never puts back a stale copy of another writer's keys."""

    def __init__(self, run: RunFolder):
        self.path = run.file('state.json')

    @property
    def data(self) -> Dict[str, Any]:
        if not os.path.exists(self.path):
            return {}
        import json
        with open(self.path, encoding='utf-8') as f:
            return json.load(f)

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def set(self, key: str, value) -> None:
        data = self.data
        data[key] = value
        io.write_json(self.path, data)

    def add_time(self, phase: str, seconds: float) -> None:
        data = self.data
        times = data.setdefault('seconds', {})
        times[phase] = round(times.get(phase, 0.0) + seconds, 1)
        io.write_json(self.path, data)


def _distiller(s: Setup):
    """(extra_loss, ce_weight) for knowledge distillation from the dense model, or (None, 1.0)."""
    d = s.recipe.distill
    if d.alpha <= 0:
        return None, 1.0
    teacher = fresh_model(s.recipe, s.ctx)
    zoo.load_params(teacher, s.run.file('dense.params'), s.ctx)
    teacher.hybridize(static_alloc=True, static_shape=True)
    t = d.temperature

    def extra_loss(x, out):
        with mx.autograd.pause():
            soft = mx.nd.softmax(teacher(x) / t)
        return -d.alpha * t * t * (soft * mx.nd.log_softmax(out / t)).sum(axis=1)
    return extra_loss, 1.0 - d.alpha


def _fit(s: Setup, net, cfg, phase: str, **kw):
    return train_mod.fit(net, s.train_loader, s.test_loader, cfg, s.ctx, s.run.path, phase=phase,
                         classes=s.classes, resume=True, progress=s.progress, log=s.run.log, kvstore=s.workers,
                         reduce=_reduce(s), checkpoint=_writer(s), **kw)


def sparsity_phase(s: Setup, net) -> mx.gluon.HybridBlock:
    """Training with the recipe's regularisers (e.g. L1 on BN gammas for network slimming); writes sparse.params."""
    from .session import Session
    final = s.run.file('sparse.params')
    if os.path.exists(final):
        zoo.load_params(net, final, s.ctx)
        return net
    regs = [r.build() for r in s.recipe.regularizers]
    session = Session(net, input_shape_of(s.recipe), len(s.train_loader), [], regs)
    session.sync = s.workers
    cfg = s.recipe.sparsity

    def trainer():
        t = train_mod.make_trainer(net, cfg, s.ctx, s.workers)
        session.bind_trainer(t)
        return t
    _fit(s, net, cfg, 'sparsity', hooks=[session, *_worker_hooks(s, net, session)], trainer_factory=trainer,
         on_checkpoint=session.save_state, on_resume=session.load_state)
    mx.nd.waitall()
    io.write_with(final, net.save_parameters)
    return net


def prune_phase(s: Setup, net):
    """Pruning on schedule with fine-tuning; shrinks as soon as the last structured update is done.

    Returns:
        (pruned net, plan, per-layer report of the masked net, session summary)
    """
    from . import shrink as shrink_mod
    from .session import Session
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
        structured = all(m.structured for m in mods)
        last = max(m.schedule.last_update(spe) for m in mods)
        if structured and last % spe == 0 and last // spe < epochs:
            split = last // spe  # shrink right when the last update is done, at an epoch boundary
        elif structured and last < epochs * spe:
            split = last // spe + 1
        else:
            split = epochs

        def trainer():
            t = train_mod.make_trainer(net, rec.finetune, s.ctx, s.workers)
            session.bind_trainer(t)
            return t

        recal = max(c.recalibrate_batches for c in rec.pruning)

        def evaluate_step(sess) -> None:
            """BatchNorm statistics refreshed after a pruning step (training batches of their own, no update), then
            the top-1 of the masked net right after every step before the last (the last is 'at_pruning')."""
            if recal and any(m.structured for m in mods):
                batches = s.train_loader.epoch(1_000_000 + sess.step, mixup=False)
                sess.recalibrate((b for _, b in zip(range(recal), batches)), s.ctx)
                batches.close()
            if sess.step >= last:
                return
            ev = train_mod.evaluate(net, s.test_loader, s.ctx, reduce=_reduce(s))
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
            _fit(s, net, rec.finetune, 'prune', hooks=[session, *_worker_hooks(s, net, session)],
                 trainer_factory=trainer,
                 on_checkpoint=session.save_state, on_resume=session.load_state, until=split,
                 extra_loss=extra_loss, ce_weight=ce_weight)
            ck = train_mod.Checkpointer(s.run.path, 'prune')
            if ck.latest() and session.step == 0:  # resumed past the end of this phase
                ck.load(net, s.ctx)
                session.load_state(ck.folder())
        session.catch_up()
        at = train_mod.evaluate(net, s.test_loader, s.ctx, progress=s.progress, desc='eval at pruning',
                                reduce=_reduce(s))
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
             hooks=_worker_hooks(s, net))  # a new Trainer (new KVStore keys) for the shrunk net
    shrink_mod.save_pruned(net, plan, final_prefix)
    return net, plan, state.get('layers'), state.get('prune_summary')


def _take(it, n: int):
    for i, item in enumerate(it):
        if i >= n:
            break
        yield item


def measure(s: Setup, dense, pruned) -> Dict[str, Any]:
    """Accuracy, MACs and parameters of both nets."""
    from . import flops as flops_mod
    from .graph import DependencyGraph
    shape = input_shape_of(s.recipe)
    out = {}
    for name, net in (('dense', dense), ('pruned', pruned)):
        ev = train_mod.evaluate(net, s.test_loader, s.ctx, progress=s.progress, desc=f'{name} eval',
                                reduce=_reduce(s))
        count = flops_mod.dense(DependencyGraph.trace(net, shape))
        out[name] = {'top1': ev['top1'], 'top5': ev['top5'], 'test_loss': ev['loss'], 'test_images': ev['n'],
                     'macs': count.macs, 'params': count.params}
    return out


def run_prune(s: Setup, started: float) -> Dict[str, Any]:
    """The whole job for one recipe; returns the report (also written to report.json)."""
    from . import benchmark as bench_mod
    from . import export as export_mod
    from .shrink import load_pruned
    rec = s.recipe
    state = State(s.run)
    tic = time.time()
    net = train_dense(s)
    state.add_time('dense', time.time() - tic)
    if rec.regularizers:
        tic = time.time()
        net = sparsity_phase(s, net)
        state.add_time('sparsity', time.time() - tic)
    if not rec.pruning:
        return finish_dense(s, net, started)
    tic = time.time()
    pruned, plan, layers, summary = prune_phase(s, net)
    state.add_time('prune+finetune', time.time() - tic)
    dense = fresh_model(rec, s.ctx)
    zoo.load_params(dense, s.run.file('dense.params'), s.ctx)
    dense.hybridize(static_alloc=True, static_shape=True)
    report: Dict[str, Any] = {'model': rec.model.name, 'dataset': rec.data.dataset,
                              'criteria': [p.criterion for p in rec.pruning],
                              'granularity': [p.granularity for p in rec.pruning]}
    report.update(measure(s, dense, pruned))
    report['ratios'] = {'macs': report['pruned']['macs'] / report['dense']['macs'],
                        'params': report['pruned']['params'] / report['dense']['params']}
    if summary:
        report['pruned']['masked_weight_sparsity'] = summary.get('masked_weight_sparsity')
        report['pruned']['effective_macs'] = summary.get('macs')
        report['ratios']['effective_macs'] = summary.get('macs_ratio')
    report['at_pruning'] = state.get('at_pruning')  # masked net when the last mask update was done
    report['prune_steps'] = state.get('prune_steps', [])  # masked net after each earlier update (gradual schedules)
    if summary and summary.get('latency'):
        report['latency_model'] = summary['latency']  # predicted vs measured: compare with report['speed']
    report['groups_cut'] = len(plan.groups)
    report['layers'] = layers
    if not _writer(s):  # what follows talks to no other worker: rank 0 alone measures, exports and reports
        return report
    if rec.benchmark.enabled:
        tic = time.time()
        d, p = fresh_model(rec, [mx.cpu()]), fresh_model(rec, [mx.cpu()])
        zoo.load_params(d, s.run.file('dense.params'), [mx.cpu()])
        load_pruned(p, s.run.file('pruned'), [mx.cpu()])
        report['speed'] = bench_mod.speedup(d, p, input_shape_of(rec), batches=rec.benchmark.batches,
                                            macs_ratio=report['ratios']['macs'],
                                            backend='auto' if rec.benchmark.backend == 'auto' else None,
                                            repeats=rec.benchmark.repeats)
        state.add_time('benchmark', time.time() - tic)
    if rec.export.enabled:
        files = export_mod.export_symbol(pruned, s.run.file(os.path.join('export', 'model')),
                                         input_shape_of(rec, rec.export.batch))
        report['export'] = files
        if rec.export.fused:
            fused_prefix = s.run.file(os.path.join('export', 'model-fused'))
            report['export']['fused'] = export_mod.export_fused(pruned, fused_prefix,
                                                                input_shape_of(rec, rec.export.batch))
        if rec.export.onnx:
            path, diff = export_mod.export_onnx(s.run.file(os.path.join('export', 'model')),
                                                input_shape_of(rec, rec.export.batch))
            report['export']['onnx'] = path
            report['export']['onnx_runtime_diff'] = diff
    if rec.robustness.enabled and rec.data.dataset != 'imagenet':
        tic = time.time()
        report['robustness'] = robustness_report(s, dense, pruned)
        state.add_time('robustness', time.time() - tic)
    report['files'] = {'plan': s.run.file('pruned.plan.json'), 'pruned_params': s.run.file('pruned.params'),
                       'dense_params': s.run.file('dense.params')}
    report['seconds'] = State(s.run).get('seconds', {})  # per phase, summed over resumed invocations
    report['wall_time_s'] = round(time.time() - started, 1)  # this invocation
    report['resumed'] = bool(s.resumed)
    try:
        from . import plots
        report['plots'] = plots.run_plots(s.run.path, report)
    except ImportError:
        report['plots'] = {}
    io.write_json(s.run.file('report.json'), report)
    s.run.log({'event': 'done', 'top1_dense': report['dense']['top1'], 'top1_pruned': report['pruned']['top1'],
               'macs_ratio': report['ratios']['macs']})
    return report


def robustness_report(s: Setup, dense, pruned) -> Dict[str, Any]:
    """FGSM / PGD top-1 of both nets on the first test images (see mxprune.robustness)."""
    from . import robustness
    r = s.recipe.robustness
    info = data_mod.dataset_info(s.recipe.data.dataset)
    test = s.test_loader.data.head(r.images)
    result = robustness.evaluate({'dense': dense, 'pruned': pruned}, test.images, test.labels, info.mean, info.std,
                                 [e / 255 for e in r.eps], r.pgd_steps, ctx=s.ctx[0], progress=s.progress)
    return {'images': len(test), 'pgd_steps': r.pgd_steps, **result}


def summary_table(report: Dict[str, Any]) -> str:
    d, p = report['dense'], report['pruned']
    rows = [('test top-1', f'{d["top1"]:.4f}', f'{p["top1"]:.4f}'),
            ('test top-5', f'{d["top5"]:.4f}', f'{p["top5"]:.4f}'),
            ('MACs (M)', f'{d["macs"] / 1e6:.2f}', f'{p["macs"] / 1e6:.2f} ({report["ratios"]["macs"]:.3f}x)'),
            ('params (M)', f'{d["params"] / 1e6:.3f}', f'{p["params"] / 1e6:.3f} ({report["ratios"]["params"]:.3f}x)')]
    if p.get('masked_weight_sparsity') and report['groups_cut'] == 0:
        rows.append(('zero weights', '0', f'{p["masked_weight_sparsity"]:.3f} of masked layers'))
    for b, row in report.get('speed', {}).get('batches', {}).items():
        rows.append((f'latency batch {b} (ms)', f'{row["dense_ms"]:.2f}',
                     f'{row["pruned_ms"]:.2f} ({row["speedup"]:.2f}x faster)'))
    rob = report.get('robustness')
    if rob:
        for kind in ('fgsm', 'pgd'):
            for e, v in rob['pruned'][kind].items():
                rows.append((f'{kind.upper()} {e} top-1', f'{rob["dense"][kind][e]:.4f}', f'{v:.4f}'))
    rows.append(('wall time (s)', '', f'{report["wall_time_s"]:.0f}'))
    w = max(len(r[0]) for r in rows)
    lines = [f'{"":{w}}  {"dense":>14}  pruned', *[f'{a:{w}}  {b:>14}  {c}' for a, b, c in rows]]
    return '\n'.join(lines)

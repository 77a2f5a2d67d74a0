"""The detection run of `mxprune detect`: the phases of mxprune.pipeline (dense -> prune + fine-tune -> measure ->
export) in the same run folder and state, with the detector's loss and loop (train.py) and its metric (VOC mAP).

A resumed run continues at the first phase whose output is missing (dense.params, pruned.params + pruned.plan.json,
the measurements in state.json).
"""
import dataclasses
import gc
import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

import mxnet as mx

from .. import data as data_mod
from .. import export as export_mod
from .. import flops as flops_mod
from .. import io, shrink
from .. import train as train_mod
from ..errors import MxPruneError, RecipeError
from ..graph import DependencyGraph
from ..pipeline import RunFolder, State, shrink_epoch
from ..recipe import Recipe
from .model import backbone_of, backbone_selection, build_detector, family, load_params, macs_by_part
from .speed import speedup
from .train import build_loaders, train
from .voc import VOCFolder, evaluate


def check(rec: Recipe, path: str) -> None:
    """What `mxprune detect` needs beyond a valid recipe."""
    from .. import zoo
    det = rec.detection
    if det is None:
        raise RecipeError(f'{path}: detection: missing; mxprune detect needs a detection section and data.dataset '
                          f'voc (see recipes/raccoon_ssd_l2.yaml)')
    family(zoo.check_name(rec.model.name))
    if rec.model.classes not in (None, len(det.classes)):
        raise RecipeError(f'{path}: model.classes: {rec.model.classes!r} is not allowed; expected null or '
                          f'{len(det.classes)} (the number of detection.classes)')
    for i, p in enumerate(rec.pruning):
        if p.granularity != 'channel':
            raise RecipeError(f'{path}: pruning[{i}].granularity: {p.granularity!r} is not allowed here; expected '
                              f'channel (mxprune detect shrinks the detector)')


@dataclasses.dataclass
class Detection:
    """What every phase of a detection run needs: the detection counterpart of mxprune.pipeline.Setup."""
    recipe: Recipe
    ctx: list
    run: RunFolder
    data_root: str
    train_set: VOCFolder
    test_set: VOCFolder
    backbone: Tuple[str, ...]
    quiet: bool = False
    train_loader: Any = None
    test_loader: Any = None

    @property
    def shape(self) -> tuple:
        return (1, 3, self.recipe.model.input_size, self.recipe.model.input_size)

    def build(self, pretrained: Optional[str] = None) -> mx.gluon.HybridBlock:
        rec = self.recipe
        net = build_detector(rec.model.name, rec.detection.classes, rec.model.input_size, self.ctx,
                             pretrained=pretrained, seed=rec.train.seed)
        if rec.train.hybridize:
            net.hybridize(static_alloc=True, static_shape=True)
        return net

    def evaluate(self, net) -> dict:
        """The recipe's mAP (and per class AP) on the test set."""
        det = self.recipe.detection
        return evaluate(net, self.test_loader, self.ctx, det.classes, metric=det.metric,
                        iou_thresh=det.iou_thresh, nms_thresh=det.nms_thresh, nms_topk=det.nms_topk,
                        post_nms=det.post_nms)

    def log(self, row: Dict[str, Any]) -> None:
        self.run.log(row)
        if not self.quiet:
            print(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in row.items()), flush=True)

    def every(self, net, total: int) -> Callable[[int], Optional[dict]]:
        """The mAP every detection.eval_every epochs and after the last one, for the epoch's log row."""
        every = self.recipe.detection.eval_every

        def on_epoch(epoch: int) -> Optional[dict]:
            if every and ((epoch + 1) % every == 0 or epoch + 1 == total):
                return {'map': self.evaluate(net)['map']}
            return None
        return on_epoch


def setup(rec: Recipe, out: str, *, data_dir: Optional[str] = None, resume: bool = False, quiet: bool = False,
          threads_note: str = '') -> Detection:
    """Checks the contexts and reads the VOC folder before the run folder is created."""
    det = rec.detection
    ctx = train_mod.parse_ctx(rec.train.ctx)
    train_mod.parse_ctx(rec.finetune.ctx)
    root = data_mod.resolve_root('voc', rec.data.root, data_dir)
    train_set = VOCFolder(root, det.train_split, det.classes, skip_empty=True)
    test_set = VOCFolder(root, det.test_split, det.classes)
    run = RunFolder(out, rec, resume)
    run.log({'event': 'start', 'resume': resume, 'threads': threads_note, 'data_root': root,
             'train_images': len(train_set), 'test_images': len(test_set), 'train_skipped': train_set.skipped})
    return Detection(rec, ctx, run, root, train_set, test_set, backbone_of(rec.model.name, det.backbone), quiet)


def counts(graph: DependencyGraph, backbone) -> dict:
    """MACs of the whole net, of the backbone and of the heads, and the parameters."""
    parts = macs_by_part(graph, backbone)
    if not parts['backbone']:  # the ratios and a backbone macs target would divide by it
        raise MxPruneError(f'detection.backbone: {list(backbone)} matches no Conv/Dense layer path')
    return {'macs': parts['net'], 'backbone_macs': parts['backbone'], 'head_macs': parts['heads'],
            'params': flops_mod.dense(graph).params}


def dense_phase(d: Detection, state: State) -> mx.gluon.HybridBlock:
    """Trains the dense detector for train.epochs (or takes the pretrained weights as they are); dense.params and
    its mAP. Builds the loaders (YOLOv3's training transform needs the net)."""
    rec = d.recipe
    tic = time.time()
    net = d.build(rec.model.pretrained)
    d.train_loader, d.test_loader = build_loaders(rec.model.name, net, d.train_set, d.test_set, rec.model.input_size,
                                                  rec.data.batch_size, rec.data.test_batch_size,
                                                  rec.detection.workers)
    dense_file = d.run.file('dense.params')
    if os.path.exists(dense_file):
        load_params(net, dense_file, d.ctx)
    else:
        train(net, rec.model.name, d.train_loader, rec.train, d.ctx, log=d.log, phase='dense',
              on_epoch=d.every(net, rec.train.epochs))
        mx.nd.waitall()
        io.write_with(dense_file, net.save_parameters)
    if state.get('dense') is None:
        state.set('dense', d.evaluate(net))
        state.add_time('dense', time.time() - tic)
    return net


def prune_phase(d: Detection, net, state: State):
    """Prunes the backbone on schedule while fine-tuning; the net is shrunk right after its last mask update and
    fine-tuned on. Returns (pruned net, plan)."""
    from ..session import Session
    rec = d.recipe
    mods = [c.build() for c in rec.pruning]
    for m in mods:
        if rec.detection.macs_of == 'backbone' and m.target.kind == 'macs':
            m.macs_layers = backbone_selection(d.backbone)
    spe = len(d.train_loader)
    session = Session(net, d.shape, spe, mods)
    trainer = train_mod.make_trainer(net, rec.finetune, d.ctx)
    session.bind_trainer(trainer)
    epochs = rec.finetune.epochs
    split = shrink_epoch(mods, spe, epochs)
    if split > 0:
        train(net, rec.model.name, d.train_loader, rec.finetune, d.ctx, until=split, hooks=[session], trainer=trainer,
              log=d.log, phase='prune')
    session.catch_up()
    at = d.evaluate(net)
    sparsity = session.sparsity()
    state.set('at_pruning', {'epoch': split, 'map': at['map']})
    state.set('prune_summary', {'macs_ratio': sparsity['macs_ratio'], 'graph': session.graph.summary(),
                                'unsupported': sorted({op for op, _ in session.graph.unsupported}),
                                'groups': len(session.graph.groups),
                                'prunable_groups': sum(len(m.groups) for m in mods)})
    d.log({'event': 'pruned', 'epoch': split, 'map': at['map'], 'macs_ratio': sparsity['macs_ratio']})
    net, plan = session.finalize()
    if split < epochs:
        net.hybridize(static_alloc=True, static_shape=True)
        train(net, rec.model.name, d.train_loader, rec.finetune, d.ctx, start_epoch=split, log=d.log,
              phase='finetune', on_epoch=d.every(net, epochs))
    mx.nd.waitall()
    return net, plan


def export_and_speed(d: Detection, pruned, report: Dict[str, Any]) -> None:
    """The export (every output re-imported and compared; then the export's own mAP) and dense vs pruned speed."""
    rec, det = d.recipe, d.recipe.detection
    size = rec.model.input_size
    if rec.export.enabled:
        pruned.set_nms(nms_thresh=det.nms_thresh, nms_topk=det.nms_topk, post_nms=det.post_nms)
        out = d.run.file(os.path.join('export', 'model'))
        report['export'] = export_mod.export_symbol(pruned, out, (rec.export.batch, 3, size, size))
        report['export']['map'] = d.evaluate(export_mod.load_exported(out, d.ctx[0]))['map']
    # The loaders' worker thread pool, even idle, slows every forward pass of this process at batch 1; closing it
    # before timing gives the latency a fresh process sees.
    d.train_loader = d.test_loader = None
    gc.collect()
    if rec.benchmark.enabled:
        dense_cpu, pruned_cpu = build_detector(rec.model.name, det.classes, size), \
            build_detector(rec.model.name, det.classes, size)
        load_params(dense_cpu, d.run.file('dense.params'), [mx.cpu()])
        shrink.load_pruned(pruned_cpu, d.run.file('pruned'), [mx.cpu()])
        report['speed'] = speedup(dense_cpu, pruned_cpu, d.shape, rec.benchmark.batches, rec.benchmark.repeats,
                                  fused=rec.benchmark.backend == 'auto')


def run_detect(d: Detection, started: float) -> Dict[str, Any]:
    """The whole detection job; returns the report (also written to report.json)."""
    rec, det = d.recipe, d.recipe.detection
    state = State(d.run)
    net = dense_phase(d, state)
    report: Dict[str, Any] = {'model': rec.model.name, 'data': d.data_root, 'classes': list(det.classes),
                              'train_images': len(d.train_set), 'test_images': len(d.test_set),
                              'metric': f'{det.metric} mAP at IoU {det.iou_thresh}', 'backbone': list(d.backbone)}
    report['dense'] = {'map': state.get('dense')['map'], **counts(DependencyGraph.trace(d.build(), d.shape),
                                                                  d.backbone)}
    if not rec.pruning:
        return finish(d, state, report, started)
    prefix = d.run.file('pruned')
    if os.path.exists(prefix + '.params') and os.path.exists(prefix + '.plan.json'):
        pruned = d.build()
        plan = shrink.load_pruned(pruned, prefix, d.ctx)
    else:
        with state.timed('prune+finetune'):
            pruned, plan = prune_phase(d, net, state)
            shrink.save_pruned(pruned, plan, prefix)
    pruned.hybridize(static_alloc=True, static_shape=True)
    if state.get('pruned') is None:
        state.set('pruned', d.evaluate(pruned))
    report['pruned'] = {'map': state.get('pruned')['map'], **counts(DependencyGraph.trace(pruned, d.shape),
                                                                    d.backbone)}
    report['at_pruning'] = state.get('at_pruning')
    report['ratios'] = {k: report['pruned'][k] / report['dense'][k]
                        for k in ('macs', 'backbone_macs', 'head_macs', 'params')}
    report['groups_cut'] = len(plan.groups)
    report['prune_summary'] = state.get('prune_summary')
    with state.timed('measure'):
        export_and_speed(d, pruned, report)
    return finish(d, state, report, started)


def finish(d: Detection, state: State, report: Dict[str, Any], started: float) -> Dict[str, Any]:
    """Phase times and wall time into the report; report.json; the 'done' event."""
    report['seconds'] = state.get('seconds', {})
    report['wall_time_s'] = round(time.time() - started, 1)
    io.write_json(d.run.file('report.json'), report)
    d.run.log({'event': 'done', 'map_dense': report['dense']['map'],
               'map_pruned': report.get('pruned', {}).get('map')})
    return report


def summary(report: Dict[str, Any]) -> str:
    """The dense vs pruned table printed at the end of a run."""
    d, p = report['dense'], report.get('pruned')
    rows = [('mAP (' + report['metric'] + ')', f'{d["map"]:.4f}', f'{p["map"]:.4f}' if p else ''),
            ('MACs, whole net (M)', f'{d["macs"] / 1e6:.1f}',
             f'{p["macs"] / 1e6:.1f} ({report["ratios"]["macs"]:.3f}x)' if p else ''),
            ('MACs, backbone (M)', f'{d["backbone_macs"] / 1e6:.1f}',
             f'{p["backbone_macs"] / 1e6:.1f} ({report["ratios"]["backbone_macs"]:.3f}x)' if p else ''),
            ('params (M)', f'{d["params"] / 1e6:.3f}',
             f'{p["params"] / 1e6:.3f} ({report["ratios"]["params"]:.3f}x)' if p else '')]
    for what, label in (('batches', 'detector'), ('network', 'network, no NMS')):
        for b, row in report.get('speed', {}).get(what, {}).items():
            rows.append((f'latency {label}, batch {b} (ms)', f'{row["dense_ms"]:.1f}',
                         f'{row["pruned_ms"]:.1f} ({row["speedup"]:.2f}x faster)'))
    if 'export' in report:
        rows.append(('exported model mAP', '', f'{report["export"]["map"]:.4f}'))
    rows.append(('wall time (s)', '', f'{report["wall_time_s"]:.0f}'))
    w = max(len(r[0]) for r in rows)
    return '\n'.join([f'{"":{w}}  {"dense":>12}  pruned'] + [f'{a:{w}}  {b:>12}  {c}' for a, b, c in rows])

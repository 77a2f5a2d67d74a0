"""Detection main job: train a GluonCV SSD / YOLOv3 on a Pascal VOC layout folder, prune its backbone, fine-tune,
report mAP, MACs and speed, export.

    mxprune detect --recipe recipes/raccoon_ssd_l2.yaml --data-dir ../shared/datasets/raccoon
    mxprune detect --recipe recipes/raccoon_ssd_l2.yaml --set finetune.epochs=2 --out runs/ssd
    mxprune detect --recipe recipes/raccoon_ssd_l2.yaml --out runs/ssd --resume     # after a crash

The run folder holds recipe.yaml (resolved), log.jsonl (a line per epoch and event), state.json, dense.params,
pruned.params + pruned.plan.json, export/ (-symbol.json, -0000.params, sha256 manifest) and report.json. A resumed
run continues at the first phase whose output is missing (dense training, pruning with fine-tuning, measuring).
"""
import argparse
import gc
import os
import time
from typing import TYPE_CHECKING, List, Optional

from mxprune import cli
from mxprune.commands import bootstrap
from mxprune.commands.train import add_run_args, out_folder
from mxprune.errors import RecipeError

if TYPE_CHECKING:
    from mxprune.graph import DependencyGraph
    from mxprune.recipe import Recipe


def arguments(p: argparse.ArgumentParser) -> None:
    add_run_args(p)


def check(rec: 'Recipe', path: str) -> None:
    """What `mxprune detect` needs beyond a valid recipe."""
    from mxprune import detection as D, zoo

    det = rec.detection
    if det is None:
        raise RecipeError(f'{path}: detection: missing; mxprune detect needs a detection section and data.dataset '
                          f'voc (see recipes/raccoon_ssd_l2.yaml)')
    D.family(zoo.check_name(rec.model.name))
    if rec.model.classes not in (None, len(det.classes)):
        raise RecipeError(f'{path}: model.classes: {rec.model.classes!r} is not allowed; expected null or '
                          f'{len(det.classes)} (the number of detection.classes)')
    for i, p in enumerate(rec.pruning):
        if p.granularity != 'channel':
            raise RecipeError(f'{path}: pruning[{i}].granularity: {p.granularity!r} is not allowed here; expected '
                              f'channel (mxprune detect shrinks the detector)')


def main(argv: Optional[List[str]] = None) -> int:
    args = cli.parse_command('detect', __doc__, arguments, argv)
    threads_note = bootstrap.start()
    import mxnet as mx

    from mxprune import data as data_mod, detection as D, export as export_mod, io, pipeline, progress
    from mxprune import recipe as recipe_mod, shrink, train as train_mod
    progress.ENABLED = not args.quiet
    from mxprune.graph import DependencyGraph

    rec = recipe_mod.load(args.recipe, args.set)
    check(rec, args.recipe)
    started = time.time()
    det, name, size = rec.detection, rec.model.name, rec.model.input_size
    shape = (1, 3, size, size)
    backbone = D.backbone_of(name, det.backbone)
    ctx = train_mod.parse_ctx(rec.train.ctx)
    train_mod.parse_ctx(rec.finetune.ctx)
    root = data_mod.resolve_root('voc', rec.data.root, args.data_dir)
    train_set = D.VOCFolder(root, det.train_split, det.classes, skip_empty=True)
    test_set = D.VOCFolder(root, det.test_split, det.classes)
    run = pipeline.RunFolder(out_folder(args), rec, args.resume)
    state = pipeline.State(run)
    run.log({'event': 'start', 'resume': args.resume, 'threads': threads_note, 'data_root': root,
             'train_images': len(train_set), 'test_images': len(test_set), 'train_skipped': train_set.skipped})
    print(f'run folder {run.path}; {threads_note}; data {root} ({len(train_set)} train, '
          f'{len(test_set)} test images)', flush=True)

    def build(pretrained=None):
        net = D.build_detector(name, det.classes, size, ctx, pretrained=pretrained, seed=rec.train.seed)
        if rec.train.hybridize:
            net.hybridize(static_alloc=True, static_shape=True)
        return net

    def evaluate(net, loader):
        return D.evaluate(net, loader, ctx, det.classes, metric=det.metric, iou_thresh=det.iou_thresh,
                          nms_thresh=det.nms_thresh, nms_topk=det.nms_topk, post_nms=det.post_nms)

    def log(row):
        run.log(row)
        if not args.quiet:
            print(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in row.items()), flush=True)

    def every(net, loader, total):
        def on_epoch(epoch):
            if det.eval_every and ((epoch + 1) % det.eval_every == 0 or epoch + 1 == total):
                return {'map': evaluate(net, loader)['map']}
            return None
        return on_epoch

    # 1. dense training (or the pretrained weights as they are)
    tic = time.time()
    net = build(rec.model.pretrained)
    train_loader, test_loader = D.build_loaders(name, net, train_set, test_set, size, rec.data.batch_size,
                                                rec.data.test_batch_size, det.workers)
    dense_file = run.file('dense.params')
    if os.path.exists(dense_file):
        D.load_params(net, dense_file, ctx)
    else:
        D.train(net, name, train_loader, rec.train, ctx, log=log, phase='dense',
                on_epoch=every(net, test_loader, rec.train.epochs))
        mx.nd.waitall()
        io.write_with(dense_file, net.save_parameters)
    if state.get('dense') is None:
        state.set('dense', evaluate(net, test_loader))
        state.add_time('dense', time.time() - tic)
    report = {'model': name, 'data': root, 'classes': list(det.classes), 'train_images': len(train_set),
              'test_images': len(test_set), 'metric': f'{det.metric} mAP at IoU {det.iou_thresh}',
              'backbone': list(backbone)}
    dense_graph = DependencyGraph.trace(build(), shape)
    report['dense'] = {'map': state.get('dense')['map'], **_counts(dense_graph, backbone)}
    if not rec.pruning:
        return _finish(run, state, report, started)

    # 2. pruning of the backbone with fine-tuning; the net is shrunk right after its last mask update
    tic = time.time()
    prefix = run.file('pruned')
    if os.path.exists(prefix + '.params') and os.path.exists(prefix + '.plan.json'):
        pruned = build()
        plan = shrink.load_pruned(pruned, prefix, ctx)
    else:
        pruned, plan = _prune(net, name, rec, backbone, shape, train_loader, test_loader, ctx, evaluate, log,
                              every, state)
        shrink.save_pruned(pruned, plan, prefix)
        state.add_time('prune+finetune', time.time() - tic)
    pruned.hybridize(static_alloc=True, static_shape=True)
    if state.get('pruned') is None:
        state.set('pruned', evaluate(pruned, test_loader))
    pruned_graph = DependencyGraph.trace(pruned, shape)
    report['pruned'] = {'map': state.get('pruned')['map'], **_counts(pruned_graph, backbone)}
    report['at_pruning'] = state.get('at_pruning')
    report['ratios'] = {k: report['pruned'][k] / report['dense'][k]
                        for k in ('macs', 'backbone_macs', 'head_macs', 'params')}
    report['groups_cut'] = len(plan.groups)
    report['prune_summary'] = state.get('prune_summary')

    # 3. export (all outputs re-imported and compared; then the export's own mAP) and speed
    tic = time.time()
    if rec.export.enabled:
        pruned.set_nms(nms_thresh=det.nms_thresh, nms_topk=det.nms_topk, post_nms=det.post_nms)
        out = run.file(os.path.join('export', 'model'))
        report['export'] = export_mod.export_symbol(pruned, out, (rec.export.batch, 3, size, size))
        report['export']['map'] = evaluate(export_mod.load_exported(out, ctx[0]), test_loader)['map']
    # The loaders' worker thread pool, even idle, made every forward pass of this process about 8x slower at batch 1
    # (measured: 2.6 -> 20 ms); closing it before timing gives the latency a fresh process sees.
    del train_loader, test_loader
    gc.collect()
    if rec.benchmark.enabled:
        dense_cpu, pruned_cpu = D.build_detector(name, det.classes, size), D.build_detector(name, det.classes, size)
        D.load_params(dense_cpu, dense_file, [mx.cpu()])
        shrink.load_pruned(pruned_cpu, prefix, [mx.cpu()])
        report['speed'] = D.speedup(dense_cpu, pruned_cpu, shape, rec.benchmark.batches, rec.benchmark.repeats,
                                    fused=rec.benchmark.backend == 'auto')
    state.add_time('measure', time.time() - tic)
    return _finish(run, state, report, started)


def _counts(graph: 'DependencyGraph', backbone) -> dict:
    from mxprune import detection as D, flops

    parts = D.macs_by_part(graph, backbone)
    return {'macs': parts['net'], 'backbone_macs': parts['backbone'], 'head_macs': parts['heads'],
            'params': flops.dense(graph).params}


def _prune(net, name, rec, backbone, shape, train_loader, test_loader, ctx, evaluate, log, every, state):
    import mxnet as mx

    from mxprune import detection as D, train as train_mod
    from mxprune.session import Session

    mods = [c.build() for c in rec.pruning]
    for m in mods:
        if rec.detection.macs_of == 'backbone' and m.target.kind == 'macs':
            m.macs_layers = D.backbone_selection(backbone)
    spe = len(train_loader)
    session = Session(net, shape, spe, mods)
    trainer = train_mod.make_trainer(net, rec.finetune, ctx)
    session.bind_trainer(trainer)
    epochs = rec.finetune.epochs
    split = min(epochs, -(-max(m.schedule.last_update(spe) for m in mods) // spe))
    if split > 0:
        D.train(net, name, train_loader, rec.finetune, ctx, until=split, hooks=[session], trainer=trainer, log=log,
                phase='prune')
    session.catch_up()
    at = evaluate(net, test_loader)
    sparsity = session.sparsity()
    state.set('at_pruning', {'epoch': split, 'map': at['map']})
    state.set('prune_summary', {'macs_ratio': sparsity['macs_ratio'], 'graph': session.graph.summary(),
                                'unsupported': sorted({op for op, _ in session.graph.unsupported}),
                                'groups': len(session.graph.groups),
                                'prunable_groups': sum(len(m.groups) for m in mods)})
    log({'event': 'pruned', 'epoch': split, 'map': at['map'], 'macs_ratio': sparsity['macs_ratio']})
    net, plan = session.finalize()
    if split < epochs:
        net.hybridize(static_alloc=True, static_shape=True)
        D.train(net, name, train_loader, rec.finetune, ctx, start_epoch=split, log=log, phase='finetune',
                on_epoch=every(net, test_loader, epochs))
    mx.nd.waitall()
    return net, plan


def _finish(run, state, report, started) -> int:
    from mxprune import io

    report['seconds'] = state.get('seconds', {})
    report['wall_time_s'] = round(time.time() - started, 1)
    io.write_json(run.file('report.json'), report)
    run.log({'event': 'done', 'map_dense': report['dense']['map'], 'map_pruned': report.get('pruned', {}).get('map')})
    print(summary(report))
    print(f'report {run.file("report.json")}')
    return 0


def summary(report: dict) -> str:
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

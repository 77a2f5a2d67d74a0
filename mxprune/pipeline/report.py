"""The classification run end to end (dense -> sparsity -> prune + fine-tune -> measure -> speed -> export ->
robustness), its report.json and the summary table."""
import os
import time
from typing import Any, Dict

import mxnet as mx

from .. import data as data_mod
from .. import io, train as train_mod, zoo
from .context import Setup, fresh_model, input_shape_of, reducer, writer
from .folder import State
from .phases import measure, prune_phase, sparsity_phase, train_dense


def finish_dense(s: Setup, net: mx.gluon.HybridBlock, started: float) -> Dict[str, Any]:
    """Evaluates the dense net, writes report.json and logs 'done'."""
    ev = train_mod.evaluate(net, s.test_loader, s.ctx, progress=s.progress, reduce=reducer(s))
    report = {'model': s.recipe.model.name, 'test_top1': ev['top1'], 'test_top5': ev['top5'],
              'test_images': ev['n'], 'epochs': s.recipe.train.epochs,
              'wall_time_s': round(time.time() - started, 1), 'weights': s.run.file('dense.params')}
    if not writer(s):
        return report
    io.write_json(s.run.file('report.json'), report)
    s.run.log({'event': 'done', **report})
    return report



def run_prune(s: Setup, started: float) -> Dict[str, Any]:
    """The whole job for one recipe; returns the report (also written to report.json)."""
    from .. import benchmark as bench_mod
    from .. import export as export_mod
    from ..shrink import load_pruned
    rec = s.recipe
    state = State(s.run)
    with state.timed('dense'):
        net = train_dense(s)
    if rec.regularizers:
        with state.timed('sparsity'):
            net = sparsity_phase(s, net)
    if not rec.pruning:
        return finish_dense(s, net, started)
    with state.timed('prune+finetune'):
        pruned, plan, layers, summary = prune_phase(s, net)
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
    if not writer(s):  # what follows talks to no other worker: rank 0 alone measures, exports and reports
        return report
    if rec.benchmark.enabled:
        with state.timed('benchmark'):
            d, p = fresh_model(rec, [mx.cpu()]), fresh_model(rec, [mx.cpu()])
            zoo.load_params(d, s.run.file('dense.params'), [mx.cpu()])
            load_pruned(p, s.run.file('pruned'), [mx.cpu()])
            report['speed'] = bench_mod.speedup(d, p, input_shape_of(rec), batches=rec.benchmark.batches,
                                                macs_ratio=report['ratios']['macs'],
                                                backend='auto' if rec.benchmark.backend == 'auto' else None,
                                                repeats=rec.benchmark.repeats)
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
    # the attacks read the test images from memory; the RecordIO path streams them
    if rec.robustness.enabled and data_mod.dataset_info(rec.data.dataset).reader == 'memory':
        with state.timed('robustness'):
            report['robustness'] = robustness_report(s, dense, pruned)
    report['files'] = {'plan': s.run.file('pruned.plan.json'), 'pruned_params': s.run.file('pruned.params'),
                       'dense_params': s.run.file('dense.params')}
    report['seconds'] = State(s.run).get('seconds', {})  # per phase, summed over resumed invocations
    report['wall_time_s'] = round(time.time() - started, 1)  # this invocation
    report['resumed'] = bool(s.resumed)
    try:
        from .. import plots
        report['plots'] = plots.run_plots(s.run.path, report)
    except ImportError:
        report['plots'] = {}
    io.write_json(s.run.file('report.json'), report)
    s.run.log({'event': 'done', 'top1_dense': report['dense']['top1'], 'top1_pruned': report['pruned']['top1'],
               'macs_ratio': report['ratios']['macs']})
    return report


def robustness_report(s: Setup, dense, pruned) -> Dict[str, Any]:
    """FGSM / PGD top-1 of both nets on the first test images (see mxprune.robustness)."""
    from .. import robustness
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

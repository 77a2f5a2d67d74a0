"""Compare finished runs: a table of dense vs pruned top-1 (mAP for detection runs), MACs, params and speed-up, and
a top-1 (or mAP) vs MACs plot; classification and detection runs together get one plot each.

    mxprune compare runs/cifar_l1 runs/cifar_l2 runs/cifar_fpgm --out runs/compare.png
    mxprune compare runs/quickstart runs/l2 --batch 1
"""
import argparse
import json
import os
from typing import List, Optional

from mxprune import cli
from mxprune.commands import bootstrap
from mxprune.errors import RecipeError


METRICS = {'top1': 'top-1', 'map': 'mAP'}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('runs', nargs='+', help='run folders holding report.json')
    p.add_argument('--out', default='compare.png', help='PNG of top-1 vs MACs')
    p.add_argument('--batch', default='64', help='batch size whose speed-up is shown')


def main(argv: Optional[List[str]] = None) -> int:
    args = cli.parse_command('compare', __doc__, arguments, argv)
    bootstrap.start()
    from mxprune import plots

    points, rows = {}, []  # points per metric: top-1 for classifiers, mAP for detectors
    for run in args.runs:
        path = os.path.join(run, 'report.json')
        if not os.path.isfile(path):
            raise RecipeError(f'{run}: no report.json (is the run finished?)')
        with open(path, encoding='utf-8') as f:
            r = json.load(f)
        if 'pruned' not in r:
            raise RecipeError(f'{path}: a dense-only report; nothing to compare')
        metric = next((m for m in METRICS if m in r['dense']), None)
        if metric is None:
            raise RecipeError(f'{path}: the dense result has none of {", ".join(METRICS)}; not an mxprune report')
        label = os.path.basename(os.path.normpath(run))
        speed = r.get('speed', {}).get('batches', {}).get(args.batch, {}).get('speedup')
        rows.append((label, METRICS[metric], r['dense'][metric], r['pruned'][metric], r['ratios']['macs'],
                     r['ratios']['params'], speed))
        pts = points.setdefault(metric, [])
        pts.append({'label': label, 'macs': r['pruned']['macs'], metric: r['pruned'][metric]})
        if not any(pt.get('dense') and pt['macs'] == r['dense']['macs'] for pt in pts):
            pts.append({'label': f'dense ({r["model"]})', 'macs': r['dense']['macs'], metric: r['dense'][metric],
                        'dense': True})
    speed_head = 'speed-up b' + args.batch
    print(f'{"run":24s} {"metric":>6} {"dense":>8} {"pruned":>8} {"MACs":>6} {"params":>7} {speed_head:>13}')
    for label, name, d, pr, m, pa, s in rows:
        print(f'{label:24s} {name:>6} {d:8.4f} {pr:8.4f} {m:6.3f} {pa:7.3f} {(f"{s:.2f}x" if s else "-"):>13}')
    stem, ext = os.path.splitext(args.out)
    for i, (metric, pts) in enumerate(points.items()):
        # mixed folders (classifiers and detectors): one plot per metric, the first one at --out
        out = args.out if i == 0 else f'{stem}-{metric}{ext or ".png"}'
        print(plots.accuracy_vs_macs(pts, out, f'{METRICS[metric]} vs MACs', metric, f'test {METRICS[metric]} (%)'))
    return 0

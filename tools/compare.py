"""Compare finished runs: a table of dense vs pruned top-1, MACs, params and speed-up, and a top-1 vs MACs plot.

    python tools/compare.py runs/cifar_l1 runs/cifar_l2 runs/cifar_fpgm --out runs/compare.png
"""
import _bootstrap  # noqa: F401

import json
import os

from mxprune import cli, plots
from mxprune.errors import RecipeError


def main(argv=None) -> int:
    p = cli.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('runs', nargs='+', help='run folders holding report.json')
    p.add_argument('--out', default='compare.png', help='PNG of top-1 vs MACs')
    p.add_argument('--batch', default='64', help='batch size whose speed-up is shown')
    args = p.parse_args(argv)
    points, rows = [], []
    for run in args.runs:
        path = os.path.join(run, 'report.json')
        if not os.path.isfile(path):
            raise RecipeError(f'{run}: no report.json (is the run finished?)')
        with open(path, encoding='utf-8') as f:
            r = json.load(f)
        if 'pruned' not in r:
            raise RecipeError(f'{path}: a dense-only report; nothing to compare')
        label = os.path.basename(os.path.normpath(run))
        speed = r.get('speed', {}).get('batches', {}).get(args.batch, {}).get('speedup')
        rows.append((label, r['dense']['top1'], r['pruned']['top1'], r['ratios']['macs'], r['ratios']['params'],
                     speed))
        points.append({'label': label, 'macs': r['pruned']['macs'], 'top1': r['pruned']['top1']})
        if not any(pt.get('dense') and pt['macs'] == r['dense']['macs'] for pt in points):
            points.append({'label': f'dense ({r["model"]})', 'macs': r['dense']['macs'], 'top1': r['dense']['top1'],
                           'dense': True})
    speed_head = 'speed-up b' + args.batch
    print(f'{"run":24s} {"dense top-1":>11} {"pruned top-1":>12} {"MACs":>6} {"params":>7} {speed_head:>13}')
    for label, d, pr, m, pa, s in rows:
        print(f'{label:24s} {d:11.4f} {pr:12.4f} {m:6.3f} {pa:7.3f} {(f"{s:.2f}x" if s else "-"):>13}')
    print(plots.accuracy_vs_macs(points, args.out))
    return 0


if __name__ == '__main__':
    cli.run(main)

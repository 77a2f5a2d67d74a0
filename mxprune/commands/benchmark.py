"""Dense vs pruned inference speed (batch 1 and 64, hybridized, warm-up, interleaved medians) beside the MACs ratio.

    mxprune benchmark --run runs/quickstart
    mxprune benchmark --run runs/quickstart --batches 1,8,64 --repeats 11
    mxprune benchmark --run runs/quickstart --backend plain --json > speed.json
"""
import argparse
import json
from typing import List, Optional

from mxprune import cli
from mxprune.commands import bootstrap
from mxprune.errors import RecipeError


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--run', required=True, help='a run folder of mxprune prune')
    p.add_argument('--batches', default='1,64', help='comma-separated batch sizes')
    p.add_argument('--backend', default='auto', choices=('auto', 'plain'), help='fused oneDNN graph (auto) or not')
    p.add_argument('--repeats', type=int, default=7,
                   help='interleaved timing rounds per batch size; the median time is shown')
    p.add_argument('--json', action='store_true', help='print the report as JSON')
    p.add_argument('--quiet', action='store_true', help='no progress bar')


def main(argv: Optional[List[str]] = None) -> int:
    args = cli.parse_command('benchmark', __doc__, arguments, argv)
    threads_note = bootstrap.start()
    from mxprune import benchmark, flops, pipeline, progress
    from mxprune.graph import DependencyGraph

    try:
        batches = [int(b) for b in args.batches.split(',')]
    except ValueError:
        raise RecipeError(f'--batches {args.batches!r}: expected comma-separated integers, e.g. 1,64') from None
    progress.ENABLED = not args.quiet
    rec, dense, pruned, _ = pipeline.load_run(args.run)
    if pruned is None:
        raise RecipeError(f'{args.run}: holds no pruned model (pruned.params) to compare')
    shape = pipeline.input_shape_of(rec)
    macs = [flops.dense(DependencyGraph.trace(net, shape)).macs for net in (dense, pruned)]
    ratio = macs[1] / macs[0]
    rep = benchmark.speedup(dense, pruned, shape, batches=batches, macs_ratio=ratio,
                            backend='auto' if args.backend == 'auto' else None, repeats=args.repeats)
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    print(f'{rec.model.name}: pruned MACs {ratio:.3f} of dense; backend {rep["backend"]}; {threads_note}')
    print(f'{"batch":>5} {"dense ms":>10} {"pruned ms":>10} {"speed-up":>9} {"MACs speed-up":>14}')
    for b, row in rep['batches'].items():
        print(f'{b:>5} {row["dense_ms"]:10.2f} {row["pruned_ms"]:10.2f} {row["speedup"]:8.2f}x '
              f'{row["macs_speedup"]:13.2f}x')
    return 0

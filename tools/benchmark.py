"""Dense vs pruned inference speed (batch 1 and 64, hybridized, warm-up, interleaved medians) beside the MACs ratio.

    python tools/benchmark.py --run runs/quickstart [--batches 1,64] [--backend auto|plain]
"""
import _bootstrap  # noqa: F401  (first: picks OMP threads before MXNet loads)

import json

from mxprune import benchmark, cli, flops, pipeline
from mxprune.errors import RecipeError
from mxprune.graph import DependencyGraph


def main(argv=None) -> int:
    p = cli.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--run', required=True, help='a run folder of tools/prune.py')
    p.add_argument('--batches', default='1,64', help='comma-separated batch sizes')
    p.add_argument('--backend', default='auto', choices=('auto', 'plain'), help='fused oneDNN graph (auto) or not')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--json', action='store_true', help='print the report as JSON')
    args = p.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(',')]
    except ValueError:
        raise RecipeError(f'--batches {args.batches!r}: expected comma-separated integers, e.g. 1,64') from None
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
    print(f'{rec.model.name}: pruned MACs {ratio:.3f} of dense; backend {rep["backend"]}; {_bootstrap.THREADS_NOTE}')
    print(f'{"batch":>5} {"dense ms":>10} {"pruned ms":>10} {"speed-up":>9} {"MACs speed-up":>14}')
    for b, row in rep['batches'].items():
        print(f'{b:>5} {row["dense_ms"]:10.2f} {row["pruned_ms"]:10.2f} {row["speedup"]:8.2f}x '
              f'{row["macs_speedup"]:13.2f}x')
    return 0


if __name__ == '__main__':
    cli.run(main)

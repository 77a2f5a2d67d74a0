"""Measured CPU speed-up of shrunk nets vs their MACs speed-up, dense and pruned timed in one run.

    python bench/shrink_speedup.py [--models cifar_resnet56_v1,mobilenetv2_1.0,densenet121]

Each model (random init: speed does not depend on the values) is pruned with L2 importance, global scope, coupled
groups, to 50 % of its dense MACs with round_to=16 (oneDNN computes in 16-channel blocks on an AVX-512 CPU:
widths that are not multiples of 16 can run slower than dense), shrunk, and timed against its
dense twin at batch 1 and 64 (interleaved, medians; fused oneDNN graph for both). Last line: ratio <measured
speed-up / MACs speed-up> for cifar_resnet56_v1 at batch 64.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
import _bootstrap  # noqa: E402,F401

import mxnet as mx  # noqa: E402

import mxprune as mp  # noqa: E402
from mxprune import benchmark, flops, io, zoo  # noqa: E402
from mxprune.graph import DependencyGraph  # noqa: E402


def run(name: str, target: float, round_to: int, batches, repeats: int) -> dict:
    size = zoo.input_size(name)
    shape = (1, 3, size, size)
    mx.random.seed(0)
    dense = zoo.get_model(name)
    dense(mx.nd.zeros(shape))
    pruned = zoo.get_model(name)
    pruned(mx.nd.zeros(shape))
    for a, b in zip(dense.collect_params().values(), pruned.collect_params().values()):
        b.set_data(a.data())  # the same function before pruning
    s = mp.Session(pruned, shape, 1, [mp.PruningModifier('l2', scope='global', target={'macs': target},
                                                         round_to=round_to)])
    s.prune_now()
    small, plan = s.finalize()
    ratio = flops.dense(DependencyGraph.trace(small, shape)).macs / s.dense_count.macs
    rep = benchmark.speedup(dense, small, shape, batches=batches, macs_ratio=ratio, repeats=repeats)
    widths = sorted({(g, v['size'], len(v['keep'])) for g, v in plan.groups.items()}, key=lambda t: t[0])
    return {'model': name, 'macs_ratio': ratio, 'dense_macs': s.dense_count.macs, 'round_to': round_to,
            'groups_cut': len(plan.groups), 'widths': [f'{g}: {a}->{b}' for g, a, b in widths], **rep}


def main() -> None:
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument('--models', default='cifar_resnet56_v1,mobilenetv2_1.0,densenet121')
    p.add_argument('--target', type=float, default=0.5)
    p.add_argument('--round-to', type=int, default=16)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                                                 'shrink_speedup.json'))
    args = p.parse_args()
    print(_bootstrap.THREADS_NOTE)
    rows = []
    for name in args.models.split(','):
        r = run(name, args.target, args.round_to, (1, 64), args.repeats if 'densenet' not in name else 3)
        rows.append(r)
        print(f'{name}: MACs {r["dense_macs"] / 1e6:.1f} M -> ratio {r["macs_ratio"]:.3f} ({r["groups_cut"]} groups '
              f'cut, round_to {r["round_to"]}, backend {r["backend"]})')
        for b, row in r['batches'].items():
            print(f'  batch {b:>3}: dense {row["dense_ms"]:8.2f} ms, pruned {row["pruned_ms"]:8.2f} ms, measured '
                  f'speed-up {row["speedup"]:.2f}x vs MACs speed-up {row["macs_speedup"]:.2f}x -> '
                  f'{row["speedup_over_macs_speedup"]:.2f}', flush=True)
        io.write_json(args.out, rows)
    r56 = next((r for r in rows if r['model'] == 'cifar_resnet56_v1'), rows[0])
    print(f'ratio {r56["batches"]["64"]["speedup_over_macs_speedup"]:.3f}')


if __name__ == '__main__':
    main()

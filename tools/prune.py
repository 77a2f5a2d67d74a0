"""The main job: from a recipe, train (or load) the dense model, then prune, fine-tune, measure and export.

    python tools/prune.py --recipe recipes/quickstart.yaml --data-dir ../shared/datasets/cifar10

This release runs the dense part (training, evaluation, report); pruning lands with the engine.
"""
import _bootstrap  # noqa: F401  (first: picks OMP threads before MXNet loads)

import os
import time

from train import add_run_args

from mxprune import cli, pipeline, recipe as recipe_mod


def main(argv=None) -> int:
    p = cli.ArgumentParser(description=__doc__.strip().splitlines()[0])
    add_run_args(p)
    args = p.parse_args(argv)
    rec = recipe_mod.load(args.recipe, args.set)
    out = args.out or os.path.join('runs', os.path.splitext(os.path.basename(args.recipe))[0])
    tic = time.time()
    s = pipeline.setup(rec, out, data_dir=args.data_dir, resume=args.resume, progress=not args.quiet,
                       threads_note=_bootstrap.THREADS_NOTE)
    print(f'run folder {s.run.path}; {_bootstrap.THREADS_NOTE}; data {s.data_root}')
    net = pipeline.train_dense(s)
    r = pipeline.finish_dense(s, net, tic)
    print(f'{rec.model.name} dense: test top-1 {r["test_top1"]:.4f}, top-5 {r["test_top5"]:.4f} '
          f'({r["wall_time_s"]:.0f} s); report {s.run.file("report.json")}')
    return 0


if __name__ == '__main__':
    cli.run(main)

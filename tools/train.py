"""Train a dense GluonCV classifier from a recipe's model/data/train sections.

    python tools/train.py --recipe recipes/quickstart.yaml --data-dir ../shared/datasets/cifar10 --out runs/dense
"""
import _bootstrap  # noqa: F401  (first: picks OMP threads before MXNet loads)

import os
import time

from mxprune import cli, pipeline, recipe as recipe_mod


def add_run_args(p: cli.ArgumentParser) -> None:
    p.add_argument('--recipe', required=True, help='a YAML recipe')
    p.add_argument('--data-dir', help='data folder (overrides data.root and $MXPRUNE_DATA)')
    p.add_argument('--out', help='run folder (default runs/<recipe name>)')
    p.add_argument('--resume', action='store_true', help='continue the run in --out from its last checkpoint')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='override a recipe value')
    p.add_argument('--quiet', action='store_true', help='no progress bars')


def main(argv=None) -> int:
    p = cli.ArgumentParser(description=__doc__.strip().splitlines()[0])
    add_run_args(p)
    args = p.parse_args(argv)
    rec = recipe_mod.require_classification(recipe_mod.load(args.recipe, args.set), args.recipe)
    out = args.out or os.path.join('runs', os.path.splitext(os.path.basename(args.recipe))[0] + '-train')
    tic = time.time()
    s = pipeline.setup(rec, out, data_dir=args.data_dir, resume=args.resume, progress=not args.quiet,
                       threads_note=_bootstrap.THREADS_NOTE)
    print(f'run folder {s.run.path}; {_bootstrap.THREADS_NOTE}; data {s.data_root}')
    net = pipeline.train_dense(s)
    r = pipeline.finish_dense(s, net, tic)
    print(f'{rec.model.name}: test top-1 {r["test_top1"]:.4f}, top-5 {r["test_top5"]:.4f} on {r["test_images"]} '
          f'images in {r["wall_time_s"]:.0f} s; weights {r["weights"]}')
    return 0


if __name__ == '__main__':
    cli.run(main)

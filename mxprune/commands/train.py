"""Train a dense GluonCV classifier from a recipe's model, data and train sections (its pruning section is ignored).

    mxprune train --recipe recipes/quickstart.yaml --data-dir ../shared/datasets/cifar10
    mxprune train --recipe recipes/cifar_l2.yaml --set train.epochs=30 --out runs/dense
    mxprune train --recipe recipes/cifar_l2.yaml --out runs/dense --resume      # after a crash

The run folder holds recipe.yaml (resolved), log.jsonl, ckpt/, dense.params and report.json; its dense.params can
be a later recipe's model.pretrained.
"""
import argparse
import os
import time
from typing import List, Optional

from mxprune import cli
from mxprune.commands import bootstrap

OUT_SUFFIX = '-train'


def add_run_args(p: argparse.ArgumentParser, out_suffix: str = '') -> None:
    """The arguments of every command that runs a recipe (train, prune, detect)."""
    p.add_argument('--recipe', required=True, help='a YAML recipe')
    p.add_argument('--data-dir', help='data folder (overrides data.root and $MXPRUNE_DATA); a folder given must '
                                      'hold the data (no download)')
    p.add_argument('--out', help=f'run folder (default runs/<recipe name>{out_suffix})')
    p.add_argument('--resume', action='store_true', help='continue the run in --out from its last checkpoint')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='override a recipe value')
    p.add_argument('--quiet', action='store_true', help='no progress bars')


def out_folder(args: argparse.Namespace, out_suffix: str = '') -> str:
    """--out, or the default that add_run_args names."""
    return args.out or os.path.join('runs', os.path.splitext(os.path.basename(args.recipe))[0] + out_suffix)


def arguments(p: argparse.ArgumentParser) -> None:
    add_run_args(p, OUT_SUFFIX)


def main(argv: Optional[List[str]] = None) -> int:
    args = cli.parse_command('train', __doc__, arguments, argv)
    threads_note = bootstrap.start()
    from mxprune import pipeline, recipe as recipe_mod

    rec = recipe_mod.require_classification(recipe_mod.load(args.recipe, args.set), args.recipe)
    out = out_folder(args, OUT_SUFFIX)
    tic = time.time()
    s = pipeline.setup(rec, out, data_dir=args.data_dir, resume=args.resume, progress=not args.quiet,
                       threads_note=threads_note)
    print(f'run folder {s.run.path}; {threads_note}; data {s.data_root} (from {s.data_source})')
    net = pipeline.train_dense(s)
    r = pipeline.finish_dense(s, net, tic)
    print(f'{rec.model.name}: test top-1 {r["test_top1"]:.4f}, top-5 {r["test_top5"]:.4f} on {r["test_images"]} '
          f'images in {r["wall_time_s"]:.0f} s; weights {r["weights"]}')
    return 0

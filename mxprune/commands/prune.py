"""The main job: from a recipe, train (or load) the dense model, prune it with fine-tuning, shrink it, measure it and
export it.

    mxprune prune --recipe recipes/quickstart.yaml --data-dir ../shared/datasets/cifar10
    mxprune prune --recipe recipes/cifar_l2.yaml --set finetune.epochs=5 --out runs/l2
    mxprune prune --recipe recipes/cifar_l2.yaml --out runs/l2 --resume      # after a crash

The run folder holds recipe.yaml (resolved), log.jsonl, state.json, ckpt/, dense.params, pruned.params +
pruned.plan.json, export/, report.json and PNG plots; a summary table is printed at the end. Under `mxprune launch`
(or horovodrun) every worker runs this command and rank 0 writes the run folder.
"""
import argparse
import contextlib
import time
from typing import List, Optional

from mxprune import cli
from mxprune.commands import bootstrap
from mxprune.commands.train import add_run_args, out_folder


def arguments(p: argparse.ArgumentParser) -> None:
    add_run_args(p)


def main(argv: Optional[List[str]] = None) -> int:
    args = cli.parse_command('prune', __doc__, arguments, argv)
    threads_note = bootstrap.start()
    from mxprune import distributed, recipe as recipe_mod, train as train_mod

    rec = recipe_mod.require_classification(recipe_mod.load(args.recipe, args.set), args.recipe)
    out = out_folder(args)
    tic = time.time()
    # under `mxprune launch` (or horovodrun) this process is one of several data-parallel workers
    workers = distributed.from_env(rec.distributed.backend, rec.distributed.bn, train_mod.parse_ctx(rec.train.ctx))
    with workers.failing_fast() if workers is not None else contextlib.nullcontext():
        return _run(args, rec, out, tic, workers, threads_note)


def _run(args, rec, out: str, tic: float, workers, threads_note: str) -> int:
    from mxprune import pipeline

    s = pipeline.setup(rec, out, data_dir=args.data_dir, resume=args.resume, progress=not args.quiet,
                       threads_note=threads_note, workers=workers)
    if workers is not None and not workers.is_writer:
        pipeline.run_prune(s, tic)  # rank 0 prints and writes the results
        return 0
    print(f'run folder {s.run.path}; {threads_note}; data {s.data_root} (from {s.data_source})'
          + (f'; {workers.num_workers} {workers.kind} workers, this is rank 0' if workers is not None else ''))
    report = pipeline.run_prune(s, tic)
    if 'pruned' not in report:
        print(f'{rec.model.name} dense (no pruning section): test top-1 {report["test_top1"]:.4f}')
        return 0
    print(pipeline.summary_table(report))
    print(f'report {s.run.file("report.json")}')
    return 0

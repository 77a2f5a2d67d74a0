"""The main job: from a recipe, train (or load) the dense model, prune it with fine-tuning, shrink it, measure it and
export it.

    python tools/prune.py --recipe recipes/quickstart.yaml --data-dir ../shared/datasets/cifar10
    python tools/prune.py --recipe recipes/cifar_l2.yaml --set finetune.epochs=5 --out runs/l2
    python tools/prune.py --recipe recipes/cifar_l2.yaml --out runs/l2 --resume      # after a crash

The run folder holds recipe.yaml (resolved), log.jsonl, state.json, ckpt/, dense.params, pruned.params +
pruned.plan.json, export/, report.json and PNG plots; a summary table is printed at the end.
"""
import _bootstrap  # noqa: F401  (first: picks OMP threads before MXNet loads)

import contextlib
import os
import time

from train import add_run_args

from mxprune import cli, distributed, pipeline, recipe as recipe_mod, train as train_mod


def main(argv=None) -> int:
    p = cli.ArgumentParser(description=__doc__.strip().splitlines()[0])
    add_run_args(p)
    args = p.parse_args(argv)
    rec = recipe_mod.require_classification(recipe_mod.load(args.recipe, args.set), args.recipe)
    out = args.out or os.path.join('runs', os.path.splitext(os.path.basename(args.recipe))[0])
    tic = time.time()
    # under tools/launch.py (or horovodrun) this process is one of several data-parallel workers
    workers = distributed.from_env(rec.distributed.backend, rec.distributed.bn, train_mod.parse_ctx(rec.train.ctx))
    with workers.failing_fast() if workers is not None else contextlib.nullcontext():
        return _run(args, rec, out, tic, workers)


def _run(args, rec, out: str, tic: float, workers) -> int:
    s = pipeline.setup(rec, out, data_dir=args.data_dir, resume=args.resume, progress=not args.quiet,
                       threads_note=_bootstrap.THREADS_NOTE, workers=workers)
    if workers is not None and not workers.is_writer:
        pipeline.run_prune(s, tic)  # rank 0 prints and writes the results
        return 0
    print(f'run folder {s.run.path}; {_bootstrap.THREADS_NOTE}; data {s.data_root}'
          + (f'; {workers.num_workers} {workers.kind} workers, this is rank 0' if workers is not None else ''))
    report = pipeline.run_prune(s, tic)
    if 'pruned' not in report:
        print(f'{rec.model.name} dense (no pruning section): test top-1 {report["test_top1"]:.4f}')
        return 0
    print(pipeline.summary_table(report))
    print(f'report {s.run.file("report.json")}')
    return 0


if __name__ == '__main__':
    cli.run(main)

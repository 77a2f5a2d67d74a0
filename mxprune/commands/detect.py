"""Detection main job: train a GluonCV SSD / YOLOv3 on a Pascal VOC layout folder, prune its backbone, fine-tune,
report mAP, MACs and speed, export.

    mxprune detect --recipe recipes/raccoon_ssd_l2.yaml --data-dir ../shared/datasets/raccoon
    mxprune detect --recipe recipes/raccoon_ssd_l2.yaml --set finetune.epochs=2 --out runs/ssd
    mxprune detect --recipe recipes/raccoon_ssd_l2.yaml --out runs/ssd --resume     # after a crash

The run folder holds recipe.yaml (resolved), log.jsonl (a line per epoch and event), state.json, dense.params,
pruned.params + pruned.plan.json, export/ (-symbol.json, -0000.params, sha256 manifest) and report.json. A resumed
run continues at the first phase whose output is missing (dense training, pruning with fine-tuning, measuring).
"""
import argparse
import time
from typing import List, Optional

from mxprune import cli
from mxprune.commands import bootstrap
from mxprune.commands.train import add_run_args, out_folder


def arguments(p: argparse.ArgumentParser) -> None:
    add_run_args(p)


def main(argv: Optional[List[str]] = None) -> int:
    args = cli.parse_command('detect', __doc__, arguments, argv)
    threads_note = bootstrap.start()
    from mxprune import progress, recipe as recipe_mod
    from mxprune.detection import task

    progress.ENABLED = not args.quiet
    rec = recipe_mod.load(args.recipe, args.set)
    task.check(rec, args.recipe)
    started = time.time()
    d = task.setup(rec, out_folder(args), data_dir=args.data_dir, resume=args.resume, quiet=args.quiet,
                   threads_note=threads_note)
    print(f'run folder {d.run.path}; {threads_note}; data {d.data_root} ({len(d.train_set)} train, '
          f'{len(d.test_set)} test images)', flush=True)
    report = task.run_detect(d, started)
    print(task.summary(report))
    print(f'report {d.run.file("report.json")}')
    return 0

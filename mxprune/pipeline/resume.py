"""Resuming a run with several data-parallel workers: every worker starts from rank 0's run folder, all of them
agree on the checkpoint they continue from, and a changed worker count is accepted only where it cannot change the
schedule.

Rank 0 alone writes the run folder (checkpoints at epoch ends, published atomically). On `--resume` the other
workers copy it into their private scratch folder before any of them trains, so each one reads the same
parameters, optimizer state, pruning Session and phase outputs; the data shards and augmentation need no saved
position, because every epoch's order is a pure function of (seed, epoch, shard).
"""
import hashlib
import os
import shutil
from typing import Optional

from ..errors import RecipeError
from .folder import RunFolder, State

# what a worker other than rank 0 does not copy: rank 0 keeps appending the log, and exports/plots are outputs only
NOT_COPIED = ('log.jsonl', 'export', 'report.json')
# phase outputs whose presence decides where a resumed run continues (mxprune.pipeline.phases)
PHASE_FILES = ('dense.params', 'sparse.params', 'shrunk.params', 'shrunk.plan.json', 'pruned.params',
               'pruned.plan.json')


def worker_folder(workers, out: str, resume: bool) -> str:
    """The folder this worker runs in: `out` on rank 0; elsewhere a scratch folder, holding a copy of `out` on resume.

    Every worker must read the run folder rank 0 wrote (on several machines: `--out` on shared storage).
    """
    folder = workers.run_dir(out)
    if not resume or workers.is_writer:
        return folder
    if not os.path.isfile(os.path.join(out, 'recipe.yaml')):
        raise RecipeError(f'--resume: rank {workers.rank} cannot read the run folder {os.path.abspath(out)} that '
                          f'rank 0 writes; with several hosts give --out on storage every worker reads')
    shutil.copytree(out, folder, dirs_exist_ok=True, ignore=lambda d, names: [
        n for n in names if (d == out and n in NOT_COPIED) or n.endswith('.tmp')])
    return folder


def resume_point(run: RunFolder) -> bytes:
    """What decides where the run continues: the checkpoint pointers and which phase outputs exist."""
    parts = []
    ckpt = run.file('ckpt')
    for name in sorted(os.listdir(ckpt)) if os.path.isdir(ckpt) else ():
        if name.endswith('.json'):
            with open(os.path.join(ckpt, name), 'rb') as f:
                parts.append(name.encode() + hashlib.sha256(f.read()).digest())
    parts += [name.encode() for name in PHASE_FILES if os.path.exists(run.file(name))]
    return b'\0'.join(parts)


def check_workers(run: RunFolder, num_workers: int, steps_per_epoch: int, resume: bool, workers=None) -> None:
    """Records the worker count and steps per epoch of a run; on resume, refuses a count that changes the steps.

    The recipe's batch is the global one, so with another worker count each worker's batch is recomputed and the
    learning-rate and pruning schedules (functions of the step) carry over as long as an epoch keeps its number
    of steps; the shards differ, so such a run is not bit-identical to an uninterrupted one. With `workers`, all
    of them also verify that they continue from the same checkpoint.
    """
    state = State(run)
    if resume:
        before: Optional[int] = state.get('workers')
        steps = state.get('steps_per_epoch')
        if before is not None and steps is not None and steps != steps_per_epoch:
            raise RecipeError(f'--resume: {run.path} was run with {before} worker(s) and this job has {num_workers}, '
                              f'which makes {steps_per_epoch} steps per epoch instead of {steps}; resume it with '
                              f'{before} worker(s)')
        if workers is not None:
            workers.check_equal('the checkpoints this run resumes from', resume_point(run))
    state.set('workers', num_workers)
    state.set('steps_per_epoch', steps_per_epoch)

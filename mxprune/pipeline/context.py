"""What every phase of a run needs (recipe, contexts, loaders, classes, run folder, workers), built and checked
before the run folder is created; the recipe's model, fresh or from a finished run."""
import dataclasses
import os
from typing import Any, Optional

import mxnet as mx

from .. import data as data_mod
from .. import progress as progress_mod, recipe as recipe_mod, train as train_mod, zoo
from ..errors import ModelError, RecipeError
from ..version import __version__
from .folder import RunFolder
from .resume import check_workers, worker_folder


@dataclasses.dataclass
class Setup:
    """What every phase needs: recipe, contexts, loaders, classes, run folder."""
    recipe: recipe_mod.Recipe
    ctx: list
    train_loader: Any
    test_loader: Any
    classes: int
    run: RunFolder
    data_root: str
    progress: bool = True
    resumed: bool = False
    workers: Any = None  # mxprune.distributed.Workers in a data-parallel run, else None
    data_source: str = ''  # where data_root came from: --data-dir, data.root, $MXPRUNE_DATA or the MXNet cache


def _producer(pretrained: str) -> str:
    """What to run first for a missing `model.pretrained`: a run folder's dense.params is written by the recipe
    of the same name (runs/<name>/dense.params <- recipes/<name>.yaml)."""
    parts = os.path.normpath(pretrained).split(os.sep)
    recipe = os.path.join('recipes', parts[-2] + '.yaml') if len(parts) >= 2 else ''
    if parts[-1] == 'dense.params' and os.path.isfile(recipe):
        return (f'it is written by python tools/prune.py --recipe {recipe} --out {os.path.dirname(pretrained)} '
                f'(run that first)')
    return 'give a .params file, or "zoo" for GluonCV\'s published weights'


def setup(recipe: recipe_mod.Recipe, out: str, *, data_dir: Optional[str] = None, resume: bool = False,
          progress: bool = True, threads_note: str = '', num_parts: int = 1, part_index: int = 0,
          workers=None) -> Setup:
    """Validates what the recipe names (model, contexts, data) before creating the run folder.

    With `workers` (mxprune.distributed) each worker reads its shard (part kv.rank of num_workers) with
    data.batch_size / num_workers per step; only rank 0 writes `out`, the others a private scratch folder.
    """
    zoo.check_name(recipe.model.name)
    pretrained = recipe.model.pretrained
    if pretrained and pretrained != 'zoo' and not os.path.isfile(pretrained):
        raise ModelError(f'model.pretrained: {pretrained} not found (relative paths are read from '
                         f'{os.getcwd()}); {_producer(pretrained)}')
    ctx = train_mod.parse_ctx(recipe.train.ctx)
    for section in ('finetune', 'sparsity'):
        train_mod.parse_ctx(getattr(recipe, section).ctx)
    root, source = data_mod.root_source(recipe.data.dataset, recipe.data.root, data_dir)
    data_cfg = recipe.data
    if workers is not None:
        num_parts, part_index, data_cfg = workers.num_workers, workers.rank, worker_data(recipe, workers)
        progress, out = progress and workers.is_writer, worker_folder(workers, out, resume)
    train_loader, test_loader, classes = data_mod.build_loaders(
        data_cfg, root, seed=recipe.train.seed, num_parts=num_parts, part_index=part_index,
        input_size=recipe.model.input_size, classes=recipe.model.classes, source=source)
    if pretrained and pretrained != 'zoo':  # a file that does not fit fails here, before the run folder exists
        zoo.load_params(zoo.get_model(recipe.model.name, classes=classes), pretrained, [mx.cpu()])
    run = RunFolder(out, recipe, resume)
    check_workers(run, num_parts, len(train_loader), resume, workers)
    run.log({'event': 'start', 'resume': resume, 'mxprune': __version__, 'mxnet': mx.__version__,
             'threads': threads_note, 'ctx': [str(c) for c in ctx], 'data_root': root,
             'train_images': train_loader.num_samples, 'test_images': test_loader.num_samples,
             **({'workers': workers.num_workers, 'rank': workers.rank} if workers is not None else {})})
    progress_mod.ENABLED = progress
    return Setup(recipe, ctx, train_loader, test_loader, classes, run, root, progress, resume, workers, source)


def worker_data(recipe: recipe_mod.Recipe, workers) -> Any:
    """A worker's data section: the recipe's batch is the global one, split evenly over the workers."""
    n, batch = workers.num_workers, recipe.data.batch_size
    for i, item in enumerate(recipe.pruning):
        if n > 1 and item.target.kind in ('latency', 'speedup'):
            raise RecipeError(f'pruning.{i}.target: a {item.target.kind} target is not allowed with {n} workers; '
                              f'each worker would time its own CPU and could choose other widths. Expected one '
                              f'process, or a macs/params/sparsity target')
    if batch % n:
        raise RecipeError(f'data.batch_size: {batch} is not allowed with {n} workers; expected a multiple of {n} '
                          f'(the global batch is split evenly over the workers)')
    return dataclasses.replace(recipe.data, batch_size=batch // n)


def writer(s: Setup) -> bool:
    return s.workers is None or s.workers.is_writer


def reducer(s: Setup):
    """Sums evaluation counts over the workers (each evaluates its shard of the test set)."""
    return s.workers.sum_numpy if s.workers is not None else None


def worker_hooks(s: Setup, net, session=None) -> list:
    """BN statistics made equal and parameters verified at each epoch end; masks re-applied after each step."""
    return [s.workers.hooks(net, session)] if s.workers is not None else []


def build_net(s: Setup) -> mx.gluon.HybridBlock:
    m = s.recipe.model
    train_mod.seed_epoch(s.recipe.train.seed, -1)  # the initial weights are a function of the seed too
    net = zoo.get_model(m.name, classes=s.classes, pretrained=m.pretrained, ctx=s.ctx)
    if s.recipe.train.hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    if s.workers is not None:  # no deferred shapes left when rank 0's weights are broadcast
        net(mx.nd.zeros(input_shape_of(s.recipe), ctx=s.ctx[0]))
    return net



def input_shape_of(recipe: recipe_mod.Recipe, batch: int = 1) -> tuple:
    return (batch, 3, recipe.model.input_size, recipe.model.input_size)


def classes_of(recipe: recipe_mod.Recipe) -> int:
    return recipe.model.classes or data_mod.dataset_info(recipe.data.dataset).classes


def fresh_model(recipe: recipe_mod.Recipe, ctx: Optional[list] = None) -> mx.gluon.HybridBlock:
    """An initialised model of the recipe's architecture with its deferred shapes resolved."""
    net = zoo.get_model(recipe.model.name, classes=classes_of(recipe), ctx=ctx)
    net(mx.nd.zeros(input_shape_of(recipe), ctx=(ctx or [mx.cpu()])[0]))
    return net


def load_run(run_dir: str, ctx: Optional[list] = None):
    """The dense and the pruned nets of a finished run folder (pruned is None if the run has no pruned model).

    Returns:
        (recipe, dense_net, pruned_net, plan)
    """
    from ..shrink import load_pruned
    saved = os.path.join(run_dir, 'recipe.yaml')
    if not os.path.isfile(saved):
        raise RecipeError(f'{run_dir}: not a run folder (no recipe.yaml)')
    rec = recipe_mod.from_mapping(recipe_mod.load_yaml(saved), saved)
    dense = fresh_model(rec, ctx)
    dense_params = os.path.join(run_dir, 'dense.params')
    if os.path.isfile(dense_params):
        zoo.load_params(dense, dense_params, ctx or [mx.cpu()])
    pruned, plan = None, None
    if os.path.isfile(os.path.join(run_dir, 'pruned.params')):
        pruned = fresh_model(rec, ctx)
        plan = load_pruned(pruned, os.path.join(run_dir, 'pruned'), ctx)
    return rec, dense, pruned, plan

"""The run folder and the phases the tools chain: dense training (then pruning, fine-tuning, export).

A run folder holds the resolved recipe (recipe.yaml), one JSON line per event (log.jsonl), checkpoints (ckpt/),
final weights and report.json. Every file is written atomically; `resume=True` continues from the last checkpoint.
"""
import dataclasses
import os
import time
from typing import Any, Dict, Optional

import mxnet as mx

from . import data as data_mod
from . import io, recipe as recipe_mod, train as train_mod, zoo
from .config import to_dict
from .errors import RecipeError
from .version import __version__


class RunFolder:
    """A run's output folder; refuses to overwrite another run, checks that a resume uses the same recipe."""

    def __init__(self, path: str, recipe: recipe_mod.Recipe, resume: bool = False):
        self.path = os.path.abspath(path)
        self.recipe = recipe
        saved = os.path.join(self.path, 'recipe.yaml')
        text = recipe_mod.dump(recipe)
        if resume:
            if not os.path.isfile(saved):
                raise RecipeError(f'--resume: {self.path} holds no run (no recipe.yaml); start it without --resume')
            old = recipe_mod.from_mapping(recipe_mod.load_yaml(saved), saved)
            diff = _first_difference(to_dict(old), to_dict(recipe))
            if diff:
                raise RecipeError(f'--resume: the recipe differs from the one {self.path} was started with at '
                                  f'{diff}; resume with the same recipe and --set values, or use a new --out')
        else:
            if os.path.isdir(self.path) and os.listdir(self.path):
                raise RecipeError(f'--out: {self.path} already exists and is not empty; pass --resume to continue '
                                  f'that run, or choose another --out')
            os.makedirs(self.path, exist_ok=True)
            io.write_text(saved, text)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def log(self, row: Dict[str, Any]) -> None:
        io.append_line(self.file('log.jsonl'), {'time': round(time.time(), 3), **row})


def _first_difference(a: Any, b: Any, path: str = '') -> Optional[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = _first_difference(a.get(k), b.get(k), f'{path}.{k}' if path else k)
            if d:
                return d
        return None
    return None if a == b else f'{path} ({a!r} -> {b!r})'


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


def setup(recipe: recipe_mod.Recipe, out: str, *, data_dir: Optional[str] = None, resume: bool = False,
          progress: bool = True, threads_note: str = '', num_parts: int = 1, part_index: int = 0) -> Setup:
    """Validates what the recipe names (model, contexts, data) before creating the run folder."""
    zoo.check_name(recipe.model.name)
    ctx = train_mod.parse_ctx(recipe.train.ctx)
    root = data_mod.resolve_root(recipe.data.dataset, recipe.data.root, data_dir)
    train_loader, test_loader, classes = data_mod.build_loaders(
        recipe.data, root, seed=recipe.train.seed, num_parts=num_parts, part_index=part_index,
        input_size=recipe.model.input_size, classes=recipe.model.classes)
    run = RunFolder(out, recipe, resume)
    run.log({'event': 'start', 'resume': resume, 'mxprune': __version__, 'mxnet': mx.__version__,
             'threads': threads_note, 'ctx': [str(c) for c in ctx], 'data_root': root,
             'train_images': train_loader.num_samples, 'test_images': test_loader.num_samples})
    return Setup(recipe, ctx, train_loader, test_loader, classes, run, root, progress)


def build_net(s: Setup) -> mx.gluon.HybridBlock:
    m = s.recipe.model
    train_mod.seed_epoch(s.recipe.train.seed, -1)  # the initial weights are a function of the seed too
    net = zoo.get_model(m.name, classes=s.classes, pretrained=m.pretrained, ctx=s.ctx)
    if s.recipe.train.hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def train_dense(s: Setup, net: Optional[mx.gluon.HybridBlock] = None) -> mx.gluon.HybridBlock:
    """Trains (or resumes) the dense baseline for train.epochs; writes dense.params and returns the net."""
    net = net or build_net(s)
    final = s.run.file('dense.params')
    if os.path.exists(final):
        zoo.load_params(net, final, s.ctx)
        return net
    train_mod.fit(net, s.train_loader, s.test_loader, s.recipe.train, s.ctx, s.run.path, phase='dense',
                  classes=s.classes, resume=True, progress=s.progress, log=s.run.log,
                  mixup_off_epochs=s.recipe.data.augment.mixup_off_epochs)
    mx.nd.waitall()
    io.write_with(final, net.save_parameters)
    return net


def finish_dense(s: Setup, net: mx.gluon.HybridBlock, started: float) -> Dict[str, Any]:
    """Evaluates the dense net, writes report.json and logs 'done'."""
    ev = train_mod.evaluate(net, s.test_loader, s.ctx, progress=s.progress)
    report = {'model': s.recipe.model.name, 'test_top1': ev['top1'], 'test_top5': ev['top5'],
              'test_images': ev['n'], 'epochs': s.recipe.train.epochs,
              'wall_time_s': round(time.time() - started, 1), 'weights': s.run.file('dense.params')}
    io.write_json(s.run.file('report.json'), report)
    s.run.log({'event': 'done', **report})
    return report

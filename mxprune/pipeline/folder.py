"""The run folder (recipe.yaml, log.jsonl, state.json, weights, report.json) and the small state a resumed run keeps.

Every file is written atomically; a resume must use the recipe the run was started with.
"""
import contextlib
import json
import os
import time
from typing import Any, Dict, Iterator, Optional

from .. import io, recipe as recipe_mod
from ..config import to_dict
from ..errors import RecipeError


class RunFolder:
    """A run's output folder; refuses to overwrite another run, checks that a resume uses the same recipe."""

    def __init__(self, path: str, recipe: recipe_mod.Recipe, resume: bool = False):
        self.path = os.path.abspath(path)
        self.recipe = recipe
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RecipeError(f'--out: {self.path} is a file; choose a folder for the run')
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



class State:
    """Small facts a resumed run must not recompute (dense accuracy, phase times), in state.json.

    Several State objects of one run may be alive at once (the pipeline keeps one, the prune phase opens its own), so
    every read and write goes to the file: a write never puts back a stale copy of another writer's keys."""

    def __init__(self, run: RunFolder):
        self.path = run.file('state.json')

    @property
    def data(self) -> Dict[str, Any]:
        if not os.path.exists(self.path):
            return {}
        with open(self.path, encoding='utf-8') as f:
            return json.load(f)

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def set(self, key: str, value) -> None:
        data = self.data
        data[key] = value
        io.write_json(self.path, data)

    def add_time(self, phase: str, seconds: float) -> None:
        data = self.data
        times = data.setdefault('seconds', {})
        times[phase] = round(times.get(phase, 0.0) + seconds, 1)
        io.write_json(self.path, data)

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Adds the seconds of the block to `phase` (summed over resumed invocations) when it ends without error."""
        tic = time.time()
        yield
        self.add_time(phase, time.time() - tic)

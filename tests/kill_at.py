"""Runs a tool and SIGKILLs it at a given batch of a training phase (the crash/resume tests).

    python tests/kill_at.py <phase>:<epoch>:<batch> tools/<name>.py [tool arguments...]

The process kills itself just before it trains on batch <batch> of epoch <epoch> in the phase named <phase>, by a
hook added to every mxprune.train.fit of that phase. MXNet must not load before the tool has picked its threads and
engine, so fit is wrapped as mxprune.train is imported rather than imported here.
"""
import importlib.abc
import importlib.util
import os
import runpy
import sys


class KillAt:
    """A training-loop hook (mxprune.train.Hooks) that kills the process at (epoch, batch)."""

    def __init__(self, epoch: int, batch: int):
        self.at = (epoch, batch)
        self.epoch, self.batch = -1, 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch, self.batch = epoch, 0
        self._check()

    def before_update(self, batch_size: int) -> None:
        pass

    def after_update(self) -> None:
        self.batch += 1
        self._check()

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def _check(self) -> None:
        if (self.epoch, self.batch) == self.at:
            import mxnet as mx
            mx.nd.waitall()
            os.kill(os.getpid(), 9)


def _wrap(train, phase: str, epoch: int, batch: int) -> None:
    fit = train.fit

    def fit_then_kill(net, trainer, data, cfg, hooks=()):
        if cfg.phase == phase:
            hooks = [*hooks, KillAt(epoch, batch)]  # last: the step's other hooks have run, as at a real crash
        return fit(net, trainer, data, cfg, hooks)
    train.fit = fit_then_kill


class _WrapOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, phase: str, epoch: int, batch: int):
        self.args = (phase, epoch, batch)

    def find_spec(self, name, path, target=None):
        if name != 'mxprune.train':
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _wrap(module, *self.args)
        spec.loader.exec_module = exec_module
        return spec


def main() -> None:
    spec, tool, *args = sys.argv[1:]
    phase, epoch, batch = spec.split(':')
    sys.meta_path.insert(0, _WrapOnImport(phase, int(epoch), int(batch)))
    sys.argv = [tool, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(tool)))
    runpy.run_path(tool, run_name='__main__')


if __name__ == '__main__':
    main()

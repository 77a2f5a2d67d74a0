"""Runs a tool and SIGKILLs it at a given batch of a training phase (the crash/resume tests).

    python tests/kill_at.py <phase>:<epoch>:<batch>[:<victim>] tools/<name>.py [tool arguments...]

The process kills itself just before it trains on batch <batch> of epoch <epoch> in the phase named <phase>, by a
hook added to every mxprune.train.fit of that phase. MXNet must not load before the tool has picked its threads and
engine, so fit is wrapped as mxprune.train is imported rather than imported here.

Under tools/launch.py every worker runs this wrapper; <victim> picks what dies: `rank<r>` (only that worker kills
itself) or `server` (worker rank 0 kills the parameter server, a sibling process started by the same launcher).
Before the kill it prints `kill_at: SIGKILL <what> pid <pid> at <unix time>` on stderr, for the tests' timing.
"""
import importlib.abc
import importlib.util
import os
import runpy
import signal
import sys
import time


class KillAt:
    """A training-loop hook (mxprune.train.Hooks) that kills the process at (epoch, batch)."""

    def __init__(self, epoch: int, batch: int, victim: str = ''):
        self.at, self.victim = (epoch, batch), victim
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
        if (self.epoch, self.batch) != self.at:
            return
        import mxnet as mx
        mx.nd.waitall()
        rank = _rank()
        if self.victim == 'server':
            if rank == 0:
                _kill(_server_pid(), 'server')
        elif not self.victim or self.victim == f'rank{rank}':
            _kill(os.getpid(), f'worker rank {rank}' if rank is not None else 'the process')


def _rank():
    from mxprune import distributed
    workers = distributed.from_env()
    return None if workers is None else workers.rank


def _server_pid() -> int:
    """The launcher's server: a child of this worker's parent started with DMLC_ROLE=server."""
    parent = os.getppid()
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/stat') as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            with open(f'/proc/{pid}/environ', 'rb') as f:
                env = f.read().split(b'\0')
        except OSError:
            continue
        if ppid == parent and b'DMLC_ROLE=server' in env:
            return int(pid)
    raise RuntimeError('kill_at: no server process found beside this worker')


def _kill(pid: int, what: str) -> None:
    sys.stderr.write(f'kill_at: SIGKILL {what} pid {pid} at {time.time():.3f}\n')
    sys.stderr.flush()
    os.kill(pid, signal.SIGKILL)


def _wrap(train, phase: str, epoch: int, batch: int, victim: str) -> None:
    fit = train.fit

    def fit_then_kill(net, trainer, data, cfg, hooks=()):
        if cfg.phase == phase:
            hooks = [*hooks, KillAt(epoch, batch, victim)]  # last: the step's other hooks have run, as at a crash
        return fit(net, trainer, data, cfg, hooks)
    train.fit = fit_then_kill


class _WrapOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, phase: str, epoch: int, batch: int, victim: str):
        self.args = (phase, epoch, batch, victim)

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
    phase, epoch, batch, victim = (spec + ':').split(':')[:4]
    sys.meta_path.insert(0, _WrapOnImport(phase, int(epoch), int(batch), victim))
    sys.argv = [tool, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(tool)))
    runpy.run_path(tool, run_name='__main__')


if __name__ == '__main__':
    main()

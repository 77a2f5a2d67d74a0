"""When to prune and how far: pure functions of an explicit step (only the Session counts steps).

A schedule answers two questions for t, the number of optimizer steps completed so far (steps_per_epoch given):
    fraction(t)  how much of the final target is reached once the update due at t (if any) is done (0.0 .. 1.0)
    is_update(t) whether the masks are recomputed before step t + 1 (t = 0: before any training)
A modifier turns the fraction into its current target (e.g. sparsity s_i + (s_f - s_i) * fraction).
"""
from typing import Callable, Dict, Optional

import numpy as np

from .errors import MxPruneError
from .registry import Registry

SCHEDULES: Registry['Schedule'] = Registry('schedule')


def cubic(p: float) -> float:
    """AGP's interpolation (Zhu & Gupta 2017) of progress p in [0, 1]: fast at first, gentle near the end."""
    p = min(1.0, max(0.0, p))
    return 1.0 - (1.0 - p) ** 3


def linear(p: float) -> float:
    return min(1.0, max(0.0, p))


CURVES: Dict[str, Callable[[float], float]] = {'cubic': cubic, 'linear': linear}  # the gradual schedule's shapes


class Schedule:
    def fraction(self, step: int, steps_per_epoch: int) -> float:
        raise NotImplementedError

    def is_update(self, step: int, steps_per_epoch: int) -> bool:
        raise NotImplementedError

    def last_update(self, steps_per_epoch: int) -> int:
        """The step of the final update (after which the fraction stays 1)."""
        raise NotImplementedError


def _check_epochs(start: float, end: float, what: str) -> None:
    if start < 0 or end < start:
        raise MxPruneError(f'{what}: start_epoch {start} and end_epoch {end} must satisfy 0 <= start <= end')


@SCHEDULES.register('oneshot')
class OneShot(Schedule):
    """Prunes once, when `epoch` epochs of steps are done (epoch 0: before any training)."""

    def __init__(self, epoch: float = 0.0):
        if epoch < 0:
            raise MxPruneError(f'oneshot schedule: epoch {epoch} must be >= 0')
        self.epoch = epoch

    def _at(self, spe: int) -> int:
        return int(round(self.epoch * spe))

    def fraction(self, step, steps_per_epoch):
        return 1.0 if step >= self._at(steps_per_epoch) else 0.0

    def is_update(self, step, steps_per_epoch):
        return step == self._at(steps_per_epoch)

    def last_update(self, steps_per_epoch):
        return self._at(steps_per_epoch)


@SCHEDULES.register('iterative')
class Iterative(Schedule):
    """`rounds` equal pruning steps at start_epoch + k (end - start) / rounds, fine-tuning in between."""

    def __init__(self, start_epoch: float = 0.0, end_epoch: float = 1.0, rounds: int = 3):
        _check_epochs(start_epoch, end_epoch, 'iterative schedule')
        if rounds < 1:
            raise MxPruneError(f'iterative schedule: rounds {rounds} must be >= 1')
        self.start_epoch, self.end_epoch, self.rounds = start_epoch, end_epoch, rounds

    def _points(self, spe: int) -> list:
        span = (self.end_epoch - self.start_epoch) * spe
        return [int(round(self.start_epoch * spe + k * span / self.rounds)) for k in range(self.rounds)]

    def fraction(self, step, steps_per_epoch):
        done = sum(1 for p in self._points(steps_per_epoch) if step >= p)
        return done / self.rounds

    def is_update(self, step, steps_per_epoch):
        return step in self._points(steps_per_epoch)

    def last_update(self, steps_per_epoch):
        return self._points(steps_per_epoch)[-1]


@SCHEDULES.register('agp')
class AGP(Schedule):
    """Automated Gradual Pruning (Zhu & Gupta 2017): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3.

    Updates every `frequency` steps from start_epoch to end_epoch (the last update lands on end_epoch).
    """

    def __init__(self, start_epoch: float = 0.0, end_epoch: float = 1.0, frequency: int = 100):
        _check_epochs(start_epoch, end_epoch, 'agp schedule')
        if frequency < 1:
            raise MxPruneError(f'agp schedule: frequency {frequency} must be >= 1 step')
        self.start_epoch, self.end_epoch, self.frequency = start_epoch, end_epoch, frequency

    def _span(self, spe: int):
        t0 = int(round(self.start_epoch * spe))
        t1 = max(t0, int(round(self.end_epoch * spe)))
        return t0, t1

    def _last_update_at_or_before(self, step: int, spe: int) -> Optional[int]:
        t0, t1 = self._span(spe)
        if step < t0:
            return None
        if step >= t1:
            return t1
        return t0 + (step - t0) // self.frequency * self.frequency

    def fraction(self, step, steps_per_epoch):
        t = self._last_update_at_or_before(step, steps_per_epoch)
        if t is None:
            return 0.0
        t0, t1 = self._span(steps_per_epoch)
        return cubic(1.0 if t1 == t0 else (t - t0) / (t1 - t0))

    def is_update(self, step, steps_per_epoch):
        t0, t1 = self._span(steps_per_epoch)
        return t0 <= step <= t1 and ((step - t0) % self.frequency == 0 or step == t1)

    def last_update(self, steps_per_epoch):
        return self._span(steps_per_epoch)[1]


@SCHEDULES.register('gradual')
class Gradual(Schedule):
    """`steps` pruning steps, evenly spaced after start_epoch, the last exactly at end_epoch: step k of K reaches
    curve(k / K) of the target (cubic: AGP's curve; linear). The first step comes after (end - start) / K epochs of
    training, so gradient criteria have batches to score on, and the net is never cut all at once."""

    def __init__(self, start_epoch: float = 0.0, end_epoch: float = 1.0, steps: int = 8, curve: str = 'cubic'):
        _check_epochs(start_epoch, end_epoch, 'gradual schedule')
        if steps < 1:
            raise MxPruneError(f'gradual schedule: steps {steps} must be >= 1')
        if curve not in CURVES:
            raise MxPruneError(f'gradual schedule: curve {curve!r}; choose one of {", ".join(CURVES)}')
        self.start_epoch, self.end_epoch, self.steps, self.curve = start_epoch, end_epoch, steps, curve

    def points(self, spe: int) -> list:
        """The steps (optimizer steps done) of the K updates; distinct, the last at end_epoch."""
        t0, t1 = int(round(self.start_epoch * spe)), int(round(self.end_epoch * spe))
        pts = sorted({t0 + int(np.ceil(k * (t1 - t0) / self.steps - 1e-9)) for k in range(1, self.steps + 1)})
        return pts or [t1]

    def fraction(self, step, steps_per_epoch):
        pts = self.points(steps_per_epoch)
        done = sum(1 for p in pts if step >= p)
        return CURVES[self.curve](done / len(pts))

    def is_update(self, step, steps_per_epoch):
        return step in self.points(steps_per_epoch)

    def last_update(self, steps_per_epoch):
        return self.points(steps_per_epoch)[-1]


def get(spec, **kwargs) -> Schedule:
    return SCHEDULES.create(spec, **kwargs)



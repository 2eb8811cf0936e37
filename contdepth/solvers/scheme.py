"""What every fixed-grid scheme shares: exact stage times and the ``rate(stage, x)`` contract.

A scheme integrates ``dx/dt = rate(stage, x)`` on a uniform grid of ``n_steps`` steps.
``stage`` is a :class:`StageTime`: a float time for ordinary right-hand sides plus the
*exact* time and the side from which a discontinuous depth function must be read.
The schedule of stage times depends only on the scheme and the grid, so it is
computed once (with rational arithmetic) and cached; the per-step loop only walks a
precomputed tuple.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from fractions import Fraction
from functools import lru_cache
from typing import Callable, NamedTuple

import torch

Tensor = torch.Tensor


class StageTime(NamedTuple):
    """One evaluation of the rate function.

    Attributes:
        t: the time as a float (what a plain ``f(t, x)`` receives).
        exact: the same time as an exact rational.
        left: ``True`` when the stage sits at the *end* of its own step, so a
            discontinuous depth function must be read as its left limit (the value
            from inside the step); otherwise depth functions are right-continuous.
        index: position of ``(exact, left)`` in the grid's list of distinct
            evaluation points, so callers can precompute per-point data.
    """

    t: float
    exact: Fraction
    left: bool
    index: int


Rate = Callable[[StageTime, Tensor], Tensor]


class StageSchedule(NamedTuple):
    """The stage times of a whole grid: ``steps[n]`` lists the stages of step ``n``."""

    steps: tuple[tuple[StageTime, ...], ...]
    points: tuple[tuple[Fraction, bool], ...]  # distinct (exact time, left) pairs, by index
    step_size: float


def as_fraction(value: float | int | Fraction, what: str) -> Fraction:
    """Exact rational value of a time given as int, float or Fraction."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise TypeError(f"{what}: expected a real number, got {type(value).__name__}")
    if isinstance(value, float) and not (value == value and abs(value) != float("inf")):
        raise ValueError(f"{what}: must be finite, got {value!r}")
    return Fraction(value)


@lru_cache(maxsize=512)
def build_schedule(
    offsets: tuple[tuple[Fraction, ...], ...], t0: Fraction, t1: Fraction
) -> StageSchedule:
    """Exact stage times for ``len(offsets)`` uniform steps on ``[t0, t1]``.

    ``offsets[n]`` are the stage offsets of step ``n`` as fractions of the step
    (a Runge-Kutta tableau's ``c``).  A stage at offset ``>= 1`` lies at the end of
    its step and reads depth functions from the left.
    """
    n_steps = len(offsets)
    span = t1 - t0
    index: dict[tuple[Fraction, bool], int] = {}
    steps = []
    for n, step_offsets in enumerate(offsets):
        stages = []
        for c in step_offsets:
            exact = t0 + span * (n + c) / n_steps
            key = (exact, c >= 1)
            i = index.setdefault(key, len(index))
            stages.append(StageTime(float(exact), exact, key[1], i))
        steps.append(tuple(stages))
    return StageSchedule(tuple(steps), tuple(index), float(span / n_steps))


class Scheme(ABC):
    """A fixed-grid integration scheme (explicit Runge-Kutta or linear multistep)."""

    name: str
    order: int

    @abstractmethod
    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        """For each step, the offsets (fractions of the step) where ``rate`` is evaluated."""

    def evaluations(self, n_steps: int) -> int:
        """Rate evaluations for ``n_steps`` steps (deterministic on a fixed grid)."""
        return sum(len(step) for step in self.stage_offsets(n_steps))

    def schedule(self, n_steps: int, t0: float | Fraction = 0, t1: float | Fraction = 1) -> StageSchedule:
        """Exact stage times of this scheme on ``n_steps`` uniform steps of ``[t0, t1]``.

        Memoised per scheme: building a schedule does rational arithmetic, looking
        one up is a dict access, which keeps repeated ``integrate`` calls cheap.
        """
        key = (n_steps, t0, t1)
        cache = self.__dict__.setdefault("_schedule_cache", {})
        found = cache.get(key)
        if found is None:
            found = build_schedule(
                self.stage_offsets(n_steps), as_fraction(t0, "t0"), as_fraction(t1, "t1")
            )
            if len(cache) < 256:
                cache[key] = found
        return found

    @abstractmethod
    def integrate(
        self,
        rate: Rate,
        x0: Tensor,
        schedule: StageSchedule,
        *,
        return_path: bool = False,
        checkpoint: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Walk ``schedule`` from ``x0``; return the final state and (optionally) the path.

        The path stacks the state before the first step and after every step:
        shape ``(n_steps + 1, *x0.shape)``.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, order={self.order})"

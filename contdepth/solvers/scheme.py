"""What every fixed-grid scheme shares: exact stage times and the ``rate(stage, x)`` contract.

A scheme integrates ``dx/dt = rate(stage, x)`` on a uniform grid of ``n_steps`` steps.
``stage`` is a [`StageTime`][contdepth.solvers.StageTime]: a float time for ordinary right-hand sides plus the
*exact* time and the side from which a discontinuous depth function must be read.
The schedule of stage times depends only on the scheme and the grid, so it is
computed once (with rational arithmetic) and cached; the per-step loop only walks a
precomputed tuple.
"""

from __future__ import annotations

import math
import numbers
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
        left: ``True`` when a discontinuous depth function must be read as its left
            limit, so that a stage on a step boundary reads the value from inside its
            own step: the *end* of a step that runs forwards, the *start* of one that
            runs backwards (an adjoint sweep); otherwise depth functions are right-continuous.
        index: position of ``(exact, left)`` in the grid's list of distinct
            evaluation points, so callers can precompute per-point data.
    """

    t: float
    exact: Fraction
    left: bool
    index: int


Rate = Callable[[StageTime, Tensor], Tensor]


class StageSchedule(NamedTuple):
    """The stage times of a whole grid: ``steps[n]`` lists the stages of step ``n``.

    Attributes:
        steps: per step, its stages.
        points: the distinct ``(exact time, left)`` pairs, by `StageTime.index`.
        step_size: the size of every step on a uniform grid (on a split grid, the size of
            the uniform steps it was split from).
        grid: the ``n_steps + 1`` exact step boundaries, ``grid[0] = t0`` and ``grid[-1] = t1``.
        step_sizes: each step's size as a float (all equal on a uniform grid).
        step_ends: each step's end as a float (computed once: the driver reports them per call).
    """

    steps: tuple[tuple[StageTime, ...], ...]
    points: tuple[tuple[Fraction, bool], ...]
    step_size: float
    grid: tuple[Fraction, ...] = ()
    step_sizes: tuple[float, ...] = ()
    step_ends: tuple[float, ...] = ()

    @property
    def uniform(self) -> bool:
        """Whether every step has the same size (multistep schemes need it)."""
        return len(set(self.step_sizes)) <= 1

def as_fraction(value: float | int | Fraction, what: str) -> Fraction:
    """Exact rational value of a time given as int, float or Fraction."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}: expected a real number, got {type(value).__name__}")
    if not isinstance(value, (int, Fraction)):
        value = float(value)  # numpy and other real scalars: their exact binary value
        if not math.isfinite(value):
            raise ValueError(f"{what}: must be finite, got {value!r}")
    return Fraction(value)


@lru_cache(maxsize=512)
def build_schedule(
    offsets: tuple[tuple[Fraction, ...], ...], t0: Fraction, t1: Fraction
) -> StageSchedule:
    """Exact stage times for ``len(offsets)`` uniform steps on ``[t0, t1]``.

    ``offsets[n]`` are the stage offsets of step ``n`` as fractions of the step
    (a Runge-Kutta tableau's ``c``).  A stage at offset ``>= 1`` lies at the end of
    its step and reads depth functions from the left (on a backward grid: offset 0).
    """
    n_steps = len(offsets)
    grid = tuple(t0 + (t1 - t0) * n / n_steps for n in range(n_steps + 1))
    return build_grid_schedule(offsets, grid, float((t1 - t0) / n_steps))


@lru_cache(maxsize=512)
def build_grid_schedule(
    offsets: tuple[tuple[Fraction, ...], ...], grid: tuple[Fraction, ...], step_size: float
) -> StageSchedule:
    """Exact stage times on the step boundaries ``grid`` (``len(offsets) + 1`` of them, monotone)."""
    if len(grid) != len(offsets) + 1:
        raise ValueError(f"grid: {len(grid)} boundaries for {len(offsets)} steps; need one more than steps")
    index: dict[tuple[Fraction, bool], int] = {}
    steps = []
    for n, step_offsets in enumerate(offsets):
        start, span = grid[n], grid[n + 1] - grid[n]
        stages = []
        for c in step_offsets:
            exact = start + span * c
            # the side inside the step: left at a forward step's end, at a backward step's start
            key = (exact, c >= 1 if span > 0 else c == 0)
            i = index.setdefault(key, len(index))
            stages.append(StageTime(float(exact), exact, key[1], i))
        steps.append(tuple(stages))
    sizes = tuple(float(grid[n + 1] - grid[n]) for n in range(len(offsets)))
    return StageSchedule(tuple(steps), tuple(index), step_size, grid, sizes, tuple(float(t) for t in grid[1:]))


def snap_to_grid(t: Fraction, grid: tuple[Fraction, ...], tolerance: float = 1e-12) -> Fraction:
    """``t``, or the grid point it means: within ``tolerance`` of the interval's length.

    Why: a float such as ``0.1`` is not exactly 1/10, so a requested time the user meant as
    a grid point would otherwise split a step into one of length 1e-17 (or be refused by a
    multistep scheme as off the grid).
    """
    span = abs(grid[-1] - grid[0])
    n = len(grid) - 1
    k = round((t - grid[0]) / (grid[-1] - grid[0]) * n)
    nearest = grid[min(max(k, 0), n)]
    return nearest if abs(float(t - nearest)) <= tolerance * float(span) else t


Carry = tuple  # a scheme's state between steps: ``carry[0]`` is the solution, the rest its history


class Scheme(ABC):
    """A fixed-grid integration scheme (explicit Runge-Kutta or linear multistep).

    A scheme supplies [`init`][contdepth.solvers.Scheme.init] (the carry before the first step) and [`step`][contdepth.solvers.Scheme.step]
    (one step); a new multistep method is those two methods and [`stage_offsets`][contdepth.solvers.Scheme.stage_offsets].
    """

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

    def split_schedule(self, n_steps: int, t0: Fraction, t1: Fraction, at: tuple[Fraction, ...]) -> StageSchedule:
        """The uniform grid of ``n_steps`` steps with every time in ``at`` added as a step boundary.

        Why: outputs at requested times (``t_eval``) must be states of the integration
        itself, not interpolations; a one-step method simply takes two shorter steps
        where a requested time falls inside a step.  A multistep scheme's weights assume
        equal steps, so it accepts only requested times already on its grid.
        """
        uniform = build_schedule(self.stage_offsets(n_steps), t0, t1)
        at = tuple(snap_to_grid(t, uniform.grid) for t in at)
        inside = sorted(set(at) - set(uniform.grid), reverse=t1 < t0)
        if not inside:
            return uniform
        if not self.splittable:
            raise ValueError(
                f"t_eval: {float(inside[0])!r} is not on the {n_steps}-step grid and {self.name!r} is a "
                "multistep scheme, whose weights assume equal steps; request times on the grid "
                f"(multiples of (t1 - t0) / {n_steps}) or use a one-step (Runge-Kutta) scheme"
            )
        grid = tuple(sorted(set(uniform.grid) | set(inside), reverse=t1 < t0))
        return build_grid_schedule(self.stage_offsets(len(grid) - 1), grid, uniform.step_size)

    #: Whether a step may be split into shorter ones (one-step methods); see :meth:`split_schedule`.
    splittable: bool = False
    #: Whether a step evaluates the rate exactly at its stages (``False``: an iteration whose
    #: count depends on the data, such as an implicit step; the driver then counts the calls).
    fixed_evaluations: bool = True
    #: What a step asks of a rate beyond ``f(t, x)`` when the rate offers it (a
    #: [`Term`][contdepth.solvers.Term]): ``"part"``, each half's rate from the other half (RevNet's
    #: coupling; such a step treats the halves differently, so it cannot integrate an augmented
    #: state such as the adjoint's), or ``"application"``, the rate applied to its own output with
    #: per-application state (PolyNet's ``F(F(x))``).
    term_needs: frozenset[str] = frozenset()
    #: How many tensors a reversible scheme's carry holds after a step (the state and its
    #: auxiliaries): what ``step_back`` starts from.
    carry_size: int = 1
    #: Whether the scheme offers ``step_back`` (the carry before a step from the carry after it).
    reversible: bool = False

    @property
    def partitioned(self) -> bool:
        """Whether a step treats halves of the state differently (``"part"`` in `term_needs`)."""
        return "part" in self.term_needs

    @property
    def composes(self) -> bool:
        """Whether a step applies the rate to its own output (``"application"`` in `term_needs`): those
        evaluations see inputs that are not states, so a rate with normalisation state must keep it
        per application (`contdepth.nn.repeated`)."""
        return "application" in self.term_needs

    def init(self, x0: Tensor, n_steps: int) -> Carry:
        """The carry before the first step: ``(x0,)`` plus whatever history the scheme keeps."""
        return (x0,)

    @abstractmethod
    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        """Take step ``n`` of size ``h`` with stages ``stages``; return the next carry.

        A step must only *compute*: the fixed-grid driver ([`solve_fixed_grid`][contdepth.solvers.solve_fixed_grid])
        owns the loop, the path, checkpointing and the statistics, so every scheme gets
        them alike.  ``carry[0]`` is the solution after the step.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, order={self.order})"

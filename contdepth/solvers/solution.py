"""What an integration returns: the final state, optional outputs at saved times, and its cost."""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass
class ReconstructionLog:
    """A reversible backward pass's relative reconstruction errors: the last, and the worst since it was taken.

    Owned by whoever runs the mode (a block keeps one): the error is known only in the
    backward pass, long after ``solve`` returned.
    """

    last: float | None = None
    worst: float | None = None

    def record(self, error: float) -> None:
        self.last = error
        self.worst = error if self.worst is None or not error <= self.worst else self.worst  # NaN stays

    def take_worst(self, reset: bool = True) -> float | None:
        """The largest error since the last call with ``reset`` (``None``: no reversible backward pass)."""
        worst = self.worst
        if reset:
            self.worst = None
        return worst


@dataclass(frozen=True)
class IntegrationStats:
    """What an integration cost.

    Attributes:
        n_steps: accepted steps.
        n_evaluations: calls of the rate function.
        n_rejected: rejected steps (always 0 on a fixed grid).
        step_ends: the time at the end of each accepted step.
        reconstruction: a reversible pass's [`ReconstructionLog`][contdepth.solvers.ReconstructionLog]: the
            relative error of the rebuilt input, filled in when the backward pass has run
            (``None`` for other gradient modes).
    """

    n_steps: int
    n_evaluations: int
    n_rejected: int = 0
    step_ends: tuple[float, ...] = ()
    reconstruction: ReconstructionLog | None = None


@dataclass(frozen=True, eq=False)
class Solution:
    """The result of `integrate` and [`integrate_adaptive`][contdepth.solvers.integrate_adaptive].

    Attributes:
        state: the state at ``t1``.
        stats: steps and rate evaluations taken ([`IntegrationStats`][contdepth.solvers.IntegrationStats]).
        ts: the times of the saved outputs, or ``None`` when nothing was saved: the
            requested ``t_eval``, or with ``return_path`` ``t0`` and every step's end.
        ys: the states at ``ts`` stacked along a new first dimension,
            shape ``(len(ts), *x0.shape)``; ``None`` when nothing was saved.

    Why a class and not a tuple: the old return value was a tensor or a 2- or 3-tuple
    depending on flags, so unpacking it the wrong way went unnoticed.  A ``Solution`` is
    not iterable: ``state, stats = integrate(...)`` fails at once instead.
    """

    state: Tensor
    stats: IntegrationStats
    ts: tuple[float, ...] | None = None
    ys: Tensor | None = None

    @property
    def path(self) -> Tensor | None:
        """Alias of `ys` for readers who asked for the whole path (``return_path=True``)."""
        return self.ys

    def __repr__(self) -> str:
        saved = "" if self.ts is None else f", saved at {len(self.ts)} times"
        return (f"Solution(state shape {tuple(self.state.shape)}, {self.stats.n_steps} steps, "
                f"{self.stats.n_evaluations} evaluations{saved})")


class MaxStepsExceeded(RuntimeError):
    """Raised when an adaptive integration needs more than ``max_steps`` attempts."""

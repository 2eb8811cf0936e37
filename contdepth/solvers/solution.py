"""What an integration returns: the final state, optional outputs at saved times, and its cost."""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class IntegrationStats:
    """What an integration cost.

    Attributes:
        n_steps: accepted steps.
        n_evaluations: calls of the rate function.
        n_rejected: rejected steps (always 0 on a fixed grid).
        step_ends: the time at the end of each accepted step.
    """

    n_steps: int
    n_evaluations: int
    n_rejected: int = 0
    step_ends: tuple[float, ...] = ()


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

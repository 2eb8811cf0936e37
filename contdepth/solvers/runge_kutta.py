"""One generic explicit Runge-Kutta step that runs every :class:`ButcherTableau`."""

from __future__ import annotations

from fractions import Fraction

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from .scheme import Rate, Scheme, StageSchedule, StageTime, Tensor
from .tableau import ButcherTableau


def rk_step(
    rate: Rate,
    x: Tensor,
    h: float,
    tableau: ButcherTableau,
    stages: tuple[StageTime, ...],
    first_rate: Tensor | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """Advance ``x`` by one step of size ``h``; return the new state and the stage rates.

    ``stages[i]`` is the time of stage ``i``.  ``first_rate`` lets an FSAL method reuse
    the previous step's last rate as this step's first.  Each stage input is built with
    fused ``torch.add(..., alpha=)`` calls and zero coefficients are skipped, so the
    generic step does no more tensor work than a hand-written one.
    """
    a, b = tableau._a_float, tableau._b_float
    k: list[Tensor] = []
    for i, row in enumerate(a):
        if i == 0 and first_rate is not None:
            k.append(first_rate)
            continue
        xi = x
        for j, aij in enumerate(row):
            if aij != 0.0:
                xi = torch.add(xi, k[j], alpha=h * aij)
        k.append(rate(stages[i], xi))
    x_new = x
    for j, bj in enumerate(b):
        if bj != 0.0:
            x_new = torch.add(x_new, k[j], alpha=h * bj)
    return x_new, k


class RungeKutta(Scheme):
    """Fixed-grid explicit Runge-Kutta integration with a given tableau."""

    def __init__(self, tableau: ButcherTableau) -> None:
        if not isinstance(tableau, ButcherTableau):
            raise TypeError(f"tableau: expected a ButcherTableau, got {type(tableau).__name__}")
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        return (self.tableau.c,) * n_steps

    def integrate(
        self,
        rate: Rate,
        x0: Tensor,
        schedule: StageSchedule,
        *,
        return_path: bool = False,
        checkpoint: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        h, tableau = schedule.step_size, self.tableau
        x = x0
        path = [x0] if return_path else None
        # The last step is never checkpointed: backward needs its internals first, so
        # recomputing them would cost time and save no peak memory.
        last = len(schedule.steps) - 1
        for n, stages in enumerate(schedule.steps):
            if checkpoint and n < last and torch.is_grad_enabled():
                x = _checkpoint(_rk_step_state, rate, x, h, tableau, stages, use_reentrant=False)
            else:
                x = rk_step(rate, x, h, tableau, stages)[0]
            if path is not None:
                path.append(x)
        return x, (torch.stack(path) if path is not None else None)


def _rk_step_state(rate: Rate, x: Tensor, h: float, tableau: ButcherTableau, stages) -> Tensor:
    return rk_step(rate, x, h, tableau, stages)[0]

"""One generic explicit Runge-Kutta step that runs every [`ButcherTableau`][contdepth.solvers.ButcherTableau]."""

from __future__ import annotations

from fractions import Fraction

import torch

from .scheme import Carry, Rate, Scheme, StageTime, Tensor
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
    a, b = tableau.a_float, tableau.b_float
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

    splittable = True  # a one-step method: any step may be split in two

    def __init__(self, tableau: ButcherTableau) -> None:
        if not isinstance(tableau, ButcherTableau):
            raise TypeError(f"tableau: expected a ButcherTableau, got {type(tableau).__name__}")
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        return (self.tableau.c,) * n_steps

    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        return (rk_step(rate, carry[0], h, self.tableau, stages)[0],)

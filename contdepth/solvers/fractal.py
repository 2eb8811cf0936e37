"""The FractalNet join read as a Runge-Kutta scheme (Lu, Zhong, Li & Dong 2018, Table 1).

A FractalNet block of two columns (Larsson et al. 2017) joins a short column and a deep
column of two layers by their element-wise mean. Lu et al. write the order-2 fractal block
as ``x+ = k1 x + k2 (k3 x + f1(x)) + f2(k3 x + f1(x))`` and read it as a second-order
Runge-Kutta scheme. With ``f1 = h f(t_n, .)``, ``f2 = h/2 f(t_n + h, .)``, ``k1 = k2 = 1/2``
and ``k3 = 1`` it is Heun's method; in the join's terms, the mean of the identity column and
the deep column ``y + F2(y)`` with ``F2 = h f(t_n + h, .)`` (the mean halves the whole deep
column, its second layer included). With ``F_i = h f(t_i, .)``:

    y   = x + F1(x)                        (the deep column's first layer, at t_n)
    x+  = 1/2 x + 1/2 (y + F2(y))          (the mean join; F2 at t_n + h)

Expanding, ``x+ = x + h/2 f(t_n, x) + h/2 f(t_n + h, y)``: Heun's method written in the
Shu-Osher (convex combination) form, which is how the join computes it. The two forms agree
to round-off; `FractalJoin.tableau` is the equivalent tableau, from which the
scheme's order, stability and error constant follow.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from .scheme import Carry, Rate, Scheme, StageTime
from .tableau import ButcherTableau

_OFFSETS = (Fraction(0), Fraction(1))


class FractalJoin(Scheme):
    """FractalNet's two-column block as a scheme: ``x+ = (x + y + F2(y)) / 2`` with ``y = x + F1(x)``."""

    order = 2
    splittable = True

    def __init__(self, name: str = "fractalnet") -> None:
        self.name = name
        self.reference = "Larsson, Maire & Shakhnarovich (2017), FractalNet; Lu et al. (2018), Table 1 and Sec. 2.1"
        # The same step in Butcher form (Heun's method): what the properties table reads.
        self.tableau = ButcherTableau(name, c=[0, 1], a=[[], [1]], b=["1/2", "1/2"], reference=self.reference)

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        return (_OFFSETS,) * n_steps

    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        x = carry[0]
        first, second = stages
        y = torch.add(x, rate(first, x), alpha=h)  # the deep column's first layer
        deep = torch.add(y, rate(second, y), alpha=h)  # ... and its second
        return ((x + deep) * 0.5,)  # the mean join with the short (identity) column

    def __repr__(self) -> str:
        return f"FractalJoin(name={self.name!r})"

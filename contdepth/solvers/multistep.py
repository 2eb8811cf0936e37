"""Linear multistep schemes: Adams-Bashforth 2-4 and the LM-ResNet two-step form.

A multistep scheme evaluates the rate once per step, at the step start, and combines
it with earlier rates (Adams-Bashforth) or earlier states (LM-ResNet).  The first
steps have no history yet and are taken by a one-step method.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import torch

from .runge_kutta import rk_step
from .scheme import Carry, Rate, Scheme, StageTime, Tensor
from .tableau import ButcherTableau

_START = (Fraction(0),)


class AdamsBashforth(Scheme):
    """Explicit Adams-Bashforth method of order ``len(beta)``.

    ``x_{n+1} = x_n + h * sum_j beta_j f_{n-j}``.  The first ``order - 1`` steps are
    taken with ``starter``, a Runge-Kutta method of the same order, so the global
    order is not spoiled by the start; its first stage is ``f(t_n, x_n)`` and
    is kept as history instead of being evaluated twice.  The carry is
    ``(x, f_{n-order+2}, ..., f_{n-1})``: the rates the next step reuses, oldest first.
    """

    def __init__(self, name: str, beta: Sequence[Fraction | str], starter: ButcherTableau, reference: str = "") -> None:
        self.name = name
        self.beta = tuple(Fraction(v) for v in beta)
        self.order = len(self.beta)
        if sum(self.beta) != 1:
            raise ValueError(f"beta: Adams-Bashforth weights must sum to 1, got {sum(self.beta)}")
        if starter.order < self.order:
            raise ValueError(
                f"starter: {starter.name!r} has order {starter.order} < {self.order}; "
                "a lower-order start would reduce the global order"
            )
        if starter.c[0] != 0:
            raise ValueError("starter: the first stage of the starting method must be at c = 0")
        self.starter = starter
        self.reference = reference
        self.beta_float = tuple(float(v) for v in self.beta)

    def _n_start(self, n_steps: int) -> int:
        return min(self.order - 1, n_steps)

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        n_start = self._n_start(n_steps)
        return (self.starter.c,) * n_start + (_START,) * (n_steps - n_start)

    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        x, history = carry[0], carry[1:]
        first = rate(stages[0], x)
        if n < self.order - 1:  # no full history yet: a starter step, its first stage kept
            x = rk_step(rate, x, h, self.starter, stages, first_rate=first)[0]
        else:
            for j, beta in enumerate(self.beta_float):
                x = torch.add(x, first if j == 0 else history[-j], alpha=h * beta)
        keep = self.order - 1
        return (x, *(history + (first,))[-keep:]) if keep else (x,)


class LMResNetScheme(Scheme):
    """The LM-ResNet two-step scheme ``x_{n+1} = (1-k) x_n + k x_{n-1} + h f(t_n, x_n)``.

    The first step is a plain residual (forward-Euler) step.  ``k`` may be a float, a
    tensor that broadcasts against the state (e.g. one value per channel, and it may
    require grad), or a sequence with one such value per step (entry 0 is unused,
    since step 0 is the Euler start).  The carry is ``(x_n, x_{n-1})``.

    Note on consistency: for constant ``k`` the characteristic polynomials give
    ``rho'(1) = 1 + k`` and ``sigma(1) = 1``, so the scheme converges (order 1) to the
    solution of ``(1 + k) dx/dt = f``; it integrates ``dx/dt = f`` itself only for
    ``k = 0``, where it is forward Euler.  It is zero-stable for ``|k| < 1``.
    """

    order = 1

    def __init__(self, k: float | Tensor | Sequence[float | Tensor] = 0.0) -> None:
        self.name = "lm_resnet"
        self.k = k

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        return (_START,) * n_steps

    def init(self, x0: Tensor, n_steps: int) -> Carry:
        if isinstance(self.k, (list, tuple)) and len(self.k) != n_steps:
            raise ValueError(f"k: expected {n_steps} per-step values (one per step), got {len(self.k)}")
        return (x0,)

    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        x = carry[0]
        f = rate(stages[0], x)
        if len(carry) == 1:  # the Euler start
            return (torch.add(x, f, alpha=h), x)
        k = self.k[n] if isinstance(self.k, (list, tuple)) else self.k
        return (torch.add((1 - k) * x + k * carry[1], f, alpha=h), x)

    def __repr__(self) -> str:
        return f"LMResNetScheme(k={self.k!r})"

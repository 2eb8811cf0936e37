"""Backward Euler and its truncated Neumann series, the scheme PolyNet reads as (Lu et al. 2018).

Backward Euler solves ``x_{n+1} = x_n + h f(t_{n+1}, x_{n+1})``. For a linear rate
``F = h f(t, .)`` its solution is ``(I - F)^{-1} x_n = x_n + F x_n + F^2 x_n + ...``;
PolyNet's PolyInception unit ``x + F(x) + F(F(x))`` (Zhang et al. 2017, "poly-2") keeps the
first three terms, which is how Lu, Zhong, Li & Dong (arXiv 1710.10121, Table 1) read it as
an approximation of backward Euler.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from ..common.validate import check_int, check_number
from .scheme import Carry, Rate, Scheme, StageTime
from .term import Term

_START = (Fraction(0),)
_END = (Fraction(1),)


class NeumannSeries(Scheme):
    """``x_{n+1} = x_n + F(x_n) + F(F(x_n)) + ... + F^terms(x_n)`` with ``F = h f(t_n, .)``.

    ``terms=2`` is PolyNet's poly-2 unit (registered as ``polynet``): the truncated Neumann
    series of backward Euler's ``(I - F)^{-1}``. Every evaluation is at the step's start
    ``t_n``; a step costs ``terms`` evaluations.

    Order: the powers ``F^j`` are compositions, ``F(F(x)) = h f(t, h f(t, x))``, so the series
    is a Neumann series only for a rate that is linear in ``x``. Then the scheme is consistent
    of order 1 (``e^z = 1 + z + z^2/2 + ...`` against ``1 + z + z^2 + ...``). For a rate with
    ``f(t, 0) != 0`` the terms ``F^j(x)`` with ``j >= 2`` are ``O(h)``, not ``O(h^j)``, and the
    scheme integrates a different equation (``dx/dt = f + (terms - 1) f(t, 0) + ...``), as
    PolyNet's units do: it is the architecture's reading, not a convergent integrator in general.

    A rate that offers applications (a [`Term`][contdepth.solvers.Term] with ``application_count``; a block with a repeated template,
    `contdepth.nn.repeated`) is asked for application ``j`` at the ``j``-th term: PolyNet
    keeps one normalisation per application, since ``F(x)`` is distributed unlike ``x``.
    """

    order = 1
    splittable = True

    def __init__(self, terms: int = 2, name: str | None = None) -> None:
        self.terms = check_int(terms, "terms", low=1, high=64)
        self.term_needs = frozenset({"application"}) if self.terms >= 2 else frozenset()
        self.name = name or ("polynet" if terms == 2 else f"neumann{terms}")
        self.reference = "Zhang et al. (2017), PolyNet; Lu et al. (2018), Table 1"

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        return (_START * self.terms,) * n_steps

    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        x = carry[0]
        term = x
        out = x
        applications = isinstance(rate, Term) and rate.application_count > 0
        for j, stage in enumerate(stages):  # F^j(x) = h f_j(t_n, F^{j-1}(x))
            term = (rate.application(stage, term, j) if applications else rate(stage, term)) * h
            out = out + term
        return (out,)

    def __repr__(self) -> str:
        return f"NeumannSeries(terms={self.terms}, name={self.name!r})"


class BackwardEuler(Scheme):
    """``x_{n+1} = x_n + h f(t_{n+1}, x_{n+1})``, solved by fixed-point iteration.

    The iteration ``y_{j+1} = x_n + h f(t_{n+1}, y_j)`` starts from the forward-Euler
    predictor and stops when ``max |y_{j+1} - y_j| <= atol + rtol * max |y_{j+1}|``. It
    converges when ``h`` times the rate's Lipschitz constant is below 1; otherwise
    [`NotConverged`][contdepth.solvers.NotConverged] names the step and suggests more steps.

    Gradients flow through the iterations (the unrolled loop is differentiated as it ran).
    That is exact for the computed iterate and costs memory per iteration; an implicit
    derivative would treat the iterate as the exact solution, which it is only to ``rtol``.

    The number of evaluations depends on the data, so `fixed_evaluations` is
    ``False`` and the driver counts them. Order 1.
    """

    order = 1
    splittable = True
    fixed_evaluations = False

    def __init__(self, rtol: float = 1e-6, atol: float = 1e-8, max_iterations: int = 100,
                 name: str = "backward_euler") -> None:
        self.rtol = check_number(rtol, "rtol", low=0.0)
        self.atol = check_number(atol, "atol", low=0.0)
        if self.rtol == 0 and self.atol == 0:
            raise ValueError("rtol: rtol and atol cannot both be 0")
        self.max_iterations = check_int(max_iterations, "max_iterations", low=1)
        self.name = name
        self.reference = "Hairer & Wanner, Solving ODEs II, Sec. IV.3"

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        # the step's start (the predictor) and its end, read from the left (the corrector)
        return ((Fraction(0), Fraction(1)),) * n_steps

    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        x = carry[0]
        start, end = stages
        y = torch.add(x, rate(start, x), alpha=h)  # forward-Euler predictor
        for _ in range(self.max_iterations):
            y_next = torch.add(x, rate(end, y), alpha=h)
            change = float((y_next - y).detach().abs().max()) if y.numel() else 0.0
            scale = self.atol + self.rtol * float(y_next.detach().abs().max()) if y.numel() else 1.0
            y = y_next
            if change <= scale:
                return (y,)
        raise NotConverged(
            f"backward_euler: the fixed-point iteration of step {n + 1} (t = {end.t:.6g}) did not converge in "
            f"{self.max_iterations} iterations (last change {change:.3g}, tolerance {scale:.3g}); h times the rate's "
            "Lipschitz constant must be below 1: use more steps; and the rate must be deterministic (dropout in "
            "train mode draws new masks at every evaluation, so the iteration never settles)"
        )

    def __repr__(self) -> str:
        return f"BackwardEuler(rtol={self.rtol}, atol={self.atol}, max_iterations={self.max_iterations})"


class NotConverged(RuntimeError):
    """An implicit step's iteration did not converge."""

"""Adaptive stepping: tolerance, breakpoints, statistics and bad input."""

import math
from fractions import Fraction

import pytest
import torch

from contdepth.solvers import MaxStepsExceeded, integrate_adaptive

from helpers import X0, exact, field


@pytest.mark.parametrize("scheme", ["dopri5", "bosh3"])
@pytest.mark.parametrize("rtol", [1e-4, 1e-7])
def test_meets_tolerance_on_known_solution(scheme, rtol):
    # Error control is local (per step); the global relative error accumulates over
    # the 2-unit interval to within a small multiple of rtol (scipy's RK23 lands at
    # 7.2 rtol on this problem at rtol=1e-4), and falls as the tolerance is tightened.
    def relative_error(state):
        return float(((state - exact(2.0)).abs() / exact(2.0).abs()).max())

    solution = integrate_adaptive(field, X0, scheme=scheme, rtol=rtol, atol=rtol * 1e-2, t1=2.0)
    state, stats = solution.state, solution.stats
    assert relative_error(state) < 20 * rtol
    assert stats.n_steps >= 1 and stats.step_ends[-1] == 2.0
    tight = integrate_adaptive(field, X0, scheme=scheme, rtol=rtol / 100, atol=rtol * 1e-4, t1=2.0)
    tighter_state, tighter = tight.state, tight.stats
    assert tighter.n_steps > stats.n_steps
    assert relative_error(tighter_state) < relative_error(state) / 10


def test_statistics_count_every_evaluation():
    calls = []

    def f(t, x):
        calls.append(t)
        return field(t, x)

    solution = integrate_adaptive(f, X0, rtol=1e-6, atol=1e-9, breakpoints=[0.5], return_path=True)
    path, stats = solution.ys, solution.stats
    assert solution.ts == (0.0, *stats.step_ends)
    assert stats.n_evaluations == len(calls)
    assert path.shape == (stats.n_steps + 1, 2)
    assert len(stats.step_ends) == stats.n_steps


def test_steps_end_exactly_on_breakpoints_and_never_cross_them():
    bps = [0.3, Fraction(1, 7), 0.8]
    calls = []

    def f(t, x):
        calls.append(t)
        return field(t, x)

    stats = integrate_adaptive(f, X0, rtol=1e-3, atol=1e-6, breakpoints=bps).stats
    for bp in (0.3, float(Fraction(1, 7)), 0.8):
        assert bp in stats.step_ends
    starts = (0.0, *stats.step_ends[:-1])
    for a, b in zip(starts, stats.step_ends):
        assert not any(a < float(bp) < b for bp in bps)


def test_discontinuous_field_is_integrated_exactly_with_its_breakpoint():
    # x' = 1 before t = 0.3 and -2 from then on (right-continuous): x(1) = 0.3 - 1.4.
    def f(t, x):
        return torch.full_like(x, 1.0 if t < 0.3 else -2.0)

    x0 = torch.zeros(1, dtype=torch.float64)
    solution = integrate_adaptive(f, x0, rtol=1e-10, atol=1e-12, breakpoints=[0.3])
    state, stats = solution.state, solution.stats
    assert abs(float(state) - (0.3 - 1.4)) < 1e-12
    assert stats.n_rejected == 0
    blind = integrate_adaptive(f, x0, rtol=1e-10, atol=1e-12).stats
    assert blind.n_steps + blind.n_rejected > stats.n_steps + stats.n_rejected


def test_max_steps_raises_a_clear_error():
    with pytest.raises(MaxStepsExceeded, match="max_steps: 3 steps attempted"):
        integrate_adaptive(field, X0, rtol=1e-12, atol=1e-14, max_steps=3)


def test_is_differentiable():
    x0 = X0.clone().requires_grad_()
    state = integrate_adaptive(field, x0, rtol=1e-8, atol=1e-10).state
    state[0].backward()
    # d x1(1) / d x1(0) = exp(sin 1)
    assert abs(float(x0.grad[0]) - math.exp(math.sin(1.0))) < 1e-6


@pytest.mark.parametrize("kwargs,match", [
    (dict(scheme="rk4", rtol=1e-3, atol=1e-3), "no error estimate"),
    (dict(rtol=-1.0, atol=1e-3), "rtol"),
    (dict(rtol=0, atol=0), "rtol"),
    (dict(rtol=1e-3, atol=1e-3, t1=-1.0), "t1"),
    (dict(rtol=1e-3, atol=1e-3, breakpoints=[2.0]), "breakpoints"),
    (dict(rtol=1e-3, atol=1e-3, max_steps=0), "max_steps"),
    (dict(scheme="nope", rtol=1e-3, atol=1e-3), "unknown scheme"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        integrate_adaptive(field, X0, **kwargs)

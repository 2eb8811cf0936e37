"""Backward Euler and PolyNet's truncated Neumann series of it (Lu et al. 2018, Table 1)."""

import numpy as np
import pytest
import torch
from torch import nn

import contdepth as cd
from contdepth.solvers import BackwardEuler, NeumannSeries, NotConverged, integrate

A = torch.tensor([[-1.0, 0.5], [-0.5, -1.0]], dtype=torch.float64)
X0 = torch.tensor([1.0, 2.0], dtype=torch.float64)


def linear(t, x):  # x' = (1 + t) A x, linear in x: the Neumann series is exact there
    return (1 + t) * (A @ x)


def exact(t):
    return torch.linalg.matrix_exp(A * (t + t * t / 2)) @ X0


@pytest.mark.parametrize("name", ["polynet", "backward_euler"])
def test_measured_order_is_one_on_a_linear_ode(name):
    steps = (16, 32, 64, 128)
    errors = [float((integrate(linear, X0, scheme=name, n_steps=n).state - exact(1.0)).norm()) for n in steps]
    assert abs(-np.polyfit(np.log(steps), np.log(errors), 1)[0] - 1) < 0.1


def test_polynet_is_the_poly2_unit_and_more_terms_approach_backward_euler():
    h = 0.25
    F = h * A  # t = 0 on the first step
    poly2 = integrate(linear, X0, scheme="polynet", n_steps=4, return_path=True).ys[1]
    torch.testing.assert_close(poly2, X0 + F @ X0 + F @ F @ X0, rtol=0, atol=1e-15)
    resolvent = torch.linalg.solve(torch.eye(2, dtype=torch.float64) - F, X0)
    many = integrate(linear, X0, scheme=NeumannSeries(40), n_steps=4, return_path=True).ys[1]
    torch.testing.assert_close(many, resolvent, rtol=0, atol=1e-12)  # the series of (I - F)^-1
    assert NeumannSeries(3).name == "neumann3" and cd.get_scheme("polynet").terms == 2


def test_backward_euler_solves_the_implicit_equation():
    h = 0.25
    t1 = 0.25
    step = integrate(linear, X0, scheme=BackwardEuler(rtol=1e-13, atol=1e-15), n_steps=4, return_path=True).ys[1]
    implicit = torch.linalg.solve(torch.eye(2, dtype=torch.float64) - h * (1 + t1) * A, X0)
    torch.testing.assert_close(step, implicit, rtol=0, atol=1e-13)


def test_backward_euler_counts_its_iterations_and_reports_divergence():
    calls = []

    def f(t, x):
        calls.append(t)
        return linear(t, x)

    stats = integrate(f, X0, scheme="backward_euler", n_steps=4).stats
    assert stats.n_evaluations == len(calls) > 8  # a predictor and several corrector iterations per step
    with pytest.raises(NotConverged, match=r"^backward_euler: the fixed-point iteration of step 1 .* use more steps"):
        integrate(lambda t, x: -50.0 * x, X0, scheme="backward_euler", n_steps=1)
    for kwargs, match in [(dict(rtol=0.0, atol=0.0), "rtol"), (dict(max_iterations=0), "max_iterations"),
                          (dict(rtol=-1.0), "rtol")]:
        with pytest.raises(ValueError, match=match):
            BackwardEuler(**kwargs)
    with pytest.raises(ValueError, match="terms"):
        NeumannSeries(0)


def test_gradients_flow_through_both_schemes():
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    for name in ("polynet", "backward_euler"):
        assert torch.autograd.gradcheck(
            lambda w: integrate(lambda t, x: -w * x, X0, scheme=BackwardEuler(rtol=1e-14, atol=1e-16)
                                if name == "backward_euler" else name, n_steps=3).state, (w,))


@pytest.mark.parametrize("name", ["polynet", "backward_euler"])
def test_a_continuous_block_manifests_with_them(name):
    torch.manual_seed(0)
    # no bias: f(t, 0) = 0, where the Neumann series is consistent (see NeumannSeries)
    block = cd.ContinuousBlock(nn.Sequential(nn.Linear(4, 4, bias=False), nn.Tanh()), n_basis=2,
                               scheme="rk4").double()
    x = torch.randn(3, 4, dtype=torch.float64)
    reference = block(x)
    with block.manifest(name, 64):
        close = block(x)
    assert (close - reference).abs().max() < 0.05  # both first order, towards the same ODE for a tanh rate

"""Fixed-grid integration: convergence orders, agreement with torchdiffeq, autograd."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import contdepth as cd
from contdepth.solvers import LMResNetScheme, available_schemes, get_scheme, integrate
from contdepth.solvers import registry as scheme_registry
from helpers import X0, exact, field

T1 = 1.0

def fitted_order(steps, errors):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


# Step counts in the asymptotic range and well above round-off for each order.
STEPS = {1: (16, 32, 64, 128), 2: (16, 32, 64, 128), 3: (16, 32, 64, 128), 4: (16, 32, 64, 128),
         5: (16, 32, 64)}


@pytest.mark.parametrize("name", ["euler", "midpoint", "heun", "ralston", "kutta3", "ssprk3", "rk4", "rk38",
                                  "bosh3", "dopri5", "ab2", "ab3", "ab4"])
def test_measured_convergence_order(name):
    order = get_scheme(name).order
    steps = STEPS[order]
    errors = [float((integrate(field, X0, scheme=name, n_steps=n, t1=T1).state - exact(T1)).norm()) for n in steps]
    assert min(errors) > 1e-13, "errors must stay above round-off for the fit to mean anything"
    assert abs(fitted_order(steps, errors) - order) < 0.25


def test_lm_resnet_scheme_with_k_zero_is_euler_and_converges_to_scaled_ode_otherwise():
    x_euler = integrate(field, X0, scheme="euler", n_steps=20, t1=T1).state
    x_lm = integrate(field, X0, scheme=LMResNetScheme(k=0.0), n_steps=20, t1=T1).state
    torch.testing.assert_close(x_lm, x_euler, rtol=0, atol=1e-14)
    # With k != 0 it integrates (1 + k) x' = f, at first order.
    k = -0.3
    scaled = lambda t, x: field(t, x) / (1 + k)  # noqa: E731
    reference = integrate(scaled, X0, scheme="dopri5", n_steps=64, t1=T1).state
    steps = (64, 128, 256, 512)
    errors = [float((integrate(field, X0, scheme=LMResNetScheme(k), n_steps=n, t1=T1).state - reference).norm())
              for n in steps]
    assert abs(fitted_order(steps, errors) - 1) < 0.25


def test_lm_resnet_scheme_is_differentiable_in_k():
    k = torch.tensor(-0.05, dtype=torch.float64, requires_grad=True)
    out = integrate(lambda t, x: torch.tanh(x), X0, scheme=LMResNetScheme(k), n_steps=5).state
    out.sum().backward()
    assert k.grad is not None and torch.isfinite(k.grad)


def test_lm_resnet_per_step_k_length_is_checked():
    with pytest.raises(ValueError, match="k:"):
        integrate(field, X0, scheme=LMResNetScheme([0.1, 0.2]), n_steps=3)


def _random_mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 6)).double()


@pytest.mark.parametrize("ours,theirs", [("euler", "euler"), ("midpoint", "midpoint"), ("rk38", "rk4")])
@pytest.mark.parametrize("n_steps", [1, 7])
def test_fixed_grid_matches_torchdiffeq(ours, theirs, n_steps):
    torchdiffeq = pytest.importorskip("torchdiffeq", reason="torchdiffeq is a dev dependency")
    net = _random_mlp()
    x0 = torch.randn(4, 6, dtype=torch.float64)
    grid = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
    theirs_path = torchdiffeq.odeint(lambda t, x: net(x), x0, grid, method=theirs)
    solution = integrate(lambda t, x: net(x), x0, scheme=ours, n_steps=n_steps, return_path=True)
    state, path = solution.state, solution.ys
    torch.testing.assert_close(path, theirs_path, rtol=0, atol=1e-10)
    torch.testing.assert_close(state, theirs_path[-1], rtol=0, atol=1e-10)


def test_solution_path_and_stats():
    solution = integrate(field, X0, scheme="rk4", n_steps=5, return_path=True)
    state, path, stats = solution.state, solution.ys, solution.stats
    assert solution.ts == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert path.shape == (6, 2)
    torch.testing.assert_close(path[0], X0)
    torch.testing.assert_close(path[-1], state)
    assert stats.n_steps == 5 and stats.n_evaluations == 20 and stats.n_rejected == 0
    assert stats.step_ends[-1] == 1.0
    stats = integrate(field, X0, scheme="ab3", n_steps=10).stats
    assert stats.n_evaluations == 2 * 3 + 8  # two kutta3 starter steps, then one per step


def test_counted_evaluations_match_actual_calls():
    for name in available_schemes():
        calls = []

        def f(t, x):
            calls.append(t)
            return -x

        split = "term" in get_scheme(name).term_needs  # a splitting scheme takes the field as its terms
        stats = integrate((f, f) if split else f, X0, scheme=name, n_steps=6).stats
        assert stats.n_evaluations == len(calls), name


def test_any_shape_and_float32():
    x0 = torch.randn(3, 4, 5, 5)
    out = integrate(lambda t, x: -x, x0, scheme="rk4", n_steps=20).state
    assert out.dtype == torch.float32 and out.shape == x0.shape
    torch.testing.assert_close(out, x0 * math.exp(-1), rtol=1e-4, atol=1e-6)


def test_backward_integration():
    out = integrate(lambda t, x: x, X0, scheme="rk4", n_steps=50, t0=1.0, t1=0.0).state
    torch.testing.assert_close(out, X0 * math.exp(-1), rtol=1e-8, atol=0)


def test_gradcheck_integrate():
    net = _random_mlp()
    x0 = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    w = net[0].weight

    def run(x, weight):
        def f(t, y):
            return net[2](torch.tanh(nn.functional.linear(y, weight, net[0].bias))) * math.cos(t)

        return integrate(f, x, scheme="rk4", n_steps=3).state

    assert torch.autograd.gradcheck(run, (x0, w.detach().clone().requires_grad_()))


@pytest.mark.parametrize("scheme", ["rk4", "ab3", "ab4", LMResNetScheme(-0.2)])
def test_checkpoint_gives_identical_values_and_gradients(scheme):
    net = _random_mlp()
    x0 = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    grads = []
    for ckpt in (False, True):
        net.zero_grad()
        x0.grad = None
        out = integrate(lambda t, x: net(x), x0, scheme=scheme, n_steps=4, checkpoint=ckpt).state
        out.square().sum().backward()
        grads.append((out.detach(), x0.grad.clone(), net[0].weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_user_registered_tableau_is_usable_by_name():
    with scheme_registry.SCHEMES.kept():  # other tests never see it
        tab = cd.ButcherTableau("my_ralston3", c=[0, "1/2", "3/4"], a=[[], ["1/2"], [0, "3/4"]],
                                b=["2/9", "1/3", "4/9"], reference="Ralston (1962), third order")
        cd.register_scheme(tab)
        assert tab.order == 3
        steps = STEPS[3]
        errors = [float((integrate(field, X0, scheme="my_ralston3", n_steps=n, t1=T1).state - exact(T1)).norm())
                  for n in steps]
        assert abs(fitted_order(steps, errors) - 3) < 0.25
        with pytest.raises(ValueError, match="already registered"):
            cd.register_scheme(tab)
        cd.register_scheme(tab, overwrite=True)
    assert "my_ralston3" not in cd.available_schemes()

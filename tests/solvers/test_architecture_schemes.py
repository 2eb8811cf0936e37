"""FractalNet's join and RevNet's coupling as schemes (Lu et al. 2018, Table 1)."""

import math

import numpy as np
import pytest
import torch

import contdepth as cd
from contdepth.solvers import FractalJoin, RevNetCoupling, integrate, reconstruct_fixed_grid, scheme_properties
from helpers import X0, exact, field


def measured_order(errors, steps):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


def test_fractalnet_has_order_two_on_an_ode_with_a_known_solution():
    steps = (8, 16, 32, 64)
    errors = [float((integrate(field, X0, scheme="fractalnet", n_steps=n).state - exact(1.0)).norm()) for n in steps]
    assert abs(measured_order(errors, steps) - 2) < 0.1


def test_fractalnet_is_the_mean_join_of_a_short_and_a_two_layer_column_and_equals_heun():
    h = 0.25
    f = lambda t, x: torch.sin(3 * t + x) * x  # noqa: E731
    one = integrate(f, X0, scheme="fractalnet", n_steps=4, return_path=True).ys[1]
    y = X0 + h * f(0.0, X0)  # the deep column's first layer
    torch.testing.assert_close(one, 0.5 * X0 + 0.5 * (y + h * f(0.25, y)), rtol=0, atol=1e-15)
    heun = integrate(f, X0, scheme="heun", n_steps=7).state
    torch.testing.assert_close(integrate(f, X0, scheme="fractalnet", n_steps=7).state, heun, rtol=1e-14, atol=1e-14)
    row = scheme_properties("fractalnet")
    assert (row.order, row.stages, row.stability_interval) == (2, 2, pytest.approx(2.0, abs=1e-6))
    assert row.error_constant == pytest.approx(scheme_properties("heun").error_constant)


# A coupled system with a known solution: X' = Y, Y' = -X (a harmonic oscillator, two halves of 2).
Z0 = torch.tensor([1.0, 0.0, 0.5, 2.0], dtype=torch.float64)


def oscillator(t, z):
    x, y = z.chunk(2)
    return torch.cat((y, -x))


def oscillator_exact(t):
    x0, y0 = Z0.chunk(2)
    return torch.cat((x0 * math.cos(t) + y0 * math.sin(t), -x0 * math.sin(t) + y0 * math.cos(t)))


def test_revnet_has_order_one_on_a_coupled_ode_with_a_known_solution():
    steps = (16, 32, 64, 128)
    scheme = RevNetCoupling(dim=0)
    errors = [float((integrate(oscillator, Z0, scheme=scheme, n_steps=n).state - oscillator_exact(1.0)).norm())
              for n in steps]
    assert abs(measured_order(errors, steps) - 1) < 0.1


def test_revnet_step_is_the_coupling_and_is_undone_exactly():
    h = 0.5
    scheme = RevNetCoupling(dim=0)
    F = lambda y: torch.tanh(2 * y) + 0.3  # noqa: E731
    G = lambda x: torch.sin(x) * 1.7  # noqa: E731

    def coupled(t, z):
        x, y = z.chunk(2)
        return torch.cat((F(y), G(x)))

    one = integrate(coupled, Z0, scheme=scheme, n_steps=2, return_path=True).ys[1]
    x, y = Z0.chunk(2)
    x1 = x + h * F(y)
    torch.testing.assert_close(one, torch.cat((x1, y + h * G(x1))), rtol=0, atol=1e-15)
    # reconstruction from the output alone, over many steps
    schedule = scheme.schedule(32)
    rate = lambda stage, z: coupled(stage.t, z)  # noqa: E731
    out = integrate(coupled, Z0, scheme=scheme, n_steps=32).state
    torch.testing.assert_close(reconstruct_fixed_grid(scheme, rate, out, schedule), Z0, rtol=0, atol=1e-13)


def test_revnet_uses_one_half_rates_when_the_rate_offers_them():
    from contdepth.solvers import Term, solve_fixed_grid

    calls = []

    class Halves(Term):  # a rate that offers each half's rate from the other half (issue 28: a typed term)
        part_count = 2

        def __call__(self, stage, z):
            calls.append("whole")
            return oscillator(stage.t, z)

        def part(self, stage, other, i):
            calls.append(i)
            return other if i == 0 else -other

    scheme = RevNetCoupling(dim=0)
    with_parts = solve_fixed_grid(scheme, Halves(), Z0, scheme.schedule(3)).state
    assert calls == [0, 1] * 3
    whole = solve_fixed_grid(scheme, lambda stage, z: Halves()(stage, z), Z0, scheme.schedule(3)).state
    assert calls[6:] == ["whole"] * 6
    torch.testing.assert_close(with_parts, whole, rtol=0, atol=0)


def test_revnet_refusals_name_the_problem():
    with pytest.raises(ValueError, match="no even size"):
        integrate(oscillator, torch.ones(3, dtype=torch.float64), scheme=RevNetCoupling(dim=0), n_steps=2)
    with pytest.raises(ValueError, match="dim"):
        RevNetCoupling(dim=-1)
    with pytest.raises(ValueError, match="not reversible.*revnet"):
        reconstruct_fixed_grid(cd.get_scheme("rk4"), lambda s, x: x, Z0, cd.get_scheme("rk4").schedule(2))
    assert cd.get_scheme("revnet").reversible and not cd.get_scheme("euler").reversible
    assert isinstance(cd.get_scheme("fractalnet"), FractalJoin)


def test_revnet_properties_row():
    row = scheme_properties("revnet")
    assert (row.order, row.stages, row.stability_interval) == (1, 2, None)
    assert "Gomez" in row.reference

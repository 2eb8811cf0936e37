"""Depth bases: exact stage semantics, refinement, projection."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from contdepth.basis import Legendre, PiecewiseConstant, PiecewiseLinear, available_bases, make_basis

SIZES = {"piecewise_constant": (1, 3, 7), "piecewise_linear": (2, 3, 7), "legendre": (1, 3, 7)}
GRID = [Fraction(k, 210) for k in range(211)] + [0.123456789, 1 / 3]


def cases():
    return [(name, n) for name in available_bases() for n in SIZES[name]]


@pytest.mark.parametrize("name,n", cases())
def test_refine_keeps_the_function_exactly(name, n):
    basis = make_basis(name, n)
    coeffs = torch.randn(n, 2, 3, dtype=torch.float64)
    fine = basis.refined()
    refined = basis.refine(coeffs)
    assert refined.shape[0] == fine.n
    for t in GRID:
        for left in (False, True):
            torch.testing.assert_close(fine.evaluate(refined, t, left=left), basis.evaluate(coeffs, t, left=left),
                                       rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,n", cases())
def test_project_undoes_refine(name, n):
    basis = make_basis(name, n)
    coeffs = torch.randn(n, 4, dtype=torch.float64)
    back = basis.refined().project(basis.refine(coeffs), n)
    torch.testing.assert_close(back, coeffs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,small,large", [
    ("piecewise_constant", 3, 12), ("piecewise_constant", 2, 6),
    ("piecewise_linear", 3, 9), ("legendre", 2, 5),
])
def test_projection_onto_nested_spaces_is_exact(name, small, large):
    coarse = make_basis(name, small)
    coeffs = torch.randn(small, 3, dtype=torch.float64)
    # Up: the function lies in the larger space, so projecting onto it changes nothing.
    up = coarse.project(coeffs, large)
    fine = make_basis(name, large)
    for t in GRID:
        torch.testing.assert_close(fine.evaluate(up, t), coarse.evaluate(coeffs, t), rtol=0, atol=1e-12)
    # Down: and projecting back recovers the coefficients.
    torch.testing.assert_close(fine.project(up, small), coeffs, rtol=0, atol=1e-12)


def test_projection_is_the_l2_best_approximation():
    # Legendre: projecting a degree-4 polynomial onto degree 1 keeps the first two
    # coefficients (orthogonality); piecewise constant: cell averages.
    leg = Legendre(5)
    c = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(leg.project(c, 2), c[:2], rtol=0, atol=1e-12)
    pc = PiecewiseConstant(6)
    c = torch.arange(6, dtype=torch.float64)
    torch.testing.assert_close(pc.project(c, 3), torch.tensor([0.5, 2.5, 4.5], dtype=torch.float64), rtol=0, atol=1e-14)
    # A linear function onto 2 cells: the averages of the function on each cell.
    pl = PiecewiseLinear(2)  # theta(t) = t
    got = pl.project(torch.tensor([0.0, 1.0], dtype=torch.float64).view(2), 3)  # onto 3 nodes: exact
    torch.testing.assert_close(got, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), rtol=0, atol=1e-14)


def test_piecewise_constant_is_right_continuous_with_exact_left_limits():
    basis = PiecewiseConstant(7)
    coeffs = torch.arange(7, dtype=torch.float64)
    for k in range(1, 7):
        t = Fraction(k, 7)
        assert float(basis.evaluate(coeffs, t)) == k
        assert float(basis.evaluate(coeffs, t, left=True)) == k - 1
    assert float(basis.evaluate(coeffs, 0)) == 0 and float(basis.evaluate(coeffs, 1)) == 6
    assert float(basis.evaluate(coeffs, 1, left=True)) == 6 and float(basis.evaluate(coeffs, 0, left=True)) == 0
    # 16 cells: the midpoint of 8 equal steps is a breakpoint.
    assert PiecewiseConstant(16).piece_of(Fraction(3, 16)) == 3
    assert PiecewiseConstant(16).piece_of(Fraction(3, 16), left=True) == 2


def test_breakpoints():
    assert PiecewiseConstant(4).breakpoints == (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))
    assert PiecewiseLinear(3).breakpoints == (Fraction(1, 2),)
    assert Legendre(5).breakpoints == ()


def test_legendre_values_are_shifted_legendre_polynomials():
    t = np.linspace(0, 1, 11)
    vals = Legendre(4).values(t)
    x = 2 * t - 1
    np.testing.assert_allclose(vals, np.stack([np.ones_like(x), x, (3 * x**2 - 1) / 2, (5 * x**3 - 3 * x) / 2], 1),
                               atol=1e-14)


@pytest.mark.parametrize("name", ["piecewise_constant", "legendre"])
def test_bad_sizes_name_n_basis(name):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_basis"):
            make_basis(name, bad)


def test_piecewise_linear_needs_two_nodes():
    with pytest.raises(ValueError, match="n_basis.*>= 2"):
        make_basis("piecewise_linear", 1)


def test_unknown_basis_lists_the_valid_ones():
    with pytest.raises(ValueError, match="legendre, piecewise_constant, piecewise_linear"):
        make_basis("splines", 3)


def test_wrong_coefficient_shape_and_out_of_range_t():
    with pytest.raises(ValueError, match="coeffs"):
        PiecewiseConstant(3).evaluate(torch.zeros(4, 2), 0.5)
    with pytest.raises(ValueError, match="t:"):
        PiecewiseConstant(3).evaluate(torch.zeros(3, 2), 1.5)

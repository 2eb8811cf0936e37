"""Splitting schemes (issue 29): a field that is a sum of terms, advanced one term at a time.

Orders measured on ``x' = (A + B) x`` with non-commuting ``A``, ``B`` (the exact solution is the
matrix exponential), and the hand-worked step of Strang with Euler sub-steps.
"""

from __future__ import annotations

import math

import pytest
import torch

import contdepth as cd
from contdepth.solvers import get_scheme, integrate, scheme_properties

A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)  # rotation
B = torch.tensor([[-0.5, 0.0], [0.3, -1.0]], dtype=torch.float64)  # damping, not commuting with A
X0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
EXACT = torch.linalg.matrix_exp(A + B) @ X0
TERMS = (lambda t, x: A @ x, lambda t, x: B @ x)


def error(scheme: str, n: int) -> float:
    return float((integrate(TERMS, X0, scheme=scheme, n_steps=n).state - EXACT).abs().max())


@pytest.mark.parametrize("scheme, order", [("lie_trotter", 1), ("strang", 1), ("strang_midpoint", 2)])
def test_the_splitting_schemes_have_the_orders_worked_out_by_hand(scheme, order):
    errors = [error(scheme, n) for n in (32, 64, 128)]
    measured = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(m - order) < 0.1 for m in measured), measured
    assert get_scheme(scheme).order == order and scheme_properties(scheme).order == order


def test_one_strang_step_with_euler_sub_steps_is_the_product_worked_out_by_hand():
    h = 0.1
    step = integrate(TERMS, X0, scheme="strang", n_steps=1, t1=h).state
    I = torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(step, (I + h / 2 * A) @ (I + h * B) @ (I + h / 2 * A) @ X0, rtol=0, atol=1e-15)
    # its h^2 term differs from the exponential's by -(A^2 + 2 B^2) / 4: a local error O(h^2), order 1
    product = (I + h / 2 * A) @ (I + h * B) @ (I + h / 2 * A)
    taylor = I + h * (A + B) + h * h / 2 * (A + B) @ (A + B)
    torch.testing.assert_close((product - taylor) / h**2, -(A @ A + 2 * B @ B) / 4, rtol=0, atol=0.05)


def test_a_lie_trotter_step_is_the_transformer_layer_and_other_schemes_integrate_the_sum():
    h = 0.25
    x1 = X0 + h * (A @ X0)  # x <- x + A(x); x <- x + M(x)
    torch.testing.assert_close(integrate(TERMS, X0, scheme="lie_trotter", n_steps=1, t1=h).state,
                               x1 + h * (B @ x1), rtol=0, atol=1e-15)
    whole = integrate(lambda t, x: (A + B) @ x, X0, scheme="rk4", n_steps=8).state
    torch.testing.assert_close(integrate(TERMS, X0, scheme="rk4", n_steps=8).state, whole, rtol=0, atol=1e-15)


def test_a_splitting_scheme_refuses_a_field_that_is_not_given_as_its_terms_in_one_line():
    with pytest.raises(ValueError, match=r"'lie_trotter' advances a field of 2 terms one term at a time, and this "
                                         r"rate offers none"):
        integrate(lambda t, x: -x, X0, scheme="lie_trotter", n_steps=2)
    with pytest.raises(ValueError, match="offers 3"):
        integrate(TERMS + (TERMS[0],), X0, scheme="strang", n_steps=2)
    with pytest.raises(ValueError, match="the adjoint cannot run 'strang'"):
        integrate(TERMS, X0, scheme="strang", n_steps=2, gradient="adjoint")
    with pytest.raises(cd.OptionError, match="^f: a field given as terms must be a non-empty sequence"):
        integrate((), X0, scheme="rk4", n_steps=2)


def test_the_schemes_table_lists_the_splittings_with_their_evaluations_and_orders():
    rows = {r.name: r for r in cd.solvers.scheme_table()}
    assert (rows["lie_trotter"].stages, rows["strang"].stages, rows["strang_midpoint"].stages) == (2, 3, 6)
    assert rows["strang"].kind.startswith("splitting")

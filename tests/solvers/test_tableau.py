from fractions import Fraction

import pytest

from contdepth.solvers import ButcherTableau, available_schemes, get_tableau
from contdepth.solvers.tableaux import BUILTIN_TABLEAUX

EXPECTED_ORDERS = {
    "euler": 1, "midpoint": 2, "heun": 2, "ralston": 2, "kutta3": 3, "ssprk3": 3,
    "rk4": 4, "rk38": 4, "bosh3": 3, "dopri5": 5,
}


@pytest.mark.parametrize("tableau", BUILTIN_TABLEAUX, ids=lambda t: t.name)
def test_builtin_tableaux_have_their_order_and_are_registered(tableau):
    assert tableau.order == EXPECTED_ORDERS[tableau.name]
    assert tableau.name in available_schemes()
    assert get_tableau(tableau.name) is tableau
    assert tableau.reference


def test_embedded_orders_and_fsal():
    assert get_tableau("dopri5").embedded_order == 4
    assert get_tableau("bosh3").embedded_order == 2
    assert get_tableau("dopri5").fsal and get_tableau("bosh3").fsal
    assert not get_tableau("rk4").fsal and not get_tableau("rk4").is_embedded


def test_coefficients_are_exact_rationals():
    rk38 = get_tableau("rk38")
    assert rk38.c[1] == Fraction(1, 3)
    assert all(isinstance(v, Fraction) for row in rk38.a for v in row)


def test_full_square_matrix_is_accepted_as_lower_triangle():
    t = ButcherTableau("mid", c=[0, 0.5], a=[[0, 0], [0.5, 0]], b=[0, 1])
    assert t.a == ((), (Fraction(1, 2),)) and t.order == 2


def test_rows_must_sum_to_c():
    with pytest.raises(ValueError, match="rows of a must sum to c"):
        ButcherTableau("bad", c=[0, 0.5], a=[[], [0.4]], b=[0, 1])


def test_b_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to .* not 1"):
        ButcherTableau("bad", c=[0, 0.5], a=[[], [0.5]], b=[0.5, 0.6])


def test_error_weights_must_sum_to_zero():
    with pytest.raises(ValueError, match="b_error"):
        ButcherTableau("bad", c=[0, 1], a=[[], [1]], b=[0.5, 0.5], b_error=[0.5, 0.1])


def test_implicit_tableau_is_refused():
    with pytest.raises(ValueError, match="explicit"):
        ButcherTableau("implicit", c=[0.5], a=[[0.5]], b=[1])


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="c:"):
        ButcherTableau("bad", c=[0], a=[[], [1]], b=[0.5, 0.5])
    with pytest.raises(ValueError, match="a:"):
        ButcherTableau("bad", c=[0, 1], a=[[], [1, 2, 3]], b=[0.5, 0.5])


def test_mistyped_coefficient_lowers_the_computed_order():
    # rk4 with one weight perturbed (and b renormalised) is no longer 4th order.
    t = ButcherTableau("rk4-typo", c=[0, "1/2", "1/2", 1], a=[[], ["1/2"], [0, "1/2"], [0, 0, 1]],
                       b=["1/6", "1/3", "1/4", "1/4"])
    assert t.order < 4


def test_tableau_is_immutable_and_hashable():
    t = get_tableau("rk4")
    with pytest.raises(AttributeError):
        t.name = "x"  # type: ignore[misc]
    assert hash(t) == hash(get_tableau("rk4"))

"""Scheme properties against hand computations: stability interval, error constant, modified equation."""

import math
from fractions import Fraction

import pytest

from contdepth.cli import main
from contdepth.solvers import LMResNetScheme, get_tableau, scheme_properties, scheme_table


def test_euler():
    euler = scheme_properties("euler")
    assert (euler.stages, euler.order) == (1, 1)
    assert euler.stability_interval == pytest.approx(2.0, abs=1e-9)  # |1 + z| <= 1 on [-2, 0]
    assert euler.error_constant == pytest.approx(0.5)  # x+ - x - h x' = h^2/2 x''
    assert euler.modified_equation == "u' + 0.5 h u'' = f"  # Lu et al. (2018): ResNet's modified equation


def test_rk4():
    rk4 = scheme_properties("rk4")
    assert get_tableau("rk4").stability_polynomial() == tuple(Fraction(1, math.factorial(k)) for k in range(5))
    # |1 + z + z^2/2 + z^3/6 + z^4/24| = 1 at z = -2.78529... (Hairer & Wanner II, Fig. IV.2.1)
    assert rk4.stability_interval == pytest.approx(2.785293563, abs=1e-6)
    assert rk4.error_constant == pytest.approx(1.4504e-2, abs=5e-6)  # A^(5), Dormand & Prince (1980)
    assert get_tableau("dopri5").principal_error_norm() == pytest.approx(3.99e-4, abs=5e-6)


def test_ab2():
    ab2 = scheme_properties("ab2")
    # x_{n+2} - x_{n+1} = h (3/2 f_{n+1} - 1/2 f_n): C_3 = (8 - 1)/6 - (3/2)/2 = 5/12
    assert ab2.error_constant == pytest.approx(5 / 12)
    assert ab2.modified_equation == "u' + 0.4167 h^2 u''' = f"
    # zeta^2 - (1 + 3z/2) zeta + z/2 = 0 has the root -1 at z = -1
    assert ab2.stability_interval == pytest.approx(1.0, abs=1e-6)
    assert scheme_properties("ab3").stability_interval == pytest.approx(6 / 11, abs=1e-6)
    assert scheme_properties("ab4").stability_interval == pytest.approx(0.3, abs=1e-6)


@pytest.mark.parametrize("k", [-0.05, -0.3, 0.2])
def test_lm_resnet_scheme(k):
    lm = scheme_properties(LMResNetScheme(k))
    # x+ = (1-k) x + k x- + h f(x): Taylor around t_n gives (1+k) u' + (1-k) h/2 u'' = f (Lu et al. 2018)
    assert lm.modified_equation == f"{1 + k:.4g} u' + {(1 - k) / 2:.4g} h u'' = f"
    # zeta^2 - (1 - k + z) zeta - k = 0 has the root -1 at z = -(2 - 2k)
    assert lm.stability_interval == pytest.approx(2 - 2 * k, abs=1e-6)


def test_polynet_and_backward_euler():
    assert scheme_properties("polynet").stability_interval == pytest.approx(1.0, abs=1e-6)  # 1 + z + z^2 = 1 at -1
    backward = scheme_properties("backward_euler")
    assert backward.stability_interval == math.inf and backward.modified_equation == "u' - 0.5 h u'' = f"


def test_every_registered_scheme_has_a_row_and_the_command_prints_them(capsys):
    rows = scheme_table()
    assert {r.name for r in rows[:-1]} >= {"euler", "rk4", "ab2", "polynet", "backward_euler", "dopri5"}
    assert rows[-1].name == "lm_resnet (k = -0.05)"
    assert main(["schemes"]) == 0
    out = capsys.readouterr().out
    assert "rk4" in out and "2.785" in out and "0.95 u' + 0.525 h u'' = f" in out
    assert main(["schemes", "--lm-k", "nan"]) == 2
    assert "lm_k: must be a finite number > -1" in capsys.readouterr().err

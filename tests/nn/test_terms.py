"""A block whose template is a sum of terms (issue 29): splitting schemes advance one term at a time,
every other scheme integrates the sum, and everything a block does (manifest, refine, export) holds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import contdepth as cd
from contdepth.export import freeze
from contdepth.nn import Terms

X = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def block(**options) -> cd.ContinuousBlock:
    torch.manual_seed(0)
    template = Terms(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4)))
    return cd.ContinuousBlock(template, **{"n_basis": 3, "scheme": "lie_trotter", **options}).double().eval()


def layer_by_hand(b: cd.ContinuousBlock, x: torch.Tensor) -> torch.Tensor:
    """Each cell a transformer-style layer: ``x <- x + h a(x); x <- x + h m(x)`` with the cell's weights."""
    h = 1 / b.n_basis
    for k in range(b.n_basis):
        theta = {name: c[k] for name, c in b.coefficient_items()}
        w = lambda name: theta[f"modules_of_terms.{name}"]  # noqa: E731
        x = x + h * torch.tanh(x @ w("0.0.weight").T + w("0.0.bias"))
        mean, var = b.state.get("modules_of_terms.1.0.running_mean")[k], b.state.get("modules_of_terms.1.0.running_var")[k]
        normed = (x - mean) / torch.sqrt(var + 1e-5) * w("1.0.weight") + w("1.0.bias")
        x = x + h * (normed @ w("1.1.weight").T + w("1.1.bias"))
    return x


def test_lie_trotter_on_a_terms_block_is_a_stack_of_transformer_style_layers():
    b = block()
    with torch.no_grad():
        torch.testing.assert_close(b(X), layer_by_hand(b, X), rtol=0, atol=1e-13)


def test_other_schemes_integrate_the_sum_and_the_splittings_converge_to_it():
    b = block()
    with torch.no_grad():
        limit = b.manifest("rk4", 192).value(X)  # steps on the 3 cells' breakpoints
        b.manifest("lie_trotter", 3)
        gaps = [float((b.manifest("strang_midpoint", n).value(X) - limit).abs().max()) for n in (6, 12, 24)]
    assert gaps[0] / gaps[1] > 3 and gaps[1] / gaps[2] > 3  # second order on a piecewise-constant theta


def test_refinement_export_and_training_keep_working_on_a_terms_block():
    b = block()
    with torch.no_grad():
        before = b.manifest("lie_trotter", 6).value(X)  # the manifestation refine() moves to
        b.manifest("lie_trotter", 3)
        b.refine()
        torch.testing.assert_close(b(X), before, rtol=0, atol=1e-12)  # the same function, the same graph
        torch.testing.assert_close(freeze(b)(X), before, rtol=0, atol=1e-12)  # a static export of the splitting
    b.train()
    b(X).square().sum().backward()  # the batch statistics of term 1 are sampled by term 1's evaluations only
    assert all(c.grad is not None for _, c in b.coefficient_items())


def test_a_terms_template_is_checked_in_one_line():
    with pytest.raises(TypeError, match="one or more modules"):
        Terms()
    mlp = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="separate instances"):
        Terms(mlp, mlp)
    with pytest.raises(ValueError, match="offers none"):  # a splitting scheme on a template without terms
        cd.ContinuousBlock(nn.Linear(4, 4), scheme="lie_trotter").double()(X)

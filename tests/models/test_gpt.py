"""The byte-level GPT (issue 29): the discrete stack equals its continuous form under lie_trotter, exactly."""

from __future__ import annotations

import pytest
import torch

import contdepth as cd
from contdepth.models.gpt import GPT, continuous_from_layers

TOKENS = torch.randint(0, 256, (3, 10), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("depth", [None, 1.0, 7.5])
def test_a_discrete_gpt_equals_its_continuous_form_with_one_cell_per_layer(depth):
    torch.manual_seed(0)
    discrete = GPT(width=16, heads=2, layers=3, context=12).double().eval()
    continuous = continuous_from_layers(discrete, depth=depth)
    assert continuous.layers.t1 == (3.0 if depth is None else depth)
    if depth is None:  # the depth interval [0, layers]: a step of size 1, the weights copied as they are
        proj = dict(continuous.layers.coefficient_items())["modules_of_terms.0.proj.weight"]
        assert torch.equal(proj[1], discrete.layers[1].attention.proj.weight)
    assert continuous.continuous and continuous.layers.n_basis == 3 and continuous.layers.scheme.name == "lie_trotter"
    with torch.no_grad():
        torch.testing.assert_close(continuous(TOKENS), discrete(TOKENS), rtol=0, atol=1e-12)
        # and it manifests: a second-order splitting and rk4 of the sum, any number of steps
        for scheme, steps in (("strang_midpoint", 6), ("rk4", 3)):
            with cd.nn.manifest(continuous, scheme, steps):
                assert torch.isfinite(continuous(TOKENS)).all()
    assert continuous.head.weight is continuous.embed.weight  # tied, as the discrete model's


def test_depth_belongs_to_the_continuous_form():
    with pytest.raises(ValueError, match="^depth: the length of the depth interval"):
        GPT(width=16, heads=2, layers=2, context=8, depth=2.0)
    with pytest.raises(ValueError, match="^depth: must be"):
        GPT(width=16, heads=2, layers=2, context=8, continuous=True, depth=0)


def test_a_continuous_gpt_trains_and_its_tokens_only_see_their_past():
    torch.manual_seed(0)
    model = GPT(width=16, heads=4, layers=2, context=10, continuous=True, basis="piecewise_linear")
    logits = model(TOKENS)
    assert logits.shape == (3, 10, 256)
    torch.nn.functional.cross_entropy(logits.reshape(-1, 256), TOKENS.reshape(-1)).backward()
    assert all(c.grad is not None for _, c in model.layers.coefficient_items())
    changed = TOKENS.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 256
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(changed)[:, :7], model(TOKENS)[:, :7])  # causal: the past is unchanged


def test_bad_options_and_inputs_are_one_line():
    with pytest.raises(ValueError, match="heads: the width"):
        GPT(width=10, heads=3)
    with pytest.raises(ValueError, match="context of 4"):
        GPT(width=8, heads=2, layers=1, context=4)(TOKENS)
    with pytest.raises(ValueError, match="tokens: expected"):
        GPT(width=8, heads=2, layers=1)(torch.zeros(2, 3))


def test_a_continuous_gpt_draws_its_cells_as_the_discrete_layers_are_drawn():
    """Each cell is a fresh draw of the terms' own reset_parameters (N(0, 0.02), zero biases), not torch's
    default Linear init of their children, which used to overwrite it."""
    torch.manual_seed(0)
    coefficients = dict(GPT(width=64, heads=4, layers=4, context=8, continuous=True).layers.coefficient_items())
    for term, inner in (("0", "qkv"), ("0", "proj"), ("1", "fc"), ("1", "proj")):
        weight = coefficients[f"modules_of_terms.{term}.{inner}.weight"].detach()
        assert abs(float(weight.std()) - 0.02) < 0.002, (term, inner)
        assert not bool(coefficients[f"modules_of_terms.{term}.{inner}.bias"].any())
        assert not torch.equal(weight[0], weight[1])  # independent draws per cell

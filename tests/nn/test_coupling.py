"""A ContinuousBlock with RevNet's coupled template: manifestations, exact inverse, normalisation state."""

import pytest
import torch
from torch import nn

import contdepth as cd


def half_rate(channels):
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))


def coupled_block(scheme="revnet", n_basis=2, basis="piecewise_linear"):
    torch.manual_seed(0)
    return cd.ContinuousBlock(cd.Coupling(half_rate(2), half_rate(2)), basis=basis, n_basis=n_basis,
                              scheme=scheme, n_steps=4).double()


def test_the_revnet_block_integrates_the_coupled_equation_every_scheme_integrates():
    block = coupled_block().eval()
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    with block.manifest("rk4", 64):
        reference = block(x)
    errors = []
    for steps in (16, 32, 64):
        with block.manifest("revnet", steps):
            errors.append(float((block(x) - reference).detach().abs().max()))
    assert errors[0] > errors[1] > errors[2] and errors[1] / errors[2] == pytest.approx(2, rel=0.25)  # order 1


@pytest.mark.parametrize("training", [False, True])
def test_the_input_is_reconstructed_from_the_output_to_round_off(training):
    block = coupled_block().train(training)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)
        state = {k: v.clone() for k, v in block.state_dict().items()}
        back = block.reconstruct_input(out)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-12)
    assert all(torch.equal(v, block.state_dict()[k]) for k, v in state.items())  # nothing sampled


def test_one_half_evaluations_update_only_their_halfs_statistics_by_the_full_momentum():
    block = coupled_block(n_basis=1, basis="piecewise_constant").train()
    with block.manifest("revnet", 1):
        x = torch.randn(6, 4, 5, 5, dtype=torch.float64)
        block(x)
    x_half, y_half = x.chunk(2, dim=1)
    # the only step: F's norm saw Y, G's norm saw X + h F(Y); momentum 0.1 from a zero mean
    f_mean = block.state.get("f.0.running_mean")[0]
    torch.testing.assert_close(f_mean, 0.1 * y_half.mean(dim=(0, 2, 3)), rtol=1e-12, atol=1e-14)
    # G's norm saw X + h F(Y) (h = 1): one sample at the full momentum, not half of one
    with torch.no_grad():
        f = cd.freeze(block).units[0].f  # F with cell 0's weights; in training mode: the batch's statistics
        f.train()
        g_input = x_half + f(y_half)
    g_mean = block.state.get("g.0.running_mean")[0]
    torch.testing.assert_close(g_mean, 0.1 * g_input.mean(dim=(0, 2, 3)), rtol=1e-12, atol=1e-14)


def test_any_template_without_halves_still_runs_the_revnet_scheme_through_the_whole_rate():
    torch.manual_seed(0)
    block = cd.ContinuousBlock(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), n_basis=2, scheme="revnet").double()
    x = torch.randn(3, 4, dtype=torch.float64)
    out = block(x)
    with block.manifest("euler", 256):
        assert float((block(x) - out).detach().abs().max()) < 0.2  # a first-order scheme of the same equation
    with pytest.raises(ValueError, match="Coupling input.*no even size"):
        cd.Coupling(nn.Identity(), nn.Identity())(torch.ones(1, 3, 2))


def test_a_coupling_and_its_scheme_agree_on_the_dimension_they_split():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="F and G must be two modules"):
        m = half_rate(2)
        cd.Coupling(m, m)
    with pytest.raises(ValueError, match="dim: the dimension split"):
        cd.Coupling(half_rate(2), half_rate(2), dim=-1)
    lin = lambda: nn.Linear(4, 4)  # noqa: E731  (acts on the last dimension, whatever the split)
    block = cd.ContinuousBlock(cd.Coupling(lin(), lin(), dim=1), n_basis=1, scheme="revnet", n_steps=64).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        revnet = block(x)
        with block.manifest("rk4", 64):
            rk4 = block(x)
    assert float((revnet - rk4).abs().max()) < 0.05  # the same coupled equation: the split of dimension 1
    with block.manifest(cd.RevNetCoupling(dim=2), 4), pytest.raises(ValueError, match="the rate's template splits dimension 1"):
        block(x)


def test_reconstruct_input_needs_a_template_with_halves():
    block = cd.ContinuousBlock(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), n_basis=2, scheme="revnet").double()
    with pytest.raises(ValueError, match="reconstruct_input: 'revnet' undoes a step exactly only"):
        block.reconstruct_input(torch.randn(2, 4, dtype=torch.float64))

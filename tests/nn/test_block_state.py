"""Depth-dependent normalisation state (BatchNorm running statistics in the basis)."""

import copy

import pytest
import torch
from torch import nn

from contdepth import ContinuousBlock


def bn_template(channels=3):
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))


X = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def test_state_is_a_buffer_per_basis_function_and_starts_at_the_template_values():
    b = ContinuousBlock(bn_template(), n_basis=4).double()
    state = dict(b.state.named_buffers())
    assert state["0.running_mean"].shape == (4, 3) and torch.all(state["0.running_mean"] == 0)
    assert torch.all(state["0.running_var"] == 1)
    assert state["0.num_batches_tracked"].shape == ()
    assert "state.0.running_mean" in b.state_dict()
    assert not any("running" in name for name, _ in b.named_parameters())


def test_piecewise_constant_training_matches_hand_loop_with_a_batchnorm_per_cell():
    b = ContinuousBlock(bn_template(), n_basis=3, scheme="euler").double().train()
    cells = []
    for k in range(3):
        m = bn_template().double().train()
        m.load_state_dict({name: c[k] for name, c in b.coefficient_items()}, strict=False)
        cells.append(m)
    x = X
    for m in cells:
        x = x + m(x) / 3
    torch.testing.assert_close(b(X), x, rtol=0, atol=1e-12)
    for k, m in enumerate(cells):
        torch.testing.assert_close(b.state.get("0.running_mean")[k], m[0].running_mean, rtol=0, atol=1e-14)
        torch.testing.assert_close(b.state.get("0.running_var")[k], m[0].running_var, rtol=0, atol=1e-14)


def test_several_samples_in_a_cell_update_it_once_with_their_average():
    b = ContinuousBlock(bn_template(), n_basis=1, scheme="euler", n_steps=2).double().train()
    m = bn_template().double().train()
    m.load_state_dict({name: c[0] for name, c in b.coefficient_items()}, strict=False)
    means = []
    x = X
    for _ in range(2):
        means.append(x.mean(dim=(0, 2, 3)))
        x = x + m(x) / 2
    b(X)
    torch.testing.assert_close(b.state.get("0.running_mean")[0], 0.1 * (means[0] + means[1]) / 2,
                               rtol=0, atol=1e-14)


def test_continuous_basis_state_interpolates_the_samples_when_it_can():
    # piecewise linear, 3 nodes, euler with 3 steps: samples at t = 0, 1/3, 2/3 (3 samples, 3 unknowns).
    b = ContinuousBlock(bn_template(), basis="piecewise_linear", n_basis=3, scheme="euler", n_steps=3).double()
    b.train()
    means, x = [], X
    ref = copy.deepcopy(b).eval()  # to evaluate theta at the stages, the weights are the same
    for i in range(3):
        means.append(x.mean(dim=(0, 2, 3)))
        theta = ref.theta(i / 3)
        m = bn_template().double().train()
        m.load_state_dict(theta, strict=False)
        x = x + m(x) / 3
    torch.testing.assert_close(b(X), x, rtol=0, atol=1e-12)
    for i in range(3):
        torch.testing.assert_close(b.basis.evaluate(b.state.get("0.running_mean"), i / 3), 0.1 * means[i],
                                   rtol=0, atol=1e-13)


@pytest.mark.parametrize("basis,n", [("piecewise_constant", 4), ("piecewise_linear", 3), ("legendre", 3)])
def test_eval_outputs_survive_refine_and_agree_across_manifestations(basis, n):
    b = ContinuousBlock(bn_template(), basis=basis, n_basis=n, scheme="rk4").double()
    b.train()
    for _ in range(5):
        b(X)
    b.eval()
    with torch.no_grad():
        before = b(X)
        b.refine()
        with b.manifest(n_steps=n):
            torch.testing.assert_close(b(X), before, rtol=0, atol=1e-10)
        fine = b(X)
    assert (fine - before).abs().max() < 0.05  # the same function, a finer grid


def test_eval_does_not_touch_state_and_train_mode_reaches_the_template():
    template = nn.Sequential(nn.Dropout(0.5), bn_template())
    b = ContinuousBlock(template, n_basis=2).double()
    b.eval()
    before = b.state.get("1.0.running_mean").clone()
    out1, out2 = b(X), b(X)
    torch.testing.assert_close(out1, out2)  # dropout off in eval
    torch.testing.assert_close(b.state.get("1.0.running_mean"), before)
    b.train()
    assert not torch.allclose(b(X), b(X))  # dropout on in training
    assert not torch.allclose(b.state.get("1.0.running_mean"), before)


def test_checkpoint_recomputation_does_not_update_state_twice():
    a = ContinuousBlock(bn_template(), basis="piecewise_linear", n_basis=3, scheme="rk4").double().train()
    b = copy.deepcopy(a)
    b.checkpoint = True
    for m in (a, b):
        m(X).sum().backward()
    for (name, s), (_, t) in zip(a.state_items(), b.state_items()):
        torch.testing.assert_close(s, t, rtol=0, atol=1e-14)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-10)

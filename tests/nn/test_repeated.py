"""Repeated templates: a normalisation of its own per application of a composing scheme (PolyNet)."""

import pytest
import torch
from torch import nn

import contdepth as cd
from contdepth.nn import is_repeated


class Twice(nn.Module):
    """A user's repeated template: one linear map shared, a BatchNorm per application."""

    applications = ("norms.0", "norms.1")

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.norms = nn.ModuleList([nn.BatchNorm1d(3), nn.BatchNorm1d(3)])

    def forward(self, x):
        return self.application(0, x)

    def application(self, j, x):
        return self.linear(self.norms[j](x))


def test_the_protocol():
    assert is_repeated(Twice())
    plain = nn.Linear(3, 3)
    assert not is_repeated(plain)
    plain.applications, plain.application = (), lambda j, x: x
    assert not is_repeated(plain)  # no application named


def test_each_application_samples_only_its_own_norm():
    torch.manual_seed(0)
    block = cd.ContinuousBlock(Twice(), n_basis=1, scheme="polynet").double().train()
    x = torch.randn(64, 3, dtype=torch.float64) * 5 + 2
    with torch.no_grad():
        block(x)
    state = dict(block.state_items())
    # application 0 saw x alone: momentum 0.1 from 0; had F(x) been mixed in, it would be an average of the two
    torch.testing.assert_close(state["norms.0.running_mean"][0], 0.1 * x.mean(0))
    assert not torch.allclose(state["norms.1.running_mean"][0], 0.1 * x.mean(0), atol=0.05)


def test_a_plain_call_is_application_zero():
    torch.manual_seed(0)
    block = cd.ContinuousBlock(Twice(), n_basis=1, scheme="euler").double().eval()
    x = torch.randn(4, 3, dtype=torch.float64)
    theta = block.theta(0.0)
    with torch.no_grad():
        normed = x / (1 + 1e-5) ** 0.5 * theta["norms.0.weight"] + theta["norms.0.bias"]  # fresh statistics: 0, 1
        expected = x + torch.nn.functional.linear(normed, theta["linear.weight"], theta["linear.bias"])
        torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("scheme", ["euler", "rk4"])
def test_non_composing_schemes_train_a_repeated_template(scheme):
    block = cd.ContinuousBlock(Twice(), n_basis=2, scheme=scheme).train()
    block(torch.randn(8, 3))
    state = dict(block.state_items())
    assert torch.count_nonzero(state["norms.1.running_mean"]) == 0  # never applied: untouched


class SharedOutside(Twice):
    """A repeated template that also has one norm every application would update."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.BatchNorm1d(3)

    def application(self, j, x):
        return super().application(j, self.pre(x))


def test_state_outside_every_application_is_refused_in_training_only():
    block = cd.ContinuousBlock(SharedOutside(), n_basis=1, scheme="polynet")
    x = torch.randn(8, 3)
    with pytest.raises(ValueError, match=r"the statistics pre.running_mean, pre.running_var would be updated"):
        block.train()(x)
    with torch.no_grad():
        block.eval()(x)
    cd.ContinuousBlock(SharedOutside(), n_basis=1, scheme="rk4").train()(x)  # no composing: application 0 only

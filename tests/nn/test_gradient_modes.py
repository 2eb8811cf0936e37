"""A ContinuousBlock's gradient modes: reversible and adjoint beside backprop and checkpointing."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import contdepth as cd
from contdepth.nn import GCNRate


def bn_template(channels=4):
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))


X = torch.randn(6, 4, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def grads_of(block, x, *context):
    x = x.clone().requires_grad_()
    out = block(x, *context)
    return torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum(),
                               [x, *block.parameters()])


def relative(a, b):
    """Largest difference over the largest gradient entry (a bias whose gradient is ~0 has no relative scale)."""
    return max(float((p - q).abs().max()) for p, q in zip(a, b)) / max(float(q.abs().max()) for q in b)


@pytest.mark.parametrize("scheme", ["reversible_heun", "alf"])
@pytest.mark.parametrize("basis", ["piecewise_constant", "piecewise_linear"])
def test_reversible_block_with_batchnorm_matches_backprop_and_updates_the_state_once(scheme, basis):
    torch.manual_seed(0)
    a = cd.ContinuousBlock(bn_template(), basis=basis, n_basis=3, scheme=scheme, n_steps=6).double().train()
    b = copy.deepcopy(a)
    b.gradient = "reversible"
    assert relative(grads_of(b, X), grads_of(a, X)) <= 1e-9
    assert b.reconstruction_error is not None and b.reconstruction_error < 1e-12
    for (_, s), (_, t) in zip(a.state_items(), b.state_items()):
        torch.testing.assert_close(t, s, rtol=0, atol=1e-14)  # the running statistics: one update
    assert a.shared_buffers()["0.num_batches_tracked"] == b.shared_buffers()["0.num_batches_tracked"]


def test_reversible_revnet_block_with_coupling_and_a_graph_context():
    torch.manual_seed(0)
    coupled = cd.ContinuousBlock(cd.Coupling(bn_template(2), bn_template(2)), n_basis=2, scheme="revnet",
                                 n_steps=4).double().train()
    other = copy.deepcopy(coupled)
    other.gradient = "reversible"
    assert relative(grads_of(other, X), grads_of(coupled, X)) <= 1e-9
    # a rate with a context argument (a graph's adjacency), depth-varying weights
    edges = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4], [1, 0, 2, 1, 3, 2, 4, 3]])
    dense = torch.zeros(5, 5, dtype=torch.float64)
    dense[edges[0], edges[1]] = 1.0
    adjacency = (dense + torch.eye(5, dtype=torch.float64)) / 3
    graph = cd.ContinuousBlock(GCNRate(6), basis="piecewise_linear", n_basis=3, scheme="alf", n_steps=5).double()
    reversible = copy.deepcopy(graph)
    reversible.gradient = "reversible"
    h = torch.randn(5, 6, dtype=torch.float64)
    assert relative(grads_of(reversible, h, adjacency), grads_of(graph, h, adjacency)) <= 1e-9


def test_adjoint_block_converges_to_backprop_at_the_schemes_order_and_keeps_the_state():
    torch.manual_seed(0)
    template = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh())
    block = cd.ContinuousBlock(template, basis="piecewise_linear", n_basis=2, scheme="rk4").double()
    differences = []
    steps = (2, 4, 8)
    for n in steps:
        with block.manifest(None, n):
            reference = grads_of(block, X / 4)
            block.gradient = "adjoint"
            differences.append(relative(grads_of(block, X / 4), reference))
            block.gradient = "backprop"
    assert -np.polyfit(np.log(steps), np.log(differences), 1)[0] > 3.7, differences
    torch.manual_seed(0)
    a = cd.ContinuousBlock(bn_template(), n_basis=2, scheme="midpoint", n_steps=4).double().train()
    b = copy.deepcopy(a)
    b.gradient = "adjoint"
    grads_of(a, X), grads_of(b, X)
    for (_, s), (_, t) in zip(a.state_items(), b.state_items()):
        torch.testing.assert_close(t, s, rtol=0, atol=1e-14)
    assert a.shared_buffers()["0.num_batches_tracked"] == b.shared_buffers()["0.num_batches_tracked"]


def test_modes_follow_manifestations_and_refuse_what_cannot_work():
    block = cd.ContinuousBlock(bn_template(), n_basis=2, scheme="reversible_heun", gradient="reversible").double()
    with block.manifest("rk4", 8):  # evaluating any manifestation needs no reversibility
        assert block.gradient == "reversible"
        with torch.no_grad():
            block(X)
        with pytest.raises(ValueError, match="'rk4' is not reversible"):
            block(X.clone().requires_grad_())
    assert "gradient=reversible" in repr(block)
    dropout = cd.ContinuousBlock(nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 4)), n_basis=1, scheme="alf",
                                 gradient="reversible")
    with pytest.raises(ValueError, match=r"rate must be deterministic.*0 \(Dropout, p=0.2\)"):
        dropout(torch.randn(2, 4))
    dropout.eval()
    dropout(torch.randn(2, 4, requires_grad=True)).sum().backward()  # eval: no masks
    lm = cd.models.create("lm_resnet", in_channels=1, alpha=4, continuous=True)
    block = cd.nn.continuous_blocks(lm)[0]
    with pytest.raises(ValueError, match="not the learnable k"):  # refused when set, before any work
        block.gradient = "adjoint"
    with pytest.raises(ValueError, match="'revnet' splits the state in halves"):
        cd.ContinuousBlock(cd.Coupling(nn.Linear(2, 2), nn.Linear(2, 2)), scheme="revnet", gradient="adjoint")


def test_models_take_the_gradient_option():
    from contdepth.models import create

    model = create("continuousnet", in_channels=1, alpha=4, scheme="reversible_heun", gradient="reversible")
    assert {b.gradient for b in cd.nn.continuous_blocks(model)} == {"reversible"}
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert create("revnet", in_channels=1, alpha=4, continuous=True, gradient="reversible")
    with pytest.raises(ValueError, match="'euler' is not reversible"):
        create("continuousnet", gradient="reversible")
    with pytest.raises(ValueError, match="applies to the continuous form"):
        create("revnet", gradient="reversible")


def test_learnable_context_gets_its_gradient_in_every_mode():
    torch.manual_seed(0)

    class Mix(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x, adjacency):
            return torch.tanh(adjacency @ self.lin(x))

    block = cd.ContinuousBlock(Mix(), n_basis=2, scheme="alf", n_steps=4).double()
    adjacency = torch.rand(5, 5, dtype=torch.float64, requires_grad=True)
    h = torch.randn(5, 3, dtype=torch.float64)
    grads = {}
    for mode in ("backprop", "reversible"):
        block.gradient = mode
        (grads[mode],) = torch.autograd.grad(block(h, adjacency).square().sum(), adjacency)
    torch.testing.assert_close(grads["reversible"], grads["backprop"], rtol=1e-10, atol=1e-12)
    with block.manifest("rk4", 16):
        for mode in ("backprop", "adjoint"):
            block.gradient = mode
            (grads[mode],) = torch.autograd.grad(block(h, adjacency).square().sum(), adjacency)
    torch.testing.assert_close(grads["adjoint"], grads["backprop"], rtol=1e-4, atol=1e-6)  # the ODE's gradient

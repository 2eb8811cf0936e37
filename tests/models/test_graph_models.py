"""Graph models: GCNLayer, gcn, gcde (every basis / scheme / refine / project) and cgnn (closed form)."""

from __future__ import annotations

import math

import pytest
import torch

from contdepth.basis import available_bases
from contdepth.models import create, model_options
from contdepth.models.graph import reweight_self_loops
from contdepth.nn import GCNLayer, continuous_blocks, manifest, normalized_adjacency, project, refine
from contdepth.solvers import available_schemes, get_scheme

# Every scheme that integrates a field given whole (a splitting scheme needs the field as its terms:
# a block with a cd.nn.Terms template, issue 29)
WHOLE_FIELD_SCHEMES = [s for s in available_schemes() if "term" not in get_scheme(s).term_needs]


def ring_graph(n: int = 7, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A ring with one chord: small, connected, not regular."""
    edges = [(i, (i + 1) % n) for i in range(n)] + [(0, n // 2)]
    index = torch.tensor(edges + [(j, i) for i, j in edges]).T
    return normalized_adjacency(index, n, dtype=dtype)


# --- GCNLayer --------------------------------------------------------------------------------

def test_gcn_layer_is_sparse_propagation_with_glorot_init():
    adj = ring_graph()
    layer = GCNLayer(5, 3).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x, adj), adj.to_dense() @ x @ layer.weight + layer.bias)
    torch.testing.assert_close(layer(x, adj.to_dense()), layer(x, adj))
    assert torch.equal(layer.bias, torch.zeros(3, dtype=torch.float64))
    big = GCNLayer(300, 200)
    bound = math.sqrt(6 / 500)
    assert big.weight.abs().max() <= bound and big.weight.abs().max() > 0.95 * bound
    assert abs(big.weight.var().item() - bound**2 / 3) < 0.05 * bound**2 / 3
    before = big.weight.detach().clone()
    big.reset_parameters()
    assert not torch.equal(before, big.weight)
    assert GCNLayer(5, 3, bias=False).bias is None
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 5\)"):
        layer(torch.randn(7, 4, dtype=torch.float64), adj)
    with pytest.raises(ValueError, match=r"adjacency: expected shape \(6, 6\)"):
        layer(torch.randn(6, 5, dtype=torch.float64), adj)
    with pytest.raises(ValueError, match="out_features"):
        GCNLayer(5, 0)


# --- gcn -------------------------------------------------------------------------------------

def test_gcn_shapes_defaults_and_options():
    model = create("gcn", in_features=5, num_classes=3)
    assert model_options("gcn")["hidden"] == 16 and model_options("gcn")["dropout"] == 0.5
    assert model.layer1.weight.shape == (5, 16)
    adj = ring_graph(dtype=torch.float32)
    x = torch.randn(7, 5)
    model.eval()
    out = model(x, adj)
    assert out.shape == (7, 3)
    torch.testing.assert_close(out, model(x, adj))  # eval: no dropout
    model.train()
    assert not torch.allclose(model(x, adj), out)  # train: dropout on input and hidden
    assert model.weight_decay_parameters() == [model.layer1.weight, model.layer1.bias]
    assert model.config == {"name": "gcn", "options": {"in_features": 5, "num_classes": 3}}
    with pytest.raises(ValueError, match="hidden: must be an integer >= 1"):
        create("gcn", in_features=5, num_classes=3, hidden=0)
    with pytest.raises(ValueError, match=r"dropout: a dropout probability must be a number in \[0, 1\)"):
        create("gcn", in_features=5, num_classes=3, dropout=1.0)
    with pytest.raises(ValueError, match="in_features: required"):
        create("gcn", num_classes=3)
    with pytest.raises(ValueError, match="depth: not an option of model 'gcn'"):
        create("gcn", in_features=5, num_classes=3, depth=2)


def test_gcn_learns_the_karate_club():
    from contdepth.data import load_karate

    g = load_karate()
    model = create("gcn", in_features=g.num_features, num_classes=2, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(g.features, g.adjacency)[g.train_mask],
                                                 g.labels[g.train_mask])
        loss.backward()
        optimizer.step()
    model.eval()
    predicted = model(g.features, g.adjacency).argmax(1)
    assert (predicted[g.train_mask] == g.labels[g.train_mask]).all()
    assert (predicted[g.test_mask] == g.labels[g.test_mask]).float().mean() >= 0.75


# --- gcde ------------------------------------------------------------------------------------

def small_gcde(**options):
    model = create("gcde", in_features=5, num_classes=3, hidden=4, **options).double()
    return model.eval()


@pytest.mark.parametrize("basis", available_bases())
def test_gcde_every_basis_refines_and_projects(basis):
    adj, x = ring_graph(), torch.randn(7, 5, dtype=torch.float64)
    model = small_gcde(basis=basis, n_basis=2, n_steps=4, t1=0.5)
    block, = continuous_blocks(model)
    assert block.coefficients.get("layers.0.weight").shape == (2, 4, 4)
    before = model(x, adj)
    finer = block.basis.refined().n  # 4, or 3 hat functions for piecewise linear
    refine(model)
    assert block.n_basis == finer > 2 and block.n_steps == 8
    with manifest(model, n_steps=4):
        torch.testing.assert_close(model(x, adj), before, rtol=1e-10, atol=1e-12)
    project(model, 2, 4)  # back onto the original space: the same function again
    torch.testing.assert_close(model(x, adj), before, rtol=1e-10, atol=1e-12)
    with manifest(model, "euler", 5):
        assert block.units == 5 and model(x, adj).shape == (7, 3)


@pytest.mark.parametrize("scheme", WHOLE_FIELD_SCHEMES)
def test_gcde_every_scheme_and_gradients(scheme):
    adj, x = ring_graph(), torch.randn(7, 5, dtype=torch.float64)
    # dropout off: an implicit step iterates on one rate, and dropout would draw new masks per evaluation
    model = small_gcde(n_basis=2, scheme=scheme, n_steps=3, decoder="linear", input_dropout=0.0, rate_dropout=0.0,
                       decoder_dropout=0.0)
    model.train()
    out = model(x, adj)
    assert out.shape == (7, 3) and torch.isfinite(out).all()
    out.square().sum().backward()
    block, = continuous_blocks(model)
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for _, c in block.coefficient_items())


def test_gcde_manifestations_converge_at_rk4_order():
    adj, x = ring_graph(), torch.randn(7, 5, dtype=torch.float64)
    model = small_gcde(activation="tanh", encoder_activation="tanh", t1=2.0)  # n_basis=1: the autonomous graph ODE
    with torch.no_grad():
        reference = model.block.manifest("rk4", 256) and model(x, adj)
        errors = []
        for n in (2, 4, 8):
            model.block.manifest("rk4", n)
            errors.append((model(x, adj) - reference).abs().max().item())
    assert errors[-1] < 1e-6
    assert errors[0] / errors[1] > 10 and errors[1] / errors[2] > 12  # ~16 for fourth order


def test_gcde_options_are_checked():
    base = dict(in_features=5, num_classes=3)
    for option, value, message in [
        ("decoder", "mlp", "decoder: must be one of linear, gcn"),
        ("activation", "gelu", "activation: must be one of relu, tanh, softplus"),
        ("basis", "fourier", "basis: must be one of"),
        ("scheme", "rk5", "rk5"),
        ("n_basis", 0, "n_basis: must be an integer >= 1"),
        ("n_steps", 0, "n_steps: must be an integer >= 1"),
        ("t1", 0.0, "t1: the integration time must be a finite number > 0"),
        ("rate_layers", 0, "rate_layers: must be an integer >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            create("gcde", **base, **{option: value})


# --- cgnn ------------------------------------------------------------------------------------

def linear_closed_form(m: torch.Tensor, h0: torch.Tensor, e: torch.Tensor, t: float) -> torch.Tensor:
    """``x(t)`` of ``dx/dt = M x + e`` by the augmented exponential ``exp([[M, e], [0, 0]] t)`` (no inverse)."""
    n, k = h0.shape[0], h0.shape[1]
    augmented = torch.zeros(n + k, n + k, dtype=torch.float64)
    augmented[:n, :n], augmented[:n, n:] = m, e
    flow = torch.linalg.matrix_exp(augmented * t)
    return flow[:n, :n] @ h0 + flow[:n, n:]


def cgnn_fixture(weighted: bool = False, t1: float = 3.0):
    adj, x = ring_graph(), torch.randn(7, 5, dtype=torch.float64)
    model = create("cgnn", in_features=5, num_classes=3, num_nodes=7, hidden=3, t1=t1,
                   weighted=weighted).double().eval()
    alpha = torch.rand(7, dtype=torch.float64) * 0.9 + 0.05
    with torch.no_grad():
        model.block.coefficients.get("a").copy_(torch.logit(alpha)[None])
        if weighted:
            model.block.coefficients.get("u").copy_(torch.randn(1, 3, 3, dtype=torch.float64) * 0.7)
            model.block.coefficients.get("d").copy_(torch.tensor([[0.3, 1.7, -0.2]], dtype=torch.float64))
    e = model.encoder(x)
    return model, adj, x, alpha, e


def block_output(model, adj, e, n_steps):
    with torch.no_grad(), model.block.manifest("rk4", n_steps):
        return model.block(e, adj, e)


def test_cgnn_matches_the_closed_form_at_fourth_order():
    model, adj, x, alpha, e = cgnn_fixture()
    m = 0.5 * alpha[:, None] * (adj.to_dense() - torch.eye(7, dtype=torch.float64))  # alpha (A_hat - I)
    exact = linear_closed_form(m, e.detach(), e.detach(), 3.0)
    errors = [(block_output(model, adj, e, n) - exact).abs().max().item() for n in (3, 6, 12, 24)]
    assert errors[-1] < 1e-7
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(3.6 < p < 4.6 for p in orders), orders
    # the whole model is the decoder of relu(H(T)) (eval mode: no dropout), on the adjacency
    # with its self loops re-weighted to the model's self_loop_weight
    adj_s = reweight_self_loops(adj, model.self_loop_weight).to_dense()
    exact_s = linear_closed_form(0.5 * alpha[:, None] * (adj_s - torch.eye(7, dtype=torch.float64)),
                                 e.detach(), e.detach(), 3.0)
    with torch.no_grad(), model.block.manifest("rk4", 24):
        torch.testing.assert_close(model(x, adj), model.decoder(torch.relu(exact_s)), atol=1e-7, rtol=0)


def test_weighted_cgnn_matches_the_vectorised_closed_form():
    model, adj, x, alpha, e = cgnn_fixture(weighted=True, t1=1.5)
    u = model.block.coefficients.get("u")[0].detach()
    d = model.block.coefficients.get("d")[0].detach().clamp(0, 1)
    w = u @ torch.diag(d) @ u.T
    m = 0.5 * alpha[:, None] * (adj.to_dense() - torch.eye(7, dtype=torch.float64))
    # vec(M H + H (W - I)) = (I (x) M + (W - I)^T (x) I) vec(H), vec stacking columns
    eye3, eye7 = torch.eye(3, dtype=torch.float64), torch.eye(7, dtype=torch.float64)
    big = torch.kron(eye3, m) + torch.kron((w - eye3).T.contiguous(), eye7)
    vec = e.detach().T.reshape(-1, 1)
    exact = linear_closed_form(big, vec, vec, 1.5).reshape(3, 7).T
    torch.testing.assert_close(block_output(model, adj, e, 32), exact, atol=1e-8, rtol=0)
    # W = I (the initialisation) switches the mixing term off
    fresh = create("cgnn", in_features=5, num_classes=3, num_nodes=7, hidden=3, weighted=True).double().eval()
    plain = create("cgnn", in_features=5, num_classes=3, num_nodes=7, hidden=3).double().eval()
    plain.load_state_dict(fresh.state_dict(), strict=False)
    torch.testing.assert_close(fresh(x, adj), plain(x, adj))


def test_cgnn_alpha_schemes_and_options():
    model = create("cgnn", in_features=5, num_classes=3, num_nodes=7, alpha_init=0.8)
    alpha = torch.sigmoid(model.block.coefficients.get("a"))
    torch.testing.assert_close(alpha, torch.full((1, 7), 0.8))
    adj, x = ring_graph(dtype=torch.float32), torch.randn(7, 5)
    model.train()
    out = model(x, adj)
    out.sum().backward()
    assert model.block.coefficients.get("a").grad.abs().sum() > 0  # alpha is learned
    model.eval()
    for scheme in WHOLE_FIELD_SCHEMES:
        with manifest(model, scheme, 12):
            assert torch.isfinite(model(x, adj)).all()
    with pytest.raises(ValueError, match="num_nodes=7"):
        model(torch.randn(6, 5), ring_graph(6, dtype=torch.float32))
    with pytest.raises(ValueError, match="num_nodes: required"):
        create("cgnn", in_features=5, num_classes=3)
    for option, value, message in [
        ("alpha_init", 1.0, r"alpha_init: the initial alpha must lie in \(0, 1\)"),
        ("weighted", "yes", "weighted: must be true or false"),
        ("t1", -1.0, "t1: the integration time"),
        ("input_dropout", -0.1, "input_dropout: a dropout probability"),
        ("num_nodes", 0, "num_nodes: must be an integer >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            create("cgnn", **{"in_features": 5, "num_classes": 3, "num_nodes": 7, option: value})


def test_cgnn_self_loop_weight_reweights_the_gcn_adjacency():
    adj = ring_graph()
    torch.testing.assert_close(reweight_self_loops(adj, 1.0).to_dense(), adj.to_dense())
    for s in (0.555, 2.0):
        n = 7
        edges = [(i, (i + 1) % n) for i in range(n)] + [(0, n // 2)]
        dense = torch.zeros(n, n, dtype=torch.float64)
        for i, j in edges:
            dense[i, j] = dense[j, i] = 1.0
        dense += s * torch.eye(n, dtype=torch.float64)
        degree = dense.sum(1)
        expected = dense / (degree[:, None] * degree[None, :]).sqrt()
        torch.testing.assert_close(reweight_self_loops(adj, s).to_dense(), expected)
    x = torch.randn(7, 5, dtype=torch.float64)
    one = create("cgnn", in_features=5, num_classes=3, num_nodes=7, self_loop_weight=1.0).double().eval()
    other = create("cgnn", in_features=5, num_classes=3, num_nodes=7, self_loop_weight=0.3).double().eval()
    other.load_state_dict(one.state_dict())
    assert not torch.allclose(one(x, adj), other(x, adj))  # the option reaches the dynamics
    for value in (0, -1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="self_loop_weight: must be a finite number > 0"):
            create("cgnn", in_features=5, num_classes=3, num_nodes=7, self_loop_weight=value)


def test_cgnn_detach_restart_cuts_the_gradient_through_the_restart_term():
    adj, x = ring_graph(), torch.randn(7, 5, dtype=torch.float64)
    grads = {}
    for detach in (False, True):
        torch.manual_seed(0)
        model = create("cgnn", in_features=5, num_classes=3, num_nodes=7, detach_restart=detach).double().eval()
        out = model(x, adj)
        out.sum().backward()
        grads[detach] = (out.detach(), model.encoder.weight.grad.clone())
    torch.testing.assert_close(grads[False][0], grads[True][0])  # same forward
    assert grads[True][1].abs().sum() > 0  # the encoder still learns through H(0)
    assert not torch.allclose(grads[False][1], grads[True][1])
    with pytest.raises(ValueError, match="detach_restart: must be true or false"):
        create("cgnn", in_features=5, num_classes=3, num_nodes=7, detach_restart=1)


# --- gcde dropout and activation options -----------------------------------------------------

def test_gcde_dropout_options_are_stochastic_in_training_only():
    adj, x = ring_graph(), torch.randn(7, 5, dtype=torch.float64)
    defaults = model_options("gcde")
    assert defaults["rate_dropout"] == (0.5, 0.5) and defaults["activation"] == "softplus"
    model = small_gcde(rate_dropout=[0.5, 0.0], input_dropout=0.0, decoder_dropout=0.0, n_steps=2)
    assert model.block.template.dropout == (0.5, 0.0)
    eval_out = model(x, adj)
    torch.testing.assert_close(model(x, adj), eval_out)  # eval: every dropout is the identity
    model.train()
    assert not torch.allclose(model(x, adj), eval_out)  # the rate's dropout acts at every stage
    quiet = small_gcde(rate_dropout=0.0, input_dropout=0.0, decoder_dropout=0.0).train()
    torch.testing.assert_close(quiet(x, adj), quiet.eval()(x, adj))  # no dropout: train == eval
    assert small_gcde(rate_dropout=0.3, rate_layers=3).block.template.dropout == (0.3, 0.3, 0.3)
    base = dict(in_features=5, num_classes=3)
    for option, value, message in [
        ("rate_dropout", [0.5], r"rate_dropout: a list needs one probability per rate layer \(rate_layers=2\)"),
        ("rate_dropout", [0.5, 1.0], r"rate_dropout\[1\]: a dropout probability"),
        ("input_dropout", -0.1, "input_dropout: a dropout probability"),
        ("decoder_dropout", "x", "decoder_dropout: a dropout probability"),
        ("encoder_activation", "gelu", "encoder_activation: must be one of relu, tanh, softplus"),
    ]:
        with pytest.raises(ValueError, match=message):
            create("gcde", **base, **{option: value})

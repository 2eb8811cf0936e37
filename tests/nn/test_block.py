"""ContinuousBlock: manifestations, exact stage semantics, refinement, projection, autograd."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from contdepth import ContinuousBlock, available_bases

SIZES = {"piecewise_constant": (1, 3, 7), "piecewise_linear": (2, 3, 7), "legendre": (1, 3, 7)}


def mlp(width=5):
    return nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))


def block(basis="piecewise_constant", n_basis=4, **kw):
    return ContinuousBlock(mlp(), basis=basis, n_basis=n_basis, **kw).double()


X = torch.randn(6, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


# --- hand-written reference loops -------------------------------------------------
def modules_per_cell(b):
    """One ordinary copy of the template per cell, holding that cell's weights."""
    out = []
    for k in range(b.n_basis):
        m = mlp().double()
        m.load_state_dict({name: c[k] for name, c in b.coefficient_items()})
        out.append(m)
    return out


def cell(num, den, cells):
    """floor(cells * num / den) in integers: right-continuous cell of t = num/den."""
    return min(cells * num // den, cells - 1)


def cell_left(num, den, cells):
    """ceil(cells * num / den) - 1 in integers: the left limit at t = num/den."""
    return max(-(-cells * num // den) - 1, 0)


def hand_rk4_piecewise_constant(b, x, n):
    f = modules_per_cell(b)
    K, h = b.n_basis, 1.0 / n
    for i in range(n):
        k1 = f[cell(i, n, K)](x)
        k2 = f[cell(2 * i + 1, 2 * n, K)](x + h / 2 * k1)
        k3 = f[cell(2 * i + 1, 2 * n, K)](x + h / 2 * k2)
        k4 = f[cell_left(i + 1, n, K)](x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def hand_euler_piecewise_constant(b, x, n):
    f = modules_per_cell(b)
    for i in range(n):
        x = x + f[cell(i, n, b.n_basis)](x) / n
    return x


@pytest.mark.parametrize("cells,steps", [(7, 1), (7, 5), (7, 7), (7, 49), (16, 8), (3, 5), (1, 7)])
def test_piecewise_constant_matches_hand_loop_that_picks_weights_per_cell(cells, steps):
    b = block(n_basis=cells)
    with b.manifest("rk4", steps):
        torch.testing.assert_close(b(X), hand_rk4_piecewise_constant(b, X, steps), rtol=0, atol=1e-12)
    with b.manifest("euler", steps):
        torch.testing.assert_close(b(X), hand_euler_piecewise_constant(b, X, steps), rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 5, 7, 49])
def test_piecewise_linear_matches_hand_loop_with_interpolated_weights(steps):
    b = block("piecewise_linear", n_basis=4)
    nodes = np.linspace(0, 1, 4)
    coeffs = {name: c.detach() for name, c in b.coefficient_items()}

    def f(t, x):
        m = mlp().double()
        state = {}
        for name, c in coeffs.items():
            flat = c.reshape(4, -1).numpy()
            state[name] = torch.from_numpy(
                np.array([np.interp(t, nodes, flat[:, j]) for j in range(flat.shape[1])])
            ).reshape(c.shape[1:])
        m.load_state_dict(state)
        return m(x)

    x = hand_rk4(f, X, steps)
    with b.manifest("rk4", steps):
        torch.testing.assert_close(b(X), x, rtol=0, atol=1e-12)


def hand_rk4(f, x, steps):
    """The classical RK4 loop on [0, 1], written out: the reference the library is checked against."""
    h = 1.0 / steps
    for i in range(steps):
        t = i * h
        k1 = f(t, x)
        k2 = f(t + h / 2, x + h / 2 * k1)
        k3 = f(t + h / 2, x + h / 2 * k2)
        k4 = f(t + h, x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def cases():
    return [(name, n) for name in available_bases() for n in SIZES[name]]


@pytest.mark.parametrize("name,n", cases())
@pytest.mark.parametrize("scheme", ["rk4", "euler", "ab3"])
def test_refine_keeps_outputs_on_the_same_manifestation(name, n, scheme):
    b = block(name, n_basis=n, scheme=scheme, n_steps=3)
    before = b(X)
    with b.manifest(n_steps=6):
        before_fine = b(X)
    b.refine()
    assert b.n_steps == 6 and b.n_basis == b.basis.n
    torch.testing.assert_close(b(X), before_fine, rtol=0, atol=1e-10)
    with b.manifest(n_steps=3):
        torch.testing.assert_close(b(X), before, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name,n", cases())
def test_project_after_refine_restores_coefficients(name, n):
    b = block(name, n_basis=n)
    original = {k: v.detach().clone() for k, v in b.coefficient_items()}
    b.refine()
    b.project(n)
    assert b.n_basis == n and b.n_steps == n
    for k, v in b.coefficient_items():
        torch.testing.assert_close(v.detach(), original[k], rtol=0, atol=1e-12)


def test_project_compresses_to_the_l2_best_weights():
    b = block("piecewise_constant", n_basis=4)
    c = {k: v.detach().clone() for k, v in b.coefficient_items()}
    mapping = b.project(2, n_steps=5)
    assert b.n_steps == 5 and mapping.matrix.shape == (2, 4)
    for k, v in b.coefficient_items():
        torch.testing.assert_close(v.detach(), torch.stack([c[k][:2].mean(0), c[k][2:].mean(0)]), rtol=0, atol=1e-14)


def test_refine_returns_the_map_for_optimizer_state():
    b = block("piecewise_linear", n_basis=3)
    old = [p for _, p in b.coefficient_items()]
    mapping = b.refine()
    assert mapping.matrix.shape == (5, 3)
    assert [o for o, _ in mapping.pairs] == old
    assert [n for _, n in mapping.pairs] == [p for _, p in b.coefficient_items()]
    assert set(map(id, b.parameters())) == {id(n) for _, n in mapping.pairs}


def test_manifest_context_manager_restores_and_units_count_evaluations():
    b = block(n_basis=4)
    assert b.scheme.name == "rk4" and b.n_steps == 4 and b.units == 16
    with b.manifest("euler", 9):
        assert b.units == 9 and b.scheme.name == "euler"
    assert b.scheme.name == "rk4" and b.n_steps == 4
    b.manifest("ab4", 10)
    assert b.units == 3 * 4 + 7 and b.n_steps == 10


def test_same_function_many_manifestations_agree_when_the_basis_is_smooth():
    b = block("legendre", n_basis=3)
    reference = b.manifest("dopri5", 64) and b(X)
    for scheme, steps in [("rk4", 16), ("rk38", 16), ("ab4", 64), ("midpoint", 128)]:
        with b.manifest(scheme, steps):
            assert (b(X) - reference).abs().max() < 1e-4


def test_gradcheck_block():
    b = ContinuousBlock(mlp(3), basis="piecewise_linear", n_basis=3, scheme="rk4", n_steps=2).double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    names = [k for k, _ in b.coefficient_items()]
    coeffs = tuple(v.detach().clone().requires_grad_() for _, v in b.coefficient_items())

    def run(x, *cs):
        return torch.func.functional_call(b, {f"coefficients.{k}": c for k, c in zip(names, cs)}, (x,))

    assert torch.autograd.gradcheck(run, (x, *coeffs))


def test_checkpointing_block_gives_same_values_and_gradients():
    b = block("piecewise_linear", n_basis=3)
    b2 = copy.deepcopy(b)
    b2.checkpoint = True
    for m in (b, b2):
        m(X).square().sum().backward()
    for (_, p), (_, q) in zip(b.coefficient_items(), b2.coefficient_items()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12)


def test_parameters_are_only_the_coefficients():
    b = block(n_basis=3)
    names = sorted(k for k, _ in b.named_parameters())
    assert names == ["coefficients.0.bias", "coefficients.0.weight", "coefficients.2.bias", "coefficients.2.weight"]
    assert dict(b.named_parameters())["coefficients.0.weight"].shape == (3, 5, 5)
    assert sorted(b.state_dict()) == names


def test_basis_functions_get_independent_draws_of_the_template_initialiser():
    b = ContinuousBlock(nn.Linear(64, 64), n_basis=4)
    w = b.coefficients.get("weight").detach()
    bound = 1 / 8  # nn.Linear's kaiming-uniform bound for fan_in 64
    for k in range(4):
        assert w[k].abs().max() <= bound and w[k].std() > bound / 3
        for j in range(k):
            assert not torch.allclose(w[k], w[j])
    torch.manual_seed(5)
    first = ContinuousBlock(nn.Linear(4, 4), n_basis=2).coefficients.get("weight").detach().clone()
    torch.manual_seed(5)
    again = ContinuousBlock(nn.Linear(4, 4), n_basis=2).coefficients.get("weight").detach()
    torch.testing.assert_close(first, again)


def test_legendre_initialisation_draws_values_at_gauss_points():
    b = ContinuousBlock(nn.Linear(64, 64), basis="legendre", n_basis=3)
    nodes = b.basis.collocation_points()
    for t in nodes:
        w = b.theta(float(t))["weight"]
        assert w.abs().max() <= 1 / 8 + 1e-6


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.rate = nn.Parameter(torch.zeros(5))

    def forward(self, x):
        return self.rate * x


def test_template_without_reset_parameters_needs_an_initializer():
    with pytest.raises(ValueError, match="reset_parameters"):
        ContinuousBlock(Scale(), n_basis=2)
    b = ContinuousBlock(Scale(), n_basis=2, initializer=lambda m: nn.init.normal_(m.rate))
    c = b.coefficients.get("rate").detach()
    assert not torch.allclose(c[0], c[1])


def test_conv_template_float32():
    template = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    b = ContinuousBlock(template, basis="piecewise_linear", n_basis=3, scheme="midpoint", n_steps=5)
    x = torch.randn(2, 4, 6, 6)
    y = b(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    y.sum().backward()
    assert all(p.grad is not None for p in b.parameters())


def test_theta_reads_depth_interval():
    b = ContinuousBlock(mlp(), n_basis=4, t0=1.0, t1=3.0)
    c = b.coefficients.get("0.weight")
    torch.testing.assert_close(b.theta(1.5)["0.weight"], c[1])
    torch.testing.assert_close(b.theta(2.0, left=True)["0.weight"], c[1])
    torch.testing.assert_close(b.theta(2.0)["0.weight"], c[2])


# --- bad input ----------------------------------------------------------------------
def test_unknown_scheme_and_basis_list_the_valid_names():
    with pytest.raises(ValueError, match="scheme: unknown scheme 'rk5'.*dopri5.*rk4"):
        block(scheme="rk5")
    with pytest.raises(ValueError, match="basis: unknown basis 'cubic'.*legendre"):
        block(basis="cubic")
    b = block()
    with pytest.raises(ValueError, match="scheme: unknown scheme"):
        b.manifest("nope")


@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_bad_n_steps_and_n_basis_name_the_argument(bad):
    with pytest.raises(ValueError, match="n_steps"):
        block(n_steps=bad)
    with pytest.raises(ValueError, match="n_basis"):
        block(n_basis=bad)
    with pytest.raises(ValueError, match="n_steps"):
        block().manifest(n_steps=bad)


def test_template_with_wrong_output_shape_is_refused():
    b = ContinuousBlock(nn.Linear(5, 3), n_basis=2)
    with pytest.raises(ValueError, match="template: output shape \\(6, 3\\) differs from its input shape \\(6, 5\\)"):
        b(X.float())


def test_bad_depth_interval():
    with pytest.raises(ValueError, match="t1"):
        ContinuousBlock(mlp(), n_basis=2, t0=1.0, t1=1.0)


class Tied(nn.Module):
    """The same Linear reachable under two names: one parameter, two slots."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(5, 5)
        self.second = self.first

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)))


def test_tied_parameters_are_one_coefficient_filling_every_slot():
    b = ContinuousBlock(Tied(), n_basis=2, scheme="euler").double()
    assert sorted(k for k, _ in b.named_parameters()) == ["coefficients.first.bias", "coefficients.first.weight"]
    w, c = b.coefficients.get("first.weight"), b.coefficients.get("first.bias")
    x = X
    for k in range(2):
        x = x + 0.5 * nn.functional.linear(torch.tanh(nn.functional.linear(x, w[k], c[k])), w[k], c[k])
    torch.testing.assert_close(b(X), x, rtol=0, atol=1e-12)


def test_forward_leaves_no_stage_tensors_in_the_template():
    b = block(n_basis=2)
    b(X).sum().backward()
    assert all(p.device.type == "meta" for p in b.template.parameters())


class _Mix(nn.Module):
    """A rate that needs more than the state: ``tanh(lin(x)) @ mix`` (like a GCN's adjacency)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        return mix @ torch.tanh(self.lin(x))


def test_context_arguments_reach_every_rate_evaluation_unchanged():
    from contdepth.export import freeze
    from contdepth.nn import adaptive_depth

    torch.manual_seed(0)
    block = ContinuousBlock(_Mix(), basis="piecewise_linear", n_basis=2, scheme="rk4", n_steps=3).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    mix = torch.softmax(torch.randn(4, 4, dtype=torch.float64), dim=1)

    def f(t, y):
        th = block.theta(t)
        return mix @ torch.tanh(y @ th["lin.weight"].T + th["lin.bias"])

    expected = hand_rk4(f, x, 3)
    torch.testing.assert_close(block(x, mix), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(freeze(block)(x, mix), expected, rtol=1e-12, atol=1e-12)
    with adaptive_depth(block, rtol=1e-10, atol=1e-12):
        adaptive = block(x, mix)
    with block.manifest("rk4", 64):
        torch.testing.assert_close(adaptive, block(x, mix), rtol=1e-8, atol=1e-9)
    assert not torch.allclose(block(x, mix), block(x, torch.eye(4, dtype=torch.float64)))


def test_manifest_context_restores_scheme_and_steps_but_keeps_a_checkpoint_flag_set_inside():
    b = block(n_basis=2, scheme="rk4")
    with b.manifest("euler", 8):
        assert (b.scheme.name, b.n_steps) == ("euler", 8)
        b.checkpoint = True
    assert (b.scheme.name, b.n_steps, b.checkpoint) == ("rk4", 2, True)
    assert b.integration is b.grid

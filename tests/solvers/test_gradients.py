"""Gradient modes of integrate: reversible (exact, no stored activations) and the continuous adjoint."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import contdepth as cd
from contdepth.solvers import (
    ReconstructionWarning, integrate, integrate_adaptive, reversible_schemes, scheme_properties,
)
from helpers import X0, exact, field


class Field(nn.Module):
    """A nonlinear, time-dependent rate with parameters: tanh((1 + t) x W + b)."""

    def __init__(self, n=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(n, n, generator=g, dtype=torch.float64) / 2)
        self.b = nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))

    def forward(self, t, x):
        return torch.tanh(x @ self.W * (1 + t) + self.b)


class Separable(nn.Module):
    """A coupled rate [F(Y), G(X)] for RevNet's coupling (each half reads only the other)."""

    def __init__(self):
        super().__init__()
        self.f, self.g = Field(2, 1), Field(2, 2)

    def forward(self, t, z):
        x, y = z.chunk(2, dim=1)
        return torch.cat((self.f(t, y), self.g(t, x)), dim=1)


def gradients(f, x0, **kwargs):
    out = integrate(f, x0, **kwargs).state
    return torch.autograd.grad((out.square() * torch.linspace(0.5, 1.5, out.shape[-1], dtype=out.dtype)).sum(),
                               [x0, *f.parameters()])


def relative(a, b):
    return max(float((p - q).abs().max() / q.abs().max()) for p, q in zip(a, b))


X = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("scheme,f", [("reversible_heun", Field()), ("alf", Field()), ("revnet", Separable())])
def test_reversible_gradients_equal_backprop_through_the_same_scheme(scheme, f):
    for n_steps in (1, 7, 32):
        reference = gradients(f, X, scheme=scheme, n_steps=n_steps)
        reversible = gradients(f, X, scheme=scheme, n_steps=n_steps, gradient="reversible")
        assert relative(reversible, reference) <= 1e-9, (scheme, n_steps)


def test_reversible_schemes_have_order_two_and_no_stability_interval():
    steps = (16, 32, 64, 128)
    for name in ("reversible_heun", "alf"):
        errors = [float((integrate(field, X0, scheme=name, n_steps=n).state - exact(1.0)).norm()) for n in steps]
        assert abs(-np.polyfit(np.log(steps), np.log(errors), 1)[0] - 2) < 0.1, name
        row = scheme_properties(name)
        assert (row.order, row.stability_interval) == (2, 0.0)  # det of the recursion is -1: a root outside
    assert reversible_schemes() == ["alf", "reversible_heun", "revnet"]


def test_a_non_reversible_scheme_is_refused_naming_the_reversible_ones():
    with pytest.raises(ValueError, match="'rk4' is not reversible.*alf, reversible_heun, revnet"):
        integrate(Field(), X, scheme="rk4", n_steps=2, gradient="reversible")
    with pytest.raises(ValueError, match="'rk4' is not reversible"):
        cd.ContinuousBlock(nn.Linear(4, 4), scheme="rk4", gradient="reversible")
    with pytest.raises(ValueError, match="gradient: must be one of backprop, checkpoint, reversible, adjoint"):
        integrate(Field(), X, scheme="rk4", n_steps=2, gradient="exact")
    with pytest.raises(ValueError, match="checkpoint=True is gradient='checkpoint' and conflicts"):
        integrate(Field(), X, scheme="alf", n_steps=2, gradient="reversible", checkpoint=True)
    with pytest.raises(ValueError, match="t_eval: saved states"):
        integrate(Field(), X, scheme="alf", n_steps=2, gradient="reversible", return_path=True)
    with pytest.raises(ValueError, match="'revnet' splits the state in halves"):
        integrate(Separable(), X, scheme="revnet", n_steps=2, gradient="adjoint")


def test_a_failed_reconstruction_warns_and_falls_back_to_the_backprop_gradient():
    f = Field()  # each half's rate reads its own half too: RevNet's coupling is not invertible for it
    reference = gradients(f, X, scheme="revnet", n_steps=8)
    with pytest.warns(ReconstructionWarning, match="rebuilt the input of 'revnet' over 8 steps with relative error"):
        fallback = gradients(f, X, scheme="revnet", n_steps=8, gradient="reversible")
    assert relative(fallback, reference) <= 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within tolerance: silent
        gradients(f, X, scheme="revnet", n_steps=8, gradient="reversible", reconstruction_tolerance=10.0)


def test_params_name_the_tensors_of_a_closure():
    W = torch.eye(4, dtype=torch.float64, requires_grad=True)
    out = integrate(lambda t, x: torch.sin(x @ W), X, scheme="alf", n_steps=5, gradient="reversible", params=[W])
    got = torch.autograd.grad(out.state.sum(), [X, W])
    out = integrate(lambda t, x: torch.sin(x @ W), X, scheme="alf", n_steps=5)
    torch.testing.assert_close(got, torch.autograd.grad(out.state.sum(), [X, W]), rtol=1e-12, atol=1e-14)
    with pytest.raises(TypeError, match=r"params\[0\]: expected a tensor"):
        integrate(lambda t, x: x, X, scheme="alf", n_steps=2, gradient="reversible", params=[1.0])


def test_adjoint_agrees_with_torchdiffeq_on_the_same_scheme_and_grid():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    f = Field()
    for n_steps in (4, 16):
        ours = gradients(f, X, scheme="rk38", n_steps=n_steps, gradient="adjoint")
        t = torch.tensor([0.0, 1.0], dtype=torch.float64)
        out = torchdiffeq.odeint_adjoint(f, X, t, method="rk4", options={"step_size": 1.0 / n_steps})[-1]
        theirs = torch.autograd.grad((out.square() * torch.linspace(0.5, 1.5, 4, dtype=out.dtype)).sum(),
                                     [X, *f.parameters()])
        assert relative(ours, theirs) <= 1e-7
        ours = gradients(f, X, scheme="euler", n_steps=n_steps, gradient="adjoint")
        out = torchdiffeq.odeint_adjoint(f, X, t, method="euler", options={"step_size": 1.0 / n_steps})[-1]
        theirs = torch.autograd.grad((out.square() * torch.linspace(0.5, 1.5, 4, dtype=out.dtype)).sum(),
                                     [X, *f.parameters()])
        assert relative(ours, theirs) <= 1e-7


@pytest.mark.parametrize("scheme,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_adjoint_differs_from_the_discrete_gradient_at_the_schemes_order(scheme, order):
    f = Field()
    steps = (8, 16, 32)
    differences = [relative(gradients(f, X, scheme=scheme, n_steps=n, gradient="adjoint"),
                            gradients(f, X, scheme=scheme, n_steps=n)) for n in steps]
    measured = -np.polyfit(np.log(steps), np.log(differences), 1)[0]
    assert measured > order - 0.3, (scheme, differences)


def test_adaptive_adjoint_matches_the_exact_gradient_of_a_linear_ode():
    A = torch.tensor([[-1.0, 0.5], [-0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    out = integrate_adaptive(lambda t, x: A @ x, x0, rtol=1e-10, atol=1e-12, gradient="adjoint", params=[A],
                             breakpoints=[0.5])
    got = torch.autograd.grad(out.state.sum(), [x0, A])
    expected = torch.autograd.grad((torch.linalg.matrix_exp(A) @ x0).sum(), [x0, A])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="adaptive integration supports 'backprop' or 'adjoint'"):
        integrate_adaptive(lambda t, x: A @ x, x0, rtol=1e-6, atol=1e-8, gradient="reversible")


def test_reversible_stores_no_activations_and_its_memory_is_flat_in_the_steps():
    f = Field()

    def saved(n_steps, gradient):
        count = [0]

        def pack(t):
            count[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            integrate(f, X, scheme="reversible_heun", n_steps=n_steps, gradient=gradient).state.sum()
        return count[0]

    assert saved(4, "reversible") == saved(64, "reversible") < saved(4, "backprop") / 2  # input and final carry
    assert saved(64, "backprop") > 10 * saved(4, "backprop") / 2
    assert saved(4, "adjoint") == saved(64, "adjoint") < saved(4, "backprop") / 2


def test_the_generic_backward_rebuilds_then_recomputes_for_a_scheme_without_a_fused_one():
    from contdepth.solvers import AsynchronousLeapfrog

    class PlainLeapfrog(AsynchronousLeapfrog):
        step_back_vjp = None  # a user's reversible scheme with step_back only

    f = Field()
    reference = gradients(f, X, scheme="alf", n_steps=9)
    assert relative(gradients(f, X, scheme=PlainLeapfrog("plain"), n_steps=9, gradient="reversible"),
                    reference) <= 1e-9


def test_corner_cases_of_the_custom_backward_passes():
    # a parameter whose gradient autograd may return as the same tensor as the state's
    B = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    for scheme in ("reversible_heun", "alf"):
        got = torch.autograd.grad(integrate(lambda t, x: torch.tanh(x) + B, X, scheme=scheme, n_steps=4,
                                            gradient="reversible", params=[B]).state.sum(), [X, B])
        expected = torch.autograd.grad(integrate(lambda t, x: torch.tanh(x) + B, X, scheme=scheme,
                                                 n_steps=4).state.sum(), [X, B])
        assert relative(got, expected) <= 1e-12, scheme
    # RevNet's coupling through a plain f whose halves read themselves a little: the gradient is
    # as good as the rebuilt states (the recomputed steps see both halves), not first order worse
    separable, weak = Separable(), Field()

    class Nearly(nn.Module):
        def __init__(self):
            super().__init__()
            self.separable, self.weak = separable, weak

        def forward(self, t, z):
            return self.separable(t, z) + 1e-3 * self.weak(t, z)

    errors = []
    from contdepth.solvers import solve_reversible

    near = Nearly()
    got = gradients(near, X, scheme="revnet", n_steps=6, gradient="reversible", reconstruction_tolerance=1.0)
    rate = lambda stage, z: near(stage.t, z)  # noqa: E731
    scheme = cd.get_scheme("revnet")
    x = X.detach().clone().requires_grad_()
    solve_reversible(scheme, rate, x, scheme.schedule(6), list(near.parameters()), tolerance=1.0,
                     on_reconstruction=errors.append).sum().backward()
    assert relative(got, gradients(near, X, scheme="revnet", n_steps=6)) <= 10 * errors[0] + 1e-12
    # a tensor listed twice gets its gradient once; a zero input needs no relative scale
    W = torch.eye(4, dtype=torch.float64, requires_grad=True)
    once = torch.autograd.grad(integrate(lambda t, x: torch.sin(x @ W), X, scheme="alf", n_steps=3,
                                         gradient="reversible", params=[W, W]).state.sum(), W)
    plain = torch.autograd.grad(integrate(lambda t, x: torch.sin(x @ W), X, scheme="alf", n_steps=3).state.sum(), W)
    torch.testing.assert_close(once, plain)
    zero = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        integrate(Field(), zero, scheme="alf", n_steps=4, gradient="reversible").state.sum().backward()
    # a second-order derivative is refused, not silently wrong
    out = integrate(Field(), X, scheme="alf", n_steps=2, gradient="reversible").state.sum()
    (g,) = torch.autograd.grad(out, X, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_reversible_under_autocast_recomputes_under_the_same_autocast():
    torch.manual_seed(0)
    block = cd.ContinuousBlock(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh()), n_basis=2,
                               scheme="reversible_heun", n_steps=8)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    results = {}
    for mode in ("backprop", "reversible"):
        block.gradient = mode
        with warnings.catch_warnings():
            warnings.simplefilter("error", ReconstructionWarning)  # no fallback
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = block(x)
            results[mode] = torch.autograd.grad(out.float().square().sum(), [x, *block.parameters()])
    assert relative(results["reversible"], results["backprop"]) <= 2e-2  # bfloat16 round-off, not a fallback


def test_compiled_models_call_the_custom_backward_eagerly():
    torch.manual_seed(0)
    block = cd.ContinuousBlock(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), n_basis=2, scheme="alf",
                               gradient="reversible").double()
    x = X.detach().clone().requires_grad_()
    expected = torch.autograd.grad(block(x).sum(), [x, *block.parameters()])
    compiled = torch.compile(block, backend="eager")
    got = torch.autograd.grad(compiled(x).sum(), [x, *block.parameters()])
    assert relative(got, expected) <= 1e-12


def test_adaptive_adjoint_across_a_jump_of_a_plain_rate():
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)

    def f(t, x):  # x' = -a x before t = 0.5, -2 a x after: x(1) = x0 exp(-1.5 a)
        return -a * x * (1.0 if t < 0.5 else 2.0)

    out = integrate_adaptive(f, x0, rtol=1e-10, atol=1e-12, breakpoints=[0.5], gradient="adjoint", params=[a])
    got = torch.autograd.grad(out.state.sum(), [x0, a])
    expected = (torch.exp(-1.5 * a), -1.5 * torch.exp(-1.5 * a))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.reshape(()), e.detach().reshape(()), rtol=1e-8, atol=1e-10)


def test_an_output_changed_in_place_or_a_second_backward_is_refused():
    out = integrate(Field(), X, scheme="alf", n_steps=3, gradient="reversible").state
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified in place"):
        out.sum().backward()
    out = integrate(Field(), X, scheme="alf", n_steps=3, gradient="reversible").state.sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        out.backward()

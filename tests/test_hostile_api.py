"""The Python API answers a stranger's mistakes instead of failing silently.

Refining a block under an optimizer that was not told, a rate function that returns the
wrong dtype, shape or type, and NaN states in the adaptive integrator.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

import contdepth as cd
from contdepth.nn import AdaptiveDepth
from contdepth.train import refine_with_optimizer


def _model() -> nn.Module:
    torch.manual_seed(0)
    template = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    return nn.Sequential(cd.ContinuousBlock(template, n_basis=1, scheme="euler"), nn.Linear(4, 2))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 2) -> None:
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 2
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


# --- refine under an optimizer -------------------------------------------------------------
@pytest.mark.parametrize("change", ["block.refine", "nn.refine", "block.project"])
def test_optimizer_step_after_plain_refine_is_refused(change):
    model = _model()
    optimizer = _sgd(model)
    _train(model, optimizer)
    block = model[0]
    if change == "block.refine":
        block.refine()
    elif change == "nn.refine":
        cd.nn.refine(model)
    else:
        block.refine()
        optimizer = _sgd(model)  # a fresh optimizer is fine...
        _train(model, optimizer, 1)
        block.project(1)  # ...until the next basis change
    with pytest.raises(RuntimeError, match=r"^optimizer: holds 4 parameter.*contdepth\.train\.refine_with_optimizer"):
        _train(model, optimizer, 1)


def test_refine_with_optimizer_keeps_training_and_maps_momentum():
    model = _model()
    optimizer = _sgd(model)
    _train(model, optimizer)
    old = model[0].coefficients.get("0.weight")
    momentum = optimizer.state[old]["momentum_buffer"].clone()
    refine_with_optimizer(model, optimizer)
    new = model[0].coefficients.get("0.weight")
    assert new is not old and any(p is new for p in optimizer.param_groups[0]["params"])
    torch.testing.assert_close(optimizer.state[new]["momentum_buffer"], momentum.expand(2, 4, 4))
    before = new.detach().clone()
    _train(model, optimizer, 1)
    assert not torch.equal(before, new.detach())  # the refined coefficients train


def test_new_optimizer_after_refine_trains():
    model = _model()
    _train(model, _sgd(model))
    cd.nn.refine(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = model[0].coefficients.get("0.weight").detach().clone()
    _train(model, optimizer, 2)
    assert not torch.equal(before, model[0].coefficients.get("0.weight").detach())


def test_retired_parameters_are_not_kept_alive():
    from contdepth.nn import retired

    model = _model()
    optimizer = _sgd(model)
    _train(model, optimizer)
    old = weakref.ref(model[0].coefficients.get("0.weight"))
    key = id(old())
    refine_with_optimizer(model, optimizer)
    gc.collect()
    assert old() is None and key not in retired._RETIRED  # noqa: SLF001


def test_unrelated_optimizer_is_untouched():
    layer = nn.Linear(3, 3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()


# --- integrate: what the rate returns ---------------------------------------------------------
@pytest.mark.parametrize("scheme", ["rk4", "euler", "ab3", "lm_resnet"])
@pytest.mark.parametrize("state, returned", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_integrate_refuses_rate_of_other_dtype(scheme, state, returned):
    resolved = cd.LMResNetScheme(0.1) if scheme == "lm_resnet" else scheme
    with pytest.raises(ValueError, match=rf"^f: output dtype {returned} differs from its input dtype {state}"):
        cd.integrate(lambda t, x: (-x).to(returned), torch.ones(3, dtype=state), scheme=resolved, n_steps=4)


@pytest.mark.parametrize("value, kind", [([1.0, 2.0, 3.0], "list"), (None, "NoneType"), (1.5, "float")])
def test_integrate_refuses_non_tensor_rate(value, kind):
    with pytest.raises(TypeError, match=rf"^f: must return a tensor like the state; got {kind}$"):
        cd.integrate(lambda t, x: value, torch.ones(3), n_steps=2)
    with pytest.raises(TypeError, match=rf"^f: must return a tensor like the state; got {kind}$"):
        cd.integrate_adaptive(lambda t, x: value, torch.ones(3), rtol=1e-3, atol=1e-6)


def test_integrate_refuses_broadcastable_shape():
    with pytest.raises(ValueError, match=r"^f: output shape \(1,\) differs from its input shape \(3,\)"):
        cd.integrate(lambda t, x: x.sum(0, keepdim=True), torch.ones(3), scheme="ab2", n_steps=3)


def test_integrate_adaptive_refuses_rate_of_other_dtype():
    with pytest.raises(ValueError, match=r"^f: output dtype torch.float64 differs from its input dtype torch.float32"):
        cd.integrate_adaptive(lambda t, x: (-x).double(), torch.ones(3), rtol=1e-3, atol=1e-6)


def test_integrate_allows_autocast_dtype():
    layer = nn.Linear(3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cd.integrate(lambda t, x: layer(x), torch.ones(2, 3), n_steps=2).state
    assert out.dtype == torch.float32


# --- integrate_adaptive: non-finite values ---------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("first_step", [None, 0.1])
def test_integrate_adaptive_refuses_non_finite_initial_state(bad, first_step):
    x0 = torch.tensor([1.0, bad])
    with pytest.raises(ValueError, match=r"^x0: the initial state holds NaN/inf values"):
        cd.integrate_adaptive(lambda t, x: -x, x0, rtol=1e-3, atol=1e-6, first_step=first_step)


@pytest.mark.parametrize("at", [0.0, 0.5])
def test_integrate_adaptive_names_non_finite_rate(at):
    def f(t, x):
        return -x * float("nan") if t >= at else -x

    with pytest.raises(ValueError, match=rf"^f: returned non-finite values \(NaN/inf\) at t = {at:g}\b"):
        cd.integrate_adaptive(f, torch.ones(2), rtol=1e-3, atol=1e-6, breakpoints=[0.5])


def test_integrate_adaptive_underflow_names_a_non_finite_error_estimate():
    def f(t, x):  # NaN from t = 0.5 on, with no breakpoint there: steps shrink towards it
        return -x * float("nan") if t >= 0.5 else -x

    with pytest.raises(cd.MaxStepsExceeded, match=r"^rtol/atol: step size underflow at t = 0\.5; the error estimate "
                                                   r"is not finite there"):
        cd.integrate_adaptive(f, torch.ones(2), rtol=1e-3, atol=1e-6)


def test_integrate_adaptive_still_rejects_overflowing_trial_steps():
    # A far too large first step overflows to inf inside the step; that step is rejected and
    # shrunk, not reported as a broken rate: x' = -x^3 has the solution (x0^-2 + 2t)^-1/2.
    solution = cd.integrate_adaptive(lambda t, x: -x**3, torch.tensor([10.0]), rtol=1e-6, atol=1e-8, first_step=10.0)
    x, stats = solution.state, solution.stats
    assert stats.n_rejected >= 1
    torch.testing.assert_close(x, torch.tensor([(0.01 + 2.0) ** -0.5]), rtol=1e-4, atol=1e-6)


# --- ContinuousBlock: the template is the rate --------------------------------------------------
class _Returns(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.how = how

    def forward(self, x):
        y = self.linear(x)
        if self.how == "double":
            return y.double()
        if self.how == "list":
            return [y]
        return y


@pytest.mark.parametrize("scheme", ["rk4", "ab2", "adaptive"])
def test_block_refuses_template_of_other_dtype_or_type(scheme):
    for how, error, message in [("double", ValueError, r"^template: output dtype torch.float64 differs from "
                                                       r"its input dtype torch.float32"),
                                ("list", TypeError, r"^template: must return a tensor like the state; got list$")]:
        block = cd.ContinuousBlock(_Returns(how), n_basis=2, scheme="rk4" if scheme == "adaptive" else scheme)
        with pytest.raises(error, match=message):
            if scheme == "adaptive":
                block.forward_adaptive(torch.ones(2, 3), AdaptiveDepth())
            else:
                block(torch.ones(2, 3))


def test_block_adaptive_refuses_non_finite_input():
    block = cd.ContinuousBlock(_Returns("plain"), n_basis=2).eval()
    with pytest.raises(ValueError, match=r"^x: the initial state holds NaN/inf values"):
        block.forward_adaptive(torch.tensor([[1.0, float("nan"), 0.0]]), AdaptiveDepth())

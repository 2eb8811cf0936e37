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


# --- a frozen template parameter stays frozen (issue 26) -------------------------------------------
@pytest.mark.parametrize("basis, n_basis", [("piecewise_constant", 2), ("piecewise_linear", 2), ("legendre", 3)])
def test_a_frozen_template_parameter_stays_frozen_through_refine_and_project(basis, n_basis):
    torch.manual_seed(0)
    template = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    template[0].weight.requires_grad_(False)  # a frozen layer (pretrained, say)
    given = template[0].weight.detach().clone()
    block = cd.ContinuousBlock(template, basis=basis, n_basis=n_basis, scheme="rk4", n_steps=2).double()
    x = torch.randn(3, 4, dtype=torch.float64)

    def check() -> None:
        frozen = block.coefficients.get("0.weight")
        assert not frozen.requires_grad and block.coefficients.get("2.weight").requires_grad
        for t in (0.0, 0.3, 1.0):  # the template's own value at every depth (float32 collocation rounding)
            torch.testing.assert_close(block.theta(t)["0.weight"], given.double(), rtol=0, atol=1e-6)
        block.zero_grad(set_to_none=True)
        block(x).square().sum().backward()
        assert frozen.grad is None and block.coefficients.get("2.weight").grad is not None

    check()
    block.refine()
    check()
    block.project(n_basis)
    check()
    fresh = cd.ContinuousBlock(template, basis=basis, n_basis=n_basis, scheme="rk4").double()
    fresh.load_state_dict(block.state_dict())
    assert not fresh.coefficients.get("0.weight").requires_grad


# --- gradient="adjoint" with a multistep scheme (issue 26) ------------------------------------------
def _gradients(scheme, n_steps: int, gradient: str) -> torch.Tensor:
    torch.manual_seed(0)
    template = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
    block = cd.ContinuousBlock(template, basis="legendre", n_basis=2, scheme=scheme, n_steps=n_steps,
                               gradient=gradient).double()
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    block(x).square().sum().backward()
    return torch.cat([p.grad.reshape(-1) for p in block.parameters()] + [x.grad.reshape(-1)])


@pytest.mark.parametrize("scheme, order", [("ab2", 2), ("ab3", 3)])
def test_the_adjoint_of_a_multistep_scheme_converges_to_the_ode_gradient_at_its_order(scheme, order):
    reference = _gradients("rk4", 64, "backprop")  # the ODE's gradient, to ~1e-8
    errors = [float((_gradients(scheme, n, "adjoint") - reference).norm() / reference.norm()) for n in (8, 16)]
    assert errors[0] / errors[1] > 2 ** order * 0.7  # halving the step divides the error by ~2^order
    backprop = float((_gradients(scheme, 16, "backprop") - reference).norm() / reference.norm())
    assert errors[1] < 2 * backprop  # as close to the ODE's gradient as the discrete pass's own


def test_the_adjoint_refuses_an_lm_scheme_with_one_k_per_step():
    template = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"^gradient: the adjoint cannot run 'lm_resnet' with one k per step"):
        cd.ContinuousBlock(template, n_basis=2, scheme=cd.LMResNetScheme([0.0, 0.2, 0.4, 0.6]), n_steps=4,
                           gradient="adjoint")
    block = cd.ContinuousBlock(template, n_basis=2, scheme=cd.LMResNetScheme(0.3), gradient="adjoint")  # one k: fine
    block(torch.randn(2, 3)).sum().backward()


# --- project() onto a larger basis (issue 26) -------------------------------------------------------
def test_project_onto_a_larger_basis_is_refused_and_points_at_refine():
    block = _model()[0]
    block.refine()
    with pytest.raises(ValueError, match=r"^n_basis: project\(\) compresses onto at most the block's 2 basis "
                                         r"functions, got 3; refine\(\) grows the basis exactly$"):
        block.project(3)
    with pytest.raises(ValueError, match=r"^n_basis: project\(\) compresses"):
        cd.nn.project(_model(), 2)
    assert block.n_basis == 2
    block.project(2, n_steps=3)  # the same size: allowed (a change of steps)
    block.project(1)


# --- loading a state dict with another basis size (issue 26) ----------------------------------------
def test_a_refined_models_state_dict_loads_into_a_freshly_built_model():
    trained = _model()
    _train(trained, _sgd(trained))
    cd.nn.refine(trained)
    cd.nn.refine(trained)
    fresh = _model()
    assert fresh.load_state_dict(trained.state_dict()) is not None
    assert cd.nn.layout(fresh) == cd.nn.layout(trained) == [
        {"basis": "piecewise_constant", "n_basis": 4, "scheme": "euler", "n_steps": 4}]
    x = torch.randn(5, 4)
    torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)
    block = cd.ContinuousBlock(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)), n_basis=1, scheme="euler")
    block.load_state_dict(trained[0].state_dict())  # a block on its own, too
    assert block.n_basis == 4
    cd.nn.project(trained, 2)  # and back down: compressed weights load into a larger block
    fresh.load_state_dict(trained.state_dict())
    assert fresh[0].n_basis == 2 and fresh[0].n_steps == 2


def test_a_normalised_models_refined_weights_load_with_their_statistics():
    model = cd.models.create("continuousnet", in_channels=1, alpha=4, n_basis=1)
    model(torch.randn(4, 1, 8, 8))  # training mode: statistics sampled
    cd.nn.refine(model)
    fresh = cd.models.create("continuousnet", in_channels=1, alpha=4, n_basis=1)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("change, message", [
    ("disagree", r"^0\.coefficients\.2\.weight: holds 3 basis functions but 0\.coefficients\.0\.weight holds 2; "
                 r".*contdepth\.nn\.apply_layout"),
    ("too_many", r"^0\.coefficients\.0\.weight: holds 600 basis functions; a block has 1\.\.512 .*apply_layout"),
])
def test_stored_sizes_a_block_cannot_take_are_refused_naming_apply_layout(change, message):
    model = _model()
    cd.nn.refine(model)
    state = model.state_dict()
    if change == "disagree":
        state["0.coefficients.2.weight"] = torch.zeros(3, 4, 4)
    else:
        state = {k: (v[:1].expand(600, *v.shape[1:]) if "coefficients" in k else v) for k, v in state.items()}
    fresh = _model()
    with pytest.raises(RuntimeError, match=message):
        fresh.load_state_dict(state)
    assert fresh[0].n_basis == 1  # nothing of the block changed


def test_a_size_the_basis_family_cannot_have_is_refused():
    torch.manual_seed(0)
    legendre = cd.ContinuousBlock(nn.Linear(3, 3), basis="legendre", n_basis=1)
    state = {k: v[:1] for k, v in legendre.state_dict().items()}
    linear = cd.ContinuousBlock(nn.Linear(3, 3), basis="piecewise_linear", n_basis=2)
    with pytest.raises(RuntimeError, match=r"^coefficients\.weight: holds 1 basis functions, which the "
                                           r"piecewise_linear basis cannot have .*apply_layout"):
        linear.load_state_dict(state)


def test_another_architecture_still_gets_torchs_size_mismatch():
    block = cd.ContinuousBlock(nn.Linear(3, 3), n_basis=2)
    other = cd.ContinuousBlock(nn.Linear(5, 5), n_basis=2)
    with pytest.raises(RuntimeError, match="size mismatch for coefficients.weight"):
        block.load_state_dict(other.state_dict())


# --- integrate_adaptive: default tolerances (issue 26) ----------------------------------------------
def test_integrate_adaptive_has_default_tolerances():
    solution = cd.integrate_adaptive(lambda t, x: -x, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(solution.state, torch.full((3,), 0.36787944117144233, dtype=torch.float64),
                               rtol=1e-3, atol=0)
    tighter = cd.integrate_adaptive(lambda t, x: -x, torch.ones(3, dtype=torch.float64), rtol=1e-8, atol=1e-10)
    assert solution.stats.n_steps < tighter.stats.n_steps


# --- print(CheckpointInfo) (issue 26) ---------------------------------------------------------------
def test_a_checkpoint_info_prints_as_a_short_summary(tmp_path):
    from contdepth.train import load_checkpoint, save_checkpoint

    model = cd.models.create("continuousnet", in_channels=1, alpha=4, n_basis=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    optimizer.step()
    refine_with_optimizer(model, optimizer)
    save_checkpoint(tmp_path, model, optimizer, epoch=2,
                    history=[{"epoch": e, "test_accuracy": 0.5, "total_time": 1.0} for e in (1, 2)])
    _, info = load_checkpoint(tmp_path)
    text = repr(info)
    assert str(info) == text and "\n" not in text and len(text) < 700
    assert "model='continuousnet' [in_channels=1, alpha=4, n_basis=1]" in text and "epoch=2" in text
    assert "layout=[piecewise_constant x2 / euler x2; " in text and "history=2 entries" in text
    assert "optimizer=Adam (1 param group, 40 parameters; state: exp_avg x40 (" in text
    assert "tensor(" not in text and "param_groups" not in text

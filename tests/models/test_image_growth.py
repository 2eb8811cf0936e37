"""cd.grow on image models (issue 30): ResNet, LM-ResNet and ContinuousNet keep what each method says."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import contdepth as cd
from contdepth.analysis import resnet_as_continuous
from contdepth.models import create
from contdepth.models.image import ContinuousNet
from contdepth.nn import manifest
from contdepth.nn.grow import copy_units, last_layer, unit_plan

X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
LABELS = torch.tensor([0, 1, 2, 3])
SMALL = dict(alpha=2, num_classes=5)


def image_model(name: str, seed: int = 0, warm: bool = True, **options) -> nn.Module:
    """A float64 model in eval mode; ``warm``: its running statistics moved by a few training passes."""
    torch.manual_seed(seed)
    model = create(name, **{**SMALL, **options}).double()
    if warm:
        model.train()
        with torch.no_grad():
            for k in range(3):
                model(torch.randn(4, 3, 8, 8, dtype=torch.float64) * (1 + k) + k)
    return model.eval()


def out(model, x=X):
    with torch.no_grad():
        return model(x)


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=0, atol=tol)


def stages_applied(model, times: int, x=X):
    """``model`` with every stage's body applied ``times`` times (what ``stack`` should compute)."""
    with torch.no_grad():
        x = model.stem(x)
        for stitch, body in model.stages:
            x = stitch(x)
            for _ in range(times):
                x = body(x)
        return model.head(x)


# --- zero: the function, exactly -----------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [("resnet", {}), ("resnet", {"norm": "group"}), ("continuousnet", {}),
                                           ("continuousnet", {"scheme": "rk4", "n_steps": 4})])
@pytest.mark.parametrize("factor", [2, 3])
def test_zero_keeps_the_function_exactly_in_eval_and_train_mode(name, options, factor):
    model = image_model(name, **options)
    grown, growth = cd.grow(model, "zero", factor)
    close(out(grown), out(model))
    train_model, train_grown = copy.deepcopy(model).train(), copy.deepcopy(grown).train()
    close(out(train_grown), out(train_model))  # batch statistics: the zeroed output layer still adds zero
    if name == "resnet":
        old, new = model.stages[1][1].units, grown.stages[1][1].units
        assert len(new) == factor * len(old)
        assert not new[1][5].weight.any() and new[1][2].weight.abs().sum() > 0  # fresh, its output layer zero
        assert torch.equal(new[factor][2].weight, old[1][2].weight)
        if options.get("norm") != "group":  # copied units bring their statistics, fresh ones have the defaults
            assert torch.equal(new[factor][0].running_mean, old[1][0].running_mean)
            assert not new[1][0].running_mean.any() and torch.equal(new[1][0].running_var, torch.ones_like(
                new[1][0].running_var))
        assert "stages.1.1.units.1.2.weight" in growth.fresh
        assert growth.peers["stages.1.1.units.1.2.weight"] == "stages.1.1.units.0.2.weight"
    else:
        block, old = grown.stages[1][1], model.stages[1][1]
        cells, olds = dict(block.coefficient_items()), dict(old.coefficient_items())
        assert block.n_basis == factor * old.n_basis and block.n_steps == factor * old.n_steps and block.t1 == 1.0
        assert not cells["5.weight"][1:factor].any()
        assert torch.equal(cells["5.weight"][factor], olds["5.weight"][1] * factor)  # its steps are factor x smaller
        assert torch.equal(cells["2.weight"][factor], olds["2.weight"][1])
        state = dict(block.state_items())
        assert torch.equal(state["0.running_mean"][factor], dict(old.state_items())["0.running_mean"][1])
        assert growth.fresh == ()  # new cells are rows of carried coefficients


def test_a_body_ending_in_batchnorm_is_zeroed_and_scaled_in_its_weight_and_bias():
    torch.manual_seed(0)

    def unit():
        return nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2))

    old = [unit().double() for _ in range(2)]
    for u in old:
        nn.init.normal_(u[1].weight), nn.init.normal_(u[1].bias)
    new = [unit().double() for _ in range(4)]
    assert last_layer(old[0]) == "1"
    copy_units(old, new, unit_plan("zero", 2, 2), ("1",))
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    for mode in (True, False):
        for u in new:
            u.train(mode)
        assert not new[1](x).any()  # BN's weight and bias zero: a zero body in both modes
    copy_units(old, new, unit_plan("interpolate", 2, 2), ("1",))
    for u, o in ((new[0], old[0]), (new[3], old[1])):
        u.eval(), o.eval()
        close(u(x), o(x) / 2, tol=1e-14)


# --- refine: theta(t) and the normalisation state, exactly ---------------------------------------------------
@pytest.mark.parametrize("basis", ["piecewise_constant", "piecewise_linear"])
@pytest.mark.parametrize("factor", [2, 4])
def test_refining_a_continuousnet_keeps_theta_and_its_state_exactly(basis, factor):
    model = image_model("continuousnet", basis=basis)
    grown, growth = cd.grow(model, "refine", factor)
    reference = copy.deepcopy(model)
    for _ in range(factor.bit_length() - 1):
        cd.nn.refine(reference)
    assert grown.stages[0][1].n_steps == 2 * factor
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(grown.state_dict()[key], value, rtol=0, atol=1e-14)
    with manifest(grown, n_steps=2):  # on its old grid: the old function, statistics included
        close(out(grown), out(model))
    source = growth.sources["stages.2.1.coefficients.0.weight"]
    assert source.matrix.shape == (grown.stages[2][1].n_basis, 2)
    assert growth.preserves.startswith("the depth function")


def test_refining_a_continuous_lm_resnet_keeps_theta_and_k():
    model = image_model("lm_resnet", continuous=True)
    grown, _ = cd.grow(model, "refine", 2)
    assert grown.config["options"]["n_units"] == [4, 4, 4] and grown.stages[0][1].block.n_steps == 4
    assert torch.equal(grown.stages[1][1].k, model.stages[1][1].k)
    with manifest(grown, n_steps=2):
        close(out(grown), out(model))


@pytest.mark.parametrize("factor", [2, 4])
def test_refining_a_resnet_is_its_reading_refined_and_given_back_which_is_interpolate(factor):
    model = image_model("resnet", n_units=[2, 3, 2])
    grown, growth = cd.grow(model, "refine", factor)
    reading = resnet_as_continuous(model)
    cd.nn.refine(reading)
    for _ in range(factor.bit_length() - 2):
        cd.nn.refine(reading)
    back = resnet_as_continuous(grown)
    for (key, value), (_, refined) in zip(back.state_dict().items(), reading.state_dict().items()):
        if not key.endswith("state_depth_range"):
            torch.testing.assert_close(value, refined, rtol=0, atol=1e-14)
    interpolated, interpolation = cd.grow(model, "interpolate", factor)
    assert growth.sources == interpolation.sources
    for key, value in interpolated.state_dict().items():
        assert torch.equal(grown.state_dict()[key], value)


# --- interpolate: the same ODE on a finer grid ---------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 3])
def test_interpolating_a_resnet_is_its_continuous_reading_on_a_finer_euler_grid(factor):
    model = image_model("resnet", n_units=[2, 1, 3])
    grown, growth = cd.grow(model, "interpolate", factor)
    reading = resnet_as_continuous(model)
    for stage, n in zip(reading.stages, (2, 1, 3)):
        stage[1].manifest("euler", factor * n)
    close(out(grown), out(reading))
    source = growth.sources[f"stages.2.1.units.{factor}.5.weight"]  # unit 1's first copy: its output layer
    assert source.name == "stages.2.1.units.1.5.weight" and source.scale == 1 / factor
    assert growth.sources[f"stages.2.1.units.{factor}.2.weight"].scale == 1.0
    assert torch.equal(grown.stages[2][1].units[factor][0].running_var, model.stages[2][1].units[1][0].running_var)


def test_interpolating_a_continuousnet_only_refines_its_grid():
    model = image_model("continuousnet", basis="piecewise_linear", scheme="rk4")
    grown, growth = cd.grow(model, "interpolate", 3)
    assert [s[1].n_steps for s in grown.stages] == [6, 6, 6] and grown.stages[0][1].n_basis == 2
    with manifest(model, n_steps=6):
        close(out(grown), out(model), tol=0)
    assert growth.unchanged and growth.fresh == ()


def test_interpolating_an_lm_resnet_keeps_k_and_a_plain_first_step():
    model = image_model("lm_resnet", n_units=3, lm_start="shortcut")
    grown, growth = cd.grow(model, "interpolate", 2)
    for i in (0, 1):  # stage 0 starts plain (its copies of unit 0 stay plain), stage 1 with the shortcut
        old, new = model.stages[i][1].k, grown.stages[i][1].k
        first = old[0] if i else 0.0
        assert new.tolist() == [old[0].item(), first, old[1].item(), old[1].item(), old[2].item(), old[2].item()]
    assert torch.equal(grown.stages[0][1].units[1][5].weight, model.stages[0][1].units[0][5].weight / 2)
    # with every k zero it is a ResNet, and the growth is the ResNet's: the same ODE on a finer grid
    flat = image_model("lm_resnet", n_units=3)
    resnet = image_model("resnet", n_units=3, warm=False)
    with torch.no_grad():
        for stage in flat.stages:
            stage[1].k.zero_()
    resnet.load_state_dict({k: v for k, v in flat.state_dict().items() if not k.endswith(".k")})
    close(out(cd.grow(flat, "interpolate", 3)[0]), out(cd.grow(resnet, "interpolate", 3)[0]))


# --- stack: the stage repeated --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [("resnet", {}), ("lm_resnet", {}), ("continuousnet", {}),
                                           ("continuousnet", {"scheme": "rk4", "n_steps": 4})])
def test_stack_repeats_every_stage(name, options):
    model = image_model(name, **options)
    grown, growth = cd.grow(model, "stack", 3)
    close(out(grown), stages_applied(model, 3))
    if name == "continuousnet":
        old, new = dict(model.stages[0][1].coefficient_items()), dict(grown.stages[0][1].coefficient_items())
        assert torch.equal(new["2.weight"], old["2.weight"].repeat(3, 1, 1, 1, 1))
        assert torch.equal(new["5.weight"], old["5.weight"].repeat(3, 1, 1, 1, 1) * 3)
    else:
        assert growth.sources["stages.1.1.units.4.5.weight"].name == "stages.1.1.units.0.5.weight"
    assert growth.fresh == () and growth.preserves.startswith("nothing")


def test_stacked_and_zero_grown_cells_read_the_state_they_read_before():
    """State sampled over part of the depth (a coarser training grid): the copies keep reading the same depths."""
    torch.manual_seed(0)
    model = create("continuousnet", **SMALL, n_basis=4, n_steps=4).double().train()
    with torch.no_grad(), manifest(model, n_steps=2):  # samples cells 0 and 2 only; cell 3 reads cell 2's state
        for k in range(3):
            model(torch.randn(4, 3, 8, 8, dtype=torch.float64) + k)
    model.eval()
    assert model.stages[0][1].state_depths == (0.0, 0.5)
    zero, _ = cd.grow(model, "zero", 2)
    close(out(zero), out(model))
    assert zero.stages[0][1].state_depths == (0.0, 0.5)
    stacked, _ = cd.grow(model, "stack", 2)
    close(out(stacked), stages_applied(model, 2))
    assert stacked.stages[0][1].state_depths == (0.0, 0.75)


# --- the grown model: options, mode, dtype, random numbers -----------------------------------------------------
@pytest.mark.parametrize("name, options, method", [
    ("resnet", {}, "zero"), ("resnet", {"n_units": [1, 2, 1]}, "refine"), ("lm_resnet", {"survival": 0.5}, "stack"),
    ("continuousnet", {"basis": "piecewise_linear"}, "refine"), ("continuousnet", {}, "zero"),
    ("continuousnet", {"n_steps": 3}, "interpolate"), ("lm_resnet", {"continuous": True}, "stack")])
def test_the_grown_model_is_rebuilt_from_its_config_and_keeps_mode_and_dtype(name, options, method):
    model = image_model(name, **options).train()
    grown, _ = cd.grow(model, method)
    assert grown.training and next(grown.parameters()).dtype == torch.float64
    rebuilt = create(grown.config["name"], **grown.config["options"]).double().eval()
    rebuilt.load_state_dict(grown.state_dict())
    close(out(rebuilt), out(grown.eval()), tol=0)


def test_only_zero_draws_random_numbers_and_a_seed_reproduces_it():
    model = image_model("resnet")
    before = torch.get_rng_state()
    for method in ("refine", "interpolate", "stack"):
        cd.grow(model, method)
        assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    first, _ = cd.grow(model, "zero")
    torch.manual_seed(7)
    second, _ = cd.grow(model, "zero")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


# --- the optimizer --------------------------------------------------------------------------------------------
def loss_of(model):
    return nn.functional.cross_entropy(model(X), LABELS)


def trained(model, optimizer, steps: int = 2):
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_of(model).backward()
        optimizer.step()
    return optimizer


def step_runs(optimizer, grown):
    before = [p.detach().clone() for p in grown.parameters()]
    optimizer.zero_grad()
    loss = loss_of(grown)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(a, p) for a, p in zip(before, grown.parameters()) if p.grad is not None and p.grad.any())


def test_sgd_momentum_is_carried_with_the_output_layers_factor():
    model = image_model("resnet")
    optimizer = trained(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    names = dict(model.named_parameters())
    buffers = {name: optimizer.state[p]["momentum_buffer"].clone() for name, p in names.items()}
    grown, growth = cd.grow(model, "interpolate", 2, optimizer=optimizer)
    for name, p in grown.named_parameters():
        source = growth.sources[name]
        scale = 0.5 if name.startswith("stages.") and name.endswith(".5.weight") and ".1.units." in name else 1.0
        assert source.scale == scale
        assert torch.equal(optimizer.state[p]["momentum_buffer"], buffers[source.name] * scale)
    assert [len(g["params"]) for g in optimizer.param_groups] == [len(list(grown.parameters()))]
    step_runs(optimizer, grown)


@pytest.mark.parametrize("method", ["zero", "stack"])
def test_adam_moments_of_a_continuousnets_cells_follow_their_copies(method):
    model = image_model("continuousnet")
    optimizer = trained(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    name, inner = "stages.1.1.coefficients.5.weight", "stages.1.1.coefficients.2.weight"
    state = {k: v.clone() for k, v in optimizer.state[model.get_parameter(name)].items()}
    inner_state = optimizer.state[model.get_parameter(inner)]["exp_avg_sq"].clone()
    grown, _ = cd.grow(model, method, 2, optimizer=optimizer)
    carried = optimizer.state[grown.get_parameter(name)]
    rows = [0, 2] if method == "zero" else [0, 1]
    assert torch.equal(carried["exp_avg"][rows], state["exp_avg"] * 2)  # the output layer times the factor
    assert torch.equal(carried["exp_avg_sq"][rows], state["exp_avg_sq"] * 4)
    if method == "zero":
        assert not carried["exp_avg"][1::2].any() and not carried["exp_avg_sq"][1::2].any()
    else:
        assert torch.equal(carried["exp_avg"][2:], carried["exp_avg"][:2])
    assert torch.equal(optimizer.state[grown.get_parameter(inner)]["exp_avg_sq"][rows], inner_state)  # unscaled
    step_runs(optimizer, grown)


def test_new_units_start_without_state_and_lm_k_moments_follow_k():
    model = image_model("lm_resnet")
    optimizer = trained(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    k = optimizer.state[model.stages[1][1].k]["exp_avg"].clone()
    grown, growth = cd.grow(model, "stack", 2, optimizer=optimizer)
    assert torch.equal(optimizer.state[grown.stages[1][1].k]["exp_avg"], torch.cat([k, torch.zeros_like(k[:1]), k[1:]]))
    step_runs(optimizer, grown)

    model = image_model("resnet")
    optimizer = trained(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    grown, growth = cd.grow(model, "zero", 2, optimizer=optimizer)
    for name, p in grown.named_parameters():
        assert (name in growth.fresh) == (p not in optimizer.state)
    assert len(growth.fresh) == 3 * 2 * 6  # a new unit per old one, 6 tensors each
    step_runs(optimizer, grown)


def test_reset_drops_every_state():
    model = image_model("continuousnet")
    optimizer = trained(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    grown, _ = cd.grow(model, "refine", 2, optimizer=optimizer, optimizer_state="reset")
    assert not optimizer.state
    step_runs(optimizer, grown)


# --- refused, in one line -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model, method, message", [
    (lambda: image_model("lm_resnet", warm=False), "refine", "^method: refine needs a theta"),
    (lambda: image_model("lm_resnet", warm=False), "zero", "^method: zero cannot keep an LM-ResNet's function"),
    (lambda: image_model("lm_resnet", continuous=True, warm=False), "interpolate",
     "^method: lm_resnet \\(continuous\\) integrates on as many steps as it has cells"),
    (lambda: image_model("lm_resnet", continuous=True, warm=False), "zero",
     "^method: zero keeps the function only under a one-step scheme"),
    (lambda: image_model("lm_resnet", continuous=True, basis="piecewise_linear", warm=False), "refine",
     "^method: lm_resnet \\(continuous\\) integrates on as many steps as it has cells; grown it would have"),
    (lambda: image_model("continuousnet", basis="legendre", warm=False), "stack",
     "^method: stack repeats or inserts cells of a piecewise-constant theta"),
    (lambda: image_model("continuousnet", n_steps=3, warm=False), "zero",
     "^method: zero keeps the function only when every cell holds whole steps"),
    (lambda: create("resnet", alpha=1, n_units=[1, 300, 1]), "stack",
     "^factor: 300 units grown by 2 would be 600, over the 512 units a stage holds$"),
    (lambda: create("continuousnet", alpha=1, n_basis=[1, 1, 300]), "zero",
     "^factor: 300 cells grown by 2 would be 600, over the 512 cells"),
    (lambda: create("polynet", alpha=2), "zero", "^model: image growth supports continuousnet, lm_resnet, resnet "
                                                  "built by contdepth.models.create .*, not polynet \\(StagedNet\\)$"),
    (lambda: ContinuousNet(in_channels=3, num_classes=2, alpha=2, widen=1, n_basis=(1, 1, 1), n_steps=None,
                           basis="piecewise_constant", scheme="euler", norm="batch", eps=1.0, checkpoint=False), "zero",
     "^model: image growth supports .*, not ContinuousNet \\(not built by create\\)$"),
    (lambda: create("continuous_mlp"), "zero", "^model: growth supports gpt, resnet, lm_resnet and continuousnet, "
                                               "not continuous_mlp \\(ContinuousMLP\\)$"),
])
def test_what_a_model_cannot_grow_by_is_refused_in_one_line(model, method, message):
    with pytest.raises(ValueError, match=message) as raised:
        cd.grow(model(), method)
    assert "\n" not in str(raised.value)

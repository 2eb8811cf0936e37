"""cd.grow (issue 30): each method keeps what it says, the optimizer is carried as refinement carries it."""

from __future__ import annotations

import copy

import pytest
import torch

import contdepth as cd
from contdepth.models import create
from contdepth.models.gpt import continuous_from_layers
from contdepth.models.gpt_growth import layers_from_continuous
from contdepth.nn import manifest
from contdepth.train import named_parameter_groups, refine_with_optimizer

TOKENS = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
SMALL = dict(width=16, heads=2, layers=2, context=8)


def gpt(seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create("gpt", **{**SMALL, **options}).double().eval()


def out(model, tokens=TOKENS):
    with torch.no_grad():
        return model(tokens)


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=0, atol=tol)


def loss_of(model):
    logits = model(TOKENS[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, 256), TOKENS[:, 1:].reshape(-1))


def trained_adamw(model, steps: int = 2, weight_decay: float = 0.1):
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]}
              for g in named_parameter_groups(model, weight_decay)]
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_of(model).backward()
        optimizer.step()
    return optimizer


# --- what each method keeps ------------------------------------------------------------------------
@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("factor", [2, 3])
def test_zero_keeps_the_function_exactly_and_its_new_layers_are_fresh_with_zero_outputs(continuous, factor):
    model = gpt(continuous=continuous)
    grown, growth = cd.grow(model, "zero", factor)
    close(out(grown), out(model))
    assert (grown.layers.n_basis if continuous else len(grown.layers)) == 2 * factor
    if continuous:  # cells 1, 2 (factor 3) are new: zero output rows, fresh draws elsewhere
        assert grown.layers.t1 == 2.0 * factor and grown.layers.n_steps == 2 * factor  # a step keeps its size 1
        cells = dict(grown.layers.coefficient_items())
        assert not cells["modules_of_terms.0.proj.weight"][1:factor].any()
        assert not cells["modules_of_terms.1.proj.bias"][1:factor].any()
        assert cells["modules_of_terms.0.qkv.weight"][1].abs().sum() > 0
        assert growth.fresh == ()  # new cells are rows of carried coefficients (their rows of the map are zero)
    else:
        new = grown.layers[1]
        assert not new.attention.proj.weight.any() and not new.mlp.proj.bias.any()
        assert new.attention.qkv.weight.abs().sum() > 0
        assert torch.equal(grown.layers[factor].mlp.fc.weight, model.layers[1].mlp.fc.weight)
        assert "layers.1.attention.qkv.weight" in growth.fresh
        assert growth.peers["layers.1.attention.qkv.weight"] == "layers.0.attention.qkv.weight"


@pytest.mark.parametrize("basis", ["piecewise_constant", "piecewise_linear"])
@pytest.mark.parametrize("factor", [2, 4])
def test_refine_keeps_theta_exactly_as_block_refine_does(basis, factor):
    model = gpt(continuous=True, basis=basis)
    grown, growth = cd.grow(model, "refine", factor)
    assert grown.layers.n_steps == 2 * factor and grown.layers.t1 == model.layers.t1
    with manifest(grown, n_steps=model.layers.n_steps):  # on its old grid: the same function
        close(out(grown), out(model))
    reference = copy.deepcopy(model)
    for _ in range(factor.bit_length() - 1):
        reference.layers.refine()
    for (name, c), (_, r) in zip(grown.layers.coefficient_items(), reference.layers.coefficient_items()):
        torch.testing.assert_close(c, r, rtol=0, atol=1e-14)
    assert growth.preserves.startswith("the depth function")


@pytest.mark.parametrize("factor", [2, 4])
def test_refining_a_discrete_gpt_repeats_each_layer_with_its_outputs_divided(factor):
    model = gpt(layers=3)
    grown, growth = cd.grow(model, "refine", factor)
    assert not grown.continuous and len(grown.layers) == 3 * factor
    # its theta(t) is the original's: the continuous reading on [0, 3] at the old 3 steps computes the original
    reading = continuous_from_layers(grown, depth=3.0)
    with manifest(reading, n_steps=3):
        close(out(reading), out(model))
    interpolated, interpolation = cd.grow(model, "interpolate", factor)  # the same model, for piecewise-constant cells
    assert growth.sources == interpolation.sources
    for key, value in interpolated.state_dict().items():
        torch.testing.assert_close(grown.state_dict()[key], value, rtol=0, atol=1e-15)
    assert torch.equal(grown.layers[factor + 1].attention.proj.bias, model.layers[1].attention.proj.bias / factor)


@pytest.mark.parametrize("factor", [2, 3])
def test_interpolate_is_the_same_ode_on_a_finer_grid(factor):
    model = gpt(layers=3)
    grown, growth = cd.grow(model, "interpolate", factor)
    reading = continuous_from_layers(model)
    with manifest(reading, "lie_trotter", factor * 3):
        close(out(grown), out(reading))
    source = growth.sources[f"layers.{factor}.mlp.proj.weight"]  # layer 1's first copy
    assert source.name == "layers.1.mlp.proj.weight" and source.scale == 1 / factor
    assert growth.sources[f"layers.{factor}.mlp.fc.weight"].scale == 1.0

    continuous = gpt(continuous=True, basis="piecewise_linear")
    grown, growth = cd.grow(continuous, "interpolate", factor)
    assert grown.layers.n_steps == 2 * factor and grown.layers.n_basis == 2
    with manifest(continuous, n_steps=2 * factor):
        close(out(grown), out(continuous), tol=0)
    assert growth.unchanged and growth.fresh == ()  # no new parameters: only the grid changed


@pytest.mark.parametrize("continuous", [False, True])
def test_stack_repeats_the_stack(continuous):
    model = gpt(continuous=continuous)
    grown, growth = cd.grow(model, "stack", 3)
    if continuous:
        old, new = dict(model.layers.coefficient_items()), dict(grown.layers.coefficient_items())
        assert all(torch.equal(new[name], value.repeat(3, *[1] * (value.dim() - 1))) for name, value in old.items())
        assert grown.layers.t1 == 6.0 and grown.layers.n_steps == 6
    else:
        for j, layer in enumerate(grown.layers):
            for key, value in layer.state_dict().items():
                assert torch.equal(value, model.layers[j % 2].state_dict()[key])
        assert growth.sources["layers.4.attention.proj.weight"].name == "layers.0.attention.proj.weight"
    with torch.no_grad():  # the function of the stack applied three times
        x = model.embed(TOKENS) + model.position(torch.arange(TOKENS.shape[1]))
        for _ in range(3):
            x = model.layers(x)
        close(out(grown), model.head(model.norm(x)))
    assert growth.fresh == () and growth.preserves.startswith("nothing")


def test_layers_from_continuous_inverts_continuous_from_layers():
    model = gpt(layers=3)
    back = layers_from_continuous(continuous_from_layers(model, depth=1.5))
    close(out(back), out(model))
    with pytest.raises(ValueError, match="^model: discrete layers are piecewise-constant cells under lie_trotter"):
        layers_from_continuous(gpt(continuous=True, n_steps=4))


# --- the grown model: options, mode, dtype, random numbers -------------------------------------------
@pytest.mark.parametrize("continuous, method", [(False, "refine"), (False, "zero"), (True, "refine"), (True, "stack"),
                                                (True, "interpolate")])
def test_the_grown_model_is_rebuilt_from_its_config_and_keeps_mode_dtype_and_tied_embeddings(continuous, method):
    model = gpt(continuous=continuous).train()
    grown, _ = cd.grow(model, method)
    assert grown.training and grown.embed.weight.dtype == torch.float64
    assert grown.head.weight is grown.embed.weight
    rebuilt = create(grown.config["name"], **grown.config["options"]).double().eval()
    rebuilt.load_state_dict(grown.state_dict())
    close(out(rebuilt), out(grown.eval()), tol=0)
    untied = gpt(tied_embeddings=False)
    grown, _ = cd.grow(untied, method="stack")
    assert torch.equal(grown.head.weight, untied.head.weight) and grown.head.weight is not grown.embed.weight


def test_only_zero_draws_random_numbers_and_a_seed_reproduces_it():
    model = gpt()
    before = torch.get_rng_state()
    for method in ("refine", "interpolate", "stack"):
        cd.grow(model, method)
        assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    first, _ = cd.grow(model, "zero")
    torch.manual_seed(7)
    second, _ = cd.grow(model, "zero")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


# --- the optimizer --------------------------------------------------------------------------------
def test_adamw_moments_are_carried_with_the_factor_and_its_square():
    model = gpt().train()
    optimizer = trained_adamw(model)
    old = {name: p for name, p in model.named_parameters()}
    states = {name: {k: v.clone() for k, v in optimizer.state[p].items()} for name, p in old.items()}
    grown, growth = cd.grow(model, "interpolate", 2, optimizer=optimizer)
    for name, p in grown.named_parameters():
        source = growth.sources[name]
        state, before = optimizer.state[p], states[source.name]
        s = 0.5 if ".proj." in name and name.startswith("layers.") else 1.0
        assert source.scale == s
        assert torch.equal(state["exp_avg"], before["exp_avg"] * s)
        assert torch.equal(state["exp_avg_sq"], before["exp_avg_sq"] * s * s)
        assert torch.equal(state["step"], before["step"])
    steps = [optimizer.state[p]["step"] for p in grown.parameters()]
    assert len({id(t) for t in steps}) == len(steps)  # each copy counts its own steps
    check_groups(optimizer, grown)
    step_runs(optimizer, grown)


def test_new_parameters_start_with_no_state_in_the_group_the_decay_rule_gives():
    model = gpt().train()
    optimizer = trained_adamw(model)
    exp_avg = optimizer.state[model.layers[1].mlp.fc.weight]["exp_avg"].clone()
    grown, growth = cd.grow(model, "zero", 2, optimizer=optimizer)
    for name, p in grown.named_parameters():
        assert (name in growth.fresh) == (p not in optimizer.state)
    assert torch.equal(optimizer.state[grown.layers[2].mlp.fc.weight]["exp_avg"], exp_avg)
    assert len(growth.fresh) == 24  # two new layers of 12 tensors each
    check_groups(optimizer, grown)
    step_runs(optimizer, grown)


def test_a_continuous_refinement_maps_the_state_as_refine_with_optimizer_does():
    model = gpt(continuous=True, basis="piecewise_linear").train()
    optimizer = trained_adamw(model)
    reference = copy.deepcopy(model)
    reference_optimizer = trained_adamw(reference, steps=0)
    reference_optimizer.load_state_dict(optimizer.state_dict())
    refine_with_optimizer(reference, reference_optimizer)
    grown, _ = cd.grow(model, "refine", 2, optimizer=optimizer)
    for p, r in zip(grown.parameters(), reference.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(optimizer.state[p][key], reference_optimizer.state[r][key], rtol=0, atol=1e-15)
    check_groups(optimizer, grown)
    step_runs(optimizer, grown)


def test_continuous_zero_growth_gives_new_cells_zero_moments_and_sgd_momentum_is_carried():
    model = gpt(continuous=True).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_of(model).backward()
    optimizer.step()
    name = "layers.coefficients.modules_of_terms.1.proj.weight"
    buffer = optimizer.state[model.get_parameter(name)]["momentum_buffer"].clone()
    grown, _ = cd.grow(model, "zero", 2, optimizer=optimizer)
    carried = optimizer.state[grown.get_parameter(name)]["momentum_buffer"]
    assert torch.equal(carried[0::2], buffer) and not carried[1::2].any()
    assert [len(g["params"]) for g in optimizer.param_groups] == [len(list(grown.parameters()))]
    step_runs(optimizer, grown)


def test_reset_drops_every_state_and_keeps_the_groups():
    model = gpt().train()
    optimizer = trained_adamw(model)
    grown, _ = cd.grow(model, "stack", 2, optimizer=optimizer, optimizer_state="reset")
    assert not optimizer.state
    check_groups(optimizer, grown)
    step_runs(optimizer, grown)


def test_parameters_outside_the_model_stay_in_the_optimizer():
    model = gpt().train()
    extra = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    optimizer = torch.optim.Adam([{"params": list(model.parameters())}, {"params": [extra], "lr": 0.5}], lr=1e-3)
    (loss_of(model) + extra.sum()).backward()
    optimizer.step()
    grown, _ = cd.grow(model, "zero", 2, optimizer=optimizer)
    assert optimizer.param_groups[1]["params"] == [extra] and "exp_avg" in optimizer.state[extra]
    assert len(optimizer.param_groups[0]["params"]) == len(list(grown.parameters()))


def check_groups(optimizer, grown):
    expected = named_parameter_groups(grown, 0.1)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [g["weight_decay"] for g in expected]
    for group, want in zip(optimizer.param_groups, expected):
        assert [id(p) for p in group["params"]] == [id(p) for p in want["params"]]


def step_runs(optimizer, grown):
    before = [p.detach().clone() for p in grown.parameters()]
    optimizer.zero_grad()
    loss = loss_of(grown)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, grown.parameters()))


# --- bad arguments ----------------------------------------------------------------------------------
def test_bad_arguments_are_one_line():
    model = gpt()
    cases = [
        (dict(method="deeper"), "^method: must be one of refine, interpolate, stack, zero; got 'deeper'$"),
        (dict(method="zero", factor=1), "^factor: must be an integer in 2..16, got 1$"),
        (dict(method="zero", factor=17), "^factor: must be an integer in 2..16, got 17$"),
        (dict(method="zero", factor=2.0), "^factor: must be an integer"),
        (dict(method="refine", factor=3), "^factor: refine doubles the basis, so the factor must be a power of 2"),
        (dict(method="zero", optimizer_state="keep"), "^optimizer_state: must be one of map, reset; got 'keep'$"),
        (dict(method="zero", optimizer="adamw"), "^optimizer: expected a torch.optim.Optimizer or None, got str$"),
        (dict(method="zero", optimizer=torch.optim.SGD(gpt().parameters(), lr=0.1)),
         "^optimizer: holds none of the model's parameters"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            cd.grow(model, **arguments)
    with pytest.raises(ValueError, match=r"^model: growth supports gpt, resnet, lm_resnet and continuousnet, not "
                                         r"continuous_mlp \(ContinuousMLP\)$"):
        cd.grow(create("continuous_mlp"), "zero")
    with pytest.raises(ValueError, match="^method: stack repeats or inserts cells of a piecewise-constant"):
        cd.grow(gpt(continuous=True, basis="legendre"), "stack")
    with pytest.raises(ValueError, match="^method: zero keeps the function only under a one-step scheme"):
        cd.grow(gpt(continuous=True, scheme="ab2"), "zero")
    with pytest.raises(ValueError, match="^method: zero keeps the function only when every cell holds whole steps"):
        cd.grow(gpt(continuous=True, n_steps=3), "zero")
    with pytest.raises(ValueError, match="^factor: 300 layers grown by 16 would be 4800, over the 4096 layers"):
        cd.grow(create("gpt", width=4, heads=1, layers=300, context=2), "stack", 16)
    with pytest.raises(ValueError, match="^factor: 300 cells grown by 2 would be 600, over the 512 cells"):
        cd.grow(create("gpt", width=4, heads=1, layers=300, context=2, continuous=True), "zero")


@pytest.mark.parametrize("method", ["interpolate", "zero", "stack", "refine"])
def test_a_frozen_parameter_stays_frozen_in_the_grown_model(method):
    torch.manual_seed(0)
    model = gpt()
    model.layers[0].attention.qkv.weight.requires_grad_(False)
    model.position.weight.requires_grad_(False)
    grown, growth = cd.grow(model, method)
    frozen = {name for name, p in grown.named_parameters() if not p.requires_grad}
    assert "position.weight" in frozen
    assert any(name.endswith("attention.qkv.weight") for name in frozen)
    assert all(name.endswith("attention.qkv.weight") or name == "position.weight" for name in frozen)

"""The ContinuousNet reference protocol: weight decay on every parameter, when the lr decays, and the
optimizer state at a refinement (``refine_optimizer``), as the CIFAR specs use them (issue 27)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import contdepth.nn as cnn
from contdepth import data
from contdepth.experiment import ExperimentSpec
from contdepth.models import create
from contdepth.train import (
    ConfigError, LRSchedule, TrainConfig, build_optimizer, model_options_for, read_checkpoint,
    refine_with_optimizer, train,
)

from helpers import Interrupt
from helpers import interrupt_after as _interrupt_after
from helpers import without_times as _without_times

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
CIFAR_SPECS = ("cifar10_222", "cifar10_888")
# The reference ContinuousNet loop (Queiruga et al. 2020) counts epochs from 0, refines *before*
# epoch e in its refine list and multiplies the lr by 0.1 *after* epoch e in {30, 60, 90} trained.
REFERENCE_DECAY_AFTER = (30, 60, 90)
REFERENCE_REFINE_BEFORE = {"cifar10_222": (25,), "cifar10_888": (30, 50, 70)}


def reference_lrs(epochs: int, lr: float, decay: float, decay_after: tuple[int, ...]) -> list[float]:
    """The lr of each epoch (0-based list index) when it decays after epoch ``e in decay_after``, counted from 0."""
    out = []
    for e in range(epochs):
        out.append(lr)
        if e in decay_after:
            lr *= decay
    return out


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", seed=0)


def _spec(name: str) -> ExperimentSpec:
    return ExperimentSpec.from_yaml(EXPERIMENTS / f"{name}.yaml")


# --- the CIFAR specs follow the reference --------------------------------------------------------------
@pytest.mark.parametrize("name", CIFAR_SPECS)
def test_cifar_specs_decay_the_lr_when_the_reference_does(name):
    spec = _spec(name)
    steps = 3
    for arm in spec.arms:
        config = spec.config(arm, 0)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
        schedule = LRSchedule.from_config(config, opt, steps_per_epoch=steps)
        expected = reference_lrs(config.epochs, config.lr, config.gamma, REFERENCE_DECAY_AFTER)
        for epoch in range(1, config.epochs + 1):  # every step of 1-based epoch e has the reference's lr
            first, last = (epoch - 1) * steps, epoch * steps - 1
            assert schedule.lrs(first)[0] == pytest.approx(expected[epoch - 1], rel=1e-12), (arm, epoch)
            assert schedule.lrs(last)[0] == pytest.approx(expected[epoch - 1], rel=1e-12), (arm, epoch)
        # spelled out: 31 epochs at 0.1, the 32nd (their 0-based 31) the first at 0.01
        assert schedule.lrs(30 * steps)[0] == pytest.approx(0.1) and schedule.lrs(31 * steps)[0] == pytest.approx(0.01)
        assert schedule.lrs(119 * steps)[0] == pytest.approx(1e-4)


@pytest.mark.parametrize("name", CIFAR_SPECS)
def test_cifar_specs_refine_when_the_reference_does_with_a_fresh_optimizer(name):
    spec = _spec(name)
    refined = [arm for arm in spec.arms if spec.config(arm, 0).refine_at]
    assert refined, "the spec has a refined arm"
    for arm in refined:
        config = spec.config(arm, 0)
        assert config.refine_at == tuple(e + 1 for e in REFERENCE_REFINE_BEFORE[name])  # before 0-based e: 1-based e+1
        assert config.refine_optimizer == "reset"


@pytest.mark.parametrize("name", CIFAR_SPECS)
def test_cifar_specs_decay_every_parameter_as_the_reference_sgd_does(name):
    spec = _spec(name)
    for arm in spec.arms:
        config = spec.config(arm, 0)
        options = model_options_for(config)
        options.update(in_channels=3, num_classes=10)
        model = create(config.model, **options)
        opt = build_optimizer(model, config)
        assert [g["weight_decay"] for g in opt.param_groups] == [5e-4], arm  # one group: norms and biases too
        assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.parameters()}


def test_decay_norm_and_bias_puts_norm_and_bias_coefficients_in_the_decayed_group():
    model = create("continuousnet", in_channels=1, num_classes=10, alpha=4, n_basis=2)
    default = build_optimizer(model, TrainConfig(weight_decay=1e-3))
    assert [g["weight_decay"] for g in default.param_groups] == [1e-3, 0.0]  # today's default: exempt them
    every = build_optimizer(model, TrainConfig(weight_decay=1e-3, decay_norm_and_bias=True))
    (group,) = every.param_groups
    norm_scale = model.get_parameter("stages.0.1.coefficients.0.weight")  # BatchNorm scale coefficients (2, C)
    bias = model.get_parameter("head.linear.bias")
    assert group["weight_decay"] == 1e-3
    assert any(p is norm_scale for p in group["params"]) and any(p is bias for p in group["params"])


# --- refine_optimizer ----------------------------------------------------------------------------------
def _stepped(seed: int = 0):
    torch.manual_seed(seed)
    model = create("continuous_mlp", in_features=16, num_classes=4, width=8, n_basis=2).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(16, 16, dtype=torch.float64), torch.randint(0, 4, (16,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt, (x, y)


def test_refine_optimizer_reset_drops_every_parameters_state_and_keeps_the_groups():
    model, opt, (x, y) = _stepped()
    block = cnn.continuous_blocks(model)[0]
    old = [c for _, c in block.coefficient_items()]
    assert all(opt.state[p]["momentum_buffer"] is not None for p in old)
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    refine_with_optimizer(model, opt, state="reset")
    new = [c for _, c in block.coefficient_items()]
    held = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in held} == {id(p) for p in model.parameters()}  # refined parameters took the old places
    assert not any(any(p is q for q in held) for p in old)
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == hyper
    assert all(len(opt.state.get(p, {})) == 0 for p in held)  # momentum of refined *and* other parameters: gone
    # the next step is a plain SGD step: the new buffer is the gradient (plus decay), no history
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    grads = {id(p): p.grad.clone() + 1e-3 * p.detach() for p in new}
    opt.step()
    for p in new:
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], grads[id(p)], rtol=0, atol=1e-15)


def test_refine_optimizer_map_is_the_default_and_unchanged():
    model, opt, _ = _stepped()
    twin, twin_opt, _ = _stepped()
    refine_with_optimizer(model, opt)
    refine_with_optimizer(twin, twin_opt, state="map")
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], twin_opt.state[q]["momentum_buffer"])
    block = cnn.continuous_blocks(model)[0]
    assert all(opt.state[c]["momentum_buffer"].abs().sum() > 0 for _, c in block.coefficient_items())
    with pytest.raises(ValueError, match="state: must be one of map, reset; got 'zero'"):
        refine_with_optimizer(model, opt, state="zero")


def tiny(**changes) -> TrainConfig:
    base = dict(model="continuousnet", model_options={"alpha": 4, "n_basis": 1}, data="digits", epochs=2,
                batch_size=64, lr=0.1, quiet=True, threads=1)
    base.update(changes)
    return TrainConfig(**base)


def test_refine_optimizer_is_checked_and_reaches_the_training_loop(digits):
    assert TrainConfig().refine_optimizer == "map"
    with pytest.raises(ConfigError, match=r"^refine_optimizer: must be one of map, reset"):
        tiny(refine_at=[2], refine_optimizer="zero")
    with pytest.raises(ConfigError, match=r"^refine_optimizer: 'reset' has no effect without refine_at"):
        tiny(refine_optimizer="reset")
    mapped = train(tiny(refine_at=[2]), dataset=digits)
    reset = train(tiny(refine_at=[2], refine_optimizer="reset"), dataset=digits)
    assert _without_times(mapped.history[:1]) == _without_times(reset.history[:1])  # the same until the refinement
    assert reset.history[1]["train_loss"] != mapped.history[1]["train_loss"]


def test_resume_with_refine_optimizer_reset_ends_exactly_where_an_uninterrupted_run_ends(tmp_path, digits):
    config = tiny(epochs=4, refine_at=[2, 3], refine_optimizer="reset", nesterov=True)
    straight = train(config.replace(out=str(tmp_path / "a")), dataset=digits)
    with pytest.raises(Interrupt):
        train(config.replace(out=str(tmp_path / "b")), dataset=digits, callbacks=[_interrupt_after(2)])
    resumed = train(config.replace(out=str(tmp_path / "b"), resume=True), dataset=digits)
    assert _without_times(resumed.history) == _without_times(straight.history)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    info_a, info_b = read_checkpoint(tmp_path / "a")[0], read_checkpoint(tmp_path / "b")[0]
    assert info_a.train_config().refine_optimizer == "reset"
    for key, value in info_a.optimizer_tensors.items():
        assert torch.equal(value, info_b.optimizer_tensors[key]), key
    with pytest.raises(ConfigError, match="refine_optimizer"):  # the option is part of the run: a resume keeps it
        train(config.replace(out=str(tmp_path / "b"), resume=True, refine_optimizer="map", epochs=5, extend=True),
              dataset=digits)


# --- refine_lr_scale --------------------------------------------------------------------------------------
def test_refine_lr_scale_multiplies_the_schedule_at_each_refinement_cumulatively():
    base = dict(kind="step", base_lrs=(0.1,), steps_per_epoch=2, epochs=6, milestones=(3,), gamma=0.1)
    plain = LRSchedule(**base, refine_at=(2, 4))
    scaled = LRSchedule(**base, refine_at=(2, 4), refine_lr_scale=2.0)
    per_epoch = [scaled.lrs(2 * e)[0] / plain.lrs(2 * e)[0] for e in range(6)]
    assert per_epoch == pytest.approx([1, 2, 2, 4, 4, 4])  # epochs 1..6: x2 from epoch 2, x4 from epoch 4
    assert plain.lrs(5) == LRSchedule(**base).lrs(5)  # scale 1: the schedule as it was


def test_refine_lr_scale_is_checked_and_reaches_the_training_loop(digits):
    with pytest.raises(ConfigError, match=r"^refine_lr_scale: 2.0 has no effect without refine_at"):
        tiny(refine_lr_scale=2.0)
    with pytest.raises(ConfigError, match=r"^refine_lr_scale: must (be|lie)"):
        tiny(refine_at=[2], refine_lr_scale=0.0)
    with pytest.raises(ConfigError, match=r"^refine_lr_scale: must (be|lie)"):
        tiny(refine_at=[2], refine_lr_scale=float("inf"))
    plain = train(tiny(epochs=3, refine_at=[2], schedule="constant"), dataset=digits)
    scaled = train(tiny(epochs=3, refine_at=[2], schedule="constant", refine_lr_scale=0.5), dataset=digits)
    assert [r["lr"] / p["lr"] for r, p in zip(scaled.history, plain.history)] == pytest.approx([1, 0.5, 0.5])
    assert _without_times(scaled.history[:1]) == _without_times(plain.history[:1])
    assert scaled.history[1]["train_loss"] != plain.history[1]["train_loss"]


def test_resume_with_refine_lr_scale_ends_exactly_where_an_uninterrupted_run_ends(tmp_path, digits):
    config = tiny(epochs=4, refine_at=[2, 3], refine_lr_scale=2.0)
    straight = train(config.replace(out=str(tmp_path / "a")), dataset=digits)
    with pytest.raises(Interrupt):
        train(config.replace(out=str(tmp_path / "b")), dataset=digits, callbacks=[_interrupt_after(2)])
    resumed = train(config.replace(out=str(tmp_path / "b"), resume=True), dataset=digits)
    assert _without_times(resumed.history) == _without_times(straight.history)
    assert read_checkpoint(tmp_path / "b")[0].train_config().refine_lr_scale == 2.0

"""contdepth.train: config validation, the loop, refinement with optimizer state, checkpoints, resume."""

import copy
import hashlib
import json
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

import contdepth.nn as cnn
from contdepth import data
from contdepth.models import create
from contdepth.train import (
    CheckpointError, ConfigError, LRSchedule, TrainConfig, atomic_write_bytes, evaluate, load_checkpoint,
    manifestation_table, map_optimizer_state, named_parameter_groups, preflight, read_checkpoint,
    refine_with_optimizer, save_checkpoint, train,
)

from helpers import Interrupt
from helpers import interrupt_after as _interrupt_after
from helpers import without_times as _without_times

TINY = {"alpha": 4, "n_basis": 1}


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", seed=0)


def tiny(**changes):
    base = dict(model="continuousnet", model_options=dict(TINY), data="digits", epochs=2, batch_size=64,
                lr=0.1, quiet=True, threads=1)
    base.update(changes)
    return TrainConfig(**base)


# --- configuration ------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "lbfgs"}, r"optimizer: must be one of sgd, adam, adamw, rmsprop; got 'lbfgs'"),
    ({"schedule": "linear"}, r"schedule: must be one of constant, step, cosine"),
    ({"lr": 0}, r"lr: must be > 0"),
    ({"epochs": 0}, r"epochs: must be an integer >= 1"),
    ({"batch_size": 1.5}, r"batch_size: must be an integer"),
    ({"momentum": 1.0}, r"momentum: must lie in \[0, 1\)"),
    ({"refine_at": [3], "epochs": 2}, r"refine_at: every epoch must be in 1..epochs=2"),
    ({"refine_at": [0]}, r"refine_at: epochs are numbered from 1"),
    ({"refine_at": [2, 2]}, r"refine_at: epochs must be strictly increasing"),
    ({"milestones": [1]}, r"milestones: only used by schedule step"),
    ({"model": "vgg"}, r"model: must be one of cgnn, continuous_mlp, continuousnet, fractalnet, gcde, gcn, gpt, lm_resnet, polynet, resnet, revnet"),
    ({"model_options": {"depth": 3}}, r"model_options.depth: not an option of model 'continuousnet'; allowed: alpha"),
    ({"data": "imagenet"}, r"data: must be one of cifar10, cifar100, cora, digits, fashion_mnist, karate, mnist"),
    ({"label_smoothing": 1.0}, r"label_smoothing: must lie in \[0, 1\)"),
    ({"eval_scheme": "rk5"}, r"eval_scheme: must be one of"),
    ({"nesterov": True, "optimizer": "adamw"}, r"nesterov: needs optimizer sgd"),
    ({"betas": [0.9]}, r"betas: must be two numbers"),
    ({"device": "tpu"}, r"device: must be cpu, cuda or cuda:N"),
    ({"resume": True, "overwrite": True, "out": "x"}, r"overwrite: cannot be combined with resume"),
    ({"quiet": "yes"}, r"quiet: must be true or false"),
])
def test_bad_options_fail_naming_the_option_and_the_allowed_values(changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**changes)


def test_config_from_yaml_with_overrides_merges_model_options(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nlr: 0.05\nrefine-at: [2, 5]\nmodel_options: {alpha: 8, n_basis: 2}\n")
    config = TrainConfig.from_sources(path, {"lr": 0.2, "model_options": {"alpha": 4}})
    assert (config.epochs, config.lr, config.refine_at) == (7, 0.2, (2, 5))
    assert config.model_options == {"alpha": 4, "n_basis": 2}
    assert TrainConfig.from_dict(config.to_dict()) == config
    (tmp_path / "bad.yaml").write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"learning_rate: not an option \(in .*bad.yaml\); allowed: model, "):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        TrainConfig.from_yaml(tmp_path / "list.yaml")


def test_model_option_values_and_refinement_are_checked_before_any_work(tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data must not be loaded")

    monkeypatch.setattr(data, "load", no_data)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="model_options.norm: must be one of batch, group, none"):
        train(tiny(model_options={"norm": "layer"}, out=str(out)))
    with pytest.raises(ConfigError, match="refine_at: model 'resnet' has no ContinuousBlock"):
        train(tiny(model="resnet", model_options={}, refine_at=[2], out=str(out)))
    assert not out.exists()


def test_lr_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    step = LRSchedule("step", (1.0,), steps_per_epoch=10, epochs=6, milestones=(3, 5), gamma=0.1)
    assert [step.lrs(s)[0] for s in (0, 19, 20, 39, 40)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    cos = LRSchedule("cosine", (1.0,), steps_per_epoch=10, epochs=2, warmup_steps=5, min_lr=0.1)
    assert cos.lrs(0)[0] == pytest.approx(0.2) and cos.lrs(4)[0] == pytest.approx(1.0)
    assert cos.lrs(5)[0] == pytest.approx(1.0) and cos.lrs(19)[0] == pytest.approx(0.1, abs=0.02)
    assert cos.apply(opt, 4) == pytest.approx(1.0) and opt.param_groups[0]["lr"] == pytest.approx(1.0)


def test_weight_decay_skips_biases_and_norm_parameters_also_inside_blocks():
    model = create("continuousnet", in_channels=1, num_classes=10, alpha=4, n_basis=2)
    decay, exempt = named_parameter_groups(model, 5e-4)
    assert exempt["weight_decay"] == 0.0
    assert "stages.0.1.coefficients.2.weight" in decay["names"]  # conv kernel coefficients (2, C, C, 3, 3)
    assert "stages.0.1.coefficients.0.weight" in exempt["names"]  # BatchNorm scale coefficients (2, C)
    assert "head.linear.bias" in exempt["names"] and "head.linear.weight" in decay["names"]
    assert len(named_parameter_groups(model, 5e-4, decay_norm_and_bias=True)) == 1


def test_decay_scope_model_decays_exactly_what_the_model_names():
    gcn = create("gcn", in_features=6, num_classes=3)
    decay, exempt = named_parameter_groups(gcn, 5e-4, decay_scope="model")
    assert decay["names"] == ["layer1.weight", "layer1.bias"]  # Kipf & Welling: the first layer only
    assert exempt["names"] == ["layer2.weight", "layer2.bias"] and exempt["weight_decay"] == 0.0
    gcde = create("gcde", in_features=6, num_classes=3, hidden=4)
    decay, exempt = named_parameter_groups(gcde, 5e-4, decay_scope="model")
    assert decay["names"] == ["encoder.weight", "encoder.bias"]
    assert any(name.startswith("block.coefficients") for name in exempt["names"])
    default_decay = named_parameter_groups(gcde, 5e-4)[0]["names"]  # the default decays the ODE's weights too
    assert any(name.startswith("block.coefficients") for name in default_decay)
    with pytest.raises(ValueError, match="decay_scope: must be one of all, model; got 'first'"):
        named_parameter_groups(gcn, 5e-4, decay_scope="first")
    with pytest.raises(ValueError, match="decay_scope: 'model' needs a model with weight_decay_parameters"):
        named_parameter_groups(create("continuous_mlp", in_features=8, num_classes=3, width=4), 5e-4,
                               decay_scope="model")
    with pytest.raises(ConfigError, match="decay_scope: must be one of all, model"):
        TrainConfig(model="gcn", data="karate", decay_scope="first")
    with pytest.raises(ConfigError, match="decay_norm_and_bias: has no effect with decay_scope 'model'"):
        TrainConfig(model="gcn", data="karate", decay_scope="model", decay_norm_and_bias=True)
    with pytest.raises(ConfigError, match="decay_scope: 'model' needs a model that names its decayed parameters"):
        preflight(TrainConfig(model="continuous_mlp", data="digits", decay_scope="model"))


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_every_optimizer_name_builds_its_torch_optimizer_with_the_decay_groups(name, cls):
    from contdepth.train.optim import build_optimizer

    model = create("continuous_mlp", in_features=8, num_classes=3, width=4)
    opt = build_optimizer(model, TrainConfig(model="continuous_mlp", optimizer=name, lr=0.01, weight_decay=1e-3))
    assert type(opt) is cls
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0]
    assert all(g["lr"] == 0.01 for g in opt.param_groups)


# --- training ---------------------------------------------------------------------------------------------
def test_two_epochs_of_a_tiny_model_beat_chance_and_are_deterministic(digits):
    first = train(tiny(epochs=2), dataset=digits)
    assert first.final_test_accuracy > 0.5  # chance is 0.1
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]
    second = train(tiny(epochs=2), dataset=digits)
    strip = lambda h: [{k: v for k, v in row.items() if "time" not in k} for row in h]  # noqa: E731
    assert strip(first.history) == strip(second.history)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_the_end_of_run_table_gives_the_final_test_accuracy_and_labels_the_maximum():
    """The maximum over epochs is a test-set choice: printed after the final accuracy, never as "best"."""
    from contdepth.train import RunResult

    history = [{"epoch": 1, "test_accuracy": 0.9, "test_loss": 0.3}, {"epoch": 2, "test_accuracy": 0.8, "test_loss": 0.4}]
    text = RunResult(config=tiny(), model=torch.nn.Linear(1, 1), history=history, run_dir=None, num_params=2,
                     total_time=1.0).summary()
    lines = text.splitlines()
    final = next(i for i, line in enumerate(lines) if line.startswith("final test accuracy"))
    maximum = next(i for i, line in enumerate(lines) if line.startswith("test max over epochs"))
    assert final < maximum and "80.00%" in lines[final]
    assert "90.00%  (epoch 1; for information, not for choosing)" in lines[maximum]
    assert "best test accuracy" not in text


def test_refinement_during_training_is_recorded(digits):
    result = train(tiny(epochs=3, refine_at=[2, 3]), dataset=digits)
    assert [row["n_basis"] for row in result.history] == [[1, 1, 1], [2, 2, 2], [4, 4, 4]]
    assert [row["n_steps"] for row in result.history] == [[1, 1, 1], [2, 2, 2], [4, 4, 4]]
    assert [row["refined"] for row in result.history] == [False, True, True]


# --- refinement carries the optimizer --------------------------------------------------------------------
def _trained_block_model(basis, optimizer, steps=3):
    torch.manual_seed(0)
    model = create("continuous_mlp", in_features=64, num_classes=10, width=8, n_basis=2, basis=basis).double()
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    elif optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-2, weight_decay=1e-3)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
    x, y = torch.randn(32, 64, dtype=torch.float64), torch.randint(0, 10, (32,))
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("basis", ["piecewise_constant", "piecewise_linear", "legendre"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "rmsprop"])
def test_refine_maps_optimizer_state_with_the_refinement_matrix(basis, optimizer):
    model, opt = _trained_block_model(basis, optimizer)
    block = cnn.continuous_blocks(model)[0]
    old_params = [c for _, c in block.coefficient_items()]
    old_state = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
                 for p in old_params}
    maps = refine_with_optimizer(model, opt)
    (cmap,) = maps
    in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_groups for p in old_params)
    assert {id(p) for p in model.parameters()} == in_groups
    matrix = torch.as_tensor(cmap.matrix, dtype=torch.float64)
    for old, new in cmap.pairs:
        assert new.shape[0] == block.n_basis
        before, after = old_state[id(old)], opt.state[new]
        assert set(before) == set(after)
        for key, value in before.items():
            if key == "step":
                assert torch.equal(after[key], value)  # the step counter is kept as it is
                continue
            expected = torch.tensordot(matrix, value, dims=1)
            if key in ("exp_avg_sq", "square_avg"):
                expected = expected.clamp(min=0)
                assert (after[key] >= 0).all()
            torch.testing.assert_close(after[key], expected, rtol=0, atol=1e-15)
    assert not any(p in opt.state for p in old_params)
    # and training continues
    opt.zero_grad()
    model(torch.randn(4, 64, dtype=torch.float64)).sum().backward()
    opt.step()


@pytest.mark.parametrize("basis", ["piecewise_constant", "piecewise_linear", "legendre"])
def test_mapped_momentum_commutes_with_refinement(basis):
    """With zero gradients an SGD step is linear in (params, momentum): step-then-refine
    equals refine-then-step exactly when the momentum is mapped with the same matrix."""
    model, opt = _trained_block_model(basis, "sgd")
    twin = copy.deepcopy(model)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))

    def zero_grad_step(m, o):
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        o.step()

    zero_grad_step(model, opt)
    refine_with_optimizer(model, opt)
    refine_with_optimizer(twin, twin_opt)
    zero_grad_step(twin, twin_opt)
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14, msg=name)


def test_mapped_adam_commutes_with_piecewise_constant_refinement():
    """A piecewise-constant refinement copies each cell, so even Adam's non-linear step commutes."""
    model, opt = _trained_block_model("piecewise_constant", "adamw")
    twin = copy.deepcopy(model)
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=1e-2)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for m, o, first in ((model, opt, "step"), (twin, twin_opt, "refine")):
        if first == "refine":
            refine_with_optimizer(m, o)
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        o.step()
        if first == "step":
            refine_with_optimizer(m, o)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_training_continues_smoothly_across_refinement_unlike_a_restarted_optimizer(digits):
    x, y = next(iter(digits.batches("train", 2000, shuffle=False, augment=False)))
    torch.manual_seed(0)
    model = create("continuous_mlp", in_features=64, width=32, n_basis=2, scheme="rk4")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0)

    def step(m, o):
        loss = F.cross_entropy(m(x), y)
        o.zero_grad()
        loss.backward()
        o.step()
        return float(loss.detach())

    before = [step(model, opt) for _ in range(60)][-5:]
    restarted = copy.deepcopy(model)
    refine_with_optimizer(model, opt)
    cnn.refine(restarted)
    restarted_opt = torch.optim.AdamW(restarted.parameters(), lr=3e-3, weight_decay=0)
    mapped = [step(model, opt) for _ in range(15)]
    fresh = [step(restarted, restarted_opt) for _ in range(15)]
    assert mapped[0] == fresh[0]  # the refined function is the same

    def smooth(trajectory):
        """Decreasing, and each decrease within 30% of the previous one."""
        drops = [a - b for a, b in zip(trajectory, trajectory[1:])]
        return all(d > 0 for d in drops) and all(0.7 < d2 / d1 < 1.3 for d1, d2 in zip(drops, drops[1:]))

    assert smooth(before + mapped), before + mapped  # no jump, no stall at the refinement
    assert not smooth(before[-1:] + fresh)  # a fresh Adam jumps (up, here)


def test_map_optimizer_state_skips_parameters_it_does_not_hold():
    model = create("continuous_mlp", in_features=4, width=4, n_basis=1)
    opt = torch.optim.SGD(model.head.parameters(), lr=0.1, momentum=0.9)
    assert map_optimizer_state(opt, cnn.refine(model)) == 0


# --- checkpoints ---------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_after_refinement_gives_identical_outputs(tmp_path, digits):
    result = train(tiny(epochs=3, refine_at=[2, 3], optimizer="adamw", lr=3e-3, out=str(tmp_path / "run")),
                   dataset=digits)
    model, info = load_checkpoint(tmp_path / "run")
    assert info.epoch == 3 and info.layout == cnn.layout(result.model) and len(info.history) == 3
    assert info.train_config() == result.config
    x, _ = next(iter(digits.batches("test", 64, augment=False)))
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), result.model(x))
    for (k, a), b in zip(result.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert set(json.loads(lines[0])) >= {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                                          "n_steps", "n_basis", "lr", "epoch_time", "total_time", "world_size", "threads"}


def test_a_run_leaves_no_temporary_files_and_one_tensor_file(tmp_path, digits):
    train(tiny(epochs=2, out=str(tmp_path / "run")), dataset=digits)
    names = sorted(os.listdir(tmp_path / "run"))
    assert names == ["checkpoint-0002.safetensors", "checkpoint.json", "config.yaml", "metrics.jsonl"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]
    assert (path.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_an_existing_run_is_never_overwritten_without_overwrite(tmp_path, digits):
    out = tmp_path / "run"
    train(tiny(epochs=1, out=str(out)), dataset=digits)
    (out / "notes.txt").write_text("mine")
    before = (out / "checkpoint.json").read_bytes()
    with pytest.raises(ConfigError, match=r"out: .*run holds a contdepth run; pass --resume to continue it or --overwrite"):
        train(tiny(epochs=1, out=str(out)), dataset=digits)
    assert (out / "checkpoint.json").read_bytes() == before
    train(tiny(epochs=2, out=str(out), overwrite=True), dataset=digits)
    assert (out / "notes.txt").read_text() == "mine"  # unrelated files survive --overwrite
    assert sorted(os.listdir(out)) == ["checkpoint-0002.safetensors", "checkpoint.json", "config.yaml",
                                       "metrics.jsonl", "notes.txt"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_ends_exactly_where_an_uninterrupted_run_ends(tmp_path, digits, optimizer):
    config = tiny(epochs=4, refine_at=[2, 3], optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 3e-3,
                  warmup_epochs=1, nesterov=optimizer == "sgd")
    straight = train(config.replace(out=str(tmp_path / "a")), dataset=digits)
    with pytest.raises(Interrupt):
        train(config.replace(out=str(tmp_path / "b")), dataset=digits, callbacks=[_interrupt_after(2)])
    assert read_checkpoint(tmp_path / "b")[0].epoch == 2
    resumed = train(config.replace(out=str(tmp_path / "b"), resume=True), dataset=digits)
    assert _without_times(resumed.history) == _without_times(straight.history)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    info_a, info_b = read_checkpoint(tmp_path / "a")[0], read_checkpoint(tmp_path / "b")[0]
    assert info_a.optimizer == info_b.optimizer
    assert info_a.optimizer_tensors.keys() == info_b.optimizer_tensors.keys()
    for key, value in info_a.optimizer_tensors.items():
        assert torch.equal(value, info_b.optimizer_tensors[key]), key
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_resume_reseeds_model_randomness_per_epoch(tmp_path, digits):
    """Stochastic depth draws from torch's global RNG: resumed epochs must draw the same."""
    config = tiny(model="lm_resnet", model_options={"alpha": 4, "n_units": 2, "survival": 0.5}, epochs=3)
    straight = train(config.replace(out=str(tmp_path / "a")), dataset=digits)
    with pytest.raises(Interrupt):
        train(config.replace(out=str(tmp_path / "b")), dataset=digits, callbacks=[_interrupt_after(1)])
    resumed = train(config.replace(out=str(tmp_path / "b"), resume=True), dataset=digits)
    assert _without_times(resumed.history) == _without_times(straight.history)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_resume_refuses_changed_options_and_a_missing_run(tmp_path, digits):
    out = tmp_path / "run"
    train(tiny(epochs=1, out=str(out)), dataset=digits)
    with pytest.raises(ConfigError, match=r"lr: differs from the run being resumed \(saved 0.1, given 0.2\)"):
        train(tiny(epochs=2, lr=0.2, out=str(out), resume=True), dataset=digits)
    with pytest.raises(ConfigError, match="resume: nothing to resume in"):
        train(tiny(out=str(tmp_path / "none"), resume=True), dataset=digits)
    (out / ".checkpoint.json.x1y2z3ab.tmp").write_text("left by a crash mid-write")
    with pytest.raises(ConfigError, match="epochs: .* set up for 1 epochs and --resume continues it exactly; .* add --extend"):
        train(tiny(epochs=2, out=str(out), resume=True), dataset=digits)
    extended = train(tiny(epochs=2, out=str(out), resume=True, extend=True), dataset=digits)  # announced
    assert [row["epoch"] for row in extended.history] == [1, 2]
    assert not (out / ".checkpoint.json.x1y2z3ab.tmp").exists()


# --- evaluation ------------------------------------------------------------------------------------------------
def test_evaluate_a_checkpoint_at_other_manifestations(tmp_path, digits):
    train(tiny(epochs=2, refine_at=[2], out=str(tmp_path / "run")), dataset=digits)
    model, info = load_checkpoint(tmp_path / "run")
    loss, acc = evaluate(model, digits)
    assert acc == pytest.approx(info.history[-1]["test_accuracy"]) and loss == pytest.approx(info.history[-1]["test_loss"])
    _, acc_rk4 = evaluate(model, digits, scheme="rk4", n_steps=3)
    assert 0.0 <= acc_rk4 <= 1.0
    assert [b.n_steps for b in cnn.continuous_blocks(model)] == [2, 2, 2]  # manifestation restored
    table = manifestation_table(model, digits, ("euler", "rk4"), (1, 2))
    assert set(table) == {("euler", 1), ("euler", 2), ("rk4", 1), ("rk4", 2)}
    assert table[("euler", 2)] == acc


# --- loading is safe and its errors are clear ------------------------------------------------------------------
@pytest.fixture()
def saved_run(tmp_path):
    model = create("continuousnet", in_channels=1, num_classes=10, alpha=4, n_basis=1)
    cnn.refine(model)
    save_checkpoint(tmp_path, model, epoch=1, history=[])
    return tmp_path, model


def test_malformed_checkpoint_json_gives_a_clear_error(saved_run):
    run, _ = saved_run
    path = run / "checkpoint.json"
    good = json.loads(path.read_text())
    path.write_text('{"format": "contdepth-checkpoint", "model": ')
    with pytest.raises(CheckpointError, match=r"checkpoint.json: malformed checkpoint, not valid JSON"):
        load_checkpoint(run)
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "model"}))
    with pytest.raises(CheckpointError, match=r"malformed checkpoint, missing key 'model'"):
        load_checkpoint(run)
    path.write_text(json.dumps({**good, "epoch": "one"}))
    with pytest.raises(CheckpointError, match=r"'epoch' must be int, got str"):
        load_checkpoint(run)
    path.write_text(json.dumps({**good, "tensors": "../../etc/passwd"}))
    with pytest.raises(CheckpointError, match="is not checkpoint-NNNN.safetensors"):
        load_checkpoint(run)
    path.write_text(json.dumps({**good, "layout": good["layout"][:1]}))
    with pytest.raises(CheckpointError, match="layout does not fit"):
        load_checkpoint(run)
    path.write_text("[]")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        load_checkpoint(run)
    path.write_text(json.dumps(good))
    model, _ = load_checkpoint(run)  # and the good one still loads
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        load_checkpoint(run / "missing")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_loading_never_unpickles(saved_run, monkeypatch):
    """Tensors are read with safetensors (a JSON header plus raw buffers): a pickle placed
    where the tensors belong is rejected as data, and nothing on the load path unpickles."""
    run, model = saved_run
    info = json.loads((run / "checkpoint.json").read_text())
    tensor_path = run / info["tensors"]

    def forbidden(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.chdir(run)
    loaded, _ = load_checkpoint(run)  # the genuine file loads without any of them
    tensor_path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        load_checkpoint(run)
    info["tensors_sha256"] = hashlib.sha256(tensor_path.read_bytes()).hexdigest()  # it matches: parsed as data only
    (run / "checkpoint.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(run)
    assert not (run / "PWNED").exists()


def test_reversible_training_reports_the_reconstruction_error_and_matches_backprop(tmp_path, digits):
    options = dict(TINY, scheme="reversible_heun")
    backprop = train(tiny(model_options=options, epochs=1), dataset=digits)
    reversible = train(tiny(model_options=dict(options, gradient="reversible"), epochs=1, out=str(tmp_path / "r")),
                       dataset=digits)
    row = reversible.history[-1]
    assert 0 <= row["reconstruction_error"] < 1e-4 and "reconstruction_error" not in backprop.history[-1]
    # the same gradients up to round-off: an epoch of training lands on nearly the same model
    assert abs(row["test_accuracy"] - backprop.history[-1]["test_accuracy"]) <= 0.02
    assert json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])["reconstruction_error"] >= 0


# --- mixed precision, channels_last, compile -----------------------------------------------------------
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes_exactly(tmp_path, digits, precision):
    # 600 training images: float16 arithmetic is emulated on CPU (the full split took 22 s of the suite)
    config = tiny(precision=precision, epochs=2, train_size=600, batch_size=32)
    straight = train(config.replace(out=str(tmp_path / "a")), dataset=digits)
    assert straight.history[-1]["test_accuracy"] > 0.3
    scaler = json.loads((tmp_path / "a" / "checkpoint.json").read_text()).get("grad_scaler")
    assert (scaler is not None) == (precision == "fp16")
    with pytest.raises(Interrupt):
        train(config.replace(out=str(tmp_path / "b")), dataset=digits, callbacks=[_interrupt_after(1)])
    resumed = train(config.replace(out=str(tmp_path / "b"), resume=True), dataset=digits)
    assert _without_times(resumed.history) == _without_times(straight.history)


def test_a_tampered_grad_scaler_state_is_refused(tmp_path, digits):
    out = tmp_path / "run"
    train(tiny(precision="fp16", epochs=1, out=str(out)), dataset=digits)
    description = json.loads((out / "checkpoint.json").read_text())
    description["grad_scaler"]["scale"] = "huge"
    (out / "checkpoint.json").write_text(json.dumps(description))
    with pytest.raises(CheckpointError, match="grad_scaler: must map names to finite numbers"):
        train(tiny(precision="fp16", epochs=2, extend=True, out=str(out), resume=True), dataset=digits)


def test_channels_last_and_compile_are_refused_on_cpu_and_reach_a_gpu_run(digits, monkeypatch):
    for name in ("channels_last", "compile"):
        with pytest.raises(ConfigError, match=f"{name}: is for GPUs .*double free"):
            train(tiny(epochs=1, **{name: True}), dataset=digits)
    with pytest.raises(ConfigError, match="precision: must be one of fp32, bf16, fp16"):
        tiny(precision="fp8")
    model = create("continuousnet", in_channels=1, alpha=4, n_basis=2)
    from contdepth.train.runs import to_channels_last

    to_channels_last(model)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.dim() == 4]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


def test_image_only_speed_options_are_refused_for_a_graph():
    with pytest.raises(ConfigError, match="precision: applies to image datasets"):
        train(TrainConfig(model="gcn", data="karate", epochs=1, quiet=True, precision="bf16"))

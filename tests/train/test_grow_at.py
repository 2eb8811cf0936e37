"""grow_at (issue 30): the trainer grows a GPT in depth at the start of listed epochs, carries the optimizer,
sets the learning rate by its rule, resumes bitwise across a growth, and refuses a schedule that cannot run."""

from __future__ import annotations

import json

import pytest
import torch

import contdepth.train.trainer as trainer_module
from contdepth.experiment import ExperimentSpec
from contdepth.experiment.folder import EXPERIMENT_FORMAT, IDENTITY_VERSION
from contdepth.experiment.runner import check_experiment_dir
from contdepth.nn import manifest
from contdepth.nn.grow import GROWTH_METHODS
from contdepth.train import ConfigError, LRSchedule, TrainConfig, read_checkpoint, train
from contdepth.train.config_checks import GROW_METHODS
from contdepth.train.growth import grown_options
from contdepth.train.trainer import preflight

from helpers import Interrupt, interrupt_after, without_times

GPT = {"width": 32, "heads": 2, "layers": 2, "context": 32}
CONTINUOUS = {**GPT, "continuous": True}  # two piecewise-constant cells under lie_trotter, one step each
SENTENCE = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n"
PROBE = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SENTENCE * 300, encoding="utf-8")
    return path


def tiny(corpus, **changes) -> TrainConfig:
    """Three epochs of 10 steps (a text run's epoch is eval_every steps), growing at the start of epoch 2."""
    values = dict(model="gpt", model_options=dict(GPT), data="text", data_dir=str(corpus), optimizer="adamw",
                  lr=3e-3, weight_decay=0.01, batch_size=8, eval_every=10, max_steps=30, grad_clip=1.0,
                  eval_batch_size=16, threads=1, quiet=True, warmup_epochs=0.5, grow_at=[2])
    values.update(changes)
    return TrainConfig(**values)


def watch_growths(monkeypatch) -> list[dict]:
    """Record every growth the trainer makes: the model before and after, its optimizer, the outputs on PROBE."""
    seen = []
    real = trainer_module.grow_in_training

    def watched(loop, model, optimizer, epoch):
        old_layers = len(model.layers) if not model.continuous else model.layers.n_basis
        with torch.no_grad():
            before = model.eval()(PROBE)
            grown = real(loop, model.train(), optimizer, epoch)
            after = grown.eval()(PROBE)
            if grown.continuous:  # theta(t) on the old grid
                with manifest(grown, n_steps=model.layers.n_steps):
                    after_old_grid = grown(PROBE)
        seen.append({"epoch": epoch, "old_layers": old_layers, "new": grown, "before": before, "after": after,
                     "loop": loop, "after_old_grid": after_old_grid if grown.continuous else None,
                     "held": {id(p) for group in optimizer.param_groups for p in group["params"]}})
        return grown.train()

    monkeypatch.setattr(trainer_module, "grow_in_training", watched)
    return seen


# --- what a growth does in a run ---------------------------------------------------------------------------
def test_zero_growth_doubles_the_layers_keeps_the_function_and_carries_the_optimizer(corpus, monkeypatch):
    seen = watch_growths(monkeypatch)
    result = train(tiny(corpus, grow_method="zero"))
    (growth,) = seen
    grown = growth["new"]
    assert growth["epoch"] == 2 and growth["old_layers"] == 2 and len(grown.layers) == 4
    assert torch.equal(growth["after"], growth["before"])  # the new layers are identities: the same function
    assert growth["held"] == {id(p) for p in grown.parameters()}  # the optimizer trains the grown model
    assert growth["loop"].model_config["options"]["layers"] == 4  # what the checkpoints record from then on
    assert result.model is grown and len(result.model.layers) == 4
    rows = result.history
    assert [r["grown"] for r in rows] == [False, True, False] and [r["layers"] for r in rows] == [2, 4, 4]
    assert rows[1]["train_flops"] > rows[0]["train_flops"]  # the grown shape counted afresh
    assert rows[1]["train_flops"] == rows[2]["train_flops"] and rows[1]["params"] > rows[0]["params"]


def test_refine_growth_of_a_continuous_gpt_keeps_theta_on_its_old_grid(corpus, monkeypatch):
    seen = watch_growths(monkeypatch)
    result = train(tiny(corpus, model_options=CONTINUOUS, grow_method="refine"))
    (growth,) = seen
    assert growth["new"].layers.n_basis == 4  # theta(t) unchanged: on the old grid, the old outputs
    torch.testing.assert_close(growth["after_old_grid"], growth["before"], rtol=0, atol=1e-5)
    rows = result.history
    assert [r["n_basis"] for r in rows] == [[2], [4], [4]] and [r["n_steps"] for r in rows] == [[2], [4], [4]]
    assert [r["layers"] for r in rows] == [2, 4, 4] and rows[1]["grown"] and not rows[1]["refined"]
    assert rows[1]["train_flops"] > rows[0]["train_flops"]
    # a run without grow_at keeps its rows as they were: no growth columns
    assert "grown" not in train(tiny(corpus, grow_at=[], max_steps=10)).history[0]


# --- resume across a growth --------------------------------------------------------------------------------
@pytest.mark.parametrize("options, changes, stop", [
    (GPT, dict(grow_method="zero", grow_lr="rewarm", grow_rewarm_steps=15), 2),  # killed mid-rewarm, after growing
    (GPT, dict(grow_method="zero"), 1),  # killed before the growth: the resumed run draws the same new layers
    ({**CONTINUOUS, "dropout": 0.1}, dict(grow_method="refine", grow_lr="scale", grow_lr_scale=0.5), 2),
], ids=["zero-rewarm-after", "zero-before", "refine-scale-after"])
def test_a_run_killed_around_a_growth_resumes_bitwise(corpus, tmp_path, options, changes, stop):
    config = tiny(corpus, model_options=dict(options), **changes)
    straight = train(config.replace(out=str(tmp_path / "a")))
    with pytest.raises(Interrupt):
        train(config.replace(out=str(tmp_path / "b")), callbacks=[interrupt_after(stop)])
    info = read_checkpoint(tmp_path / "b")[0]
    assert info.epoch == stop and info.model_options.get("layers", 2) == (4 if stop >= 2 else 2)
    with pytest.raises(ConfigError, match=r"^grow_at: differs from the run being resumed"):
        train(config.replace(out=str(tmp_path / "b"), resume=True, grow_at=[3]))
    resumed = train(config.replace(out=str(tmp_path / "b"), resume=True))
    assert without_times(resumed.history) == without_times(straight.history)
    assert straight.model.state_dict().keys() == resumed.model.state_dict().keys()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_options_a_checkpoint_records_follow_the_schedule(corpus):
    config = tiny(corpus, model_options=CONTINUOUS, grow_method="zero", max_steps=40, refine_at=[2], grow_at=[3])
    options = dict(CONTINUOUS)
    assert grown_options(config, options, 2) == options  # refined only: the layout changed, not the options
    after = grown_options(config, options, 3)  # the refined block's 4 cells grown to 8, on [0, 4]
    assert (after["layers"], after["n_steps"], after["depth"], after["continuous"]) == (8, 8, 4.0, True)


# --- the learning rate at a growth ------------------------------------------------------------------------
def schedule(corpus, **changes) -> LRSchedule:
    config = tiny(corpus, schedule="constant", warmup_epochs=0.0, max_steps=40, grow_at=[2, 3], **changes)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    return LRSchedule.from_config(config, optimizer, 10)


@pytest.mark.parametrize("changes, factors", [
    ({}, [1.0] * 40),
    (dict(grow_lr="scale", grow_lr_scale=0.5), [1.0] * 10 + [0.5] * 10 + [0.25] * 20),
    # each growth starts a ramp over 15 steps from 1/15: the second growth (step 20) cuts the first one short
    (dict(grow_lr="rewarm", grow_rewarm_steps=15),
     [1.0] * 10 + [k / 15 for k in range(1, 11)] + [k / 15 for k in range(1, 16)] + [1.0] * 5),
], ids=["keep", "scale", "rewarm"])
def test_each_lr_rule_is_a_pure_function_of_the_step(corpus, changes, factors):
    rule = schedule(corpus, **changes)
    assert [rule.lrs(step)[0] for step in range(40)] == pytest.approx([3e-3 * f for f in factors], rel=1e-12)


def test_the_rows_show_the_lr_rule_of_the_run(corpus):
    run = train(tiny(corpus, schedule="constant", warmup_epochs=0.0, grow_lr="rewarm", grow_rewarm_steps=15))
    assert [row["lr"] for row in run.history] == pytest.approx([3e-3, 3e-3 / 15, 3e-3 * 11 / 15])  # first steps


# --- refused in one line, before any work -------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    (dict(grow_at=[0]), r"^grow_at: epochs are numbered from 1, got \[0\]$"),
    (dict(grow_at=[4]), r"^grow_at: every epoch must be in 1..epochs=3, got \[4\]"),
    (dict(grow_at=[2, 2]), r"^grow_at: epochs must be strictly increasing \(no repeats\), got \[2, 2\]$"),
    (dict(grow_at=[3, 2]), r"^grow_at: epochs must be strictly increasing"),
    (dict(grow_at=[], grow_method="zero"), r"^grow_method: 'zero' has no effect without grow_at; leave it 'refine'$"),
    (dict(grow_at=[], grow_lr="scale"), r"^grow_lr: 'scale' has no effect without grow_at"),
    (dict(grow_at=[2], refine_at=[2]), r"^grow_at: epoch 2 is in refine_at too"),
    (dict(grow_method="stacked"), r"^grow_method: must be one of refine, interpolate, stack, zero; got 'stacked'$"),
    (dict(grow_factor=3), r"^grow_factor: refine doubles the basis, so the factor must be a power of 2"),
    (dict(grow_method="zero", grow_factor=17), r"^grow_factor: must be an integer in 2..16, got 17$"),
    (dict(grow_lr="scale"), r"^grow_lr_scale: grow_lr 'scale' needs a factor other than 1"),
    (dict(grow_lr_scale=2.0), r"^grow_lr_scale: 2.0 has no effect with grow_lr 'keep'"),
    (dict(grow_lr="rewarm"), r"^grow_rewarm_steps: grow_lr 'rewarm' needs the steps"),
    (dict(grow_rewarm_steps=0, grow_lr="rewarm"), r"^grow_rewarm_steps: must be an integer in 1..1,000,000,000"),
    (dict(grow_optimizer="keep"), r"^grow_optimizer: must be one of map, reset; got 'keep'$"),
])
def test_bad_grow_options_are_one_line(corpus, changes, message):
    with pytest.raises(ConfigError, match=message) as caught:
        tiny(corpus, **changes)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("changes, message", [
    # a model without a growth
    (dict(model="continuous_mlp", model_options={}, data="digits", data_dir=None, optimizer="sgd", eval_every=None,
          max_steps=None, epochs=3), r"^grow_at: growth supports .*continuous_mlp"),
    (dict(model="custom", model_options={}, data="digits", data_dir=None, eval_every=None, max_steps=None, epochs=3),
     r"^grow_at: a model of your own \('custom'\) cannot be rebuilt grown"),
    # the method the model refuses, the first growth past a bound, a later one past it, a refinement after a growth
    (dict(model_options={**CONTINUOUS, "basis": "piecewise_linear"}, grow_method="zero"),
     r"^grow_method: zero repeats or inserts cells of a piecewise-constant theta\(t\)"),
    (dict(model_options={**CONTINUOUS, "layers": 300}, grow_method="zero"),
     r"^grow_factor: 300 cells grown by 2 would be 600, over the 512 cells"),
    (dict(model_options={**CONTINUOUS, "layers": 200}, grow_method="zero", grow_at=[2, 3]),
     r"^grow_at: growth 2 \(at the start of epoch 3\): factor: 400 cells grown by 2 would be 800"),
    (dict(model_options={**CONTINUOUS, "n_steps": 1024}, grow_method="interpolate", max_steps=40, refine_at=[3, 4]),
     r"^refine_at: refinement 2 \(at the start of epoch 4\) would give block 0 \(2 functions, 2048 steps to begin "
     r"with\) 8,192 steps"),
])
def test_a_schedule_that_cannot_run_is_refused_by_the_preflight(corpus, changes, message):
    config = tiny(corpus, **changes)
    user_model = torch.nn.Linear(2, 2) if config.model == "custom" else None
    with pytest.raises(ConfigError, match=message) as caught:
        preflight(config, user_model, folder=False)
    assert "\n" not in str(caught.value)


def test_a_grown_model_beyond_the_memory_is_refused(corpus, monkeypatch):
    import contdepth.train.sizes as sizes

    monkeypatch.setattr(sizes, "memory_capacity", lambda device: (700_000, "this machine"))  # the 2 layers fit
    preflight(tiny(corpus, grow_at=[]), folder=False)
    with pytest.raises(ConfigError, match=r"^grow_at: after the growths at epochs \[2\]: model 'gpt' with .* has "
                                          r"60,096 trainable parameters; .* more than the 700,000 bytes of this "
                                          r"machine"):
        preflight(tiny(corpus, grow_method="zero"), folder=False)


def test_the_config_names_every_growth_method():
    assert GROW_METHODS == tuple(GROWTH_METHODS)


# --- the experiment's identity --------------------------------------------------------------------------------
def test_an_experiment_folder_refuses_a_spec_with_another_growth_schedule(tmp_path):
    base = {"model": "gpt", "model_options": dict(GPT), "data": "text", "max_steps": 20, "eval_every": 10}

    def spec(grow: dict) -> ExperimentSpec:
        return ExperimentSpec.from_dict({"base": base, "seeds": [0], "arms": {"grown": grow}}, source="s.yaml")

    first, other = spec({"grow_at": [2], "grow_method": "zero"}), spec({"grow_at": [2], "grow_method": "stack"})
    (tmp_path / "experiment.json").write_text(json.dumps({
        "format": EXPERIMENT_FORMAT, "identity_version": IDENTITY_VERSION, "identity": first.identity(),
        "sittings": []}))
    assert check_experiment_dir(first, tmp_path) == "existing"
    with pytest.raises(ConfigError, match=r"with a different spec: .*grow_method"):
        check_experiment_dir(other, tmp_path)

"""The checkpoint described once (issue 28): one typed description written, read and upgraded.

``format_2/`` holds checkpoints written by contdepth before format 3 (commit 12b315a: a
2-epoch ContinuousNet on digits with ``refine_at [2]`` and ``refine_lr_scale 0.5``, and a 3-epoch
GCN on the karate club with its ``last/`` folder), the layout that kept the LR schedule, the loss
scale and the early-stopping state under one ``scheduler`` key.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from contdepth.train import (CheckpointError, TrainConfig, load_checkpoint, read_checkpoint, read_description,
                             restore_optimizer, save_checkpoint, train)
from contdepth.train.checkpoint_description import (FORMAT_VERSION, Description, EarlyStoppingState, LRScheduleState,
                                                    decode_description)
from contdepth.train.optim import build_optimizer
from contdepth.train.typed_json import Int, Invalid, decode, encode
from helpers import Interrupt, interrupt_after, to_format_2, without_times

FORMAT_2 = Path(__file__).parent / "format_2"


def tiny(**changes) -> TrainConfig:
    base = dict(model="continuousnet", model_options={"alpha": 2, "n_basis": 1}, data="digits", epochs=2,
                batch_size=256, lr=0.05, refine_at=[2], refine_lr_scale=0.5, quiet=True, threads=1)
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def digits():
    from contdepth import data

    return data.load("digits", seed=0)


# --- format 2, as written before issue 28 -----------------------------------------------------------------
def test_a_format_2_image_checkpoint_loads_and_restores_its_optimizer():
    stored = json.loads((FORMAT_2 / "image" / "checkpoint.json").read_text())
    assert stored["format_version"] == 2 and "lr_schedule" not in stored
    model, info = load_checkpoint(FORMAT_2 / "image")
    assert info.format_version == 2 and info.epoch == 2 and info.history[-1]["refined"]
    assert info.lr_schedule == LRScheduleState(**stored["scheduler"])  # refine_lr_scale 0.5 included
    assert info.lr_schedule.refine_lr_scale == 0.5 and info.grad_scaler is None and info.early_stopping is None
    assert info.scheduler == stored["scheduler"]  # the format-2 view callers still read
    optimizer = build_optimizer(model, info.train_config())
    restore_optimizer(optimizer, model, info)
    assert optimizer.state and all("momentum_buffer" in s for s in optimizer.state.values())
    assert torch.isfinite(model(torch.randn(2, 1, 8, 8))).all()
    described = read_description(FORMAT_2 / "image")  # in the current layout; the file's format is kept
    assert described["format_version"] == 2 and "scheduler" not in described
    assert described["lr_schedule"]["refine_lr_scale"] == 0.5


def test_a_format_2_graph_run_keeps_its_early_stopping_state():
    root = json.loads((FORMAT_2 / "graph" / "checkpoint.json").read_text())
    _, info = load_checkpoint(FORMAT_2 / "graph")
    assert info.early_stopping == EarlyStoppingState(**root["scheduler"]["early_stopping"])
    assert info.lr_schedule is None and info.optimizer is None
    last, _ = read_checkpoint(FORMAT_2 / "graph" / "last")
    assert last.early_stopping.best_epoch == 3 and last.lr_schedule.kind == "constant"
    assert last.optimizer.class_name == "Adam" and last.scheduler["early_stopping"]["best_epoch"] == 3


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_run_saved_in_format_2_resumes_bitwise(tmp_path, digits, precision):
    """The same run interrupted, its checkpoint rewritten in the format-2 layout (``grad_scaler`` inside
    ``scheduler`` for fp16), resumed: it ends where the uninterrupted run ends."""
    config = tiny(precision=precision)
    straight = train(config.replace(out=str(tmp_path / "a")), dataset=digits)
    with pytest.raises(Interrupt):
        train(config.replace(out=str(tmp_path / "b")), dataset=digits, callbacks=[interrupt_after(1)])
    path = tmp_path / "b" / "checkpoint.json"
    old = to_format_2(json.loads(path.read_text()))
    assert ("grad_scaler" in old["scheduler"]) == (precision == "fp16")
    path.write_text(json.dumps(old))
    assert read_checkpoint(tmp_path / "b")[0].format_version == 2
    resumed = train(config.replace(out=str(tmp_path / "b"), resume=True), dataset=digits)
    assert without_times(resumed.history) == without_times(straight.history)
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert json.loads(path.read_text())["format_version"] == FORMAT_VERSION  # saved again in format 3


# --- the typed description ---------------------------------------------------------------------------------
def _saved(folder: Path) -> Path:
    """A hand-saved checkpoint with every part: optimizer state, LR schedule, loss scale, early stopping."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    schedule = {"kind": "step", "base_lrs": [0.1], "steps_per_epoch": 5, "epochs": 4, "milestones": [3],
                "gamma": 0.1, "warmup_steps": 0, "min_lr": 0.0, "global_step": 10, "refine_lr_scale": 0.5}
    early = {"patience": 3, "best_epoch": 1, "best_val_accuracy": 0.75, "best_val_loss": float("inf"),
             "bad_epochs": 1, "stopped": False}
    rows = [{"epoch": e, "test_accuracy": 0.5, "total_time": 1.0 * e, "val_accuracy": 0.75, "val_loss": 0.5,
             "notes": "kept"} for e in (1, 2)]
    return save_checkpoint(folder, model, optimizer, epoch=2, history=rows, lr_schedule=schedule,
                           grad_scaler={"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                        "growth_interval": 2000, "_growth_tracker": 3},
                           early_stopping=early, model_config={"name": "custom", "class": "x.Y", "options": {}})


def test_the_description_round_trips(tmp_path):
    path = _saved(tmp_path)
    written = json.loads(path.read_text())
    assert written["format_version"] == FORMAT_VERSION == 3 and "scheduler" not in written
    assert list(written)[-4:] == ["lr_schedule", "grad_scaler", "early_stopping", "config"]
    description = decode_description(written, path)
    assert description.to_json() == written  # field for field, in the file's order
    assert list(description.to_json()) == list(written)
    info, _ = read_checkpoint(tmp_path)
    assert info.description == description and read_description(tmp_path) == written
    assert info.history[0]["notes"] == "kept" and info.early_stopping.best_val_loss == float("inf")
    assert info.optimizer.state["weight"].tensors == ["momentum_buffer"]
    # left out while at their defaults: a refine_lr_scale of 1, the states a run does not have
    plain = LRScheduleState(kind="constant", base_lrs=[0.1], steps_per_epoch=1, epochs=1, milestones=[], gamma=0.1,
                            warmup_steps=0, min_lr=0.0, global_step=0)
    assert "refine_lr_scale" not in encode(plain) and decode(LRScheduleState, encode(plain)) == plain
    bare = json.loads(save_checkpoint(tmp_path / "bare", torch.nn.Linear(2, 2), epoch=0).read_text())
    assert not {"lr_schedule", "grad_scaler", "early_stopping"} & set(bare) and bare["optimizer"] is None


@pytest.mark.parametrize("change, where, problem", [
    (lambda info: info["lr_schedule"].update(warm_up=1), "lr_schedule",
     "unknown key 'warm_up' (the keys are kind, base_lrs, steps_per_epoch, epochs, milestones, gamma, "
     "warmup_steps, min_lr, global_step, refine_lr_scale)"),
    (lambda info: info.update(extra=1), "", "unknown key 'extra' (the keys are format, format_version, version, "
     "torch_version, tensors, tensors_sha256, model, layout, epoch, history, optimizer, lr_schedule, grad_scaler, "
     "early_stopping, config)"),
    (lambda info: info["lr_schedule"].update(milestones=["3"]), "lr_schedule.milestones[0]",
     "must be an integer >= 1, got '3'"),
    (lambda info: info["early_stopping"].update(stopped=0), "early_stopping.stopped", "must be true or false, got 0"),
    (lambda info: info["lr_schedule"]["base_lrs"].__setitem__(0, -0.5), "lr_schedule.base_lrs[0]",
     "must be a finite number >= 0.0, got -0.5"),
    (lambda info: info["early_stopping"].update(best_epoch=3), "early_stopping.best_epoch",
     "must be an integer in 0..2, got 3"),
    (lambda info: info["optimizer"]["state"]["weight"]["values"].update(step="x"),
     "optimizer.state['weight'].values.step", "must be a finite number, bool or null, got 'x'"),
])
def test_an_unknown_key_a_wrong_type_or_a_value_out_of_range_is_one_line_naming_file_and_key(tmp_path, change, where,
                                                                                             problem):
    path = _saved(tmp_path)
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))
    with pytest.raises(CheckpointError) as caught:
        read_description(tmp_path)
    assert str(caught.value) == f"{path}: malformed checkpoint, {where + ': ' if where else ''}{problem}"


def test_an_error_in_a_format_2_file_names_its_own_keys(tmp_path):
    path = _saved(tmp_path)
    info = to_format_2(json.loads(path.read_text()))
    info["scheduler"]["early_stopping"]["bad_epochs"] = 9
    path.write_text(json.dumps(info))
    with pytest.raises(CheckpointError) as caught:
        read_description(tmp_path)
    assert str(caught.value) == (f"{path}: malformed checkpoint, scheduler.early_stopping.bad_epochs: must be an "
                                 "integer in 0..2, got 9")


def test_a_newer_format_is_named_before_its_keys_are_judged(tmp_path):
    path = _saved(tmp_path)
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "format_version": FORMAT_VERSION + 1, "new_key": {}}))
    with pytest.raises(CheckpointError, match=r"written by a newer contdepth \(checkpoint format 4, this reads 3\)"):
        read_description(tmp_path)


def test_nothing_is_saved_that_no_reader_accepts(tmp_path):
    model = torch.nn.Linear(2, 2)
    row = {"epoch": 1, "test_accuracy": 0.5, "total_time": 1.0, "notes": {"nested": [1]}}
    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(tmp_path, model, epoch=1, history=[row])
    assert str(caught.value).startswith(f"{tmp_path / 'checkpoint.json'}: cannot save history[0].notes: must be a ")
    with pytest.raises(CheckpointError, match=r"cannot save early_stopping: missing key 'stopped'"):
        save_checkpoint(tmp_path, model, epoch=1, early_stopping={"patience": None, "best_epoch": 0,
                                                                  "best_val_accuracy": 0.0, "best_val_loss": 1.0,
                                                                  "bad_epochs": 0})
    assert list(tmp_path.iterdir()) == []  # neither the tensors nor the description


def test_a_check_may_depend_on_a_field_read_before_it():
    assert Int(0, "epoch").check(3, "x", {"epoch": 3}) == 3
    with pytest.raises(Invalid, match=r"^x: must be an integer in 0\.\.2, got 3$"):
        Int(0, "epoch").check(3, "x", {"epoch": 2})
    assert Int(0, "epoch").check(3, "x", {}) == 3  # a record read alone: only the lower bound applies
    assert decode(EarlyStoppingState, {"patience": None, "best_epoch": 9, "best_val_accuracy": 0.5,
                                       "best_val_loss": 1.0, "bad_epochs": 0, "stopped": True}).best_epoch == 9
    assert Description.CONTEXT == ("epoch",)

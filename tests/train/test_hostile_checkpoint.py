"""Checkpoints are untrusted input: every tampered field is one clear CheckpointError, fast.

Each test starts from a genuine run folder (one epoch of a tiny ContinuousNet on digits),
changes ``checkpoint.json`` and/or the tensor file (rewriting ``tensors_sha256`` so that
the integrity check is not what catches it), and expects an error naming the file and the
field, before anything the bad value would size is built.
"""

import hashlib
import json
import math
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from contdepth import data
from contdepth.cli import main
from contdepth.train import CheckpointError, TrainConfig, load_checkpoint, read_checkpoint, train
from contdepth.train import checkpoint
from contdepth.train.checkpoint import build_model, restore_optimizer
from contdepth.train.checkpoint_schema import MAX_JSON_BYTES
from contdepth.train.optim import build_optimizer
from helpers import in_format_2


def _config(optimizer: str, out: Path) -> TrainConfig:
    return TrainConfig(model="continuousnet", model_options={"alpha": 2, "n_basis": 1}, data="digits", epochs=1,
                       batch_size=256, lr=0.01, optimizer=optimizer, quiet=True, threads=1, out=str(out))


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """``{optimizer: run folder}``: one trained epoch each, with SGD (momentum) and AdamW."""
    digits = data.load("digits", seed=0)
    root = tmp_path_factory.mktemp("genuine")
    return {name: train(_config(name, root / name), dataset=digits).run_dir for name in ("sgd", "adamw")}


@pytest.fixture()
def run(genuine, tmp_path):
    """A private copy of the SGD run."""
    return Path(shutil.copytree(genuine["sgd"], tmp_path / "run"))


@pytest.fixture()
def adam_run(genuine, tmp_path):
    return Path(shutil.copytree(genuine["adamw"], tmp_path / "adam"))


# --- tampering helpers ----------------------------------------------------------------------------------
def description(run: Path) -> dict:
    return json.loads((run / "checkpoint.json").read_text())


def write(run: Path, info: dict) -> None:
    (run / "checkpoint.json").write_text(json.dumps(info))


def tamper(run: Path, change) -> None:
    """Apply ``change(info)`` to checkpoint.json (in place)."""
    info = description(run)
    change(info)
    write(run, info)


def tamper_tensors(run: Path, change) -> None:
    """Apply ``change(tensors)`` to the tensor file and store its new SHA-256 (a consistent forgery)."""
    info = description(run)
    path = run / info["tensors"]
    tensors = dict(load_tensors(path.read_bytes()))
    change(tensors)
    blob = save_tensors(tensors)
    path.write_bytes(blob)
    info["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    write(run, info)


def resume_parts(run: Path):
    """What a resumed run does with a checkpoint: read, rebuild, build and restore the optimizer."""
    info, state = read_checkpoint(run)
    model = build_model(info, state)
    optimizer = build_optimizer(model, info.train_config())
    restore_optimizer(optimizer, model, info)
    return model, optimizer


def expect(run: Path, pattern: str, *, resume: bool = False) -> str:
    with pytest.raises(CheckpointError, match=pattern) as caught:
        resume_parts(run) if resume else load_checkpoint(run)
    message = str(caught.value)
    assert message.startswith(str(run)), message  # names the file
    return message


def set_layout(index: int, key: str, value):
    def change(info):
        info["layout"][index][key] = value
    return change


def set_group(key: str, value, index: int = 0):
    def change(info):
        info["optimizer"]["param_groups"][index][key] = value
    return change


# --- the genuine files ------------------------------------------------------------------------------------
def test_the_genuine_checkpoints_load_and_restore(genuine):
    for name in ("sgd", "adamw"):
        model, optimizer = resume_parts(genuine[name])
        assert optimizer.state  # momentum / Adam moments came back


# --- 1. layout numbers are bounded by the tensors ---------------------------------------------------------
def test_a_layout_n_basis_the_tensors_do_not_hold_is_refused_at_once(run):
    tamper(run, set_layout(0, "n_basis", 10**9))
    expect(run, r"layout\[0\]\.n_basis: must be an integer in 1\.\.512, got 1000000000")
    tamper(run, set_layout(0, "n_basis", 4))
    expect(run, r"layout\[0\]\.n_basis: 4 differs from the stored coefficients' 1 functions "
                r"\(stages\.0\.1\.coefficients\.")


def test_a_layout_n_steps_beyond_the_bound_is_refused(run):
    tamper(run, set_layout(1, "n_steps", 10**9))
    expect(run, r"malformed checkpoint, layout\[1\]\.n_steps: must be an integer in 1\.\.4096, got 1000000000")
    tamper(run, set_layout(1, "n_steps", 0))
    expect(run, r"layout\[1\]\.n_steps: must be an integer in 1\.\.4096, got 0")


@pytest.mark.parametrize("change, pattern", [
    (lambda info: info.update(layout=[1, 2, 3]), r"layout\[0\]: must be an object with keys basis, n_basis"),
    (lambda info: info["layout"][0].pop("scheme"), r"layout\[0\]: must have exactly the keys"),
    (lambda info: info["layout"][0].update(extra=1), r"layout\[0\]: must have exactly the keys"),
    (set_layout(0, "n_basis", "1"), r"layout\[0\]\.n_basis: must be an integer in 1\.\.512, got '1'"),
    (set_layout(0, "n_steps", True), r"layout\[0\]\.n_steps: must be an integer in 1\.\.4096, got True"),
    (set_layout(2, "scheme", "rk99"), r"layout\[2\]\.scheme: must be one of .*got 'rk99'"),
    (set_layout(2, "scheme", ["rk4"]), r"layout\[2\]\.scheme: must be a name"),
    (set_layout(0, "basis", "legendre"), r"layout\[0\]\.basis: 'legendre' does not match the model's"),
])
def test_layout_entries_of_the_wrong_shape_are_refused(run, change, pattern):
    tamper(run, change)
    expect(run, pattern)


# --- 2. epoch ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("epoch, pattern", [
    (-3, r"malformed checkpoint, epoch: must be an integer >= 0, got -3"),
    (5, r"malformed checkpoint, epoch: is 5, but the history's last row is epoch 1"),
    (True, r"'epoch' must be int, got bool"),
    (1.0, r"'epoch' must be int, got float"),
])
def test_the_epoch_is_a_count_that_agrees_with_the_history(run, epoch, pattern):
    tamper(run, lambda info: info.update(epoch=epoch))
    expect(run, pattern)


# --- 3. history rows -------------------------------------------------------------------------------------------
def _row(**changes):
    def change(info):
        info["history"][0].update(changes)
    return change


@pytest.mark.parametrize("change, pattern", [
    (lambda info: info.update(history=[{}]), r"history\[0\]: missing key 'epoch'"),
    (lambda info: info.update(history=["x"]), r"history\[0\]: must be an object"),
    (lambda info: info["history"][0].pop("total_time"), r"history\[0\]: missing key 'total_time'"),
    (lambda info: info["history"][0].pop("test_accuracy"), r"history\[0\]: missing key 'test_accuracy'"),
    (_row(test_accuracy="high"), r"history\[0\]\.test_accuracy: must be a number in \[0\.0, 1\.0\], got 'high'"),
    (_row(test_accuracy=7), r"history\[0\]\.test_accuracy: must be a number in \[0\.0, 1\.0\], got 7"),
    (_row(total_time=-1), r"history\[0\]\.total_time: must be a number in \[0\.0, 1000000000\.0\], got -1"),
    (_row(total_time=1e308), r"history\[0\]\.total_time: must be a number in \[0\.0, 1000000000\.0\], got 1e\+308"),
    (_row(params=10**400), r"history\[0\]\.params: must be an integer in 0\.\.10000000000000, got 1000"),
    (_row(train_time="abc"), r"history\[0\]\.train_time: must be a number in"),
    (_row(train_cpu_time=-0.5), r"history\[0\]\.train_cpu_time: must be a number in \[0\.0, 1000000000\.0\]"),
    (_row(train_flops=-1), r"history\[0\]\.train_flops: must be an integer in 0\.\.10{24}, got -1"),
    (_row(eval_flops=1.5e9), r"history\[0\]\.eval_flops: must be an integer in 0\.\.10{24}, got 1500000000\.0"),
    (_row(eval_flops=True), r"history\[0\]\.eval_flops: must be an integer in"),
    (_row(train_flops=10**400), r"history\[0\]\.train_flops: must be an integer in 0\.\.10{24}, got 1000"),
    (_row(epoch=0), r"history\[0\]\.epoch: must be an integer >= 1, got 0"),
    (_row(n_steps=[1, "2"]), r"history\[0\]\.n_steps\[1\]: must be an integer >= 1, got '2'"),
    (_row(refined="no"), r"history\[0\]\.refined: must be true or false"),
    (_row(notes={"deep": [1]}), r"history\[0\]\.notes: must be a number, string, bool, null or a list"),
    (lambda info: info["history"].insert(0, dict(info["history"][0])),
     r"history\[1\]\.epoch: epochs must increase from row to row, got 1 after 1"),
])
def test_history_rows_have_the_keys_and_types_the_loops_read(run, change, pattern):
    tamper(run, change)
    expect(run, pattern)


def test_rows_of_runs_saved_before_the_cost_columns_still_load(run):
    """``train_cpu_time``, ``train_flops`` and ``eval_flops`` (issue 27) are optional: older runs lack them."""
    assert {"train_cpu_time", "train_flops", "eval_flops"} <= set(description(run)["history"][0])
    tamper(run, lambda info: [row.pop(key) for row in info["history"]
                              for key in ("train_cpu_time", "train_flops", "eval_flops")])
    load_checkpoint(run)


def test_a_graph_runs_history_needs_its_validation_metrics(run):
    early = {"patience": None, "best_epoch": 1, "best_val_accuracy": 0.5, "best_val_loss": 1.0, "bad_epochs": 0,
             "stopped": False}
    tamper(run, in_format_2(lambda info: info["scheduler"].update(early_stopping=early)))
    expect(run, r"history\[0\]: missing key 'val_accuracy'")
    tamper(run, _row(val_accuracy=0.5, val_loss=1.0))
    load_checkpoint(run)  # now a consistent graph-run description
    for key, value, pattern in [("best_epoch", 7, r"best_epoch: must be an integer in 0\.\.1, got 7"),
                                ("bad_epochs", -1, r"bad_epochs: must be an integer in 0\.\.1"),
                                ("stopped", "no", r"stopped: must be true or false")]:
        tamper(run, lambda info: info["scheduler"]["early_stopping"].update({key: value}))
        expect(run, rf"scheduler\.early_stopping\.{pattern}")
        tamper(run, lambda info: info["scheduler"]["early_stopping"].update(early))


def test_a_graph_runs_history_needs_its_validation_metrics_in_format_3(run):
    early = {"patience": None, "best_epoch": 1, "best_val_accuracy": 0.5, "best_val_loss": 1.0, "bad_epochs": 0,
             "stopped": False}
    tamper(run, lambda info: info.update(early_stopping=early))
    expect(run, r"history\[0\]: missing key 'val_accuracy'")
    tamper(run, _row(val_accuracy=0.5, val_loss=1.0))
    assert load_checkpoint(run)[1].early_stopping.best_epoch == 1
    for key, value, pattern in [("best_epoch", 7, r"best_epoch: must be an integer in 0\.\.1, got 7"),
                                ("bad_epochs", -1, r"bad_epochs: must be an integer in 0\.\.1"),
                                ("stopped", "no", r"stopped: must be true or false"),
                                ("patience", 0, r"patience: must be an integer >= 1, got 0")]:
        tamper(run, lambda info: info["early_stopping"].update({key: value}))
        expect(run, rf"malformed checkpoint, early_stopping\.{pattern}")
        tamper(run, lambda info: info["early_stopping"].update(early))


# --- 4. optimizer groups and state -----------------------------------------------------------------------------
@pytest.mark.parametrize("change, pattern", [
    (lambda info: info["optimizer"].update(param_groups=[1]), r"optimizer\.param_groups\[0\]: must be an object"),
    (lambda info: info["optimizer"].update(param_groups={}), r"optimizer\.param_groups: must be a list"),
    (lambda info: info["optimizer"].update(param_groups=[]), r"optimizer\.param_groups: is empty"),
    (lambda info: info["optimizer"].pop("state"), r"optimizer\.state: must be a dict"),
    (lambda info: info["optimizer"].update({"class": 3}), r"optimizer\.class: must be a string"),
    (lambda info: info.update(optimizer=[]), r"optimizer: must be an object or null"),
    (set_group("params", "stem.0.weight"), r"optimizer\.param_groups\[0\]\.params: must be a list of parameter names"),
    (set_group("params", [1]), r"optimizer\.param_groups\[0\]\.params: must be a list of parameter names"),
    (lambda info: info["optimizer"]["param_groups"][1]["params"].append("stem.0.weight"),
     r"optimizer\.param_groups\[1\]\.params: names parameter 'stem\.0\.weight' twice"),
    (lambda info: info["optimizer"]["state"].update(ghost={"tensors": [], "values": {}}),
     r"optimizer\.state\['ghost'\]: is state for a parameter that no param group holds"),
    (lambda info: info["optimizer"]["state"].update({"stem.0.weight": []}),
     r"optimizer\.state\['stem\.0\.weight'\]: must be an object with keys 'tensors' and 'values'"),
    (lambda info: info["optimizer"]["state"]["stem.0.weight"].update(tensors="momentum_buffer"),
     r"optimizer\.state\['stem\.0\.weight'\]\.tensors: must be a list of distinct state names"),
    (lambda info: info["optimizer"]["state"]["stem.0.weight"].update(values={"x": float("nan")}),
     r"optimizer\.state\['stem\.0\.weight'\]\.values\.x: must be a finite number, bool or null"),
])
def test_malformed_optimizer_descriptions_are_refused(run, change, pattern):
    tamper(run, change)
    expect(run, pattern)


def _replace_tensor(key, value):
    def change(tensors):
        tensors[key] = value
    return change


@pytest.mark.parametrize("change, pattern", [
    (_replace_tensor("optimizer.stem.0.weight.momentum_buffer", torch.zeros(3)),
     r"optimizer\.state\['stem\.0\.weight'\]\.momentum_buffer: has shape \(3,\), the parameter has \(2, 1, 3, 3\)"),
    (_replace_tensor("optimizer.stem.0.weight.momentum_buffer", torch.zeros(2, 1, 3, 3, dtype=torch.float64)),
     r"momentum_buffer: is torch\.float64, the parameter is torch\.float32"),
    (_replace_tensor("optimizer.stem.0.weight.momentum_buffer", torch.full((2, 1, 3, 3), math.inf)),
     r"momentum_buffer: holds non-finite values"),
])
def test_optimizer_state_tensors_must_fit_their_parameters(run, change, pattern):
    tamper_tensors(run, change)
    expect(run, pattern, resume=True)


@pytest.mark.parametrize("change, pattern", [
    (_replace_tensor("optimizer.stem.0.weight.step", torch.ones(3)),
     r"optimizer\.state\['stem\.0\.weight'\]\.step: must be a floating-point scalar, got shape \(3,\)"),
    (_replace_tensor("optimizer.stem.0.weight.step", torch.tensor(-2.0)), r"\.step: must be a whole number of steps"),
    (_replace_tensor("optimizer.stem.0.weight.exp_avg_sq", -torch.ones(2, 1, 3, 3)),
     r"exp_avg_sq: holds negative values"),
    (_replace_tensor("optimizer.stem.0.weight.exp_avg", torch.zeros(2, 1, 3, 3, dtype=torch.int32)),
     r"exp_avg: is torch\.int32, the parameter is torch\.float32"),
])
def test_adam_state_tensors_must_fit_their_parameters(adam_run, change, pattern):
    tamper_tensors(adam_run, change)
    expect(adam_run, pattern, resume=True)


def test_optimizer_state_keys_must_be_what_the_class_keeps(adam_run):
    def drop_exp_avg(info):
        info["optimizer"]["state"]["stem.0.weight"]["tensors"].remove("exp_avg")

    tamper(adam_run, drop_exp_avg)
    tamper_tensors(adam_run, lambda tensors: tensors.pop("optimizer.stem.0.weight.exp_avg"))
    expect(adam_run, r"optimizer\.state\['stem\.0\.weight'\]: lacks 'exp_avg', which AdamW keeps", resume=True)


def test_described_and_stored_optimizer_tensors_must_agree(run):
    tamper_tensors(run, lambda tensors: tensors.pop("optimizer.stem.0.weight.momentum_buffer"))
    expect(run, r"checkpoint-0001\.safetensors: lacks optimizer tensor 'optimizer\.stem\.0\.weight\.momentum_buffer'")


def test_an_undescribed_optimizer_tensor_is_refused(run):
    tamper_tensors(run, _replace_tensor("optimizer.stem.0.weight.exp_avg", torch.zeros(2, 1, 3, 3)))
    expect(run, r"holds optimizer tensor 'optimizer\.stem\.0\.weight\.exp_avg' that checkpoint\.json does not")


# --- 5. model options must describe the stored tensors ---------------------------------------------------------
def test_model_options_far_beyond_the_tensors_are_refused_before_building(run):
    tamper(run, lambda info: info["model"]["options"].update(alpha=10**6))
    expect(run, r"model\.options\.alpha: 1000000 is more than the \d+ values the tensor file holds")
    tamper(run, lambda info: info["model"]["options"].update(alpha=2, n_basis=[1, 10**9, 1]))
    expect(run, r"model\.options\.n_basis: must be at most 512, got 1000000000")
    tamper(run, lambda info: info["model"]["options"].update(n_basis=1, widen=10**5))
    expect(run, r"model\.options\.widen: 100000 is more than the \d+ values the tensor file holds")


def test_model_options_that_change_tensor_shapes_are_refused_on_the_meta_model(run, monkeypatch):
    tamper(run, lambda info: info["model"]["options"].update(alpha=3))
    built_on = []
    rebuild = checkpoint._rebuild

    def spy(info, state, device):
        built_on.append(device)
        return rebuild(info, state, device)

    monkeypatch.setattr(checkpoint, "_rebuild", spy)
    expect(run, r"checkpoint-0001\.safetensors: model\.stem\.0\.weight has shape \(2, 1, 3, 3\), the model of "
                r"checkpoint\.json needs \(3, 1, 3, 3\)")
    assert built_on == [torch.device("meta")]  # never allocated for real


@pytest.mark.parametrize("change, pattern", [
    (lambda info: info["model"]["options"].update(depth=3), r"cannot rebuild model 'continuousnet': depth"),
    (lambda info: info["model"]["options"].update(norm={"a": 1}), r"model\.options\.norm: must be a finite number"),
    (lambda info: info["model"]["options"].update(n_steps=10**6), r"model\.options\.n_steps: must be at most 4096"),
    (lambda info: info["model"].update(name="vgg"), r"the run's model 'vgg' is not registered in this process"),
])
def test_model_options_of_the_wrong_kind_are_refused(run, change, pattern):
    tamper(run, change)
    expect(run, pattern)


@pytest.mark.parametrize("change, pattern", [
    (_replace_tensor("model.stem.0.weight", torch.zeros(2, 1, 3, 3, dtype=torch.int32)),
     r"model\.stem\.0\.weight is torch\.int32, the model needs torch\.float32"),
    (_replace_tensor("model.stem.0.weight", torch.full((2, 1, 3, 3), math.nan)),
     r"model\.stem\.0\.weight holds non-finite values"),
    (_replace_tensor("model.extra", torch.zeros(1)), r"holds model\.extra, which the model of checkpoint\.json"),
    (lambda tensors: tensors.pop("model.stem.0.weight"), r"lacks model\.stem\.0\.weight that the model"),
    (_replace_tensor("junk", torch.zeros(1)), r"holds tensor 'junk', which is neither model\.\* nor optimizer\.\*"),
])
def test_stored_tensors_must_be_exactly_the_models_state(run, change, pattern):
    tamper_tensors(run, change)
    expect(run, pattern)


# --- 6. the JSON itself ---------------------------------------------------------------------------------------------
def test_deeply_nested_json_is_a_malformed_checkpoint(run):
    (run / "checkpoint.json").write_text("[" * 200_000 + "]" * 200_000)
    expect(run, r"checkpoint\.json: malformed checkpoint, not valid JSON \(nested too deeply\)")


def test_an_oversized_description_is_refused_unread(run):
    with open(run / "checkpoint.json", "r+b") as f:
        f.truncate(MAX_JSON_BYTES + 1)  # sparse: nothing to write, nothing may be read
    expect(run, rf"checkpoint\.json: is {MAX_JSON_BYTES + 1} bytes, more than a checkpoint description can be")


def test_numbers_json_cannot_convert_are_malformed(run):
    text = (run / "checkpoint.json").read_text().replace('"epoch": 1', '"epoch": ' + "9" * 5000, 1)
    (run / "checkpoint.json").write_text(text)
    expect(run, r"malformed checkpoint, not valid JSON")


# --- 7. optimizer hyperparameters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, pattern", [
    ("momentum", -5, r"momentum: must be a number in \[0\.0, 1\.0\), got -5"),
    ("momentum", 1.5, r"momentum: must be a number in \[0\.0, 1\.0\), got 1\.5"),
    ("lr", float("nan"), r"lr: must be a finite number >= 0\.0, got nan"),
    ("lr", -0.1, r"lr: must be a finite number >= 0\.0"),
    ("weight_decay", -1, r"weight_decay: must be a finite number >= 0\.0"),
    ("nesterov", "yes", r"nesterov: must be true or false"),
    ("dampening", 2, r"dampening: must be a number in \[0\.0, 1\.0\]"),
    ("custom", {"a": 1}, r"custom: must be a number, bool, null or a list"),
])
def test_bad_sgd_hyperparameters_are_refused(run, key, value, pattern):
    tamper(run, set_group(key, value))
    expect(run, rf"optimizer\.param_groups\[0\]\.{pattern}")


@pytest.mark.parametrize("key, value, pattern", [
    ("betas", [2, 0.9], r"betas\[0\]: must be a number in \[0\.0, 1\.0\), got 2"),
    ("betas", [0.9], r"betas: must be two numbers in \[0, 1\)"),
    ("eps", 0, r"eps: must be a finite number > 0\.0, got 0"),
    ("amsgrad", 1, r"amsgrad: must be true or false"),
])
def test_bad_adam_hyperparameters_are_refused(adam_run, key, value, pattern):
    tamper(adam_run, set_group(key, value))
    expect(adam_run, rf"optimizer\.param_groups\[0\]\.{pattern}")


def test_valid_hyperparameters_that_differ_from_the_runs_are_not_used_silently(run):
    tamper(run, set_group("momentum", 0.5))
    expect(run, r"optimizer\.param_groups\[0\]\.momentum is 0\.5, but the optimizer being restored has 0\.9",
           resume=True)
    tamper(run, set_group("momentum", 0.9))
    tamper(run, set_group("invented", 1))
    expect(run, r"optimizer\.param_groups\[0\]\.invented: is not a hyperparameter of SGD", resume=True)


# --- 8. the integrity check cannot be switched off ----------------------------------------------------------------
@pytest.mark.parametrize("change, pattern", [
    (lambda info: info.pop("tensors_sha256"), r"malformed checkpoint, missing key 'tensors_sha256'"),
    (lambda info: info.update(tensors_sha256=None), r"'tensors_sha256' must be str, got NoneType"),
    (lambda info: info.update(tensors_sha256="abc"), r"tensors_sha256: must be 64 hexadecimal digits"),
    (lambda info: info.update(tensors_sha256="0" * 64), r"checkpoint-0001\.safetensors: does not match checkpoint\.json"),
])
def test_the_tensor_files_sha256_is_required(run, change, pattern):
    tamper(run, change)
    expect(run, pattern)


# --- 9. only regular files are read --------------------------------------------------------------------------------
def _unblock_after(path: Path, seconds: float) -> threading.Timer:
    """Open ``path`` (a FIFO) for writing later, so that a reader that blocks fails the test, not hangs it."""
    def release():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
    timer = threading.Timer(seconds, release)
    timer.daemon = True
    timer.start()
    return timer


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="os.mkfifo is not available on this platform (Windows), so no FIFO can stand in for a file")
@pytest.mark.parametrize("which", ["tensors", "checkpoint.json"])
def test_a_fifo_in_place_of_a_checkpoint_file_is_refused_not_waited_on(run, which):
    name = description(run)["tensors"] if which == "tensors" else "checkpoint.json"
    (run / name).unlink()
    os.mkfifo(run / name)
    timer = _unblock_after(run / name, 5.0)
    try:
        expect(run, re.escape(name) + ": is not a regular file")
    finally:
        timer.cancel()


def test_a_folder_in_place_of_the_tensor_file_is_refused(run):
    name = description(run)["tensors"]
    (run / name).unlink()
    (run / name).mkdir()
    expect(run, re.escape(name) + ": is not a regular file")


# --- other fields ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, pattern", [
    (in_format_2(lambda info: info.update(scheduler=5)), r"scheduler: must be an object or null, got int"),
    (in_format_2(lambda info: info["scheduler"].update(steps_per_epoch=0)),
     r"scheduler\.steps_per_epoch: must be an integer >= 1"),
    (in_format_2(lambda info: info["scheduler"].update(base_lrs="0.1")), r"scheduler\.base_lrs: must be a list"),
    (in_format_2(lambda info: info["scheduler"].update(base_lrs=[math.inf])),
     r"scheduler\.base_lrs\[0\]: must be a finite number"),
    (in_format_2(lambda info: info["scheduler"].update(early_stopping=[])),
     r"scheduler\.early_stopping: must be an object"),
    (lambda info: info.update(config=[1]), r"config: must be an object \(the run's TrainConfig\) or null, got list"),
    (lambda info: info.update(version=1), r"version: must be a string"),
    (lambda info: info.update(format_version=0), r"format_version: must be an integer >= 1, got 0"),
    (lambda info: info["model"].update(options=[]), r"'options' must be dict, got list"),
])
def test_other_fields_of_the_wrong_type_are_refused(run, change, pattern):
    tamper(run, change)
    expect(run, pattern)


@pytest.mark.parametrize("change, pattern", [
    (lambda info: info.update(lr_schedule=5), r"malformed checkpoint, lr_schedule: must be an object or null, got int"),
    (lambda info: info["lr_schedule"].update(steps_per_epoch=0),
     r"malformed checkpoint, lr_schedule\.steps_per_epoch: must be an integer >= 1, got 0$"),
    (lambda info: info["lr_schedule"].update(base_lrs="0.1"), r"lr_schedule\.base_lrs: must be a list, got '0\.1'$"),
    (lambda info: info["lr_schedule"].update(base_lrs=[-1]),
     r"malformed checkpoint, lr_schedule\.base_lrs\[0\]: must be a finite number >= 0\.0, got -1$"),
    (lambda info: info["lr_schedule"].update(refine_lr_scale="2"),
     r"lr_schedule\.refine_lr_scale: must be a finite number >= 0\.0, got '2'$"),
    (lambda info: info["lr_schedule"].pop("global_step"), r"malformed checkpoint, lr_schedule: missing key 'global_step'$"),
    (lambda info: info["lr_schedule"].update(warmup=3),
     r"malformed checkpoint, lr_schedule: unknown key 'warmup' \(the keys are kind, base_lrs, "),
    (lambda info: info.update(early_stopping=[]), r"malformed checkpoint, early_stopping: must be an object, got list$"),
    (lambda info: info.update(grad_scaler={"scale": "huge"}),
     r"malformed checkpoint, grad_scaler: must map names to finite numbers, got \{'scale': 'huge'\}$"),
    (lambda info: info.update(scheduler={}), r"malformed checkpoint, unknown key 'scheduler' \(the keys are format, "),
    (lambda info: info["model"].update(extra=1), r"malformed checkpoint, model: unknown key 'extra'"),
    (in_format_2(lambda info: info.update(lr_schedule={})),
     r"malformed checkpoint, unknown key 'lr_schedule' \(a format 2 checkpoint keeps it under 'scheduler'\)$"),
])
def test_the_format_3_states_are_typed_and_no_key_is_unknown(run, change, pattern):
    tamper(run, change)
    message = expect(run, pattern)
    assert message.startswith(f"{run / 'checkpoint.json'}: malformed checkpoint, ") and "\n" not in message


def test_an_invalid_stored_config_is_a_checkpoint_error(run):
    tamper(run, lambda info: info["config"].update(lr=-1))
    _, info = load_checkpoint(run)
    with pytest.raises(CheckpointError, match=r"checkpoint\.json: its config is invalid here: .*lr: must be > 0"):
        info.train_config()


# --- the command line: one line, exit status 2 ---------------------------------------------------------------------
@pytest.mark.parametrize("change", [
    lambda info: info["layout"][0].update(n_steps=10**9),
    lambda info: info.update(history=[{}]),
    lambda info: info["optimizer"]["param_groups"][0].update(momentum=-5),
    lambda info: info.pop("tensors_sha256"),
])
def test_the_cli_answers_a_hostile_checkpoint_in_one_line(run, capsys, change):
    tamper(run, change)
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"contdepth eval: error: {run}") and err.count("\n") == 1, err
    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("contdepth train: error: ") and str(run) in err and err.count("\n") == 1, err


def test_a_huge_value_is_shown_cut_short(run):
    tamper(run, _row(test_accuracy="x" * 10**6))
    message = expect(run, r"history\[0\]\.test_accuracy: must be a number in \[0\.0, 1\.0\], got 'xxx.*\.\.\.$")
    assert len(message) < len(str(run)) + 200


# --- the weights' hash is a function of the tensors (issue 26) -------------------------------------------
_SAVE_IN_A_PROCESS = """
import hashlib, sys, torch
from torch import nn
from contdepth.train.checkpoint import save_checkpoint, read_description
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
save_checkpoint(sys.argv[1], model, epoch=1, model_config={"name": "custom", "class": "x.Y", "options": {}})
print(read_description(sys.argv[1])["tensors_sha256"])
"""


def test_identical_weights_get_the_same_tensors_sha256_in_every_process(tmp_path):
    import subprocess
    import sys

    digests = set()
    for i in range(4):  # the header's key order used to vary with the process's hash seed
        done = subprocess.run([sys.executable, "-c", _SAVE_IN_A_PROCESS, str(tmp_path / f"run{i}")],
                              capture_output=True, text=True, timeout=120, check=True)
        digests.add(done.stdout.strip().splitlines()[-1])
    assert len(digests) == 1, digests


def test_the_tensor_file_header_is_canonical_whatever_order_it_was_written_in(tmp_path):
    tensors = {"model.b": torch.ones(2), "model.a": torch.arange(3.0), "optimizer.a.momentum": torch.zeros(3)}
    blob = save_tensors(tensors, metadata={"format": "contdepth-checkpoint", "epoch": "1"})
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    shuffled = json.dumps(dict(reversed(list(header.items())))
                          | {"__metadata__": {"epoch": "1", "format": "contdepth-checkpoint"}}).encode()
    shuffled += b" " * (-len(shuffled) % 8)
    other = len(shuffled).to_bytes(8, "little") + shuffled + blob[8 + size:]
    assert checkpoint.canonical_safetensors(blob) == checkpoint.canonical_safetensors(other)
    loaded = load_tensors(checkpoint.canonical_safetensors(other))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    # what save_checkpoint writes is already canonical (so its SHA-256 is that of the canonical bytes)
    torch.manual_seed(0)
    path = checkpoint.save_checkpoint(tmp_path / "run", torch.nn.Linear(2, 2), epoch=1,
                                      model_config={"name": "custom", "class": "x.Y", "options": {}})
    written = (path.parent / json.loads(path.read_text())["tensors"]).read_bytes()
    assert checkpoint.canonical_safetensors(written) == written

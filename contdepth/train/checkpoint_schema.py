"""What a checkpoint may hold: every field of ``checkpoint.json`` checked before anything is built.

A run folder can come from anyone, and the numbers in its description size work: a basis
size becomes matrices, a step count a stage plan, an epoch a loop and a division, a model
option an allocation. So loading treats the files as untrusted input:

* only regular files are opened (a FIFO would block the reader forever, a device never
  end), and ``checkpoint.json`` may be at most `MAX_JSON_BYTES`;
* JSON nested too deeply for the parser is a malformed file, not a ``RecursionError``;
* every field has the type and range the writer ([`save_checkpoint`][contdepth.train.save_checkpoint])
  gives it, and the fields agree with each other (the history ends at ``epoch``) and with
  the tensors (every optimizer tensor is described, every described one is there);
* numbers that size work are bounded by what the tensor file holds: a layout's
  ``n_basis`` is the stored coefficients' leading size, a size-like model option is at
  most the number of stored values, and step counts are at most
  `MAX_N_STEPS`;
* the model is built on the ``meta`` device first (no memory) and its ``state_dict``
  compared with the stored tensors, key by key, shape and dtype; only then for real;
* optimizer hyperparameters lie in their valid ranges and agree with the optimizer being
  restored, and each state tensor has its parameter's shape and dtype (scalar ``step``).

Every failure is a [`CheckpointError`][contdepth.train.CheckpointError] whose message starts with the
file's path and names the field (``history[0].epoch: ...``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Mapping, NoReturn

import torch
from torch import nn

from ..common.files import read_regular_bytes
from ..nn import MAX_N_BASIS, MAX_N_STEPS, check_layout_entries
from .optim import SECOND_MOMENT_KEYS


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed or inconsistent; the message names the file.

    Defined here, below `contdepth.train.checkpoint` (which re-exports it), so that the
    checks import nothing from the module that uses them.
    """


# A description with a few thousand epochs of history is well under a megabyte.
MAX_JSON_BYTES = 64 * 2**20
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# Option names bounded like a layout's n_steps / n_basis (the first is no tensor size at all;
# the second costs time cubic in its value to build, before any shape can be compared).
STEP_OPTIONS = frozenset({"n_steps"})
BASIS_OPTIONS = frozenset({"n_basis", "n_units"})
# Optimizer state kept per parameter with the parameter's shape (torch's optimizers).
PARAMETER_SHAPED_STATE = frozenset({
    "momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "grad_avg", "sum", "acc_delta",
    "exp_inf", "prev", "step_size", "ax",
})


def _show(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a hostile value must not flood the one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fail(path: Path, where: str, problem: str) -> NoReturn:
    if len(where) > 120:  # a key from the file may be any length
        where = where[:117] + "..."
    raise CheckpointError(f"{path}: malformed checkpoint, {where}: {problem}")


# --- files -----------------------------------------------------------------------------------------
def read_regular_file(path: Path, what: str, limit: int | None = None) -> bytes:
    """The bytes of ``path`` if it is a regular file (of at most ``limit`` bytes), else a `CheckpointError`.

    The common reader (`contdepth.common.read_regular_bytes`): opened
    non-blocking and checked with ``fstat`` on the open descriptor, so a FIFO or a device put
    in place of a checkpoint file is refused at once instead of blocking the reader.
    """
    return read_regular_bytes(path, what, limit, error=CheckpointError)


def parse_json(data: bytes, path: Path) -> dict:
    """``data`` as a JSON object; malformed, non-UTF-8 or too deeply nested text is a CheckpointError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        info = json.loads(text)
    except RecursionError as exc:
        raise CheckpointError(f"{path}: malformed checkpoint, not valid JSON (nested too deeply)") from exc
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise CheckpointError(f"{path}: malformed checkpoint, not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: malformed checkpoint, expected a JSON object at the top level")
    return info


# --- scalar checks -------------------------------------------------------------------------------------
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(value: object, path: Path, where: str, low: int = 0, high: int | None = None) -> int:
    if not _is_int(value) or value < low or (high is not None and value > high):
        allowed = f"in {low}..{high}" if high is not None else f">= {low}"
        _fail(path, where, f"must be an integer {allowed}, got {_show(value)}")
    return value


def check_number(value: object, path: Path, where: str, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, finite: bool = True) -> float:
    """A JSON number (not a bool) in the interval; non-finite only where ``finite`` is False."""
    ok = _is_number(value) and (not finite or math.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            allowed = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            allowed = f"a finite number {'>' if low_open else '>='} {low}"
        else:
            allowed = "a finite number" if finite else "a number"
        _fail(path, where, f"must be {allowed}, got {_show(value)}")
    return float(value)


def check_bool(value: object, path: Path, where: str) -> bool:
    if not isinstance(value, bool):
        _fail(path, where, f"must be true or false, got {_show(value)}")
    return value


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))


def _is_flat(value: object) -> bool:
    """A JSON scalar or a list of them: all a model option or hyperparameter needs."""
    return _is_scalar(value) or (isinstance(value, list) and all(_is_scalar(v) for v in value))


# --- checkpoint.json ---------------------------------------------------------------------------------------
def check_description(info: dict, path: Path) -> None:
    """Every field of a parsed ``checkpoint.json`` that loading reads (types, ranges, agreement)."""

    for key in ("version", "torch_version"):
        if key in info and not isinstance(info[key], str):
            _fail(path, key, f"must be a string, got {_show(info[key])}")
    check_int(info["format_version"], path, "format_version", 1)
    digest = info["tensors_sha256"]
    if not SHA256.fullmatch(digest):
        _fail(path, "tensors_sha256", f"must be 64 hexadecimal digits (the tensor file's SHA-256), got {_show(digest)}")
    check_model_description(info["model"], path)
    try:
        check_layout_entries(info["layout"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: malformed checkpoint, {exc}") from exc
    epoch = check_int(info["epoch"], path, "epoch", 0)
    scheduler = info.get("scheduler")
    check_scheduler(scheduler, path, epoch)
    graph_run = isinstance(scheduler, dict) and "early_stopping" in scheduler
    check_history(info["history"], path, epoch, graph_run)
    check_optimizer_description(info.get("optimizer"), path)
    config = info.get("config")
    if config is not None and not isinstance(config, dict):
        _fail(path, "config", f"must be an object (the run's TrainConfig) or null, got {type(config).__name__}")


def check_model_description(model: dict, path: Path) -> None:
    for key, value in model["options"].items():
        if not _is_flat(value):
            _fail(path, f"model.options.{key}", f"must be a finite number, string, bool, null or a list of those, "
                                                f"got {_show(value)}")


# Metrics rows are what the training loops append; each known key has its check.
def _accuracy(v: object, path: Path, where: str) -> None:
    check_number(v, path, where, 0.0, 1.0)


def _loss(v: object, path: Path, where: str) -> None:
    check_number(v, path, where, finite=False)


#: The longest time a row may record (about 31 years) and the most parameters a model may
#: count: a report sums, squares and divides these, and 1e308 seconds or 10**400 parameters
#: overflowed there (issue 26) although no run can have them.
MAX_SECONDS = 1e9
MAX_PARAMS = 10**13
#: The most floating-point operations an epoch may record (``train_flops``, ``eval_flops``): a
#: year of a device at 10**15 operations a second is 3 x 10**22; a report divides and logs them.
MAX_FLOPS = 10**24


def _seconds(v: object, path: Path, where: str) -> None:
    check_number(v, path, where, 0.0, MAX_SECONDS)


def _counts(v: object, path: Path, where: str) -> None:
    if not isinstance(v, list):
        _fail(path, where, f"must be a list of integers >= 1 (one per block), got {_show(v)}")
    for i, n in enumerate(v):
        check_int(n, path, f"{where}[{i}]", 1)


HISTORY_KEYS = {
    "epoch": lambda v, p, w: check_int(v, p, w, 1),
    "train_loss": _loss, "test_loss": _loss, "val_loss": _loss,
    "train_accuracy": _accuracy, "test_accuracy": _accuracy, "val_accuracy": _accuracy,
    "lr": lambda v, p, w: check_number(v, p, w, 0.0),
    "n_steps": _counts, "n_basis": _counts,
    "reconstruction_error": _loss,
    "refined": check_bool,
    "params": lambda v, p, w: check_int(v, p, w, 0, MAX_PARAMS),
    "epoch_time": _seconds, "total_time": _seconds, "train_time": _seconds, "cpu_time": _seconds,
    "train_cpu_time": _seconds,  # optional like every key not in REQUIRED_ROW_KEYS: older runs lack it
    "train_flops": lambda v, p, w: check_int(v, p, w, 0, MAX_FLOPS),
    "eval_flops": lambda v, p, w: check_int(v, p, w, 0, MAX_FLOPS),
    "threads": lambda v, p, w: check_int(v, p, w, 1),
    "world_size": lambda v, p, w: check_int(v, p, w, 1),
    "best_epoch": lambda v, p, w: check_int(v, p, w, 0),
    "schedule_epochs": lambda v, p, w: check_int(v, p, w, 1),
}
# What the loops read back from a stored row (RunResult, resume's elapsed time, the graph
# loop's best-validation choice).
REQUIRED_ROW_KEYS = ("epoch", "test_accuracy", "total_time")
REQUIRED_GRAPH_ROW_KEYS = ("val_accuracy", "val_loss")


def check_history(history: list, path: Path, epoch: int, graph_run: bool) -> None:
    """One metrics row per completed epoch, numbered upwards, the last one ``epoch``.

    A history may be shorter than ``epoch`` (or empty: a checkpoint saved by hand) but a
    row never describes an epoch after the checkpoint's.
    """
    required = REQUIRED_ROW_KEYS + (REQUIRED_GRAPH_ROW_KEYS if graph_run else ())
    previous = 0
    for i, row in enumerate(history):
        where = f"history[{i}]"
        if not isinstance(row, dict):
            _fail(path, where, f"must be an object (one epoch's metrics), got {type(row).__name__}")
        for key in required:
            if key not in row:
                _fail(path, where, f"missing key {_show(key)}")
        for key, value in row.items():
            check = HISTORY_KEYS.get(key)
            if check is not None:
                check(value, path, f"{where}.{key}")
            elif not _is_flat(value):
                _fail(path, f"{where}.{key}", f"must be a number, string, bool, null or a list of those, got {_show(value)}")
        if row["epoch"] <= previous:
            _fail(path, f"{where}.epoch", f"epochs must increase from row to row, got {row['epoch']} after {previous}")
        previous = row["epoch"]
    if history and previous != epoch:
        _fail(path, "epoch", f"is {epoch}, but the history's last row is epoch {previous}")


SCHEDULER_KEYS = {
    "kind": lambda v, p, w: v if isinstance(v, str) else _fail(p, w, f"must be a name, got {_show(v)}"),
    "steps_per_epoch": lambda v, p, w: check_int(v, p, w, 1),
    "epochs": lambda v, p, w: check_int(v, p, w, 0),
    "warmup_steps": lambda v, p, w: check_int(v, p, w, 0),
    "global_step": lambda v, p, w: check_int(v, p, w, 0),
    "gamma": lambda v, p, w: check_number(v, p, w, 0.0),
    "min_lr": lambda v, p, w: check_number(v, p, w, 0.0),
    "refine_lr_scale": lambda v, p, w: check_number(v, p, w, 0.0),
}
EARLY_STOPPING_KEYS = ("patience", "best_epoch", "best_val_accuracy", "best_val_loss", "bad_epochs", "stopped")


def check_scheduler(scheduler: object, path: Path, epoch: int) -> None:
    """The learning-rate schedule's state and, for a graph run, the early-stopping state."""
    if scheduler is None:
        return
    if not isinstance(scheduler, dict):
        _fail(path, "scheduler", f"must be an object or null, got {type(scheduler).__name__}")
    for key, check in SCHEDULER_KEYS.items():
        if key in scheduler:
            check(scheduler[key], path, f"scheduler.{key}")
    for key in ("base_lrs", "milestones"):
        values = scheduler.get(key, [])
        if not isinstance(values, list):
            _fail(path, f"scheduler.{key}", f"must be a list, got {_show(values)}")
        for i, v in enumerate(values):
            if key == "base_lrs":
                check_number(v, path, f"scheduler.{key}[{i}]", 0.0)
            else:
                check_int(v, path, f"scheduler.{key}[{i}]", 1)
    if "early_stopping" in scheduler:
        check_early_stopping(scheduler["early_stopping"], path, epoch)


def check_early_stopping(state: object, path: Path, epoch: int) -> None:
    where = "scheduler.early_stopping"
    if not isinstance(state, dict):
        _fail(path, where, f"must be an object, got {type(state).__name__}")
    for key in EARLY_STOPPING_KEYS:
        if key not in state:
            _fail(path, where, f"missing key {_show(key)}")
    if state["patience"] is not None:
        check_int(state["patience"], path, f"{where}.patience", 1)
    check_int(state["best_epoch"], path, f"{where}.best_epoch", 0, epoch)
    check_int(state["bad_epochs"], path, f"{where}.bad_epochs", 0, epoch)
    # -inf/inf are the values before the first epoch
    check_number(state["best_val_accuracy"], path, f"{where}.best_val_accuracy", finite=False)
    check_number(state["best_val_loss"], path, f"{where}.best_val_loss", finite=False)
    check_bool(state["stopped"], path, f"{where}.stopped")


# --- optimizer description -----------------------------------------------------------------------------
def _betas(v: object, p: Path, w: str) -> None:
    if not (isinstance(v, list) and len(v) == 2):
        _fail(p, w, f"must be two numbers in [0, 1), got {_show(v)}")
    for i, b in enumerate(v):
        check_number(b, p, f"{w}[{i}]", 0.0, 1.0, high_open=True)


def _flag_or_null(v: object, p: Path, w: str) -> None:
    if v is not None:
        check_bool(v, p, w)


# The ranges torch's own optimizers accept, narrowed to what a training run means.
HYPERPARAMETERS = {
    "lr": lambda v, p, w: check_number(v, p, w, 0.0),
    "initial_lr": lambda v, p, w: check_number(v, p, w, 0.0),
    "momentum": lambda v, p, w: check_number(v, p, w, 0.0, 1.0, high_open=True),
    "dampening": lambda v, p, w: check_number(v, p, w, 0.0, 1.0),
    "weight_decay": lambda v, p, w: check_number(v, p, w, 0.0),
    "eps": lambda v, p, w: check_number(v, p, w, 0.0, low_open=True),
    "alpha": lambda v, p, w: check_number(v, p, w, 0.0, 1.0),
    "betas": _betas,
    **{flag: check_bool for flag in ("nesterov", "maximize", "amsgrad", "centered", "capturable", "differentiable",
                                     "decoupled_weight_decay")},
    **{flag: _flag_or_null for flag in ("foreach", "fused")},
}


def check_optimizer_description(optimizer: object, path: Path) -> None:
    """Class name, param groups (unique parameter names, valid hyperparameters) and state entries."""
    if optimizer is None:
        return
    if not isinstance(optimizer, dict):
        _fail(path, "optimizer", f"must be an object or null, got {type(optimizer).__name__}")
    for key, kind in (("class", str), ("param_groups", list), ("state", dict)):
        if not isinstance(optimizer.get(key), kind):
            _fail(path, f"optimizer.{key}", f"must be a {'string' if kind is str else kind.__name__}, "
                                            f"got {_show(optimizer.get(key))}")
    if not optimizer["param_groups"]:
        _fail(path, "optimizer.param_groups", "is empty")
    seen: set[str] = set()
    for i, group in enumerate(optimizer["param_groups"]):
        where = f"optimizer.param_groups[{i}]"
        if not isinstance(group, dict):
            _fail(path, where, f"must be an object, got {type(group).__name__}")
        names = group.get("params")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            _fail(path, f"{where}.params", "must be a list of parameter names")
        for name in names:
            if name in seen:
                _fail(path, f"{where}.params", f"names parameter {_show(name)} twice")
            seen.add(name)
        for key, value in group.items():
            if key == "params":
                continue
            check = HYPERPARAMETERS.get(key)
            if check is not None:
                check(value, path, f"{where}.{key}")
            elif not _is_flat(value):
                _fail(path, f"{where}.{key}", f"must be a number, bool, null or a list of those, got {_show(value)}")
    for name, entry in optimizer["state"].items():
        where = f"optimizer.state[{_show(name)}]"
        if name not in seen:
            _fail(path, where, "is state for a parameter that no param group holds")
        if not (isinstance(entry, dict) and sorted(entry) == ["tensors", "values"]):
            _fail(path, where, "must be an object with keys 'tensors' and 'values'")
        tensors, values = entry["tensors"], entry["values"]
        if not (isinstance(tensors, list) and all(isinstance(k, str) for k in tensors) and len(set(tensors)) == len(tensors)):
            _fail(path, f"{where}.tensors", "must be a list of distinct state names")
        if not isinstance(values, dict):
            _fail(path, f"{where}.values", f"must be an object, got {type(values).__name__}")
        for key, value in values.items():
            if key in tensors:
                _fail(path, f"{where}.values.{key}", "is also listed as a tensor")
            if not (value is None or isinstance(value, bool) or (_is_number(value) and math.isfinite(value))):
                _fail(path, f"{where}.values.{key}", f"must be a finite number, bool or null, got {_show(value)}")


def check_tensor_names(info: dict, tensors: Mapping[str, torch.Tensor], path: Path, tensor_path: Path) -> None:
    """Every tensor is the model's or described optimizer state, and every described one is there."""
    optimizer = info.get("optimizer")
    expected = set()
    if optimizer is not None:
        expected = {f"optimizer.{name}.{key}" for name, entry in optimizer["state"].items() for key in entry["tensors"]}
    found = {k for k in tensors if k.startswith("optimizer.")}
    other = sorted(k for k in tensors if not k.startswith(("model.", "optimizer.")))
    if other:
        raise CheckpointError(f"{tensor_path}: holds tensor {_show(other[0])}, which is neither model.* nor optimizer.*")
    if not any(k.startswith("model.") for k in tensors):
        raise CheckpointError(f"{tensor_path}: holds no model tensors")
    if expected - found:
        raise CheckpointError(f"{tensor_path}: lacks optimizer tensor {sorted(expected - found)[0]!r} that "
                              f"{path.name} describes")
    if found - expected:
        raise CheckpointError(f"{tensor_path}: holds optimizer tensor {sorted(found - expected)[0]!r} that "
                              f"{path.name} does not describe")


# --- against the model --------------------------------------------------------------------------------------
def check_model_options(options: dict, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Size-like integer options cannot exceed the number of values the tensor file holds.

    Every integer option of the registered models is a size of some stored tensor
    (channels, width, classes, basis functions, units, nodes ...), except step counts,
    which are held to `MAX_N_STEPS`; basis sizes and unit counts are
    also held to `MAX_N_BASIS`. This bounds the work of building the
    model, even on the ``meta`` device (a loop per unit or basis function), by the file
    itself: ``alpha: 1000000`` against a few thousand stored values is refused here.
    """

    total = sum(t.numel() for t in state.values())
    for key, value in options.items():
        for v in value if isinstance(value, list) else [value]:
            if not _is_int(v):
                continue
            if key in STEP_OPTIONS:
                if v > MAX_N_STEPS:
                    _fail(path, f"model.options.{key}", f"must be at most {MAX_N_STEPS} steps, got {v}")
            elif key in BASIS_OPTIONS and v > MAX_N_BASIS:
                _fail(path, f"model.options.{key}", f"must be at most {MAX_N_BASIS}, got {v}")
            elif v > max(total, 1):
                _fail(path, f"model.options.{key}", f"{v} is more than the {total} values the tensor file holds, "
                                                    "so it cannot describe them")


def check_state_matches(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], path: Path,
                        tensor_path: Path) -> None:
    """The stored tensors are exactly the model's ``state_dict``: keys, shapes, dtypes; finite values."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{tensor_path}: lacks model.{missing[0]} that the model of {path.name} has"
                              f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
    if extra:
        raise CheckpointError(f"{tensor_path}: holds model.{extra[0]}, which the model of {path.name} does not have"
                              f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}")
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape:
            raise CheckpointError(f"{tensor_path}: model.{key} has shape {tuple(got.shape)}, the model of "
                                  f"{path.name} needs {tuple(want.shape)}")
        if got.dtype != want.dtype:
            raise CheckpointError(f"{tensor_path}: model.{key} is {got.dtype}, the model needs {want.dtype}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"{tensor_path}: model.{key} holds non-finite values (NaN or infinity)")


def check_optimizer_state(name: str, values: dict, param: nn.Parameter, class_name: str, group: dict,
                          path: Path) -> None:
    """One parameter's restored optimizer state: the keys its class needs, shapes, dtypes, finite values."""
    where = f"optimizer.state[{_show(name)}]"
    needed, allowed = _state_keys(class_name, group)
    keys = set(values)
    if needed - keys:
        _fail(path, where, f"lacks {sorted(needed - keys)[0]!r}, which {class_name} keeps for every parameter")
    if allowed is not None and keys - allowed:
        _fail(path, where, f"holds {sorted(keys - allowed)[0]!r}, which is not state of {class_name}")
    for key, value in values.items():
        if not isinstance(value, torch.Tensor):
            continue
        at = f"{where}.{key}"
        if key == "step":
            if value.dim() != 0 or not value.is_floating_point():
                _fail(path, at, f"must be a floating-point scalar, got shape {tuple(value.shape)} {value.dtype}")
            step = float(value)
            if not (math.isfinite(step) and step >= 0 and step == int(step)):
                _fail(path, at, f"must be a whole number of steps >= 0, got {step}")
            continue
        if key in PARAMETER_SHAPED_STATE or value.dim() > 0:
            if value.shape != param.shape:
                _fail(path, at, f"has shape {tuple(value.shape)}, the parameter has {tuple(param.shape)}")
            if value.dtype != param.dtype:
                _fail(path, at, f"is {value.dtype}, the parameter is {param.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            _fail(path, at, "holds non-finite values (NaN or infinity)")
        if key in SECOND_MOMENT_KEYS and bool((value < 0).any()):
            _fail(path, at, "holds negative values (it is an average of squares)")


def _state_keys(class_name: str, group: dict) -> tuple[set[str], set[str] | None]:
    """``(needed, allowed)`` state keys of one parameter for the optimizers the trainer builds.

    ``allowed`` is ``None`` for other classes (only shapes are checked then). A needed key
    missing would otherwise be a ``KeyError`` inside the first ``optimizer.step()``.
    """
    if class_name == "SGD":
        return ({"momentum_buffer"} if group.get("momentum", 0) != 0 else set()), {"momentum_buffer"}
    if class_name in ("Adam", "AdamW"):
        needed = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group.get("amsgrad") else set())
        return needed, {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    if class_name == "RMSprop":
        needed = ({"step", "square_avg"} | ({"momentum_buffer"} if group.get("momentum", 0) > 0 else set())
                  | ({"grad_avg"} if group.get("centered") else set()))
        return needed, {"step", "square_avg", "momentum_buffer", "grad_avg"}
    return set(), None


def check_hyperparameters_agree(stored: dict, current: dict, class_name: str, path: Path, where: str) -> None:
    """A restored group keeps the optimizer's own hyperparameters; the stored ones must equal them.

    The learning rate is exempt (the schedule rewrites it before every step). A key the
    stored group lacks (written by an older torch) keeps the optimizer's value; one the
    optimizer does not know is refused rather than silently dropped.
    """
    for key, value in stored.items():
        if key in ("params", "lr", "initial_lr"):
            continue
        if key not in current:
            _fail(path, f"{where}.{key}", f"is not a hyperparameter of {class_name} in torch {torch.__version__}")
        mine = current[key]
        if not _same(value, mine):
            raise CheckpointError(f"{path}: {where}.{key} is {_show(value)}, but the optimizer being restored has "
                                  f"{_show(mine)}; a resumed run keeps its hyperparameters")


def _same(stored: object, mine: object) -> bool:
    """JSON ``stored`` equals the optimizer's ``mine`` (tuples are lists, flags stay flags)."""
    if isinstance(mine, torch.Tensor) and mine.numel() == 1:
        mine = mine.item()
    if isinstance(mine, (list, tuple)):
        return isinstance(stored, list) and len(stored) == len(mine) and all(map(_same, stored, mine))
    if isinstance(mine, bool) or mine is None or isinstance(stored, bool) or stored is None:
        return stored is mine
    if isinstance(mine, str):
        return stored == mine
    return _is_number(stored) and _is_number(mine) and stored == mine

"""What a checkpoint's files may be, and the checks of its tensors, before anything is built.

A run folder can come from anyone, and the numbers in its files size work, so loading treats
them as untrusted input:

* only regular files are opened (a FIFO would block the reader forever, a device never
  end), and ``checkpoint.json`` may be at most `MAX_JSON_BYTES`;
* JSON nested too deeply for the parser is a malformed file, not a ``RecursionError``;
* every field of ``checkpoint.json`` has the type and range the writer gives it and the
  fields agree with each other: the typed description, `contdepth.train.checkpoint_description`;
* the tensors agree with it (every optimizer tensor is described, every described one is
  there), and numbers that size work are bounded by what the tensor file holds: a size-like
  model option is at most the number of stored values, step counts at most `MAX_N_STEPS`;
* the model is built on the ``meta`` device first (no memory) and its ``state_dict``
  compared with the stored tensors, key by key, shape and dtype; only then for real;
* restored optimizer state fits its parameters (`contdepth.train.checkpoint_optimizer`).

Every failure is a [`CheckpointError`][contdepth.train.CheckpointError] whose message starts with the
file's path and names the field (``history[0].epoch: ...``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, NoReturn

import torch

from ..common.files import read_regular_bytes
from ..nn import MAX_N_BASIS, MAX_N_STEPS
from .typed_json import is_int, show


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed or inconsistent; the message names the file.

    Defined here, below `contdepth.train.checkpoint` (which re-exports it), so that the
    checks import nothing from the module that uses them.
    """


# A description with a few thousand epochs of history is well under a megabyte.
MAX_JSON_BYTES = 64 * 2**20
# Option names bounded like a layout's n_steps / n_basis (the first is no tensor size at all;
# the second costs time cubic in its value to build, before any shape can be compared).
STEP_OPTIONS = frozenset({"n_steps"})
BASIS_OPTIONS = frozenset({"n_basis", "n_units"})


def fail(path: Path, where: str, problem: str) -> NoReturn:
    """Raise the one-line ``PATH: malformed checkpoint, WHERE: PROBLEM`` (a long key from the file cut short)."""
    if len(where) > 120:
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


# --- against the tensors -----------------------------------------------------------------------------
def check_tensor_names(optimizer_tensors: set[str], tensors: Mapping[str, torch.Tensor], path: Path,
                       tensor_path: Path) -> None:
    """Every tensor is the model's or described optimizer state (``optimizer_tensors``), and every described one is there."""
    expected = {f"optimizer.{name}" for name in optimizer_tensors}
    found = {k for k in tensors if k.startswith("optimizer.")}
    other = sorted(k for k in tensors if not k.startswith(("model.", "optimizer.")))
    if other:
        raise CheckpointError(f"{tensor_path}: holds tensor {show(other[0])}, which is neither model.* nor optimizer.*")
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
            if not is_int(v):
                continue
            if key in STEP_OPTIONS:
                if v > MAX_N_STEPS:
                    fail(path, f"model.options.{key}", f"must be at most {MAX_N_STEPS} steps, got {v}")
            elif key in BASIS_OPTIONS and v > MAX_N_BASIS:
                fail(path, f"model.options.{key}", f"must be at most {MAX_N_BASIS}, got {v}")
            elif v > max(total, 1):
                fail(path, f"model.options.{key}", f"{v} is more than the {total} values the tensor file holds, "
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

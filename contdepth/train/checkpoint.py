"""Checkpoints: ``safetensors`` for tensors, JSON for everything else; loading runs no code.

A run directory holds, after each epoch:

``checkpoint-NNNN.safetensors``
    the model's ``state_dict`` under ``model.<key>`` and every optimizer state tensor under
    ``optimizer.<parameter name>.<state key>`` (``NNNN`` is the epoch).
``checkpoint.json``
    how to rebuild and continue, described once by the typed records of
    `contdepth.train.checkpoint_description` (format 3): the model's name and options and its
    block layout (``contdepth.nn.layout``), the epoch, the metrics history, the optimizer's
    class, param-group hyperparameters (with parameter *names*) and non-tensor state, the
    learning-rate schedule (``lr_schedule``), an fp16 run's loss scale (``grad_scaler``), a graph
    run's model selection (``early_stopping``), the run's config, the library version, and the
    name and SHA-256 of the tensor file. Formats 1 and 2 are read and upgraded.

Every file is written atomically (a temporary file in the same folder, flushed and
fsynced, then ``os.replace``). The JSON file is written *after* its tensor file and is the
commit point: a crash at any moment leaves the previous checkpoint complete and loadable.
Older ``checkpoint-*.safetensors`` files of the same run are removed afterwards.

Loading reads JSON with `json` and tensors with `safetensors`, whose format is a
JSON header plus raw little-endian buffers: there is no pickle anywhere, so a checkpoint
from an untrusted source can at worst fail to load, never run code. Nor can it make loading
hang or allocate without bound: every field is checked against the tensors before anything
is built (`contdepth.train.checkpoint_description`, `contdepth.train.checkpoint_schema`), and each failure is one
[`CheckpointError`][contdepth.train.CheckpointError] naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..common.files import atomic_write_bytes, atomic_write_text, to_json_value
from ..models import available_models, create
from ..nn import apply_layout, check_layout, continuous_blocks, layout
from .checkpoint_description import (  # noqa: F401  (FORMAT_VERSION: re-exported)
    CHECKPOINT_JSON,
    FORMAT,
    FORMAT_VERSION,
    TENSOR_FILE,
    Description,
    EarlyStoppingState,
    LRScheduleState,
    ModelDescription,
    decode_description,
)
from .checkpoint_info import CheckpointInfo
from .checkpoint_model import (  # noqa: F401  (the model side, re-exported)
    STATE_RANGE_KEY,
    check_state_ranges,
    class_path,
    is_state_range_key,
    load_user_model,
    model_identity,
    upgrade_model,
    upgrade_model_state,
)
from .checkpoint_optimizer import describe_optimizer, described_tensors, restore_optimizer_state
from .checkpoint_schema import (
    MAX_JSON_BYTES,
    CheckpointError,
    check_model_options,
    check_state_matches,
    check_tensor_names,
    parse_json,
    read_regular_file,
)
from .config import CUSTOM_MODEL
from .typed_json import Invalid, Record, decode


def save_checkpoint(run_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                    epoch: int = 0, history: list[dict] | None = None, lr_schedule: Mapping | None = None,
                    grad_scaler: Mapping | None = None, early_stopping: Mapping | None = None,
                    config: dict | None = None, model_config: dict | None = None) -> Path:
    """Write the checkpoint of ``model`` into ``run_dir``.

    ``model_config`` (default: `model_identity`) is how the model is rebuilt: a model
    built by ``contdepth.models.create`` by its name and options; the user's own module is
    recorded by class as ``"custom"``, and loading it needs an instance
    (``load_checkpoint(run, model=MyNet())``). ``lr_schedule`` (`LRSchedule.state_dict`),
    ``grad_scaler`` (an fp16 run's ``GradScaler.state_dict``) and ``early_stopping`` (a graph
    run's `EarlyStopping.state_dict`) go in as they are. The whole description is checked as a
    reader checks it before anything is written (a metric no reader accepts stops the save).

    Returns the path of ``checkpoint.json``. ``optimizer``'s parameters must be ``model``'s;
    they are stored by parameter name, so the file does not depend on group order details.
    """
    from .. import __version__

    model_config = model_identity(model) if model_config is None else model_config
    run_dir = Path(run_dir)
    json_path = run_dir / CHECKPOINT_JSON
    states = {"lr_schedule": _state(LRScheduleState, lr_schedule, "lr_schedule", json_path),
              "grad_scaler": None if grad_scaler is None else to_json_value(dict(grad_scaler), "grad_scaler"),
              "early_stopping": _state(EarlyStoppingState, early_stopping, "early_stopping", json_path)}

    tensors = {f"model.{key}": value.detach().to("cpu").contiguous().clone() for key, value in model.state_dict().items()}
    optimizer_info = None if optimizer is None else describe_optimizer(model, optimizer, tensors)

    from safetensors.torch import save as save_tensors

    tensor_name = f"checkpoint-{int(epoch):04d}.safetensors"
    blob = canonical_safetensors(save_tensors(tensors, metadata={"format": FORMAT, "epoch": str(int(epoch))}))
    description = Description(
        format=FORMAT, format_version=FORMAT_VERSION, version=__version__, torch_version=torch.__version__,
        tensors=tensor_name, tensors_sha256=hashlib.sha256(blob).hexdigest(),
        model=ModelDescription(name=model_config["name"],
                               options=to_json_value(model_config.get("options", {}), "model.options"),
                               class_name=str(model_config["class"]) if "class" in model_config else None),
        layout=to_json_value(layout(model) if _has_blocks(model) else [], "layout"), epoch=int(epoch),
        history=to_json_value(history or [], "history"), optimizer=optimizer_info, **states,
        config=to_json_value(config, "config"),
    )
    info = description.to_json()
    _checked(lambda: decode(Description, info), json_path)  # what is written is what a reader accepts
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / tensor_name, blob)
    atomic_write_text(json_path, json.dumps(info, indent=1, allow_nan=True) + "\n")
    for other in run_dir.iterdir():  # earlier tensor files of this run, now superseded
        if TENSOR_FILE.fullmatch(other.name) and other.name != tensor_name:
            other.unlink(missing_ok=True)
    return json_path


def _state(cls: type, state: Mapping | None, key: str, path: Path) -> Any:
    """``state`` (a ``state_dict``) as the record ``cls``, checked as a reader checks it."""
    if state is None:
        return None
    return _checked(lambda: Record(cls).check(to_json_value(dict(state), key), key, {}), path)


def _checked(read: Callable[[], Any], path: Path) -> Any:
    try:
        return read()
    except Invalid as exc:  # a value no reader would accept: nothing is written
        raise CheckpointError(f"{path}: cannot save {exc}") from None


def canonical_safetensors(blob: bytes) -> bytes:
    """``blob`` (a safetensors file) with its JSON header's keys sorted: the same tensors, the same bytes.

    Why: ``tensors_sha256`` is the SHA-256 of the tensor file and ties the description
    (and an experiment's steps record) to the weights. safetensors writes its header from a
    hash map whose key order changes from process to process (the ``__metadata__`` keys), so
    identical weights got different hashes in different processes. The data section is
    already ordered by dtype and name; only the header is rewritten (sorted keys, compact,
    padded with spaces to 8 bytes as safetensors pads it), which leaves every ``data_offsets``
    valid. The file is then a function of the tensors (names, dtypes, shapes, bytes) and the
    epoch. Checkpoints written before keep the hash of their own bytes, so they verify as before.
    """
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + size:]


def _has_blocks(model: nn.Module) -> bool:
    return bool(continuous_blocks(model))


# --- load -----------------------------------------------------------------------------------------------
def _checkpoint_json(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if path.is_dir():
        path = path / CHECKPOINT_JSON
    if not path.exists():
        where = path.parent if path.name == CHECKPOINT_JSON else path
        raise CheckpointError(f"{where}: no checkpoint here (missing {CHECKPOINT_JSON})")
    return path  # read with read_regular_file: a FIFO or device here is refused, not waited on


def _read_description(run_dir: str | Path) -> tuple[Description, Path]:
    path = _checkpoint_json(run_dir)
    info = parse_json(read_regular_file(path, "a checkpoint description", MAX_JSON_BYTES), path)
    return decode_description(info, path), path


def read_description(run_dir: str | Path) -> dict:
    """``checkpoint.json`` of ``run_dir``, validated as [`read_checkpoint`][contdepth.train.read_checkpoint] does, without the tensors.

    For status checks over many runs (an experiment's): no tensor file is read or hashed.
    The tensors' SHA-256 (``tensors_sha256``) identifies the weights the description goes with.
    Returned as JSON in the current layout (a format 1 or 2 file upgraded; its
    ``format_version`` stays the file's).
    """
    return _read_description(run_dir)[0].to_json()


def read_checkpoint(run_dir: str | Path) -> tuple[CheckpointInfo, dict[str, torch.Tensor]]:
    """Parse ``checkpoint.json`` ([`read_description`][contdepth.train.read_description]) and load its tensor file, checked against its SHA-256.

    Returns the description and the model's ``state_dict`` tensors (``model.`` prefix
    removed). Raises [`CheckpointError`][contdepth.train.CheckpointError] naming the file for anything unexpected.
    """
    description, path = _read_description(run_dir)
    tensor_path = path.parent / description.tensors
    blob = read_regular_file(tensor_path, "the checkpoint's tensors")
    if hashlib.sha256(blob).hexdigest() != description.tensors_sha256.lower():
        raise CheckpointError(f"{tensor_path}: does not match {path.name} (SHA-256 differs): corrupt or replaced")
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    try:
        tensors = load_tensors(blob)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{tensor_path}: not a valid safetensors file ({exc})") from exc
    check_tensor_names(described_tensors(description.optimizer), tensors, path, tensor_path)
    model_tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer_tensors = {k[len("optimizer."):]: v for k, v in tensors.items() if k.startswith("optimizer.")}
    return CheckpointInfo(path, description, optimizer_tensors, tensor_path), model_tensors


def build_model(info: CheckpointInfo, state: dict[str, torch.Tensor], *, model: nn.Module | None = None) -> nn.Module:
    """The model of ``info`` holding ``state``, checked on the ``meta`` device before it is built.

    ``contdepth.models.create`` and ``contdepth.nn.apply_layout`` run first on the meta
    device (no memory, no initialisation), after the size-like options and the layout's
    basis sizes were bounded by the stored tensors; the skeleton's ``state_dict`` must then
    match ``state`` key by key in shape and dtype. Only then is the model built for real
    and loaded (strict). So options or a layout that do not describe the stored tensors
    (``alpha: 1000000`` next to a small file) fail before the allocation they would size.
    """

    if info.model_name == CUSTOM_MODEL:
        return load_user_model(info, state, model)
    if model is not None:
        raise ValueError(f"model: the run's model is {info.model_name!r}, which contdepth rebuilds by name; an instance "
                         "is only for a run of your own module ('custom')")
    check_model_options(info.model_options, state, info.path)
    skeleton = _rebuild(info, state, torch.device("meta"))
    state = upgrade_model_state(info, skeleton, state)
    check_state_ranges(info, state)
    check_state_matches(skeleton.state_dict(), state, info.path, info.tensor_path or info.path)
    model = _rebuild(info, state, None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{info.path}: the stored tensors do not fit the rebuilt model: {exc}") from exc
    upgrade_model(info, model)
    return model


def _rebuild(info: CheckpointInfo, state: dict[str, torch.Tensor], device: torch.device | None) -> nn.Module:
    """``create`` and ``apply_layout`` for ``info`` (on ``device``, e.g. ``meta``; else the default)."""
    from contextlib import nullcontext


    where = nullcontext() if device is None else device
    if info.model_name not in available_models():
        raise CheckpointError(
            f"{info.path}: the run's model {info.model_name!r} is not registered in this process; if it is your own "
            "model, import the module that registers it (command line: --import MODULE, or an installed entry "
            "point of the 'contdepth.models' group; Python: import it before loading)"
        )
    try:
        with where:
            model = create(info.model_name, **info.model_options)
    except Exception as exc:  # the builder ran on values read from a file: any failure means no such model
        raise CheckpointError(f"{info.path}: cannot rebuild model {info.model_name!r}: "
                              f"{exc or type(exc).__name__}") from exc
    try:
        if continuous_blocks(model) or info.layout:
            check_layout(model, info.layout, state)
            with where:
                apply_layout(model, info.layout, shapes_only=device is not None)  # a skeleton: shapes only
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{info.path}: the block layout does not fit the model: {exc}") from exc
    return model


def load_checkpoint(run_dir: str | Path, *, device: str | torch.device | None = None,
                    model: nn.Module | None = None) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model of a run directory (or a ``checkpoint.json`` path) in eval mode.

    Returns ``(model, info)``; ``info`` is a [`CheckpointInfo`][contdepth.train.CheckpointInfo] (epoch, history,
    config, optimizer state ...). Nothing is unpickled and no code from the files runs.
    A run of the user's own module (``"custom"``) needs ``model``: an instance the stored
    tensors are loaded into.
    """
    info, state = read_checkpoint(run_dir)
    model = build_model(info, state, model=model)
    if device is not None:
        model.to(device)
    model.eval()
    return model, info


def restore_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, info: CheckpointInfo) -> None:
    """Load the checkpoint's optimizer state into ``optimizer`` (built over ``model``).

    Param groups are matched by the parameter names stored in the checkpoint, which must
    be exactly the optimizer's (same grouping of the same parameters). The stored
    hyperparameters must equal the optimizer's (only ``lr`` is taken from the file: the
    schedule rewrites it anyway), and every state tensor must have its parameter's shape
    and dtype, so a tampered file cannot change a run's momentum or slip in a tensor that
    would broadcast (`contdepth.train.checkpoint_optimizer`).
    """
    restore_optimizer_state(optimizer, model, info.optimizer, info.optimizer_tensors, info.path)

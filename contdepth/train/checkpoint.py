"""Checkpoints: ``safetensors`` for tensors, JSON for everything else; loading runs no code.

A run directory holds, after each epoch:

``checkpoint-NNNN.safetensors``
    the model's ``state_dict`` under ``model.<key>`` and every optimizer state tensor under
    ``optimizer.<parameter name>.<state key>`` (``NNNN`` is the epoch).
``checkpoint.json``
    how to rebuild and continue: the model's name and options and its block layout
    (``contdepth.nn.layout``), the epoch, the metrics history, the optimizer's class,
    param-group hyperparameters (with parameter *names*) and non-tensor state, the
    learning-rate schedule, the run's config, the library version, and the name and
    SHA-256 of the tensor file.

Every file is written atomically (a temporary file in the same folder, flushed and
fsynced, then ``os.replace``). The JSON file is written *after* its tensor file and is the
commit point: a crash at any moment leaves the previous checkpoint complete and loadable.
Older ``checkpoint-*.safetensors`` files of the same run are removed afterwards.

Loading reads JSON with `json` and tensors with `safetensors`, whose format is a
JSON header plus raw little-endian buffers: there is no pickle anywhere, so a checkpoint
from an untrusted source can at worst fail to load, never run code. Nor can it make loading
hang or allocate without bound: every field is checked against the tensors before anything
is built (`contdepth.train.checkpoint_schema`), and each failure is one
[`CheckpointError`][contdepth.train.CheckpointError] naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..common.files import atomic_write_bytes, atomic_write_text, to_json_value
from ..models import available_models, create, created_name
from ..nn import apply_layout, check_layout, continuous_blocks, layout
from ..nn.state_range import StateRange, unknown_range
from .checkpoint_schema import (
    MAX_JSON_BYTES,
    CheckpointError,
    check_description,
    check_hyperparameters_agree,
    check_model_options,
    check_optimizer_state,
    check_state_matches,
    check_tensor_names,
    parse_json,
    read_regular_file,
)
from .config import CUSTOM_MODEL, ConfigError, TrainConfig
from .optim import group_names

CHECKPOINT_JSON = "checkpoint.json"
# Used with fullmatch (with match, "$" passes a name ending in a newline) and ASCII digits (\d takes any script's).
TENSOR_FILE = re.compile(r"checkpoint-([0-9]+)\.safetensors")
FORMAT = "contdepth-checkpoint"
FORMAT_VERSION = 2
"""2: every ContinuousBlock with normalisation state stores the depths it was sampled at
(``state_depth_range``). Format 1 is read: such a block is taken as sampled on the
manifestation it was saved with (the one it trained on); see `upgrade_model_state`."""
STATE_RANGE_KEY = "state_depth_range"


def model_identity(model: nn.Module) -> dict:
    """What a checkpoint records to rebuild ``model``: its registered name and options, or for the
    user's own module ``{"name": "custom", "class": "package.module.Class", "options": {}}``."""
    if created_name(model) is not None:
        return {"name": model.config["name"], "options": model.config.get("options", {})}  # type: ignore[union-attr]
    return {"name": CUSTOM_MODEL, "class": class_path(model), "options": {}}


def class_path(model: nn.Module) -> str:
    """``package.module.Class`` of ``model`` (what a "custom" run records)."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def save_checkpoint(run_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                    epoch: int = 0, history: list[dict] | None = None, scheduler: dict | None = None,
                    config: dict | None = None, model_config: dict | None = None) -> Path:
    """Write the checkpoint of ``model`` into ``run_dir``.

    ``model_config`` (default: `model_identity`) is how the model is rebuilt: a model
    built by ``contdepth.models.create`` by its name and options; the user's own module is
    recorded by class as ``"custom"``, and loading it needs an instance
    (``load_checkpoint(run, model=MyNet())``).

    Returns the path of ``checkpoint.json``. ``optimizer``'s parameters must be ``model``'s;
    they are stored by parameter name, so the file does not depend on group order details.
    """
    from .. import __version__

    model_config = model_identity(model) if model_config is None else model_config
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        tensors[f"model.{key}"] = value.detach().to("cpu").contiguous().clone()
    optimizer_info = None
    if optimizer is not None:
        names = group_names(model, optimizer)
        groups = []
        for group, group_param_names in zip(optimizer.param_groups, names):
            hyper = {k: to_json_value(v, f"optimizer.param_groups.{k}") for k, v in group.items() if k != "params"}
            groups.append({**hyper, "params": group_param_names})
        state: dict[str, dict] = {}
        for group, group_param_names in zip(optimizer.param_groups, names):
            for p, name in zip(group["params"], group_param_names):
                entry = optimizer.state.get(p)
                if not entry:
                    continue
                tensor_keys, values = [], {}
                for key, value in entry.items():
                    if isinstance(value, torch.Tensor):
                        tensors[f"optimizer.{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
                        tensor_keys.append(key)
                    else:
                        values[key] = to_json_value(value, f"optimizer.state.{name}.{key}")
                state[name] = {"tensors": tensor_keys, "values": values}
        optimizer_info = {"class": type(optimizer).__name__, "param_groups": groups, "state": state}

    from safetensors.torch import save as save_tensors

    tensor_name = f"checkpoint-{int(epoch):04d}.safetensors"
    blob = canonical_safetensors(save_tensors(tensors, metadata={"format": FORMAT, "epoch": str(int(epoch))}))
    atomic_write_bytes(run_dir / tensor_name, blob)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "torch_version": torch.__version__,
        "tensors": tensor_name,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        "model": {"name": model_config["name"], "options": to_json_value(model_config.get("options", {}), "model.options"),
                  **({"class": str(model_config["class"])} if "class" in model_config else {})},
        "layout": to_json_value(layout(model) if _has_blocks(model) else [], "layout"),
        "epoch": int(epoch),
        "history": to_json_value(history or [], "history"),
        "optimizer": optimizer_info,
        "scheduler": to_json_value(scheduler, "scheduler"),
        "config": to_json_value(config, "config"),
    }
    json_path = run_dir / CHECKPOINT_JSON
    atomic_write_text(json_path, json.dumps(info, indent=1, allow_nan=True) + "\n")
    for other in run_dir.iterdir():  # earlier tensor files of this run, now superseded
        if TENSOR_FILE.fullmatch(other.name) and other.name != tensor_name:
            other.unlink(missing_ok=True)
    return json_path


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
@dataclass
class CheckpointInfo:
    """Everything in ``checkpoint.json`` plus the optimizer's state tensors (by name)."""

    path: Path
    model_name: str
    model_options: dict
    layout: list
    epoch: int
    history: list
    optimizer: dict | None
    optimizer_tensors: dict
    scheduler: dict | None
    config: dict | None
    version: str
    tensor_path: Path | None = None  # the tensor file it was read with (for messages)
    model_class: str | None = None  # a "custom" model: the class it was saved from (for messages)
    format_version: int = FORMAT_VERSION

    def __repr__(self) -> str:
        """One line, every field summarised (the optimizer's state keys and sizes, never its tensors)."""
        from .checkpoint_summary import summarize

        return summarize(vars(self))

    def train_config(self):  # -> TrainConfig
        """The run's [`TrainConfig`][contdepth.train.TrainConfig] (``CheckpointError`` if absent/invalid)."""

        if not isinstance(self.config, dict):
            raise CheckpointError(f"{self.path}: holds no training config")
        try:
            return TrainConfig.from_dict(self.config, source=str(self.path))
        except ConfigError as exc:
            raise CheckpointError(f"{self.path}: its config is invalid here: {exc}") from exc


def _checkpoint_json(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if path.is_dir():
        path = path / CHECKPOINT_JSON
    if not path.exists():
        where = path.parent if path.name == CHECKPOINT_JSON else path
        raise CheckpointError(f"{where}: no checkpoint here (missing {CHECKPOINT_JSON})")
    return path  # read with read_regular_file: a FIFO or device here is refused, not waited on


def _require(info: dict, key: str, kind: type | tuple, path: Path) -> Any:
    if key not in info:
        raise CheckpointError(f"{path}: malformed checkpoint, missing key {key!r}")
    value = info[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CheckpointError(f"{path}: malformed checkpoint, {key!r} must be {names}, got {type(value).__name__}")
    return value


def read_description(run_dir: str | Path) -> dict:
    """``checkpoint.json`` of ``run_dir``, validated as [`read_checkpoint`][contdepth.train.read_checkpoint] does, without the tensors.

    For status checks over many runs (an experiment's): no tensor file is read or hashed.
    The tensors' SHA-256 (``tensors_sha256``) identifies the weights the description goes with.
    """
    path = _checkpoint_json(run_dir)
    info = parse_json(read_regular_file(path, "a checkpoint description", MAX_JSON_BYTES), path)
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a contdepth checkpoint (format is {info.get('format')!r}, expected {FORMAT!r})")
    version = _require(info, "format_version", int, path)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer contdepth (checkpoint format {version}, this reads {FORMAT_VERSION})")
    model = _require(info, "model", dict, path)
    _require(model, "name", str, path)
    _require(model, "options", dict, path)
    if model["name"] == CUSTOM_MODEL and not (isinstance(model.get("class", ""), str)
                                             and re.fullmatch(r"[\w.<>]{0,300}", model.get("class", ""))):
        raise CheckpointError(f"{path}: malformed checkpoint, model.class must be a dotted class name")
    for key, kind in (("layout", list), ("epoch", int), ("history", list)):
        _require(info, key, kind, path)
    tensor_name = _require(info, "tensors", str, path)
    if not TENSOR_FILE.fullmatch(tensor_name):
        raise CheckpointError(f"{path}: malformed checkpoint, tensor file name {tensor_name!r} is not checkpoint-NNNN.safetensors")
    _require(info, "tensors_sha256", str, path)  # required: without it nothing ties the tensors to this file
    check_description(info, path)
    return info


def read_checkpoint(run_dir: str | Path) -> tuple[CheckpointInfo, dict[str, torch.Tensor]]:
    """Parse ``checkpoint.json`` ([`read_description`][contdepth.train.read_description]) and load its tensor file, checked against its SHA-256.

    Returns the description and the model's ``state_dict`` tensors (``model.`` prefix
    removed). Raises [`CheckpointError`][contdepth.train.CheckpointError] naming the file for anything unexpected.
    """
    info = read_description(run_dir)
    path = _checkpoint_json(run_dir)
    tensor_name, digest = info["tensors"], info["tensors_sha256"]
    name, options = info["model"]["name"], info["model"]["options"]
    layout, epoch, history = info["layout"], info["epoch"], info["history"]

    tensor_path = path.parent / tensor_name
    blob = read_regular_file(tensor_path, "the checkpoint's tensors")
    if hashlib.sha256(blob).hexdigest() != digest.lower():
        raise CheckpointError(f"{tensor_path}: does not match {path.name} (SHA-256 differs): corrupt or replaced")
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    try:
        tensors = load_tensors(blob)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{tensor_path}: not a valid safetensors file ({exc})") from exc
    check_tensor_names(info, tensors, path, tensor_path)
    model_tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer_tensors = {k[len("optimizer."):]: v for k, v in tensors.items() if k.startswith("optimizer.")}
    checkpoint = CheckpointInfo(
        path=path, model_name=name, model_options=options, layout=layout, epoch=epoch, history=history,
        model_class=info["model"].get("class"),
        optimizer=info.get("optimizer"), optimizer_tensors=optimizer_tensors, scheduler=info.get("scheduler"),
        config=info.get("config"), version=str(info.get("version")), tensor_path=tensor_path,
        format_version=info["format_version"],
    )
    return checkpoint, model_tensors


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
        return _load_user_model(info, state, model)
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


def upgrade_model_state(info: CheckpointInfo, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with what a checkpoint of an older format lacks for ``model`` (format 1: the sampled depth ranges).

    Only the keys the format did not have are added (as "unknown", filled in by
    `upgrade_model`); anything else missing is still an error of the file.
    """
    if info.format_version >= 2:
        return state
    missing = [name for name in model.state_dict() if is_state_range_key(name) and name not in state]
    return {**state, **{name: unknown_range() for name in missing}}


def is_state_range_key(name: str) -> bool:
    """Whether a ``state_dict`` key is a ContinuousBlock's sampled-depth range."""
    return name.rsplit(".", 1)[-1] == STATE_RANGE_KEY


def check_state_ranges(info: CheckpointInfo, state: dict[str, torch.Tensor]) -> None:
    """Every stored sampled-depth range is a valid one, checked before any tensor is loaded into a model."""
    for name, value in state.items():
        if is_state_range_key(name):
            try:
                StateRange.decode(value)
            except ValueError as exc:
                raise CheckpointError(f"{info.tensor_path or info.path}: {name}: {exc}") from exc


def upgrade_model(info: CheckpointInfo, model: nn.Module) -> None:
    """After loading a format-1 checkpoint: each block's state counts as sampled on its saved manifestation.

    Format 1 did not record where the normalisation state was sampled. A checkpoint's
    blocks hold the grid they last trained on, and training samples every stage depth of
    it, so that grid's depths are the range (a block never trained keeps its constant
    initial state, for which the range changes nothing).
    """
    if info.format_version >= 2:
        return
    for block in continuous_blocks(model):
        if block.state_names and block.state_depths is None:
            block.assume_state_sampled_on()


def _load_user_model(info: CheckpointInfo, state: dict[str, torch.Tensor], model: nn.Module | None) -> nn.Module:
    """The stored tensors loaded into ``model``, an instance of the user's own module (checked first)."""
    recorded = repr(info.model_class) if info.model_class else "a module of your own"
    if model is None:
        raise CheckpointError(
            f"{info.path}: the run's model is your own module ({recorded}), which contdepth cannot rebuild by "
            "name; load it in Python with an instance: load_checkpoint(run, model=MyNet()), or register the model "
            "(contdepth.models.register_model) and train it by name"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    given = class_path(model)
    if info.model_class is not None and given != info.model_class:
        raise CheckpointError(f"{info.path}: the run's model is {info.model_class!r}, not the given {given!r}; pass an "
                              "instance of the class the run was trained with")
    try:  # a refined or compressed model: the instance takes the stored basis sizes and grids first
        if continuous_blocks(model) or info.layout:
            check_layout(model, info.layout, state)
            apply_layout(model, info.layout)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{info.path}: the block layout does not fit the given {type(model).__name__}: {exc}") \
            from exc
    state = upgrade_model_state(info, model, state)
    check_state_ranges(info, state)
    try:
        check_state_matches(model.state_dict(), state, info.path, info.tensor_path or info.path)
    except CheckpointError as exc:
        raise CheckpointError(f"{info.path}: the stored tensors do not fit the given {type(model).__name__}: {exc}") \
            from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{info.path}: the stored tensors do not fit {type(model).__name__}: {exc}") from exc
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
    would broadcast.
    """

    saved = info.optimizer
    if saved is None:
        raise CheckpointError(f"{info.path}: holds no optimizer state")
    class_name = type(optimizer).__name__
    if saved.get("class") != class_name:
        raise CheckpointError(f"{info.path}: optimizer is {saved.get('class')}, but this run uses {class_name}")
    current = group_names(model, optimizer)
    stored = [g.get("params") if isinstance(g, dict) else None for g in saved.get("param_groups", [])]
    if stored != current:
        raise CheckpointError(f"{info.path}: the optimizer's parameter groups do not match the model's")
    index, group_of, params = {}, {}, {}
    for names, group in zip(current, optimizer.param_groups):
        for name, p in zip(names, group["params"]):
            index[name], group_of[name], params[name] = len(index), group, p
    # The optimizer keeps its own hyperparameters (the stored ones must agree) and takes
    # the stored learning rate, so a resumed step is the uninterrupted one.
    groups = []
    for i, (group, mine) in enumerate(zip(saved["param_groups"], optimizer.param_groups)):
        check_hyperparameters_agree(group, mine, class_name, info.path, f"optimizer.param_groups[{i}]")
        hyper = {k: v for k, v in mine.items() if k != "params"}
        groups.append({**hyper, "lr": group.get("lr", mine["lr"]), "params": [index[n] for n in group["params"]]})
    state = {}
    for name, entry in saved["state"].items():
        if name not in index or not isinstance(entry, dict):
            raise CheckpointError(f"{info.path}: optimizer state for unknown parameter {name!r}")
        values = dict(entry.get("values", {}))
        for key in entry.get("tensors", []):
            tensor = info.optimizer_tensors.get(f"{name}.{key}")
            if tensor is None:
                raise CheckpointError(f"{info.path}: optimizer tensor {name}.{key} is missing from the tensor file")
            values[key] = tensor
        check_optimizer_state(name, values, params[name], class_name, group_of[name], info.path)
        state[index[name]] = values
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{info.path}: cannot restore the optimizer: {exc}") from exc

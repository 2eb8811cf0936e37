"""The model side of a checkpoint: what identifies a model, and the user's own module loaded.

A registered model is rebuilt by name (`contdepth.train.checkpoint.build_model`); the user's own
module (``"custom"``) is recorded by class and loaded into an instance the caller gives. A
format-1 checkpoint lacks each block's sampled depth range (``state_depth_range``): the keys are
added as "unknown" and filled in after loading (`upgrade_model_state`, `upgrade_model`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import created_name
from ..nn import apply_layout, check_layout, continuous_blocks
from ..nn.state_range import StateRange, unknown_range
from .checkpoint_info import CheckpointInfo
from .checkpoint_schema import CheckpointError, check_state_matches
from .config import CUSTOM_MODEL

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


def load_user_model(info: CheckpointInfo, state: dict[str, torch.Tensor], model: nn.Module | None) -> nn.Module:
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

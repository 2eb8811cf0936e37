"""A checkpoint's optimizer: its description written from a live optimizer, and restored into one.

The description (`OptimizerDescription`) holds the class, every param group's
hyperparameters with its parameters' *names*, and per parameter the names of its state
tensors (stored in the tensor file as ``optimizer.<parameter>.<key>``) and its plain
numbers. Names, not positions, so a file does not depend on group-order details.

Restoring trusts nothing in the file: the groups must name exactly the optimizer's
parameters, the stored hyperparameters must equal the optimizer's own (only ``lr`` is
taken: the schedule rewrites it anyway), and each state tensor must have its parameter's
shape and dtype, finite values, and be a key its class keeps, so a tampered file cannot
change a run's momentum or slip in a tensor that would broadcast.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..common.files import to_json_value
from .checkpoint_description import OptimizerDescription, ParamState
from .checkpoint_schema import CheckpointError, fail
from .optim import SECOND_MOMENT_KEYS, group_names
from .typed_json import is_number, show

# Optimizer state kept per parameter with the parameter's shape (torch's optimizers).
PARAMETER_SHAPED_STATE = frozenset({
    "momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "grad_avg", "sum", "acc_delta",
    "exp_inf", "prev", "step_size", "ax",
})


def describe_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer,
                       tensors: dict[str, torch.Tensor]) -> OptimizerDescription:
    """The description of ``optimizer`` (over ``model``); its state tensors are added to ``tensors``."""
    names = group_names(model, optimizer)
    groups, state = [], {}
    for group, group_param_names in zip(optimizer.param_groups, names):
        hyper = {k: to_json_value(v, f"optimizer.param_groups.{k}") for k, v in group.items() if k != "params"}
        groups.append({**hyper, "params": group_param_names})
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
            state[name] = ParamState(tensors=tensor_keys, values=values)
    return OptimizerDescription(class_name=type(optimizer).__name__, param_groups=groups, state=state)


def described_tensors(optimizer: OptimizerDescription | None) -> set[str]:
    """``<parameter>.<key>`` of every state tensor ``optimizer`` describes."""
    if optimizer is None:
        return set()
    return {f"{name}.{key}" for name, entry in optimizer.state.items() for key in entry.tensors}


def restore_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module, saved: OptimizerDescription | None,
                            tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``saved`` (with its state ``tensors``, by ``<parameter>.<key>``) into ``optimizer`` over ``model``."""
    if saved is None:
        raise CheckpointError(f"{path}: holds no optimizer state")
    class_name = type(optimizer).__name__
    if saved.class_name != class_name:
        raise CheckpointError(f"{path}: optimizer is {saved.class_name}, but this run uses {class_name}")
    current = group_names(model, optimizer)
    if [g["params"] for g in saved.param_groups] != current:
        raise CheckpointError(f"{path}: the optimizer's parameter groups do not match the model's")
    index, group_of, params = {}, {}, {}
    for names, group in zip(current, optimizer.param_groups):
        for name, p in zip(names, group["params"]):
            index[name], group_of[name], params[name] = len(index), group, p
    # The optimizer keeps its own hyperparameters (the stored ones must agree) and takes
    # the stored learning rate, so a resumed step is the uninterrupted one.
    groups = []
    for i, (group, mine) in enumerate(zip(saved.param_groups, optimizer.param_groups)):
        check_hyperparameters_agree(group, mine, class_name, path, f"optimizer.param_groups[{i}]")
        hyper = {k: v for k, v in mine.items() if k != "params"}
        groups.append({**hyper, "lr": group.get("lr", mine["lr"]), "params": [index[n] for n in group["params"]]})
    state = {}
    for name, entry in saved.state.items():
        values = dict(entry.values)
        for key in entry.tensors:
            tensor = tensors.get(f"{name}.{key}")
            if tensor is None:
                raise CheckpointError(f"{path}: optimizer tensor {name}.{key} is missing from the tensor file")
            values[key] = tensor
        check_optimizer_state(name, values, params[name], class_name, group_of[name], path)
        state[index[name]] = values
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot restore the optimizer: {exc}") from exc


def check_optimizer_state(name: str, values: dict, param: nn.Parameter, class_name: str, group: dict,
                          path: Path) -> None:
    """One parameter's restored optimizer state: the keys its class needs, shapes, dtypes, finite values."""
    where = f"optimizer.state[{show(name)}]"
    needed, allowed = _state_keys(class_name, group)
    keys = set(values)
    if needed - keys:
        fail(path, where, f"lacks {sorted(needed - keys)[0]!r}, which {class_name} keeps for every parameter")
    if allowed is not None and keys - allowed:
        fail(path, where, f"holds {sorted(keys - allowed)[0]!r}, which is not state of {class_name}")
    for key, value in values.items():
        if not isinstance(value, torch.Tensor):
            continue
        at = f"{where}.{key}"
        if key == "step":
            if value.dim() != 0 or not value.is_floating_point():
                fail(path, at, f"must be a floating-point scalar, got shape {tuple(value.shape)} {value.dtype}")
            step = float(value)
            if not (math.isfinite(step) and step >= 0 and step == int(step)):
                fail(path, at, f"must be a whole number of steps >= 0, got {step}")
            continue
        if key in PARAMETER_SHAPED_STATE or value.dim() > 0:
            if value.shape != param.shape:
                fail(path, at, f"has shape {tuple(value.shape)}, the parameter has {tuple(param.shape)}")
            if value.dtype != param.dtype:
                fail(path, at, f"is {value.dtype}, the parameter is {param.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            fail(path, at, "holds non-finite values (NaN or infinity)")
        if key in SECOND_MOMENT_KEYS and bool((value < 0).any()):
            fail(path, at, "holds negative values (it is an average of squares)")


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
            fail(path, f"{where}.{key}", f"is not a hyperparameter of {class_name} in torch {torch.__version__}")
        mine = current[key]
        if not _same(value, mine):
            raise CheckpointError(f"{path}: {where}.{key} is {show(value)}, but the optimizer being restored has "
                                  f"{show(mine)}; a resumed run keeps its hyperparameters")


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
    return is_number(stored) and is_number(mine) and stored == mine

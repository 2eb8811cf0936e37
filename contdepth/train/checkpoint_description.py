"""``checkpoint.json`` described once: the typed records its writer builds and its reader checks.

A run folder can come from anyone, and the numbers in its description size work (a basis size
becomes matrices, an epoch a loop, a model option an allocation), so every field has the type
and range the writer gives it, the fields agree with each other (the history ends at
``epoch``), and a key no field names is refused. Each failure is one line naming the file
and the key: ``checkpoint.json: malformed checkpoint, lr_schedule.base_lrs[0]: must be a
finite number >= 0.0, got -1``. The checks against the tensors are in
`contdepth.train.checkpoint_schema`.

Format 3 (this one) keeps the learning-rate schedule (``lr_schedule``), the fp16 loss scale
(``grad_scaler``) and a graph run's model selection (``early_stopping``) as three keys, each
left out when the run has none. Formats 1 and 2 held all three under one ``scheduler`` key;
`upgrade` moves them on read, and an error in such a file names its own keys
(``scheduler.early_stopping.best_epoch``). Format 1 also lacks each block's sampled depth
range, which `contdepth.train.checkpoint_model.upgrade_model` supplies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..nn import check_layout_entries
from .checkpoint_schema import CheckpointError
from .metrics import HISTORY_CHECKS, MAX_FLOPS, MAX_PARAMS, MAX_SECONDS, required_metrics
from .typed_json import (All, Bool, Call, Flat, Int, Invalid, ListOf, MapOf, Names, Nullable, Number, Record, Row,
                         Spec, Text, decode, encode, is_number, show, spec)

CHECKPOINT_JSON = "checkpoint.json"
FORMAT = "contdepth-checkpoint"
FORMAT_VERSION = 3
"""3: ``lr_schedule``, ``grad_scaler`` and ``early_stopping`` are keys of their own (1 and 2 held
them under ``scheduler``). 2: every ContinuousBlock with normalisation state stores the depths
it was sampled at (``state_depth_range``); a format-1 block is taken as sampled on the
manifestation it was saved with (`contdepth.train.checkpoint_model.upgrade_model_state`)."""
#: Where format 1 and 2 kept what format 3 keeps at the top (most specific first, for messages).
FORMAT_2_KEYS = (("early_stopping", "scheduler.early_stopping"), ("grad_scaler", "scheduler.grad_scaler"),
                 ("lr_schedule", "scheduler"))
# Used with fullmatch (with match, "$" passes a name ending in a newline) and ASCII digits (\d takes any script's).
TENSOR_FILE = re.compile(r"checkpoint-([0-9]+)\.safetensors")
SHA256_PATTERN = r"[0-9a-fA-F]{64}"

@dataclass(frozen=True)
class Is(Spec):
    """A structural key's type, in the reader's first wording: ``'epoch' must be int, got bool``."""

    kind: type

    def check(self, value: Any, where: str, context: dict) -> Any:
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            key = re.split(r"[.\[]", where)[-1] if where else "value"
            raise Invalid("", f"{key!r} must be {self.kind.__name__}, got {type(value).__name__}")
        return value


# Metrics rows: every column is a registered metric (`contdepth.train.metrics`); other keys may
# hold flat values (a callback's own). What the loops read back from a stored row (RunResult,
# resume's elapsed time, the graph loop's best-validation choice) is required.
REQUIRED_ROW_KEYS = required_metrics(True)
REQUIRED_GRAPH_ROW_KEYS = required_metrics("graph")


def _increasing(rows: list, where: str, context: dict) -> list:
    previous = 0
    for i, row in enumerate(rows):
        if row["epoch"] <= previous:
            raise Invalid(f"{where}[{i}].epoch", f"epochs must increase from row to row, got {row['epoch']} after "
                                                 f"{previous}")
        previous = row["epoch"]
    return rows


HISTORY = All((Is(list), ListOf(Row(HISTORY_CHECKS, REQUIRED_ROW_KEYS, words="an object (one epoch's metrics)")),
               Call(_increasing)))

#: A param group's hyperparameters: the ranges torch's own optimizers accept, narrowed to what a
#: training run means. Others may hold flat values (a restore then compares them with the optimizer's).
GROUP_KEYS = {
    "params": Names("a list of parameter names"),
    "lr": Number(0.0), "initial_lr": Number(0.0), "momentum": Number(0.0, 1.0, high_open=True),
    "dampening": Number(0.0, 1.0), "weight_decay": Number(0.0), "eps": Number(0.0, low_open=True),
    "alpha": Number(0.0, 1.0),
    "betas": ListOf(Number(0.0, 1.0, high_open=True), words="two numbers in [0, 1)", length=2),
    **{flag: Bool() for flag in ("nesterov", "maximize", "amsgrad", "centered", "capturable", "differentiable",
                                 "decoupled_weight_decay")},
    **{flag: Nullable(Bool()) for flag in ("foreach", "fused")},
}
GROUP_EXTRA = Flat("a number, bool, null or a list of those")


def _tensor_file(name: str, where: str, context: dict) -> str:
    if TENSOR_FILE.fullmatch(name) is None:
        raise Invalid("", f"tensor file name {show(name)} is not checkpoint-NNNN.safetensors")
    return name


def _layout(entries: list, where: str, context: dict) -> list:
    try:
        return check_layout_entries(entries)
    except ValueError as exc:  # its message names the entry: layout[0].n_basis: ...
        raise Invalid("", str(exc)) from exc


def _grad_scaler(state: Any, where: str, context: dict) -> dict:
    if not (isinstance(state, dict) and all(is_number(v) and math.isfinite(v) for v in state.values())):
        raise Invalid(where, f"must map names to finite numbers, got {show(state)}")
    return state


# --- the records -----------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ModelDescription:
    """How to rebuild the model: a registered name and options, or a "custom" module's class."""

    name: str = spec(Is(str))
    options: dict = spec(All((Is(dict), MapOf(Flat("a finite number, string, bool, null or a list of those")))))
    class_name: str | None = spec(Text("a dotted class name", r"[\w.<>]{0,300}"), key="class", default=None,
                                  omit_default=True)


@dataclass(frozen=True, kw_only=True)
class ParamState:
    """One parameter's optimizer state: the names of its tensors (in the tensor file) and its numbers."""

    tensors: list = spec(Names("a list of distinct state names", distinct=True))
    values: dict = spec(MapOf(Flat("a finite number, bool or null", lists=False, strings=False)))

    def agree(self, where: str, context: dict) -> None:
        for key in self.values:
            if key in self.tensors:
                raise Invalid(f"{where}.values.{key}", "is also listed as a tensor")


@dataclass(frozen=True, kw_only=True)
class OptimizerDescription:
    """The optimizer's class, its param groups (hyperparameters and parameter *names*) and state."""

    class_name: str = spec(Text(), key="class", absent=None)
    param_groups: list = spec(ListOf(Row(GROUP_KEYS, ("params",), GROUP_EXTRA), nonempty=True), absent=None)
    state: dict = spec(MapOf(Record(ParamState, "an object with keys 'tensors' and 'values'", exact=True),
                             words="a dict", quoted=True), absent=None)

    def agree(self, where: str, context: dict) -> None:
        seen: set[str] = set()
        for i, group in enumerate(self.param_groups):
            for name in group["params"]:
                if name in seen:
                    raise Invalid(f"{where}.param_groups[{i}].params", f"names parameter {show(name)} twice")
                seen.add(name)
        for name in self.state:
            if name not in seen:
                raise Invalid(f"{where}.state[{show(name)}]", "is state for a parameter that no param group holds")


@dataclass(frozen=True, kw_only=True)
class LRScheduleState:
    """`contdepth.train.LRSchedule.state_dict`: the schedule of the run and the step it was saved at."""

    kind: str = spec(Text("a name"))
    base_lrs: list = spec(ListOf(Number(0.0)))
    steps_per_epoch: int = spec(Int(1))
    epochs: int = spec(Int(0))
    milestones: list = spec(ListOf(Int(1)))
    gamma: float = spec(Number(0.0))
    warmup_steps: int = spec(Int(0))
    min_lr: float = spec(Number(0.0))
    global_step: int = spec(Int(0))
    refine_lr_scale: float = spec(Number(0.0), default=1.0, omit_default=True)  # written only when not 1


@dataclass(frozen=True, kw_only=True)
class EarlyStoppingState:
    """A graph run's model selection (`contdepth.train.EarlyStopping`); the epochs are at most the checkpoint's."""

    patience: int | None = spec(Nullable(Int(1)))
    best_epoch: int = spec(Int(0, "epoch"))
    best_val_accuracy: float = spec(Number(finite=False))  # -inf/inf are the values before the first epoch
    best_val_loss: float = spec(Number(finite=False))
    bad_epochs: int = spec(Int(0, "epoch"))
    stopped: bool = spec(Bool())


@dataclass(frozen=True, kw_only=True)
class Description:
    """Everything ``checkpoint.json`` holds; the field order is the file's.

    ``format_version`` is the format the file was written in; the description read from an
    older one has the current layout (`upgrade`).
    """

    CONTEXT: ClassVar[tuple[str, ...]] = ("epoch",)

    format: str = spec(Is(str))
    format_version: int = spec(All((Is(int), Int(1))))
    version: str | None = spec(Text(), default=None)
    torch_version: str | None = spec(Text(), default=None)
    tensors: str = spec(All((Is(str), Call(_tensor_file))))
    tensors_sha256: str = spec(All((Is(str), Text("64 hexadecimal digits (the tensor file's SHA-256)",
                                                   SHA256_PATTERN))))
    model: ModelDescription = spec(All((Is(dict), Record(ModelDescription))))
    layout: list = spec(All((Is(list), Call(_layout))))
    epoch: int = spec(All((Is(int), Int(0))))
    history: list = spec(HISTORY)
    optimizer: OptimizerDescription | None = spec(Nullable(Record(OptimizerDescription, "an object or null")),
                                                  default=None)
    lr_schedule: LRScheduleState | None = spec(Nullable(Record(LRScheduleState, "an object or null")),
                                               default=None, omit_default=True)
    grad_scaler: dict | None = spec(Nullable(Call(_grad_scaler)), default=None, omit_default=True)
    early_stopping: EarlyStoppingState | None = spec(Nullable(Record(EarlyStoppingState)), default=None,
                                                     omit_default=True)
    config: dict | None = spec(Nullable(Row({}, extra=None, words="an object (the run's TrainConfig) or null")),
                               default=None)

    def agree(self, where: str, context: dict) -> None:
        """A row never describes an epoch after the checkpoint's; a graph run's rows hold its validation metrics."""
        if self.history and self.history[-1]["epoch"] != self.epoch:
            raise Invalid("epoch", f"is {self.epoch}, but the history's last row is epoch {self.history[-1]['epoch']}")
        if self.early_stopping is not None:
            for i, row in enumerate(self.history):
                for key in REQUIRED_GRAPH_ROW_KEYS:
                    if key not in row:
                        raise Invalid(f"history[{i}]", f"missing key {show(key)}")

    def to_json(self) -> dict:
        """The JSON object ``checkpoint.json`` holds (format 3 layout)."""
        return encode(self)


# --- reading -----------------------------------------------------------------------------------------------
def upgrade(info: dict) -> dict:
    """A format 1 or 2 description in the format 3 layout: ``scheduler`` split into its three parts."""
    info = dict(info)
    for key, _ in FORMAT_2_KEYS:
        if key in info:
            raise Invalid("", f"unknown key {show(key)} (a format {info['format_version']} checkpoint keeps it under "
                              "'scheduler')")
    scheduler = info.pop("scheduler", None)
    if scheduler is not None and not isinstance(scheduler, dict):
        raise Invalid("lr_schedule", f"must be an object or null, got {type(scheduler).__name__}")
    rest = dict(scheduler or {})
    for key in ("early_stopping", "grad_scaler"):
        if key in rest:
            info[key] = rest.pop(key)
    if rest:
        info["lr_schedule"] = rest
    return info


def _format_2_name(where: str) -> str:
    """``where`` in a format 1/2 file's own keys (``early_stopping.x`` -> ``scheduler.early_stopping.x``)."""
    for new, old in FORMAT_2_KEYS:
        if where == new or where.startswith((new + ".", new + "[")):
            return old + where[len(new):]
    return where


def decode_description(info: dict, path: Path) -> Description:
    """The checked `Description` of a parsed ``checkpoint.json`` (any format this version reads).

    Raises `CheckpointError` naming ``path`` and the key: not a contdepth checkpoint, written
    by a newer contdepth, or any field of the wrong type, range or agreement.
    """
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a contdepth checkpoint (format is {show(info.get('format'))}, "
                              f"expected {FORMAT!r})")
    old = False
    try:
        if "format_version" not in info:
            raise Invalid("", "missing key 'format_version'")
        version = Is(int).check(info["format_version"], "format_version", {})
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{path}: written by a newer contdepth (checkpoint format {version}, this reads "
                                  f"{FORMAT_VERSION})")
        old = version < 3
        return decode(Description, upgrade(info) if old and version >= 1 else info)
    except Invalid as exc:
        where = _format_2_name(exc.where) if old else exc.where
        if len(where) > 120:  # a key from the file may be any length
            where = where[:117] + "..."
        raise CheckpointError(f"{path}: malformed checkpoint, {where + ': ' if where else ''}{exc.problem}") from None

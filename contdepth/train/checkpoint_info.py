"""`CheckpointInfo`: a checkpoint as read, its typed description seen as attributes.

Why its own module: the description (`contdepth.train.checkpoint_description`) is what the file
holds; this adds where it was read from and the optimizer's state tensors, and reads the
description's fields as the attributes callers have always used (``info.epoch``, ``info.history``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint_description import Description
from .checkpoint_schema import CheckpointError
from .config import ConfigError, TrainConfig
from .typed_json import encode


def _described(*names: str, doc: str) -> property:
    """A read-only view of ``description.<names...>``."""
    def get(self: "CheckpointInfo") -> Any:
        value: Any = self.description
        for name in names:
            value = getattr(value, name)
        return value
    return property(get, doc=doc)


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint as read: its typed ``description``, where it came from, and the optimizer's state tensors.

    The description's fields read as attributes (``info.epoch``, ``info.history``,
    ``info.lr_schedule`` ...); ``format_version`` is the format the file was written in.
    """

    path: Path
    description: Description
    optimizer_tensors: dict = field(default_factory=dict)  # "<parameter>.<state key>" -> tensor
    tensor_path: Path | None = None  # the tensor file it was read with (for messages)

    model_name = _described("model", "name", doc="The registered model's name (``custom``: the user's own module).")
    model_options = _described("model", "options", doc="The options the model is rebuilt with.")
    model_class = _described("model", "class_name", doc="A ``custom`` model's class (``package.module.Class``).")
    layout = _described("layout", doc="Each ContinuousBlock's basis and manifestation (`contdepth.nn.layout`).")
    epoch = _described("epoch", doc="The number of completed epochs.")
    history = _described("history", doc="One metrics row per epoch.")
    optimizer = _described("optimizer", doc="The optimizer's `OptimizerDescription`, or ``None``.")
    lr_schedule = _described("lr_schedule", doc="The learning-rate schedule's `LRScheduleState`, or ``None``.")
    grad_scaler = _described("grad_scaler", doc="An fp16 run's ``GradScaler`` state, or ``None``.")
    early_stopping = _described("early_stopping", doc="A graph run's `EarlyStoppingState`, or ``None``.")
    config = _described("config", doc="The run's config as stored (`train_config` checks it).")
    format_version = _described("format_version", doc="The format the file was written in.")

    @property
    def version(self) -> str:
        """The contdepth version that wrote the file."""
        return str(self.description.version)

    @property
    def scheduler(self) -> dict | None:
        """The format-2 view: the LR schedule's state with ``grad_scaler`` and ``early_stopping`` in it.

        For callers written against format 2; `lr_schedule`, `grad_scaler` and
        `early_stopping` are the fields."""
        d = self.description
        view = {**(encode(d.lr_schedule) if d.lr_schedule is not None else {}),
                **({"grad_scaler": d.grad_scaler} if d.grad_scaler is not None else {}),
                **({"early_stopping": encode(d.early_stopping)} if d.early_stopping is not None else {})}
        return view or None

    def __repr__(self) -> str:
        """One line, every field summarised (the optimizer's state keys and sizes, never its tensors)."""
        from .checkpoint_summary import summarize

        return summarize(self)

    def train_config(self):  # -> TrainConfig
        """The run's [`TrainConfig`][contdepth.train.TrainConfig] (``CheckpointError`` if absent/invalid)."""

        if not isinstance(self.config, dict):
            raise CheckpointError(f"{self.path}: holds no training config")
        try:
            return TrainConfig.from_dict(self.config, source=str(self.path))
        except ConfigError as exc:
            raise CheckpointError(f"{self.path}: its config is invalid here: {exc}") from exc

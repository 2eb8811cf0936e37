"""Training: ``train(TrainConfig(...))``, refinement that carries the optimizer, checkpoints.

    from contdepth.train import TrainConfig, train, load_checkpoint, evaluate
    result = train(TrainConfig(model="continuousnet", model_options={"alpha": 8, "n_basis": 1},
                               data="digits", epochs=10, refine_at=(4, 7), out="runs/digits"))
    model, info = load_checkpoint("runs/digits")

Epochs are 1-based everywhere; ``refine_at=[e]`` refines at the start of epoch ``e``.
The command line (``contdepth train|eval|demo``) is `contdepth.cli`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# Every public name and the module defining it, imported on first use (PEP 562): the command
# line reads `TrainConfig` (``contdepth.train.config``, no torch) to build ``contdepth train
# --help`` without importing the trainer, checkpoints and torch behind them.
_NAMES: dict[str, str] = {
    **dict.fromkeys(("atomic_write_bytes", "atomic_write_text"), "..common.files"),  # re-exported: public since 0.x
    **dict.fromkeys(("CheckpointError", "CheckpointInfo", "load_checkpoint", "read_checkpoint", "read_description",
                     "restore_optimizer", "save_checkpoint"), ".checkpoint"),
    **dict.fromkeys(("OPTIMIZERS", "RESUMABLE_CHANGES", "SCHEDULES", "ConfigError", "TrainConfig"), ".config"),
    **dict.fromkeys(("FlopCounter", "Probe", "count_step_flops", "per_example_flops"), ".cost"),
    **dict.fromkeys(("AdaptiveResult", "evaluate", "evaluate_adaptive", "format_adaptive_table",
                     "format_manifestation_table", "manifestation_table"), ".evaluate"),
    **dict.fromkeys(("GROWTH_METHODS", "Growth", "grow"), ".growth"),
    "ImageClassification": ".images",
    **dict.fromkeys(("Metric", "available_metrics", "register_metric"), ".metrics"),
    **dict.fromkeys(("EarlyStopping", "NodeClassification", "NodeRunResult", "node_metrics"), ".node"),
    **dict.fromkeys(("LRSchedule", "build_optimizer", "map_optimizer_state", "named_parameter_groups",
                     "refine_with_optimizer"), ".optim"),
    "Task": ".task",
    **dict.fromkeys(("RunResult", "Trainer", "model_options_for", "preflight", "task_for", "train"), ".trainer"),
}

__all__ = [
    "AdaptiveResult", "EarlyStopping", "NodeRunResult", "node_metrics", "evaluate_adaptive", "format_adaptive_table", "OPTIMIZERS", "RESUMABLE_CHANGES", "SCHEDULES", "CheckpointError", "CheckpointInfo", "ConfigError",
    "LRSchedule", "RunResult", "TrainConfig", "Trainer", "atomic_write_bytes", "atomic_write_text",
    "build_optimizer", "evaluate", "format_manifestation_table", "load_checkpoint", "manifestation_table",
    "map_optimizer_state", "model_options_for", "named_parameter_groups", "preflight", "read_checkpoint", "read_description",
    "refine_with_optimizer", "restore_optimizer", "save_checkpoint", "train",
    "ImageClassification", "NodeClassification", "Task", "task_for",
    "FlopCounter", "Probe", "count_step_flops", "per_example_flops", "Metric", "available_metrics", "register_metric",
    "GROWTH_METHODS", "Growth", "grow",
]


def __getattr__(name: str) -> Any:
    """Import the module defining public ``name`` when it is first used."""
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This package, keeping a public name when a submodule of that name is imported.

    ``evaluate`` is both a function and the submodule defining it. Importing the submodule
    binds it on the package, which an eager ``from .evaluate import evaluate`` used to
    undo at once; imported lazily, the function must not be shadowed by whoever imports
    ``contdepth.train.evaluate`` first (the module stays reachable through ``sys.modules``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _NAMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # what type checkers and editors see: the same names, imported eagerly
    from ..common.files import atomic_write_bytes, atomic_write_text
    from .checkpoint import (CheckpointError, CheckpointInfo, load_checkpoint, read_checkpoint, read_description,
                             restore_optimizer, save_checkpoint)
    from .config import OPTIMIZERS, RESUMABLE_CHANGES, SCHEDULES, ConfigError, TrainConfig
    from .cost import FlopCounter, Probe, count_step_flops, per_example_flops
    from .evaluate import (AdaptiveResult, evaluate, evaluate_adaptive, format_adaptive_table,
                           format_manifestation_table, manifestation_table)
    from .growth import GROWTH_METHODS, Growth, grow
    from .images import ImageClassification
    from .node import EarlyStopping, NodeClassification, NodeRunResult, node_metrics
    from .optim import LRSchedule, build_optimizer, map_optimizer_state, named_parameter_groups, refine_with_optimizer
    from .task import Task
    from .trainer import RunResult, Trainer, model_options_for, preflight, task_for, train

"""Training: ``train(TrainConfig(...))``, refinement that carries the optimizer, checkpoints.

    from contdepth.train import TrainConfig, train, load_checkpoint, evaluate
    result = train(TrainConfig(model="continuousnet", model_options={"alpha": 8, "n_basis": 1},
                               data="digits", epochs=10, refine_at=(4, 7), out="runs/digits"))
    model, info = load_checkpoint("runs/digits")

Epochs are 1-based everywhere; ``refine_at=[e]`` refines at the start of epoch ``e``.
The command line (``contdepth train|eval|demo``) is :mod:`contdepth.cli`.
"""

from ..common.files import (  # re-exported: public here since 0.x
    atomic_write_bytes,
    atomic_write_text,
)
from .checkpoint import (
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint,
    read_description,
    restore_optimizer,
    save_checkpoint,
)
from .config import OPTIMIZERS, RESUMABLE_CHANGES, SCHEDULES, ConfigError, TrainConfig
from .evaluate import (
    AdaptiveResult,
    evaluate,
    evaluate_adaptive,
    format_adaptive_table,
    format_manifestation_table,
    manifestation_table,
)
from .images import ImageClassification
from .node import EarlyStopping, NodeClassification, NodeRunResult, node_metrics
from .optim import (
    LRSchedule,
    build_optimizer,
    map_optimizer_state,
    named_parameter_groups,
    refine_with_optimizer,
)
from .task import Task
from .trainer import RunResult, Trainer, model_options_for, preflight, task_for, train

__all__ = [
    "AdaptiveResult", "EarlyStopping", "NodeRunResult", "node_metrics", "evaluate_adaptive", "format_adaptive_table", "OPTIMIZERS", "RESUMABLE_CHANGES", "SCHEDULES", "CheckpointError", "CheckpointInfo", "ConfigError",
    "LRSchedule", "RunResult", "TrainConfig", "Trainer", "atomic_write_bytes", "atomic_write_text",
    "build_optimizer", "evaluate", "format_manifestation_table", "load_checkpoint", "manifestation_table",
    "map_optimizer_state", "model_options_for", "named_parameter_groups", "preflight", "read_checkpoint", "read_description",
    "refine_with_optimizer", "restore_optimizer", "save_checkpoint", "train",
    "ImageClassification", "NodeClassification", "Task", "task_for",
]

"""What the training loop and its tasks share: the result and its summary, the model's
options from the data, the config a run stores, its start-up and resume lines.

The loop (`contdepth.train.trainer`) and the tasks (`contdepth.train.images`,
`contdepth.train.node`) import from here; the tasks never import the loop.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..common.files import atomic_write_text
from ..models import create, model_options
from ..nn import continuous_blocks
from .checkpoint import CheckpointInfo
from .config import ConfigError, TrainConfig
from .optim import LRSchedule
from .progress import format_seconds
from .rundir import CONFIG_FILE, write_metrics

Callback = Callable[[dict, nn.Module, torch.optim.Optimizer], None]


DATA_OPTIONS = ("in_channels", "num_classes", "image_size",  # filled in from the dataset
                "in_features", "num_nodes")


class TrainingDiverged(ConfigError, FloatingPointError):
    """The loss became NaN or infinite; the message says where and what is left on disk."""


@dataclass
class RunResult:
    """What a run produced (the model is the trained one, in train mode).

    ``total_time`` is the training time over every session of the run (epochs including
    their checkpoint writes); ``wall_time`` is this call's wall clock, start-up included.
    ``final_test_accuracy`` is the result; ``best_test_accuracy`` is the maximum over epochs,
    for information only: picking it would choose on the test set.
    """

    config: TrainConfig
    model: nn.Module
    history: list[dict]
    run_dir: Path | None
    num_params: int
    total_time: float
    wall_time: float = math.nan
    final_test_accuracy: float = field(init=False)
    best_test_accuracy: float = field(init=False)
    best_epoch: int = field(init=False)

    def __post_init__(self) -> None:
        if self.history:
            last = self.history[-1]
            best = max(self.history, key=lambda row: (row["test_accuracy"], -row["epoch"]))
            self.final_test_accuracy = last["test_accuracy"]
            self.best_test_accuracy, self.best_epoch = best["test_accuracy"], best["epoch"]
        else:
            self.final_test_accuracy = self.best_test_accuracy = math.nan
            self.best_epoch = 0

    def summary(self) -> str:
        """The table printed at the end of a run."""
        last = self.history[-1] if self.history else {}
        rows = [
            ("run", str(self.run_dir) if self.run_dir else "(not saved)"),
            ("model", f"{self.config.model} on {self.config.data}"),
            ("epochs", str(last.get("epoch", 0))),
            ("final test accuracy", f"{100 * self.final_test_accuracy:.2f}%  (loss {last.get('test_loss', math.nan):.4f})"),
            # The maximum over epochs is a choice made on the test set: shown after the final accuracy and
            # labelled so, never as the run's result (issue 27).
            ("test max over epochs", f"{100 * self.best_test_accuracy:.2f}%  (epoch {self.best_epoch}; "
                                     "for information, not for choosing)"),
            *time_rows(self),
            ("parameters", f"{self.num_params:,}"),
        ]
        return summary_table(rows, last)


def time_rows(result: RunResult) -> list[tuple[str, str]]:
    """``training time`` (all sessions, checkpoints included) and this call's ``wall time``."""
    long = f" ({format_seconds(result.total_time)})" if result.total_time >= 60 else ""
    rows = [("training time", f"{result.total_time:.1f} s{long}")]
    if math.isfinite(result.wall_time):
        rows.append(("wall time", f"{result.wall_time:.1f} s (this session, start-up included)"))
    return rows


def summary_table(rows: list[tuple[str, str]], row: dict) -> str:
    """The end-of-run table: ``rows`` plus the block layout of the metrics ``row``, aligned."""
    if row.get("n_basis"):
        rows = [*rows, ("n_basis / n_steps", f"{row['n_basis']} / {row['n_steps']}")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def model_options_for(config: TrainConfig, dataset=None) -> dict:
    """The model's options: ``config.model_options`` plus what the dataset determines.

    ``in_channels``, ``num_classes`` (and ``image_size`` for models that take it) come from
    ``dataset``; for a graph dataset (``is_graph``) ``in_features``, ``num_classes`` and
    ``num_nodes``. Without one, placeholders (1 channel or feature, 10 classes, 8 pixels,
    1 node) stand in, for a dry build. Given explicitly, they must agree with the dataset.
    """

    accepted = model_options(config.model)
    options = dict(config.model_options)
    if dataset is None:
        derived = {"in_channels": 1, "num_classes": 10, "image_size": 8, "in_features": 1, "num_nodes": 1}
    elif getattr(dataset, "is_graph", False):
        derived = {"in_features": dataset.num_features, "num_classes": dataset.num_classes,
                   "num_nodes": dataset.num_nodes}
    elif getattr(dataset, "is_text", False):
        derived = {}  # bytes: the vocabulary is fixed, the context is the model's own option
    else:
        h, w = dataset.image_size
        derived = {"in_channels": dataset.channels, "num_classes": dataset.num_classes,
                   "image_size": h if h == w else None}
    for key in DATA_OPTIONS:
        if key not in accepted or derived.get(key) is None:
            continue
        if key not in options:
            options[key] = derived[key]
        elif dataset is not None and options[key] != derived[key]:
            raise ConfigError(f"model_options.{key}: dataset {config.data!r} has {key}={derived[key]}, "
                              f"but {options[key]!r} was given")
    return options


def dry_model(config: TrainConfig) -> nn.Module:
    """``config``'s model built on the ``meta`` device with `model_options_for`'s placeholders.

    Why: sizes, refinements, blocks and schemes are known before any data or memory (the
    preflight, a spec's checks, the ideal cost ratio); the options' own errors (``ValueError``,
    ``TypeError``, ``RuntimeError``) reach the caller, which names them its own way.
    """
    with torch.device("meta"):
        return create(config.model, **model_options_for(config))


def resume_line(config: TrainConfig, info: CheckpointInfo, schedule: LRSchedule) -> str:
    """What a resumed run announces; an extension names the schedule change in numbers."""
    saved = info.train_config()
    text = f"resuming {config.out} after epoch {info.epoch} of {config.epochs}"
    if config.epochs == saved.epochs:
        return text
    step = info.epoch * schedule.steps_per_epoch
    old = dataclasses.replace(schedule, epochs=saved.epochs)
    before = old.lrs(max(step - 1, 0))[0]
    return (f"{text}: extended from {saved.epochs} to {config.epochs} epochs; the {config.schedule} schedule now spans "
            f"{config.epochs} epochs (lr at epoch {info.epoch + 1}: {schedule.lrs(step)[0]:.4g}, would have been "
            f"{old.lrs(step)[0]:.4g}; last step's lr {before:.4g})")


def stored_config(config: TrainConfig) -> dict:
    """The config a run stores (``config.yaml``, checkpoints): the run itself, not how it was started."""
    return config.replace(resume=False, overwrite=False, extend=False).to_dict()


def start_run_files(run_dir: Path, config: TrainConfig, history: list[dict]) -> None:
    """``config.yaml`` and a ``metrics.jsonl`` holding exactly the checkpoint's history."""
    atomic_write_text(run_dir / CONFIG_FILE, config.replace(resume=False, overwrite=False, extend=False).to_yaml())
    write_metrics(run_dir, history)


def block_summary(model: nn.Module) -> dict:
    """``n_steps`` and ``n_basis`` of every ContinuousBlock (a metrics row's layout columns).

    With reversible blocks also ``reconstruction_error``: the largest relative error with which
    a backward pass rebuilt a block's input since the last summary (one per epoch).
    """

    blocks = continuous_blocks(model)
    summary: dict = {"n_steps": [b.n_steps for b in blocks], "n_basis": [b.n_basis for b in blocks]}
    # gradient="reversible": how well the backward passes rebuilt the blocks' inputs this epoch
    errors = [e for e in (b.worst_reconstruction_error() for b in blocks) if e is not None]
    if errors:
        summary["reconstruction_error"] = max(errors)
    return summary


def to_channels_last(model: nn.Module) -> nn.Module:
    """Every 4-D parameter and buffer of ``model`` in the channels_last memory format, in place.

    ``nn.Module.to(memory_format=...)`` refuses a model with other 5-D tensors, such as a
    ContinuousBlock's coefficients ``(n_basis, out, in, kh, kw)``; their per-depth weights are
    views and keep their layout, while the stem, stitches and discrete units convert.
    """
    with torch.no_grad():
        for module in model.modules():
            for _, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
                if tensor.dim() == 4:
                    tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return model


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def epoch_line(row: dict, epochs: int, evaluation: str, duration: str) -> str:
    """One printed epoch: position, train loss/accuracy, ``evaluation``, lr, steps, ``duration``."""
    width = len(str(epochs))
    text = (f"epoch {row['epoch']:>{width}}/{epochs}  train loss {row['train_loss']:.4f} acc "
            f"{100 * row['train_accuracy']:6.2f}%  {evaluation}  lr {row['lr']:.4g}")
    if row.get("n_steps"):
        text += f"  steps {row['n_steps']}"
    if row.get("refined"):
        text += " (refined)"
    return text + f"  {duration}"

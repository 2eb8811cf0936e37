"""What a kind of training supplies to the one loop ([`Trainer`][contdepth.train.Trainer]).

The loop owns what every run needs alike: options and run folder checks, the lock, resume,
seeding, refinement, the optimizer and its schedule, distributed set-up, metrics lines,
callbacks and the result. A [`Task`][contdepth.train.Task] supplies what differs between kinds of data:

- its data on the device and the steps of an epoch ([`Task.setup`][contdepth.train.Task.setup]);
- one epoch of training ([`Task.train_epoch`][contdepth.train.Task.train_epoch]) and the evaluation after it
  ([`Task.evaluate`][contdepth.train.Task.evaluate]), and the shapes of their inputs, whose operations the loop
  counts ([`Task.flop_probes`][contdepth.train.Task.flop_probes]);
- model selection and the checkpoints that follow from it ([`Task.select`][contdepth.train.Task.select],
  [`Task.save`][contdepth.train.Task.save], [`Task.resume_from`][contdepth.train.Task.resume_from], [`Task.final_model`][contdepth.train.Task.final_model]).

Three tasks exist: image classification (`contdepth.train.images`: mini-batches, the
last epoch's model), node classification (`contdepth.train.node`: the whole graph
as one batch, the best-validation model with early stopping) and language modelling
(`contdepth.train.language`: next-byte prediction, an epoch of ``eval_every`` steps). A new kind of data is a new
subclass; the loop does not change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from torch import nn

from .checkpoint import CheckpointInfo, save_checkpoint
from .config import TrainConfig
from .cost import Probe
from .optim import LRSchedule
from .runs import RunResult, stored_config


class Loop(Protocol):
    """What a task may use of the loop running it ([`Trainer`][contdepth.train.Trainer] provides it)."""

    config: TrainConfig
    distributed: Any  # a DistributedContext under torchrun, else None
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    history: list[dict]
    model_config: dict  # what checkpoints record to rebuild the model (name and options, or "custom")
    grad_scaler: Any  # a torch.amp.GradScaler when training in fp16, else None

    @property
    def quiet(self) -> bool: ...

    def log(self, text: str) -> None: ...


class Task(ABC):
    """One kind of training, driven by a [`Trainer`][contdepth.train.Trainer].

    A task object lives for one run. ``loop`` is the trainer running it; ``self.config`` its
    config. Attributes the loop reads: `steps_per_epoch` (after [`setup`][contdepth.train.Task.setup]) and
    `sync_metrics` (fsync every ``metrics.jsonl`` line).
    """

    sync_metrics = True

    def __init__(self, loop: Loop, dataset: Any) -> None:
        self.loop, self.config, self.dataset = loop, loop.config, dataset
        self.steps_per_epoch = 1

    # --- before the model exists --------------------------------------------------------------
    def check(self) -> None:
        """Refuse options or data this task cannot train (before any work)."""

    def resume_from(self, info: CheckpointInfo, state: dict) -> tuple[CheckpointInfo, dict]:
        """The checkpoint holding the training state of a resumed run (default: the run's own)."""
        return info, state

    def restore(self, training: CheckpointInfo, info: CheckpointInfo, state: dict) -> None:
        """Restore the task's own state (model selection) from a resumed run's checkpoints."""

    @abstractmethod
    def setup(self, device: torch.device) -> None:
        """Put the data on ``device`` and set `steps_per_epoch`."""

    @abstractmethod
    def describe(self, model: nn.Module) -> str:
        """What the run trains, for its first line."""

    # --- the run folder -------------------------------------------------------------------------
    def prepare_folder(self, run_dir: Path) -> None:
        """Check or create what the task keeps in a fresh run folder, before anything is written."""

    def save(self, run_dir: Path, epoch: int, *, final: bool) -> None:
        """Write the checkpoints of ``epoch`` (0: the fresh run); default: the training state, every epoch."""
        loop = self.loop
        scaler = loop.grad_scaler.state_dict() if loop.grad_scaler is not None else None  # fp16: the loss scale
        save_checkpoint(run_dir, loop.model, loop.optimizer, epoch=epoch, history=loop.history,
                        lr_schedule=loop.schedule.state_dict(epoch * loop.schedule.steps_per_epoch),
                        grad_scaler=scaler or None, config=stored_config(self.config), model_config=loop.model_config)

    # --- an epoch -------------------------------------------------------------------------------
    def progress(self, start: int) -> AbstractContextManager:
        """A context around the whole epoch loop (a progress display over epochs, for instance)."""
        return nullcontext()

    @abstractmethod
    def train_epoch(self, net: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                    epoch: int) -> tuple[float, float, float]:
        """One epoch of training: ``(train loss, train accuracy, lr of its first step)``."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The metrics after an epoch (``val_loss``, ``val_accuracy``, ``test_loss``, ``test_accuracy`` ...)."""

    def flop_probes(self, *, train: bool) -> Sequence[Probe]:
        """The inputs of an epoch's training steps (``train``) or evaluation passes, each shape with
        how many steps take it, over all processes (`contdepth.train.cost`); empty: not counted."""
        return ()

    def throughput(self, train_time: float) -> dict[str, float]:
        """Columns computed from the epoch's training time (a text run's tokens per second); default none."""
        return {}

    def select(self, epoch: int, row: dict, model: nn.Module) -> dict:
        """Model selection after ``epoch``'s evaluation; returns columns to add to the metrics row."""
        return {}

    @property
    def stopped(self) -> bool:
        """Whether model selection ended the run early."""
        return False

    def report(self, row: dict) -> None:
        """Show a finished epoch (a line, or a progress update)."""

    # --- the end --------------------------------------------------------------------------------
    def final_model(self, model: nn.Module) -> nn.Module:
        """The model the run returns (default: the trained one)."""
        return model

    def result(self, **fields: Any) -> RunResult:
        """The run's result (a [`RunResult`][contdepth.train.RunResult] subclass where the task reports more)."""
        return RunResult(**fields)

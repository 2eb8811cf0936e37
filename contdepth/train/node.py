"""Full-batch node classification: the training loop for graph datasets (``is_graph``).

The task [`NodeClassification`][contdepth.train.NodeClassification] the one loop ([`Trainer`][contdepth.train.Trainer]) runs
when the dataset is a graph (Cora, karate club): the whole graph is one batch, so an *epoch is one optimizer step* on the
cross-entropy of the training nodes (``train_mask``), with the model in train mode
(dropout on). After the step the model is evaluated once in eval mode and the same logits
give the validation and test loss/accuracy.

Early stopping and model selection follow the GCN literature (Kipf & Welling 2017):
the *best-validation* epoch is the one with the highest validation accuracy, ties
broken by the lower validation loss (then the earlier epoch). Its weights are kept, and
the run stops after ``patience`` epochs without a new best (``patience=None``: run all
epochs, still keeping the best). The model the run returns, the run's final checkpoint and
its reported test accuracy are those of the best-validation epoch: reporting the test
accuracy of the *last* epoch, or selecting on test accuracy, would not be the protocol
the reference numbers use.

Run directory of a graph run (see `contdepth.train.rundir`):

* ``checkpoint.json`` + tensors: the **best-validation** weights (what ``contdepth eval``
  and [`load_checkpoint`][contdepth.train.load_checkpoint] read), with the full history and, under
  ``early_stopping``, the selection state; no optimizer state;
* ``last/checkpoint.json`` + tensors: the weights *and optimizer state* after the last
  saved epoch, which is what ``resume`` continues from (continuing from the best
  weights would not reproduce the uninterrupted run).

What is written when: both checkpoints at epoch 0 (``last/`` first; the root one makes
the folder a resumable run); the root checkpoint whenever the best-validation epoch
changes; ``last/`` every `LAST_EVERY` epochs and at the end (or early stop); a
``metrics.jsonl`` line every epoch. Whenever both are written, the root one goes first,
so ``last/`` is never ahead of it: a resumed run replays the epochs after ``last/``
(deterministically, so it finds the same best epochs again) and reaches the state of the
uninterrupted run wherever it was stopped. Randomness
(dropout) is seeded per epoch with ``derive_seed(seed, 1, epoch)`` as in the image loop,
so a resumed run ends bitwise where the uninterrupted one ends (same threads, CPU).

Metrics rows: ``epoch``, ``train_loss`` (the optimised objective, train mode),
``train_accuracy`` (same logits), ``val_loss``, ``val_accuracy``, ``test_loss``,
``test_accuracy`` (eval mode, at the ``eval_scheme``/``eval_n_steps`` manifestation),
``lr``, ``n_steps``/``n_basis`` (per block), ``refined``, ``params``, ``best_epoch``
(the best-validation epoch so far), and the timings, ``threads`` and ``world_size`` of
every run's rows (`contdepth.train.trainer`).
"""

from __future__ import annotations

import copy
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (
    CHECKPOINT_JSON,
    CheckpointError,
    CheckpointInfo,
    build_model,
    read_checkpoint,
    save_checkpoint,
)
from .checkpoint_description import EarlyStoppingState
from .config import CUSTOM_MODEL, ConfigError
from .cost import Probe
from .evaluate import SPLITS, node_metrics, split_mask
from .optim import LRSchedule
from .progress import Progress
from .rundir import LAST_DIR, is_contdepth_checkpoint
from .runs import (
    RunResult,
    TrainingDiverged,
    count_parameters,
    stored_config,
    summary_table,
    time_rows,
)
from .task import Task

__all__ = ["EarlyStopping", "LAST_DIR", "LAST_EVERY", "NodeClassification", "NodeRunResult", "best_row",
           "node_metrics", "split_mask"]

LAST_EVERY = 50  # epochs between saves of last/ (and at the end); resume replays at most this many


# --- model selection ---------------------------------------------------------------------------------
@dataclass
class EarlyStopping:
    """Best-validation tracking: accuracy first, then lower loss; stop after ``patience`` bad epochs."""

    patience: int | None
    best_epoch: int = 0
    best_val_accuracy: float = -math.inf
    best_val_loss: float = math.inf
    bad_epochs: int = 0
    stopped: bool = False

    def update(self, epoch: int, val_accuracy: float, val_loss: float) -> bool:
        """Record epoch ``epoch``'s validation metrics; ``True`` if it is the new best."""
        better = val_accuracy > self.best_val_accuracy or (
            val_accuracy == self.best_val_accuracy and val_loss < self.best_val_loss)
        if better:
            self.best_epoch, self.best_val_accuracy, self.best_val_loss = epoch, val_accuracy, val_loss
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.patience is not None and self.bad_epochs >= self.patience:
                self.stopped = True
        return better

    def state_dict(self) -> dict:
        return {"patience": self.patience, "best_epoch": self.best_epoch, "best_val_accuracy": self.best_val_accuracy,
                "best_val_loss": self.best_val_loss, "bad_epochs": self.bad_epochs, "stopped": self.stopped}

    @classmethod
    def from_state(cls, state: EarlyStoppingState | None, patience: int | None, where: Path) -> "EarlyStopping":
        """The stopper of a resumed run: ``state`` as read (and checked) from its checkpoint, today's ``patience``."""
        if state is None:
            raise CheckpointError(f"{where}: holds no early-stopping state (not a graph run's checkpoint?)")
        return cls(patience=patience, best_epoch=state.best_epoch, best_val_accuracy=float(state.best_val_accuracy),
                   best_val_loss=float(state.best_val_loss), bad_epochs=state.bad_epochs, stopped=state.stopped)


def best_row(history: list[dict]) -> dict | None:
    """The best-validation row of ``history`` (the [`EarlyStopping`][contdepth.train.EarlyStopping] order; earliest of equals)."""
    if not history:
        return None
    return max(history, key=lambda r: (r["val_accuracy"], -r["val_loss"], -r["epoch"]))


@dataclass
class NodeRunResult(RunResult):
    """A graph run's result: the model and ``final_test_accuracy`` are those of the best-validation epoch.

    ``best_test_accuracy``/``best_epoch`` keep [`RunResult`][contdepth.train.RunResult]'s meaning (the best
    *test* epoch, for reference only); ``best_val_epoch``/``best_val_accuracy`` name the
    selected epoch and ``stopped_early`` whether patience ended the run.
    """

    stopped_early: bool = False
    best_val_epoch: int = field(init=False)
    best_val_accuracy: float = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        best = best_row(self.history)
        self.best_val_epoch = best["epoch"] if best else 0
        self.best_val_accuracy = best["val_accuracy"] if best else math.nan
        if best:
            self.final_test_accuracy = best["test_accuracy"]

    def summary(self) -> str:
        last = self.history[-1] if self.history else {}
        best = best_row(self.history) or {}
        epochs = str(last.get("epoch", 0)) + (" (stopped early)" if self.stopped_early else "")
        rows = [
            ("run", str(self.run_dir) if self.run_dir else "(not saved)"),
            ("model", f"{self.config.model} on {self.config.data}"),
            ("epochs", epochs),
            ("best validation", f"{100 * self.best_val_accuracy:.2f}%  (epoch {self.best_val_epoch}, "
                                f"loss {best.get('val_loss', math.nan):.4f})"),
            ("test accuracy", f"{100 * self.final_test_accuracy:.2f}%  (at the best-validation epoch)"),
            *time_rows(self),
            ("parameters", f"{self.num_params:,}"),
        ]
        return summary_table(rows, best)



# --- the task -----------------------------------------------------------------------------------------
class NodeClassification(Task):
    """Full-batch cross-entropy on the training nodes; the returned model is the best-validation one."""

    sync_metrics = False  # the checkpoints are the commit points

    def check(self) -> None:
        for name, plain in (("precision", "fp32"), ("channels_last", False)):
            if getattr(self.config, name) != plain:
                raise ConfigError(f"{name}: applies to image datasets (mixed precision, convolution memory format); "
                                  f"{self.config.data!r} is a graph: leave it at {plain}")
        if self.loop.distributed is not None:
            raise ConfigError(f"data: {self.config.data!r} is a graph trained full-batch (one step per epoch on "
                              "the whole graph), which does not shard over processes; run it without torchrun")
        for split in SPLITS:
            mask = split_mask(self.dataset, split)
            if bool((self.dataset.labels[mask] < 0).any()):
                raise ConfigError(f"data: the {split} mask of dataset {self.dataset.name!r} includes unlabelled nodes")
        self.stopper = EarlyStopping(self.config.patience)
        self.best_model: nn.Module | None = None
        self.last_saved = 0

    def resume_from(self, info: CheckpointInfo, state: dict) -> tuple[CheckpointInfo, dict]:
        """The training state is in ``RUN/last``; the run's own checkpoint holds the best-validation model."""
        return read_checkpoint(Path(self.config.out) / LAST_DIR)

    def restore(self, training: CheckpointInfo, info: CheckpointInfo, state: dict) -> None:
        custom = copy.deepcopy(self.loop.model) if info.model_name == CUSTOM_MODEL else None  # an instance to load into
        self.best_model = build_model(info, state or {}, model=custom) if info.epoch > 0 else None
        self.stopper = EarlyStopping.from_state(training.early_stopping, self.config.patience, training.path)
        self.last_saved = training.epoch

    def setup(self, device: torch.device) -> None:
        self.data = self.dataset.to(device)
        self.train_mask = split_mask(self.data, "train")
        self.train_labels = self.data.labels[self.train_mask]
        if self.best_model is not None:
            self.best_model.to(device)
        self.steps_per_epoch = 1

    def describe(self, model: nn.Module) -> list[str]:
        config = self.config
        patience = f", patience {config.patience}" if config.patience is not None else ""
        return [f"{config.model} on {config.data}, {count_parameters(model):,} parameters, "
                f"up to {config.epochs} full-batch epochs{patience}"]

    # --- the run folder: the best model at the root, the training state in last/ ---------------------
    def prepare_folder(self, run_dir: Path) -> None:
        last_dir = run_dir / LAST_DIR
        if last_dir.exists() and (last_dir.is_symlink() or not last_dir.is_dir()):
            raise ConfigError(f"out: {last_dir} exists and is not a folder")
        if (last_dir / CHECKPOINT_JSON).exists() and not is_contdepth_checkpoint(last_dir / CHECKPOINT_JSON):
            raise ConfigError(f"out: {last_dir / CHECKPOINT_JSON} is not a contdepth checkpoint; a graph run keeps "
                              "its training state in last/: move it or choose a new --out")
        last_dir.mkdir(exist_ok=True)

    def save(self, run_dir: Path, epoch: int, *, final: bool) -> None:
        """Epoch 0: ``last/`` then the root (which makes the folder a resumable run); later the root
        whenever the best changes and ``last/`` every `LAST_EVERY` epochs and at the end, the
        root first, so ``last/`` is never ahead of it."""
        if epoch == 0:
            self._save_last(run_dir, 0)
            self._save_best(run_dir, 0)
            return
        if self.improved:  # the best state goes first: resume replays from last/, never ahead of it
            self._save_best(run_dir, epoch)
        if final or epoch - self.last_saved >= LAST_EVERY:
            if not self.improved:  # the root checkpoint (epoch, config, history) is never behind last/
                self._save_best(run_dir, epoch)
            self._save_last(run_dir, epoch)
            self.last_saved = epoch

    def _save_last(self, run_dir: Path, epoch: int) -> None:
        loop = self.loop
        save_checkpoint(run_dir / LAST_DIR, loop.model, loop.optimizer, epoch=epoch, history=loop.history,
                        lr_schedule=loop.schedule.state_dict(epoch), early_stopping=self.stopper.state_dict(),
                        config=stored_config(self.config), model_config=loop.model_config)

    def _save_best(self, run_dir: Path, epoch: int) -> None:
        loop = self.loop
        best = self.best_model if self.best_model is not None else loop.model
        save_checkpoint(run_dir, best, None, epoch=epoch, history=loop.history,
                        early_stopping=self.stopper.state_dict(), config=stored_config(self.config),
                        model_config=loop.model_config)

    # --- an epoch: one optimizer step on the whole graph ------------------------------------------------
    def progress(self, start: int) -> AbstractContextManager:
        if self.stopper.stopped:
            self.loop.log(f"the run stopped early at epoch {start} (patience {self.config.patience}); "
                          "nothing to resume")
        self._progress = Progress(self.config.epochs - start, f"{self.config.model} on {self.config.data}",
                                  unit="epochs", enabled=not self.loop.quiet)
        return self._progress

    def train_epoch(self, net: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                    epoch: int) -> tuple[float, float, float]:
        lr = schedule.apply(optimizer, epoch - 1)
        net.train()
        logits = net(*self.data.inputs)[self.train_mask]
        loss = F.cross_entropy(logits, self.train_labels, label_smoothing=self.config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train_loss = float(loss.detach())
        if not math.isfinite(train_loss):
            where = ""
            if self.config.out is not None:
                where = f"the last saved state (epoch {self.last_saved}) is in {Path(self.config.out) / LAST_DIR}; "
            raise TrainingDiverged(f"lr: training diverged at epoch {epoch} (loss {train_loss}); {where}"
                                   "try a smaller lr")
        train_acc = float((logits.detach().argmax(dim=1) == self.train_labels).float().mean())
        return train_loss, train_acc, lr

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        metrics = node_metrics(model, self.data, ("val", "test"), scheme=self.config.eval_scheme,
                               n_steps=self.config.eval_n_steps)
        (val_loss, val_acc), (test_loss, test_acc) = metrics["val"], metrics["test"]
        return {"val_loss": val_loss, "val_accuracy": val_acc, "test_loss": test_loss, "test_accuracy": test_acc}

    def flop_probes(self, *, train: bool) -> list[Probe]:
        """One full-graph step per epoch, and one forward that evaluates both held-out splits."""
        return [Probe(tuple(self.data.inputs), 1)]

    def select(self, epoch: int, row: dict, model: nn.Module) -> dict:
        self.improved = self.stopper.update(epoch, row["val_accuracy"], row["val_loss"]) or self.best_model is None
        if self.improved:
            self.best_model = copy.deepcopy(model)
        return {"best_epoch": self.stopper.best_epoch}

    @property
    def stopped(self) -> bool:
        return self.stopper.stopped

    def report(self, row: dict) -> None:
        self._progress.update(1, val=f"{100 * row['val_accuracy']:.2f}%",
                              best=f"{100 * self.stopper.best_val_accuracy:.2f}% (epoch {self.stopper.best_epoch})")

    def final_model(self, model: nn.Module) -> nn.Module:
        if self.stopper.stopped:
            self.loop.log(f"early stop: no better validation accuracy for {self.config.patience} epochs; "
                          f"keeping epoch {self.stopper.best_epoch}")
        final = self.best_model if self.best_model is not None else model
        final.train()
        return final

    def result(self, **fields) -> "NodeRunResult":
        return NodeRunResult(**fields, stopped_early=self.stopper.stopped)

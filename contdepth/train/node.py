"""Full-batch node classification: the training loop for graph datasets (``is_graph``).

``contdepth.train.train(config)`` comes here when the dataset is a graph (Cora, karate
club): the whole graph is one batch, so an *epoch is one optimizer step* on the
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

Run directory of a graph run (see :mod:`contdepth.train.rundir`):

* ``checkpoint.json`` + tensors: the **best-validation** weights (what ``contdepth eval``
  and :func:`~contdepth.train.load_checkpoint` read), with the full history and, under
  ``scheduler.early_stopping``, the selection state; no optimizer state;
* ``last/checkpoint.json`` + tensors: the weights *and optimizer state* after the last
  saved epoch, which is what ``resume`` continues from (continuing from the best
  weights would not reproduce the uninterrupted run).

What is written when: both checkpoints at epoch 0 (``last/`` first; the root one makes
the folder a resumable run); the root checkpoint whenever the best-validation epoch
changes; ``last/`` every :data:`LAST_EVERY` epochs and at the end (or early stop); a
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
(the best-validation epoch so far), ``epoch_time``, ``total_time``.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (
    CHECKPOINT_JSON, CheckpointError, CheckpointInfo, build_model, read_checkpoint, restore_optimizer, save_checkpoint,
)
from .config import ConfigError, TrainConfig
from .optim import LRSchedule, build_optimizer, refine_with_optimizer
from .progress import Progress
from .rundir import LAST_DIR, append_metrics, is_contdepth_checkpoint, prepare_run_dir
from .runs import (
    RunResult, TrainingDiverged, TrainingSession, block_summary, count_parameters, model_options_for, resume_line,
    start_run_files, stored_config, summary_table, time_rows,
)


LAST_EVERY = 50  # epochs between saves of last/ (and at the end); resume replays at most this many
SPLITS = ("train", "val", "test")


# --- evaluation ------------------------------------------------------------------------------------
def split_mask(dataset, split: str) -> torch.Tensor:
    """The boolean node mask of ``split`` (``train``, ``val`` or ``test``); checked to be usable."""
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {', '.join(SPLITS)} for a graph dataset; got {split!r}")
    mask = getattr(dataset, f"{split}_mask")
    if int(mask.sum()) == 0:
        raise ValueError(f"dataset: the {split} split is empty")
    return mask


@torch.no_grad()
def node_metrics(model: nn.Module, dataset, splits: Sequence[str] = ("val", "test"), *, scheme: str | None = None,
                 n_steps: int | None = None) -> dict[str, tuple[float, float]]:
    """``{split: (mean cross-entropy, accuracy)}`` from *one* eval-mode forward pass over the graph.

    ``dataset`` must already be on the model's device. ``scheme``/``n_steps`` evaluate
    another manifestation of every ContinuousBlock (restored afterwards); the model's
    mode is restored too.
    """
    from ..nn import manifest

    masks = {s: split_mask(dataset, s) for s in splits}
    was_training = model.training
    model.eval()
    context = manifest(model, scheme, n_steps) if (scheme is not None or n_steps is not None) else nullcontext()
    try:
        with context:
            logits = model(*dataset.inputs)
    finally:
        model.train(was_training)
    out = {}
    for s, mask in masks.items():
        selected, labels = logits[mask], dataset.labels[mask]
        out[s] = (float(F.cross_entropy(selected, labels)), float((selected.argmax(dim=1) == labels).float().mean()))
    return out


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
    def from_state(cls, state: object, patience: int | None, where: Path) -> "EarlyStopping":
        if not isinstance(state, dict):
            raise CheckpointError(f"{where}: holds no early-stopping state (not a graph run's checkpoint?)")
        try:
            return cls(patience=patience, best_epoch=int(state["best_epoch"]),
                       best_val_accuracy=float(state["best_val_accuracy"]), best_val_loss=float(state["best_val_loss"]),
                       bad_epochs=int(state["bad_epochs"]), stopped=bool(state["stopped"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: malformed early-stopping state ({exc})") from exc


def best_row(history: list[dict]) -> dict | None:
    """The best-validation row of ``history`` (the :class:`EarlyStopping` order; earliest of equals)."""
    if not history:
        return None
    return max(history, key=lambda r: (r["val_accuracy"], -r["val_loss"], -r["epoch"]))


@dataclass
class NodeRunResult(RunResult):
    """A graph run's result: the model and ``final_test_accuracy`` are those of the best-validation epoch.

    ``best_test_accuracy``/``best_epoch`` keep :class:`RunResult`'s meaning (the best
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



# --- the loop ---------------------------------------------------------------------------------------------
def _check_labels(dataset) -> None:
    for split in SPLITS:
        mask = split_mask(dataset, split)
        if bool((dataset.labels[mask] < 0).any()):
            raise ConfigError(f"data: the {split} mask of dataset {dataset.name!r} includes unlabelled nodes")


def run_node_training(trainer: TrainingSession, dataset, info: CheckpointInfo | None,
                      best_state: dict[str, torch.Tensor] | None, run_dir: Path | None = None) -> "NodeRunResult":
    """The graph loop of :meth:`Trainer.run` (see the module docstring).

    ``info``/``best_state`` are the run directory's root checkpoint when resuming (the
    best-validation model); the training state itself is read from ``RUN/last``.
    ``run_dir`` is the locked, prepared run folder (``None``: nothing is written).
    """
    from ..data import derive_seed
    from ..models import create

    config: TrainConfig = trainer.config
    _check_labels(dataset)
    options = model_options_for(config, dataset)
    device = torch.device(config.device)
    data = dataset.to(device)
    train_mask = split_mask(data, "train")
    train_labels = data.labels[train_mask]
    stopper = EarlyStopping(config.patience)

    if info is not None:
        last_info, last_state = read_checkpoint(Path(config.out) / LAST_DIR)
        model = build_model(last_info, last_state)
        if last_info.model_options != options:
            raise CheckpointError(f"{last_info.path}: the stored model options {last_info.model_options} differ from "
                                  f"this run's {options}")
        best_model = build_model(info, best_state or {}) if info.epoch > 0 else None
        start, history = last_info.epoch, list(last_info.history)
        stopper = EarlyStopping.from_state((last_info.scheduler or {}).get("early_stopping"), config.patience,
                                           last_info.path)
    elif trainer.initial_model is not None:
        model, start, history = trainer.initial_model, 0, []
        best_model = None
    else:
        torch.manual_seed(config.seed)
        model = create(config.model, **options)
        start, history, best_model = 0, [], None
    model.to(device)
    if best_model is not None:
        best_model.to(device)
    optimizer = build_optimizer(model, config)
    if info is not None:
        restore_optimizer(optimizer, model, last_info)
    schedule = LRSchedule.from_config(config, optimizer, 1)
    patience = f", patience {config.patience}" if config.patience is not None else ""
    trainer.log(trainer.start_line(f"{config.model} on {config.data}, {count_parameters(model):,} parameters, "
                                   f"up to {config.epochs} full-batch epochs{patience}"))
    if info is not None:
        trainer.log(resume_line(config, last_info, schedule))

    last_dir = None
    stored = stored_config(config)

    def save_last(epoch: int) -> None:
        save_checkpoint(last_dir, model, optimizer, epoch=epoch, history=history,
                        scheduler={**schedule.state_dict(epoch), "early_stopping": stopper.state_dict()}, config=stored)

    def save_best(epoch: int) -> None:
        save_checkpoint(run_dir, best_model if best_model is not None else model, None, epoch=epoch, history=history,
                        scheduler={"early_stopping": stopper.state_dict()}, config=stored)

    if run_dir is not None:
        last_dir = run_dir / LAST_DIR
        if last_dir.exists() and (last_dir.is_symlink() or not last_dir.is_dir()):
            raise ConfigError(f"out: {last_dir} exists and is not a folder")
        last_dir.mkdir(exist_ok=True)
        if info is None:  # epoch 0: last/ first, then the root checkpoint, which makes the folder a resumable run
            if (last_dir / CHECKPOINT_JSON).exists() and not is_contdepth_checkpoint(last_dir / CHECKPOINT_JSON):
                raise ConfigError(f"out: {last_dir / CHECKPOINT_JSON} is not a contdepth checkpoint; a graph run keeps "
                                  "its training state in last/: move it or choose a new --out")
            prepare_run_dir(run_dir, overwrite=config.overwrite)
            save_last(0)
            save_best(0)
        start_run_files(run_dir, config, history)

    elapsed = history[-1]["total_time"] if history else 0.0
    if stopper.stopped:
        trainer.log(f"the run stopped early at epoch {start} (patience {config.patience}); nothing to resume")
    last_saved = start
    progress = Progress(config.epochs - start, f"{config.model} on {config.data}", unit="epochs",
                        enabled=not trainer.quiet)
    with progress:
        for epoch in range(start + 1, config.epochs + 1):
            if stopper.stopped:
                break
            tic = time.perf_counter()
            refined = epoch in config.refine_at
            if refined:
                refine_with_optimizer(model, optimizer)
            torch.manual_seed(derive_seed(config.seed, 1, epoch))
            lr = schedule.apply(optimizer, epoch - 1)
            model.train()
            logits = model(*data.inputs)[train_mask]
            loss = F.cross_entropy(logits, train_labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            train_loss = float(loss.detach())
            if not math.isfinite(train_loss):
                where = (f"the last saved state (epoch {last_saved}) is in {last_dir}; " if last_dir is not None
                         else "")
                raise TrainingDiverged(f"lr: training diverged at epoch {epoch} (loss {train_loss}); {where}"
                                       "try a smaller lr")
            train_acc = float((logits.detach().argmax(dim=1) == train_labels).float().mean())
            metrics = node_metrics(model, data, ("val", "test"), scheme=config.eval_scheme,
                                   n_steps=config.eval_n_steps)
            (val_loss, val_acc), (test_loss, test_acc) = metrics["val"], metrics["test"]
            improved = stopper.update(epoch, val_acc, val_loss) or best_model is None
            if improved:
                best_model = copy.deepcopy(model)
            row = {
                "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                "val_loss": val_loss, "val_accuracy": val_acc, "test_loss": test_loss, "test_accuracy": test_acc,
                "lr": lr, **block_summary(model), "refined": refined, "params": count_parameters(model),
                "best_epoch": stopper.best_epoch, "epoch_time": time.perf_counter() - tic,
                "total_time": 0.0, "threads": torch.get_num_threads(),
            }
            row["total_time"] = elapsed + row["epoch_time"]
            history.append(row)
            if run_dir is not None:
                append_metrics(run_dir, row, sync=False)  # the checkpoints are the commit points
                final = epoch == config.epochs or stopper.stopped
                if improved:  # the best state goes first: resume replays from last/, never ahead of it
                    save_best(epoch)
                if final or epoch - last_saved >= LAST_EVERY:
                    if not improved:  # the root checkpoint (epoch, config, history) is never behind last/
                        save_best(epoch)
                    save_last(epoch)
                    last_saved = epoch
            elapsed += time.perf_counter() - tic
            progress.update(1, val=f"{100 * val_acc:.2f}%", best=f"{100 * stopper.best_val_accuracy:.2f}% "
                            f"(epoch {stopper.best_epoch})")
            for callback in trainer.callbacks:
                callback(row, model, optimizer)
    if stopper.stopped:
        trainer.log(f"early stop: no better validation accuracy for {config.patience} epochs; "
                    f"keeping epoch {stopper.best_epoch}")
    final_model = best_model if best_model is not None else model
    final_model.train()
    result = NodeRunResult(config=config, model=final_model, history=history, run_dir=run_dir,
                           num_params=count_parameters(final_model), total_time=elapsed,
                           wall_time=time.perf_counter() - trainer.wall_start, stopped_early=stopper.stopped)
    trainer.log(result.summary())
    return result

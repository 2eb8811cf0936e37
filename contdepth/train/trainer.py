"""The training loop: ``train(config) -> RunResult``.

One run, in order: validate everything that can be checked without work (options, the
model's options by building it on the ``meta`` device, the run folder); take the run
folder's lock (:func:`~contdepth.train.rundir.locked_run_dir`); load the data; build the
model (``torch.manual_seed(seed)``) or, with ``resume``, rebuild it and the optimizer
from the last checkpoint; save a fresh run's epoch-0 checkpoint (so ``resume`` works from
the first step on); then for each epoch ``e`` (1-based):

1. if ``e`` is in ``refine_at``: refine every ContinuousBlock and map the optimizer state
   (:func:`~contdepth.train.optim.refine_with_optimizer`);
2. seed torch's global RNG with ``derive_seed(seed, 1, e)`` (randomness inside the model:
   dropout, stochastic depth), so a resumed epoch draws what the uninterrupted one drew;
3. one pass over ``train.epoch_batches(e - 1)``, whose order and augmentation are a
   function of ``(seed, e)``; the learning rate is set from the global step before every
   optimizer step;
4. test evaluation, a ``metrics.jsonl`` line, a checkpoint, the callbacks.

A graph dataset (``is_graph``: Cora, karate club) is trained full-batch instead, one
optimizer step per epoch with early stopping on validation accuracy: see
:mod:`contdepth.train.node`.

So a run interrupted anywhere and resumed from its last checkpoint ends bitwise where the
uninterrupted run ends (same thread count, CPU). The caller's global RNG state is
restored when ``train`` returns.

Started by ``torchrun`` with several processes, the run is data-parallel
(:mod:`contdepth.train.distributed`): ``batch_size`` is the global batch, each process
trains on its shard inside DistributedDataParallel, metrics are summed over processes,
and only rank 0 prints and writes; a checkpoint resumes with any number of processes.

Each epoch's metrics (a ``metrics.jsonl`` line and a ``RunResult.history`` entry):
``epoch`` (1-based), ``train_loss`` (the optimised objective, label smoothing included,
averaged over the epoch's samples as the weights changed), ``train_accuracy`` (on the
augmented batches, in train mode), ``test_loss`` (plain cross-entropy) and
``test_accuracy`` (eval mode, at the ``eval_scheme``/``eval_n_steps`` manifestation),
``val_loss`` and ``val_accuracy`` (the same, on the validation split held out by
``validation_size``, when there is one), ``lr`` (of the epoch's first step), ``n_steps`` and ``n_basis`` (per block, after any
refinement at the epoch's start), ``refined``, ``params`` (trainable parameters),
``train_time`` (the epoch's refinement and training pass alone), ``cpu_time`` (the process's CPU
seconds for the epoch, all threads, before its checkpoint write: with one thread a cost that other
programs on the machine barely change, unlike wall time), ``epoch_time`` (training, evaluation
and the checkpoint write) and ``total_time`` (seconds, cumulative over
resumes, the previous epochs' checkpoint writes included), ``threads`` (the thread count,
on which bitwise results depend), ``world_size`` (processes that trained the epoch).
Accuracies are fractions in ``[0, 1]``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import fields
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, CheckpointInfo, build_model, read_checkpoint, restore_optimizer, save_checkpoint
from .config import RESUMABLE_CHANGES, ConfigError, TrainConfig, check_device, check_model_data
from .evaluate import evaluate
from .node import run_node_training
from .optim import LRSchedule, build_optimizer, refine_with_optimizer
from .progress import Progress, default_threads
from .rundir import append_metrics, check_run_dir, locked_run_dir, prepare_run_dir
from .runs import (
    Callback, RunResult, TrainingDiverged, block_summary, count_parameters, epoch_line, model_options_for, resume_line,
    start_run_files, stored_config,
)



# --- preflight ---------------------------------------------------------------------------------------


def preflight(config: TrainConfig) -> None:
    """Every check that needs no data and writes nothing; raises :class:`ConfigError`.

    Refuses a graph model on an image dataset (and the reverse) by their names; builds the
    model on the ``meta`` device (no memory, no initialisation cost) so that bad model option
    *values* fail here with the model's own message; checks that ``refine_at``/``eval_*``
    have blocks to act on, that the device exists here, and the run folder.
    """
    from ..models import create
    from ..nn import continuous_blocks
    from ..solvers import get_scheme

    check_model_data(config.model, config.data)
    options = model_options_for(config)
    try:
        with torch.device("meta"):
            model = create(config.model, **options)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise _model_options_error(config.model, options, exc) from exc
    if config.decay_scope == "model" and not hasattr(model, "weight_decay_parameters"):
        raise ConfigError(f"decay_scope: 'model' needs a model that names its decayed parameters "
                          f"(weight_decay_parameters(): the graph models); {config.model!r} does not, use 'all'")
    has_blocks = bool(continuous_blocks(model))
    if config.refine_at and not has_blocks:
        raise ConfigError(f"refine_at: model {config.model!r} has no ContinuousBlock to refine")
    if (config.eval_scheme or config.eval_n_steps) and not has_blocks:
        raise ConfigError(f"eval_scheme: model {config.model!r} has no ContinuousBlock to manifest")
    if config.eval_scheme:
        get_scheme(config.eval_scheme)
    if config.data_dir is not None and not Path(config.data_dir).expanduser().is_dir():
        raise ConfigError(f"data_dir: {config.data_dir} is not a folder")
    check_device(config.device)
    check_run_dir(config.out, overwrite=config.overwrite, resume=config.resume)


def _model_options_error(model: str, options: dict, exc: Exception) -> ConfigError:
    """``model_options.NAME: ...`` when the model named the option, else the model and its options."""
    from ..models import model_options

    message = str(exc)
    head = message.split(":", 1)[0].split("[", 1)[0].strip()
    if head in options or head in model_options(model):
        return ConfigError(f"model_options.{message}")
    return ConfigError(f"model_options: model {model!r} cannot be built with {options}: {message}")


def check_resume(config: TrainConfig, info: CheckpointInfo) -> None:
    """A resumed run continues exactly: same options, same epochs unless ``extend`` says otherwise."""
    saved = info.train_config()
    check_resume_config(config, saved)
    if config.epochs < info.epoch:
        raise ConfigError(f"epochs: the run in {config.out} already completed {info.epoch} epochs, "
                          f"got epochs={config.epochs}")
    if config.epochs != saved.epochs and not config.extend:
        if saved.schedule == "cosine":
            effect = (f"its cosine schedule is then recomputed to span {config.epochs} epochs, which changes the "
                      f"learning rate from epoch {info.epoch + 1} on")
        else:
            effect = f"its {saved.schedule} schedule does not depend on the length, so only the number of epochs changes"
        raise ConfigError(
            f"epochs: the run in {config.out} is set up for {saved.epochs} epochs and --resume continues it exactly; "
            f"to change it to {config.epochs} epochs add --extend (extend: true): {effect}")


def check_resume_config(config: TrainConfig, saved: TrainConfig) -> None:
    """A resumed run may change only :data:`~contdepth.train.config.RESUMABLE_CHANGES`."""
    for f in fields(TrainConfig):
        if f.name in RESUMABLE_CHANGES:
            continue
        given, stored = getattr(config, f.name), getattr(saved, f.name)
        if given != stored:
            raise ConfigError(
                f"{f.name}: differs from the run being resumed (saved {stored!r}, given {given!r}); a resumed run "
                f"may change only {', '.join(RESUMABLE_CHANGES)}"
            )


def load_data(config: TrainConfig):
    """The dataset of ``config``, with its validation split held out (``validation_size``, ``train_size``)."""
    from .. import data

    try:
        dataset = data.load(config.data, data_dir=config.data_dir, seed=config.split_seed, **config.data_options)
    except (ValueError, OSError, ImportError) as exc:  # unknown option, missing files, no scikit-learn
        raise ConfigError(f"data: {exc}") from exc
    return with_held_out(config, dataset)


def with_held_out(config: TrainConfig, dataset):
    """``dataset`` split as ``config`` says (:func:`contdepth.data.hold_out`); unchanged without the options.

    A dataset that already has a validation split (a user's own, or one split by this
    config before, as a fine-tuning run receives it) is taken as it is when its sizes are
    the config's or the config asks for none; otherwise it is refused, so a split is never
    silently redrawn.
    """
    from .. import data

    if getattr(dataset, "is_graph", False):
        return dataset
    if getattr(dataset, "val_x", None) is not None:
        if config.validation_size not in (0, dataset.num_val) or config.train_size not in (None, dataset.num_train):
            raise ConfigError(f"validation_size: the dataset given already has a validation split ({dataset.num_val} "
                              f"images, {dataset.num_train} to train on), not the {config.validation_size} / "
                              f"{config.train_size} asked for")
        return dataset
    if not config.validation_size and config.train_size is None:
        return dataset
    try:
        return data.hold_out(dataset, config.validation_size, seed=config.split_seed, train_size=config.train_size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


# --- the loop -------------------------------------------------------------------------------------------
class Trainer:
    """A run of ``config``; :meth:`run` does the work. ``train(config)`` is the short form.

    ``dataset`` replaces loading ``config.data`` (tests, custom data; ``config.data`` is
    then only a label); ``callbacks`` are called after each epoch's checkpoint as
    ``callback(metrics_row, model, optimizer)``; an exception from one stops the run
    (the checkpoint of that epoch is already on disk).  ``model`` starts the run from
    existing weights (fine-tuning, e.g. after compression) instead of a fresh draw; it
    must be built by ``contdepth.models.create`` as ``config.model`` (its basis sizes may
    differ: checkpoints store them), and it is trained in place.
    """

    def __init__(self, config: TrainConfig, *, dataset=None, callbacks: Sequence[Callback] = (),
                 model: nn.Module | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        if model is not None:
            name = getattr(model, "config", {}).get("name") if isinstance(getattr(model, "config", None), dict) else None
            if name != config.model:
                raise ValueError(f"model: expected a {config.model!r} built by contdepth.models.create, got "
                                 f"{name or type(model).__name__!r}")
            if config.resume:
                raise ValueError("model: a resumed run continues from its checkpoint; do not pass a model too")
        self.config = config
        self.dataset = dataset
        self.callbacks = tuple(callbacks)
        self.initial_model = model
        self.distributed = None  # set by run(): a DistributedContext under torchrun

    def log(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    @property
    def quiet(self) -> bool:
        """Rank 0 alone talks in a data-parallel run."""
        return self.config.quiet or (self.distributed is not None and not self.distributed.is_main)

    def run(self) -> RunResult:
        from .distributed import setup

        threads = torch.get_num_threads()
        if self.config.threads is not None:
            self.threads = (self.config.threads, "--threads")
        else:
            self.threads = default_threads()
        torch.set_num_threads(self.threads[0])
        self.distributed = setup(self.config.device)
        self.wall_start = time.perf_counter()
        finished = False
        try:
            with torch.random.fork_rng(devices=[]):
                result = self._run()
            finished = True
            return result
        finally:
            torch.set_num_threads(threads)
            if self.distributed is not None:
                self.distributed.close(finished=finished)

    def _resume_threads(self, info: CheckpointInfo) -> None:
        """Without ``--threads``, a resumed run takes the thread count its epochs had: bitwise results depend on it."""
        rows = info.history
        used = rows[-1].get("threads") if rows and isinstance(rows[-1], dict) else None
        if self.config.threads is None and isinstance(used, int) and not isinstance(used, bool) and 1 <= used <= 4096:
            torch.set_num_threads(used)
            self.threads = (used, "as the run's last epoch")

    def start_line(self, what: str) -> str:
        """The first line a run prints: what it trains, the device and threads, where it writes."""
        n, why = self.threads
        where = f"run folder {self.config.out}" if self.config.out else "not saved (no --out given)"
        return f"contdepth train: {what}; {self.config.device}, {n} thread{'s' * (n != 1)} ({why}); {where}"

    def _run(self) -> RunResult:
        config = self.config
        ddp = self.distributed
        preflight(config)
        if ddp is not None:
            ddp.barrier()  # every rank has checked the run folder before rank 0 locks and writes it
        with contextlib.ExitStack() as stack:
            run_dir = None
            if config.out is not None and (ddp is None or ddp.is_main):
                run_dir = stack.enter_context(locked_run_dir(config.out, overwrite=config.overwrite,
                                                             resume=config.resume))
            info = state = None
            if config.resume:
                info, state = read_checkpoint(config.out)
                check_resume(config, info)
                self._resume_threads(info)
            dataset = with_held_out(config, self.dataset) if self.dataset is not None else load_data(config)
            if getattr(dataset, "is_graph", False):  # full-batch node classification
                if ddp is not None:
                    raise ConfigError(f"data: {config.data!r} is a graph trained full-batch (one step per epoch on "
                                      "the whole graph), which does not shard over processes; run it without torchrun")
                return run_node_training(self, dataset, info, state, run_dir)
            return self._run_images(dataset, info, state, run_dir)

    def _run_images(self, dataset, info: CheckpointInfo | None, state: dict | None, run_dir: Path | None) -> RunResult:
        from ..data import derive_seed
        from ..models import create

        config = self.config
        ddp = self.distributed
        if config.patience is not None:
            raise ConfigError(f"patience: early stopping is for graph datasets (full-batch, one step per epoch); "
                              f"{config.data!r} is an image dataset: choose the epochs on its validation split")
        local_batch = ddp.local_batch_size(config.batch_size) if ddp is not None else config.batch_size
        options = model_options_for(config, dataset)
        device = ddp.device if ddp is not None else torch.device(config.device)

        if info is not None:
            model = build_model(info, state)
            if info.model_options != options:
                raise CheckpointError(f"{info.path}: the stored model options {info.model_options} differ from "
                                      f"this run's {options}")
            start, history = info.epoch, list(info.history)
        elif self.initial_model is not None:
            model, start, history = self.initial_model, 0, []
        else:
            torch.manual_seed(config.seed)
            model = create(config.model, **options)
            start, history = 0, []
        model.to(device)
        optimizer = build_optimizer(model, config)
        if info is not None:
            restore_optimizer(optimizer, model, info)
        shard = {} if ddp is None else {"num_replicas": ddp.world_size, "rank": ddp.rank}
        train_batches = dataset.batches("train", local_batch, seed=config.seed, device=device, **shard)
        schedule = LRSchedule.from_config(config, optimizer, len(train_batches))
        net = ddp.wrap(model) if ddp is not None else model  # what the training steps call
        self.log(self.start_line(f"{config.model} on {config.data}, {count_parameters(model):,} parameters, "
                                 f"{config.epochs} epochs x {len(train_batches)} steps of {config.batch_size}"))
        if ddp is not None:
            self.log(f"data-parallel: {ddp.world_size} processes ({ddp.backend}), global batch "
                     f"{config.batch_size} = {ddp.world_size} x {local_batch} per process, "
                     f"{len(train_batches)} steps per epoch")
        if info is not None:
            self.log(resume_line(config, info, schedule))

        if run_dir is not None:
            if info is None:  # epoch 0: from here on the folder is a run that --resume continues
                prepare_run_dir(run_dir, overwrite=config.overwrite)
                save_checkpoint(run_dir, model, optimizer, epoch=0, history=[],
                                scheduler=schedule.state_dict(0), config=stored_config(config))
            start_run_files(run_dir, config, history)

        elapsed = history[-1]["total_time"] if history else 0.0
        for epoch in range(start + 1, config.epochs + 1):
            tic, cpu_tic = time.perf_counter(), time.process_time()
            refined = epoch in config.refine_at
            if refined:
                refine_with_optimizer(model, optimizer)
                if ddp is not None:  # new parameter tensors: DDP must hook their gradients
                    net = ddp.wrap(model)
            torch.manual_seed(derive_seed(config.seed, 1, epoch))
            train_loss, train_acc, lr = self._train_epoch(net, optimizer, schedule, train_batches, epoch)
            if ddp is not None:
                ddp.broadcast_buffers(model)
            train_time = time.perf_counter() - tic
            held_out = {}
            for split in dataset.splits[1:]:  # val (when held out), then test
                loss, accuracy = evaluate(model, dataset, config.eval_batch_size, scheme=config.eval_scheme,
                                          n_steps=config.eval_n_steps, split=split, device=device, distributed=ddp)
                held_out.update({f"{split}_loss": loss, f"{split}_accuracy": accuracy})
            row = {
                "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, **held_out, "lr": lr,
                **block_summary(model), "refined": refined, "params": count_parameters(model),
                "train_time": train_time, "epoch_time": 0.0, "total_time": 0.0, "threads": torch.get_num_threads(),
                "world_size": ddp.world_size if ddp is not None else 1,
            }
            # the epoch's time includes writing its checkpoint: the wall time a user waits for
            row["epoch_time"] = time.perf_counter() - tic
            row["total_time"] = elapsed + row["epoch_time"]
            row["cpu_time"] = time.process_time() - cpu_tic
            history.append(row)
            if run_dir is not None:
                append_metrics(run_dir, row)
                save_checkpoint(run_dir, model, optimizer, epoch=epoch, history=history,
                                scheduler=schedule.state_dict(epoch * schedule.steps_per_epoch),
                                config=stored_config(config))
            elapsed += time.perf_counter() - tic
            self.log(_epoch_line(row, config.epochs))
            for callback in self.callbacks:
                callback(row, model, optimizer)
        result = RunResult(config=config, model=model, history=history, run_dir=run_dir,
                           num_params=count_parameters(model), total_time=elapsed,
                           wall_time=time.perf_counter() - self.wall_start)
        self.log(result.summary())
        return result

    def _train_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                     batches, epoch: int) -> tuple[float, float, float]:
        config = self.config
        model.train()
        steps = len(batches)
        first_step = (epoch - 1) * steps
        total_loss, correct, count = 0.0, 0, 0
        lr_first = schedule.lrs(first_step)[0]
        with Progress(steps, f"epoch {epoch}/{config.epochs}", enabled=not self.quiet) as progress:
            for k, (xb, yb) in enumerate(batches.epoch_batches(epoch - 1)):
                schedule.apply(optimizer, first_step + k)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n, right = len(yb), int((logits.detach().argmax(dim=1) == yb).sum())
                value = float(loss.detach())
                if self.distributed is not None:  # every rank sees the global numbers, so all stop together
                    summed, right, n = self.distributed.sum([value * n, right, n])
                    value = summed / n
                if not math.isfinite(value):
                    raise TrainingDiverged(f"lr: training diverged at epoch {epoch}, step {k + 1} (loss {value}); "
                                           f"{self.diverged_hint(epoch)}")
                total_loss += value * n
                correct += int(right)
                count += int(n)
                progress.update(1, loss=f"{total_loss / count:.4f}", acc=f"{100 * correct / count:.1f}%")
        return total_loss / max(count, 1), correct / max(count, 1), lr_first

    def diverged_hint(self, epoch: int) -> str:
        """What to do after a divergence, and what is on disk."""
        if self.config.out is None:
            return "try a smaller lr"
        return (f"the last good checkpoint (epoch {epoch - 1}) is in {self.config.out}; try a smaller lr "
                "(a new run, or --overwrite)")


def train(config: TrainConfig, *, dataset=None, callbacks: Sequence[Callback] = (),
          model: nn.Module | None = None) -> RunResult:
    """Run ``config`` (see :class:`Trainer`); a graph dataset (``is_graph``) runs :mod:`contdepth.train.node`."""
    return Trainer(config, dataset=dataset, callbacks=callbacks, model=model).run()


def _epoch_line(row: dict, epochs: int) -> str:
    evaluation = f"test loss {row['test_loss']:.4f} acc {100 * row['test_accuracy']:6.2f}%"
    if "val_accuracy" in row:
        evaluation = f"val acc {100 * row['val_accuracy']:6.2f}%  " + evaluation
    return epoch_line(row, epochs, evaluation, f"{row['epoch_time']:.1f}s")

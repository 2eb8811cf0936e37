"""The one training loop: ``train(config) -> RunResult`` (what it checks first: `contdepth.train.run_checks`).

The loop is the same for every kind of data; a task (`contdepth.train.task`) supplies
an epoch's training, the evaluation and the model selection: image classification
(`contdepth.train.images`) or, for a graph dataset, node classification
(`contdepth.train.node`). One run, in order: validate everything that can be checked without work (options, the
model's options by building it on the ``meta`` device, the run folder); take the run
folder's lock (`locked_run_dir`); load the data; build the
model (``torch.manual_seed(seed)``) or, with ``resume``, rebuild it and the optimizer
from the last checkpoint; save a fresh run's epoch-0 checkpoint (so ``resume`` works from
the first step on); then for each epoch ``e`` (1-based):

1. if ``e`` is in ``refine_at``: refine every ContinuousBlock and map (or reset, ``refine_optimizer``) the optimizer state
   ([`refine_with_optimizer`][contdepth.train.refine_with_optimizer]); if ``e`` is in ``grow_at``: grow the
   model in depth and carry the optimizer (`contdepth.train.growth.grow_in_training`; the checkpoints then
   record the grown model);
2. seed torch's global RNG with ``derive_seed(seed, 1, e)`` (randomness inside the model:
   dropout, stochastic depth), so a resumed epoch draws what the uninterrupted one drew;
3. the task's epoch (images: one pass over the shuffled, augmented batches; a graph: one
   full-batch step);
4. the task's evaluation and model selection, a ``metrics.jsonl`` line, the task's
   checkpoints, the callbacks.

So a run interrupted anywhere and resumed from its last checkpoint ends bitwise where the
uninterrupted run ends (same thread count, CPU). The caller's global RNG state is
restored when ``train`` returns.

Started by ``torchrun`` with several processes, the run is data-parallel
(`contdepth.train.distributed`): ``batch_size`` is the global batch, each process
trains on its shard inside DistributedDataParallel, metrics are summed over processes,
and only rank 0 prints and writes; a checkpoint resumes with any number of processes.

Each epoch's metrics (a ``metrics.jsonl`` line and a ``RunResult.history`` entry):
``epoch`` (1-based), ``train_loss`` (the optimised objective, label smoothing included,
averaged over the epoch's samples as the weights changed), ``train_accuracy`` (on the
augmented batches, in train mode), ``test_loss`` (plain cross-entropy) and
``test_accuracy`` (eval mode, at the ``eval_scheme``/``eval_n_steps`` manifestation),
``val_loss`` and ``val_accuracy`` (the same, on the validation split held out by
``validation_size``, when there is one), ``lr`` (of the epoch's first step), ``n_steps`` and ``n_basis`` (per block, after any
refinement at the epoch's start), ``refined``, ``grown`` and ``layers`` (a run with ``grow_at``),
``params`` (trainable parameters),
``train_time`` (the epoch's refinement and training pass alone), ``train_cpu_time`` (the process's
CPU seconds, all threads, of that same refinement and training pass: no evaluation, no checkpoint
write), ``cpu_time`` (the process's CPU seconds for the epoch, evaluation included, before its
checkpoint write; CPU time still moves with what else the machine runs), ``train_flops`` and
``eval_flops`` (the floating-point operations of the epoch's training steps, forward and backward,
and of its evaluation passes over the validation and test splits at the evaluation
manifestation: counted exactly by `torch.utils.flop_counter.FlopCounterMode` once per model
shape on a ``meta`` copy, summed over the epoch's batches and, under ``torchrun``, over the
processes; `contdepth.train.cost` says what is and is not counted), ``epoch_time`` (training and evaluation,
before the checkpoint write) and ``total_time`` (seconds, cumulative over resumes, the previous
epochs' checkpoint writes included), ``threads`` (the thread count, on which bitwise results
depend), ``world_size`` (processes that trained the epoch); a graph run adds ``best_epoch``.
Accuracies are fractions in ``[0, 1]``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..common.validate import check_threads
from ..data import derive_seed
from ..models import create, created_name
from .checkpoint import (
    CheckpointError,
    CheckpointInfo,
    build_model,
    model_identity,
    read_checkpoint,
    restore_optimizer,
)
from .config import (
    CUSTOM_MODEL,
    ConfigError,
    TrainConfig,
)
from .cost import FlopCounter
from .distributed import setup as setup_distributed
from .growth import grow_in_training, growth_columns, grown_options
from .images import ImageClassification
from .language import LanguageModeling
from .node import NodeClassification
from .metrics import check_row
from .optim import LRSchedule, build_optimizer, refine_with_optimizer
from .progress import default_threads
from .rundir import append_metrics, locked_run_dir, prepare_run_dir
from .runs import (
    Callback,
    RunResult,
    block_summary,
    to_channels_last,
    count_parameters,
    model_options_for,
    resume_line,
    start_run_files,
)
from .task import Task
from .tensorboard import TENSORBOARD_DIR, TensorBoardLogger

from .run_checks import (  # noqa: F401  (importable from here, where they always were)
    check_resume,
    check_resume_config,
    load_data,
    preflight,
    restore_grad_scaler,
    with_held_out,
    with_recorded_corpus,
)


# --- the loop -------------------------------------------------------------------------------------------
def task_for(trainer: "Trainer", dataset) -> Task:
    """The task that trains ``dataset``: node classification for a graph (``is_graph``), language modelling
    for text (``is_text``), else image classification."""
    if getattr(dataset, "is_graph", False):
        return NodeClassification(trainer, dataset)
    if getattr(dataset, "is_text", False):
        return LanguageModeling(trainer, dataset)
    return ImageClassification(trainer, dataset)


class Trainer:
    """A run of ``config``; `run` does the work. ``train(config)`` is the short form.

    The one training loop: it owns the checks, the run folder's lock, resume, seeding,
    refinement, the optimizer and its schedule, distributed training, the metrics lines,
    the checkpoints' timing and the callbacks; a [`Task`][contdepth.train.Task]
    ([`task_for`][contdepth.train.task_for]: images or a graph) supplies the epoch's training, the evaluation and
    the model selection.

    ``dataset`` replaces loading ``config.data`` (tests, custom data; ``config.data`` is
    then only a label); ``callbacks`` are called after each epoch's checkpoint as
    ``callback(metrics_row, model, optimizer)``; an exception from one stops the run
    (the checkpoint of that epoch is already on disk).  ``model`` starts the run from
    existing weights (fine-tuning, e.g. after compression) instead of a fresh draw, built by
    ``contdepth.models.create`` as ``config.model`` (its basis sizes may differ: checkpoints
    store them), or any module of the user's own (the run's model is then ``"custom"``); it
    is trained in place.

    While `run` trains, ``model``, ``optimizer``, ``schedule`` and ``history`` are the
    run's (what a task's checkpoints save).
    """

    def __init__(self, config: TrainConfig, *, dataset=None, callbacks: Sequence[Callback] = (),
                 model: nn.Module | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        if model is not None:
            if not isinstance(model, nn.Module):
                raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
            name = created_name(model)
            if name is None:  # the user's own module
                if config.model not in (CUSTOM_MODEL, TrainConfig.default_of("model")) or config.model_options:
                    raise ValueError(
                        f"model: {type(model).__name__} is your own module, but the config names model "
                        f"{config.model!r}{' with model_options' if config.model_options else ''}; leave model at "
                        f"its default or set model={CUSTOM_MODEL!r}, without model_options")
                config = config.replace(model=CUSTOM_MODEL, model_options={})
            elif name != config.model:
                raise ValueError(f"model: expected a {config.model!r} built by contdepth.models.create, got {name!r}")
            elif config.resume:
                raise ValueError("model: a resumed run continues from its checkpoint; do not pass a model too")
        elif config.model == CUSTOM_MODEL and config.resume:
            raise ConfigError(f"model: the run's model is your own module ({CUSTOM_MODEL!r}); resume it in Python with "
                              "a fresh instance for the checkpoint to load into: train(config, model=MyNet())")
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
        check_threads(self.config.threads)  # against this machine's CPUs, before torch sizes its pool
        threads = torch.get_num_threads()
        if self.config.threads is not None:
            self.threads = (self.config.threads, "--threads")
        else:
            self.threads = default_threads()
        torch.set_num_threads(self.threads[0])
        self.distributed = setup_distributed(self.config.device)
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

    def _net(self, model: nn.Module) -> nn.Module:
        """What the training steps call: ``model``, in DDP under torchrun, compiled with ``compile``."""
        net = self.distributed.wrap(model) if self.distributed is not None else model
        return torch.compile(net) if self.config.compile else net

    def start_line(self, what: str) -> str:
        """The first line a run prints: what it trains, the device and threads, where it writes."""
        n, why = self.threads
        where = f"run folder {self.config.out}" if self.config.out else "not saved (no --out given)"
        return f"contdepth train: {what}; {self.config.device}, {n} thread{'s' * (n != 1)} ({why}); {where}"

    def _run(self) -> RunResult:
        config = self.config
        ddp = self.distributed
        preflight(config, self.initial_model)
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
                config = self.config = with_recorded_corpus(config, info.train_config())
                check_resume(config, info)
                self._resume_threads(info)
            dataset = with_held_out(config, self.dataset) if self.dataset is not None else load_data(config)
            if getattr(dataset, "is_text", False) and "sha256" not in config.data_options:
                # the corpus's digest joins the run's config (config.yaml, the checkpoints): a rerun or a resume
                # on text that changed since is refused by the reader instead of training on other bytes
                config = self.config = config.replace(data_options={**config.data_options, "sha256": dataset.sha256})
            task = task_for(self, dataset)
            task.check()
            return self._train(task, dataset, info, state, run_dir)

    def _train(self, task: Task, dataset, info: CheckpointInfo | None, state: dict | None,
               run_dir: Path | None) -> RunResult:
        config = self.config
        ddp = self.distributed
        custom = config.model == CUSTOM_MODEL
        options = {} if custom else model_options_for(config, dataset)
        device = ddp.device if ddp is not None else torch.device(config.device)

        training = None
        if info is not None:
            training, training_state = task.resume_from(info, state or {})
            model = build_model(training, training_state, model=self.initial_model if custom else None)
            expected = grown_options(config, options, training.epoch) if config.grow_at else options  # grown
            if expected is not None and training.model_options != expected:
                raise CheckpointError(f"{training.path}: the stored model options {training.model_options} differ "
                                      f"from this run's {expected}")
            start, history = training.epoch, list(training.history)
        elif self.initial_model is not None:
            model, start, history = self.initial_model, 0, []
        else:
            torch.manual_seed(config.seed)
            model = create(config.model, **options)
            start, history = 0, []
        model.to(device)
        if config.channels_last:
            to_channels_last(model)
        self.model = model  # a task's restore may need it (the graph task's best model is an instance of it)
        # fp16 autocast: a GradScaler, whose state (scale, growth tracker) the checkpoints keep
        self.grad_scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
        if self.grad_scaler is not None and training is not None:
            restore_grad_scaler(self.grad_scaler, training)
        if training is not None:
            task.restore(training, info, state or {})
        optimizer = build_optimizer(model, config)
        if training is not None:
            restore_optimizer(optimizer, model, training)
        task.setup(device)
        schedule = LRSchedule.from_config(config, optimizer, task.steps_per_epoch)
        self.model, self.optimizer, self.schedule, self.history = model, optimizer, schedule, history
        self.model_config = model_identity(model)  # what the checkpoints record to rebuild it
        self.flop_counter = FlopCounter()  # one count per model shape, for this run
        net = self._net(model)  # what the training steps call
        first, *more = task.describe(model)
        self.log(self.start_line(first))
        for line in more:
            self.log(line)
        if training is not None:
            self.log(resume_line(config, training, schedule))

        if run_dir is not None:
            if info is None:  # epoch 0: from here on the folder is a run that --resume continues
                task.prepare_folder(run_dir)
                prepare_run_dir(run_dir, overwrite=config.overwrite)
                task.save(run_dir, 0, final=False)
            start_run_files(run_dir, config, history)

        elapsed = history[-1]["total_time"] if history else 0.0
        callbacks = self.callbacks
        if run_dir is not None and config.tensorboard:
            tensorboard = TensorBoardLogger(run_dir / TENSORBOARD_DIR, first_epoch=start + 1)
            callbacks += (tensorboard,)
        with contextlib.ExitStack() as stack, task.progress(start):
            if run_dir is not None and config.tensorboard:
                stack.callback(tensorboard.close)
            for epoch in range(start + 1, config.epochs + 1):
                if task.stopped:
                    break
                tic, cpu_tic = time.perf_counter(), time.process_time()
                refined, grown = epoch in config.refine_at, epoch in config.grow_at
                if refined:
                    refine_with_optimizer(model, optimizer, state=config.refine_optimizer)
                if grown:  # a new model; self.model and self.model_config follow it
                    model = grow_in_training(self, model, optimizer, epoch)
                if refined or grown:  # new parameter tensors (and a new grid): wrap and compile afresh
                    net = self._net(model)
                torch.manual_seed(derive_seed(config.seed, 1, epoch))
                train_loss, train_acc, lr = task.train_epoch(net, optimizer, schedule, epoch)
                if ddp is not None:
                    ddp.broadcast_buffers(model)
                train_time, train_cpu_time = time.perf_counter() - tic, time.process_time() - cpu_tic
                row = {
                    "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, **task.evaluate(model),
                    "lr": lr, **block_summary(model), "refined": refined,
                    **growth_columns(config, model, grown), "params": count_parameters(model),
                    "schedule_epochs": config.epochs,  # the length its schedule had: shows an extended run
                }
                row.update(task.select(epoch, row, model))
                row.update(task.throughput(train_time))
                row.update({"train_time": train_time, "train_cpu_time": train_cpu_time, "epoch_time": time.perf_counter() - tic, "total_time": 0.0,
                            "threads": torch.get_num_threads(), "world_size": ddp.world_size if ddp is not None else 1})
                # epoch_time: training and evaluation; the checkpoint write after it counts in total_time
                row["total_time"] = elapsed + row["epoch_time"]
                row["cpu_time"] = time.process_time() - cpu_tic
                row.update(self.flop_counter.epoch_columns(  # after every timing: counting costs no epoch time
                    model, task.flop_probes, eval_scheme=config.eval_scheme, eval_n_steps=config.eval_n_steps,
                    log=self.log))
                history.append(check_row(row))  # every column a registered metric (contdepth.train.metrics)
                if run_dir is not None:
                    append_metrics(run_dir, row, sync=task.sync_metrics)
                    task.save(run_dir, epoch, final=epoch == config.epochs or task.stopped)
                elapsed += time.perf_counter() - tic
                task.report(row)
                for callback in callbacks:
                    callback(row, model, optimizer)
        final = task.final_model(model)
        result = task.result(config=config, model=final, history=history, run_dir=run_dir,
                             num_params=count_parameters(final), total_time=elapsed,
                             wall_time=time.perf_counter() - self.wall_start)
        self.log(result.summary())
        return result


def train(config: TrainConfig, *, dataset=None, callbacks: Sequence[Callback] = (),
          model: nn.Module | None = None) -> RunResult:
    """Run ``config`` (see [`Trainer`][contdepth.train.Trainer]): images, or node classification for a graph
    dataset (``is_graph``), or language modelling for a text dataset (``is_text``)."""
    return Trainer(config, dataset=dataset, callbacks=callbacks, model=model).run()

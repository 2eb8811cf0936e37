"""Language modelling: next-byte prediction on a text dataset, counted in steps.

The task the one loop ([`Trainer`][contdepth.train.Trainer]) runs for a text dataset
(`contdepth.data.TextDataset`). A text run is sized by its steps (its token budget is
``max_steps x batch_size x context``), not by passes over the corpus, so an "epoch" here is
``eval_every`` training steps: after each, the loop evaluates the validation and test splits
on their *fixed* samples (`TextDataset.eval_batches`), writes a metrics row and a checkpoint
(which ``--resume`` continues from, bitwise). ``--epochs``, ``--refine-at``,
``--warmup-epochs`` and ``--milestones`` count these evaluations.

Step ``g``'s batch is a pure function of ``(seed, g)`` (`TextDataset.train_batch`), so a
resumed run draws what the uninterrupted one drew. Losses are in nats per byte (the mean
next-byte cross-entropy); the rows add bits per byte (``/ ln 2``) and the training throughput
in tokens (bytes) per second of the training pass. Under ``torchrun`` each process takes its
share of every global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError
from .config_checks import DEFAULT_EVAL_EVERY
from .cost import Probe, batch_counts
from .evaluate import evaluate, model_context
from .images import AUTOCAST_DTYPES
from .optim import LRSchedule, clip_gradients
from .progress import Progress
from .runs import RunResult, TrainingDiverged, count_parameters
from .task import Task

LN2 = math.log(2.0)


class LanguageModeling(Task):
    """Next-byte cross-entropy on windows of ``context + 1`` bytes; the returned model is the last step's."""

    def check(self) -> None:
        if self.config.patience is not None:
            raise ConfigError("patience: early stopping is for graph datasets; a text run is sized by --max-steps and "
                              "chosen on its validation loss")
        if self.config.label_smoothing:
            raise ConfigError("label_smoothing: a text run reports the plain next-byte cross-entropy in nats per "
                              "byte; smoothing the target would change what is optimised: leave it 0")

    @property
    def eval_every(self) -> int:
        return self.config.eval_every or DEFAULT_EVAL_EVERY

    def setup(self, device: torch.device) -> None:
        config, ddp = self.config, self.loop.distributed
        self.device = device
        self.context = model_context(self.loop.model)
        world = ddp.world_size if ddp is not None else 1
        if config.batch_size % world:
            raise ConfigError(f"batch_size: {config.batch_size} windows do not split evenly over {world} processes")
        self.local_batch = config.batch_size // world
        self.rank, self.world = (ddp.rank if ddp is not None else 0), world
        for split in self.dataset.splits:  # a window longer than a split: one line naming it, before any step
            self.dataset.num_eval_windows(split, self.context)
        self.steps_per_epoch = self.eval_every

    def describe(self, model: nn.Module) -> list[str]:
        config = self.config
        steps = config.epochs * self.steps_per_epoch
        tokens = steps * config.batch_size * self.context
        return [f"{config.model} on {config.data}, {count_parameters(model):,} parameters, {steps:,} steps of "
                f"{config.batch_size} windows of {self.context} bytes ({tokens:,} tokens), evaluated every "
                f"{self.steps_per_epoch} steps", self.dataset.describe()]

    def train_epoch(self, net: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                    epoch: int) -> tuple[float, float, float]:
        config, loop, dataset = self.config, self.loop, self.dataset
        net.train()
        steps = self.steps_per_epoch
        first_step = (epoch - 1) * steps
        lr_first = schedule.lrs(first_step)[0]
        autocast_dtype = AUTOCAST_DTYPES.get(config.precision)
        scaler = loop.grad_scaler
        total_loss, correct, count = 0.0, 0, 0
        mine = slice(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)
        with Progress(steps, f"evaluation {epoch}/{config.epochs}", enabled=not loop.quiet) as progress:
            for k in range(steps):
                step = first_step + k
                schedule.apply(optimizer, step)
                x, y = dataset.train_batch(config.batch_size, self.context, seed=config.seed, step=step,
                                           device=self.device)
                x, y = x[mine], y[mine]  # this process's share of the global batch
                with torch.autocast(self.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    logits = net(x)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    clip_gradients(net, optimizer, config.grad_clip, scaler)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    clip_gradients(net, optimizer, config.grad_clip)
                    optimizer.step()
                n, right, value = y.numel(), int((logits.detach().argmax(dim=-1) == y).sum()), float(loss.detach())
                if loop.distributed is not None:
                    summed, right, n = loop.distributed.sum([value * n, right, n])
                    value = summed / n
                if not math.isfinite(value):
                    where = (f"the last good checkpoint (evaluation {epoch - 1}) is in {config.out}; "
                             if config.out else "")
                    raise TrainingDiverged(f"lr: training diverged at step {step + 1} (loss {value}); {where}"
                                           "try a smaller lr or --grad-clip 1")
                total_loss += value * n
                correct += int(right)
                count += int(n)
                progress.update(1, loss=f"{total_loss / count:.4f}")
        return total_loss / max(count, 1), correct / max(count, 1), lr_first

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        config, out = self.config, {}
        for split in self.dataset.splits[1:]:  # val (when there is one), then test
            loss, accuracy = evaluate(model, self.dataset, config.eval_batch_size, scheme=config.eval_scheme,
                                      n_steps=config.eval_n_steps, split=split, device=self.device,
                                      distributed=self.loop.distributed)
            out.update({f"{split}_loss": loss, f"{split}_accuracy": accuracy, f"{split}_bits_per_byte": loss / LN2})
        return out

    def throughput(self, train_time: float) -> dict[str, float]:
        tokens = self.steps_per_epoch * self.config.batch_size * self.context
        return {"tokens_per_second": tokens / train_time} if train_time > 0 else {}

    def flop_probes(self, *, train: bool) -> list[Probe]:
        """Training: every step's ``(local batch, context)`` windows on every process; evaluation: the
        fixed samples of the held-out splits in ``eval_batch_size`` batches."""
        def tokens(b: int) -> torch.Tensor:
            return torch.empty((b, self.context), dtype=torch.int64, device="meta")

        if train:
            return [Probe((tokens(self.local_batch),), self.steps_per_epoch * self.world)]
        probes = []
        for split in self.dataset.splits[1:]:
            windows = self.dataset.num_eval_windows(split, self.context)
            probes += [Probe((tokens(b),), n) for b, n in batch_counts(windows, self.config.eval_batch_size).items()]
        return probes

    def report(self, row: dict) -> None:
        """``step S/T  train loss ... val ... test ... lr ... tok/s seconds``: a text run counts steps."""
        steps, total = row["epoch"] * self.steps_per_epoch, self.config.epochs * self.steps_per_epoch
        parts = [f"step {steps:>{len(str(total))}}/{total}  train {row['train_loss']:.4f}"]
        if "val_loss" in row:
            parts.append(f"val {row['val_loss']:.4f} nats/byte ({row['val_bits_per_byte']:.3f} bpb)")
        parts.append(f"test {row['test_loss']:.4f} ({row['test_bits_per_byte']:.3f} bpb)  lr {row['lr']:.4g}")
        if row.get("n_steps"):
            parts.append(f"steps {row['n_steps']}" + (" (refined)" if row.get("refined") else ""))
        if "tokens_per_second" in row:
            parts.append(f"{row['tokens_per_second']:,.0f} tok/s")
        self.loop.log("  ".join(parts) + f"  {row['epoch_time']:.1f}s")

    def result(self, **fields) -> RunResult:
        return TextRunResult(**fields)


class TextRunResult(RunResult):
    """A text run's result: its summary reports the final losses in nats and bits per byte."""

    def summary(self) -> str:
        last = self.history[-1] if self.history else {}
        rows = [("run", str(self.run_dir) if self.run_dir else "(not saved)"),
                ("model", f"{self.config.model} on {self.config.data}")]
        for split in ("val", "test"):
            if f"{split}_loss" in last:
                rows.append((f"final {split} loss", f"{last[f'{split}_loss']:.4f} nats/byte "
                                                    f"({last[f'{split}_bits_per_byte']:.4f} bits/byte)"))
        rows += [("parameters", f"{self.num_params:,}"), ("training time", f"{self.total_time:.1f}s")]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

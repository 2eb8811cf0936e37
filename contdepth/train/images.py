"""Image classification: mini-batch training, the model of the last epoch.

The task the one loop ([`Trainer`][contdepth.train.Trainer]) runs for image datasets:
an epoch is a pass over ``train.epoch_batches(e - 1)``, whose order and augmentation are a
function of ``(seed, e)``; the learning rate is set from the global step before every
optimizer step; the validation split (when held out) and the test split are evaluated after
it at the ``eval_scheme``/``eval_n_steps`` manifestation. Under ``torchrun`` each process
trains on its shard and the loss and accuracy are summed over processes. The checkpoint of
every epoch holds the training state, which is what ``--resume`` continues from.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError
from .cost import Probe, batch_counts, image_probes
from .evaluate import evaluate
from .optim import LRSchedule, clip_gradients
from .progress import Progress
from .runs import TrainingDiverged, count_parameters, epoch_line
from .task import Task


#: ``TrainConfig.precision`` -> the dtype the training steps autocast to (fp32: none).
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class ImageClassification(Task):
    """Mini-batch cross-entropy on ``dataset``'s train split; the returned model is the last epoch's."""

    def check(self) -> None:
        if self.config.patience is not None:
            raise ConfigError(f"patience: early stopping is for graph datasets (full-batch, one step per epoch); "
                              f"{self.config.data!r} is an image dataset: choose the epochs on its validation split")

    def setup(self, device: torch.device) -> None:
        config, ddp = self.config, self.loop.distributed
        self.device = device
        self.local_batch = ddp.local_batch_size(config.batch_size) if ddp is not None else config.batch_size
        shard = {} if ddp is None else {"num_replicas": ddp.world_size, "rank": ddp.rank}
        self.batches = self.dataset.batches("train", self.local_batch, seed=config.seed, device=device, **shard)
        self.steps_per_epoch = len(self.batches)

    def describe(self, model: nn.Module) -> list[str]:
        config, ddp = self.config, self.loop.distributed
        lines = [f"{config.model} on {config.data}, {count_parameters(model):,} parameters, "
                 f"{config.epochs} epochs x {self.steps_per_epoch} steps of {config.batch_size}"]
        if ddp is not None:
            lines.append(f"data-parallel: {ddp.world_size} processes ({ddp.backend}), global batch "
                         f"{config.batch_size} = {ddp.world_size} x {self.local_batch} per process, "
                         f"{self.steps_per_epoch} steps per epoch")
        return lines

    def train_epoch(self, net: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                    epoch: int) -> tuple[float, float, float]:
        config, loop = self.config, self.loop
        net.train()
        steps = self.steps_per_epoch
        first_step = (epoch - 1) * steps
        total_loss, correct, count, skipped = 0.0, 0, 0, 0
        lr_first = schedule.lrs(first_step)[0]
        autocast_dtype = AUTOCAST_DTYPES.get(config.precision)
        scaler = loop.grad_scaler
        with Progress(steps, f"epoch {epoch}/{config.epochs}", enabled=not loop.quiet) as progress:
            for k, (xb, yb) in enumerate(self.batches.epoch_batches(epoch - 1)):
                schedule.apply(optimizer, first_step + k)
                if config.channels_last and xb.dim() == 4:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with torch.autocast(self.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    logits = net(xb)
                # the loss in float32 (log-softmax of 16-bit logits loses digits)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:  # fp16: scale the loss so small gradients do not flush to zero
                    scaler.scale(loss).backward()
                    clip_gradients(net, optimizer, config.grad_clip, scaler)
                    scale = scaler.get_scale()
                    scaler.step(optimizer)
                    scaler.update()
                    skipped += scaler.get_scale() < scale  # inf/NaN gradients: the step was skipped
                else:
                    loss.backward()
                    clip_gradients(net, optimizer, config.grad_clip)
                    optimizer.step()
                n, right = len(yb), int((logits.detach().argmax(dim=1) == yb).sum())
                value = float(loss.detach())
                if loop.distributed is not None:  # every rank sees the global numbers, so all stop together
                    summed, right, n = loop.distributed.sum([value * n, right, n])
                    value = summed / n
                if not math.isfinite(value):
                    raise TrainingDiverged(f"lr: training diverged at epoch {epoch}, step {k + 1} (loss {value}); "
                                           f"{self.diverged_hint(epoch)}")
                total_loss += value * n
                correct += int(right)
                count += int(n)
                progress.update(1, loss=f"{total_loss / count:.4f}", acc=f"{100 * correct / count:.1f}%")
        if scaler is not None and skipped == steps:
            raise TrainingDiverged(f"lr: every step of epoch {epoch} had non-finite gradients in fp16 (the GradScaler "
                                   f"skipped all {steps} and cut its scale to {scaler.get_scale():.3g}); "
                                   f"{self.diverged_hint(epoch)}, or precision bf16/fp32")
        return total_loss / max(count, 1), correct / max(count, 1), lr_first

    def diverged_hint(self, epoch: int) -> str:
        """What to do after a divergence, and what is on disk."""
        if self.config.out is None:
            return "try a smaller lr"
        return (f"the last good checkpoint (epoch {epoch - 1}) is in {self.config.out}; try a smaller lr "
                "(a new run, or --overwrite)")

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        config = self.config
        held_out = {}
        for split in self.dataset.splits[1:]:  # val (when held out), then test
            loss, accuracy = evaluate(model, self.dataset, config.eval_batch_size, scheme=config.eval_scheme,
                                      n_steps=config.eval_n_steps, split=split, device=self.device,
                                      distributed=self.loop.distributed)
            held_out.update({f"{split}_loss": loss, f"{split}_accuracy": accuracy})
        return held_out

    def flop_probes(self, *, train: bool) -> list[Probe]:
        """Training: each process's ``N // W`` samples in local batches, times ``W`` processes;
        evaluation: each held-out split, every process's shard in ``eval_batch_size`` batches."""
        ddp = self.loop.distributed
        world = ddp.world_size if ddp is not None else 1
        if train:
            counts = batch_counts(self.batches.num_samples, self.local_batch)
            return image_probes({b: world * n for b, n in counts.items()}, self.dataset.train_x.shape[1:])
        probes = []
        for split in self.dataset.splits[1:]:  # the splits `evaluate` passes over
            x = getattr(self.dataset, f"{split}_x")
            counts: dict[int, int] = {}
            for rank in range(world):  # evaluation shards: rank, rank + W, ... (sizes differ by at most one)
                for b, n in batch_counts(len(range(rank, len(x), world)), self.config.eval_batch_size).items():
                    counts[b] = counts.get(b, 0) + n
            probes += image_probes(counts, x.shape[1:])
        return probes

    def report(self, row: dict) -> None:
        evaluation = f"test loss {row['test_loss']:.4f} acc {100 * row['test_accuracy']:6.2f}%"
        if "val_accuracy" in row:
            evaluation = f"val acc {100 * row['val_accuracy']:6.2f}%  " + evaluation
        self.loop.log(epoch_line(row, self.config.epochs, evaluation, f"{row['epoch_time']:.1f}s"))

"""Compression: project a trained model onto fewer basis functions and steps.

Each block's ``theta(t)`` (weights and normalisation statistics) is replaced by its L2-best
approximation on ``K`` basis functions and integrated with ``M`` steps.  Fewer functions
mean fewer parameters; fewer steps mean fewer rate evaluations, i.e. faster inference.
How much accuracy that costs is measured, and optionally won back by a short
fine-tuning run that starts from the projected weights.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from torch import nn

from ..common.files import atomic_write_text
from ..models.layers import check_block_size
from ..nn import continuous_blocks
from ..train import ConfigError, load_checkpoint, save_checkpoint
from ..train.config import EVAL_BATCH_SIZE, check_device
from ..train.evaluate import evaluate
from ..train.options import Compress
from ..train.rundir import check_run_dir, locked_run_dir, prepare_run_dir
from ..train.trainer import load_data, train
from .latency import measure_latency, time_calls


def _per_block(value: int | Sequence[int], n_blocks: int, name: str) -> list[int]:
    values = [value] * n_blocks if isinstance(value, int) and not isinstance(value, bool) else list(value)
    if len(values) != n_blocks:
        raise ValueError(f"{name}: give one integer or one per block ({n_blocks}), got {len(values)}")
    for v in values:
        check_block_size(v, name)  # bounded (contdepth.nn.MAX_N_*): a typo of 10**9 steps must not hang
    return values


def compress(model: nn.Module, n_basis: int | Sequence[int], n_steps: int | Sequence[int] | None = None) -> nn.Module:
    """A copy of ``model`` with every block projected onto ``n_basis`` functions, ``n_steps`` steps.

    ``n_steps`` defaults to ``n_basis``; either may be one value or one per block.  The
    original model is not touched.  ``n_basis`` may not exceed a block's current size:
    that would not compress, and refinement (``contdepth.nn.refine``) is the exact way up.
    """
    blocks = continuous_blocks(model)
    if not blocks:
        raise ValueError("model: contains no ContinuousBlock to compress")
    sizes = _per_block(n_basis, len(blocks), "n_basis")
    steps = sizes if n_steps is None else _per_block(n_steps, len(blocks), "n_steps")
    for i, (block, k) in enumerate(zip(blocks, sizes)):
        if k > block.n_basis:
            raise ValueError(f"n_basis: block {i + 1} has {block.n_basis} basis functions; compression needs "
                             f"n_basis <= {block.n_basis}, got {k}")
    compressed = copy.deepcopy(model)
    for block, k, m in zip(continuous_blocks(compressed), sizes, steps):
        block.project(k, m)
    return compressed


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (basis coefficients count once per function)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class CompressionReport:
    """Before and after a compression; accuracies are fractions, latencies median seconds."""

    source: str | None
    n_basis_before: list[int]
    n_steps_before: list[int]
    n_basis_after: list[int]
    n_steps_after: list[int]
    params_before: int
    params_after: int
    accuracy_before: float
    accuracy_projected: float
    accuracy_after: float
    finetune_epochs: int = 0
    finetune_time_s: float = 0.0
    latency_before: dict[int, float] = field(default_factory=dict)
    latency_after: dict[int, float] = field(default_factory=dict)
    threads: int | None = None
    latency_label: str = "batch"  # latency keys are batch sizes, or node counts ("full graph of")
    # the same on the validation split, where the run holds one out (None: it has none)
    val_accuracy_before: float | None = None
    val_accuracy_projected: float | None = None
    val_accuracy_after: float | None = None

    def speedup(self, batch_size: int) -> float:
        """``latency_before / latency_after`` at ``batch_size`` (``nan`` when not measured)."""
        before, after = self.latency_before.get(batch_size), self.latency_after.get(batch_size)
        return before / after if before and after else math.nan

    def to_dict(self) -> dict:
        out = asdict(self)
        out["latency_before"] = {str(k): v for k, v in self.latency_before.items()}
        out["latency_after"] = {str(k): v for k, v in self.latency_after.items()}
        out["speedup"] = {str(b): self.speedup(b) for b in self.latency_before}
        return out

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=True) + "\n")
        return path

    def format(self) -> str:
        """The table ``contdepth compress`` prints."""
        rows = [
            ("", "before", "after"),
            ("n_basis per block", str(self.n_basis_before), str(self.n_basis_after)),
            ("n_steps per block", str(self.n_steps_before), str(self.n_steps_after)),
            ("parameters", f"{self.params_before:,}", f"{self.params_after:,} ({self.params_after / self.params_before:.2f}x)"),
            ("test accuracy", f"{100 * self.accuracy_before:.2f}%",
             f"{100 * self.accuracy_after:.2f}% ({100 * (self.accuracy_after - self.accuracy_before):+.2f} points)"),
        ]
        if self.val_accuracy_before is not None and self.val_accuracy_after is not None:
            rows.append(("validation accuracy", f"{100 * self.val_accuracy_before:.2f}%",
                         f"{100 * self.val_accuracy_after:.2f}% "
                         f"({100 * (self.val_accuracy_after - self.val_accuracy_before):+.2f} points)"))
        if self.finetune_epochs:
            rows.append(("  projected only", "", f"{100 * self.accuracy_projected:.2f}%"))
            rows.append(("  fine-tuning", "", f"{self.finetune_epochs} epochs, {self.finetune_time_s:.0f} s"))
        for b in sorted(self.latency_before):
            where = f"full graph of {b} nodes" if self.latency_label != "batch" else f"batch {b}"
            rows.append((f"latency, {where}", _ms(self.latency_before[b]),
                         f"{_ms(self.latency_after[b])} ({self.speedup(b):.2f}x faster)"))
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{a:<{width[0]}}  {b:>{width[1]}}  {c}" for a, b, c in rows]
        if self.latency_before:
            threads = f", {self.threads} threads" if self.threads else ""
            lines.append(f"(latency: median of round-robin repeats, eval mode, no autograd{threads})")
        return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.2f} ms"


def compress_run(run: str | Path, n_basis: int | Sequence[int], n_steps: int | Sequence[int] | None = None, *,
                 out: str | Path, finetune_epochs: int = 0, lr: float | None = None, overwrite: bool = False,
                 data_dir: str | None = None, batch_size: int = EVAL_BATCH_SIZE,
                 latency_batch_sizes: Sequence[int] = (1, 256), latency_repeats: int | None = None,
                 threads: int | None = None, device: str = "cpu", quiet: bool = False) -> CompressionReport:
    """Compress the model of run ``run`` into a new run ``out`` and measure what changed.

    The new run is an ordinary run directory (``contdepth eval out`` works on it) plus
    ``compression.json`` with the report.  With ``finetune_epochs`` the projected model
    is trained further with the source run's settings (cosine schedule from ``lr``,
    default a tenth of the source run's, no warm-up, no refinement).  Nothing in ``run``
    is modified; ``out`` must be new or empty unless ``overwrite``.
    """
    import time

    import torch


    options = Compress(n_basis=n_basis, n_steps=n_steps, finetune_epochs=finetune_epochs, lr=lr,  # one set of bounds
                       latency_batch_sizes=tuple(latency_batch_sizes), latency_repeats=latency_repeats)
    n_basis, n_steps, lr = options.n_basis, options.n_steps, options.lr
    check_device(device)
    out = Path(out)
    if out.resolve() == Path(run).resolve():
        raise ConfigError(f"out: {out} is the source run; the compressed model goes into a new run directory")
    check_run_dir(out, overwrite=overwrite, resume=False, resumable=False)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model, info = load_checkpoint(run, device=device)
        try:
            compressed = compress(model, n_basis, n_steps)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        config = info.train_config()
        if data_dir is not None:
            config = config.replace(data_dir=data_dir)
        dataset = load_data(config)
        blocks_before, blocks_after = continuous_blocks(model), continuous_blocks(compressed)
        report = CompressionReport(
            source=str(info.path.parent),
            n_basis_before=[b.n_basis for b in blocks_before], n_steps_before=[b.n_steps for b in blocks_before],
            n_basis_after=[b.n_basis for b in blocks_after], n_steps_after=[b.n_steps for b in blocks_after],
            params_before=count_parameters(model), params_after=count_parameters(compressed),
            accuracy_before=evaluate(model, dataset, batch_size, device=device)[1],
            accuracy_projected=evaluate(compressed, dataset, batch_size, device=device)[1],
            accuracy_after=math.nan, finetune_epochs=finetune_epochs, threads=torch.get_num_threads(),
        )
        # validation too where the run holds one out: compressed models are read on both splits (issue 27)
        has_val = "val" in getattr(dataset, "splits", ())

        def val_accuracy(m: nn.Module) -> float | None:
            return evaluate(m, dataset, batch_size, split="val", device=device)[1] if has_val else None

        report.val_accuracy_before, report.val_accuracy_projected = val_accuracy(model), val_accuracy(compressed)
        if finetune_epochs:
            tune = config.replace(
                epochs=finetune_epochs, refine_at=(), lr=float(lr) if lr is not None else config.lr / 10,
                schedule="cosine", warmup_epochs=0.0, milestones=(), eval_scheme=None, eval_n_steps=None,
                out=str(out), overwrite=overwrite, resume=False, quiet=quiet, threads=threads, device=device,
            )
            tic = time.perf_counter()
            result = train(tune, dataset=dataset, model=compressed)
            report.finetune_time_s = time.perf_counter() - tic
            compressed = result.model
            report.accuracy_after = evaluate(compressed, dataset, batch_size, device=device)[1]
            report.val_accuracy_after = val_accuracy(compressed)
        else:
            with locked_run_dir(out, overwrite=overwrite, resume=False):
                prepare_run_dir(out, overwrite=overwrite)
                save_checkpoint(out, compressed, None, epoch=info.epoch, history=info.history,
                                config=config.replace(resume=False, overwrite=False).to_dict())
            report.accuracy_after = report.accuracy_projected
            report.val_accuracy_after = report.val_accuracy_projected
        if latency_batch_sizes and getattr(dataset, "is_graph", False):
            # node classification: one forward is the whole graph, whatever the batch sizes say
            graph = dataset.to(device)
            timed = time_calls({"before": model, "after": compressed}, graph.inputs,
                               repeats=latency_repeats or 20, device=device)
            report.latency_before = {graph.num_nodes: timed["before"]}
            report.latency_after = {graph.num_nodes: timed["after"]}
            report.latency_label = "full graph of"
        elif latency_batch_sizes:
            shape = (dataset.channels, *dataset.image_size)
            timed = measure_latency({"before": model, "after": compressed}, shape, batch_sizes=latency_batch_sizes,
                                    repeats=latency_repeats, device=device)
            report.latency_before = {b: t.median_s for b, t in timed["before"].items()}
            report.latency_after = {b: t.median_s for b, t in timed["after"].items()}
        report.write_json(out / COMPRESSION_FILE)
        return report
    finally:
        torch.set_num_threads(previous_threads)


COMPRESSION_FILE = "compression.json"

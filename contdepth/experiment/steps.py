"""The after-training steps of one run: accuracy at other manifestations, and compression.

Both read the run's checkpoint and write nothing into its folder: the manifestation table
goes into the experiment's ``steps/`` record, the compressed model into its own run folder
(``compressed/ARM/seed-S``), which ``contdepth eval`` reads like any other.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..analysis import as_continuous
from ..analysis.compression import compress_run
from ..export.onnx import export_onnx, onnx_session
from ..nn import continuous_blocks
from ..train.checkpoint import load_checkpoint
from ..train.evaluate import evaluate
from ..train.rundir import folder_state
from ..train.trainer import load_data
from .folder import compressed_folder
from .spec import Arm, Evaluate


def limited(dataset, examples: int | None):
    """``dataset`` with its validation and test splits cut to their first ``examples`` images (a text
    dataset: its fixed evaluation samples cut to ``examples`` windows)."""
    if examples is None:
        return dataset
    if getattr(dataset, "is_text", False):
        return dataclasses.replace(dataset, eval_windows=min(dataset.eval_windows, examples))
    changes = {}
    for split in dataset.splits[1:]:
        x, y = getattr(dataset, f"{split}_x"), getattr(dataset, f"{split}_y")
        changes.update({f"{split}_x": x[:examples], f"{split}_y": y[:examples]})
    return dataclasses.replace(dataset, **changes)


def manifestation_accuracies(model: nn.Module, dataset, evaluate_step: Evaluate, *, batch_size: int,
                             device: str) -> dict[str, Any]:
    """``{"reading", "accuracy": {scheme: {n: {split: accuracy}}}, "loss" (the same shape), "trained", "seconds"}``
    over the step's grid (loss: mean cross-entropy, nats per byte for text).

    A model without ContinuousBlocks (a ResNet) is evaluated through its continuous reading.
    ``trained`` is ``{"graph", "accuracy": {split: accuracy}, "loss": {split: loss}}`` of the model as it was trained.
    """

    dataset = limited(dataset, evaluate_step.examples)
    splits = [s for s in evaluate_step.splits if s in dataset.splits]
    readable, reading = as_continuous(model)
    table: dict[str, dict[str, dict[str, float]]] = {}
    losses: dict[str, dict[str, dict[str, float]]] = {}
    tic = time.perf_counter()
    for scheme in evaluate_step.schemes:
        table[scheme], losses[scheme] = {}, {}
        for n in evaluate_step.steps:
            measured = {split: evaluate(readable, dataset, batch_size, scheme=scheme, n_steps=n, split=split,
                                        device=device) for split in splits}
            table[scheme][str(n)] = {split: accuracy for split, (_, accuracy) in measured.items()}
            losses[scheme][str(n)] = {split: loss for split, (loss, _) in measured.items()}
    # the graph it was trained as (a ResNet: itself, not its reading), for the gap to the ODE limit (readouts.py)
    own = {split: evaluate(model, dataset, batch_size, split=split, device=device) for split in splits}
    trained = {"graph": training_graph(readable), "accuracy": {split: acc for split, (_, acc) in own.items()},
               "loss": {split: loss for split, (loss, _) in own.items()}}
    return {"reading": reading, "accuracy": table, "loss": losses, "trained": trained,
            "examples": evaluate_step.examples, "seconds": time.perf_counter() - tic}


def training_graph(model: nn.Module) -> str:
    """``"scheme x n_steps"`` of the model's own manifestation; one entry per block where the blocks differ."""
    graphs = [f"{b.scheme.name} x {b.n_steps}" for b in continuous_blocks(model)]
    return graphs[0] if len(set(graphs)) == 1 else "; ".join(graphs)


def onnx_latency(models: Mapping[str, nn.Module], input_shape: Sequence[int], batch_sizes: Sequence[int], *,
                 repeats: int | None, threads: int, warmup: int = 3) -> dict[str, dict[int, float]]:
    """Median seconds per call of each model exported to ONNX and run in ONNX Runtime, round-robin.

    Each model is exported at its own manifestation with a dynamic batch into a temporary
    folder; the sessions get ``threads`` intra-op threads, as the eager timing does.
    """
    import statistics

    import numpy as np


    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="contdepth-onnx-") as folder:
        sessions = {}
        for name, model in models.items():
            path = Path(folder) / f"{name}.onnx"
            was_training = model.training
            model.eval()
            try:
                export_onnx(model, torch.zeros(2, *input_shape), path)
            finally:
                model.train(was_training)
            sessions[name] = onnx_session(path, threads=threads)
        out: dict[str, dict[int, float]] = {name: {} for name in models}
        for b in batch_sizes:
            x = torch.randn(b, *input_shape, generator=generator).numpy().astype(np.float32)
            n = repeats if repeats is not None else (50 if b <= 16 else 10)
            samples: dict[str, list[float]] = {name: [] for name in models}
            for name, session in sessions.items():
                feed = {session.get_inputs()[0].name: x}
                for _ in range(warmup):
                    session.run(None, feed)
            for _ in range(n):
                for name, session in sessions.items():
                    feed = {session.get_inputs()[0].name: x}
                    tic = time.perf_counter()
                    session.run(None, feed)
                    samples[name].append(time.perf_counter() - tic)
            for name in models:
                out[name][b] = statistics.median(samples[name])
    return out


def run_steps(arm: Arm, run_dir: Path, folder: str | Path, seed: int, *, device: str, threads: int,
              data_dir: str | None) -> dict[str, Any]:
    """The steps ``arm`` asks for, on the finished run in ``run_dir``."""

    record: dict[str, Any] = {}
    model, info = load_checkpoint(run_dir, device=device)
    config = info.train_config()
    if data_dir is not None:
        config = config.replace(data_dir=data_dir)
    needs_data = arm.evaluate is not None or (arm.compress is not None and arm.compress.onnx)
    dataset = load_data(config) if needs_data else None  # compress_run reads its own
    if arm.evaluate is not None:
        record["manifestations"] = manifestation_accuracies(model, dataset, arm.evaluate,
                                                            batch_size=config.eval_batch_size, device=device)
    if arm.compress is not None:
        c = arm.compress
        out = compressed_folder(folder, arm.name, seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        report = compress_run(run_dir, c.n_basis, c.n_steps, out=out, finetune_epochs=c.finetune_epochs,
                              lr=c.lr, overwrite=folder_state(out) == "run", data_dir=data_dir,
                              latency_batch_sizes=c.latency_batch_sizes, latency_repeats=c.latency_repeats,
                              threads=threads, device=device, quiet=True)
        record["compression"] = report.to_dict()
        if c.onnx:
            compressed, _ = load_checkpoint(out, device="cpu")
            source = model.to("cpu")
            shape = (dataset.channels, *dataset.image_size)
            timed = onnx_latency({"before": source, "after": compressed}, shape, c.latency_batch_sizes,
                                 repeats=c.latency_repeats, threads=threads)
            record["compression"]["onnx_latency_before"] = {str(b): v for b, v in timed["before"].items()}
            record["compression"]["onnx_latency_after"] = {str(b): v for b, v in timed["after"].items()}
            record["compression"]["onnx_speedup"] = {
                str(b): timed["before"][b] / timed["after"][b] if timed["after"][b] > 0 else None
                for b in timed["before"]}
    return record


__all__ = ["limited", "manifestation_accuracies", "onnx_latency", "run_steps", "training_graph"]

"""Inference latency of several models, measured side by side.

Models are timed in round-robin order (one call of each, repeated), so a change in the
machine's load during the measurement touches all of them alike and their *ratios* stay
meaningful on a shared or throttling machine.  Medians, not means: one descheduled call
should not move the result.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from ..common.validate import check_int


@dataclass(frozen=True)
class Latency:
    """Median seconds per forward pass at one batch size, and the samples per second it implies."""

    batch_size: int
    median_s: float
    repeats: int

    @property
    def throughput(self) -> float:
        return self.batch_size / self.median_s


def measure_latency(models: Mapping[str, nn.Module], input_shape: Sequence[int], *,
                    batch_sizes: Sequence[int] = (1, 256), repeats: int | None = None, warmup: int = 3,
                    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    seed: int = 0) -> dict[str, dict[int, Latency]]:
    """``result[name][batch_size]``: median latency of each model in eval mode, no autograd.

    ``input_shape`` is one example's shape (e.g. ``(1, 28, 28)``).  ``repeats`` defaults
    to 50 calls per model at batch sizes up to 16 and 10 above; the models' train/eval
    modes are restored afterwards.
    """
    if not models:
        raise ValueError("models: give at least one model to time")
    for b in batch_sizes:
        check_int(b, "batch_sizes", low=1)
    check_int(repeats, "repeats", low=1, allow_none=True)
    generator = torch.Generator().manual_seed(seed)
    results: dict[str, dict[int, Latency]] = {name: {} for name in models}
    for b in batch_sizes:
        x = torch.randn(b, *input_shape, generator=generator, dtype=dtype).to(device)
        n = repeats if repeats is not None else (50 if b <= 16 else 10)
        for name, seconds in time_calls(models, (x,), repeats=n, warmup=warmup, device=device).items():
            results[name][b] = Latency(b, seconds, n)
    return results


def time_calls(models: Mapping[str, nn.Module], inputs: tuple, *, repeats: int, warmup: int = 3,
               device: str | torch.device = "cpu") -> dict[str, float]:
    """Median seconds of ``model(*inputs)`` for each model, called round-robin in eval mode.

    The general form of [`measure_latency`][contdepth.analysis.measure_latency], for inputs that are not one image batch
    (a graph's features and adjacency, for instance).  Train/eval modes are restored.
    """
    modes = {name: m.training for name, m in models.items()}
    samples: dict[str, list[float]] = {name: [] for name in models}
    try:
        for m in models.values():
            m.eval()
        with torch.inference_mode():
            for m in models.values():
                for _ in range(warmup):
                    m(*inputs)
            for _ in range(repeats):
                for name, m in models.items():
                    _sync(device)
                    tic = time.perf_counter()
                    m(*inputs)
                    _sync(device)
                    samples[name].append(time.perf_counter() - tic)
    finally:
        for name, m in models.items():
            m.train(modes[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def _sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)

"""Shared by the benchmark scripts: stable allocator settings and interleaved timing.

Import this before torch.  Nothing here imports torch, so the re-exec can happen
before any allocation is made.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

# glibc returns large blocks to the OS and maps new ones on every allocation unless told
# otherwise; for conv-sized tensors the page faults then dominate the timings.
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(2**30),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
}
REEXEC_MARK = "CONTDEPTH_BENCH_REEXEC"


def reexec_with_allocator_env(script: str) -> None:
    """Re-run ``script`` with the allocator settings when they are not in the environment."""
    missing = {k: v for k, v in ALLOCATOR_ENV.items() if k not in os.environ}
    if not missing or os.environ.get(REEXEC_MARK):
        return
    os.environ.update(missing)  # os.environ writes through to the C environment execv passes on
    os.environ[REEXEC_MARK] = "1"
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, os.path.abspath(script), *sys.argv[1:]])


def allocator_note() -> str:
    env = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in ALLOCATOR_ENV)
    how = "set by this script (re-executed)" if os.environ.get(REEXEC_MARK) else "from the caller's environment"
    return f"{env} [{how}]"


@dataclass
class Timing:
    median: float
    spread: float  # half the inter-quartile range, relative to the median


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def time_round_robin(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, min_sample_s: float, reference: str
) -> dict[str, Timing]:
    """Median seconds per call of each function, timed in rotating round-robin order.

    Interleaving puts machine drift on every contender alike; each sample runs the same
    number of calls for every contender, enough for the reference to last ``min_sample_s``.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    start = time.perf_counter()
    fns[reference]()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, math.ceil(min_sample_s / once))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                elapsed = time.perf_counter() - start
            finally:
                gc.enable()
            samples[name].append(elapsed / number)
    out = {}
    for name, values in samples.items():
        med = statistics.median(values)
        lo, hi = _quartiles(values)
        out[name] = Timing(med, (hi - lo) / 2 / med if med > 0 else 0.0)
    return out


def fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:7.3f} s "
    if seconds >= 1e-3:
        return f"{seconds * 1e3:7.2f} ms"
    return f"{seconds * 1e6:7.1f} us"

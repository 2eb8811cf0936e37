"""Memory measurement shared by the benchmarks (imports torch: import after the allocator re-exec).

Two views of a forward+backward: the peak of live CPU tensor memory from the profiler's
allocator events, and the bytes autograd keeps for backward (saved tensors).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from typing import Callable

import torch

Tensor = torch.Tensor


@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level stderr (the profiler's start/stop log lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_allocated_bytes(fn: Callable[[], object]) -> float | None:
    """Peak of live CPU tensor bytes during ``fn()`` above what was live before it.

    Read from the PyTorch profiler's allocator events (``profile_memory=True``): every
    allocation and free by PyTorch's CPU allocator, in time order; the running sum's
    maximum is the peak.  None when this torch exposes no such events.
    """
    try:
        from torch.profiler import ProfilerActivity, profile

        gc.collect()
        with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = fn()
            del result
        events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]"]
    except Exception:
        return None
    if not events:
        return None
    live = peak = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        live += nbytes
        peak = max(peak, live)
    return float(peak)


def saved_for_backward_bytes(forward: Callable[[], Tensor]) -> float:
    """Bytes of the distinct storages autograd saves for backward during ``forward()``.

    Counted with ``torch.autograd.graph.saved_tensors_hooks``: every tensor the graph
    keeps (activations, step inputs kept by checkpointing, weights) passes the pack
    hook; storages are deduplicated by address (a saved storage cannot be freed and
    its address reused while the graph is alive).
    """
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return float(sum(seen.values()))



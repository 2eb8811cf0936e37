"""What a run will hold, checked on the ``meta`` model before anything is allocated or trained.

Why: the options bound each number on its own (``n_basis`` at most `MAX_N_BASIS`, ``n_steps``
at most `MAX_N_STEPS`), but two kinds of size only show when the numbers meet:

* **refinement** doubles a block's steps and (about) doubles its basis at each epoch of
  ``refine_at``. ``--n-steps 2100 --refine-at 2`` is 4,200 steps from epoch 2 on, past the
  limit, and ``--n-basis 300 --refine-at 2`` trains 600 cells and saves a checkpoint that
  the checkpoint reader (which holds every run to the same limits) refuses: a run must never
  write what it cannot read back. Each refinement's sizes are computed from the blocks'
  bases (`DepthBasis.refined_size`), without refining anything;
* **memory**: ``--alpha 1000000`` builds a model of 10**15 parameters; on the ``meta``
  device that costs nothing, so the parameters are counted there (and the coefficients a
  refinement adds) and a run whose weights, gradients and optimizer state alone exceed the
  machine's memory (or the GPU's) is refused with the numbers, instead of an allocator's
  traceback. Activations are not counted: they depend on the batch, and a run that fits
  here may still need a smaller ``batch_size``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..common.errors import OptionError
from ..basis import DepthBasis
from ..common.files import read_regular_text
from ..nn import MAX_N_BASIS, MAX_N_STEPS, continuous_blocks
from .config import TrainConfig

# Per-parameter optimizer state tensors (parameter-shaped) of each optimizer as build_optimizer makes it.
_STATE_TENSORS = {"sgd": lambda c: 1 if c.momentum else 0, "adam": lambda c: 2, "adamw": lambda c: 2,
                  "rmsprop": lambda c: 1}
_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def final_basis(basis: DepthBasis, refine_at: Sequence[int]) -> DepthBasis:
    """The basis a block with ``basis`` has after every refinement of ``refine_at`` (nothing refined)."""
    for _ in refine_at:
        basis = basis.with_size(basis.refined_size())
    return basis


def check_refinements(model: nn.Module, config: TrainConfig) -> None:
    """Refuse ``refine_at`` if any refinement takes a block past `MAX_N_STEPS` steps or `MAX_N_BASIS` functions."""
    for index, block in enumerate(continuous_blocks(model)):
        basis, n_steps = block.basis, block.n_steps
        for count, epoch in enumerate(config.refine_at, start=1):
            n_basis, n_steps = basis.refined_size(), 2 * n_steps
            problem = None
            if n_steps > MAX_N_STEPS:
                problem = f"{n_steps:,} steps, more than the {MAX_N_STEPS:,} a block may have"
            elif n_basis > MAX_N_BASIS:
                problem = (f"{n_basis:,} basis functions, more than the {MAX_N_BASIS:,} a block may have (its "
                           "checkpoints could not be read back)")
            if problem is not None:
                raise OptionError("refine_at", f"refinement {count} (at the start of epoch {epoch}) would give block "
                                               f"{index} ({block.basis.n} functions, {block.n_steps} steps to begin "
                                               f"with) {problem}; refine fewer times or start smaller")
            basis = basis.with_size(n_basis)


def refined_bytes(model: nn.Module, config: TrainConfig) -> tuple[int, int, int]:
    """``(parameters, parameter bytes, buffer bytes)`` of ``model`` after every refinement of ``config``.

    A block's coefficients and depth-dependent state hold one slice per basis function, so
    they grow with the basis; everything else keeps its size. Call `check_refinements` first.
    """
    growth: dict[int, tuple[int, int]] = {}  # id(tensor) -> (functions now, functions after refining)
    for block in continuous_blocks(model):
        final = final_basis(block.basis, config.refine_at)
        for _, tensor in [*block.coefficient_items(), *block.state_items()]:
            growth[id(tensor)] = (block.basis.n, final.n)

    def numel(tensor: torch.Tensor) -> int:
        now, after = growth.get(id(tensor), (1, 1))
        return tensor.numel() // now * after

    parameters = [p for p in model.parameters() if p.requires_grad]
    count = sum(numel(p) for p in parameters)
    parameter_bytes = sum(numel(p) * p.element_size() for p in parameters)
    frozen = sum(numel(p) * p.element_size() for p in model.parameters() if not p.requires_grad)
    buffer_bytes = sum(numel(b) * b.element_size() for b in model.buffers()) + frozen
    return count, parameter_bytes, buffer_bytes


def memory_capacity(device: str) -> tuple[int, str]:
    """``(bytes, what)``: the GPU's memory for a CUDA device, else the machine's (or its cgroup's limit)."""
    target = torch.device(device)
    if target.type == "cuda":
        index = target.index if target.index is not None else 0
        return torch.cuda.get_device_properties(index).total_memory, f"GPU {device}"
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf: nothing known to compare with
        return 0, "this machine"
    what = "this machine"
    for path in _CGROUP_LIMITS:
        try:
            limit = int(read_regular_text(path, "a cgroup memory limit").strip())
        except ValueError:  # "max", or no such cgroup file (an OptionError, a ValueError)
            continue
        if 0 < limit < total:
            total, what = limit, "this process's memory limit (cgroup)"
    return total, what


def check_memory(model: nn.Module, config: TrainConfig) -> None:
    """Refuse a run whose weights, gradients and optimizer state (after refinements) exceed the memory there is."""
    count, parameter_bytes, buffer_bytes = refined_bytes(model, config)
    states = _STATE_TENSORS.get(config.optimizer, lambda c: 2)(config)
    needed = parameter_bytes * (2 + states) + buffer_bytes  # weights, gradients, optimizer state, buffers
    capacity, what = memory_capacity(config.device)
    if capacity and needed > capacity:
        after = f" after the refinements at epochs {list(config.refine_at)}" if config.refine_at else ""
        raise OptionError("model_options", f"model {config.model!r} with {config.model_options or 'its defaults'} "
                                           f"has {count:,} trainable parameters{after}; their weights, gradients and "
                                           f"{config.optimizer} state need at least {_size(needed)}, more than the "
                                           f"{_size(capacity)} of {what}; choose a smaller model (alpha, widen, "
                                           "n_basis)")


def _size(n: int) -> str:
    for unit, scale in (("PB", 2**50), ("TB", 2**40), ("GB", 2**30), ("MB", 2**20)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


__all__ = ["check_memory", "check_refinements", "memory_capacity", "refined_bytes"]

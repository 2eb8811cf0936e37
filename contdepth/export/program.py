"""``torch.export`` of a static manifestation, and what every exporter here shares.

Exporters trace a *static* model (see [`freeze`][contdepth.export.freeze]): a model that still
has ContinuousBlocks is frozen at the requested manifestation first, so the captured graph
holds each stage's weights as plain tensors and no basis arithmetic.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from ..common.files import atomic_write_bytes
from ..nn import continuous_blocks
from ..solvers import Scheme
from .static import freeze

Tensor = torch.Tensor


def static_model(model: nn.Module, scheme: str | Scheme | None = None, n_steps: int | None = None) -> nn.Module:
    """An evaluation-mode copy of ``model`` fit for tracing; ``model`` is not changed.

    A model with ContinuousBlocks is frozen at ``(scheme, n_steps)`` (each block's current
    manifestation where ``None``); any other model (a ResNet, a model frozen already) is
    copied as it is, and then ``scheme``/``n_steps`` must be ``None``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if continuous_blocks(model):
        return freeze(model, scheme, n_steps)
    if scheme is not None or n_steps is not None:
        raise ValueError("scheme: the model has no ContinuousBlock, so it has one manifestation only; "
                         "leave scheme and n_steps unset")
    return copy.deepcopy(model).eval()


def check_example(example: object) -> Tensor:
    """The example input: a floating-point tensor with a leading batch dimension."""
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example: expected a torch.Tensor, got {type(example).__name__}")
    if example.dim() < 1 or not example.is_floating_point():
        raise ValueError(f"example: expected a floating-point tensor with a batch dimension, got "
                         f"{example.dtype} of shape {tuple(example.shape)}")
    return example


def tracing_example(example: Tensor, dynamic_batch: bool) -> Tensor:
    """``example``, with at least two rows when the batch is to stay dynamic.

    ``torch.export`` specialises a dimension of size 0 or 1 to that constant, so a
    dynamic batch must be traced with a batch of two or more.
    """
    if dynamic_batch and example.shape[0] < 2:
        return example[:1].expand(2, *example.shape[1:]).contiguous()
    return example


def batch_shapes(dynamic_batch: bool) -> tuple | None:
    return ({0: torch.export.Dim("batch")},) if dynamic_batch else None


def export_program(model: nn.Module, example: Tensor, *, scheme: str | Scheme | None = None,
                   n_steps: int | None = None, dynamic_batch: bool = True) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model``'s static manifestation ``(scheme, n_steps)``.

    Args:
        model: any model; ContinuousBlocks are frozen first (see [`static_model`][contdepth.export.static_model]).
        example: an input batch (only its shape, dtype and device matter).
        dynamic_batch: the first dimension stays symbolic (any batch size runs);
            ``False`` fixes it to ``example``'s.

    The program's ``module()`` computes the same function as the model at that
    manifestation; its state dict holds one tensor per stage weight.
    """
    example = tracing_example(check_example(example), dynamic_batch)
    static = static_model(model, scheme, n_steps)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)  # torch-internal
        return torch.export.export(static, (example,), dynamic_shapes=batch_shapes(dynamic_batch))


def save_program(program: torch.export.ExportedProgram, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``program`` with ``torch.export.save`` (a ``.pt2`` archive), atomically.

    An existing ``path`` is refused unless ``overwrite``.  Read it back with
    ``torch.export.load(path)``.
    """

    path = Path(path)
    refuse_existing(path, overwrite)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def refuse_existing(path: Path, overwrite: bool, what: str = "path") -> None:
    """Nothing a user saved is replaced silently (``ValueError`` naming ``what``); the folder must exist."""
    if path.exists() and not overwrite:
        raise ValueError(f"{what}: {path} exists; pass overwrite=True (--overwrite) to replace it")
    if path.is_dir():
        raise ValueError(f"{what}: {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"{what}: the folder {path.parent} does not exist")

"""Operations on every ContinuousBlock inside a model (any nn.Module, not just ours)."""

from __future__ import annotations

from contextlib import ExitStack

from torch import nn

from ..solvers import Scheme
from .block import CoefficientMap, ContinuousBlock


def continuous_blocks(model: nn.Module) -> list[ContinuousBlock]:
    """The model's ContinuousBlocks in module order."""
    return [m for m in model.modules() if isinstance(m, ContinuousBlock)]


class ModelManifestation:
    """Result of :func:`manifest`: applied at once; as a context manager, undone on exit."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack

    def __enter__(self) -> "ModelManifestation":
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def manifest(model: nn.Module, scheme: str | Scheme | None = None, n_steps: int | None = None) -> ModelManifestation:
    """Set the scheme and/or step count of every block (``with manifest(model, "rk4", 8): ...``)."""
    blocks = continuous_blocks(model)
    if not blocks:
        raise ValueError("model: contains no ContinuousBlock to manifest")
    stack = ExitStack()
    for block in blocks:
        stack.enter_context(block.manifest(scheme, n_steps))
    return ModelManifestation(stack)


def refine(model: nn.Module) -> list[CoefficientMap]:
    """Refine every block (basis and steps doubled, functions unchanged)."""
    return [block.refine() for block in continuous_blocks(model)]


def project(model: nn.Module, n_basis: int, n_steps: int | None = None) -> list[CoefficientMap]:
    """Project every block onto ``n_basis`` functions (L2-best), ``n_steps`` defaulting to ``n_basis``."""
    return [block.project(n_basis, n_steps) for block in continuous_blocks(model)]


def layout(model: nn.Module) -> list[dict]:
    """JSON-ready description of each block's basis and manifestation (for checkpoints)."""
    return [
        {"basis": b.basis.name, "n_basis": b.n_basis, "scheme": b.scheme.name, "n_steps": b.n_steps}
        for b in continuous_blocks(model)
    ]


def apply_layout(model: nn.Module, entries: list[dict]) -> None:
    """Give every block the basis size and manifestation in ``entries`` (from :func:`layout`).

    Coefficient *values* are not meaningful afterwards: this prepares a freshly built
    model to receive a state dict saved after refinement or projection.
    """
    blocks = continuous_blocks(model)
    if len(entries) != len(blocks):
        raise ValueError(f"layout: describes {len(entries)} blocks but the model has {len(blocks)}")
    for block, entry in zip(blocks, entries):
        if entry["basis"] != block.basis.name:
            raise ValueError(f"layout: block basis {entry['basis']!r} does not match the model's {block.basis.name!r}")
        if entry["n_basis"] != block.n_basis:
            block.project(entry["n_basis"])
        # Switch scheme only when it differs: a model-owned scheme object (LM-ResNet's, with
        # a learnable k) is already in place after building and has no registry name.
        scheme = entry.get("scheme")
        block.manifest(scheme if scheme != block.scheme.name else None, entry["n_steps"])

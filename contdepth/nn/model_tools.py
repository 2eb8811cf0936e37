"""Operations on every ContinuousBlock inside a model (any nn.Module, not just ours)."""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from ..common.validate import check_int, show
from ..solvers import Scheme, available_schemes
from .block import ContinuousBlock
from .depth_function import CoefficientMap
from .temporary import Temporary
from .stored_layout import MAX_N_BASIS, MAX_N_STEPS  # the bounds on a stored layout (why: there)

LAYOUT_KEYS = ("basis", "n_basis", "scheme", "n_steps")


def continuous_blocks(model: nn.Module) -> list[ContinuousBlock]:
    """The model's ContinuousBlocks in module order."""
    return [m for m in model.modules() if isinstance(m, ContinuousBlock)]


def manifest(model: nn.Module, scheme: str | Scheme | None = None, n_steps: int | None = None) -> Temporary[nn.Module]:
    """Set the scheme and/or step count of every block, at once; ``with manifest(model, "rk4", 8): ...`` undoes it on exit."""
    blocks = continuous_blocks(model)
    if not blocks:
        raise ValueError("model: contains no ContinuousBlock to manifest")
    changes: list[Temporary] = []
    try:
        for block in blocks:
            changes.append(block.manifest(scheme, n_steps))
    except BaseException:
        Temporary.all(changes).undo()  # a block that refuses the scheme leaves the model as it was
        raise
    return Temporary.all(changes, model)


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


def check_layout(model: nn.Module, entries: object,
                 state: Mapping[str, Tensor] | None = None) -> list[dict]:
    """Check ``entries`` (a layout read from a file) against ``model``; returns it, typed.

    A layout comes from ``checkpoint.json``, which anyone may have written, and its numbers
    size work: ``n_basis`` a basis change (matrices of that size), ``n_steps`` the stage
    plan each block builds at once. So every entry must be a dict with exactly the keys
    [`layout`][contdepth.nn.layout] writes, name the model's basis family and a known scheme, and hold
    ``n_steps`` in ``1..MAX_N_STEPS`` and ``n_basis`` in ``1..MAX_N_BASIS``. Given
    ``state`` (the stored ``state_dict``), ``n_basis`` must also be the leading size of
    the block's stored coefficients: the tensors, not the description, bound the work.
    Raises ``ValueError`` naming ``layout[i].key``. ``model`` may live on the ``meta`` device.
    """
    entries = check_layout_entries(entries)
    blocks = named_continuous_blocks(model)
    if len(entries) != len(blocks):
        raise ValueError(f"layout: describes {len(entries)} blocks but the model has {len(blocks)}")
    for i, ((prefix, block), entry) in enumerate(zip(blocks, entries)):
        where = f"layout[{i}]"
        if entry["basis"] != block.basis.name:
            raise ValueError(f"{where}.basis: {show(entry['basis'])} does not match the model's {block.basis.name!r}")
        scheme = entry["scheme"]
        if scheme != block.scheme.name and scheme not in available_schemes():
            raise ValueError(f"{where}.scheme: must be one of {', '.join(available_schemes())}; got {show(scheme)}")
        if state is not None:
            _check_stored_size(block, prefix, entry["n_basis"], state, where)
    return entries


def check_layout_entries(entries: object) -> list[dict]:
    """The model-free part of [`check_layout`][contdepth.nn.check_layout]: shapes, types and bounds of every entry."""
    if not isinstance(entries, list):
        raise ValueError(f"layout: must be a list with one entry per block, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        where = f"layout[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be an object with keys {', '.join(LAYOUT_KEYS)}, "
                             f"got {type(entry).__name__}")
        if sorted(entry) != sorted(LAYOUT_KEYS):
            raise ValueError(f"{where}: must have exactly the keys {', '.join(LAYOUT_KEYS)}, "
                             f"got {', '.join(map(str, entry)) or 'none'}")
        for key in ("basis", "scheme"):
            if not isinstance(entry[key], str):
                raise ValueError(f"{where}.{key}: must be a name, got {show(entry[key])}")
        # the numbers as the file holds them (1..4096, not 1..4,096), so they can be found in it
        check_int(entry["n_basis"], f"{where}.n_basis", low=1, high=MAX_N_BASIS, grouped=False)
        check_int(entry["n_steps"], f"{where}.n_steps", low=1, high=MAX_N_STEPS, grouped=False)
    return entries


def _check_stored_size(block: ContinuousBlock, prefix: str, n_basis: int, state: Mapping[str, Tensor],
                       where: str) -> None:
    """``n_basis`` must be the leading size of every stored coefficient tensor of ``block``."""
    for name, _ in block.coefficient_items():
        key = f"{prefix}.coefficients.{name}" if prefix else f"coefficients.{name}"
        stored = state.get(key)
        if stored is None:
            raise ValueError(f"{where}.n_basis: the tensor file holds no {key} to check it against")
        if stored.dim() == 0 or stored.shape[0] != n_basis:
            size = stored.shape[0] if stored.dim() else "no"
            raise ValueError(f"{where}.n_basis: {n_basis} differs from the stored coefficients' {size} "
                             f"functions ({key} has shape {tuple(stored.shape)})")


def named_continuous_blocks(model: nn.Module) -> list[tuple[str, ContinuousBlock]]:
    """``(module name, block)`` for the model's ContinuousBlocks in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ContinuousBlock)]


def apply_layout(model: nn.Module, entries: list[dict], *, shapes_only: bool = False) -> None:
    """Give every block the basis size and manifestation in ``entries`` (from [`layout`][contdepth.nn.layout]).

    Coefficient *values* are not meaningful afterwards: this prepares a freshly built
    model to receive a state dict saved after refinement or projection. ``entries`` are
    checked first ([`check_layout`][contdepth.nn.check_layout]), so a bad one fails before any basis change.
    ``shapes_only`` changes the basis sizes (all a ``state_dict``'s shapes depend on) but
    not the manifestation, whose stage plan is built eagerly: for a skeleton on the
    ``meta`` device that is only compared with stored tensors.
    """
    blocks = continuous_blocks(model)
    check_layout(model, entries)
    for block, entry in zip(blocks, entries):
        if shapes_only:
            if entry["n_basis"] != block.n_basis:
                block.resize(entry["n_basis"], 1)
            continue
        if entry["n_basis"] != block.n_basis:
            block.resize(entry["n_basis"])
        # Switch scheme only when it differs: a model-owned scheme object (LM-ResNet's, with
        # a learnable k) is already in place after building and has no registry name.
        scheme = entry.get("scheme")
        block.manifest(scheme if scheme != block.scheme.name else None, entry["n_steps"])

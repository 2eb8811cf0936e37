"""The basis size a stored state dict gives a block, read from its tensors' shapes.

Why: a block's coefficients have shape ``(n_basis, *parameter.shape)``, so a ``state_dict``
saved after [`refine`][contdepth.nn.ContinuousBlock.refine] or
[`project`][contdepth.nn.ContinuousBlock.project] says by its shapes how many basis functions
it holds. A freshly built model of the same architecture can take that size from the
tensors instead of failing with torch's ``size mismatch`` (the layout is determined by the
shapes). This module reads and checks that size before the block changes anything; the
block (its `_load_from_state_dict`) then adopts it.

Also the bounds on what a stored layout may ask for (a checkpoint's ``layout``, a state
dict's shapes), shared by `contdepth.nn.model_tools` and the block.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Protocol

import torch

from ..basis import DepthBasis


class LayoutOwner(Protocol):
    """What these functions read of a block (a [`ContinuousBlock`][contdepth.nn.ContinuousBlock]);
    a protocol, because the block imports this module."""

    n_basis: int
    n_steps: int
    basis: DepthBasis

    def coefficient_items(self) -> Iterable[tuple[str, torch.Tensor]]: ...

    def state_items(self) -> Iterable[tuple[str, torch.Tensor]]: ...

# Bounds on what a layout read from a file may ask for. Trained manifestations use tens of
# steps and functions (nine refinements of a one-function block reach 512). The cost of
# loading grows fast with both: the basis change from the built size to ``n_basis`` is
# cubic in it (about 1 s per block at 512, 7 s at 1024) and the stage plan grows with
# ``n_steps * n_basis``; so a larger number in a checkpoint is a corrupt or hostile file.
MAX_N_BASIS = 512
MAX_N_STEPS = 4096

_ADVICE = ("to load a layout of your own, build the model, call contdepth.nn.apply_layout(model, layout) "
           "and load then")


def _stored(block: LayoutOwner, state_dict: Mapping[str, object], prefix: str
            ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(key, stored, current)`` for the block's depth tensors (coefficients, state) the dict holds."""
    for group, items in (("coefficients", block.coefficient_items()), ("state", block.state_items())):
        for name, current in items:
            key = f"{prefix}{group}.{name}"
            stored = state_dict.get(key)
            if isinstance(stored, torch.Tensor):
                yield key, stored, current


def stored_basis_size(block: LayoutOwner, state_dict: Mapping[str, object], prefix: str) -> int | None:
    """How many basis functions ``state_dict`` holds for ``block`` (its module prefix ``prefix``).

    ``None`` when the dict holds none of the block's depth tensors, or one whose trailing
    shape is not the template parameter's (another architecture: torch's own ``size
    mismatch`` message then names the tensor). Raises ``RuntimeError`` (one line, naming
    ``contdepth.nn.apply_layout``) when the tensors disagree on the size, or when the size is
    one the block's basis family cannot have or one above `MAX_N_BASIS`.
    """
    sizes: dict[str, int] = {}
    for key, stored, current in _stored(block, state_dict, prefix):
        if stored.dim() != current.dim() or stored.shape[1:] != current.shape[1:]:
            return None
        sizes[key] = int(stored.shape[0])
    if not sizes:
        return None
    (first, n), *rest = sizes.items()
    for key, other in rest:
        if other != n:
            raise RuntimeError(f"{key}: holds {other} basis functions but {first} holds {n}; a block's stored "
                               f"tensors must agree on one size ({_ADVICE})")
    if n == block.n_basis:
        return n
    if not 1 <= n <= MAX_N_BASIS:
        raise RuntimeError(f"{first}: holds {n} basis functions; a block has 1..{MAX_N_BASIS} ({_ADVICE})")
    try:
        block.basis.with_size(n)
    except ValueError as exc:
        raise RuntimeError(f"{first}: holds {n} basis functions, which the {block.basis.name} basis cannot have "
                           f"({exc}; {_ADVICE})") from exc
    return n


def steps_for(block: LayoutOwner, n_basis: int) -> int:
    """The step count a block takes with ``n_basis`` functions: its steps per function kept.

    A state dict has no manifestation. Refinement doubles functions and steps, and a block
    is built with ``n_steps = n_basis`` by default, so keeping the ratio gives back the
    trained grid in both cases; where it is not a whole number (or above `MAX_N_STEPS`), one step per function.
    """
    steps = block.n_steps * n_basis
    kept = steps // block.n_basis if steps % block.n_basis == 0 else n_basis
    return kept if kept <= MAX_N_STEPS else n_basis

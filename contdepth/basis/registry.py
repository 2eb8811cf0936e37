"""Bases by name: [`register_basis`][contdepth.basis.register_basis] and [`make_basis`][contdepth.basis.make_basis].

The table itself, `BASES` (a `contdepth.common.registry.Registry`), lives in the torch-free
`contdepth.basis.names`, so the command line lists the bases without importing torch; these two
functions need the `DepthBasis` class, hence torch, and sit here, above both modules.
"""

from __future__ import annotations

from .bases import DepthBasis
from .names import BASES


def register_basis(basis_class: type[DepthBasis], *, overwrite: bool = False) -> type[DepthBasis]:
    """Make a [`DepthBasis`][contdepth.basis.DepthBasis] subclass available under its ``name`` to
    [`make_basis`][contdepth.basis.make_basis] (so to every ``basis`` option); returns the class, so
    it works as a decorator.

    The name is the class's own ``name`` attribute, not a second one: a basis names itself in
    model descriptions and checkpoints (``block.basis.name``), which must read back as the same family.
    """
    if not (isinstance(basis_class, type) and issubclass(basis_class, DepthBasis)):
        raise TypeError(f"basis_class: expected a DepthBasis subclass, got {basis_class!r}")
    return BASES.register(getattr(basis_class, "name", None), basis_class, overwrite=overwrite)  # type: ignore[arg-type]


def make_basis(basis: str | DepthBasis, n_basis: int | None = None) -> DepthBasis:
    """A basis by name and size (or pass an existing basis through)."""
    if isinstance(basis, DepthBasis):
        return basis if n_basis is None or n_basis == basis.n else basis.with_size(n_basis)
    family = BASES.get(basis)  # type: ignore[arg-type]
    if n_basis is None:
        raise ValueError("n_basis: required when the basis is given by name")
    return family(n_basis)


__all__ = ["make_basis", "register_basis"]

"""Depth bases for weights that vary with depth: evaluate, refine, project, breakpoints.

The names (`available_bases`, the `BASES` registry) are read without importing torch; the
classes and functions of `bases` and `registry` (`register_basis`, `make_basis`) are imported
when first used (PEP 562), so ``contdepth train --help`` can list the bases and stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .names import BASES, available_bases

#: The public names of the torch-dependent modules, imported when first used: name -> module.
_LAZY = {
    **dict.fromkeys(("DepthBasis", "Legendre", "PiecewiseConstant", "PiecewiseLinear", "apply_matrix",
                     "projection_matrix"), "bases"),
    **dict.fromkeys(("make_basis", "register_basis"), "registry"),
}

__all__ = [
    "BASES", "DepthBasis", "Legendre", "PiecewiseConstant", "PiecewiseLinear", "apply_matrix",
    "available_bases", "make_basis", "projection_matrix", "register_basis",
]


def __getattr__(name: str) -> Any:
    """Import `bases` or `registry` when one of its names (or the module itself) is first used."""
    if name in ("bases", "registry"):
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"bases", "names", "registry"})


if TYPE_CHECKING:
    from . import bases, registry
    from .bases import DepthBasis, Legendre, PiecewiseConstant, PiecewiseLinear, apply_matrix, projection_matrix
    from .registry import make_basis, register_basis

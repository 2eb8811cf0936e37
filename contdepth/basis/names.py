"""The depth bases by name (`BASES`), without importing torch or numpy.

Why a table apart from the classes: ``contdepth train --help`` lists the bases ``--basis``
accepts, and must not import torch to do so (``tests/test_startup.py``). `BASES` is a
`contdepth.common.registry.Registry` that declares the built-ins by name; the classes in
`contdepth.basis.bases` register under these names when that module is imported, which
happens the first time a basis is built by name (`contdepth.basis.registry`: `register_basis`,
`make_basis`); ``tests/basis`` checks the two agree.
"""

from __future__ import annotations

from ..common.registry import Registry

#: Every basis family ``make_basis`` builds by name.
BUILTIN_BASES = ("piecewise_constant", "piecewise_linear", "legendre")

#: Every basis family by name: its class (a `DepthBasis` subclass, not imported here: it needs torch),
#: called with the number of functions.
BASES: Registry[type] = Registry("basis")
for _name in BUILTIN_BASES:
    BASES.declare(_name, "contdepth.basis.bases")
del _name


def available_bases() -> list[str]:
    """Names accepted wherever a ``basis`` argument is taken, sorted (built-in and registered)."""
    return BASES.names()


__all__ = ["BASES", "BUILTIN_BASES", "available_bases"]

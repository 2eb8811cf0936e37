"""``eager``: keep a function out of ``torch.compile`` without importing ``torch._dynamo`` at import time.

``@torch.compiler.disable`` imports ``torch._dynamo`` (3 s or more, more than ``import torch``
itself) when the decorated module is imported, so every program that imports contdepth paid
for a compiler most never use. ``@eager`` decides at call time instead: outside a compiled
region (where ``torch._dynamo`` may not even be loaded) it calls the function directly; while
dynamo traces (``torch.compiler.is_compiling()``), it hands the call to
``torch.compiler.disable(function)``, built once per function. Under ``torch.compile`` the
function therefore runs eagerly with the graph broken around it, as with the decorator: the
graphs, the results and the number of graph breaks are the same (on the first trace dynamo
names the call to ``torch.compiler.disable`` as the break's reason rather than the function).
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


_DISABLED: dict[Callable, Callable] = {}


def _disabled(function: Callable) -> Callable:
    """``torch.compiler.disable(function)``, made once: the first call imports ``torch._dynamo``.

    A plain dict, not ``functools.cache``: dynamo warns about tracing a cache wrapper.
    """
    if function not in _DISABLED:
        _DISABLED[function] = torch.compiler.disable(function)
    return _DISABLED[function]


def eager(function: F) -> F:
    """Decorator: like ``@torch.compiler.disable``, but touching dynamo only when compiling."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        if torch.compiler.is_compiling():  # only ever true once torch.compile imported dynamo
            return _disabled(function)(*args, **kwargs)
        return function(*args, **kwargs)

    return call  # type: ignore[return-value]


__all__ = ["eager"]

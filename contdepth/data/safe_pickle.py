"""A restricted unpickler for data files that are pickles (the CIFAR python batches).

Unpickling runs code: any global a pickle names is imported and may be called, so a
crafted file can run ``os.system``. Data pickles such as the CIFAR batches contain only
dicts, lists, strings, ints and numpy arrays, so this unpickler resolves exactly the few
globals that numpy arrays need and refuses every other one *before* it is imported.

Allowed (everything a numpy array pickles to, under numpy 1.x and 2.x, protocols 0-5):

- ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype``: how numpy pickles arrays (protocols 0-4);
- ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer``: protocol 5;
- ``_codecs.encode``, only as ``encode(str, "latin1")``: Python 3 writes ``bytes`` this way
  under protocols 0-2. Any other codec is refused when called.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer as _np_frombuffer  # type: ignore[no-redef]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list; nothing from it was imported or run."""


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle ``bytes`` (protocols 0-2), and nothing else."""
    # Compared as plain strings: codecs.lookup would import modules named by the pickle.
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError(
            f"_codecs.encode is only allowed as encode(str, 'latin1'), got encode({type(obj).__name__}, {encoding!r})"
        )
    return obj.encode("latin1")


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` (by table, never by import)."""

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: data pickles may only contain dicts, lists, "
                "strings, numbers and numpy arrays"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent id: data pickles have none")


def safe_load(file: IO[bytes] | bytes, *, name: str = "<pickle>", encoding: str = "bytes") -> Any:
    """Unpickle ``file`` (an open binary file or bytes) with :class:`RestrictedUnpickler`.

    ``encoding="bytes"`` keeps Python 2 strings (the CIFAR keys) as ``bytes``. Refusals
    raise :class:`UnsafePickleError`, other malformed input ``ValueError``; both name ``name``.
    """
    if isinstance(file, (bytes, bytearray, memoryview)):
        file = io.BytesIO(file)
    try:
        return RestrictedUnpickler(file, encoding=encoding).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{name}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError) as exc:
        raise ValueError(f"{name}: not a readable data pickle ({type(exc).__name__}: {exc})") from exc


def safe_load_path(path: str | Path) -> Any:
    """:func:`safe_load` on a file path."""
    with open(path, "rb") as f:
        return safe_load(f, name=str(path))

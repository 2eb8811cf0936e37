"""A restricted unpickler for data files that are pickles (the CIFAR python batches).

Unpickling runs code: any global a pickle names is imported and may be called, so a
crafted file can run ``os.system``. Data pickles such as the CIFAR batches contain only
dicts, lists, strings, ints and numpy arrays, so this unpickler resolves exactly the few
globals that numpy arrays need and refuses every other one *before* it is imported.

Allowed (everything a numpy array pickles to, under numpy 1.x and 2.x, protocols 0-5):

- ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype``: how numpy pickles arrays (protocols 0-4);
- ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer``: protocol 5;
- ``_codecs.encode``, only as ``encode(str, "latin1")``, and ``bytes()``: Python 3 writes
  ``bytes`` this way under protocols 0-2. Any other codec or argument is refused when called.

None of these names resolves to the numpy function itself. Handing numpy's constructors to a
file lets a 240-byte pickle allocate any uninitialised array (``numpy.ndarray(shape, dtype)``)
and crash the process (an object array whose state lists fewer items than its shape). So the
names resolve to stand-ins that only *record* the array: ``numpy.ndarray`` may only be named,
never called; ``_reconstruct`` must start from the empty array numpy itself writes; a dtype
must be a plain boolean or numeric one; and the array is built only from its state, with
``numpy.frombuffer`` over bytes that are in the file and whose length matches the shape
exactly. The finished arrays replace the stand-ins after unpickling.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for something outside the allow-list; nothing from it was imported or run.

    A ``ValueError`` too: a refused file is bad input like any other, so the callers that turn
    bad input into a one-line error (the trainer, the CLI) catch it without knowing pickles.
    """


class _Global:
    """What an allowed global resolves to: a stand-in with no state a pickle could change.

    ``BUILD`` on a plain function would set its attributes (``__defaults__`` included) for
    every later load, so the stand-ins have no ``__dict__`` and refuse ``__setstate__``.
    """

    __slots__ = ("qualname", "_call")

    def __init__(self, qualname: str, call: Callable[..., Any]) -> None:
        object.__setattr__(self, "qualname", qualname)
        object.__setattr__(self, "_call", call)

    def __call__(self, *args: Any) -> Any:
        return self._call(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafePickleError(f"refused to change {self.qualname}")

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"refused to change {self.qualname}")

    def __repr__(self) -> str:
        return f"<allowed global {self.qualname}>"


# Plain boolean and numeric dtypes, as ``numpy.dtype.__reduce__`` names them. Object arrays
# hold references (numpy crashes on a crafted object-array state); strings, records and
# subarrays are not data a reader here needs.
_DTYPE_SPECS = frozenset(["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"])


def _text(value: Any) -> Any:
    """Python 2 strings arrive as ``bytes`` under ``encoding="bytes"``; compare them as ``str``."""
    return value.decode("latin1") if isinstance(value, bytes) else value


class _PendingDType:
    """``numpy.dtype(spec, align, copy)`` recorded; ``BUILD`` may only set the byte order."""

    __slots__ = ("spec", "byteorder")

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        spec = _text(spec)
        if not isinstance(spec, str) or spec not in _DTYPE_SPECS or align not in (False, 0):
            raise UnsafePickleError(f"refused numpy dtype {spec!r}: data arrays may only hold booleans and numbers "
                                    f"({', '.join(sorted(_DTYPE_SPECS))})")
        self.spec, self.byteorder = spec, "="

    def __setstate__(self, state: Any) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[2:5] != (None, None, None):
            raise UnsafePickleError("refused a numpy dtype state with fields or subarrays")
        byteorder = _text(state[1])
        if byteorder not in ("<", ">", "|", "="):
            raise ValueError(f"bad numpy dtype byte order {byteorder!r}")
        self.byteorder = byteorder

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.spec)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in ("<", ">") else dtype


def _array(dtype: Any, shape: Any, fortran: bool, raw: Any) -> np.ndarray:
    """A writable array of ``shape`` over exactly the bytes ``raw`` holds, or ``ValueError``."""
    if not isinstance(dtype, _PendingDType):
        raise UnsafePickleError(f"refused an array whose dtype is a {type(dtype).__name__}, not a numpy dtype")
    dtype_ = dtype.resolve()
    if (not isinstance(shape, tuple)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise ValueError(f"bad array shape {shape!r} (expected a tuple of integers >= 0)")
    raw = raw.encode("latin1") if isinstance(raw, str) else raw  # numpy's own rule for Python 2 strings
    if isinstance(raw, pickle.PickleBuffer):
        raw = raw.raw()
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise UnsafePickleError(f"refused array data of type {type(raw).__name__}: only bytes are data")
    count = math.prod(shape)  # Python ints: a crafted shape cannot wrap around
    need = count * dtype_.itemsize
    have = memoryview(raw).nbytes
    if have != need:
        raise ValueError(f"array has {have} bytes of data, but shape {shape} of {dtype_.name} needs {need}")
    array = np.frombuffer(raw, dtype=dtype_, count=count).reshape(shape, order="F" if fortran else "C")
    return array if array.flags.writeable else array.copy(order="A")


class _PendingArray:
    """What ``_reconstruct`` returns: an array waiting for its state ``BUILD`` gives it."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, rawdata); numpy also reads the old form without version
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise ValueError("bad numpy array state (expected shape, dtype, is_fortran, data)")
        shape, dtype, fortran, raw = state
        self.array = _array(dtype, shape, bool(fortran), raw)


def _refuse_ndarray_call(*args: Any) -> Any:
    raise UnsafePickleError("refused to call numpy.ndarray: it would allocate an array the file does not hold "
                            "(numpy.ndarray may only be named as the class of _reconstruct)")


_NDARRAY = _Global("numpy.ndarray", _refuse_ndarray_call)


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _PendingArray:
    """``numpy ... _reconstruct`` as numpy pickles use it: ``(ndarray, (0,), b"b")``, then ``BUILD``."""
    if subtype is not _NDARRAY or shape not in ((0,), [0]):
        raise UnsafePickleError("refused numpy _reconstruct other than _reconstruct(numpy.ndarray, (0,), ...): "
                                "an array must be built from the data in the file")
    return _PendingArray()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """``numpy ... _frombuffer`` (protocol 5): the same checks as an array state."""
    order = _text(order)
    if order not in ("C", "F"):
        raise ValueError(f"bad array order {order!r} (expected 'C' or 'F')")
    return _array(dtype, shape, order == "F", buf)


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle ``bytes`` (protocols 0-2), and nothing else."""
    # Compared as plain strings: codecs.lookup would import modules named by the pickle.
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError(
            f"_codecs.encode is only allowed as encode(str, 'latin1'), got encode({type(obj).__name__}, {encoding!r})"
        )
    return obj.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``: how protocols 0-2 write ``b""``; with arguments it could allocate, so none are allowed."""
    if args:
        raise UnsafePickleError("bytes() is only allowed without arguments")
    return b""


_RECONSTRUCT = _Global("numpy _reconstruct", _reconstruct)
_FROMBUFFER = _Global("numpy _frombuffer", _frombuffer)
_DTYPE = _Global("numpy.dtype", _PendingDType)

ALLOWED_GLOBALS: dict[tuple[str, str], _Global] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTYPE,
    ("_codecs", "encode"): _Global("_codecs.encode", _latin1_encode),
    ("__builtin__", "bytes"): _Global("bytes", _empty_bytes),
    ("builtins", "bytes"): _Global("bytes", _empty_bytes),
}


# Values that hold nothing to replace: skipped without a call (a CIFAR batch has 20,000 of them).
_LEAVES = frozenset([int, float, complex, bool, str, bytes, bytearray, type(None)])


def _finish(obj: Any, done: dict[int, Any]) -> Any:
    """``obj`` with every stand-in replaced by its array or dtype (shared and cyclic containers kept)."""
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise ValueError("a numpy array without its data (no state after _reconstruct)")
        return obj.array
    if isinstance(obj, _PendingDType):
        return obj.resolve()
    if isinstance(obj, _Global):
        raise UnsafePickleError(f"refused {obj.qualname} as a value: data pickles hold data, not functions")
    if not isinstance(obj, (list, dict, tuple, set, frozenset)):
        return obj
    if id(obj) in done:
        return done[id(obj)]
    if isinstance(obj, list):
        done[id(obj)] = obj
        obj[:] = [v if type(v) in _LEAVES else _finish(v, done) for v in obj]
    elif isinstance(obj, dict):
        done[id(obj)] = obj
        for key in list(obj):
            if isinstance(key, (_PendingArray, _PendingDType, _Global)):
                raise ValueError("a numpy array or global as a dict key")
            obj[key] = _finish(obj[key], done)
    elif isinstance(obj, tuple):
        done[id(obj)] = obj = tuple(_finish(v, done) for v in obj)
    elif any(isinstance(v, (_PendingArray, _PendingDType, _Global)) for v in obj):
        raise ValueError("a numpy array or global in a set")
    return obj


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only `ALLOWED_GLOBALS` (by table, never by import)."""

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
    """Unpickle ``file`` (an open binary file or bytes) with [`RestrictedUnpickler`][contdepth.data.RestrictedUnpickler].

    ``encoding="bytes"`` keeps Python 2 strings (the CIFAR keys) as ``bytes``. Refusals
    raise [`UnsafePickleError`][contdepth.data.UnsafePickleError], other malformed input ``ValueError``; both name ``name``.
    """
    if isinstance(file, (bytes, bytearray, memoryview)):
        file = io.BytesIO(file)
    try:
        return _finish(RestrictedUnpickler(file, encoding=encoding).load(), {})
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{name}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError, RecursionError) as exc:
        raise ValueError(f"{name}: not a readable data pickle ({type(exc).__name__}: {exc})") from exc


def safe_load_path(path: str | Path) -> Any:
    """[`safe_load`][contdepth.data.safe_load] on a file path."""
    with open(path, "rb") as f:
        return safe_load(f, name=str(path))

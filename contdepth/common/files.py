"""Atomic file writes and JSON helpers, used by checkpoints, run folders, reports and exports.

Why here: exports, analyses and reports all write files a reader may be reading; one
implementation of "the old file or the whole new one" keeps them all crash-safe.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same folder (same filesystem, so the rename is
    atomic), which is flushed and fsynced before ``os.replace``; the folder is fsynced
    afterwards so the rename itself survives a power cut. On any error the temporary file
    is removed.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise
    _fsync_dir(path.parent)


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path``: a failed ``write`` (a full disk) names no file, a failed
    ``mkstemp`` names a temporary one; the user needs the file that was being written."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temporary_file(name: str) -> bool:
    """Names :func:`atomic_write_bytes` gives its temporary files (for cleaning up)."""
    return name.startswith(".") and name.endswith(".tmp")


# --- JSON helpers -----------------------------------------------------------------------------------
def to_json_value(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (tuples become lists); anything else is an error."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"{where}: cannot store a {type(value).__name__} in a checkpoint's JSON")


# --- save ----------------------------------------------------------------------------------------------

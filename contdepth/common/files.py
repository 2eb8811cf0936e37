"""Atomic file writes and regular-file reads, used by checkpoints, run folders, reports and exports.

Why here: exports, analyses and reports all write files a reader may be reading; one
implementation of "the old file or the whole new one" keeps them all crash-safe. And every
file a reader opens may have been put there by someone else: one implementation of "a
regular file of bounded size, or a one-line error" (never a wait on a FIFO) keeps every
reader from hanging.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Callable

from .errors import OptionError
from .json_values import to_json_value  # noqa: F401  (its home before issue 28; checkpoints import it from here)


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
    """Names [`atomic_write_bytes`][contdepth.train.atomic_write_bytes] gives its temporary files (for cleaning up)."""
    return name.startswith(".") and name.endswith(".tmp")


# --- reading files a user may have put in place ----------------------------------------------------------
#: The most a text input (a spec, a config, a record of a suite) may hold: far above any real one,
#: far below what would take a reader minutes.
MAX_TEXT_BYTES = 64 << 20


def read_regular_bytes(path: str | Path, what: str, limit: int | None = MAX_TEXT_BYTES, *,
                       error: Callable[[str], Exception] = OptionError) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes, else ``error(message)``.

    Why not ``open``: any file a user or another program can put in a folder may be a FIFO
    (``open`` waits for a writer forever) or a device (``/dev/zero`` never ends). The file
    is opened non-blocking and checked with ``fstat`` on the open descriptor, so a file
    swapped after a ``stat`` cannot slip through; the size is bounded before and while
    reading. ``what`` says what the file was to be (``"an experiment spec"``); the message
    starts with the path. ``error`` is the caller's error type (a checkpoint reader raises
    its ``CheckpointError``), ``OptionError`` by default: one line, exit status 2.
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: is not a regular file, so it cannot be {what}")
        if limit is not None and info.st_size > limit:
            raise error(f"{path}: is {info.st_size} bytes, more than {what} can be ({limit} bytes)")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(-1 if limit is None else limit + 1)
        except OSError as exc:
            raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    if limit is not None and len(data) > limit:
        raise error(f"{path}: grew past {limit} bytes while being read")
    return data


def read_regular_text(path: str | Path, what: str, limit: int | None = MAX_TEXT_BYTES, *,
                      error: Callable[[str], Exception] = OptionError) -> str:
    """`contdepth.common.read_regular_bytes` decoded as UTF-8 (whatever the
    locale says); text that does not decode names its line."""
    data = read_regular_bytes(path, what, limit, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def open_regular_for_writing(path: str | Path, what: str, *,
                             error: Callable[[str], Exception] = OptionError) -> IO[str]:
    """``path`` opened to be written from its start (created if missing), refusing anything but a regular file.

    For files contdepth writes in place rather than atomically (a worker's log, which the
    worker writes while it runs). ``open(path, "w")`` on a FIFO waits for a reader forever
    and on a device writes into it; here the file is opened non-blocking without following
    a final link, checked with ``fstat``, and only then truncated.
    """
    path = Path(path)
    flags = (os.O_WRONLY | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:  # a FIFO without a reader is ENXIO, a link ELOOP
        raise error(f"{path}: cannot write {what}: {exc.strerror or exc} (not a regular file of ours?)") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path}: is not a regular file, so it cannot be {what}; move it away")
        os.ftruncate(fd, 0)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "w", encoding="utf-8")


# --- save ----------------------------------------------------------------------------------------------

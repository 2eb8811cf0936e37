"""Run directories: what a run writes, which folders a run may use, and the lock that keeps runs apart.

A run directory holds ``config.yaml`` (the resolved config; ``contdepth train --config
RUN/config.yaml`` repeats the run), ``metrics.jsonl`` (one JSON line per epoch),
``checkpoint.json`` and ``checkpoint-NNNN.safetensors`` (see
`contdepth.train.checkpoint`), for graph runs ``last/`` (the same checkpoint files), and
while a run uses it the lock file ``.contdepth.lock``. These names are the *run files*; a
run never writes, replaces or removes any other file.

What a folder is (`folder_state`):

* ``missing`` or ``empty`` (nothing but a stale lock or temporary files of contdepth's);
* ``run``: it holds a ``checkpoint.json`` in contdepth's format. A run writes its first
  checkpoint (epoch 0, the initial weights) before it trains, so every run that started
  training is a ``run`` from then on and ``resume`` can continue it;
* ``unsaved``: a lock file of contdepth's but no checkpoint: a run that was stopped before
  its first checkpoint. A fresh run may reuse it (it removes only the run files);
* ``foreign``: anything else.

Rules (`check_run_dir`, checked before any work and again under the lock):

* a fresh run takes a ``missing``, ``empty`` or ``unsaved`` folder; ``overwrite`` also lets it
  take a ``run`` (its run files are removed, nothing else); a ``foreign`` folder is refused
  with or without ``overwrite``, naming the folder;
* ``resume`` needs a ``run``;
* a folder is used by one run at a time: `RunLock` holds an exclusive ``flock`` on
  the lock file for the whole run. The kernel drops the lock when the process dies, so a
  lock file left by a killed run is stale by construction and simply taken over.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import socket
import stat
import time
from pathlib import Path
from typing import Iterator

from ..common.files import atomic_write_text, is_temporary_file
from .checkpoint import CHECKPOINT_JSON, FORMAT, TENSOR_FILE, CheckpointError
from .checkpoint_schema import MAX_JSON_BYTES, read_regular_file
from .config import ConfigError, nearest_existing

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".contdepth.lock"
LAST_DIR = "last"  # graph runs: the training state after the last saved epoch (what resume continues)
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_JSON)
_LOCK_KIND = "contdepth run lock"  # recorded in the lock file with the holder


class RunDirLocked(ConfigError):
    """Another live process holds the run folder's lock."""


# mkstemp's names for atomic writes: "." + target + "." + 8 characters of [a-z0-9_] + ".tmp"
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")  # fullmatch: "$" passes "x\n"


def is_run_file(name: str) -> bool:
    """Whether ``name`` is a file a run writes (so ``overwrite`` may remove it).

    Temporary files count only with exactly the names [`atomic_write_bytes`][contdepth.train.atomic_write_bytes] gives
    them, so a user's ``.metrics.jsonl.backup.tmp`` is not mistaken for one.
    """
    if name in RUN_FILES or TENSOR_FILE.fullmatch(name):
        return True
    match = _TEMPORARY.fullmatch(name)
    if match and is_temporary_file(name):
        inner = match["target"]
        return inner in RUN_FILES or bool(TENSOR_FILE.fullmatch(inner))
    return False


def is_contdepth_checkpoint(path: Path) -> bool:
    """A regular ``checkpoint.json`` whose ``format`` is contdepth's (a cheap test: the tensors are not read)."""
    if not path.exists():
        return False
    try:  # non-blocking and regular files only: a FIFO named checkpoint.json must not hang us
        info = json.loads(read_regular_file(path, "a checkpoint description", MAX_JSON_BYTES).decode("utf-8"))
    except (CheckpointError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(info, dict) and info.get("format") == FORMAT


def folder_state(path: str | Path) -> str:
    """``missing``, ``not a folder``, ``empty``, ``run``, ``unsaved`` or ``foreign`` (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "not a folder"
    if is_contdepth_checkpoint(path / CHECKPOINT_JSON):
        return "run"
    names = [e.name for e in path.iterdir()]
    rest = [n for n in names if n != LOCK_FILE and not _is_own_temporary(n)]
    if not rest:
        return "empty"
    return "unsaved" if LOCK_FILE in names else "foreign"


def _is_own_temporary(name: str) -> bool:
    return is_temporary_file(name) and is_run_file(name)


def check_run_dir(out: str | Path | None, *, overwrite: bool, resume: bool, probe_lock: bool = True,
                  resumable: bool = True) -> None:
    """Raise `ConfigError` (naming ``out``) if the folder cannot be used as asked.

    ``probe_lock`` also refuses a folder whose lock a live run holds (off for the check
    made while holding the lock oneself); ``resumable=False`` leaves ``--resume`` out of
    the advice (for commands that have no such option).
    """
    if out is None:
        return
    path = Path(out)
    blocker = nearest_existing(path.absolute().parent)
    if not blocker.is_dir():  # a file on the way: the folder cannot be created
        raise ConfigError(f"out: {path} cannot be a folder: {blocker} is a file")
    state = folder_state(path)
    if state == "not a folder":
        raise ConfigError(f"out: {path} exists and is not a folder")
    if probe_lock and state in ("run", "unsaved"):
        RunLock(path).probe()
    if resume:
        if state == "unsaved":
            raise ConfigError(f"resume: the run in {path} stopped before its first checkpoint, so there is nothing "
                              "to continue; run the same command without --resume (it reuses the folder)")
        if state != "run":
            raise ConfigError(f"resume: nothing to resume in {path} (no {CHECKPOINT_JSON} written by contdepth)")
        return
    if state == "run" and not overwrite:
        resume_hint = "pass --resume to continue it or " if resumable else "pass "
        raise ConfigError(f"out: {path} holds a contdepth run; {resume_hint}--overwrite (overwrite: true) to replace "
                          "its run files")
    if state == "foreign":
        why = ("--overwrite replaces only the files of a contdepth run (a folder with its checkpoint.json), "
               "and this folder is not one" if overwrite else "it is not empty and not a contdepth run")
        raise ConfigError(f"out: {path} cannot be used: {why}; choose a new --out")


def refuse_run_file(path: str | Path, what: str = "out") -> None:
    """Raise `ConfigError` if ``path`` is one of a contdepth run's own files.

    Commands that write a file of the user's choosing (``export``) must never replace a
    run's checkpoint, metrics, config or lock, with or without ``--overwrite``.
    """
    path = Path(path)
    name, folder = path.name, path.parent
    if not (name == LOCK_FILE or is_run_file(name)):
        return
    run = folder.parent if folder.name == LAST_DIR else folder
    if folder_state(run) in ("run", "unsaved"):
        raise ConfigError(f"{what}: {path} is a file of the contdepth run in {run}; write somewhere else "
                          "(a run's own files are never replaced, even with --overwrite)")


# --- the lock -----------------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on a run folder, held for a whole run (``with RunLock(folder): ...``).

    The lock is an ``flock`` on ``folder/.contdepth.lock``, which also records who holds
    it (pid, host, start time) for the message a second run gets. Because the kernel
    releases an ``flock`` when its process dies, a lock file left behind by a killed run
    is never mistaken for a live one. The file is removed on release while still locked;
    a process that opened it just before checks after locking that the path still names
    the file it locked, and starts over otherwise, so two runs can never both hold it.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":

        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            except OSError as exc:
                raise ConfigError(f"out: cannot open the run lock {self.path}: {exc.strerror or exc}") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise ConfigError(f"out: {self.path} is not a regular file; remove it to use this folder")
            try:
                _flock_briefly(fd)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._in_use(holder) from None
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # released and removed between our open and our flock: start over
                os.close(fd)
                continue
            info = {"kind": _LOCK_KIND, "pid": os.getpid(), "host": socket.gethostname(),
                    "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
            try:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(info).encode("utf-8"))
            except OSError:
                os.close(fd)  # never keep a folder locked for the rest of the process
                raise
            self._fd = fd
            return self
        raise RunDirLocked(f"out: {self.folder}: could not take the run lock {self.path}")

    def _in_use(self, holder: str) -> RunDirLocked:
        return RunDirLocked(f"out: {self.folder} is in use by another contdepth run ({holder}); wait for it to end "
                            "or choose another --out")

    def probe(self) -> None:
        """Raise `RunDirLocked` if a live process holds the lock (takes nothing, creates nothing)."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return  # no lock file: nobody holds it
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                raise self._in_use(_read_holder(fd)) from None
        finally:
            os.close(fd)

    def release(self, *, remove: bool = True) -> None:
        """Unlock; ``remove`` deletes the lock file first (keep it to mark a folder as a contdepth run's)."""
        if self._fd is None:
            return
        try:
            if remove:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _flock_briefly(fd: int) -> None:
    """``LOCK_EX`` without blocking, retried for about 0.1 s: a status probe (``LOCK_SH``) is momentary."""
    import fcntl

    for attempt in range(6):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if attempt == 5 or exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            time.sleep(0.02)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']}, since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


@contextlib.contextmanager
def locked_run_dir(out: str | Path, *, overwrite: bool, resume: bool) -> Iterator[Path]:
    """Create (if needed) and lock ``out`` for one run; yields the folder, ready to write.

    The folder's state is checked again under the lock (another run may have started in
    between) and leftover temporary files are cleared. An ``overwrite``'s removal of the
    previous run's files is the caller's, with `prepare_run_dir` right before its
    first save, so a run refused after this point (bad data, say) leaves the old run whole.
    If the run fails before
    the folder holds a checkpoint, nothing is left behind: the lock file is removed, and so
    is the folder if this call created it and it is empty.
    """
    path = Path(out)
    created = not path.exists()
    check_run_dir(path, overwrite=overwrite, resume=resume)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"out: cannot create {path}: {exc.strerror or exc}") from exc
    lock = RunLock(path)
    try:
        lock.acquire()
    except BaseException:
        if created:
            _remove_if_empty(path)
        raise
    try:
        check_run_dir(path, overwrite=overwrite, resume=resume, probe_lock=False)
        prepare_run_dir(path, overwrite=False)  # an overwritten run's files go only at the first save
        yield path
    finally:
        saved = keep_marker = False
        try:
            saved = folder_state(path) == "run"
            # Unsaved with other files in the folder: keep the (unlocked) lock file, which marks the
            # folder as a run stopped before its first checkpoint, so the same command reuses it.
            keep_marker = not saved and any(e.name != LOCK_FILE for e in path.iterdir())
        except OSError:
            pass
        finally:
            lock.release(remove=not keep_marker)
        if created and not saved:
            _remove_if_empty(path)


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()  # only succeeds on an empty folder


def prepare_run_dir(out: str | Path, *, overwrite: bool) -> Path:
    """Create the folder and clear what a new (or resumed) run must not find there.

    Always removes contdepth's temporary files of interrupted atomic writes. With
    ``overwrite``, or when the folder holds a run stopped before its first checkpoint,
    the run files (and ``last/``'s) are removed too: only those, by name.
    """
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    clear = overwrite or folder_state(path) == "unsaved"
    last = path / LAST_DIR
    folders = [(path, True)]
    if last.is_dir() and not last.is_symlink():
        # a graph run's last/ (its checkpoint is contdepth's); a user's own folder called last keeps its files
        folders.append((last, is_contdepth_checkpoint(last / CHECKPOINT_JSON)))
    for folder, owned in folders:
        for entry in folder.iterdir():
            if entry.is_file() and not entry.is_symlink() and is_run_file(entry.name) and (
                    is_temporary_file(entry.name) or (clear and owned)):
                entry.unlink()
    if clear:
        _remove_if_empty(path / LAST_DIR)
    return path


def write_metrics(path: Path, history: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` atomically with ``history`` (used when a run starts or resumes)."""
    atomic_write_text(path / METRICS_FILE, "".join(json.dumps(row) + "\n" for row in history))


def append_metrics(path: Path, row: dict, *, sync: bool = True) -> None:
    """Append one epoch's line (flushed; fsynced unless ``sync=False``).

    A resumed run rewrites ``metrics.jsonl`` from its checkpoint's history, so a line lost
    with ``sync=False`` (a power cut) comes back; graph runs, with an epoch of a few
    milliseconds, skip the fsync.
    """
    with open(path / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        if sync:
            os.fsync(f.fileno())

"""A job's side of a Ray task or a Slurm job: the function the engine runs, and the shared-storage check.

An engine (`contdepth.experiment.backends`) runs `run_remote` in a process it owns, on
a machine it chooses: the job (plain values, `contdepth.experiment.folder.Job`) arrives
with a small context, the suite's ``--import`` modules and a token. The run itself is
the same `run_job` the local workers run, so locks, resume, ``--reuse`` and the steps
behave as in a local suite; its output goes to ``DIR/logs/ARM/seed-S.log``, as a local
worker's does, and its result (or the error, one line) comes back through the engine.

**Shared storage.** Every run folder lives under ``DIR``, which the driver and every
worker must see at the same path. The driver writes ``DIR/.shared/TOKEN`` before it starts
anything; a worker reads it back (a worker that cannot sees another folder, or none) and
writes ``DIR/.shared/TOKEN.HOST.PID``, which the driver reads back in turn (a worker whose
writes the driver cannot see writes to storage of its own). Both files are contdepth's
and are removed when the sitting ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from ..common.files import atomic_write_text, open_regular_for_writing, read_regular_text
from ..train.checkpoint import CheckpointError
from ..train.config import ConfigError
from .folder import Job, check_no_links, log_file

SHARED_DIR = ".shared"


class NotShared(ConfigError):
    """``DIR`` is not the same folder for the driver and a worker: no run can be collected."""


def _shared_advice(folder: str) -> str:
    return (f"--out must be on storage every worker shares, at the same path (as on any cluster: a network "
            f"file system mounted alike on every node); {folder} is not")


def check_shared(folder: str, token: str) -> str:
    """The worker's half of the check: read the driver's marker, write ours; returns our marker's name."""
    host = socket.gethostname()
    path = Path(folder) / SHARED_DIR / token
    try:
        read_regular_text(path, "the suite's marker", 4096)
    except ConfigError:
        raise NotShared(f"out: the worker on {host} does not see the suite's folder ({path} is not there): "
                        f"{_shared_advice(folder)}") from None
    name = f"{token}.{host}.{os.getpid()}"
    atomic_write_text(Path(folder) / SHARED_DIR / name, json.dumps({"host": host, "pid": os.getpid()}) + "\n")
    return name


def write_driver_marker(folder: Path, token: str) -> None:
    """The driver's half, before any job starts: ``DIR/.shared/TOKEN``."""
    path = check_no_links(folder, folder / SHARED_DIR / token)
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}) + "\n")


def read_worker_marker(folder: Path, token: str, name: object) -> None:
    """The driver reads back what a worker wrote (then removes it); a `NotShared` naming the host if it cannot."""
    if not isinstance(name, str) or not name.startswith(token + ".") or "/" in name or "\\" in name:
        raise NotShared(f"out: a worker answered with a malformed marker name {name!r}")
    path = folder / SHARED_DIR / name
    try:
        read_regular_text(path, "a worker's marker", 4096)
    except ConfigError:
        host = name[len(token) + 1:].rsplit(".", 1)[0]
        raise NotShared(f"out: what the worker on {host} wrote under {folder} does not reach this machine: "
                        f"{_shared_advice(str(folder))}") from None
    path.unlink(missing_ok=True)


def remove_markers(folder: Path, token: str) -> None:
    """Remove this sitting's marker files (the driver's and any worker's left unread): only names with ``token``."""
    shared = folder / SHARED_DIR
    if shared.is_symlink() or not shared.is_dir():
        return
    for path in shared.iterdir():
        if (path.name == token or path.name.startswith(token + ".")) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        shared.rmdir()  # only if empty: another sitting's markers stay


_finders: set[tuple] = set()


def _imports(context: dict) -> None:
    """The driver's ``--import`` modules and the installed entry points, once per worker process."""
    from ..plugins import allow_imports_from, import_modules, load_plugins

    folders = context.get("import_folders") or {}
    key = tuple(sorted(folders.items()))
    if key not in _finders:  # an engine's worker process runs many jobs: one finder per set of folders
        allow_imports_from(folders)
        _finders.add(key)
    load_plugins()
    import_modules(list(context.get("imports") or []))


def run_remote(job: dict, context: dict) -> dict:
    """Run one job in an engine's worker: its result, or ``{"error": line}`` for an expected failure.

    ``{"error": ..., "not_shared": True}`` says the worker does not share ``DIR`` with the
    driver. Anything unexpected (a bug, a user's module raising something else) propagates:
    the engine reports it, and its traceback is in the job's log.
    """
    from .job import run_job

    job = Job(**job)
    try:
        marker = check_shared(job.folder, context["token"])
    except NotShared as exc:
        return {"error": str(exc), "not_shared": True}
    try:  # the log, as a local worker's: never through a link, never a FIFO
        log = check_no_links(job.folder, log_file(job.folder, job.arm, job.seed))
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open_regular_for_writing(log, "a worker's log")
    except (ConfigError, OSError) as exc:
        return {"error": str(exc), "marker": marker}
    with out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            _imports(context)
            result = run_job(job)
        except (ConfigError, CheckpointError, OSError) as exc:
            print(f"{exc}", flush=True)
            return {"error": str(exc), "marker": marker}
        except BaseException:
            import traceback

            traceback.print_exc()
            raise
        print(json.dumps(result), flush=True)  # the log ends with the result, as a local worker's does
    return {**result, "marker": marker}


def probe(folder: str, token: str) -> dict:
    """The shared-storage check alone (one per node, before the jobs): our marker's name, or the error."""
    try:
        return {"marker": check_shared(folder, token), "host": socket.gethostname()}
    except NotShared as exc:
        return {"error": str(exc), "not_shared": True}


__all__ = ["NotShared", "SHARED_DIR", "check_shared", "probe", "read_worker_marker", "remove_markers", "run_remote",
           "write_driver_marker"]

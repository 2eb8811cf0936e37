"""Run directories: what a run writes, and the rules for reusing a folder.

A run directory holds ``config.yaml`` (the resolved config; ``contdepth train --config
RUN/config.yaml`` repeats the run), ``metrics.jsonl`` (one JSON line per epoch),
``checkpoint.json`` and ``checkpoint-NNNN.safetensors`` (see
:mod:`contdepth.train.checkpoint`). Rules:

* a fresh run refuses a folder that exists and is not empty, before any work, unless
  ``overwrite`` is set; with ``overwrite`` only the files above (and leftover temporary
  files of atomic writes) are removed, anything else in the folder is left alone;
* ``resume`` needs the folder and its ``checkpoint.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import CHECKPOINT_JSON, TENSOR_FILE, atomic_write_text, is_temporary_file
from .config import ConfigError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_JSON)


def is_run_file(name: str) -> bool:
    """Whether ``name`` is a file a run writes (so ``overwrite`` may remove it)."""
    if name in RUN_FILES or TENSOR_FILE.match(name):
        return True
    if is_temporary_file(name):  # ".metrics.jsonl.abc123.tmp"
        inner = name[1:].rsplit(".", 2)[0]
        return inner in RUN_FILES or bool(TENSOR_FILE.match(inner))
    return False


def check_run_dir(out: str | Path | None, *, overwrite: bool, resume: bool) -> None:
    """Raise :class:`ConfigError` (naming ``out``) if the folder cannot be used as asked."""
    if out is None:
        return
    path = Path(out)
    if resume:
        if not (path / CHECKPOINT_JSON).is_file():
            raise ConfigError(f"resume: nothing to resume in {path} (no {CHECKPOINT_JSON})")
        return
    if path.exists() and not path.is_dir():
        raise ConfigError(f"out: {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(
            f"out: {path} already exists and is not empty; pass --overwrite (overwrite: true) to replace "
            "its run files, or --resume to continue the run"
        )


def prepare_run_dir(out: str | Path, *, overwrite: bool) -> Path:
    """Create the folder; with ``overwrite`` remove the previous run's files (only those).

    Temporary files left by an interrupted atomic write of a run file are removed always.
    """
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_file() and is_run_file(entry.name) and (overwrite or is_temporary_file(entry.name)):
            entry.unlink()
    return path


def write_metrics(path: Path, history: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` atomically with ``history`` (used when a run starts or resumes)."""
    atomic_write_text(path / METRICS_FILE, "".join(json.dumps(row) + "\n" for row in history))


def append_metrics(path: Path, row: dict) -> None:
    """Append one epoch's line (flushed and fsynced)."""
    with open(path / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())

"""Paths the user gives: ``~`` expanded once, and the folders contdepth must never write into.

Why here, in the bottom layer: every command takes output paths (``train``, ``export``,
``report``, ``compress``, ``analyze``), and the two rules below must read the same in all
of them, while ``export`` sits below ``experiment`` and cannot ask it what a suite folder is.

- `user_path`: ``~`` and ``~user`` are expanded, everywhere. A shell expands ``~`` at
  the start of a word but not after ``=`` in ``--out=~/suite``; a check that expanded it
  while the writer did not once put a suite into ``./~/suite`` and its report into
  ``$HOME/suite``. A path is expanded once, where it enters, and that one path is used.
- `experiment_folder_of`: the experiment (suite) folder a path lies in, recognised by its
  marker, ``experiment.json`` with ``"format": "contdepth-experiment"``. A suite folder holds
  only what ``contdepth experiment`` and ``report`` write there; another command writing into
  it (``export --out EXP/experiment.json --overwrite``) would destroy the suite's record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import OptionError
from .files import read_regular_bytes

#: The marker of an experiment folder: this file, holding a JSON object with this ``format``.
EXPERIMENT_FILE = "experiment.json"
EXPERIMENT_FORMAT = "contdepth-experiment"


def user_path(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded: the one path every check and every write of a command uses."""
    return Path(path).expanduser()


def _is_marker(path: Path) -> bool:
    """Whether ``path`` is a regular file holding an experiment record (never blocks on a FIFO)."""
    if not path.is_file():
        return False
    try:
        record = json.loads(read_regular_bytes(path, "an experiment record"))
    except (OptionError, ValueError, RecursionError):
        return False
    return isinstance(record, dict) and record.get("format") == EXPERIMENT_FORMAT


def experiment_folder_of(path: str | os.PathLike) -> Path | None:
    """The nearest folder at or above ``path`` that is an experiment folder, or ``None``.

    Both the path as given and the one its links resolve to are looked at: a link to a
    suite folder leads into the suite.
    """
    given = user_path(path).absolute()
    candidates = [given, *given.parents]
    try:
        real = given.resolve()
        candidates += [real, *real.parents]
    except (OSError, RuntimeError):  # a link loop: the path as given is all there is
        pass
    seen: set[Path] = set()
    for folder in candidates:
        if folder in seen:
            continue
        seen.add(folder)
        if _is_marker(folder / EXPERIMENT_FILE):
            return folder
    return None


def refuse_experiment_path(path: str | os.PathLike, what: str = "out") -> None:
    """An `OptionError` if writing ``path`` would write into an experiment folder.

    For the commands that write a file of the user's choosing (``export``): a suite's
    record, spec, runs, steps, logs and report are never replaced, with or without
    ``--overwrite``.
    """
    suite = experiment_folder_of(path)
    if suite is not None:
        raise OptionError(what, f"{path} lies in the experiment folder {suite}, whose files belong to contdepth "
                                "experiment and report; write somewhere else (even --overwrite never replaces them)")


__all__ = ["EXPERIMENT_FILE", "EXPERIMENT_FORMAT", "experiment_folder_of", "refuse_experiment_path", "user_path"]

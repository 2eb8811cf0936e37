"""Bringing your own models and datasets to the command line: ``--import`` and entry points.

A model or dataset reaches ``contdepth`` by name once the module that registers it
(``contdepth.models.register_model``, ``contdepth.data.register_dataset``) has been
imported. The command line imports

- every module named by ``--import MODULE`` (before any other argument is read), and
- every entry point of the groups ``contdepth.models`` and ``contdepth.datasets`` declared
  by installed packages, e.g. in a package's ``pyproject.toml``::

      [project.entry-points."contdepth.models"]
      mine = "mypackage.models"      # importing it registers the model 'mine'

Python code imports its own modules; `load_plugins` loads the entry points there too.
A run folder never names code to import: ``contdepth eval RUN`` on a run of a user's model
needs the same ``--import`` (or the installed entry point) as the training did.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .common.errors import OptionError

GROUPS = ("contdepth.models", "contdepth.datasets")
#: The environment variable through which ``contdepth --import`` hands its modules to the
#: processes it starts (``contdepth experiment --workers N``): a comma-separated list.
IMPORTS_ENV = "CONTDEPTH_IMPORT"
#: ... and where each of those modules was found (JSON ``{top-level name: folder}``): a worker
#: does not search the working folder (see `module_folders`), yet a module the user named
#: there must import in the worker as it did in the runner.
IMPORT_FOLDERS_ENV = "CONTDEPTH_IMPORT_FOLDERS"
_loaded: set[str] = set()


def module_folders(names: list[str]) -> dict[str, str]:
    """``{top-level package: the folder it was imported from}`` for the imported modules ``names``.

    Why: experiment workers start with the working folder off their path (``python -P``), so
    that a ``json.py`` in a downloaded data folder never runs in them. A module the user named
    with ``--import`` is different: they asked for it, and the runner found it (``python -m
    contdepth`` searches the working folder). The worker is told where, and finds there exactly
    these names (`allow_imports_from`), nothing else.
    """
    folders: dict[str, str] = {}
    for name in names:
        top = name.strip().split(".")[0]
        module = sys.modules.get(top)
        location = getattr(getattr(module, "__spec__", None), "origin", None)
        if not top or not isinstance(location, str) or not location.endswith(".py"):
            continue  # not imported, built in, or a namespace package: nothing to point at
        path = Path(location)
        folders[top] = str(path.parent.parent if path.name == "__init__.py" else path.parent)
    return folders


class _NamedFinder(importlib.abc.MetaPathFinder):
    """Finds the top-level modules it was given, each in its own folder, and nothing else."""

    def __init__(self, folders: dict[str, str]) -> None:
        self.folders = dict(folders)

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102 - the finder protocol
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [folder])


def allow_imports_from(folders: dict[str, str]) -> None:
    """Make each top-level module of ``folders`` importable from its folder (a worker's side of
    `module_folders`); the folders are not put on ``sys.path``, so nothing else is found there."""
    if not isinstance(folders, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in folders.items()):
        raise OptionError("--import", f"{IMPORT_FOLDERS_ENV} must map module names to folders")
    if folders:
        sys.meta_path.insert(0, _NamedFinder(folders))


def import_modules(names: list[str]) -> None:
    """Import each module of ``names`` (``--import``); a failure is an `OptionError` naming it."""
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise OptionError("--import", f"expected a module name such as mypackage.models, got {name!r}")
        try:
            importlib.import_module(name.strip())
        except Exception as exc:  # the module's own error, in one line
            raise OptionError("--import", f"cannot import {name!r}: {type(exc).__name__}: {exc}") from exc


def load_plugins(warn=None) -> list[str]:
    """Load the ``contdepth.models`` and ``contdepth.datasets`` entry points once; return what was loaded.

    A broken entry point is reported through ``warn`` (default: one line on stderr) and
    skipped, so one bad package does not stop every command.
    """
    loaded = []
    for group in GROUPS:
        for point in entry_points(group=group):
            key = f"{group}:{point.name}={point.value}"
            if key in _loaded:
                continue
            _loaded.add(key)
            try:
                point.load()
                loaded.append(key)
            except Exception as exc:
                message = f"contdepth: warning: entry point {point.name!r} ({point.value}) of group {group} " \
                          f"failed to load: {type(exc).__name__}: {exc}"
                (warn or (lambda text: print(text, file=sys.stderr)))(message)
    return loaded


__all__ = ["GROUPS", "IMPORTS_ENV", "IMPORT_FOLDERS_ENV", "allow_imports_from", "import_modules", "load_plugins",
           "module_folders"]

"""Bringing your own models and datasets to the command line: ``--import`` and entry points.

A model or dataset reaches ``contdepth`` by name once the module that registers it
(``contdepth.models.register_model``, ``contdepth.data.register_dataset``) has been
imported. The command line imports

- every module named by ``--import MODULE`` (before any other argument is read), and
- every entry point of the groups ``contdepth.models`` and ``contdepth.datasets`` declared
  by installed packages, e.g. in a package's ``pyproject.toml``::

      [project.entry-points."contdepth.models"]
      mine = "mypackage.models"      # importing it registers the model 'mine'

Python code imports its own modules; :func:`load_plugins` loads the entry points there too.
A run folder never names code to import: ``contdepth eval RUN`` on a run of a user's model
needs the same ``--import`` (or the installed entry point) as the training did.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

from .common.errors import OptionError

GROUPS = ("contdepth.models", "contdepth.datasets")
#: The environment variable through which ``contdepth --import`` hands its modules to the
#: processes it starts (``contdepth experiment --workers N``): a comma-separated list.
IMPORTS_ENV = "CONTDEPTH_IMPORT"
_loaded: set[str] = set()


def import_modules(names: list[str]) -> None:
    """Import each module of ``names`` (``--import``); a failure is an :class:`OptionError` naming it."""
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


__all__ = ["GROUPS", "IMPORTS_ENV", "import_modules", "load_plugins"]

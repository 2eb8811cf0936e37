"""The ``contdepth`` subcommands, one module each: ``add(sub)`` makes its parser, ``run(args)`` does its work.

Every flag comes from a config class (`contdepth.common.options.add_flags`): a module lists
its classes in ``CLASSES`` (every field a flag) and the `Runtime` options it takes in
``RUNTIME`` (with what they mean for it). ``tests/cli`` reads both to check that every
field has its flag. Importing a command module imports no torch (``contdepth --help`` builds
every parser); ``run`` imports what the work needs.
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping, Sequence

from ..common.options import add_flags, values_from
from ..train.options import Runtime

#: A command's `Runtime` options: field name -> what the command says differently (help, default, required, metavar).
RuntimeTable = Mapping[str, Mapping[str, Any]]


def add_command(sub: Any, name: str, *, classes: Sequence[type], runtime: RuntimeTable,
                groups: Sequence[str] = (), **parser_options: Any) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``: one flag per field of ``classes`` and per `Runtime` option it takes.

    ``groups`` names ``--help`` sections to make first, in that order.
    """
    parser = sub.add_parser(name, **parser_options)
    sections = {title: parser.add_argument_group(title) for title in groups}
    for cls in classes:
        add_flags(parser, cls, groups=sections)
    add_flags(parser, Runtime, names=runtime, overrides=runtime, groups=sections)
    return parser


def options_of(args: argparse.Namespace, cls: type) -> Any:
    """The checked ``cls`` of the parsed arguments (an `OptionError` naming the option otherwise)."""
    return cls(**values_from(args, cls))


def runtime_of(args: argparse.Namespace, runtime: RuntimeTable) -> Runtime:
    """The checked `Runtime` of the parsed arguments: the options of ``runtime``, the others their defaults."""
    return Runtime(**values_from(args, Runtime, names=runtime))


__all__ = ["RuntimeTable", "add_command", "options_of", "runtime_of"]

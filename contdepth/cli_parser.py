"""The command line's parser class: each command answers a flag it does not know itself.

Why a module of its own: ``cli.py`` glues the commands to the library; how argparse reports
an unknown flag (which usage line, which suggestion) is one job that every command shares.
"""

from __future__ import annotations

import argparse
import sys


class CommandParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are ``contdepth``'s: its own usage, one line, exit status 2,
    and for a flag it does not have, the nearest ones it has."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse's exit status 2, our prefix
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102
        """Refuse what this parser does not know here, with its own usage and the nearest flags.

        Why here: argparse hands a subcommand's unknown arguments up to the top parser, which
        printed ``contdepth``'s usage for ``contdepth train --epochz 1`` and no hint; the
        subcommand's parser knows its own flags, so it answers (exit status 2).
        """
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(unrecognized_message(extras, option_strings(self)))
        return namespace, extras


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag ``parser`` accepts (``--epochs``, ``--no-nesterov``, ``-h``).

    argparse keeps its actions in ``_actions`` with no public accessor; each action's
    ``option_strings`` is public.
    """
    return [flag for action in parser._actions for flag in action.option_strings]


def unrecognized_message(extras: list[str], flags: list[str]) -> str:
    """``unrecognized arguments: --epochz 1; did you mean --epochs?`` (the closest flag of each unknown one)."""
    import difflib

    hints = []
    for arg in extras:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("-") or flag in flags or _is_number(flag):
            continue
        close = difflib.get_close_matches(flag, flags, n=1)
        if close and close[0] not in hints:
            hints.append(close[0])
    hint = f"; did you mean {' or '.join(hints)}?" if hints else ""
    return f"unrecognized arguments: {' '.join(extras)}{hint}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


__all__ = ["CommandParser", "option_strings", "unrecognized_message"]

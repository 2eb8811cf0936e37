"""``contdepth schemes``: every registered scheme's cost, order, stability and error constant."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_command, options_of
from .options import SchemeTable

CLASSES = (SchemeTable,)
RUNTIME: dict = {}


def add(sub: Any) -> argparse.ArgumentParser:
    return add_command(sub, "schemes", classes=CLASSES, runtime=RUNTIME,
                       help="every integration scheme: cost, order, stability, error constant",
                       description="Every registered scheme with its rate evaluations per step, order, interval of "
                                   "absolute stability [-r, 0] on the negative real axis (z = h lambda), leading "
                                   "error constant, and for the multistep schemes the leading term of the "
                                   "modified equation; the LM-ResNet scheme at --lm-k.")


def run(args: argparse.Namespace) -> int:
    options = options_of(args, SchemeTable)
    from ..solvers.properties import format_scheme_table, scheme_table

    print(format_scheme_table(scheme_table(lm_k=options.lm_k)))
    return 0


__all__ = ["CLASSES", "RUNTIME", "add", "run"]

"""``contdepth demo``: a ContinuousNet trained on digits with refinement, then its manifestation table."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_command, options_of, runtime_of
from .options import Demo

CLASSES = (Demo,)
RUNTIME = {"threads": {"default": 1, "help": "torch threads: one is as fast on digits, and gives the same numbers "
                                            "on every machine"},
           "quiet": {"help": "no per-epoch lines"}, "out": {"help": "also save the run here"},
           "overwrite": {"help": "replace the run files of an existing --out"}}


def add(sub: Any) -> argparse.ArgumentParser:
    return add_command(sub, "demo", classes=CLASSES, runtime=RUNTIME,
                       help="train a ContinuousNet on digits with refinement; print a manifestation table")


def run(args: argparse.Namespace) -> int:
    options = options_of(args, Demo)
    runtime = runtime_of(args, RUNTIME)
    from ..train.demo import demo

    demo(epochs=options.epochs, threads=runtime.threads, quiet=runtime.quiet, out=runtime.out,
         overwrite=runtime.overwrite)
    return 0


__all__ = ["CLASSES", "RUNTIME", "add", "run"]

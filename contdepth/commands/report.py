"""``contdepth report``: paired comparisons over seeds from an experiment folder's finished runs."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_command, options_of, runtime_of
from .options import Report

CLASSES = (Report,)
RUNTIME = {"run": {"metavar": "DIR", "help": "experiment folder (the --out of contdepth experiment)"},
           "out": {"help": "where to write the report (default: DIR)"},
           "quiet": {"help": "do not print the report"}}


def add(sub: Any) -> argparse.ArgumentParser:
    return add_command(sub, "report", classes=CLASSES, runtime=RUNTIME,
                       help="statistics of an experiment folder: report.md, summary.json, plots",
                       description="Paired comparisons over seeds with 95 %% t-intervals, from the finished runs "
                                   "of an experiment folder (unfinished runs are listed, not counted).")


def run(args: argparse.Namespace) -> int:
    options = options_of(args, Report)
    runtime = runtime_of(args, RUNTIME)
    from ..experiment import write_report

    write_report(runtime.run, out=runtime.out, plots=not options.no_plots, quiet=runtime.quiet)
    return 0


__all__ = ["CLASSES", "RUNTIME", "add", "run"]

"""``contdepth experiment``: every (arm, seed) of a spec as a run folder, resumable, then its report."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from . import add_command, options_of, runtime_of
from .options import Suite

CLASSES = (Suite,)
RUNTIME = {"out": {"required": True, "help": "experiment folder (created; an existing one must hold this spec)"},
           "threads": {"help": "threads for the whole suite, shared by the workers: a run gets --threads / --workers "
                       "(default: the free cores; with --backend ray or slurm, one per run)"},
           "device": {}, "data_dir": {"help": "folder of the dataset's files, for every run"},
           "quiet": {"help": "print nothing but errors"}}


def add(sub: Any) -> argparse.ArgumentParser:
    return add_command(sub, "experiment", classes=CLASSES, runtime=RUNTIME,
                       help="run an experiment spec: arms x seeds, resumable, then its report",
                       description="Train every (arm, seed) of SPEC as a run folder under --out, run the "
                                   "after-training steps and write the report. The same command again skips "
                                   "finished runs and resumes interrupted ones.")


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interruption: the same clean-up (workers stopped) and the same advice as Ctrl-C."""


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise Terminated()


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    options = options_of(args, Suite)
    runtime = runtime_of(args, RUNTIME)
    from ..experiment import ExperimentSpec, run_experiment

    spec = ExperimentSpec.from_yaml(options.spec)
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        run_experiment(spec, runtime.out, workers=options.workers, threads=runtime.threads, device=runtime.device,
                       data_dir=runtime.data_dir, report=not options.no_report, quiet=runtime.quiet,
                       reuse=list(options.reuse), command=" ".join(["contdepth", *map(shlex.quote, args.argv)]),
                       backend=options.engine())
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


__all__ = ["CLASSES", "RUNTIME", "Terminated", "add", "run"]

"""``contdepth compress``: a run's model projected onto fewer basis functions and steps, into a new run."""

from __future__ import annotations

import argparse
from typing import Any

from ..train.options import Compress
from . import add_command, options_of, runtime_of

CLASSES = (Compress,)
RUNTIME = {"run": {"help": "run directory of the trained model (left untouched)"},
           "out": {"required": True, "help": "new run directory for the compressed model"},
           "overwrite": {"help": "replace the run files of an existing --out"},
           "batch_size": {}, "data_dir": {}, "threads": {}, "device": {},
           "quiet": {"help": "no fine-tuning progress lines"}}


def add(sub: Any) -> argparse.ArgumentParser:
    return add_command(sub, "compress", classes=CLASSES, runtime=RUNTIME,
                       help="project a run's model onto fewer basis functions and steps",
                       description="L2-project every ContinuousBlock (weights and normalisation statistics) onto "
                                   "K basis functions, optionally fine-tune, and report parameters, test accuracy "
                                   "and inference latency before and after. Writes a new run directory.")


def run(args: argparse.Namespace) -> int:
    options = options_of(args, Compress)
    runtime = runtime_of(args, RUNTIME)
    from ..analysis.compression import compress_run

    report = compress_run(runtime.run, options.n_basis, options.n_steps, out=runtime.out,
                          finetune_epochs=options.finetune_epochs, lr=options.lr, overwrite=runtime.overwrite,
                          data_dir=runtime.data_dir, batch_size=runtime.batch_size,
                          latency_batch_sizes=options.latency_batch_sizes, latency_repeats=options.latency_repeats,
                          threads=runtime.threads, device=runtime.device, quiet=runtime.quiet)
    print(f"{runtime.run} -> {runtime.out}")
    print(report.format())
    return 0


__all__ = ["CLASSES", "RUNTIME", "add", "run"]

"""``contdepth analyze``: convergence orders and invariance of a run across the manifestations of a grid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..train.config import ConfigError, check_output_path
from . import add_command, options_of, runtime_of
from .options import Analyze

CLASSES = (Analyze,)
RUNTIME = {"run": {}, "out": {"help": "output folder (default: RUN/analysis)"},
           "overwrite": {"help": "replace the analysis files already in --out"},
           "batch_size": {}, "data_dir": {}, "threads": {}, "device": {}}


def add(sub: Any) -> argparse.ArgumentParser:
    return add_command(sub, "analyze", classes=CLASSES, runtime=RUNTIME,
                       help="convergence and invariance of a run across manifestations",
                       description="For every scheme x steps: test accuracy and the relative error of each block's "
                                   "output and of the logits against a reference manifestation; fitted convergence "
                                   "orders; the accuracy spread. A resnet run is read as a piecewise-constant "
                                   "theta(t) with one cell per unit. Writes analysis.json, manifestations.csv, "
                                   "orders.csv and two PNG plots.")


def _check_outputs(options: Analyze, out: Path, overwrite: bool) -> None:
    """The folders and optional packages the analysis writes with, before the checkpoint is read."""
    from ..analysis.plots import check_matplotlib
    from ..analysis.report import PLOT_FILES, REPORT_FILES, check_output
    from ..common.errors import OptionError
    from ..train.tensorboard import summary_writer_class

    check_output_path(out, "out", folder=True)
    try:
        check_output(out, REPORT_FILES + (() if options.no_plots else PLOT_FILES), overwrite=overwrite)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if not options.no_plots:
        try:
            check_matplotlib()
        except ImportError as exc:
            raise ConfigError(f"no_plots: {exc}") from exc
    if options.tensorboard is not None:
        check_output_path(Path(options.tensorboard), "tensorboard", folder=True)
        try:
            summary_writer_class()
        except OptionError as exc:
            raise ConfigError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    options = options_of(args, Analyze)
    runtime = runtime_of(args, RUNTIME)
    run_path = Path(runtime.run)
    out = Path(runtime.out) if runtime.out else (run_path.parent if run_path.name == "checkpoint.json"
                                                 else run_path) / "analysis"
    _check_outputs(options, out, runtime.overwrite)
    import torch

    from ..analysis import analyze_manifestations, as_continuous, reference_manifestation
    from ..solvers import MaxStepsExceeded
    from ..train import load_checkpoint
    from ..train.tensorboard import log_manifestation_table
    from ..train.trainer import load_data

    reference = options.resolved_reference()
    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    model, info = load_checkpoint(runtime.run, device=runtime.device)
    try:
        readable, reading = as_continuous(model)
        if reference is not None:
            with reference_manifestation(readable, reference):  # an unsupported reference fails here, before the data
                pass
    except ValueError as exc:
        raise ConfigError(f"{info.model_name} run {info.path.parent}: {exc}") from exc
    config = info.train_config()
    if runtime.data_dir is not None:
        config = config.replace(data_dir=runtime.data_dir)
    dataset = load_data(config)
    if reading:
        print(f"{info.model_name}: {reading}")
    try:
        # a text run's manifestations are compared on its validation sample (choosing a manifestation is a choice)
        split = "val" if getattr(dataset, "is_text", False) and "val" in dataset.splits else "test"
        report = analyze_manifestations(model, dataset, schemes=options.schemes, steps=options.steps, split=split,
                                        reference=reference, batch_size=runtime.batch_size,
                                        max_examples=options.max_examples, dtype=options.dtype,
                                        device=runtime.device, progress=sys.stderr.isatty())
    except MaxStepsExceeded as exc:  # an adaptive reference whose tolerance the model cannot meet
        raise ConfigError(f"reference: {options.reference} could not be computed ({exc}); loosen its tolerance") from exc
    print(f"{info.path.parent}: epoch {info.epoch}, {info.model_name} on {config.data}, "
          f"{report.seconds:.1f} s of analysis")
    print(report.format_table())
    written = report.write(out, overwrite=runtime.overwrite, plots=not options.no_plots)
    if options.tensorboard is not None:
        written.append(log_manifestation_table(options.tensorboard, [(r.scheme, r.n_steps, 100 * r.accuracy)
                                                                    for r in report.rows], report.format_table()))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


__all__ = ["CLASSES", "RUNTIME", "add", "run"]

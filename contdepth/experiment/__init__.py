"""Experiments: several seeds of several settings, paired comparisons with intervals.

    from contdepth.experiment import ExperimentSpec, run_experiment, write_report
    summary = run_experiment("experiments/refinement.yaml", "runs/refinement")
    write_report("runs/refinement", out="experiments/results/refinement")

A spec ([`ExperimentSpec`][contdepth.experiment.ExperimentSpec]) holds a base training config, seeds, named arms
(overrides of the base) and comparisons (an arm against a baseline arm). Every
``(arm, seed)`` is an ordinary run folder, so a suite resumes where it stopped
([`run_experiment`][contdepth.experiment.run_experiment]); [`write_report`][contdepth.experiment.write_report] turns the folder into ``report.md``,
``summary.json`` and plots (`contdepth.experiment.report`), with the paired
statistics of `contdepth.experiment.stats`.
"""

from .folder import read_record, run_folder
from .readouts import ODE_LIMIT_SCHEME, compression_comparisons, gap_to_ode, ode_limit
from .report import collect, format_report, render_plots, summarize, write_report
from .runner import Job, check_experiment_dir, run_experiment, run_job, run_status
from .seeds import SeedDecision, decide
from .spec import (
    Arm,
    Comparison,
    Compress,
    Evaluate,
    ExperimentSpec,
    SeedRule,
    arm_config,
    difference,
)
from .costs import cell_epochs, ideal_ratio
from .stats import Estimate, RatioEstimate, estimate, ratio_estimate, t_quantile

__all__ = [
    "ODE_LIMIT_SCHEME", "compression_comparisons", "gap_to_ode", "ode_limit",
    "Arm", "Comparison", "Compress", "Estimate", "Evaluate", "ExperimentSpec", "Job", "RatioEstimate", "SeedDecision",
    "SeedRule", "arm_config", "cell_epochs", "check_experiment_dir", "collect", "decide", "difference", "estimate",
    "format_report", "ideal_ratio",
    "ratio_estimate", "read_record", "render_plots", "run_experiment", "run_folder", "run_job", "run_status",
    "summarize", "t_quantile", "write_report",
]

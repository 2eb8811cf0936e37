"""``contdepth report DIR``: the statistics of an experiment folder, as Markdown, JSON and plots.

Only finished runs count (trained to the spec's epochs); unfinished ones are listed, so a
report of a suite still in progress says what it rests on. Accuracies are the **final
epoch's**, in percent: the test accuracy is reported, the validation accuracy is what
settings are chosen on, and neither is maximised over epochs (that would choose on it).
Times are each run's ``total_time`` (training, per-epoch evaluation and checkpoint writes,
over every sitting); costs are summed over the run's epochs (`contdepth.experiment.costs`).
A comparison pairs an arm with its baseline seed by seed (`contdepth.experiment.comparisons`):
the accuracy difference is ``arm - baseline`` in points with its mean and 95 % t-interval;
the FLOP ratio is exact, the time ratios are geometric means with t-intervals on the logs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..analysis.plots import figure_png
from ..common.files import atomic_write_bytes, atomic_write_text, read_regular_text
from ..common.paths import experiment_folder_of, user_path
from ..common.json_values import to_json_value
from ..train.checkpoint import CheckpointError, read_description
from ..train.config import ConfigError, check_output_path
from ..train.metrics import metric
from ..train.rundir import folder_state
from .comparisons import compare, comparison_lines
from .costs import FLOP_KEYS, SECOND_KEYS, run_costs
from .flops_to_target import units as flops_to_target_units, val_loss_curve
from .folder import check_run_config, read_record, run_folder, steps_current, steps_file
from .loss_plots import LOSS_PLOT_FILE, loss_plot_files, loss_plots
from .losses import TEXT_UNITS, add_text_fields, run_losses, text_arm_lines
from .readouts import (compression_comparison_lines, compression_comparisons, compression_per_seed, gap_lines,
                       gap_to_ode, loss_change_lines)
from .seeds import counted, summary_fields
from .spec import ExperimentSpec, difference
from .stats import Estimate, estimate

SUMMARY_FILE = "summary.json"
SUMMARY_FORMAT = "contdepth-experiment-summary"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
PLOT_FILES = ("accuracy_vs_time.png", "accuracy_per_epoch.png")


def _spec_of(folder: Path) -> ExperimentSpec:
    """The spec stored with the experiment (``spec.yaml``), checked against its recorded identity."""
    record = read_record(folder)
    copy = folder / "spec.yaml"
    if not copy.is_file():
        raise ConfigError(f"run: {folder} has no spec.yaml; rerun contdepth experiment SPEC --out {folder}")
    spec = ExperimentSpec.from_yaml(copy)
    source = record.get("spec_file") if isinstance(record.get("spec_file"), str) else str(copy)
    spec = ExperimentSpec.from_dict(spec.raw, source=source, default_name=spec.name)
    changes = difference(record["identity"], to_json_value(spec.identity(), "identity"))
    if changes:
        raise ConfigError(f"run: {copy} differs from the spec the experiment was run with ({'; '.join(changes[:3])}); "
                          "it is contdepth's record of the spec: restore it")
    return spec


def collect(folder: str | Path) -> tuple[ExperimentSpec, dict[str, dict[int, dict]], list[str]]:
    """``(spec, runs[arm][seed], unfinished)``: each finished run's numbers (accuracies in percent)."""
    folder = Path(folder)
    spec = _spec_of(folder)
    runs: dict[str, dict[int, dict]] = {arm.name: {} for arm in spec.arms}
    unfinished: list[str] = []
    for arm in spec.arms:
        epochs = spec.config(arm, spec.seeds[0]).epochs
        for seed in spec.seeds:
            path = run_folder(folder, arm.name, seed)
            if folder_state(path) != "run":
                unfinished.append(f"{arm.name} seed {seed}: not started")
                continue
            try:
                description = read_description(path)
                check_run_config(spec, arm, seed, description, path)
            except (CheckpointError, ConfigError) as exc:
                unfinished.append(f"{arm.name} seed {seed}: not counted ({exc})")
                continue
            history = description["history"]
            if description["epoch"] < epochs or not history:
                unfinished.append(f"{arm.name} seed {seed}: {description['epoch']} of {epochs} epochs")
                continue
            last = history[-1]
            entry = {
                "accuracy": 100 * last["test_accuracy"],
                "val_accuracy": 100 * last["val_accuracy"] if "val_accuracy" in last else math.nan,
                "time": float(last["total_time"]),
                **run_costs(history),  # train_flops, eval_flops, train_time, train_cpu_time, cpu_time; None: missing
                "params": int(last.get("params", 0)),
                "epochs": [100 * r["test_accuracy"] for r in history],
                "val_epochs": [100 * r.get("val_accuracy", math.nan) for r in history],
                **run_losses(history),  # val_loss, test_loss; a text run's bits per byte and tokens/s (losses.py)
                "val_loss_curve": val_loss_curve(history),  # per row: FLOPs so far, val_loss (flops_to_target.py)
            }
            needs_steps = arm.evaluate is not None or arm.compress is not None
            if needs_steps:
                if not steps_current(folder, arm, seed, description):
                    unfinished.append(f"{arm.name} seed {seed}: trained, after-training steps not done (for these "
                                      "weights, steps and contdepth version)")
                    continue
                entry["steps"] = json.loads(read_regular_text(steps_file(folder, arm.name, seed), "a steps record"))
            runs[arm.name][seed] = entry
    if spec.seed_rule is not None:  # only the seeds the rule counts (`contdepth.experiment.seeds`)
        runs, unfinished = counted(spec, runs, unfinished)
    return spec, runs, unfinished


def _stats(values: list[float]) -> dict:
    e = estimate(values)
    return {"mean": e.mean, "std": e.std, "ci95": [e.low, e.high], "n": e.n}


def _ratio(a: float, b: float) -> float:
    """``a / b``, NaN where it is undefined (a time of 0 from a coarse clock, a metric not recorded)."""
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def _finite_estimate(values: list[float]) -> Estimate:
    """[`estimate`][contdepth.experiment.estimate] of the finite values (runs from before a metric was recorded have None or NaN)."""
    return estimate([v for v in values if v is not None and math.isfinite(v)])


def _spread(grid: dict, split: str, min_steps: int = 1) -> float:
    """Max - min accuracy (points) over the grid's cells with at least ``min_steps`` steps."""
    values = [cell[split] for row in grid.values() for n, cell in row.items() if split in cell and int(n) >= min_steps]
    return 100 * (max(values) - min(values)) if values else math.nan


def _cells(config) -> int:
    """The most depth cells (basis functions or units) of any stage of the arm's model; 1 if it has none.

    A manifestation with fewer steps than cells cannot resolve theta(t) (one step of a
    two-cell piecewise-constant theta reads only the first cell), so its accuracy measures
    that, not invariance; the resolved spread leaves such manifestations out.
    """
    options = config.model_options
    value = options.get("n_basis", options.get("n_units", 1))
    values = value if isinstance(value, (list, tuple)) else [value]
    return max([v for v in values if isinstance(v, int) and not isinstance(v, bool)] or [1])


def summarize(folder: str | Path, *, collected: tuple | None = None) -> dict:
    """The ``summary.json`` of an experiment folder (see the module docstring).

    ``collected`` is [`collect`][contdepth.experiment.collect]'s result when the caller has it already.
    """
    folder = Path(folder)
    spec, runs, unfinished = collected if collected is not None else collect(folder)
    record = read_record(folder)
    arms: dict[str, Any] = {}
    compressed: list[dict] = []
    for arm in spec.arms:
        seeds = runs[arm.name]
        values = list(seeds.values())
        acc, val = estimate([v["accuracy"] for v in values]), estimate([v["val_accuracy"] for v in values])
        t = estimate([v["time"] for v in values])
        entry: dict[str, Any] = {
            "n": acc.n, "seeds": sorted(seeds),
            "accuracy_mean": acc.mean, "accuracy_std": acc.std, "accuracy_ci95": [acc.low, acc.high],
            "val_accuracy_mean": val.mean, "val_accuracy_std": val.std,
            "time_mean": t.mean, "time_std": t.std,
            "train_time_mean": _finite_estimate([v["train_time"] for v in values]).mean,
            "train_cpu_time_mean": _finite_estimate([v["train_cpu_time"] for v in values]).mean,
            "train_cpu_time_n": _finite_estimate([v["train_cpu_time"] for v in values]).n,
            "cpu_time_mean": _finite_estimate([v["cpu_time"] for v in values]).mean,
            "cpu_time_std": _finite_estimate([v["cpu_time"] for v in values]).std,
            "train_flops_mean": _finite_estimate([v["train_flops"] for v in values]).mean,
            "train_flops_n": _finite_estimate([v["train_flops"] for v in values]).n,
            "params_mean": estimate([v["params"] for v in values]).mean,
            "per_seed": {str(s): {k: v[k] for k in ("accuracy", "val_accuracy", "time", "train_time", "train_cpu_time",
                                                    "cpu_time", "train_flops", "eval_flops", "params")}
                         for s, v in sorted(seeds.items())},
        }
        grids = {s: v["steps"]["manifestations"] for s, v in seeds.items() if "manifestations" in v.get("steps", {})}
        if grids:
            entry["invariance"] = _invariance(grids, _cells(spec.config(arm, spec.seeds[0])))
            entry["invariance"].update(gap_to_ode(grids))  # per seed, on each split (readouts.py)
        comps = {s: v["steps"]["compression"] for s, v in seeds.items() if "compression" in v.get("steps", {})}
        if comps:
            entry["compression"] = _compression(comps)
            entry["compression"]["per_seed"] = compression_per_seed(comps)
            compressed += compression_comparisons(arm.name, comps)
        add_text_fields(entry, seeds)  # a text arm's losses and loss readout; nothing for an image arm
        arms[arm.name] = entry
    comparisons = [compare(c, runs, spec) for c in spec.comparisons]
    return {
        "format": SUMMARY_FORMAT,
        "experiment": spec.name, "description": spec.description, "spec_file": record.get("spec_file"),
        "seeds": list(spec.seeds), "commands": [s.get("command") for s in record.get("sittings", [])],
        "reused": {run: source for s in record.get("sittings", []) if isinstance(s.get("reused"), dict)
                   for run, source in s["reused"].items()},
        "units": {"accuracy": "percent (final epoch)", "time": "seconds (run total_time)",
                  "accuracy_diff": "points, arm - baseline, paired by seed",
                  **{key: f"{metric(key).meaning}, summed over epochs" for key in FLOP_KEYS + SECOND_KEYS},
                  "flops_ratio": "arm / baseline of train_flops, exact (pooled over seeds; range per seed)",
                  "time_ratio": "arm / baseline, geometric mean over seeds, t-interval on the log ratios",
                  "ideal_ratio": "arm / baseline of the blocks' cell-epochs (rate evaluations per example)",
                  **(TEXT_UNITS if any(a.get("text") for a in arms.values()) else {}),
                  **flops_to_target_units(comparisons)},
        "arms": arms, "comparisons": comparisons, "compression_comparisons": compressed, "unfinished": unfinished,
        **summary_fields(spec, runs),  # a seeds rule: the seeds it counts and why it stopped
    }


def _invariance(grids: dict[int, dict], cells: int = 1) -> dict:
    """Spread (max - min accuracy over the grid, in points) per seed, and the mean grid.

    ``*_spread`` is over every manifestation; ``*_resolved_spread`` over those with at least
    ``cells`` steps (``resolved_min_steps``), which can resolve the model's theta(t).
    """
    out: dict[str, Any] = {"reading": next(iter(grids.values())).get("reading"), "resolved_min_steps": cells}
    for split in ("test", "val"):
        for key, min_steps in (("spread", 1), ("resolved_spread", cells)):
            spreads = [_spread(g["accuracy"], split, min_steps) for g in grids.values()]
            spreads = [s for s in spreads if math.isfinite(s)]
            if spreads:
                e = estimate(spreads)
                out[f"{split}_{key}_mean"], out[f"{split}_{key}_std"] = e.mean, e.std
    first = next(iter(grids.values()))["accuracy"]
    for split in ("test", "val"):  # the mean grid on every split it was evaluated on
        if split != "test" and not any(split in cell for row in first.values() for cell in row.values()):
            continue
        mean_grid: dict[str, dict[str, float]] = {}
        for scheme, row in first.items():
            mean_grid[scheme] = {}
            for n in row:
                # a seed's grid without this cell (a record edited by hand) has no value for it, not a KeyError
                cells = [g["accuracy"].get(scheme, {}).get(n, {}).get(split) for g in grids.values()]
                cells = [c for c in cells if c is not None]
                mean_grid[scheme][n] = 100 * sum(cells) / len(cells) if cells else math.nan
        out[f"{split}_accuracy_mean"] = mean_grid
    return out


def _compression(reports: dict[int, dict]) -> dict:
    values = list(reports.values())
    out: dict[str, Any] = {
        "n_basis_after": values[0]["n_basis_after"], "n_steps_after": values[0]["n_steps_after"],
        "finetune_epochs": values[0]["finetune_epochs"],
        "params_ratio_mean": _finite_estimate([_ratio(v["params_after"], v["params_before"]) for v in values]).mean,
    }
    def measured(value: float | None) -> float:  # a steps record may hold null for "not measured" (records.py)
        return math.nan if value is None else value

    for key in ("accuracy_before", "accuracy_projected", "accuracy_after"):
        out[f"{key}_mean"] = estimate([100 * measured(v[key]) for v in values]).mean
    for key, name in (("accuracy_projected", "projected_diff"), ("accuracy_after", "finetuned_diff")):
        e = estimate([100 * (measured(v[key]) - v["accuracy_before"]) for v in values])
        out[f"{name}_mean"], out[f"{name}_ci95"] = e.mean, [e.low, e.high]
    for key in ("speedup", "onnx_speedup"):  # eager torch, and ONNX Runtime where measured
        if key not in values[0]:
            continue
        speedups: dict[str, Any] = {}
        for b in values[0][key]:
            e = _finite_estimate([v[key][b] for v in values if b in v.get(key, {}) and v[key][b] is not None])
            speedups[b] = {"mean": e.mean, "ci95": [e.low, e.high]}
        out[key] = speedups
    for key in ("latency_before", "latency_after", "onnx_latency_before", "onnx_latency_after"):
        if key in values[0]:
            out[f"{key}_ms"] = {b: 1e3 * estimate([v[key][b] for v in values if b in v.get(key, {})]).mean
                                for b in values[0][key]}
    return out


# --- writing ------------------------------------------------------------------------------------------
def _pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _counted(arm: dict, key: str, form: str) -> str:
    """An arm's mean of ``key``, ``n/a`` where no run recorded it, with ``(n=k)`` where only some did."""
    mean, n = arm.get(f"{key}_mean"), arm.get(f"{key}_n", 0)
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{mean:{form}}" + (f" (n={n})" if n != arm["n"] else "")


def _interval(pair: list, digits: int = 2) -> str:
    if not pair or pair[0] is None or not math.isfinite(pair[0]):
        return "-"
    return f"[{pair[0]:+.{digits}f}, {pair[1]:+.{digits}f}]"


def format_report(summary: dict) -> str:
    """``report.md``: the arms, the comparisons, invariance and compression where measured."""
    lines = [f"# Experiment `{summary['experiment']}`", ""]
    if summary.get("description"):
        lines += [summary["description"].strip(), ""]
    lines += [f"Spec: `{summary.get('spec_file')}`; seeds {summary['seeds']}.", ""]
    if summary.get("seed_rule"):
        rule = summary["seed_rule"]
        lines += [f"Seeds by the spec's rule (min {rule['min']}, max {rule['max']}, every comparison's accuracy "
                  f"interval at most ±{rule['half_width']:g} points, on test and, where held out, validation): "
                  f"{rule['text']}.", ""]
    lines += ["Commands that produced it:", ""]
    lines += [f"    {c}" for c in dict.fromkeys(summary.get("commands") or [])] + [""]
    if summary.get("reused"):
        lines += ["Runs copied from another experiment folder (`--reuse`: the same training config and seed, so the "
                  "same run; its times were measured in that suite's sitting):", ""]
        lines += [f"- `{run}` from `{source}`" for run, source in summary["reused"].items()] + [""]
    lines += ["Accuracies are the final epoch's, in percent (mean ± std over seeds); validation is where settings "
              "are chosen, test is only reported. Time is each run's total training wall time (per-epoch evaluation "
              "and checkpoints included); CPU time is the process's CPU seconds over the same epochs: it moves less "
              "than wall time when other programs share the machine, but it still moves with them (cache, memory "
              "bandwidth, clock speed), so its ratios are firmest between runs of one sitting. Training FLOPs and "
              "training CPU time cover the training steps only (no evaluation, no checkpoints); FLOPs are counted, "
              "not timed, so nothing else on the machine moves them.", ""]
    lines += ["## Arms", "", "| arm | n | test accuracy | validation accuracy | time (s) | CPU time (s) | training FLOPs "
              "| training CPU time (s) | parameters |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, a in summary["arms"].items():
        params = f"{a['params_mean']:,.0f}" if a["params_mean"] is not None and math.isfinite(a["params_mean"]) else "-"
        lines.append(f"| {name} | {a['n']} | {_pm(a['accuracy_mean'], a['accuracy_std'])} | "
                     f"{_pm(a['val_accuracy_mean'], a['val_accuracy_std'])} | {_pm(a['time_mean'], a['time_std'], 1)} | "
                     f"{_pm(a.get('cpu_time_mean'), a.get('cpu_time_std'), 1)} | {_counted(a, 'train_flops', '.3g')} | "
                     f"{_counted(a, 'train_cpu_time', '.1f')} | {params} |")
    lines += text_arm_lines(summary["arms"])
    if summary["comparisons"]:
        lines += comparison_lines(summary["comparisons"])
    invariance = {k: a["invariance"] for k, a in summary["arms"].items() if "invariance" in a}
    if invariance:
        lines += ["", "## Manifestation invariance", "",
                  "Spread = max - min accuracy over every evaluated (scheme, steps), per seed (points). Resolved: "
                  "over the manifestations with at least as many steps as the model has cells (basis functions or "
                  "units) per stage; fewer steps cannot resolve theta(t).", "",
                  "| arm | test spread | resolved (steps >=) | validation spread | read as |",
                  "|---|---:|---:|---:|---|"]
        for name, inv in invariance.items():
            resolved = _pm(inv.get('test_resolved_spread_mean'), inv.get('test_resolved_spread_std'))
            lines.append(f"| {name} | {_pm(inv.get('test_spread_mean'), inv.get('test_spread_std'))} | "
                         f"{resolved} ({inv.get('resolved_min_steps', 1)}) | "
                         f"{_pm(inv.get('val_spread_mean'), inv.get('val_spread_std'))} | {inv.get('reading') or '-'} |")
        lines += gap_lines(invariance) + loss_change_lines(invariance)
        for name, inv in invariance.items():
            for split, words in (("test", "test"), ("val", "validation")):
                if f"{split}_accuracy_mean" not in inv:
                    continue
                grid = inv[f"{split}_accuracy_mean"]
                steps = list(next(iter(grid.values())))
                lines += ["", f"Mean {words} accuracy of `{name}` by manifestation:", "",
                          "| scheme | " + " | ".join(steps) + " |", "|---|" + "---:|" * len(steps)]
                for scheme, row in grid.items():
                    lines.append(f"| {scheme} | " + " | ".join(_pm(row[n], None) for n in steps) + " |")
    compression = {k: a["compression"] for k, a in summary["arms"].items() if "compression" in a}
    if compression:
        lines += ["", "## Compression", "",
                  "| arm | to (basis, steps) | params | before | projected (diff) | fine-tuned (diff) | speed-up |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for name, c in compression.items():
            speed = "; ".join(f"{label} " + ", ".join(f"batch {b}: {v['mean']:.2f}x" for b, v in c[key].items()
                                                      if v["mean"] is not None)
                              for key, label in (("speedup", "eager"), ("onnx_speedup", "ONNX Runtime")) if key in c)
            speed = speed or "-"
            tuned = (f"{_pm(c['accuracy_after_mean'], None)} ({c['finetuned_diff_mean']:+.2f} "
                     f"{_interval(c['finetuned_diff_ci95'])})" if c["finetune_epochs"] else "-")
            lines.append(f"| {name} | {c['n_basis_after']}, {c['n_steps_after']} | {c['params_ratio_mean']:.2f}x | "
                         f"{_pm(c['accuracy_before_mean'], None)} | {_pm(c['accuracy_projected_mean'], None)} "
                         f"({c['projected_diff_mean']:+.2f} {_interval(c['projected_diff_ci95'])}) | {tuned} | {speed} |")
        lines += compression_comparison_lines(summary.get("compression_comparisons") or [])
    if summary["unfinished"]:
        lines += ["", f"## Not yet counted ({len(summary['unfinished'])} runs)", ""]
        lines += [f"- {u}" for u in summary["unfinished"]]
    plot_files = PLOT_FILES + loss_plot_files(summary["arms"])  # a text suite's loss against FLOPs (loss_plots.py)
    lines += ["", "Plots: " + ", ".join(f"`{PLOTS_DIR}/{p}`" for p in plot_files), ""]
    return "\n".join(lines)


def write_report(folder: str | Path, *, out: str | Path | None = None, plots: bool = True, quiet: bool = False) -> dict:
    """Write ``report.md``, ``summary.json`` and (with matplotlib) the plots into ``out`` (default ``folder``)."""
    folder = user_path(folder)
    if not (folder / "experiment.json").is_file():
        raise ConfigError(f"run: {folder} is not an experiment folder (no experiment.json); "
                          "give the --out of contdepth experiment")
    target = check_output_path(out if out is not None else folder, "out", folder=True)
    _check_report_folder(target, folder)
    spec, runs, unfinished = collect(folder)
    summary = summarize(folder, collected=(spec, runs, unfinished))
    target.mkdir(parents=True, exist_ok=True)
    clean = to_json_value(summary, "summary", strict=False, non_finite="null")  # strict JSON for every parser
    atomic_write_text(target / SUMMARY_FILE, json.dumps(clean, indent=1) + "\n")
    atomic_write_text(target / REPORT_FILE, format_report(clean))
    written = [target / SUMMARY_FILE, target / REPORT_FILE]
    if plots:
        try:
            images = render_plots(folder, runs=runs)
        except ImportError as exc:
            if not quiet:
                print(f"contdepth report: plots skipped: {exc}")
            images = {}
        (target / PLOTS_DIR).mkdir(exist_ok=True)
        for name, data in images.items():
            atomic_write_bytes(target / PLOTS_DIR / name, data)
            written.append(target / PLOTS_DIR / name)
    if not quiet:
        print(format_report(clean))
        print("wrote " + ", ".join(str(p) for p in written))
    return clean


def _check_report_folder(target: Path, folder: Path) -> None:
    """``--out`` is the experiment folder, a new or empty folder, or one holding a report written before.

    A report replaces ``report.md``, ``summary.json`` and ``plots/*.png``: in a folder of the
    user's (one without contdepth's ``summary.json``) those could be theirs, and in (or under)
    another experiment's folder they are that suite's own report. None of them, nor ``plots/``,
    may be a link: a report is written into ``--out``, never through a link to elsewhere.
    """
    suite = experiment_folder_of(target)
    if suite is not None and suite.resolve() != folder.resolve():
        raise ConfigError(f"out: {target} lies in the experiment folder {suite}, another suite's; its report.md, "
                          "summary.json and plots are that suite's: choose a new or empty --out")
    for path in (target / SUMMARY_FILE, target / REPORT_FILE, target / PLOTS_DIR,
                 *(target / PLOTS_DIR / name for name in (*PLOT_FILES, LOSS_PLOT_FILE))):
        if path.is_symlink():
            raise ConfigError(f"out: {path} is a link; a report is never written through a link (remove it, or "
                              "choose a new --out)")
    if (target / PLOTS_DIR).exists() and not (target / PLOTS_DIR).is_dir():
        raise ConfigError(f"out: {target / PLOTS_DIR} is not a folder; choose a new --out")
    if not target.exists() or target.resolve() == folder.resolve() or not any(target.iterdir()):
        return
    try:
        ours = json.loads(read_regular_text(target / SUMMARY_FILE, "a report summary")).get("format") == SUMMARY_FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ConfigError(f"out: {target} is not empty and holds no report written by contdepth; its report.md, "
                          f"summary.json or plots could be yours: choose a new or empty --out")


def render_plots(folder: str | Path, *, runs: dict | None = None) -> dict[str, bytes]:
    """PNG bytes: test accuracy against time (a point per seed), and per epoch (mean and ± std band); a suite with
    language-model arms also gets validation loss against training FLOPs (`contdepth.experiment.loss_plots`).

    ``runs`` is [`collect`][contdepth.experiment.collect]'s per-run table when the caller has it already.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'contdepth[plot]'") from exc
    import numpy as np

    if runs is None:
        _, runs, _ = collect(folder)
    out: dict[str, bytes] = {}
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for i, (arm, seeds) in enumerate(runs.items()):
        if not seeds:
            continue
        times = [v["time"] for v in seeds.values()]
        accs = [v["accuracy"] for v in seeds.values()]
        ax.scatter(times, accs, label=arm, color=f"C{i}", s=22)
        ax.scatter([np.mean(times)], [np.mean(accs)], color=f"C{i}", marker="x", s=70)
    out[PLOT_FILES[0]] = _finish(fig, ax, "wall time per run (s)", "each seed a point, x: mean")
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for i, (arm, seeds) in enumerate(runs.items()):
        curves = [v["epochs"] for v in seeds.values()]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        data = np.array([c[:length] for c in curves])
        epochs = np.arange(1, length + 1)
        mean, std = data.mean(axis=0), data.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(length)
        ax.plot(epochs, mean, color=f"C{i}", label=f"{arm} (n={len(curves)})")
        ax.fill_between(epochs, mean - std, mean + std, color=f"C{i}", alpha=0.2)
    out[PLOT_FILES[1]] = _finish(fig, ax, "epoch", "mean ± std over seeds")
    out.update(loss_plots(runs))  # text arms: validation loss against training FLOPs (loss_plots.py)
    return out


def _finish(fig, ax, xlabel: str, title: str) -> bytes:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


__all__ = ["collect", "format_report", "render_plots", "summarize", "write_report"]

"""One comparison of an arm with its baseline, paired by seed: accuracy, cost ratios, the ideal, the target.

Accuracy differences are ``arm - baseline`` in points with a t-interval (`estimate`). Costs
are ratios ``arm / baseline`` of each run's sum over its epochs (`contdepth.experiment.costs`):

* **FLOP ratio** of the training steps: exact, counted, not timed. It is the same for every
  seed when the runs take the same steps; where seeds differ it is the ratio of the FLOPs
  summed over the seeds, with the per-seed range, and ``met`` takes the largest.
* **training CPU-time ratio** (``train_cpu_time``: the training pass, without evaluation or
  checkpoints) and **training wall ratio** (``train_time``): geometric means of the per-seed
  ratios with a t-interval on their logarithms (`ratio_estimate`), never an arithmetic
  interval, which can reach below 0.
* the run wall ratio (``total_time``) and the epoch CPU ratio (``cpu_time``, evaluation
  included), the same way, in ``summary.json`` only.
* the **ideal** ratio from cell-epochs (`ideal_ratio`), for arms that refine.

A seed that lacks a metric in either arm (a run from before it was recorded) is left out of
that ratio *and named* in ``*_missing``; its n says how many seeds the ratio rests on.

A comparison with ``metric: loss`` also pairs the final ``test_loss`` and ``val_loss`` (nats; per
byte for text, lower is better): ``loss_diff_*`` on test, ``val_loss_diff_*`` on validation,
``arm - baseline`` (negative: the arm's loss is lower) with a t-interval (`loss_diffs`).

Targets (`TARGET_KEYS` in `contdepth.experiment.comparison_spec`): ``flops_ratio_max``,
``cpu_time_ratio_max`` (the geometric mean), ``accuracy_diff_min`` (the mean) and
``accuracy_diff_low_min`` (the interval's lower end); in loss ``loss_diff_max`` (the mean),
``loss_diff_high_max`` (the interval's upper end) and ``loss_abs_diff_max`` (the whole interval
within ± it). Accuracy and loss targets are decided on the test split (`TARGET_SPLIT`).
A loss comparison also reports the FLOPs the arm needs to first reach the baseline's final
*validation* loss, over the baseline's training FLOPs, and decides ``flops_to_target_ratio_max``
on them (`contdepth.experiment.flops_to_target`).
``time_ratio_max``, from specs written before these existed, is read as ``cpu_time_ratio_max``:
``met`` never uses wall time, which moves with whatever else runs on the machine. A target whose metric no seed has is
undecided (``met`` is ``None``) unless another target already fails.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from .comparison_spec import LOSS_TARGET_KEYS
from .costs import ideal_ratio
from .flops_to_target import TARGET_KEY as FLOPS_TO_TARGET_KEY, check as flops_to_target_check
from .flops_to_target import flops_to_target, flops_to_target_lines
from .losses import loss_comparison_lines
from .model_stages import model_runs
from .stats import estimate, paired, ratio_estimate

# (summary prefix, run key, words): the timed ratios, each a geometric mean with a log-scale interval.
TIME_RATIOS = (
    ("cpu_time_ratio", "train_cpu_time", "training CPU time"),
    ("train_time_ratio", "train_time", "training wall time"),
    ("epoch_cpu_time_ratio", "cpu_time", "CPU time with evaluation"),
    ("time_ratio", "time", "run wall time"),
)
LEGACY_TARGETS = {"time_ratio_max": "cpu_time_ratio_max"}
#: The split difference targets are decided on: test, as the seeds rule reads it (`contdepth.experiment.seeds`);
#: validation is reported beside it. Loss targets read ``loss_diff_*`` (test), never ``val_loss_diff_*``.
TARGET_SPLIT = "test"


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _gaps(seeds: list, a: list[dict], b: list[dict], key: str, names: tuple[str, str]) -> tuple[list, list[str]]:
    """``(seeds with the metric in both arms, notes naming the others)``.

    A note covers the seeds that lack it in the same way: ``seed 3 has no train_cpu_time in
    scratch``, ``seeds 0, 1 have no train_flops in refined and scratch``; a value of 0 (a
    coarse clock) is named as such: ``seed 2 has train_time 0 in scratch``.
    """
    kept: list = []
    groups: dict[str, list] = {}
    for seed, x, y in zip(seeds, a, b):
        runs = tuple(zip(names, (x.get(key), y.get(key))))
        absent = [name for name, v in runs if v is None or (isinstance(v, float) and math.isnan(v))]
        zero = [name for name, v in runs if name not in absent and not _positive(v)]
        if not absent and not zero:
            kept.append(seed)
            continue
        parts = ([f"no {key} in {' and '.join(absent)}"] if absent else []) + (
            [f"{key} 0 in {' and '.join(zero)}"] if zero else [])
        groups.setdefault("; ".join(parts), []).append(seed)
    notes = [(f"seed {s[0]} has " if len(s) == 1 else f"seeds {', '.join(map(str, s))} have ") + what
             for what, s in groups.items()]
    return kept, notes


def flops_ratio(seeds: list, a: list[dict], b: list[dict], names: tuple[str, str]) -> dict[str, Any]:
    """The exact FLOP ratio of the training steps: its value, per seed, its range, n and the seeds without it."""
    kept, notes = _gaps(seeds, a, b, "train_flops", names)
    rows = {s: (x["train_flops"], y["train_flops"]) for s, x, y in zip(seeds, a, b) if s in kept}
    per_seed = {s: Fraction(int(x), int(y)) for s, (x, y) in rows.items()}
    out: dict[str, Any] = {"flops_ratio": None, "flops_ratio_range": [None, None], "flops_ratio_n": len(per_seed),
                           "flops_ratio_per_seed": {str(s): float(r) for s, r in per_seed.items()},
                           "flops_ratio_seeds_differ": len(set(per_seed.values())) > 1, "flops_ratio_missing": notes}
    if per_seed:
        pooled = Fraction(sum(int(x) for x, _ in rows.values()), sum(int(y) for _, y in rows.values()))
        out["flops_ratio"] = float(pooled)
        out["flops_ratio_range"] = [float(min(per_seed.values())), float(max(per_seed.values()))]
    return out


def time_ratio(prefix: str, key: str, seeds: list, a: list[dict], b: list[dict], names: tuple[str, str]
               ) -> dict[str, Any]:
    """``PREFIX_mean`` (geometric), ``_ci95`` (log-scale t-interval), ``_n`` and ``_missing`` of the ``key`` ratio."""
    kept, notes = _gaps(seeds, a, b, key, names)
    ratios, beyond = [], []
    for s, x, y in zip(seeds, a, b):
        if s in kept:  # both positive and finite, yet 1e9 / 5e-324 is inf and 5e-324 / 1e9 is 0: no logarithm
            r = x[key] / y[key]
            if _positive(r):
                ratios.append(r)
            else:
                beyond.append(s)
    if beyond:
        notes.append((f"seed {beyond[0]} has " if len(beyond) == 1 else f"seeds {', '.join(map(str, beyond))} have ")
                     + f"a {key} ratio outside the floating-point range")
    e = ratio_estimate(ratios)
    return {f"{prefix}_mean": e.mean, f"{prefix}_ci95": [e.low, e.high], f"{prefix}_n": e.n,
            f"{prefix}_missing": notes}


def compare(c, runs: dict[str, dict[int, dict]], spec) -> dict[str, Any]:
    """The comparison ``c`` (a `Comparison`) of ``runs[arm][seed]`` (`collect`'s table) under ``spec``."""
    seeds, a, b = paired(model_runs(runs[c.arm], c.arm_model), model_runs(runs[c.baseline], c.baseline_model))
    names = (c.arm, c.baseline)
    diff = estimate([x["accuracy"] - y["accuracy"] for x, y in zip(a, b)])
    vdiff = estimate([x["val_accuracy"] - y["val_accuracy"] for x, y in zip(a, b)])
    out: dict[str, Any] = {
        "arm": c.arm, "baseline": c.baseline, "n": diff.n, "seeds": seeds,
        "accuracy_diff_mean": diff.mean, "accuracy_diff_std": diff.std, "accuracy_diff_ci95": [diff.low, diff.high],
        "val_accuracy_diff_mean": vdiff.mean, "val_accuracy_diff_ci95": [vdiff.low, vdiff.high],
    }
    if not c.trained_only:  # a compressed model's side: accuracy only (`contdepth.experiment.model_stages`)
        out.update(label=c.label, arm_model=c.arm_model, baseline_model=c.baseline_model, ideal_ratio=None,
                   flops_ratio=None, flops_ratio_range=[None, None], flops_ratio_n=0, target=dict(c.target))
        out["met"] = target_met(c.target, diff, out) if c.target else None
        return out
    out.update(flops_ratio(seeds, a, b, names))
    for prefix, key, _ in TIME_RATIOS:
        out.update(time_ratio(prefix, key, seeds, a, b, names))
    arm_config, base_config = spec.config(c.arm, spec.seeds[0]), spec.config(c.baseline, spec.seeds[0])
    refines = bool(arm_config.refine_at or base_config.refine_at)
    out["ideal_ratio"] = ideal_ratio(arm_config, base_config) if refines else None
    out["target"] = dict(c.target)
    if c.metric == "loss":
        out.update(loss_diffs(seeds, a, b))
        out.update(flops_to_target(seeds, a, b, names))  # FLOPs to the baseline's final val_loss (flops_to_target.py)
        checks = target_checks(c.target, diff, out)
        out["loss_targets_met"] = {k: v for k, v in checks.items() if k in LOSS_TARGET_KEYS}
        if FLOPS_TO_TARGET_KEY in c.target:
            out["flops_to_target_met"] = checks[FLOPS_TO_TARGET_KEY]
    out["met"] = target_met(c.target, diff, out) if c.target else None
    return out


def loss_diffs(seeds: list, a: list[dict], b: list[dict]) -> dict[str, Any]:
    """``loss_diff_*`` (test) and ``val_loss_diff_*`` (validation): ``arm - baseline`` of the final loss per seed,
    its mean, std, 95 % t-interval, n and per-seed values; a seed without the loss in either run is left out."""
    out: dict[str, Any] = {"metric": "loss", "loss_targets_split": TARGET_SPLIT}
    for prefix, key in (("", "test_loss"), ("val_", "val_loss")):
        per_seed = {str(s): x[key] - y[key] for s, x, y in zip(seeds, a, b)
                    if _finite(x.get(key)) and _finite(y.get(key))}
        e = estimate(list(per_seed.values()))
        out.update({f"{prefix}loss_diff_mean": e.mean, f"{prefix}loss_diff_std": e.std,
                    f"{prefix}loss_diff_ci95": [e.low, e.high], f"{prefix}loss_diff_n": e.n,
                    f"{prefix}loss_diff_per_seed": per_seed})
    return out


def target_checks(target: dict, diff, costs: dict) -> dict[str, bool | None]:
    """Each target of ``target`` met (``True``), missed (``False``) or undecided (``None``).

    Undecided: fewer than 2 paired seeds, or a target whose metric some of the paired seeds lack
    (``flops_ratio_n`` / ``cpu_time_ratio_n`` / ``loss_diff_n`` below ``diff.n``): a claim about n
    seeds is decided on those n seeds, never on the subset that happens to have the metric.
    """
    if diff.n < 2:
        return dict.fromkeys(target)  # one seed cannot meet a claim about the noise
    checks: dict[str, bool | None] = {}
    if "flops_ratio_max" in target:
        high = costs["flops_ratio_range"][1]
        whole = costs.get("flops_ratio_n", diff.n) >= diff.n
        checks["flops_ratio_max"] = None if high is None or not whole else high <= target["flops_ratio_max"]
    for key in ("cpu_time_ratio_max", "time_ratio_max"):  # the second: older specs' name for the first
        if key in target:
            mean = costs["cpu_time_ratio_mean"]
            whole = costs.get("cpu_time_ratio_n", diff.n) >= diff.n
            checks[key] = None if mean is None or not math.isfinite(mean) or not whole else mean <= target[key]
    if "accuracy_diff_min" in target:
        checks["accuracy_diff_min"] = diff.mean >= target["accuracy_diff_min"]
    if "accuracy_diff_low_min" in target:
        checks["accuracy_diff_low_min"] = math.isfinite(diff.low) and diff.low >= target["accuracy_diff_low_min"]
    mean, (low, high) = costs.get("loss_diff_mean"), costs.get("loss_diff_ci95") or [None, None]
    decided = costs.get("loss_diff_n", 0) >= diff.n and _finite(mean) and _finite(low) and _finite(high)
    for key, holds in (("loss_diff_max", lambda t: mean <= t), ("loss_diff_high_max", lambda t: high <= t),
                       ("loss_abs_diff_max", lambda t: -t <= low and high <= t)):
        if key in target:
            checks[key] = holds(target[key]) if decided else None
    if FLOPS_TO_TARGET_KEY in target:
        checks[FLOPS_TO_TARGET_KEY] = flops_to_target_check(target[FLOPS_TO_TARGET_KEY], costs, diff.n)
    return checks


def target_met(target: dict, diff, costs: dict) -> bool | None:
    """Whether every target holds: ``False`` if one fails, ``None`` if one cannot be decided (`target_checks`)."""
    if diff.n < 2:
        return None  # one seed cannot meet a claim about the noise
    checks = list(target_checks(target, diff, costs).values())
    if False in checks:
        return False
    return None if None in checks else True


# --- writing ------------------------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _ratio_cell(c: dict, prefix: str) -> str:
    mean, (low, high), n = c.get(f"{prefix}_mean"), c.get(f"{prefix}_ci95") or [None, None], c.get(f"{prefix}_n", 0)
    if not _finite(mean):
        return "n/a"
    interval = f" [{low:.3f}, {high:.3f}]" if _finite(low) else ""
    return f"{mean:.3f}{interval}, n={n}"


def _flops_cell(c: dict) -> str:
    if not _finite(c.get("flops_ratio")):
        return "n/a"
    text = f"{c['flops_ratio']:.3f}, n={c['flops_ratio_n']}"
    if c.get("flops_ratio_seeds_differ"):
        low, high = c["flops_ratio_range"]
        text += f" (seeds differ: {low:.3f} to {high:.3f})"
    return text


def _target_cell(target: dict) -> str:
    if not target:
        return "-"
    return ", ".join(f"{k} {v:g}" + (f" (read as {LEGACY_TARGETS[k]})" if k in LEGACY_TARGETS else "")
                     for k, v in target.items())


def _interval(pair: list) -> str:
    if not pair or not _finite(pair[0]):
        return "-"
    return f"[{pair[0]:+.2f}, {pair[1]:+.2f}]"


def comparison_lines(comparisons: list[dict]) -> list[str]:
    """The report's comparisons section: the table, then every seed a ratio leaves out, named."""
    lines = ["", "## Comparisons (paired by seed, 95 % t-intervals)", "",
             "Cost ratios are arm / baseline over each run's epochs. Ideal: the blocks' cell-epochs (rate "
             "evaluations per example, summed over epochs), the least a refinement arm can cost; the FLOP ratio of "
             "the training steps adds what every epoch pays whatever the depth (stem, stitches, head), so it is the "
             "reachable ideal, exact. CPU and wall ratios are of the training pass only (no evaluation, no "
             "checkpoints): geometric means over seeds with t-intervals on the log ratios. `met` uses the FLOP "
             "and CPU-time ratios, never wall time.", "",
             "| arm vs baseline | n | test accuracy diff (points) | validation diff | ideal (cell-epochs) | FLOP ratio "
             "| training CPU-time ratio | training wall ratio | target | met |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    notes: list[str] = []
    for c in comparisons:
        met = {True: "yes", False: "**no**", None: "-"}[c["met"]]
        diff = f"{c['accuracy_diff_mean']:+.2f}" if _finite(c["accuracy_diff_mean"]) else "-"
        vdiff = f"{c['val_accuracy_diff_mean']:+.2f}" if _finite(c["val_accuracy_diff_mean"]) else "-"
        ideal = f"{c['ideal_ratio']:.3f}" if _finite(c.get("ideal_ratio")) else "-"
        lines.append(f"| {c.get('label') or c['arm'] + ' vs ' + c['baseline']} | {c['n']} | {diff} {_interval(c['accuracy_diff_ci95'])} | "
                     f"{vdiff} {_interval(c['val_accuracy_diff_ci95'])} | {ideal} | {_flops_cell(c)} | "
                     f"{_ratio_cell(c, 'cpu_time_ratio')} | {_ratio_cell(c, 'train_time_ratio')} | "
                     f"{_target_cell(c['target'])} | {met} |")
        for label, prefix in (("FLOP ratio", "flops_ratio"), ("training CPU-time ratio", "cpu_time_ratio"),
                              ("training wall ratio", "train_time_ratio")):
            missing = c.get(f"{prefix}_missing") or []
            if missing:
                notes.append(f"- {c['arm']} vs {c['baseline']}: {label}: n={c.get(f'{prefix}_n', 0)}, "
                             + "; ".join(missing))
    if notes:
        lines += ["", "Seeds a ratio leaves out (named, never dropped silently):", ""] + notes
    return lines + loss_comparison_lines(comparisons) + flops_to_target_lines(comparisons)


__all__ = ["LEGACY_TARGETS", "TARGET_SPLIT", "TIME_RATIOS", "compare", "comparison_lines", "flops_ratio", "loss_diffs",
           "target_checks", "target_met", "time_ratio"]

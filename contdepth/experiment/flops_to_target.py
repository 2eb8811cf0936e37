"""FLOPs to the baseline's final validation loss: how much training an arm needs to get where the baseline ended.

For a comparison with ``metric: loss``, per seed: the arm's metrics rows are walked in order,
summing ``train_flops``; the arm's **FLOPs to target** is that sum at the first row whose
``val_loss`` is at or below the baseline's *final* ``val_loss`` of the same seed. The target is
read on validation, never on test: where a run stops is a choice, and choices are made on
validation. The report gives the ratio of it to the baseline's training FLOPs of the whole run.

* A row is an evaluation point (an epoch; for a text run every ``eval_every`` steps), so the
  resolution is one row: a run that gets there mid-epoch is charged the whole epoch.
* A seed whose arm never gets there has not reached it (``None``) and is counted: "reached on
  k of n seeds". The geometric mean and its t-interval on the log ratios (`ratio_estimate`)
  are over the k seeds that reached it, so with k < n they speak of those k only.
* A seed without the numbers (no final ``val_loss`` in the baseline, a row without
  ``train_flops`` in either run) is left out of n and named in ``flops_to_target_ratio_missing``.
* The baseline's own ratio is at most 1, not 1: a validation loss that moves down and up can
  touch its final value before the last row. Its per-seed values are reported beside the arm's
  (``flops_to_target_baseline_ratio_per_seed``), since the arm's ratio is read against them.

The target ``flops_to_target_ratio_max`` (loss comparisons only) is met when every paired seed
reached the baseline's final validation loss and the geometric mean ratio is at most the
maximum; it is missed when a seed never reached it (the claim "the arm gets there" fails on that
seed) or the mean is above the maximum; undecided with fewer than 2 paired seeds or with a seed
left out for lack of numbers.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from ..common.validate import is_number
from .comparison_spec import FLOPS_TO_TARGET_KEY as TARGET_KEY
from .stats import ratio_estimate

PREFIX = "flops_to_target_ratio"
UNITS = {PREFIX: "arm's training FLOPs up to its first evaluation at or below the baseline's final val_loss, over "
                 "the baseline's training FLOPs of the whole run; geometric mean over the seeds that reached it, "
                 "t-interval on the log ratios"}


def val_loss_curve(history: list[dict]) -> list[list]:
    """Per metrics row ``[training FLOPs summed through this row, the row's val_loss]``.

    The sum is ``None`` from the first row without an integer ``train_flops`` on (a run trained before FLOPs were
    counted); the loss is ``None`` where the row has no finite ``val_loss`` (no validation split).
    """
    out: list[list] = []
    total: int | None = 0
    for row in history:
        flops, loss = row.get("train_flops"), row.get("val_loss")
        ok = is_number(flops, finite=True) and float(flops).is_integer() and flops >= 0
        total = total + int(flops) if total is not None and ok else None
        out.append([total, float(loss) if is_number(loss, finite=True) else None])
    return out


def first_reach(curve: list[list], target: float) -> tuple[int, int] | None:
    """``(row, FLOPs)`` at the first row (1-based) of ``curve`` whose loss is at most ``target``; ``None`` if none."""
    for row, (flops, loss) in enumerate(curve, start=1):
        if loss is not None and loss <= target:
            return row, flops
    return None


def _lacks(curve: Any, final: bool) -> str | None:
    """Why a run's curve cannot be read (``final``: the baseline, whose last loss is the target); ``None`` if it can."""
    if not isinstance(curve, list) or not curve:
        return "no metrics rows"
    if curve[-1][0] is None:
        return "rows without train_flops"
    if final and curve[-1][1] is None:
        return "no final val_loss"
    return None


def _named(groups: dict[str, list]) -> list[str]:
    return [(f"seed {s[0]} has " if len(s) == 1 else f"seeds {', '.join(map(str, s))} have ") + what
            for what, s in groups.items()]


def flops_to_target(seeds: list, a: list[dict], b: list[dict], names: tuple[str, str]) -> dict[str, Any]:
    """The ``flops_to_target_ratio_*`` fields of one loss comparison from `collect`'s entries (``val_loss_curve``).

    ``_mean`` (geometric) and ``_ci95`` over the ``_reached`` seeds that got there, ``_n`` seeds measured,
    ``_per_seed`` (``None``: not reached), ``_row_per_seed`` (the 1-based row it was reached at), ``_missing``
    (seeds not measured, named) and ``flops_to_target_baseline_ratio_per_seed``.
    """
    per_seed: dict[str, float | None] = {}
    rows: dict[str, int | None] = {}
    own: dict[str, float] = {}
    groups: dict[str, list] = {}
    for seed, x, y in zip(seeds, a, b):
        curves = x.get("val_loss_curve"), y.get("val_loss_curve")
        why = [f"{w} in {n}" for n, w in zip(names, (_lacks(curves[0], False), _lacks(curves[1], True))) if w]
        total = curves[1][-1][0] if not why else 0
        if not why and total <= 0:
            why = [f"train_flops 0 in {names[1]}"]
        if why:
            groups.setdefault("; ".join(why), []).append(seed)
            continue
        target = curves[1][-1][1]
        reached = first_reach(curves[0], target)
        rows[str(seed)] = reached[0] if reached else None
        per_seed[str(seed)] = float(Fraction(reached[1], total)) if reached else None
        own[str(seed)] = float(Fraction(first_reach(curves[1], target)[1], total))
    ratios = [r for r in per_seed.values() if r is not None and 0 < r < math.inf]
    zero = [s for s, r in per_seed.items() if r is not None and not 0 < r < math.inf]
    notes = _named(groups) + ([f"seed{'s' if len(zero) > 1 else ''} {', '.join(zero)} reached it at 0 FLOPs: "
                               "no logarithm, left out of the mean"] if zero else [])
    e = ratio_estimate(ratios)
    return {f"{PREFIX}_mean": e.mean, f"{PREFIX}_ci95": [e.low, e.high], f"{PREFIX}_n": len(per_seed),
            f"{PREFIX}_reached": sum(r is not None for r in per_seed.values()), f"{PREFIX}_per_seed": per_seed,
            f"{PREFIX}_row_per_seed": rows, f"{PREFIX}_missing": notes,
            "flops_to_target_baseline_ratio_per_seed": own, "flops_to_target_split": "val"}


def check(maximum: float, fields: dict, paired: int) -> bool | None:
    """`TARGET_KEY` decided on ``fields`` (`flops_to_target`'s) of a comparison of ``paired`` seeds (see the module)."""
    n, reached, mean = fields.get(f"{PREFIX}_n", 0), fields.get(f"{PREFIX}_reached", 0), fields.get(f"{PREFIX}_mean")
    if paired < 2 or n < paired:
        return None  # a claim about n seeds is decided on all n
    if reached < n:
        return False
    return mean <= maximum if is_number(mean, finite=True) else None


# --- writing ------------------------------------------------------------------------------------------
def reading(c: dict) -> str:
    """Words that follow the numbers: "reached on k of n seeds", then what the interval shows where all did."""
    n, k = c.get(f"{PREFIX}_n", 0), c.get(f"{PREFIX}_reached", 0)
    if not n:
        return "not measured"
    words = f"reached on {k} of {n} seeds"
    if k < n:
        return words + ({0: "", 1: " (the ratio is that seed's)"}.get(k, f" (the mean is of those {k})"))
    low, high = c.get(f"{PREFIX}_ci95") or [None, None]
    if not (is_number(low, finite=True) and is_number(high, finite=True)):
        return words + "; one seed: no interval"
    if high < 1:
        return words + "; fewer FLOPs than the baseline's whole run (the whole interval below 1)"
    if low > 1:
        return words + "; more FLOPs than the baseline's whole run (the whole interval above 1)"
    return words + "; no difference from the baseline's whole run found (the interval holds 1)"


def _mean_cell(c: dict) -> str:
    mean, (low, high) = c.get(f"{PREFIX}_mean"), c.get(f"{PREFIX}_ci95") or [None, None]
    if not is_number(mean, finite=True):
        return "-"
    interval = f" [{low:.3f}, {high:.3f}]" if is_number(low, finite=True) else ""
    return f"{mean:.3f}{interval}, n={c[f'{PREFIX}_reached']}"


def _seed_cell(c: dict) -> str:
    rows = c.get(f"{PREFIX}_row_per_seed") or {}
    return "; ".join(f"{s}: {r:.3f} (row {rows.get(s)})" if r is not None else f"{s}: not reached"
                     for s, r in (c.get(f"{PREFIX}_per_seed") or {}).items()) or "-"


def _target_cell(c: dict) -> str:
    if TARGET_KEY not in (c.get("target") or {}):
        return "-"
    value, met = c["target"][TARGET_KEY], c.get("flops_to_target_met")
    if met is None:
        return f"{TARGET_KEY} {value:g}: undecided"
    if met:
        return f"{TARGET_KEY} {value:g}: yes (every seed reached it; mean {c[f'{PREFIX}_mean']:.3f} <= {value:g})"
    n, k = c[f"{PREFIX}_n"], c[f"{PREFIX}_reached"]
    why = f"reached on {k} of {n} seeds" if k < n else f"mean {c[f'{PREFIX}_mean']:.3f} > {value:g}"
    return f"{TARGET_KEY} {value:g}: **no** ({why})"


def flops_to_target_lines(comparisons: list[dict]) -> list[str]:
    """The report's table of FLOPs to the baseline's final validation loss (nothing without loss comparisons)."""
    losses = [c for c in comparisons if c.get("metric") == "loss" and f"{PREFIX}_n" in c]
    if not losses:
        return []
    lines = ["", "### FLOPs to the baseline's final validation loss", "",
             "Per seed: the arm's training FLOPs up to its first evaluation whose validation loss is at or below the "
             "baseline's final validation loss, over the baseline's training FLOPs of its whole run (chosen on "
             "validation, never test). The resolution is one evaluation: an epoch, or a text run's eval_every "
             "steps. Geometric mean over the seeds that reached it, with a t-interval on the log ratios; \"fewer "
             "FLOPs\" only where every seed reached it and the whole interval lies below 1.", "",
             "| arm vs baseline | ratio (geometric mean) | per seed | reading | target |", "|---|---:|---|---|---|"]
    notes: list[str] = []
    for c in losses:
        label = c.get("label") or f"{c['arm']} vs {c['baseline']}"
        lines.append(f"| {label} | {_mean_cell(c)} | {_seed_cell(c)} | {reading(c)} | {_target_cell(c)} |")
        own = {s: r for s, r in (c.get("flops_to_target_baseline_ratio_per_seed") or {}).items() if r < 1}
        if own:
            notes.append(f"- {label}: {c['baseline']} itself first reached its final validation loss at "
                         + ", ".join(f"{r:.3f} of its FLOPs on seed {s}" for s, r in own.items())
                         + " (its validation loss rose again); read the arm's ratios against these, not only 1")
        if c.get(f"{PREFIX}_missing"):
            notes.append(f"- {label}: n={c[f'{PREFIX}_n']}, " + "; ".join(c[f"{PREFIX}_missing"]))
    return lines + (["", *notes] if notes else [])


def units(comparisons: list[dict]) -> dict[str, str]:
    """``summary.json``'s unit of the ratio, where a comparison has it."""
    return UNITS if any(f"{PREFIX}_n" in c for c in comparisons) else {}


__all__ = ["PREFIX", "TARGET_KEY", "check", "first_reach", "flops_to_target", "flops_to_target_lines", "reading",
           "units", "val_loss_curve"]

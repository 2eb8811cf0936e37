"""Per-seed readouts after training, on every split measured: the gap to the ODE limit, compressed models.

Why per seed and paired: a readout of the seed-mean (a grid of mean accuracies) has no
interval, so it cannot say whether a gap is noise. Each readout here is a per-seed
difference of two numbers measured on the same images of one run, with its t-interval over
seeds (`estimate`), on validation (where settings are chosen) and test (only reported).

* **gap to the ODE limit** (`gap_to_ode`): the training graph's accuracy minus the accuracy
  of the run's ODE limit, the grid's finest ``rk4`` manifestation (`ode_limit`, the one place
  that defines it: rk4 x 16 for a grid up to 16 steps). A manifestation-invariant model has
  a gap near 0; a ResNet read as an ODE need not.
* **loss change to the ODE limit** (`loss_change_to_ode`), where the steps record losses (text
  runs): the ODE limit's loss minus the training graph's, per seed (nats; per byte for text):
  > 0, the limit's loss is higher, the direction of a positive accuracy gap.
* **compressed minus uncompressed** (`compression_comparisons`): the projected and the
  fine-tuned model against the same run before compression, shaped like a comparison
  (``accuracy_diff_*`` on test, ``val_accuracy_diff_*`` on validation).

Accuracies are in points (percent); steps records hold fractions. Words follow numbers (`finding`).
"""

from __future__ import annotations

import math
from typing import Any

from .stats import estimate

#: The scheme whose finest manifestation in a grid stands for the ODE's solution: the highest order evaluated.
ODE_LIMIT_SCHEME = "rk4"
#: Split names of the steps records, and how the report names them.
SPLIT_NAMES = {"val": "validation", "test": "test"}


def ode_limit(grid: dict) -> tuple[str, str] | None:
    """``(scheme, n_steps)`` of the ODE limit in a grid ``{scheme: {n: {split: acc}}}``: its finest rk4; ``None`` without rk4."""
    row = grid.get(ODE_LIMIT_SCHEME)
    if not row:
        return None
    return ODE_LIMIT_SCHEME, max(row, key=int)


def _interval(values: dict[int, float]) -> dict[str, Any]:
    e = estimate(list(values.values()))
    return {"mean": e.mean, "std": e.std, "ci95": [e.low, e.high], "n": e.n,
            "per_seed": {str(s): v for s, v in sorted(values.items())}}


def finding(ci95: Any, n: Any, below: str, above: str) -> str:
    """What a 95 % interval of a difference shows, in words: ``below`` where it lies wholly below 0, ``above`` where
    wholly above; an interval that holds 0 is "no difference found" (never "equal"); one seed has no interval."""
    if not n:
        return "not measured"
    low, high = (ci95 or [None, None])[:2]
    if not (_finite(low) and _finite(high)):
        return "one seed: no interval" if n == 1 else "no interval"
    if high < 0:
        return below
    if low > 0:
        return above
    return "no difference found (the interval holds 0)"


def _to_limit(records: dict[int, dict], table: str, difference) -> dict[str, Any]:
    """``{ode_limit, training_graph, splits, by_split}``: ``difference(trained, limit)`` per seed and split of the
    records' ``table`` (``"accuracy"`` or ``"loss"``); a seed without the table, the training graph's values
    or an rk4 row is left out; empty where no seed had them."""
    values: dict[str, dict[int, float]] = {}
    limits, graphs, splits = set(), set(), []
    for seed, record in records.items():
        grid, trained = record.get(table), record.get("trained")
        limit = ode_limit(grid) if isinstance(grid, dict) else None
        if limit is None or not isinstance(trained, dict):
            continue
        limits.add(f"{limit[0]} x {limit[1]}")
        graphs.add(trained.get("graph") or "-")
        cell = grid[limit[0]][limit[1]]
        for split, value in (trained.get(table) or {}).items():
            if split in cell:
                values.setdefault(split, {})[seed] = difference(value, cell[split])
                splits.append(split)
    if not values:
        return {}
    return {"ode_limit": ", ".join(sorted(limits)), "training_graph": ", ".join(sorted(graphs)),
            "splits": [s for s in SPLIT_NAMES if s in splits],
            "by_split": {split: _interval(v) for split, v in values.items()}}


def gap_to_ode(records: dict[int, dict]) -> dict[str, Any]:
    """``{ode_limit, training_graph, splits, gap_to_ode: {split: {mean, std, ci95, n, per_seed}}}`` in points.

    ``records`` are the steps records' ``manifestations`` by seed. A seed whose record has no
    training-graph accuracy (``trained``) or whose grid has no rk4 is left out of the gap; an
    empty result means no seed had both.
    """
    out = _to_limit(records, "accuracy", lambda trained, limit: 100 * (trained - limit))
    if out:
        out["gap_to_ode"] = out.pop("by_split")
    return out


def loss_change_to_ode(records: dict[int, dict]) -> dict[str, Any]:
    """``{ode_limit, training_graph, splits, by_split: {split: {mean, std, ci95, n, per_seed, finding}}}``.

    Per seed, the loss of the ODE limit minus the training graph's loss (nats; per byte for text),
    from the steps records' ``loss`` grid and ``trained.loss``: > 0, the limit's loss is higher.
    Records from before losses were recorded have neither and are left out; empty where none has.
    """
    out = _to_limit(records, "loss", lambda trained, limit: limit - trained)
    for e in out.get("by_split", {}).values():
        e["finding"] = finding(e["ci95"], e["n"], "lower at the ODE limit", "higher at the ODE limit")
    return out


def compression_per_seed(reports: dict[int, dict]) -> dict[str, dict[str, float | None]]:
    """Each seed's accuracies (points) before, projected and after fine-tuning, on test and (where measured) validation."""
    out: dict[str, dict[str, float | None]] = {}
    for seed, report in sorted(reports.items()):
        row: dict[str, float | None] = {}
        for prefix in ("", "val_"):
            for stage in ("before", "projected", "after"):
                value = report.get(f"{prefix}accuracy_{stage}")
                row[f"{prefix}accuracy_{stage}"] = None if value is None or math.isnan(value) else 100 * value
        out[str(seed)] = row
    return out


def compression_comparisons(arm: str, reports: dict[int, dict]) -> list[dict[str, Any]]:
    """The projected and the fine-tuned model of ``arm`` against the same runs uncompressed, paired by seed.

    Each entry is shaped like a comparison: ``accuracy_diff_*`` on test, ``val_accuracy_diff_*``
    on validation (``n`` 0 there where the steps record has no validation accuracy).
    """
    rows = compression_per_seed(reports)
    tuned = any(r.get("finetune_epochs") for r in reports.values())
    out = []
    for stage, label in (("projected", "projected"), ("after", "fine-tuned")):
        if stage == "after" and not tuned:
            continue
        entry: dict[str, Any] = {"arm": f"{arm} ({label})", "baseline": arm, "kind": "compression", "stage": label}
        for prefix, split in (("", "test"), ("val_", "val")):
            diffs = {int(s): r[f"{prefix}accuracy_{stage}"] - r[f"{prefix}accuracy_before"] for s, r in rows.items()
                     if r[f"{prefix}accuracy_{stage}"] is not None and r[f"{prefix}accuracy_before"] is not None}
            e = _interval(diffs)
            entry[f"{prefix}accuracy_diff_mean"], entry[f"{prefix}accuracy_diff_std"] = e["mean"], e["std"]
            entry[f"{prefix}accuracy_diff_ci95"], entry[f"{prefix}accuracy_diff_n"] = e["ci95"], e["n"]
            entry[f"{prefix}accuracy_diff_per_seed"] = e["per_seed"]
        entry["n"], entry["seeds"] = entry["accuracy_diff_n"], sorted(int(s) for s in entry["accuracy_diff_per_seed"])
        out.append(entry)
    return out


# --- writing ------------------------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cell(mean: Any, ci95: Any, n: Any) -> str:
    if not _finite(mean):
        return "-"
    interval = f" [{ci95[0]:+.2f}, {ci95[1]:+.2f}]" if ci95 and _finite(ci95[0]) else ""
    return f"{mean:+.2f}{interval}, n={n}"


def gap_lines(invariance: dict[str, dict]) -> list[str]:
    """The report's table of the gap to the ODE limit, one row per arm, a column per split."""
    arms = {name: inv for name, inv in invariance.items() if inv.get("gap_to_ode")}
    if not arms:
        return []
    splits = [s for s in SPLIT_NAMES if any(s in inv["gap_to_ode"] for inv in arms.values())]
    lines = ["", "### Gap to the ODE limit (per seed, paired)", "",
             "Training graph's accuracy minus its ODE limit (the grid's finest rk4 manifestation), per seed, "
             "then the mean with its 95 % t-interval over seeds (points). Splits evaluated: "
             + ", ".join(SPLIT_NAMES[s] for s in splits) + ".", "",
             "| arm | training graph | ODE limit | " + " | ".join(f"{SPLIT_NAMES[s]} gap" for s in splits) + " |",
             "|---|---|---|" + "---:|" * len(splits)]
    for name, inv in arms.items():
        cells = [_cell(g.get("mean"), g.get("ci95"), g.get("n")) if (g := inv["gap_to_ode"].get(s)) else "-"
                 for s in splits]
        lines.append(f"| {name} | {inv.get('training_graph', '-')} | {inv.get('ode_limit', '-')} | "
                     + " | ".join(cells) + " |")
    return lines


def loss_change_lines(invariance: dict[str, dict]) -> list[str]:
    """The report's table of the loss change from the training graph to the ODE limit, one row per arm."""
    arms = {name: inv["loss_change_to_ode"] for name, inv in invariance.items() if inv.get("loss_change_to_ode")}
    if not arms:
        return []
    splits = [s for s in SPLIT_NAMES if any(s in change["by_split"] for change in arms.values())]
    lines = ["", "### Loss change to the ODE limit (per seed, paired)", "",
             "The ODE limit's loss (the grid's finest rk4 manifestation) minus the training graph's, per seed, then "
             "the mean with its 95 % t-interval over seeds (nats; per byte for text): > 0, the limit's loss is "
             "higher. \"Higher\" or \"lower\" only where the whole interval lies on one side of 0. Splits "
             "evaluated: " + ", ".join(SPLIT_NAMES[s] for s in splits) + ".", "",
             "| arm | training graph | ODE limit | " + " | ".join(f"{SPLIT_NAMES[s]} change" for s in splits)
             + " | reading |", "|---|---|---|" + "---:|" * len(splits) + "---|"]
    for name, change in arms.items():
        by_split = change["by_split"]
        cells = [f"{g['mean']:+.4f}" + (f" [{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}]" if _finite(g["ci95"][0])
                                        else "") + f", n={g['n']}" if (g := by_split.get(s)) else "-" for s in splits]
        reading = "; ".join(f"{SPLIT_NAMES[s]}: {by_split[s]['finding']}" for s in splits if s in by_split)
        lines.append(f"| {name} | {change['training_graph']} | {change['ode_limit']} | " + " | ".join(cells)
                     + f" | {reading} |")
    return lines


def compression_comparison_lines(entries: list[dict]) -> list[str]:
    """The report's table of compressed minus uncompressed, on test and validation."""
    if not entries:
        return []
    lines = ["", "Compressed minus uncompressed, paired by seed (points, 95 % t-intervals; `-`: not measured):", "",
             "| model vs the run before compression | test diff | validation diff |", "|---|---:|---:|"]
    for c in entries:
        lines.append(f"| {c['arm']} vs {c['baseline']} | "
                     f"{_cell(c['accuracy_diff_mean'], c['accuracy_diff_ci95'], c['accuracy_diff_n'])} | "
                     f"{_cell(c['val_accuracy_diff_mean'], c['val_accuracy_diff_ci95'], c['val_accuracy_diff_n'])} |")
    return lines


__all__ = ["ODE_LIMIT_SCHEME", "compression_comparison_lines", "compression_comparisons", "compression_per_seed",
           "finding", "gap_lines", "gap_to_ode", "loss_change_lines", "loss_change_to_ode", "ode_limit"]

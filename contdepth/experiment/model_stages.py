"""A comparison's side read as a model: the trained run, or its compressed model (projected or fine-tuned).

Why: the controls of a compression claim compare models that are not training runs: a
compressed model against the same run fine-tuned with nothing removed (equal epochs), or
against a small model trained from scratch. Their accuracies come from each run's ``compress``
step record (`contdepth.experiment.steps`), paired by seed as every comparison is. Costs are
not compared there: a compressed model's training cost is its run's plus fine-tuning, which
the step does not count.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

# Comparison model -> the key stem of the compress step's record.
RECORD_STAGE = {"projected": "projected", "fine_tuned": "after"}


def _points(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return 100 * float(value) if ok else math.nan


def model_entry(entry: Mapping[str, Any], model: str) -> dict[str, Any] | None:
    """The run ``entry`` (`collect`'s, percent) as ``model``: itself, or the compressed model's accuracies.

    ``None`` when the run has no compress record (its steps are not done).
    """
    if model == "trained":
        return dict(entry)
    report = (entry.get("steps") or {}).get("compression")
    if not isinstance(report, Mapping):
        return None
    stage = RECORD_STAGE[model]
    return {"accuracy": _points(report.get(f"accuracy_{stage}")),
            "val_accuracy": _points(report.get(f"val_accuracy_{stage}"))}


def model_runs(runs: Mapping[int, Mapping[str, Any]], model: str) -> dict[int, dict[str, Any]]:
    """``{seed: entry}`` of one arm read as ``model``; seeds without the model's record left out."""
    out = {}
    for seed, entry in runs.items():
        view = model_entry(entry, model)
        if view is not None:
            out[seed] = view
    return out


__all__ = ["RECORD_STAGE", "model_entry", "model_runs"]

"""FLOPs to the baseline's final validation loss (issue 30): per seed, the arm's training FLOPs up to its first
evaluation at or below the baseline's final val_loss, over the baseline's training FLOPs; counted, reached or not.

The runs are hand-written metrics histories entered as `collect` enters them, so every number is known by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from contdepth.common.json_values import to_json_value
from contdepth.experiment import ExperimentSpec, summarize
from contdepth.experiment.comparisons import compare
from contdepth.experiment.costs import run_costs
from contdepth.experiment.flops_to_target import first_reach, val_loss_curve
from contdepth.experiment.folder import EXPERIMENT_FORMAT, IDENTITY_VERSION
from contdepth.experiment.losses import run_losses
from contdepth.experiment.report import format_report
from contdepth.train import ConfigError

T_975 = {1: 12.706204736174698, 2: 4.302652729749464}  # t_{0.975, df}
GPT = {"model": "gpt", "model_options": {"width": 16, "heads": 2, "layers": 2, "context": 16, "continuous": True},
       "data": "text", "max_steps": 40, "eval_every": 10}
DIGITS = {"model": "continuousnet", "model_options": {"alpha": 2, "n_basis": 1}, "data": "digits", "epochs": 4,
          "validation_size": 100}


def _spec(comparison: dict, base: dict = GPT) -> ExperimentSpec:
    return ExperimentSpec.from_dict({"base": base, "seeds": [0, 1, 2], "arms": {"a": {}, "b": {"lr": 0.001}},
                                     "comparisons": [{"arm": "b", "baseline": "a", **comparison}]}, source="s.yaml")


def _history(val: list, flops: list) -> list[dict]:
    """Metrics rows (one per evaluation) with these validation losses and training FLOPs."""
    return [{"epoch": i + 1, "test_accuracy": 0.4, "val_accuracy": 0.41, "test_loss": 1.6, "total_time": 2.0 * (i + 1),
             "train_time": 1.5, "train_cpu_time": 1.4, "cpu_time": 1.9, "train_flops": f, "eval_flops": 10,
             "params": 500, **({"val_loss": v} if v is not None else {})} for i, (v, f) in enumerate(zip(val, flops))]


def _entry(history: list[dict]) -> dict:
    """A run as `collect` enters it (accuracies in percent), with its curve of FLOPs and validation loss."""
    last = history[-1]
    return {"accuracy": 100 * last["test_accuracy"], "val_accuracy": 100 * last["val_accuracy"],
            "time": last["total_time"], **run_costs(history), "params": last["params"],
            "epochs": [100 * r["test_accuracy"] for r in history],
            "val_epochs": [100 * r["val_accuracy"] for r in history],
            **run_losses(history), "val_loss_curve": val_loss_curve(history)}


def _summary(folder: Path, spec: ExperimentSpec, runs: dict) -> dict:
    folder.mkdir(exist_ok=True)
    (folder / "experiment.json").write_text(json.dumps({"format": EXPERIMENT_FORMAT, "identity": {},
                                                        "identity_version": IDENTITY_VERSION, "sittings": []}))
    return to_json_value(summarize(folder, collected=(spec, runs, [])), "summary", strict=False, non_finite="null")


# The baseline a trains 100 FLOPs per row, 400 in all; its final val_loss per seed is 1.5, 1.55, 1.5 (seed 2 touches
# 1.45 at row 3 and rises again). The arm b trains 40, 60, 50, 50 FLOPs per row (cumulative 40, 100, 150, 200).
A_VAL = {0: [2.0, 1.8, 1.6, 1.5], 1: [2.0, 1.7, 1.6, 1.55], 2: [2.0, 1.7, 1.45, 1.5]}
B_FLOPS = [40, 60, 50, 50]
B_VAL = {0: [1.9, 1.7, 1.5, 1.4],    # at or below 1.5 first at row 3: 150 / 400 = 0.375
         1: [1.9, 1.8, 1.7, 1.6],    # never at or below 1.55
         2: [1.6, 1.5, 1.45, 1.4]}   # row 2: 100 / 400 = 0.25
B_VAL_ALL = {**B_VAL, 1: [1.9, 1.8, 1.7, 1.55]}  # seed 1 at row 4: 200 / 400 = 0.5


def _runs(b_val: dict = B_VAL, a_val: dict = A_VAL) -> dict:
    return {"a": {s: _entry(_history(v, [100] * 4)) for s, v in a_val.items()},
            "b": {s: _entry(_history(v, B_FLOPS)) for s, v in b_val.items()}}


def _geometric(ratios: list[float]) -> tuple[float, float, float]:
    logs = [math.log(r) for r in ratios]
    n, mean = len(logs), sum(logs) / len(logs)
    half = T_975[n - 1] * math.sqrt(sum((v - mean) ** 2 for v in logs) / (n - 1)) / math.sqrt(n)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def test_the_curve_sums_flops_row_by_row_and_the_first_row_at_or_below_the_target_is_taken():
    curve = val_loss_curve(_history([2.0, None, 1.5, 1.4], [40, 60, 50, 50]))
    assert curve == [[40, 2.0], [100, None], [150, 1.5], [200, 1.4]]
    assert first_reach(curve, 1.5) == (3, 150)  # at or below: equal counts
    assert first_reach(curve, 1.0) is None
    # a row without train_flops (a run from before FLOPs were counted): no sum from there on
    rows = _history([2.0, 1.9, 1.8], [40, 60, 50])
    del rows[1]["train_flops"]
    assert val_loss_curve(rows) == [[40, 2.0], [None, 1.9], [None, 1.8]]


def test_an_arm_that_reaches_the_target_on_two_seeds_of_three_is_counted_and_averaged_over_those_two(tmp_path):
    spec = _spec({"metric": "loss", "target": {"flops_to_target_ratio_max": 1.0}})
    c = compare(spec.comparisons[0], _runs(), spec)
    assert c["flops_to_target_ratio_per_seed"] == {"0": 0.375, "1": None, "2": 0.25}
    assert c["flops_to_target_ratio_row_per_seed"] == {"0": 3, "1": None, "2": 2}
    assert c["flops_to_target_ratio_n"] == 3 and c["flops_to_target_ratio_reached"] == 2
    mean, low, high = _geometric([0.375, 0.25])
    assert c["flops_to_target_ratio_mean"] == pytest.approx(mean) == pytest.approx(math.sqrt(0.375 * 0.25))
    assert c["flops_to_target_ratio_ci95"] == [pytest.approx(low), pytest.approx(high)]
    assert c["flops_to_target_split"] == "val" and c["flops_to_target_ratio_missing"] == []
    # the baseline itself touched its final validation loss at row 3 of seed 2: 300 / 400
    assert c["flops_to_target_baseline_ratio_per_seed"] == {"0": 1.0, "1": 1.0, "2": 0.75}
    # a seed that never got there misses the target, whatever the mean of the others
    assert c["flops_to_target_met"] is False and c["met"] is False
    report = format_report(_summary(tmp_path / "suite", spec, _runs()))
    assert "### FLOPs to the baseline's final validation loss" in report
    assert (f"| b vs a | {mean:.3f} [{low:.3f}, {high:.3f}], n=2 | 0: 0.375 (row 3); 1: not reached; 2: 0.250 (row 2) "
            "| reached on 2 of 3 seeds (the mean is of those 2) | flops_to_target_ratio_max 1: **no** (reached on 2 "
            "of 3 seeds) |") in report
    assert "a itself first reached its final validation loss at 0.750 of its FLOPs on seed 2" in report
    assert "; fewer FLOPs" not in report and "faster" not in report


@pytest.mark.parametrize("maximum, met", [(0.5, True), (0.3, False)])
def test_where_every_seed_reaches_it_the_geometric_mean_decides_and_the_words_follow_the_interval(tmp_path, maximum,
                                                                                                    met):
    spec = _spec({"metric": "loss", "target": {"flops_to_target_ratio_max": maximum}})
    runs = _runs(B_VAL_ALL)
    c = compare(spec.comparisons[0], runs, spec)
    mean, low, high = _geometric([0.375, 0.5, 0.25])
    assert (mean, high) == (pytest.approx(0.3606, abs=1e-4), pytest.approx(0.8564, abs=1e-4))
    assert c["flops_to_target_ratio_reached"] == c["flops_to_target_ratio_n"] == 3
    assert c["flops_to_target_ratio_mean"] == pytest.approx(mean)
    assert c["flops_to_target_ratio_ci95"] == [pytest.approx(low), pytest.approx(high)]
    assert c["flops_to_target_met"] is met and c["met"] is met
    summary = _summary(tmp_path / "suite", spec, runs)
    assert "flops_to_target_ratio" in summary["units"]
    report = format_report(summary)
    assert ("reached on 3 of 3 seeds; fewer FLOPs than the baseline's whole run (the whole interval below 1)"
            in report)
    verdict = (f"yes (every seed reached it; mean {mean:.3f} <= {maximum:g})" if met
               else f"**no** (mean {mean:.3f} > 0.3)")
    assert f"flops_to_target_ratio_max {maximum:g}: {verdict} |" in report


def test_a_seed_without_the_numbers_is_named_and_leaves_the_target_undecided():
    spec = _spec({"metric": "loss", "target": {"flops_to_target_ratio_max": 1.0}})
    runs = _runs(B_VAL_ALL, a_val={**A_VAL, 1: [2.0, 1.7, 1.6, None]})  # seed 1: a's last row lacks val_loss
    del runs["b"][2]["val_loss_curve"]  # seed 2: an entry without the curve
    c = compare(spec.comparisons[0], runs, spec)
    assert c["flops_to_target_ratio_n"] == 1 and c["flops_to_target_ratio_per_seed"] == {"0": 0.375}
    assert c["flops_to_target_ratio_missing"] == ["seed 1 has no final val_loss in a",
                                                  "seed 2 has no metrics rows in b"]
    assert c["flops_to_target_ratio_ci95"][0] is not None and math.isnan(c["flops_to_target_ratio_ci95"][0])
    assert c["flops_to_target_met"] is None  # a claim about 3 seeds is decided on all 3
    flops = _runs(B_VAL_ALL)
    for row in flops["b"][0]["val_loss_curve"][1:]:
        row[0] = None  # rows without train_flops
    c = compare(spec.comparisons[0], flops, spec)
    assert c["flops_to_target_ratio_missing"] == ["seed 0 has rows without train_flops in b"]
    assert c["flops_to_target_met"] is None and c["met"] is None


def test_the_target_on_an_accuracy_comparison_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^s.yaml: comparisons\[0\].target.flops_to_target_ratio_max: reads the "
                                          r"validation loss of each row, and this comparison reads accuracy; give "
                                          r"metric: loss$"):
        _spec({"target": {"flops_to_target_ratio_max": 1.0}}, base=DIGITS)
    with pytest.raises(ConfigError, match=r"flops_to_target_ratio_max: a ratio is > 0, so a maximum of 0"):
        _spec({"metric": "loss", "target": {"flops_to_target_ratio_max": 0}})
    spec = _spec({"metric": "loss", "target": {"flops_to_target_ratio_max": 0.8}})
    assert spec.comparisons[0].to_dict()["target"] == {"flops_to_target_ratio_max": 0.8}


def test_an_image_accuracy_summary_is_unchanged_by_the_curves_it_carries(tmp_path):
    spec = _spec({"target": {"accuracy_diff_low_min": -1.0}}, base=DIGITS)
    summary = _summary(tmp_path / "suite", spec, _runs(B_VAL_ALL))
    (c,) = summary["comparisons"]
    assert not [k for k in c if "loss" in k or "to_target" in k or k == "metric"]
    assert not [k for k in summary["units"] if "to_target" in k]
    for arm in summary["arms"].values():
        assert "val_loss_curve" not in arm and "val_loss_curve" not in arm["per_seed"]["0"]
    report = format_report(summary)
    assert "FLOPs to the baseline" not in report and "loss" not in report.lower()

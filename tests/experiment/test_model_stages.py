"""Comparisons of compressed models (issue 27, compression controls): ``arm_model`` / ``baseline_model``
read a side as its compress step's projected or fine-tuned model, paired by seed, accuracy only."""

from __future__ import annotations

import math

import pytest

from contdepth.experiment import ExperimentSpec
from contdepth.experiment.comparisons import compare, comparison_lines
from contdepth.experiment.seeds import differences
from contdepth.train import ConfigError

T_975_2 = 4.302652729749464  # t_{0.975, 2}
SPEC = {
    "name": "controls",
    "base": {"model": "continuousnet", "model_options": {"alpha": 4, "n_basis": 2}, "data": "digits",
             "validation_size": 300, "epochs": 2, "batch_size": 64},
    "seeds": [0, 1, 2],
    "arms": {
        "compressed": {"compress": {"n_basis": 1, "finetune_epochs": 1}},
        "equal_epochs": {"compress": {"n_basis": 2, "finetune_epochs": 1}},
        "small": {"model_options": {"n_basis": 1}, "epochs": 3},
    },
    "comparisons": [
        {"arm": "compressed", "arm_model": "fine_tuned", "baseline": "equal_epochs", "baseline_model": "fine_tuned"},
        {"arm": "compressed", "arm_model": "projected", "baseline": "small", "target": {"accuracy_diff_low_min": -1}},
    ],
}


def _spec(**changes) -> ExperimentSpec:
    return ExperimentSpec.from_dict({**SPEC, **changes})


def _run(acc: float, val: float, after: tuple[float, float] | None = None, projected=(0.5, 0.5)) -> dict:
    entry = {"accuracy": acc, "val_accuracy": val, "train_flops": 100, "train_cpu_time": 1.0, "train_time": 1.0,
             "cpu_time": 1.0, "time": 1.0}
    if after is not None:
        entry["steps"] = {"compression": {"accuracy_after": after[0], "val_accuracy_after": after[1],
                                          "accuracy_projected": projected[0], "val_accuracy_projected": projected[1]}}
    return entry


def test_a_compressed_side_is_paired_by_seed_from_the_compress_record():
    spec = _spec()
    runs = {"compressed": {0: _run(90, 90, (0.80, 0.81)), 1: _run(90, 90, (0.82, 0.80)), 2: _run(90, 90, (0.81, 0.79))},
            "equal_epochs": {0: _run(91, 91, (0.79, 0.80)), 1: _run(91, 91, (0.83, 0.80)),
                             2: _run(91, 91, (0.78, 0.77))},
            "small": {0: _run(60, 61), 1: _run(40, 41), 2: _run(50, 50)}}
    first = compare(spec.comparisons[0], runs, spec)
    diffs = [1.0, -1.0, 3.0]  # (0.80-0.79, 0.82-0.83, 0.81-0.78) in points, not the trained runs' 90 - 91
    mean, sd = 1.0, 2.0
    half = T_975_2 * sd / math.sqrt(3)
    assert first["n"] == 3 and first["accuracy_diff_mean"] == pytest.approx(mean)
    assert first["accuracy_diff_ci95"] == [pytest.approx(mean - half), pytest.approx(mean + half)]
    assert first["val_accuracy_diff_mean"] == pytest.approx((1 + 0 + 2) / 3)
    assert first["label"] == "compressed (fine-tuned) vs equal_epochs (fine-tuned)"
    assert first["flops_ratio"] is None and "cpu_time_ratio_mean" not in first  # costs compare training runs
    second = compare(spec.comparisons[1], runs, spec)
    assert second["accuracy_diff_mean"] == pytest.approx(50 - 50)  # projected 0.5 against the trained 60, 40, 50
    assert second["met"] is False  # interval [-24.8, +24.8]: its lower end is below -1
    table = "\n".join(comparison_lines([first, second]))
    assert "| compressed (fine-tuned) vs equal_epochs (fine-tuned) | 3 | +1.00" in table
    assert "| compressed (projected) vs small | 3 |" in table
    # a seed whose steps are not done has no compressed model: left out of the pairing
    del runs["compressed"][2]["steps"]
    assert compare(spec.comparisons[0], runs, spec)["n"] == 2
    assert math.isnan(differences(spec, runs)[2]["compressed (fine-tuned) vs equal_epochs (fine-tuned), test"])


def test_the_spec_refuses_a_compressed_side_that_cannot_exist_in_one_line():
    def refused(comparison: dict, match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            _spec(comparisons=[comparison])

    refused({"arm": "small", "arm_model": "projected", "baseline": "compressed"},
            r"comparisons\[0\]\.arm_model: projected names the compressed model, and arm 'small' has no compress")
    refused({"arm": "compressed", "arm_model": "distilled", "baseline": "small"},
            r"arm_model: must be one of trained, projected, fine_tuned, got 'distilled'")
    refused({"arm": "compressed", "arm_model": "fine_tuned", "baseline": "compressed", "baseline_model": "fine_tuned"},
            "with itself")
    refused({"arm": "compressed", "arm_model": "fine_tuned", "baseline": "small", "target": {"flops_ratio_max": 1}},
            "cost ratios compare training runs")
    arms = {**SPEC["arms"], "compressed": {"compress": {"n_basis": 1}}}
    with pytest.raises(ConfigError, match="finetune_epochs 0: it has no fine-tuned model"):
        _spec(arms=arms)
    # the trained model against its own fine-tuned model is a comparison, not a self-comparison
    spec = _spec(comparisons=[{"arm": "compressed", "arm_model": "fine_tuned", "baseline": "compressed"}])
    assert spec.identity()["comparisons"][0]["arm_model"] == "fine_tuned"
    plain = _spec(comparisons=[{"arm": "small", "baseline": "compressed"}])
    assert "arm_model" not in plain.identity()["comparisons"][0]  # older specs' identity unchanged

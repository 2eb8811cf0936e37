"""Comparisons and readouts in loss for language-model runs: paired loss differences with their targets,
the per-arm loss table, the loss change to the ODE limit, and image summaries left as they were.

The summaries are built from hand-written final metrics rows and steps records (`summarize` with
``collected``), the entries shaped as `collect` makes them, so every number is known by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from contdepth.common.json_values import to_json_value
from contdepth.experiment import ExperimentSpec, summarize
from contdepth.experiment.comparisons import compare, target_checks, target_met
from contdepth.experiment.costs import run_costs
from contdepth.experiment.folder import EXPERIMENT_FORMAT, IDENTITY_VERSION
from contdepth.experiment.losses import run_losses
from contdepth.experiment.readouts import finding, loss_change_to_ode
from contdepth.experiment.report import format_report
from contdepth.train import ConfigError

T_975_2 = 4.302652729749464  # t_{0.975, 2}
LN2 = math.log(2)
GPT = {"model": "gpt", "model_options": {"width": 16, "heads": 2, "layers": 2, "context": 16, "continuous": True},
       "data": "text", "max_steps": 10, "eval_every": 10}
DIGITS = {"model": "continuousnet", "model_options": {"alpha": 2, "n_basis": 1}, "data": "digits", "epochs": 1,
          "validation_size": 100}


def _spec(comparison: dict, base: dict = GPT, **extra) -> ExperimentSpec:
    return ExperimentSpec.from_dict({"base": base, "seeds": [0, 1, 2], "arms": {"a": {}, "b": {"lr": 0.001}},
                                     "comparisons": [{"arm": "b", "baseline": "a", **comparison}], **extra},
                                    source="s.yaml")


def _by_hand(values: list[float]) -> tuple[float, float, float]:
    mean = sum(values) / len(values)
    half = T_975_2 * math.sqrt(sum((v - mean) ** 2 for v in values) / 2) / math.sqrt(3)
    return mean, mean - half, mean + half


# --- synthetic runs: the final metrics row and the steps record of each ----------------------------------
def _row(val: float | None, test: float, *, text: bool = True, tokens: float = 1000.0) -> dict:
    row = {"epoch": 1, "test_accuracy": 0.40, "val_accuracy": 0.41, "test_loss": test, "total_time": 2.0,
           "train_time": 1.5, "train_cpu_time": 1.4, "cpu_time": 1.9, "train_flops": 100, "eval_flops": 10,
           "params": 500}
    if val is not None:
        row["val_loss"] = val
    if text:
        row.update(test_bits_per_byte=test / LN2, tokens_per_second=tokens)
        if val is not None:
            row["val_bits_per_byte"] = val / LN2
    return row


def _steps(trained: dict | None, limit: dict | None) -> dict:
    """A steps record's manifestations: rk4 at 1 and 4 steps (the limit: rk4 x 4), with losses where given."""
    grid = {"reading": None, "accuracy": {"lie_trotter": {"1": {"val": 0.3, "test": 0.3}},
                                          "rk4": {"1": {"val": 0.3, "test": 0.3}, "4": {"val": 0.4, "test": 0.4}}},
            "trained": {"graph": "lie_trotter x 2", "accuracy": {"val": 0.41, "test": 0.40}}}
    if trained is not None:
        grid["loss"] = {"lie_trotter": {"1": {"val": 3.0, "test": 3.0}},
                        "rk4": {"1": {"val": 2.5, "test": 2.5}, "4": limit}}
        grid["trained"]["loss"] = trained
    return {"manifestations": grid}


def _entry(row: dict, steps: dict | None = None) -> dict:
    """A run as `collect` enters it (accuracies in percent), from its final metrics row."""
    entry = {"accuracy": 100 * row["test_accuracy"], "val_accuracy": 100 * row["val_accuracy"],
             "time": row["total_time"], **run_costs([row]), "params": row["params"],
             "epochs": [100 * row["test_accuracy"]], "val_epochs": [100 * row["val_accuracy"]], **run_losses([row])}
    if steps is not None:
        entry["steps"] = steps
    return entry


def _summary(folder: Path, spec: ExperimentSpec, runs: dict) -> dict:
    """``summary.json`` as `write_report` writes it (strict JSON), of the hand-made runs."""
    folder.mkdir(exist_ok=True)
    (folder / "experiment.json").write_text(json.dumps({"format": EXPERIMENT_FORMAT, "identity": {},
                                                        "identity_version": IDENTITY_VERSION, "sittings": []}))
    return to_json_value(summarize(folder, collected=(spec, runs, [])), "summary", strict=False, non_finite="null")


# test losses of b and a per seed: differences -0.020, -0.010, -0.015 (b lower); validation -0.01, 0.0, +0.004
A_TEST, B_TEST = [1.520, 1.530, 1.510], [1.500, 1.520, 1.495]
A_VAL, B_VAL = [1.500, 1.510, 1.490], [1.490, 1.510, 1.494]
TEST_DIFFS = [b - a for a, b in zip(A_TEST, B_TEST)]
VAL_DIFFS = [b - a for a, b in zip(A_VAL, B_VAL)]


def _text_runs(steps: bool = True) -> dict:
    def run(val, test, trained, limit):
        return _entry(_row(val, test), _steps({"val": trained[0], "test": trained[1]},
                                              {"val": limit[0], "test": limit[1]}) if steps else None)
    # the loss change to the ODE limit (limit - trained) per seed: a test +0.02, +0.025, +0.03 (higher);
    # a validation +0.01, -0.01, +0.005 (the interval holds 0)
    a = {s: run(A_VAL[s], A_TEST[s], (1.50, 1.52), (1.50 + dv, 1.52 + dt))
         for s, (dv, dt) in enumerate([(0.01, 0.02), (-0.01, 0.025), (0.005, 0.03)])}
    b = {s: run(B_VAL[s], B_TEST[s], (1.49, 1.50), (1.49, 1.50)) for s in range(3)}
    return {"a": a, "b": b}


# --- the spec -----------------------------------------------------------------------------------------------
def test_metric_loss_is_written_only_when_used_so_older_specs_keep_their_identity():
    plain = _spec({"target": {"accuracy_diff_min": 0.0}}, base=DIGITS)
    assert plain.comparisons[0].metric == "accuracy"
    assert plain.comparisons[0].to_dict() == {"arm": "b", "baseline": "a", "target": {"accuracy_diff_min": 0.0}}
    loss = _spec({"metric": "loss", "target": {"loss_abs_diff_max": 0.02, "loss_diff_high_max": 0.01,
                                               "loss_diff_max": 0}})
    assert loss.comparisons[0].metric == "loss"
    assert loss.comparisons[0].to_dict() == {"arm": "b", "baseline": "a", "metric": "loss", "target": {
        "loss_abs_diff_max": 0.02, "loss_diff_high_max": 0.01, "loss_diff_max": 0.0}}
    assert loss.identity()["comparisons"][0]["metric"] == "loss"
    # metric: accuracy written out is the same comparison as none written
    assert _spec({"metric": "accuracy"}, base=DIGITS).identity() == _spec({}, base=DIGITS).identity()


@pytest.mark.parametrize("comparison, message", [
    ({"metric": "loss", "target": {"accuracy_diff_low_min": -0.5}},
     r"^s.yaml: comparisons\[0\].target.accuracy_diff_low_min: an accuracy target, and this comparison has metric: "
     r"loss; its targets: loss_diff_max, loss_diff_high_max, loss_abs_diff_max$"),
    ({"target": {"loss_diff_max": 0.0}},
     r"^s.yaml: comparisons\[0\].target.loss_diff_max: a loss target, and this comparison reads accuracy; give "
     r"metric: loss$"),
    ({"metric": "bits", "target": {}}, r"^s.yaml: comparisons\[0\].metric: must be one of accuracy, loss, got 'bits'$"),
    ({"metric": "loss", "target": {"loss_abs_diff_max": 0}},
     r"^s.yaml: comparisons\[0\].target.loss_abs_diff_max: an interval lies within ± a bound > 0, so 0 can never be "
     r"met$"),
    ({"metric": "loss", "target": {"loss_diff_max": "small"}}, r"comparisons\[0\].target.loss_diff_max: "),
])
def test_mixed_or_impossible_targets_are_one_line_naming_the_key(comparison, message):
    with pytest.raises(ConfigError, match=message):
        _spec(comparison)


def test_a_loss_comparison_of_a_compressed_model_is_refused():
    compress = {"n_basis": 1, "n_steps": 1, "finetune_epochs": 0}
    with pytest.raises(ConfigError, match=r"comparisons\[0\].metric: loss compares training runs' final losses; a "
                                          r"compressed model's record holds accuracies only"):
        _spec({"metric": "loss", "arm_model": "projected"}, base={**DIGITS, "model_options": {"alpha": 2,
                                                                                             "n_basis": 2}},
              compress=compress)


# --- paired loss differences and their targets ---------------------------------------------------------------
def test_the_loss_difference_is_arm_minus_baseline_with_a_t_interval_on_test_and_validation():
    spec = _spec({"metric": "loss", "target": {"loss_diff_max": 0.0}})
    c = compare(spec.comparisons[0], _text_runs(steps=False), spec)
    assert c["metric"] == "loss" and c["loss_targets_split"] == "test"
    for prefix, diffs in (("", TEST_DIFFS), ("val_", VAL_DIFFS)):
        mean, low, high = _by_hand(diffs)
        assert c[f"{prefix}loss_diff_mean"] == pytest.approx(mean) and c[f"{prefix}loss_diff_n"] == 3
        assert c[f"{prefix}loss_diff_ci95"] == [pytest.approx(low), pytest.approx(high)]
        assert c[f"{prefix}loss_diff_per_seed"] == {str(s): pytest.approx(d) for s, d in enumerate(diffs)}
    assert c["loss_diff_ci95"][1] < 0  # b's test loss is lower on every seed...
    assert c["val_loss_diff_ci95"][0] < 0 < c["val_loss_diff_ci95"][1]  # ...and on validation no difference is found
    assert c["n"] == 3 and "accuracy_diff_mean" in c  # the next-byte accuracy difference stays beside it
    assert c["flops_ratio"] == 1.0 and c["met"] is True


@pytest.mark.parametrize("target, checks", [
    # test: mean -0.015, interval about [-0.0274, -0.0026]
    ({"loss_diff_max": 0.0}, {"loss_diff_max": True}),
    ({"loss_diff_max": -0.02}, {"loss_diff_max": False}),
    ({"loss_diff_high_max": 0.0}, {"loss_diff_high_max": True}),
    ({"loss_diff_high_max": -0.005}, {"loss_diff_high_max": False}),  # the mean is below it, the upper end is not
    ({"loss_abs_diff_max": 0.03}, {"loss_abs_diff_max": True}),
    ({"loss_abs_diff_max": 0.02}, {"loss_abs_diff_max": False}),  # the mean is inside, the lower end is not
    ({"loss_diff_max": 0.0, "loss_abs_diff_max": 0.02, "flops_ratio_max": 1.0},
     {"flops_ratio_max": True, "loss_diff_max": True, "loss_abs_diff_max": False}),
])
def test_each_loss_target_is_decided_on_the_test_interval(target, checks):
    spec = _spec({"metric": "loss", "target": target})
    c = compare(spec.comparisons[0], _text_runs(steps=False), spec)
    mean, low, high = _by_hand(TEST_DIFFS)
    assert (mean, low, high) == (pytest.approx(-0.015), pytest.approx(-0.02742, abs=1e-5),
                                 pytest.approx(-0.00258, abs=1e-5))
    assert c["loss_targets_met"] == {k: v for k, v in checks.items() if k.startswith("loss_")}
    assert c["met"] is (False not in checks.values())


def test_a_loss_target_is_undecided_when_a_seed_lacks_the_loss_or_one_seed_is_all():
    diff = SimpleNamespace(n=3, mean=0.0, low=-1.0)
    costs = {"loss_diff_mean": -0.015, "loss_diff_ci95": [-0.027, -0.003], "loss_diff_n": 3}
    target = {"loss_diff_max": 0.0, "loss_diff_high_max": 0.0, "loss_abs_diff_max": 0.03}
    assert target_checks(target, diff, costs) == dict.fromkeys(target, True)
    assert target_met(target, diff, costs) is True
    partial = {**costs, "loss_diff_n": 2}  # a seed without test_loss: never decided on the other two
    assert target_checks(target, diff, partial) == dict.fromkeys(target)
    assert target_met(target, diff, partial) is None
    assert target_met({**target, "flops_ratio_max": 0.5}, diff, {**partial, "flops_ratio_range": [0.9, 0.9]}) is False
    assert target_met(target, SimpleNamespace(n=1, mean=0.0, low=math.nan), costs) is None


# --- the summary and the report of text arms ----------------------------------------------------------------
def test_run_losses_reads_the_final_row_and_the_runs_throughput():
    rows = [{**_row(2.0, 2.1, tokens=1000.0), "train_time": 1.0}, {**_row(1.5, 1.6, tokens=4000.0), "train_time": 3.0}]
    out = run_losses(rows)
    assert out["val_loss"] == 1.5 and out["test_loss"] == 1.6
    assert out["val_bits_per_byte"] == pytest.approx(1.5 / LN2)
    assert out["test_bits_per_byte"] == pytest.approx(1.6 / LN2)
    assert out["tokens_per_second"] == pytest.approx((1000 * 1 + 4000 * 3) / 4)  # tokens over seconds, not a mean rate
    image = run_losses([_row(None, 0.3, text=False)])
    assert set(image) == {"val_loss", "test_loss"} and math.isnan(image["val_loss"]) and image["test_loss"] == 0.3


def test_a_text_arm_reports_its_losses_bits_and_throughput_with_intervals(tmp_path):
    spec = _spec({"metric": "loss", "target": {"loss_abs_diff_max": 0.02, "loss_diff_max": 0.0}})
    summary = _summary(tmp_path / "suite", spec, _text_runs())
    a = summary["arms"]["a"]
    assert a["text"] is True and a["tokens_per_second_mean"] == 1000.0 and a["tokens_per_second_n"] == 3
    for key, values in (("val_loss", A_VAL), ("test_loss", A_TEST), ("test_bits_per_byte", [v / LN2 for v in A_TEST])):
        mean, low, high = _by_hand(values)
        assert a[f"{key}_mean"] == pytest.approx(mean) and a[f"{key}_n"] == 3
        assert a[f"{key}_ci95"] == [pytest.approx(low), pytest.approx(high)]
    assert a["per_seed"]["1"]["test_loss"] == A_TEST[1] and a["per_seed"]["1"]["tokens_per_second"] == 1000.0
    assert "nats per byte" in summary["units"]["loss"] and "loss_diff" in summary["units"]
    (c,) = summary["comparisons"]
    assert c["loss_targets_met"] == {"loss_abs_diff_max": False, "loss_diff_max": True} and c["met"] is False
    report = format_report(summary)
    assert "### Language-model arms: loss" in report
    mean, low, high = _by_hand(A_VAL)
    assert f"| a | 3 | {mean:.4f} [{low:.4f}, {high:.4f}] | " in report and " | 1,000 |" in report
    assert "### Comparisons in loss" in report
    mean, low, high = _by_hand(VAL_DIFFS)  # -0.0020 [-0.0199, +0.0159]
    assert (f"| b vs a | -0.0150 [-0.0274, -0.0026], n=3 | {mean:+.4f} [{low:+.4f}, {high:+.4f}], n=3 | arm lower | "
            "loss_diff_max 0: yes (mean -0.0150 <= 0); loss_abs_diff_max 0.02: **no** (the interval [-0.0274, "
            "-0.0026] reaches beyond ±0.02: equivalence not shown) |") in report


def test_the_loss_change_to_the_ode_limit_is_per_seed_with_words_that_follow_the_interval(tmp_path):
    spec = _spec({"metric": "loss"}, evaluate={"schemes": ["lie_trotter", "rk4"], "n_steps": [1, 4]})
    summary = _summary(tmp_path / "suite", spec, _text_runs())
    change = summary["arms"]["a"]["invariance"]["loss_change_to_ode"]
    assert change["ode_limit"] == "rk4 x 4" and change["training_graph"] == "lie_trotter x 2"
    assert change["splits"] == ["val", "test"]
    for split, values, words in (("test", [0.02, 0.025, 0.03], "higher at the ODE limit"),
                                 ("val", [0.01, -0.01, 0.005], "no difference found (the interval holds 0)")):
        mean, low, high = _by_hand(values)
        g = change["by_split"][split]
        assert g["per_seed"] == {str(s): pytest.approx(v) for s, v in enumerate(values)} and g["n"] == 3
        assert g["mean"] == pytest.approx(mean) and g["ci95"] == [pytest.approx(low), pytest.approx(high)]
        assert g["finding"] == words
    report = format_report(summary)
    assert "### Loss change to the ODE limit (per seed, paired)" in report
    mean_val, low_val, high_val = _by_hand([0.01, -0.01, 0.005])
    assert (f"| a | lie_trotter x 2 | rk4 x 4 | {mean_val:+.4f} [{low_val:+.4f}, {high_val:+.4f}], n=3 | "
            in report)
    assert "validation: no difference found (the interval holds 0); test: higher at the ODE limit |" in report


def test_records_from_before_losses_are_left_out_of_the_loss_readout():
    new = _steps({"val": 1.0, "test": 1.0}, {"val": 1.1, "test": 1.2})["manifestations"]
    old = _steps(None, None)["manifestations"]
    assert loss_change_to_ode({0: old, 1: old}) == {}
    only = loss_change_to_ode({0: new, 1: old})
    assert only["by_split"]["test"]["n"] == 1 and only["by_split"]["test"]["finding"] == "one seed: no interval"
    assert finding([-0.2, -0.1], 3, "lower", "higher") == "lower"
    assert finding([0.1, 0.2], 3, "lower", "higher") == "higher"
    assert finding([math.nan, math.nan], 0, "lower", "higher") == "not measured"


@pytest.mark.parametrize("record, where, words", [
    ({"accuracy": {"rk4": {"2": {"test": 0.5}}}, "loss": {"rk4": {"2": {"test": -0.1}}}},
     "manifestations.loss.rk4.2.test", "must be a finite number >= 0"),
    ({"accuracy": {"rk4": {"2": {"test": 0.5}}}, "trained": {"accuracy": {"test": 0.5}, "loss": {"test": "low"}}},
     "manifestations.trained.loss.test", "must be a finite number >= 0"),
])
def test_a_tampered_loss_in_a_steps_record_is_one_line_naming_it(tmp_path, record, where, words):
    from contdepth.experiment.records import check_steps_body

    with pytest.raises(ConfigError, match=rf"seed-0.json: {where}: {words}"):
        check_steps_body({"manifestations": record}, tmp_path / "seed-0.json")


# --- image experiments are reported as before ---------------------------------------------------------------
ARM_KEYS = {"accuracy_ci95", "accuracy_mean", "accuracy_std", "cpu_time_mean", "cpu_time_std", "invariance", "n",
            "params_mean", "per_seed", "seeds", "time_mean", "time_std", "train_cpu_time_mean", "train_cpu_time_n",
            "train_flops_mean", "train_flops_n", "train_time_mean", "val_accuracy_mean", "val_accuracy_std"}
INVARIANCE_KEYS = {"gap_to_ode", "ode_limit", "reading", "resolved_min_steps", "splits", "test_accuracy_mean",
                   "test_resolved_spread_mean", "test_resolved_spread_std", "test_spread_mean", "test_spread_std",
                   "training_graph", "val_accuracy_mean", "val_resolved_spread_mean", "val_resolved_spread_std",
                   "val_spread_mean", "val_spread_std"}
SEED_KEYS = {"accuracy", "cpu_time", "eval_flops", "params", "time", "train_cpu_time", "train_flops", "train_time",
             "val_accuracy"}
UNIT_KEYS = {"accuracy", "accuracy_diff", "cpu_time", "eval_flops", "flops_ratio", "ideal_ratio", "time", "time_ratio",
             "train_cpu_time", "train_flops", "train_time"}


def test_an_image_summary_has_the_fields_and_sections_it_had_even_where_its_steps_record_losses(tmp_path):
    # image runs record val_loss and test_loss and, since the evaluate step records them, a loss grid: neither
    # makes an image arm a text arm; an accuracy comparison is what it was
    spec = _spec({"target": {"accuracy_diff_low_min": -1.0}}, base=DIGITS,
                 evaluate={"schemes": ["euler", "rk4"], "n_steps": [1, 4]})
    runs = {arm: {s: _entry(_row(0.5, 0.6, text=False), _steps({"val": 0.5, "test": 0.6}, {"val": 0.7, "test": 0.8}))
                  for s in range(3)} for arm in ("a", "b")}
    summary = _summary(tmp_path / "suite", spec, runs)
    for arm in summary["arms"].values():
        assert set(arm) == ARM_KEYS and set(arm["invariance"]) == INVARIANCE_KEYS
        assert set(arm["per_seed"]["0"]) == SEED_KEYS
    assert set(summary["units"]) == UNIT_KEYS
    (c,) = summary["comparisons"]
    assert not {k for k in c if "loss" in k or k == "metric"}
    report = format_report(summary)
    assert "loss" not in report.lower() and "bits/byte" not in report

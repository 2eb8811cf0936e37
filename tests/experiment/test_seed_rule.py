"""The seeds rule ``seeds: {min, max, half_width}``: the decision by hand, tiny suites that stop at the
half-width, at ``max``, and continue after an interruption, and the forms a spec may not take."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from contdepth.cli import main
from contdepth.experiment import ExperimentSpec, check_experiment_dir, run_experiment, summarize, write_report
from contdepth.experiment.folder import run_folder
from contdepth.experiment.seeds import counted, decide, summary_fields
from contdepth.experiment.spec import SeedRule
from contdepth.train import ConfigError
from helpers import write_yaml

SPEC = {
    "name": "rule",
    "base": {"model": "continuousnet", "model_options": {"alpha": 4, "n_basis": 1}, "data": "digits",
             "validation_size": 300, "train_size": 600, "epochs": 1, "batch_size": 64, "eval_batch_size": 1000},
    "seeds": {"min": 2, "max": 3, "half_width": 1e-9},  # no real interval is that narrow: it runs to max
    "arms": {"euler": {}, "rk4": {"model_options": {"scheme": "rk4"}}},
    "comparisons": [{"arm": "rk4", "baseline": "euler"}],
}

# Differences whose half-widths (t_{0.975, n-1} sd / sqrt(n)) are, by hand: n=5 1.2416, n=6 0.9387,
# n=7 0.7551, n=8 0.6320, n=9 0.5435, n=10 0.4769 (mean 0; squares sum to 4 from n=4 on).
X = [1.0, -1.0, 1.0, -1.0] + [0.0] * 16


def write_spec(folder: Path, spec: dict = SPEC, name: str = "rule.yaml") -> Path:
    return write_yaml(folder, name, spec)


@pytest.fixture(scope="module")
def rule_suite(tmp_path_factory) -> tuple[Path, dict]:
    """The uninterrupted tiny suite under the rule: its folder and summary (no plots: seconds)."""
    folder = tmp_path_factory.mktemp("rule")
    assert run_experiment(write_spec(folder), folder / "out", threads=1, quiet=True, report=False) is None
    return folder / "out", write_report(folder / "out", plots=False, quiet=True)


# --- the decision ------------------------------------------------------------------------------------
def test_the_rule_stops_at_the_first_n_whose_half_width_is_small_enough():
    differences = {s: {"x": X[s], "y": 0.25} for s in range(12)}  # y: constant, half-width 0
    decided = decide(SeedRule(5, 20, 0.5), differences)
    assert (decided.n, decided.stopped, decided.widest) == (10, "half_width", "x")
    assert decided.half_width == pytest.approx(0.4769, abs=1e-4)
    assert decided.text() == "half-width 0.48 <= 0.5 at n=10 (x)"
    assert decide(SeedRule(5, 20, 1.3), differences).n == 5  # already at min
    # seeds beyond the stopping point (started ahead by workers, copied by --reuse) cannot move it
    wild = {**differences, 10: {"x": 50.0, "y": -9.0}, 11: {"x": -50.0, "y": 9.0}}
    assert decide(SeedRule(5, 20, 0.5), wild) == decided


def test_the_rule_stops_at_max_and_waits_for_the_seeds_it_needs():
    differences = {s: {"x": X[s]} for s in range(20)}
    decided = decide(SeedRule(5, 8, 0.5), differences)
    assert (decided.n, decided.stopped) == (8, "max")
    assert decided.text() == "max 8 reached: half-width 0.63 (x)"
    missing = {s: v for s, v in differences.items() if s != 7}  # seed 7 still running
    waiting = decide(SeedRule(5, 20, 0.5), missing)
    assert (waiting.n, waiting.done, waiting.measured_at) == (8, False, 7)
    assert waiting.text() == ("not decided yet: n=8 needs seeds 0..7, not all counted yet; "
                              "at n=7: half-width 0.76 > 0.5 (x)")
    first = decide(SeedRule(3, 5, 0.5), {0: {"x": 1.0}})
    assert first.text() == "not decided yet: n=3 needs seeds 0..2, not all counted yet"
    # a difference that is not there (nan) never meets the half-width: the rule goes on to max
    gaps = {s: {"x": 0.0, "y": math.nan if s == 1 else 0.0} for s in range(6)}
    assert decide(SeedRule(2, 6, 0.5), gaps).stopped == "max"
    assert decide(SeedRule(1, 1, 0.5), {0: {"x": 0.0}}).text() == "max 1 reached: half-width undefined (x)"


def test_the_report_counts_only_the_seeds_the_rule_counts():
    spec = ExperimentSpec.from_dict({**SPEC, "seeds": {"min": 5, "max": 20, "half_width": 0.5}})
    runs = {"euler": {s: {"accuracy": 90.0, "val_accuracy": 80.0} for s in range(12)},
            "rk4": {s: {"accuracy": 90.0 + X[s], "val_accuracy": 80.0 + X[s] / 2} for s in range(11)}}
    unfinished = ["rk4 seed 11: 1 of 2 epochs"] + [f"{a} seed {s}: not started" for a in runs for s in range(12, 20)]
    kept_runs, kept = counted(spec, runs, unfinished)
    assert sorted(kept_runs["euler"]) == sorted(kept_runs["rk4"]) == list(range(10))
    assert kept == ["rk4 seed 11: 1 of 2 epochs (beyond the stopping point, n=10)",
                    "euler seed 10: finished beyond the stopping point (n=10), not counted",
                    "euler seed 11: finished beyond the stopping point (n=10), not counted",
                    "rk4 seed 10: finished beyond the stopping point (n=10), not counted"]
    fields = summary_fields(spec, kept_runs)  # the same decision from the counted runs alone
    assert fields["seeds"] == list(range(10)) and fields["seed_rule"]["stopped"] == "half_width"
    assert fields["seed_rule"]["widest"] == "rk4 vs euler, test"  # validation differences are half as wide
    assert summary_fields(ExperimentSpec.from_dict({**SPEC, "seeds": [0, 1]}), kept_runs) == {}


# --- tiny suites -------------------------------------------------------------------------------------------
def test_a_suite_under_the_rule_runs_to_max_and_says_so(rule_suite):
    out, summary = rule_suite
    assert summary["seeds"] == [0, 1, 2] and summary["unfinished"] == []
    assert summary["arms"]["rk4"]["n"] == summary["comparisons"][0]["n"] == 3
    rule = summary["seed_rule"]
    low, high = summary["comparisons"][0]["accuracy_diff_ci95"]
    assert rule["stopped"] == "max" and rule["n"] == 3
    assert rule["half_width_at_n"] >= (high - low) / 2 - 1e-9  # the widest of test and validation
    assert f"max 3 reached: half-width {rule['half_width_at_n']:.2f}" in (out / "report.md").read_text()
    assert not run_folder(out, "euler", 3).exists()


def test_identical_arms_stop_at_min_on_the_half_width(tmp_path, capsys):
    spec = {**SPEC, "arms": {"euler": {}, "again": {}}, "comparisons": [{"arm": "again", "baseline": "euler"}],
            "seeds": {"min": 2, "max": 4, "half_width": 0.5}}
    run_experiment(write_spec(tmp_path, spec), tmp_path / "out", threads=1, quiet=False, report=False)
    printed = capsys.readouterr().out
    summary = summarize(tmp_path / "out")
    assert "seeds rule: half-width 0.00 <= 0.5 at n=2" in printed  # the same config and seed: differences 0
    assert summary["seeds"] == [0, 1] and summary["seed_rule"]["stopped"] == "half_width"
    assert not run_folder(tmp_path / "out", "euler", 2).exists()


def test_an_interrupted_suite_continues_where_the_rule_stood(rule_suite, tmp_path, capsys):
    reference = rule_suite[1]
    path = write_spec(tmp_path)

    def stop(row, model, optimizer):
        stop.calls += 1
        if stop.calls == 5:  # the first run of the round that adds seed 2
            raise KeyboardInterrupt

    stop.calls = 0
    with pytest.raises(KeyboardInterrupt):
        run_experiment(path, tmp_path / "out", threads=1, quiet=True, callbacks=[stop])
    partial = summarize(tmp_path / "out")
    assert partial["seeds"] == [0, 1, 2] and partial["seed_rule"]["stopped"] is None
    assert partial["arms"]["rk4"]["n"] == 2
    run_experiment(path, tmp_path / "out", threads=1, quiet=False, report=False)
    printed = capsys.readouterr().out
    summary = summarize(tmp_path / "out")
    assert "seeds rule: not decided yet: n=3 needs seeds 0..2" in printed and "seeds rule: max 3 reached" in printed
    assert "6 runs (2 arms x 3 seeds)" in printed and "seed 2, " in printed
    assert "seed 0, training" not in printed and "seed 1, training" not in printed  # not trained again
    for arm in ("euler", "rk4"):
        assert summary["arms"][arm]["per_seed"].keys() == reference["arms"][arm]["per_seed"].keys()
        for seed, values in reference["arms"][arm]["per_seed"].items():
            assert summary["arms"][arm]["per_seed"][seed]["accuracy"] == values["accuracy"]
    assert summary["seed_rule"]["text"] == reference["seed_rule"]["text"]
    run_experiment(path, tmp_path / "out", threads=1, quiet=False, report=False)  # a third sitting: nothing to do
    printed = capsys.readouterr().out
    again = summarize(tmp_path / "out")
    assert "seeds rule: max 3 reached" in printed and ", training" not in printed and "runs done" not in printed
    assert again["seed_rule"] == summary["seed_rule"]


# --- the form ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seeds, message", [
    ({"min": 0, "max": 3, "half_width": 0.5}, r"seeds\.min: must be an integer in 1\.\.1,000, got 0"),
    ({"min": 2, "max": 1001, "half_width": 0.5}, r"seeds\.max: must be an integer in 1\.\.1,000"),
    ({"min": True, "max": 3, "half_width": 0.5}, r"seeds\.min: must be an integer"),
    ({"min": 5, "max": 3, "half_width": 0.5}, r"seeds\.min: must be at most seeds\.max \(3\), got 5"),
    ({"min": 2, "max": 3, "half_width": 0}, r"seeds\.half_width: must be a finite number > 0"),
    ({"min": 2, "max": 3, "half_width": float("inf")}, r"seeds\.half_width: must be a finite number > 0"),
    ({"min": 2, "max": 3, "half_width": "0.5"}, r"seeds\.half_width: must be a finite number"),
    ({"min": 2, "max": 3}, r"seeds\.half_width: required"),
    ({"min": 2, "max": 3, "half_width": 0.5, "step": 1}, r"seeds\.step: not a key of the seeds rule"),
    ("five", r"seeds: must be a non-empty list of integers"),
])
def test_bad_seed_rules_are_one_line_errors_naming_the_key(tmp_path, capsys, seeds, message):
    path = write_spec(tmp_path, {**SPEC, "seeds": seeds})
    with pytest.raises(ConfigError, match=message):
        ExperimentSpec.from_yaml(path)
    assert main(["experiment", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rule.yaml: seeds" in err and not (tmp_path / "out").exists()


def test_a_rule_needs_a_comparison_to_stop_on(tmp_path):
    spec = {key: value for key, value in SPEC.items() if key != "comparisons"}
    with pytest.raises(ConfigError, match=r"seeds: the rule .* stops on the comparisons' accuracy intervals"):
        ExperimentSpec.from_yaml(write_spec(tmp_path, spec))


def test_the_rule_is_part_of_the_experiments_identity(rule_suite, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(rule_suite[0], out)
    narrower = write_spec(tmp_path, {**SPEC, "seeds": {"min": 2, "max": 3, "half_width": 1e-10}}, "b.yaml")
    with pytest.raises(ConfigError, match=r"seeds\.half_width: 1e-09 -> 1e-10"):
        check_experiment_dir(ExperimentSpec.from_yaml(narrower), out)
    listed = write_spec(tmp_path, {**SPEC, "seeds": [0, 1, 2]}, "c.yaml")
    with pytest.raises(ConfigError, match=r"seeds: \{'min': 2, 'max': 3, 'half_width': 1e-09\} -> \[0, 1, 2\]"):
        check_experiment_dir(ExperimentSpec.from_yaml(listed), out)
    record = json.loads((out / "experiment.json").read_text())
    assert record["identity"]["seeds"] == {"min": 2, "max": 3, "half_width": 1e-09}
    same = write_spec(tmp_path, {**SPEC, "base": {**SPEC["base"], "eval_batch_size": 250}}, "d.yaml")
    assert check_experiment_dir(ExperimentSpec.from_yaml(same), out) == "existing"

"""Cost ratios of a comparison (issue 27): the log-ratio interval by hand, the exact FLOP ratio,
the ideal from cell-epochs, targets that never read wall time, and seeds without a metric named."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from contdepth.cli import main
from contdepth.experiment import ExperimentSpec, ratio_estimate, run_experiment, summarize
from contdepth.experiment.comparisons import flops_ratio, target_met, time_ratio
from contdepth.experiment.costs import cell_epochs, ideal_ratio, run_costs
from contdepth.experiment.folder import run_folder
from contdepth.train import ConfigError
from helpers import REPO_ROOT

EXPERIMENTS = REPO_ROOT / "experiments"


# --- the log-ratio statistic ----------------------------------------------------------------------------
def test_ratio_estimate_is_the_t_interval_of_the_log_ratios_by_hand():
    # ratios 0.5, 0.6, 0.7 -> logs -0.693147, -0.510826, -0.356675
    logs = [-0.6931471805599453, -0.5108256237659907, -0.35667494393873245]
    mean = sum(logs) / 3  # -0.520216
    assert mean == pytest.approx(-0.5202159160882228)
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 2)  # n - 1 = 2
    assert sd == pytest.approx(0.16843255236634957)
    # t_{0.975, 2}: for df = 2 the quantile is (2p - 1) / sqrt(2 p (1 - p)) = 0.95 / sqrt(0.04875)
    t = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert t == pytest.approx(4.302652729696)
    half = t * sd / math.sqrt(3)  # 0.418410
    low, high = math.exp(mean - half), math.exp(mean + half)
    assert (math.exp(mean), low, high) == (pytest.approx(0.5943921952763129), pytest.approx(0.3911650945849175),
                                           pytest.approx(0.903204520792682))
    e = ratio_estimate([0.5, 0.6, 0.7])
    assert e.n == 3 and e.mean == pytest.approx(0.5943921952763129) and e.log_std == pytest.approx(sd)
    assert e.interval == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert 0 < e.low < e.mean < e.high  # the arithmetic interval of ratios can reach below 0; this cannot


def test_ratio_estimate_of_one_or_no_ratio_and_of_impossible_ratios():
    one = ratio_estimate([0.8])
    assert one.n == 1 and one.mean == pytest.approx(0.8) and math.isnan(one.low) and math.isnan(one.high)
    assert ratio_estimate([]).n == 0 and math.isnan(ratio_estimate([]).mean)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="ratios: each must be a finite number > 0"):
            ratio_estimate([0.5, bad])


# --- the ideal from cell-epochs ---------------------------------------------------------------------------
def test_the_ideal_of_incremental_refined_late_is_half_by_hand():
    spec = ExperimentSpec.from_yaml(EXPERIMENTS / "incremental.yaml")
    late, early, scratch = (spec.config(a, 0) for a in ("refined_late", "refined_early", "scratch"))
    # refined_late: 1 cell in epochs 1-4, 2 cells in 5-6, 4 cells in 7-8; scratch 4 cells in all 8; 3 stages
    assert cell_epochs(late) == 3 * (4 * 1 + 2 * 2 + 2 * 4) == 48
    assert cell_epochs(scratch) == 3 * 8 * 4 == 96
    assert ideal_ratio(late, scratch) == (4 * 1 + 2 * 2 + 2 * 4) / (8 * 4) == 0.5
    # refined_early (refine at 3 and 5): 1 cell in epochs 1-2, 2 in 3-4, 4 in 5-8
    assert ideal_ratio(early, scratch) == (2 * 1 + 2 * 2 + 4 * 4) / 32


def test_the_ideal_counts_rate_evaluations_and_is_none_without_blocks():
    spec = ExperimentSpec.from_yaml(EXPERIMENTS / "cifar10_888.yaml")
    refined, rk4, resnet = (spec.config(a, 0) for a in ("rk4_refined", "rk4", "resnet"))
    # rk4: 4 evaluations per step; 1 step in epochs 1-30, 2 in 31-50, 4 in 51-70, 8 in 71-120
    assert cell_epochs(refined) == 3 * 4 * (30 * 1 + 20 * 2 + 20 * 4 + 50 * 8)
    assert ideal_ratio(refined, rk4) == pytest.approx(550 / 960)
    assert cell_epochs(resnet) is None and ideal_ratio(rk4, resnet) is None


# --- per-run sums and ratios -----------------------------------------------------------------------------
def test_run_costs_sum_every_epoch_or_call_the_metric_missing():
    rows = [{"train_flops": 10, "eval_flops": 3, "train_time": 1.5, "train_cpu_time": 2.0, "cpu_time": 3.0},
            {"train_flops": 30, "eval_flops": 3, "train_time": 2.5, "train_cpu_time": 4.0, "cpu_time": 5.0}]
    assert run_costs(rows) == {"train_flops": 40, "eval_flops": 6, "train_time": 4.0, "train_cpu_time": 6.0,
                               "cpu_time": 8.0}
    resumed = [{"train_time": 1.0, "cpu_time": 2.0}, rows[1]]  # epoch 1 ran before the metric was recorded
    costs = run_costs(resumed)
    assert costs["train_flops"] is None and costs["train_cpu_time"] is None and costs["train_time"] == 3.5
    assert run_costs([])["train_flops"] is None


def _run(**costs) -> dict:
    return {"accuracy": 90.0, "val_accuracy": 90.0, "time": 10.0, **costs}


def test_the_flops_ratio_is_exact_and_says_when_seeds_differ():
    names = ("refined", "scratch")
    same = flops_ratio([0, 1], [_run(train_flops=3), _run(train_flops=6)], [_run(train_flops=9), _run(train_flops=18)],
                       names)
    assert same["flops_ratio"] == 1 / 3 and same["flops_ratio_n"] == 2 and not same["flops_ratio_seeds_differ"]
    assert same["flops_ratio_missing"] == []
    differ = flops_ratio([0, 1], [_run(train_flops=1), _run(train_flops=3)], [_run(train_flops=4), _run(train_flops=4)],
                         names)
    assert differ["flops_ratio_seeds_differ"] and differ["flops_ratio_range"] == [0.25, 0.75]
    assert differ["flops_ratio"] == 0.5  # pooled: (1 + 3) / (4 + 4)


def test_a_seed_without_a_metric_is_named_never_dropped_silently():
    names = ("refined", "scratch")
    arm = [_run(train_cpu_time=5.0, train_time=6.0), _run(train_cpu_time=6.0, train_time=6.0),
           _run(train_cpu_time=7.0, train_time=6.0), _run(train_time=6.0)]
    base = [_run(train_cpu_time=10.0, train_time=10.0), _run(train_cpu_time=10.0, train_time=0.0),
            _run(train_cpu_time=10.0, train_time=10.0), _run(train_time=10.0)]
    cpu = time_ratio("cpu_time_ratio", "train_cpu_time", [0, 1, 2, 3], arm, base, names)
    assert cpu["cpu_time_ratio_n"] == 3 and cpu["cpu_time_ratio_missing"] == ["seed 3 has no train_cpu_time in refined "
                                                                              "and scratch"]
    assert cpu["cpu_time_ratio_mean"] == pytest.approx(ratio_estimate([0.5, 0.6, 0.7]).mean)
    wall = time_ratio("train_time_ratio", "train_time", [0, 1, 2, 3], arm, base, names)
    assert wall["train_time_ratio_n"] == 3 and wall["train_time_ratio_missing"] == ["seed 1 has train_time 0 in scratch"]
    old = flops_ratio([0, 1, 2], [_run()] * 3, [_run()] * 3, names)  # runs from before FLOPs were counted
    assert old["flops_ratio"] is None and old["flops_ratio_n"] == 0
    assert old["flops_ratio_missing"] == ["seeds 0, 1, 2 have no train_flops in refined and scratch"]


def test_met_never_reads_wall_time_and_is_undecided_without_the_metric():
    diff = SimpleNamespace(n=3, mean=0.2, low=-0.1)
    fast_wall = {"cpu_time_ratio_mean": 0.9, "train_time_ratio_mean": 0.1, "time_ratio_mean": 0.1,
                 "flops_ratio_range": [0.55, 0.55]}
    assert target_met({"cpu_time_ratio_max": 0.5}, diff, fast_wall) is False
    assert target_met({"time_ratio_max": 0.5}, diff, fast_wall) is False  # old name: the training CPU-time ratio
    assert target_met({"cpu_time_ratio_max": 0.95, "flops_ratio_max": 0.6}, diff, fast_wall) is True
    assert target_met({"flops_ratio_max": 0.5}, diff, fast_wall) is False
    unknown = {"cpu_time_ratio_mean": None, "flops_ratio_range": [None, None]}
    assert target_met({"cpu_time_ratio_max": 0.5, "flops_ratio_max": 0.6}, diff, unknown) is None
    assert target_met({"cpu_time_ratio_max": 0.5, "accuracy_diff_low_min": 0.0}, diff, unknown) is False
    assert target_met({"cpu_time_ratio_max": 0.95}, SimpleNamespace(n=1, mean=0.2, low=math.nan), fast_wall) is None
    # a seed of the three lacks the metric: the target is not decided on the other two
    partial = {**fast_wall, "cpu_time_ratio_n": 2, "flops_ratio_n": 2}
    assert target_met({"cpu_time_ratio_max": 0.95}, diff, partial) is None
    assert target_met({"flops_ratio_max": 0.6}, diff, partial) is None
    assert target_met({"flops_ratio_max": 0.5}, diff, partial) is None  # would fail on two seeds: still undecided
    whole = {**fast_wall, "cpu_time_ratio_n": 3, "flops_ratio_n": 3}
    assert target_met({"cpu_time_ratio_max": 0.95, "flops_ratio_max": 0.6}, diff, whole) is True


# --- targets in a spec ------------------------------------------------------------------------------------
BASE = {"model": "continuousnet", "model_options": {"alpha": 2, "n_basis": 1}, "data": "digits", "epochs": 1}


def _spec(target: dict) -> ExperimentSpec:
    return ExperimentSpec.from_dict({"base": BASE, "seeds": [0], "arms": {"a": {}, "b": {"lr": 0.05}},
                                     "comparisons": [{"arm": "b", "baseline": "a", "target": target}]}, source="s.yaml")


def test_targets_name_their_metric_and_the_old_name_reads_as_cpu_time():
    spec = _spec({"flops_ratio_max": 0.6, "cpu_time_ratio_max": 0.65, "accuracy_diff_low_min": -0.5})
    assert spec.comparisons[0].target == {"flops_ratio_max": 0.6, "cpu_time_ratio_max": 0.65,
                                          "accuracy_diff_low_min": -0.5}
    assert _spec({"time_ratio_max": 0.5}).comparisons[0].target == {"time_ratio_max": 0.5}  # old specs still read
    with pytest.raises(ConfigError, match=r"^s.yaml: comparisons\[0\].target: time_ratio_max is the old name of "
                                          r"cpu_time_ratio_max .*give only cpu_time_ratio_max$"):
        _spec({"time_ratio_max": 0.5, "cpu_time_ratio_max": 0.5})
    with pytest.raises(ConfigError, match=r"target.flops_ratio_max: a ratio is > 0, so a maximum of 0 can never"):
        _spec({"flops_ratio_max": 0})
    with pytest.raises(ConfigError, match="keys must be among flops_ratio_max, cpu_time_ratio_max"):
        _spec({"wall_ratio_max": 0.5})


# --- a suite whose runs lack a metric: the report names the seeds -----------------------------------------
TINY = {
    "name": "tiny_costs",
    "base": {"model": "continuousnet", "model_options": {"alpha": 2, "n_basis": 1}, "data": "digits",
             "train_size": 200, "validation_size": 100, "epochs": 1, "batch_size": 64, "eval_batch_size": 500},
    "seeds": [0, 1, 2],
    "arms": {"a": {"model_options": {"n_basis": 2}}, "b": {"refine_at": [2], "epochs": 2}},
    "comparisons": [{"arm": "b", "baseline": "a", "target": {"cpu_time_ratio_max": 10.0, "flops_ratio_max": 10.0}}],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("costs")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run_experiment(folder / "tiny.yaml", folder / "suite", threads=1, quiet=True, report=False)
    return folder / "suite"


def _set_history(suite: Path, arm: str, seed: int, change) -> None:
    path = run_folder(suite, arm, seed) / "checkpoint.json"
    record = json.loads(path.read_text())
    for row in record["history"]:
        change(row)
    path.write_text(json.dumps(record))


def test_the_report_names_each_seed_that_lacks_a_metric(tiny, tmp_path):
    suite = tmp_path / "suite"
    shutil.copytree(tiny, suite)
    for arm in ("a", "b"):  # known costs for every run, whatever the trainer records
        for seed in (0, 1, 2):
            _set_history(suite, arm, seed, lambda r, arm=arm: r.update(train_flops=100 if arm == "a" else 75,
                                                                        train_cpu_time=2.0 if arm == "a" else 1.0))
    _set_history(suite, "a", 2, lambda r: r.pop("train_cpu_time"))  # seed 2's baseline from before the metric
    summary = summarize(suite)
    (c,) = summary["comparisons"]
    assert c["n"] == 3 and c["cpu_time_ratio_n"] == 2 and c["cpu_time_ratio_missing"] == [
        "seed 2 has no train_cpu_time in a"]
    # b trains 2 epochs of 75 FLOPs each against a's 1 of 100: exact, the same on every seed
    assert c["flops_ratio"] == 1.5 and c["flops_ratio_n"] == 3 and not c["flops_ratio_seeds_differ"]
    assert c["cpu_time_ratio_mean"] == pytest.approx(2 * 1.0 / 2.0)  # b: 2 epochs of 1 s; a: 1 of 2 s
    assert c["ideal_ratio"] == pytest.approx((1 * 1 + 1 * 2) / (1 * 2))  # b: 1 cell then 2; a: 2 cells, 1 epoch
    assert c["met"] is None  # the CPU-time target is not decided on the 2 seeds that have the metric
    assert main(["report", str(suite), "--quiet", "--no-plots"]) == 0
    report = (suite / "report.md").read_text()
    assert "| b vs a | 3 |" in report and "| 1.500 | 1.500, n=3 | 1.000 [1.000, 1.000], n=2 |" in report
    assert "- b vs a: training CPU-time ratio: n=2, seed 2 has no train_cpu_time in a" in report
    assert json.loads((suite / "summary.json").read_text())["comparisons"][0]["cpu_time_ratio_missing"] == [
        "seed 2 has no train_cpu_time in a"]


def test_old_runs_report_the_new_ratios_as_not_available_with_the_seeds_named(tiny, tmp_path):
    suite = tmp_path / "suite"
    shutil.copytree(tiny, suite)
    for arm in ("a", "b"):  # runs written before issue 27: no FLOPs, no training CPU time
        for seed in (0, 1, 2):
            _set_history(suite, arm, seed, lambda r: [r.pop(k, None) for k in ("train_flops", "eval_flops",
                                                                               "train_cpu_time")])
    assert main(["report", str(suite), "--quiet", "--no-plots"]) == 0
    (c,) = json.loads((suite / "summary.json").read_text())["comparisons"]
    assert c["flops_ratio"] is None and c["cpu_time_ratio_mean"] is None and c["met"] is None  # undecided
    assert c["flops_ratio_missing"] == ["seeds 0, 1, 2 have no train_flops in b and a"]
    assert c["train_time_ratio_n"] == 3 and c["train_time_ratio_mean"] > 0  # train_time was always recorded
    report = (suite / "report.md").read_text()
    assert "| n/a | n/a |" in report
    assert "- b vs a: FLOP ratio: n=0, seeds 0, 1, 2 have no train_flops in b and a" in report
    assert "- b vs a: training CPU-time ratio: n=0, seeds 0, 1, 2 have no train_cpu_time in b and a" in report


def test_a_time_ratio_beyond_float_range_is_named_not_a_traceback(tiny, tmp_path):
    # train_cpu_time 5e-324 passes the history check (0..1e9 seconds), yet 1e9 / 5e-324 is inf: the
    # ratio has no logarithm, so the seed is named like one without the metric, and the report writes.
    suite = tmp_path / "suite"
    shutil.copytree(tiny, suite)
    for arm in ("a", "b"):
        for seed in (0, 1, 2):
            _set_history(suite, arm, seed, lambda r: r.update(train_cpu_time=1.0))
    _set_history(suite, "b", 1, lambda r: r.update(train_cpu_time=1e9))
    _set_history(suite, "a", 1, lambda r: r.update(train_cpu_time=5e-324))
    assert main(["report", str(suite), "--quiet", "--no-plots"]) == 0
    (c,) = json.loads((suite / "summary.json").read_text())["comparisons"]
    assert c["cpu_time_ratio_n"] == 2 and c["cpu_time_ratio_missing"] == [
        "seed 1 has a train_cpu_time ratio outside the floating-point range"]

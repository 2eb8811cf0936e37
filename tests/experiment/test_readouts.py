"""Per-seed readouts on validation and test (issue 27): the gap to the ODE limit and compressed models."""

from __future__ import annotations

import math

import pytest

from contdepth.experiment import compression_comparisons, gap_to_ode, ode_limit
from contdepth.experiment.readouts import gap_lines

T_975_2 = 4.302652729749464  # t_{0.975, 2}


def _record(trained: dict, limit: dict, coarse: float = 0.5) -> dict:
    """A steps record's ``manifestations``: euler and rk4 at 1 and 16 (and rk4 at 4) steps."""
    return {"reading": None, "trained": {"graph": "euler x 2", "accuracy": trained},
            "accuracy": {"euler": {"1": {"val": coarse, "test": coarse}, "16": limit},
                         "rk4": {"4": {"val": 0.1, "test": 0.1}, "16": limit, "1": {"val": 0.2, "test": 0.2}}}}


def test_the_ode_limit_is_the_grids_finest_rk4():
    grid = _record({}, {"test": 0.9})["accuracy"]
    assert ode_limit(grid) == ("rk4", "16")  # "16" > "4" as numbers, not as strings
    assert ode_limit({"euler": {"2": {"test": 0.5}}}) is None


def test_the_gap_to_the_ode_limit_is_per_seed_with_a_t_interval_on_each_split():
    records = {0: _record({"val": 0.80, "test": 0.82}, {"val": 0.79, "test": 0.80}),
               1: _record({"val": 0.81, "test": 0.80}, {"val": 0.81, "test": 0.81}),
               2: _record({"val": 0.78, "test": 0.83}, {"val": 0.76, "test": 0.80})}
    out = gap_to_ode(records)
    assert out["ode_limit"] == "rk4 x 16" and out["training_graph"] == "euler x 2"
    assert out["splits"] == ["val", "test"]
    for split, gaps in (("val", [1.0, 0.0, 2.0]), ("test", [2.0, -1.0, 3.0])):
        g = out["gap_to_ode"][split]
        mean = sum(gaps) / 3
        sd = math.sqrt(sum((x - mean) ** 2 for x in gaps) / 2)
        half = T_975_2 * sd / math.sqrt(3)
        assert g["n"] == 3 and g["per_seed"] == {str(i): pytest.approx(x) for i, x in enumerate(gaps)}
        assert g["mean"] == pytest.approx(mean)
        assert g["ci95"] == [pytest.approx(mean - half), pytest.approx(mean + half)]
    # a seed without the training graph's accuracy (a record from before) is left out, not counted as 0
    del records[2]["trained"]
    assert gap_to_ode(records)["gap_to_ode"]["test"]["n"] == 2
    # only test evaluated: only test reported
    only_test = {0: _record({"test": 0.8}, {"test": 0.7})}
    assert list(gap_to_ode(only_test)["gap_to_ode"]) == ["test"] and gap_to_ode(only_test)["splits"] == ["test"]
    lines = "\n".join(gap_lines({"a": gap_to_ode(records), "b": {}}))
    assert "| a | euler x 2 | rk4 x 16 |" in lines and "validation gap" in lines and "| b |" not in lines


def test_compressed_minus_uncompressed_is_paired_on_test_and_validation():
    def report(before, projected, after, val):
        return {"accuracy_before": before, "accuracy_projected": projected, "accuracy_after": after,
                "val_accuracy_before": val[0], "val_accuracy_projected": val[1], "val_accuracy_after": val[2],
                "finetune_epochs": 2}

    reports = {0: report(0.80, 0.70, 0.79, (0.81, 0.72, 0.80)), 1: report(0.82, 0.75, 0.80, (0.80, 0.70, 0.77)),
               2: report(0.81, 0.71, 0.81, (0.79, 0.69, 0.79))}
    projected, tuned = compression_comparisons("cn", reports)
    assert (projected["arm"], projected["baseline"], tuned["arm"]) == ("cn (projected)", "cn", "cn (fine-tuned)")
    for entry, key, prefix in ((tuned, "after", "val_"), (projected, "projected", ""), (tuned, "after", "")):
        diffs = [100 * (r[f"{prefix}accuracy_{key}"] - r[f"{prefix}accuracy_before"]) for r in reports.values()]
        mean = sum(diffs) / 3
        half = T_975_2 * math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
        assert entry[f"{prefix}accuracy_diff_mean"] == pytest.approx(mean)
        assert entry[f"{prefix}accuracy_diff_ci95"] == [pytest.approx(mean - half), pytest.approx(mean + half)]
        assert entry[f"{prefix}accuracy_diff_n"] == 3
    # a record without validation accuracy (no validation split): test only, validation n = 0
    for r in reports.values():
        r["val_accuracy_before"] = r["val_accuracy_projected"] = r["val_accuracy_after"] = None
        r["finetune_epochs"] = 0
    (only,) = compression_comparisons("cn", reports)
    assert only["n"] == 3 and only["val_accuracy_diff_n"] == 0 and math.isnan(only["val_accuracy_diff_mean"])


@pytest.mark.parametrize("record, where", [
    ({"manifestations": {"accuracy": {"rk4": {"2": {"test": 0.5}}}, "trained": {"accuracy": {"test": "high"}}}},
     "manifestations.trained.accuracy.test"),
    ({"compression": {"n_basis_after": [1], "n_steps_after": [1], "finetune_epochs": 0, "params_before": 10,
                      "params_after": 5, "accuracy_before": 0.5, "accuracy_projected": 0.4, "accuracy_after": 0.4,
                      "val_accuracy_after": 2.0}}, "compression.val_accuracy_after"),
])
def test_a_tampered_readout_in_a_steps_record_is_one_line_naming_it(tmp_path, record, where):
    from contdepth.experiment.records import check_steps_body
    from contdepth.train import ConfigError

    with pytest.raises(ConfigError, match=rf"seed-0.json: {where}: must be a number in \[0, 1\]"):
        check_steps_body(record, tmp_path / "seed-0.json")

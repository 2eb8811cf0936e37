"""The report's plot of validation loss against cumulative training FLOPs (issue 30): written for a suite with
language-model arms, listed in report.md, and absent (the image plots as they were) for an image suite.

The runs are hand-written metrics histories entered as `collect` enters them; `write_report` reads them through
a replaced `collect`, so no training is needed.
"""

from __future__ import annotations

import json
import math

import pytest

from contdepth.experiment import ExperimentSpec
from contdepth.experiment import report as report_module
from contdepth.experiment.costs import run_costs
from contdepth.experiment.flops_to_target import val_loss_curve
from contdepth.experiment.folder import EXPERIMENT_FORMAT, IDENTITY_VERSION
from contdepth.experiment.loss_plots import LOSS_PLOT_FILE, arm_curve, loss_plots
from contdepth.experiment.losses import run_losses

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"
GPT = {"model": "gpt", "model_options": {"width": 16, "heads": 2, "layers": 2, "context": 16, "continuous": True},
       "data": "text", "max_steps": 30, "eval_every": 10}
DIGITS = {"model": "continuousnet", "model_options": {"alpha": 2, "n_basis": 1}, "data": "digits", "epochs": 3,
          "validation_size": 100}


def _history(val: list, flops: list, text: bool) -> list[dict]:
    rows = []
    for i, (v, f) in enumerate(zip(val, flops)):
        row = {"epoch": i + 1, "test_accuracy": 0.4, "val_accuracy": 0.41, "test_loss": v + 0.01,
               "total_time": 2.0 * (i + 1), "train_time": 1.5, "train_cpu_time": 1.4, "cpu_time": 1.9,
               "train_flops": f, "eval_flops": 10, "params": 500, "val_loss": v}
        if text:
            row.update(val_bits_per_byte=v / math.log(2), test_bits_per_byte=(v + 0.01) / math.log(2),
                       tokens_per_second=1000.0)
        rows.append(row)
    return rows


def _entry(history: list[dict]) -> dict:
    """A run as `collect` enters it (accuracies in percent)."""
    last = history[-1]
    return {"accuracy": 100 * last["test_accuracy"], "val_accuracy": 100 * last["val_accuracy"],
            "time": last["total_time"], **run_costs(history), "params": last["params"],
            "epochs": [100 * r["test_accuracy"] for r in history],
            "val_epochs": [100 * r["val_accuracy"] for r in history],
            **run_losses(history), "val_loss_curve": val_loss_curve(history)}


def _runs(text: bool) -> dict:
    # a: 100 FLOPs per row; b grows: 40, 80, 160 per row (cumulative 40, 120, 280)
    val = {0: [2.0, 1.8, 1.6], 1: [2.1, 1.7, 1.5]}
    return {"a": {s: _entry(_history(v, [100] * 3, text)) for s, v in val.items()},
            "b": {s: _entry(_history([x - 0.1 for x in v], [40, 80, 160], text)) for s, v in val.items()}}


def _report(tmp_path, monkeypatch, base: dict, text: bool):
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "experiment.json").write_text(json.dumps({"format": EXPERIMENT_FORMAT, "identity": {},
                                                        "identity_version": IDENTITY_VERSION, "sittings": []}))
    spec = ExperimentSpec.from_dict({"base": base, "seeds": [0, 1], "arms": {"a": {}, "b": {"lr": 0.001}}},
                                    source="s.yaml")
    runs = _runs(text)
    monkeypatch.setattr(report_module, "collect", lambda _: (spec, runs, []))
    report_module.write_report(folder, quiet=True)
    return folder, runs


def test_a_text_suite_gets_the_loss_against_flops_plot_listed_in_the_report(tmp_path, monkeypatch):
    folder, runs = _report(tmp_path, monkeypatch, GPT, text=True)
    path = folder / "plots" / LOSS_PLOT_FILE
    assert path.read_bytes().startswith(PNG) and path.stat().st_size > 1000
    for name in report_module.PLOT_FILES:
        assert (folder / "plots" / name).read_bytes().startswith(PNG)
    assert f"`plots/{LOSS_PLOT_FILE}`" in (folder / "report.md").read_text()
    assert loss_plots(runs) == loss_plots(runs)  # the same bytes every time


def test_an_image_suite_gets_no_loss_plot_and_its_plots_as_before(tmp_path, monkeypatch):
    folder, runs = _report(tmp_path, monkeypatch, DIGITS, text=False)
    assert sorted(p.name for p in (folder / "plots").iterdir()) == sorted(report_module.PLOT_FILES)
    assert LOSS_PLOT_FILE not in (folder / "report.md").read_text()
    assert loss_plots(runs) == {}
    assert set(report_module.render_plots(folder, runs=runs)) == set(report_module.PLOT_FILES)


def test_seeds_are_aligned_by_row_with_mean_and_min_max_band():
    text = _runs(True)
    b = arm_curve(list(text["b"].values()))
    assert b["flops"] == [40, 120, 280] and b["shared"] and b["n"] == 2  # growth: rising FLOPs per row
    assert b["mean"] == pytest.approx([1.95, 1.65, 1.45])
    assert b["low"] == pytest.approx([1.9, 1.6, 1.4]) and b["high"] == pytest.approx([2.0, 1.7, 1.5])
    # seeds that disagree on FLOPs (they should not within an arm) keep their own x; the mean line sits at the mean
    odd = [_entry(_history([2.0, 1.8], [100, 100], True)), _entry(_history([2.2, 1.6, 1.4], [120, 100, 100], True))]
    curve = arm_curve(odd)
    assert not curve["shared"] and curve["flops"] == [110, 210]  # the shortest seed's rows only
    assert curve["per_seed"] == [[(100, 2.0), (200, 1.8)], [(120, 2.2), (220, 1.6)]]
    assert loss_plots({"x": dict(enumerate(odd))})[LOSS_PLOT_FILE].startswith(PNG)
    # rows without FLOPs (a run from before they were counted) or without a validation loss are not drawn
    rows = _history([2.0, 1.8], [100, 100], True)
    del rows[1]["train_flops"]
    assert arm_curve([_entry(rows)])["flops"] == [100]
    del rows[0]["train_flops"]
    assert arm_curve([_entry(rows)]) is None
    assert loss_plots({"x": {0: _entry(rows)}})[LOSS_PLOT_FILE].startswith(PNG)  # a note instead of lines

"""A text suite end to end (issue 29): GPT arms train, their grids record losses, the report compares losses."""

from __future__ import annotations

import json

from contdepth.cli import main

from helpers import write_yaml

SPEC = {
    "name": "tiny_text",
    "base": {"model": "gpt", "model_options": {"width": 16, "heads": 2, "layers": 2, "context": 16},
             "data": "text", "optimizer": "adamw", "lr": 0.003, "batch_size": 4, "max_steps": 4, "eval_every": 2,
             "data_options": {"eval_windows": 4}},
    "seeds": [0, 1],
    "arms": {"discrete": {},
             "continuous": {"model_options": {"continuous": True, "scheme": "strang"},
                            "evaluate": {"schemes": ["strang", "rk4"], "n_steps": [2, 8], "splits": ["val", "test"]}}},
    "comparisons": [{"arm": "continuous", "baseline": "discrete", "metric": "loss",
                     "target": {"loss_abs_diff_max": 5.0}}],
}


def test_a_text_suite_trains_records_losses_and_compares_them(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small corpus of english words, repeated. " * 60, encoding="utf-8")
    spec = write_yaml(tmp_path, "text.yaml", SPEC)
    out = tmp_path / "suite"
    assert main(["experiment", str(spec), "--out", str(out), "--threads", "1", "--quiet", "--data-dir",
                 str(corpus)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    arm = summary["arms"]["continuous"]
    assert arm["text"] and arm["val_loss_n"] == 2 and arm["tokens_per_second_n"] == 2
    change = arm["invariance"]["loss_change_to_ode"]
    assert change["ode_limit"] == "rk4 x 8" and change["training_graph"] == "strang x 2"
    assert set(change["by_split"]) == {"val", "test"} and change["by_split"]["val"]["n"] == 2
    (comparison,) = summary["comparisons"]
    assert comparison["metric"] == "loss" and comparison["loss_targets_met"] == {"loss_abs_diff_max": True}
    assert comparison["flops_ratio"] > 1  # strang evaluates the MLP term twice per step
    # the corpus is pinned by the runs: the same command again continues (every run is done), a changed one is refused
    assert main(["experiment", str(spec), "--out", str(out), "--threads", "1", "--quiet", "--data-dir",
                 str(corpus)]) == 0
    corpus.write_text("another text entirely, repeated. " * 60, encoding="utf-8")
    run = next((out / "runs" / "discrete").glob("seed-0"))
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "6", "--extend", "--quiet"]) == 2
    assert "is not the corpus recorded for this run" in capsys.readouterr().err

"""Optional TensorBoard logging: what it writes equals metrics.jsonl; resume purges, never duplicates."""

from __future__ import annotations

import json

import pytest

from contdepth import data
from contdepth.cli import main
from contdepth.train import TrainConfig, train
from contdepth.train.tensorboard import metric_tag

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def config(out, **changes) -> TrainConfig:
    base = dict(model="continuousnet", model_options={"alpha": 2, "n_basis": 1}, data="digits", epochs=2,
                batch_size=256, lr=0.05, quiet=True, threads=1, out=str(out), tensorboard=True)
    return TrainConfig(**{**base, **changes})


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tags_group_the_metrics():
    assert metric_tag("train_loss") == "loss/train" and metric_tag("val_accuracy") == "accuracy/val"
    assert metric_tag("epoch_time") == "time/epoch" and metric_tag("lr") == "lr"


def test_each_epoch_is_logged_as_in_metrics_jsonl_and_a_resume_purges_the_replaced_steps(tmp_path):
    digits = data.load("digits", seed=0)
    out = tmp_path / "run"
    train(config(out), dataset=digits)
    train(config(out, epochs=3, resume=True, extend=True), dataset=digits)  # an extension: epoch 3 only
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = scalars(out / "tensorboard")
    for key in ("train_loss", "test_accuracy", "lr", "epoch_time"):
        assert logged[metric_tag(key)] == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in rows], key
    # the same folder overwritten by a new run: TensorBoard drops the old run's steps from epoch 1 on
    train(config(out, overwrite=True, epochs=1, lr=0.01), dataset=digits)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert scalars(out / "tensorboard")["loss/train"] == [(1, pytest.approx(rows[0]["train_loss"], rel=1e-6))]


def test_without_out_or_without_the_package_it_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    assert main(["train", "--model", "continuousnet", "--data", "digits", "--epochs", "1", "--tensorboard"]) == 2
    assert "tensorboard: needs --out" in capsys.readouterr().err
    import contdepth.train.tensorboard as tb

    def missing():
        raise tb.OptionError("tensorboard", "needs the tensorboard package (no module named 'tensorboard'); "
                                            "install it with pip install 'contdepth[tb]'")

    monkeypatch.setattr("contdepth.train.run_checks.summary_writer_class", missing)
    assert main(["train", "--model", "continuousnet", "--data", "digits", "--epochs", "1", "--tensorboard",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "contdepth[tb]" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_analyze_writes_the_manifestation_table(tmp_path, capsys):
    digits = data.load("digits", seed=0)
    out = tmp_path / "run"
    train(config(out, epochs=1, tensorboard=False), dataset=digits)
    assert main(["analyze", str(out), "--schemes", "euler", "rk4", "--steps", "1", "2", "--max-examples", "50",
                 "--no-plots", "--tensorboard", str(tmp_path / "tb")]) == 0
    logged = scalars(tmp_path / "tb")
    assert sorted(logged) == ["manifestation/euler", "manifestation/rk4"]
    assert [step for step, _ in logged["manifestation/rk4"]] == [1, 2]
    analysis = json.loads((out / "analysis" / "analysis.json").read_text())
    euler = [r for r in analysis["rows"] if r["scheme"] == "euler"]
    assert [v for _, v in logged["manifestation/euler"]] == [pytest.approx(100 * r["accuracy"], rel=1e-6) for r in euler]

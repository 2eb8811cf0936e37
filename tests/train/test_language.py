"""Language modelling: a GPT trains on text the test writes, resumes bitwise, and is evaluated in nats per byte."""

from __future__ import annotations

import json
import math

import pytest
import torch

from contdepth.cli import main
from contdepth.data import load_text
from contdepth.train import ConfigError, TrainConfig, read_checkpoint, train

from helpers import Interrupt, interrupt_after, without_times

GPT = {"width": 32, "heads": 2, "layers": 2, "context": 32}
SENTENCE = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SENTENCE * 300, encoding="utf-8")  # 25 kB: learnable in a few dozen steps
    return path


def tiny(corpus, **changes) -> TrainConfig:
    values = dict(model="gpt", model_options=dict(GPT), data="text", data_dir=str(corpus), optimizer="adamw",
                  lr=3e-3, weight_decay=0.01, batch_size=8, eval_every=10, max_steps=30, grad_clip=1.0,
                  eval_batch_size=16, threads=1, quiet=True, warmup_epochs=0.5)
    values.update(changes)
    return TrainConfig(**values)


def test_a_tiny_gpt_learns_the_text_and_reports_nats_and_bits_per_byte(corpus):
    result = train(tiny(corpus))
    rows = result.history
    assert [row["epoch"] for row in rows] == [1, 2, 3] and result.config.epochs == 3  # 30 steps / 10 per evaluation
    assert rows[-1]["val_loss"] < 0.7 * math.log(256)  # a uniform guess costs ln 256 = 5.55 nats per byte
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    for row in rows:
        assert row["val_bits_per_byte"] == pytest.approx(row["val_loss"] / math.log(2))
        assert row["test_bits_per_byte"] == pytest.approx(row["test_loss"] / math.log(2))
        assert row["tokens_per_second"] > 0 and row["train_flops"] > 0 and row["eval_flops"] > 0
    # the training FLOPs of an evaluation interval: 10 steps of 8 windows, 3x the forward (forward and backward)
    assert rows[0]["train_flops"] == rows[1]["train_flops"]
    assert "nats/byte" in result.summary() and "bits/byte" in result.summary()


def test_a_continuous_gpt_trains_refines_and_counts_its_new_shape(corpus):
    options = {**GPT, "continuous": True, "scheme": "strang"}
    result = train(tiny(corpus, model_options=options, refine_at=[2]))
    rows = result.history
    assert rows[0]["n_basis"] == [2] and rows[1]["n_basis"] == [4] and rows[1]["refined"]
    assert rows[1]["train_flops"] > rows[0]["train_flops"]  # twice the steps after refinement
    assert all(math.isfinite(row["val_loss"]) for row in rows)


def test_a_text_run_resumes_bitwise(corpus, tmp_path):
    config = tiny(corpus, max_steps=40, model_options={**GPT, "continuous": True, "dropout": 0.1})
    straight = train(config.replace(out=str(tmp_path / "a")))
    with pytest.raises(Interrupt):
        train(config.replace(out=str(tmp_path / "b")), callbacks=[interrupt_after(2)])
    assert read_checkpoint(tmp_path / "b")[0].epoch == 2
    resumed = train(config.replace(out=str(tmp_path / "b"), resume=True))
    assert without_times(resumed.history) == without_times(straight.history)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_step_budgets_and_mismatched_kinds_are_one_line(corpus):
    with pytest.raises(ConfigError, match=r"^max_steps: must be a multiple of eval_every \(10"):
        tiny(corpus, max_steps=25)
    with pytest.raises(ConfigError, match=r"^epochs: 4 contradicts max_steps 30"):
        tiny(corpus, epochs=4)
    with pytest.raises(ConfigError, match=r"^max_steps: is for text datasets"):
        TrainConfig(data="digits", max_steps=100)
    with pytest.raises(ConfigError, match=r"^grad_clip: must be > 0"):
        tiny(corpus, grad_clip=0)
    with pytest.raises(ConfigError, match=r"^validation_size: 'text' is a text dataset"):
        tiny(corpus, validation_size=10)
    with pytest.raises(ConfigError, match=r"^model: gpt is a text model .* data .digits. is an image dataset. Text datasets: text"):
        train(TrainConfig(model="gpt", data="digits", quiet=True))
    with pytest.raises(ConfigError, match=r"^model: continuousnet is an image model; data 'text' is a text dataset"):
        train(tiny(corpus, model="continuousnet", model_options={}))
    with pytest.raises(ConfigError, match=r"^label_smoothing:"):
        train(tiny(corpus, label_smoothing=0.1))


def test_a_window_longer_than_a_split_is_refused_before_training(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("a short text " * 30, encoding="utf-8")  # 390 bytes: the validation split is 19 bytes
    with pytest.raises(ValueError, match="short.txt"):
        train(tiny(path, model_options={**GPT, "context": 64}))


def test_the_command_line_trains_evaluates_and_analyzes_a_gpt(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    config = tmp_path / "gpt.yaml"
    config.write_text(json.dumps({"model": "gpt", "model_options": {**GPT, "continuous": True},
                                  "data_options": {"val_fraction": 0.1}}))
    assert main(["train", "--config", str(config), "--data", "text", "--data-dir", str(corpus), "--optimizer",
                 "adamw", "--lr", "0.003", "--max-steps", "20", "--eval-every", "10", "--batch-size", "8",
                 "--grad-clip", "1", "--threads", "1", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "step 20" in out and "val loss" in out and "nats/byte" in out and "bits/byte" in out
    assert main(["eval", str(run), "--table", "--schemes", "lie_trotter", "strang_midpoint", "--steps", "2", "8",
                 "--threads", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert any(line.startswith("validation loss (nats/byte) by manifestation") for line in table)
    trained_row = next(line for line in table if line.startswith("lie_trotter"))
    assert "*" in trained_row and 0 < float(trained_row.split()[1].rstrip("*")) < 6  # a loss, not a percentage
    assert main(["analyze", str(run), "--no-plots", "--steps", "2", "4", "--schemes", "lie_trotter", "strang",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "val examples" in out and "lie_trotter" in out and "strang" in out and "loss" in out

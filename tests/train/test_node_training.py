"""Full-batch node classification: the graph loop, best-validation selection, resume, CLI round trip."""

import json

import pytest
import torch

from contdepth.cli import main
from contdepth.data.graph import load_karate
from contdepth.train import (
    ConfigError, EarlyStopping, TrainConfig, evaluate, load_checkpoint, manifestation_table, model_options_for,
    read_checkpoint, train,
)
from contdepth.train import node
from contdepth.train.node import LAST_DIR, best_row, node_metrics
from helpers import Interrupt, communities
from helpers import interrupt_after as _interrupt_after
from helpers import without_times as _without_times

from helpers import CORA_DIR as CORA
ROW_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "lr", "threads",
            "n_steps", "n_basis", "refined", "params", "best_epoch", "epoch_time", "total_time",
            "train_time", "train_cpu_time", "cpu_time", "train_flops", "eval_flops", "world_size",
            "schedule_epochs"}  # the one loop's row: the same columns as an image run's


def config(**changes) -> TrainConfig:
    base = dict(model="gcn", model_options={"hidden": 8}, data="karate", epochs=12, optimizer="adam", lr=0.05,
                weight_decay=5e-4, schedule="constant", threads=1, quiet=True)
    return TrainConfig(**{**base, **changes})


# --- the loop -----------------------------------------------------------------------------------------
def test_graph_run_learns_and_logs_every_metric(tmp_path):
    data = communities()
    result = train(config(out=str(tmp_path / "run")), dataset=data)
    assert len(result.history) == 12
    assert set(result.history[0]) == ROW_KEYS
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_val_accuracy >= 0.9
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 13))
    # the model is the best-validation one and the reported test accuracy is that epoch's
    best = best_row(result.history)
    assert result.best_val_epoch == best["epoch"] and result.final_test_accuracy == best["test_accuracy"]
    assert evaluate(result.model, data, split="val") == (best["val_loss"], best["val_accuracy"])
    assert evaluate(result.model, data)[1] == best["test_accuracy"]
    assert result.model.training


def test_early_stopping_keeps_the_best_validation_weights(tmp_path):
    data = communities(flip_val=True)
    result = train(config(epochs=60, patience=4, out=str(tmp_path / "run")), dataset=data)
    history = result.history
    best = best_row(history)
    assert result.stopped_early and len(history) == best["epoch"] + 4 < 60
    assert history[-1]["val_accuracy"] < best["val_accuracy"]  # validation accuracy peaked, then fell
    # the returned model, the run's checkpoint and the reported test accuracy are the best epoch's
    assert evaluate(result.model, data, split="val") == (best["val_loss"], best["val_accuracy"])
    model, info = load_checkpoint(tmp_path / "run")
    assert info.epoch == len(history) and info.scheduler["early_stopping"]["best_epoch"] == best["epoch"]
    assert evaluate(model, data, split="val") == (best["val_loss"], best["val_accuracy"])
    assert result.final_test_accuracy == best["test_accuracy"] == evaluate(model, data)[1]
    # while RUN/last holds the last epoch's weights (for resuming)
    last, _ = load_checkpoint(tmp_path / "run" / LAST_DIR)
    assert evaluate(last, data, split="val")[1] == history[-1]["val_accuracy"]
    # resuming a run that stopped early trains no further
    again = train(config(epochs=60, patience=4, out=str(tmp_path / "run"), resume=True), dataset=data)
    assert _without_times(again.history) == _without_times(history)


def test_early_stopping_order_and_patience():
    stop = EarlyStopping(patience=2)
    assert stop.update(1, 0.5, 1.0) and stop.update(2, 0.5, 0.9)  # same accuracy, lower loss: better
    assert not stop.update(3, 0.5, 0.95) and not stop.stopped
    assert not stop.update(4, 0.4, 0.5) and stop.stopped and stop.best_epoch == 2
    history = [{"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.0}, {"epoch": 2, "val_accuracy": 0.5, "val_loss": 0.9},
               {"epoch": 3, "val_accuracy": 0.5, "val_loss": 0.9}]
    assert best_row(history)["epoch"] == 2


@pytest.mark.parametrize("model, options, refine_at", [
    ("gcn", {"hidden": 8}, ()),
    ("gcde", {"hidden": 8, "n_basis": 1, "scheme": "rk4", "n_steps": 2}, (3,)),
    ("cgnn", {"hidden": 8, "n_steps": 4, "dropout": 0.2}, ()),
])
@pytest.mark.parametrize("last_every", [2, 50])
def test_resume_ends_exactly_where_an_uninterrupted_run_ends(tmp_path, monkeypatch, model, options, refine_at,
                                                             last_every):
    """last/ is written every LAST_EVERY epochs: a resumed run replays the epochs after it."""
    monkeypatch.setattr(node, "LAST_EVERY", last_every)
    data = communities()
    cfg = config(model=model, model_options=options, epochs=6, refine_at=refine_at, schedule="cosine", patience=20)
    straight = train(cfg.replace(out=str(tmp_path / "a")), dataset=data)
    with pytest.raises(Interrupt):
        train(cfg.replace(out=str(tmp_path / "b")), dataset=data, callbacks=[_interrupt_after(3)])
    assert read_checkpoint(tmp_path / "b" / LAST_DIR)[0].epoch == (2 if last_every == 2 else 0)
    resumed = train(cfg.replace(out=str(tmp_path / "b"), resume=True), dataset=data)
    assert _without_times(resumed.history) == _without_times(straight.history)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    for where in ("", LAST_DIR):
        info_a, state_a = read_checkpoint(tmp_path / "a" / where)
        info_b, state_b = read_checkpoint(tmp_path / "b" / where)
        assert info_a.layout == info_b.layout and state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
        assert info_a.optimizer == info_b.optimizer
        assert all(torch.equal(v, info_b.optimizer_tensors[k]) for k, v in info_a.optimizer_tensors.items())


def test_refinement_keeps_the_function_and_continues_training(tmp_path):
    data = communities()
    cfg = config(model="gcde", model_options={"hidden": 8, "n_basis": 1, "n_steps": 1, "basis": "piecewise_constant"},
                 epochs=4, refine_at=(3,), optimizer="adam", lr=0.01)
    result = train(cfg, dataset=data)
    assert [row["n_basis"] for row in result.history] == [[1], [1], [2], [2]]
    assert [row["refined"] for row in result.history] == [False, False, True, False]


def test_gcde_evaluates_at_any_manifestation():
    data = communities()
    result = train(config(model="gcde", model_options={"hidden": 8, "n_basis": 2, "scheme": "rk4", "n_steps": 2},
                          epochs=8, lr=0.02), dataset=data)
    model = result.model
    fine = evaluate(model, data, scheme="rk4", n_steps=16)
    assert evaluate(model, data, scheme="rk4", n_steps=32)[0] == pytest.approx(fine[0], abs=1e-4)
    table = manifestation_table(model, data, schemes=("euler", "rk4"), steps=(2, 8))
    assert set(table) == {("euler", 2), ("euler", 8), ("rk4", 2), ("rk4", 8)}
    assert table[("rk4", 2)] == evaluate(model, data)[1]
    assert model.block.n_steps == 2  # the trained manifestation is restored


def test_node_metrics_use_one_eval_mode_pass():
    data = communities()
    torch.manual_seed(0)
    result = train(config(model_options={"hidden": 8, "dropout": 0.9}, epochs=2), dataset=data)
    model = result.model
    first = node_metrics(model, data, ("train", "val", "test"))
    assert node_metrics(model, data, ("train", "val", "test")) == first  # no dropout in eval mode
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match="split: must be one of train, val, test"):
        evaluate(model, data, split="validation")


def test_model_options_come_from_the_graph():
    data = communities()
    options = model_options_for(TrainConfig(model="cgnn", data="karate"), data)
    assert options["in_features"] == 6 and options["num_classes"] == 2 and options["num_nodes"] == 60
    with pytest.raises(ConfigError, match=r"model_options.in_features: dataset 'karate' has in_features=6"):
        model_options_for(TrainConfig(model="gcn", data="karate", model_options={"in_features": 5}), data)


def test_patience_needs_a_validation_split():
    from contdepth import data as datasets

    digits = datasets.load("digits", seed=0)
    with pytest.raises(ConfigError, match="patience: early stopping is for graph datasets"):
        train(TrainConfig(model="continuous_mlp", data="digits", epochs=1, patience=3, quiet=True), dataset=digits)


# --- command line ------------------------------------------------------------------------------------------
def test_cli_train_then_eval_on_karate(tmp_path, capsys):
    run = tmp_path / "karate"
    argv = ["train", "--model", "gcn", "--data", "karate", "--epochs", "40", "--optimizer", "adam", "--lr", "0.01",
            "--schedule", "constant", "--patience", "20", "--threads", "1", "--quiet", "--out", str(run)]
    assert main(argv) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = best_row(history)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {100 * best['test_accuracy']:.2f}%" in out
    assert f"best-validation weights, epoch {best['epoch']}" in out
    assert best["test_accuracy"] >= 0.8  # 18 test members; the graph alone separates the factions
    karate = load_karate()
    model, _ = load_checkpoint(run)
    assert evaluate(model, karate)[1] == best["test_accuracy"]


def test_cli_gcde_eval_table_and_resume(tmp_path, capsys):
    run = tmp_path / "gcde"
    common = ["train", "--model", "gcde", "--data", "karate", "--n-basis", "2", "--scheme", "rk4", "--n-steps", "2",
              "--model-option", "hidden=8", "--optimizer", "adam", "--lr", "0.01", "--schedule", "constant",
              "--threads", "1", "--quiet", "--out", str(run)]
    assert main([*common, "--epochs", "3"]) == 0
    assert main(["train", "--resume", "--out", str(run), "--epochs", "5", "--extend", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 5
    capsys.readouterr()
    assert main(["eval", str(run), "--scheme", "euler", "--n-steps", "8", "--table", "--steps", "1", "4"]) == 0
    out = capsys.readouterr().out
    assert "with euler, n_steps [8]" in out and "rk4" in out.splitlines()[-1]


@pytest.mark.parametrize("argv, message", [
    (["--patience", "0"], "patience: must be an integer >= 1"),
    (["--data", "digits", "--model", "continuous_mlp", "--patience", "3"],
     "patience: early stopping is for graph datasets"),
    (["--model-option", "hiden=3"], "model_options.hiden: not an option of model 'gcn'"),
    (["--model-option", "dropout=1.5"], "dropout"),
    (["--optimizer", "adagrad"], "optimizer: must be one of sgd, adam, adamw"),
])
def test_cli_bad_graph_options_exit_2_naming_the_option(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["train", "--model", "gcn", "--data", "karate", "--epochs", "2", "--quiet", "--out", str(out),
                 *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("contdepth train: error: ") and message in err


def test_cli_eval_refuses_a_manifestation_of_a_discrete_gcn(tmp_path, capsys):
    run = tmp_path / "gcn"
    assert main(["train", "--model", "gcn", "--data", "karate", "--epochs", "2", "--quiet", "--out", str(run)]) == 0
    assert main(["eval", str(run), "--scheme", "rk4"]) == 2
    assert "scheme: model 'gcn' has no ContinuousBlock" in capsys.readouterr().err


# --- Cora (skipped without the files) ---------------------------------------------------------------------
@pytest.mark.skipif(not (CORA / "net.txt").is_file(), reason=f"Cora not found at {CORA}")
def test_cora_gcn_trains_full_batch(tmp_path):
    result = train(TrainConfig(model="gcn", data="cora", data_dir=str(CORA), epochs=30, optimizer="adam", lr=0.05,
                               weight_decay=5e-4, schedule="constant", patience=10, threads=1, quiet=True,
                               out=str(tmp_path / "cora")))
    row = result.history[0]
    assert result.num_params == 1433 * 16 + 16 + 16 * 7 + 7
    assert result.final_test_accuracy > 0.75 and result.best_val_accuracy > 0.75
    assert row["params"] == result.num_params
    model, info = load_checkpoint(tmp_path / "cora")
    assert info.model_options["num_classes"] == 7 and info.model_options["in_features"] == 1433

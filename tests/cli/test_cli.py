"""The ``contdepth`` command line: options, failing early, train/eval/resume round trip."""

import json
import subprocess
import sys

import pytest

from contdepth import data
from contdepth.cli import build_parser, main, train_config_from_args

TINY = ["--model", "continuousnet", "--alpha", "4", "--n-basis", "1", "--batch-size", "64", "--threads", "1"]


@pytest.fixture()
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no data may be loaded before the options are checked")

    monkeypatch.setattr(data, "load", refuse)


@pytest.mark.parametrize("argv, message", [
    (["--optimizer", "lbfgs"], "optimizer: must be one of sgd, adam, adamw, rmsprop; got 'lbfgs'"),
    (["--lr", "-0.1"], "lr: must be > 0"),
    (["--epochs", "3", "--refine-at", "4"], "refine_at: every epoch must be in 1..epochs=3"),
    (["--norm", "layer"], "model_options.norm: must be one of batch, group, none"),
    (["--basis", "fourier"], "model_options.basis: must be one of"),
    (["--n-basis", "1", "2"], "model_options.n_basis: give one integer or 3"),
    (["--model-option", "depth=3"], "model_options.depth: not an option of model 'continuousnet'"),
    (["--model-option", "depth"], "--model-option: expected KEY=VALUE"),
    (["--data", "imagenet"], "data: must be one of"),
    (["--data-dir", "/does/not/exist", "--data", "fashion_mnist"], "data_dir: /does/not/exist is not a folder"),
    (["--model", "resnet", "--refine-at", "2"], "refine_at: model 'resnet' has no ContinuousBlock"),
    (["--schedule", "step", "--milestones", "0"], "milestones: epochs are numbered from 1"),
    (["--resume"], "resume: nothing to resume in"),
])
def test_a_bad_option_fails_before_any_work(tmp_path, capsys, no_data, argv, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("contdepth train: error: ") and message in err
    assert not out.exists()


def test_argparse_errors_also_exit_with_status_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--lr", "fast"])
    assert exc.value.code == 2 and "argument --lr: invalid float value: 'fast'" in capsys.readouterr().err


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: continuousnet\nmodel_options: {alpha: 16, n_basis: 2, norm: group}\n"
                    "epochs: 9\nlr: 0.05\nrefine_at: [3, 6]\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--lr", "0.2", "--alpha", "8",
                                      "--n-steps", "2", "4", "8", "--model-option", "checkpoint=true",
                                      "--refine-at", "--nesterov"])
    config = train_config_from_args(args)
    assert config.lr == 0.2 and config.epochs == 9 and config.refine_at == () and config.nesterov
    assert config.model_options == {"alpha": 8, "n_basis": 2, "norm": "group", "n_steps": [2, 4, 8],
                                    "checkpoint": True}
    assert config.momentum == 0.9  # untouched defaults stay


def test_train_eval_resume_through_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--refine-at", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "final test accuracy" in printed  # not a terminal: no bars, lines yes
    assert main(["eval", str(out), "--scheme", "rk4", "--n-steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "with rk4, n_steps [3, 3, 3]" in printed
    assert main(["eval", str(out), "--table", "--schemes", "euler", "heun", "--steps", "1", "2"]) == 0
    table = capsys.readouterr().out
    assert "scheme" in table and "heun" in table and "*" in table  # the trained manifestation is marked
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 2
    assert "holds a contdepth run; pass --resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3", "--extend", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["n_basis"] == [2, 2, 2]
    assert main(["train", "--resume", "--out", str(out), "--lr", "0.5"]) == 2
    assert "lr: differs from the run being resumed" in capsys.readouterr().err
    (out / "checkpoint.json").write_text("{not json")
    assert main(["eval", str(out)]) == 2
    assert "malformed checkpoint, not valid JSON" in capsys.readouterr().err


def test_python_dash_m_contdepth_runs():
    done = subprocess.run([sys.executable, "-m", "contdepth", "train", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--refine-at" in done.stdout and "--model-option" in done.stdout


def test_demo_runs_and_prints_a_manifestation_table(capsys):
    assert main(["demo", "--epochs", "2", "--quiet", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "by manifestation" in printed
    assert all(s in printed for s in ("euler", "midpoint", "rk4"))


# --- training flags generated from the TrainConfig fields -------------------------------------------
def test_every_train_config_field_has_a_flag_with_its_help_and_default():
    import argparse
    from dataclasses import fields

    from contdepth.cli import build_parser
    from contdepth.train.config import TrainConfig

    parser = build_parser()
    train_parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    by_dest = {a.dest: a for a in train_parser._actions}
    for f in fields(TrainConfig):
        assert f.metadata["help"], f.name
        if f.name in ("model_options", "data_options"):
            continue
        action = by_dest[f.name]
        assert action.help.startswith(f.metadata["help"]), f.name
        default = TrainConfig.default_of(f.name)
        if default is not None:
            assert "(default: " in action.help, f.name
    assert "--epochs N            training epochs, numbered from 1 (default: 10)" in train_parser.format_help()


def test_generated_flags_reach_the_config():
    from contdepth.cli import build_parser, train_config_from_args

    args = build_parser().parse_args([
        "train", "--epochs", "3", "--betas", "0.8", "0.95", "--refine-at", "2", "3", "--nesterov", "--quiet",
        "--warmup-epochs", "0.5", "--eval-n-steps", "4", "--train-size", "100", "--alpha", "4",
        "--model-option", "n_basis=2",
    ])
    config = train_config_from_args(args)
    assert (config.epochs, config.betas, config.refine_at, config.nesterov, config.quiet) == (
        3, (0.8, 0.95), (2, 3), True, True)
    assert (config.warmup_epochs, config.eval_n_steps, config.train_size) == (0.5, 4, 100)
    assert config.model_options == {"alpha": 4, "n_basis": 2}
    assert build_parser().parse_args(["train", "--no-nesterov"]).nesterov is False
    untouched = vars(build_parser().parse_args(["train"]))
    assert "epochs" not in untouched and "quiet" not in untouched  # unset flags leave the config's own value


# --- issue 26: a mistyped flag is the subcommand's error, with the nearest flag ------------------------
@pytest.mark.parametrize("argv, usage, hint", [
    (["train", "--epochz", "1"], "usage: contdepth train", "did you mean --epochs?"),
    (["train", "--lr=0.1", "--nesterv"], "usage: contdepth train", "did you mean --nesterov?"),
    (["eval", "RUN", "--n-stepz", "4"], "usage: contdepth eval", "did you mean --n-steps?"),
    (["demo", "--epoch-count", "2"], "usage: contdepth demo", "did you mean --epochs?"),
    (["compress", "RUN", "--n-basis", "1", "--out", "x", "--finetune-epocs", "1"], "usage: contdepth compress",
     "did you mean --finetune-epochs?"),
    (["analyze", "RUN", "--max-exampels", "3"], "usage: contdepth analyze", "did you mean --max-examples?"),
    (["export", "RUN", "--out", "m.onnx", "--static-bach"], "usage: contdepth export", "did you mean --static-batch?"),
    (["experiment", "SPEC", "--out", "x", "--workrs", "2"], "usage: contdepth experiment", "did you mean --workers?"),
    (["report", "DIR", "--no-plotz"], "usage: contdepth report", "did you mean --no-plots?"),
    (["schemes", "--lmk", "0"], "usage: contdepth schemes", "did you mean --lm-k?"),
])
def test_an_unknown_flag_shows_the_subcommands_usage_and_the_nearest_flag(capsys, argv, usage, hint):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(usage), err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"contdepth {argv[0]}: error: unrecognized arguments: ") and last.endswith(hint), last


def test_an_unknown_word_gets_no_made_up_hint(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "1", "extra"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == "contdepth train: error: unrecognized arguments: extra"


def test_train_help_lists_every_registered_model(capsys):
    from contdepth.models import available_models

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    line = text[text.index("--model MODEL model name"):text.index("(default: continuousnet)")]
    assert available_models() and all(name in line.replace(",", " ").replace(";", " ").split() for name in available_models()), line
    assert f"graph models: {', '.join(available_models(graph=True))}" in line

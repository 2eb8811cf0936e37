"""``contdepth generate``: text sampled from a text run's GPT; every bad input is one line, exit status 2."""

from __future__ import annotations

import pytest
import torch

import contdepth.train
from contdepth.cli import main
from contdepth.commands.generate import printable
from contdepth.models import create, generate
from contdepth.nn import manifest
from contdepth.train import load_checkpoint, save_checkpoint

TINY = {"width": 16, "heads": 2, "layers": 2, "context": 8}


def _run(folder, name: str, scale: float = 1.0, **options):
    """A run folder as the trainer leaves it (the checkpoint's writer), of an untrained model; ``scale``
    multiplies a GPT's layers (large weights: manifestations that differ visibly)."""
    torch.manual_seed(0)
    model = create(name, **options)
    with torch.no_grad():
        for parameter in getattr(model, "layers", torch.nn.Module()).parameters():
            parameter.mul_(scale)
    save_checkpoint(folder, model, epoch=1)
    return str(folder)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"discrete": _run(root / "discrete", "gpt", **TINY),
            "continuous": _run(root / "continuous", "gpt", scale=25.0, continuous=True, **TINY),
            "image": _run(root / "image", "continuousnet", alpha=2, n_basis=1, in_channels=1)}


def generated(capsys, argv: list[str]) -> str:
    assert main(["generate", *argv, "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert main(["generate", *argv]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    lines = captured.err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("contdepth generate: error: "), captured.err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_the_prompt_and_the_sample_are_printed_the_same_for_a_seed_with_and_without_the_cache(runs, capsys, kind):
    argv = [runs[kind], "--prompt", "héllo", "--tokens", "20", "--seed", "5", "--temperature", "0.9", "--top-k", "50"]
    out = generated(capsys, argv)  # 26 bytes: the window slides past the context of 8
    model, _ = load_checkpoint(runs[kind])
    sample = generate(model, "héllo".encode(), 20, temperature=0.9, top_k=50, seed=5)
    assert out == printable(("héllo".encode() + sample).decode("utf-8", errors="replace")) + "\n"  # nothing else
    assert generated(capsys, argv) == out
    assert generated(capsys, [*argv, "--no-cache"]) == out
    assert generated(capsys, [*argv[:-6], "--seed", "6"]) != out


def test_another_manifestation_of_a_continuous_run(runs, capsys):
    out = generated(capsys, [runs["continuous"], "--prompt", "ab", "--tokens", "12", "--scheme", "rk4",
                             "--n-steps", "8"])
    model, _ = load_checkpoint(runs["continuous"])
    with manifest(model, "rk4", 8):
        sample = generate(model, b"ab", 12)
    assert out == printable((b"ab" + sample).decode("utf-8", errors="replace")) + "\n"
    assert out != generated(capsys, [runs["continuous"], "--prompt", "ab", "--tokens", "12"])
    assert generated(capsys, [runs["continuous"], "--prompt", "ab", "--tokens", "12", "--scheme", "rk4",
                              "--n-steps", "8", "--no-cache"]) == out


@pytest.fixture()
def nothing_loaded(monkeypatch):
    """Fail the test if the run folder is read: options are checked before that."""
    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be loaded before the options are checked")

    monkeypatch.setattr(contdepth.train, "load_checkpoint", refuse)
    monkeypatch.setattr(contdepth.train, "read_description", refuse)


@pytest.mark.parametrize("flags, message", [
    (["--prompt", "", "--tokens", "3"], "prompt: expected non-empty bytes"),
    (["--prompt", "\ud800", "--tokens", "3"], "prompt: is not valid text"),
    (["--prompt", "a", "--tokens", "0"], "tokens"),
    (["--prompt", "a", "--tokens", "1000001"], "tokens"),
    (["--prompt", "a", "--tokens", "3", "--temperature", "-1"], "temperature"),
    (["--prompt", "a", "--tokens", "3", "--temperature", "nan"], "temperature"),
    (["--prompt", "a", "--tokens", "3", "--temperature", "inf"], "temperature"),
    (["--prompt", "a", "--tokens", "3", "--top-k", "0"], "top_k"),
    (["--prompt", "a", "--tokens", "3", "--top-k", "257"], "top_k"),
    (["--prompt", "a", "--tokens", "3", "--seed", "-1"], "seed"),
    (["--prompt", "a", "--tokens", "3", "--seed", str(2 ** 64)], "seed"),
    (["--prompt", "a", "--tokens", "3", "--scheme", "nope"], "scheme: must be one of"),
    (["--prompt", "a", "--tokens", "3", "--n-steps", "0"], "n_steps"),
    (["--prompt", "a", "--tokens", "3", "--n-steps", "10000000"], "n_steps"),
    (["--prompt", "a", "--tokens", "3", "--threads", "0"], "threads"),
    (["--prompt", "a", "--tokens", "3", "--device", "tpu"], "device"),
    (["--prompt", "a", "--tokens", "x"], "invalid int value"),
    (["--tokens", "3"], "--prompt"),
])
def test_bad_options_are_one_line_before_the_run_is_read(runs, capsys, nothing_loaded, flags, message):
    if message in ("invalid int value", "--prompt"):  # argparse's own answer: its usage, then the error
        with pytest.raises(SystemExit) as exited:
            main(["generate", runs["discrete"], *flags])
        assert exited.value.code == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
        return
    one_line_error(capsys, [runs["discrete"], *flags], message)


def test_bad_runs_are_one_line(runs, capsys, tmp_path):
    prompt = ["--prompt", "a", "--tokens", "3"]
    one_line_error(capsys, [runs["image"], *prompt], "'continuousnet', an image model", "text model")
    one_line_error(capsys, [runs["discrete"], *prompt, "--scheme", "rk4"], "is discrete (no ContinuousBlock)")
    one_line_error(capsys, [runs["discrete"], *prompt, "--n-steps", "2"], "--scheme and --n-steps need")
    one_line_error(capsys, [runs["continuous"], *prompt, "--scheme", "backward_euler"], "cache: scheme",
                   "decode without the cache")
    one_line_error(capsys, [str(tmp_path / "missing"), *prompt], "no checkpoint here")
    one_line_error(capsys, [str(tmp_path), *prompt], "no checkpoint here")
    (tmp_path / "checkpoint.json").write_text("{not json")
    one_line_error(capsys, [str(tmp_path), *prompt], "checkpoint.json")


def test_control_characters_of_a_sample_reach_the_terminal_as_escapes():
    """A sampled ESC or BEL (a trained model's, or a hostile checkpoint's) must not drive the terminal."""
    assert printable("ok\x1b[2J\x07\r\x9b\nnext\tcolumn") == "ok\\x1b[2J\\x07\\x0d\\x9b\nnext\tcolumn"

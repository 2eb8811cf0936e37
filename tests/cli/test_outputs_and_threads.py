"""Where commands write, how many threads they may ask for, and Ctrl-C before a command begins (issue 26)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import contdepth.cli
from contdepth.cli import main
from contdepth.common.validate import cpu_limit
from contdepth.train import TrainConfig, train


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    train(TrainConfig(model="continuousnet", model_options={"alpha": 2, "n_basis": 1}, data="digits", epochs=1,
                      train_size=200, validation_size=0, batch_size=64, quiet=True, threads=1, out=str(out)))
    return out


# --- c) --threads is bounded by the CPUs, for every command that takes it -----------------------------------
@pytest.mark.parametrize("argv", [
    ["train", "--model", "continuousnet", "--data", "digits", "--epochs", "1"],
    ["eval", "RUN"], ["analyze", "RUN"], ["compress", "RUN", "--n-basis", "1", "--out", "OUT"],
    ["export", "RUN", "--out", "OUT/m.onnx"], ["demo", "--epochs", "1"], ["experiment", "SPEC", "--out", "OUT"],
])
def test_a_million_threads_is_one_line_naming_the_cpus(tmp_path, capsys, argv):
    spec = tmp_path / "spec.yaml"
    spec.write_text("base: {model: continuousnet, data: digits, epochs: 1}\nseeds: [0]\narms: {a: {}}\n")
    argv = [{"RUN": str(tmp_path / "nothing"), "OUT": str(tmp_path / "out"), "SPEC": str(spec)}.get(a, a)
            for a in argv]
    one_line_error(capsys, [*argv, "--threads", "1000000"], f"threads: must be an integer in 1..{cpu_limit()}")
    assert not (tmp_path / "out").exists()


def test_the_thread_limit_is_the_machines_cpus():
    assert cpu_limit() >= max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    assert cpu_limit() >= (os.cpu_count() or 1)


# --- j) missing folders above an output are created, for export as for the others -------------------------
def test_export_creates_the_folders_above_its_out(run, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    out = tmp_path / "new" / "deeper" / "model.onnx"
    assert main(["export", str(run), "--out", str(out), "--no-data"]) == 0, capsys.readouterr().err
    assert out.is_file() and Path(f"{out}.json").is_file()


def test_report_compress_and_analyze_create_the_folders_above_their_out(run, tmp_path, capsys):
    assert main(["compress", str(run), "--n-basis", "1", "--out", str(tmp_path / "c" / "d"),
                 "--latency-batch-sizes"]) == 0
    assert main(["analyze", str(run), "--out", str(tmp_path / "a" / "b"), "--no-plots", "--schemes", "euler",
                 "--steps", "1", "2", "--max-examples", "40"]) == 0
    assert (tmp_path / "c" / "d" / "checkpoint.json").is_file() and (tmp_path / "a" / "b" / "analysis.json").is_file()


def test_a_tilde_in_export_out_is_the_home_folder(run, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(run), "--out=~/m/model.onnx", "--no-data"]) == 0, capsys.readouterr().err
    assert (tmp_path / "home" / "m" / "model.onnx").is_file() and not (tmp_path / "~").exists()


# --- k) --tensorboard whose folder cannot be written: the preflight says so -------------------------------
def test_tensorboard_that_cannot_be_written_is_refused_before_training(run, tmp_path, capsys, monkeypatch):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "tensorboard").write_text("not a folder")
    monkeypatch.setattr(contdepth.train.trainer, "load_data",
                        lambda *a, **k: pytest.fail("the preflight must refuse before the data is read"))
    one_line_error(capsys, ["train", "--resume", "--extend", "--epochs", "2", "--tensorboard", "--out", str(copy)],
                   "tensorboard:", "is not a folder")
    (copy / "tensorboard").unlink()
    (copy / "tensorboard").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).endswith("tensorboard")
                        else real_access(p, mode, **kw))  # a read-only folder (root may write anywhere)
    one_line_error(capsys, ["train", "--resume", "--extend", "--epochs", "2", "--tensorboard", "--out", str(copy)],
                   "tensorboard:", "is not writable")


# --- b) Ctrl-C while starting up ----------------------------------------------------------------------------
def test_ctrl_c_while_starting_is_one_line_and_status_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(contdepth.cli, "load_plugins", interrupted)
    assert main(["schemes"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "contdepth: interrupted while starting; nothing was done"


def test_ctrl_c_while_python_m_contdepth_imports_is_one_line(tmp_path):
    code = ("import builtins, runpy, sys\n"
            "real = builtins.__import__\n"
            "def hook(name, *args, **kwargs):\n"
            "    if name.endswith('cli') or name == 'contdepth.cli':\n"
            "        raise KeyboardInterrupt\n"
            "    return real(name, *args, **kwargs)\n"
            "builtins.__import__ = hook\n"
            "sys.argv = ['contdepth', 'schemes']\n"
            "runpy.run_module('contdepth', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == "contdepth: interrupted while starting; nothing was done"

"""What contdepth promises about a user's files: overwrite, the run lock, kills at every write point, resume.

Each test here was written against a defect a stranger met (issue 13): ``--overwrite``
removing a user's own files, two runs mixing their output in one folder, ``export``
replacing a run's checkpoint, runs that could not be resumed after a kill, advice that
did not work, a schedule silently stretched on resume, nothing printed into a log file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from contdepth.cli import main
from contdepth.data import load as load_data
from contdepth.data.dataset import make_dataset
import contdepth.common.progress as common_progress
from contdepth.train import ConfigError, TrainConfig, checkpoint as checkpoint_module, node, progress, train
from contdepth.train import trainer as trainer_module
from contdepth.common import files as files_module
from contdepth.train.checkpoint import read_checkpoint
from contdepth.train.rundir import LOCK_FILE, RunDirLocked, RunLock, folder_state
from helpers import communities
from helpers import REPO_ROOT

ROOT = REPO_ROOT


@pytest.fixture(scope="module")
def small_digits():
    """128 training and 64 test digits: a run of a few epochs takes a fraction of a second."""
    full = load_data("digits", seed=0)
    return make_dataset("digits", full.train_x[:128], full.train_y[:128], full.test_x[:64], full.test_y[:64],
                        num_classes=10, max_value=full.max_value, source="digits subset", augment=full.augment)


def image_config(**changes) -> TrainConfig:
    base = dict(model="continuousnet", model_options={"alpha": 4, "n_basis": 1}, data="digits", epochs=3,
                batch_size=64, lr=0.1, refine_at=(2,), schedule="cosine", quiet=True, threads=1)
    return TrainConfig(**{**base, **changes})


def graph_config(**changes) -> TrainConfig:
    base = dict(model="gcn", model_options={"hidden": 8}, data="karate", epochs=5, optimizer="adam", lr=0.05,
                schedule="constant", patience=20, quiet=True, threads=1)
    return TrainConfig(**{**base, **changes})


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. --overwrite acts only on a contdepth run, and only on its files --------------------------------
@pytest.mark.parametrize("user_files", [
    {"config.yaml": "notes\n"},
    {"metrics.jsonl": "my own metrics\n"},
    {"checkpoint.json": '{"mine": true}\n', "checkpoint-0001.safetensors": "not a contdepth file"},
    {"last/checkpoint.json": '{"mine": true}\n'},
])
def test_overwrite_refuses_a_folder_that_is_not_a_contdepth_run(tmp_path, small_digits, user_files):
    out = tmp_path / "p"
    for name, text in user_files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = listing(out)
    for config in (image_config(out=str(out), overwrite=True), image_config(out=str(out))):
        with pytest.raises(ConfigError, match=rf"out: {out} cannot be used: .*choose a new --out"):
            train(config, dataset=small_digits)
    assert listing(out) == before


def test_overwrite_on_the_command_line_names_the_folder(tmp_path, capsys):
    out = tmp_path / "p"
    out.mkdir()
    (out / "config.yaml").write_text("notes\n")
    code = main(["train", "--data", "digits", "--epochs", "1", "--out", str(out), "--overwrite", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"out: {out} cannot be used: --overwrite replaces only the files of a contdepth run" in err
    assert (out / "config.yaml").read_text() == "notes\n"


def test_overwrite_replaces_a_runs_files_and_keeps_everything_else(tmp_path, small_digits):
    out = tmp_path / "run"
    train(graph_config(out=str(out)), dataset=communities())
    (out / "notes.txt").write_text("mine")
    (out / "last" / "mine.txt").write_text("mine too")
    train(image_config(out=str(out), overwrite=True, epochs=1, refine_at=()), dataset=small_digits)
    assert (out / "notes.txt").read_text() == "mine" and (out / "last" / "mine.txt").read_text() == "mine too"
    assert sorted(os.listdir(out)) == ["checkpoint-0001.safetensors", "checkpoint.json", "config.yaml", "last",
                                       "metrics.jsonl", "notes.txt"]
    assert os.listdir(out / "last") == ["mine.txt"]  # the graph run's last/ checkpoint went, the user's file stayed


# --- 2. one run per folder ------------------------------------------------------------------------------
def test_a_second_run_on_a_locked_folder_is_refused_and_nothing_is_touched(tmp_path, small_digits):
    out = tmp_path / "run"
    train(image_config(out=str(out), epochs=1, refine_at=()), dataset=small_digits)
    before = listing(out)
    with RunLock(out):  # another run holds the folder
        for config in (image_config(out=str(out), resume=True, epochs=1, refine_at=()),
                       image_config(out=str(out), overwrite=True)):
            with pytest.raises(RunDirLocked, match=rf"out: {out} is in use by another contdepth run \(pid "
                                                   rf"{os.getpid()} on .*\); wait for it to end"):
                train(config, dataset=small_digits)
        assert {k: v for k, v in listing(out).items() if k != LOCK_FILE} == before
    (tmp_path / "fresh").mkdir()
    with RunLock(tmp_path / "fresh"):  # also a new folder that another run has just created
        with pytest.raises(RunDirLocked):
            train(image_config(out=str(tmp_path / "fresh")), dataset=small_digits)
    assert not (out / LOCK_FILE).exists()  # released and removed at the end of each run


def test_a_lock_left_by_a_killed_process_is_stale(tmp_path, small_digits):
    out = tmp_path / "run"
    out.mkdir()
    script = textwrap.dedent(f"""
        import sys, time
        from contdepth.train.rundir import RunLock
        RunLock({str(out)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLocked, match=f"pid {holder.pid}"):
            train(image_config(out=str(out), epochs=1, refine_at=()), dataset=small_digits)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (out / LOCK_FILE).exists() and folder_state(out) == "empty"  # the dead run's lock file stays behind
    result = train(image_config(out=str(out), epochs=1, refine_at=()), dataset=small_digits)
    assert result.history[-1]["epoch"] == 1


def test_two_runs_racing_for_one_folder_never_mix_their_output(tmp_path, small_digits, monkeypatch):
    """The state is checked again under the lock: a run that saw an empty folder in its preflight,
    but takes the lock only after another run has finished there, is refused and writes nothing."""
    out = tmp_path / "run"
    real_acquire = RunLock.acquire
    other = []

    def acquire_after_another_run(lock):
        if not other:  # between this run's preflight and its lock, another run uses the folder
            other.append(True)
            train(image_config(out=str(out), seed=1), dataset=small_digits)
        return real_acquire(lock)

    monkeypatch.setattr(RunLock, "acquire", acquire_after_another_run)
    with pytest.raises(ConfigError, match=rf"out: {out} holds a contdepth run; pass --resume"):
        train(image_config(out=str(out)), dataset=small_digits)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert read_checkpoint(out)[0].train_config().seed == 1  # only the other run's output is there


def test_overwrite_keeps_the_old_run_until_the_new_one_saves(tmp_path, small_digits):
    out = tmp_path / "run"
    train(image_config(out=str(out), epochs=1, refine_at=()), dataset=small_digits)
    before = listing(out)
    with pytest.raises(ConfigError, match="patience: early stopping is for graph datasets"):
        train(image_config(out=str(out), overwrite=True, patience=3), dataset=small_digits)  # refused after the lock
    assert listing(out) == before


def test_user_files_that_look_like_temporary_files_are_kept(tmp_path, small_digits):
    out = tmp_path / "run"
    train(image_config(out=str(out), epochs=1, refine_at=()), dataset=small_digits)
    (out / ".metrics.jsonl.backup.tmp").write_text("mine")
    train(image_config(out=str(out), epochs=1, refine_at=(), overwrite=True), dataset=small_digits)
    assert (out / ".metrics.jsonl.backup.tmp").read_text() == "mine"


# --- 3. commands that write files never replace a run's own ----------------------------------------------
@pytest.mark.parametrize("target", ["checkpoint.json", "metrics.jsonl", "checkpoint", "last/checkpoint.json"])
def test_export_never_writes_over_a_runs_own_files(tmp_path, capsys, target):
    run = tmp_path / "run"
    train(graph_config(out=str(run), epochs=2))
    before = listing(run)
    code = main(["export", str(run), "--out", str(run / target), "--overwrite", "--no-data"])
    err = capsys.readouterr().err
    assert code == 2 and "is a file of the contdepth run in" in err and err.count("\n") == 1
    assert listing(run) == before


# --- 4. every kill point resumes ---------------------------------------------------------------------------
class Killed(BaseException):
    """Stands for SIGKILL at a write point (a BaseException: nothing in the library catches it)."""


class WritePoints:
    """Counts the run's writes and 'kills' the run just before or just after the ``kill_at``-th event."""

    def __init__(self, monkeypatch, kill_at: int) -> None:
        self.count, self.kill_at = 0, kill_at
        atomic = checkpoint_module.atomic_write_bytes
        append = trainer_module.append_metrics

        def event(partial_file: Path | None = None) -> None:
            self.count += 1
            if self.count == self.kill_at:
                if partial_file is not None:  # killed mid-write: a temporary file is left behind
                    partial_file.with_name(f".{partial_file.name}.k1ll3d00.tmp").write_bytes(b"partial")
                raise Killed

        def atomic_write_bytes(path, data):
            event(Path(path))
            atomic(path, data)
            event()

        def append_metrics(path, row, **kwargs):
            event()
            append(path, row, **kwargs)
            event()

        monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", atomic_write_bytes)
        monkeypatch.setattr(files_module, "atomic_write_bytes", atomic_write_bytes)  # config.yaml, metrics.jsonl
        monkeypatch.setattr(trainer_module, "append_metrics", append_metrics)


def _without_times(history):
    return [{k: v for k, v in row.items() if "time" not in k} for row in history]


def _kill_everywhere(tmp_path, monkeypatch, config: TrainConfig, dataset) -> int:
    straight = train(config.replace(out=str(tmp_path / "straight")), dataset=dataset)
    kill_at = 0
    while True:
        kill_at += 1
        out = tmp_path / f"kill{kill_at}"
        with monkeypatch.context() as patch:
            points = WritePoints(patch, kill_at)
            try:
                train(config.replace(out=str(out)), dataset=dataset)
            except Killed:
                pass
            else:
                assert points.count < kill_at
                return kill_at - 1  # the run completed: every write point has been tried
        # what the CLI would advise (tested below): resume a run, else run the same command again
        state = folder_state(out)
        assert state in ("run", "unsaved", "empty", "missing"), (kill_at, state)
        resumed = train(config.replace(out=str(out), resume=state == "run"), dataset=dataset)
        assert _without_times(resumed.history) == _without_times(straight.history), kill_at
        for (key, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
            assert torch.equal(a, b), (kill_at, key)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [r["epoch"] for r in straight.history], kill_at
        assert not [p for p in out.rglob("*.tmp")], kill_at  # leftovers of the killed write are gone


def test_an_image_run_killed_at_any_write_point_resumes_to_the_same_end(tmp_path, monkeypatch, small_digits):
    config = image_config(model="continuous_mlp", model_options={"width": 8, "n_basis": 1, "scheme": "euler"},
                          momentum=0.9, nesterov=True)  # a small model: ~50 runs
    points = _kill_everywhere(tmp_path, monkeypatch, config, small_digits)
    assert points >= 20  # epoch 0's checkpoint, config and metrics, then three writes per epoch, each before/after


def test_a_graph_run_killed_at_any_write_point_resumes_to_the_same_end(tmp_path, monkeypatch):
    monkeypatch.setattr(node, "LAST_EVERY", 2)
    points = _kill_everywhere(tmp_path, monkeypatch, graph_config(epochs=4), communities())
    assert points >= 20  # epoch 0: last/ and the root checkpoint, config, metrics; then rows, best states, last/


def test_ctrl_c_advice_works_before_and_after_the_first_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", "karate", "--model", "gcn", "--epochs", "3", "--threads", "1", "--quiet",
            "--out", str(out)]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # Ctrl-C while the data loads: nothing is saved, nothing left behind
        patch.setattr(trainer_module, "load_data", interrupted)
        assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"nothing was saved in {out} yet: run the same command again" in err
    assert not out.exists()
    with monkeypatch.context() as patch:  # Ctrl-C in epoch 1: the advice is --resume, and it works
        patch.setattr(node, "node_metrics", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"continue with: contdepth train --resume --out {out}" in err
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert read_checkpoint(out / "last")[0].epoch == 3


# --- 5. resume continues exactly; extending is a choice ------------------------------------------------------
def test_resume_with_other_epochs_needs_extend_and_announces_the_schedule(tmp_path, small_digits, capsys):
    out = tmp_path / "run"
    config = image_config(epochs=4, refine_at=(), lr=0.025, out=str(out))
    first = train(config, dataset=small_digits)
    with pytest.raises(ConfigError, match=r"epochs: .* set up for 4 epochs .* add --extend .* cosine schedule is "
                                          r"then recomputed to span 6 epochs"):
        train(config.replace(epochs=6, resume=True), dataset=small_digits)
    assert read_checkpoint(out)[0].epoch == 4
    extended = train(config.replace(epochs=6, resume=True, extend=True, quiet=False), dataset=small_digits)
    printed = capsys.readouterr().out
    assert "extended from 4 to 6 epochs; the cosine schedule now spans 6 epochs (lr at epoch 5:" in printed
    assert [row["epoch"] for row in extended.history] == [1, 2, 3, 4, 5, 6]
    assert first.history[-1]["lr"] < extended.history[4]["lr"]  # the stretch the issue saw, now announced
    assert read_checkpoint(out)[0].train_config().epochs == 6  # a later --resume continues the extended run


# --- 8-10. what a run prints ----------------------------------------------------------------------------------
def test_without_a_terminal_a_run_prints_its_start_and_progress_lines(tmp_path, small_digits, capsys, monkeypatch):
    monkeypatch.setattr(common_progress, "LOG_INTERVAL_S", 0.0)  # Progress lives in contdepth.common (issue 28)
    train(image_config(out=str(tmp_path / "run"), quiet=False, epochs=1, refine_at=(), batch_size=32),
          dataset=small_digits)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("contdepth train: continuousnet on digits, ")
    assert "cpu, 1 thread (--threads); run folder" in lines[0]
    assert any(line.startswith("epoch 1/1: 2/4 steps, loss ") and "left" in line for line in lines)


def test_a_run_without_out_says_so_at_the_start(small_digits, capsys):
    train(image_config(quiet=False, epochs=1, refine_at=()), dataset=small_digits)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("not saved (no --out given)")


def test_default_threads_respect_the_environment_affinity_and_load(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert progress.default_threads() == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert progress.default_threads() == (4, "4 CPUs")
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert progress.default_threads() == (1, "4 CPUs, 3 busy")
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert progress.default_threads() == (1, "4 CPUs, 4 busy")


# --- graph runs write little, and say honestly how long they took ----------------------------------------------
def test_a_graph_run_writes_the_best_state_on_improvement_and_last_at_an_interval(tmp_path, monkeypatch):
    saves = []
    real = node.save_checkpoint

    def counting(folder, *args, **kwargs):
        saves.append((Path(folder).name, kwargs["epoch"]))
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(node, "save_checkpoint", counting)
    result = train(graph_config(out=str(tmp_path / "run"), epochs=120, patience=None), dataset=communities())
    improvements = sum(1 for row in result.history if row["best_epoch"] == row["epoch"])
    last = [epoch for folder, epoch in saves if folder == "last"]
    assert last == [0, 50, 100, 120]
    root = [epoch for folder, epoch in saves if folder == "run"]
    assert set(last) <= set(root)  # the best state is saved with every last/, so it is never behind it
    assert len(root) <= len(last) + improvements
    assert result.wall_time >= result.total_time > 0


def test_names_a_run_writes_are_matched_whole_so_a_users_file_is_never_taken_for_one():
    """``re.match`` with ``$`` also matched before a final newline (and ``\\d`` any script's digits): a user's
    ``checkpoint-1.safetensors\\n`` counted as a run file, which ``--overwrite`` removes (issue 26)."""
    from contdepth.train.rundir import is_run_file

    assert is_run_file("checkpoint-12.safetensors") and is_run_file(".metrics.jsonl.abcd_123.tmp")
    for name in ("checkpoint-1.safetensors\n", "checkpoint-\u0661.safetensors", ".metrics.jsonl.abcd_123.tmp\n",
                 "checkpoint.json\n"):
        assert not is_run_file(name), repr(name)

"""Hostile suite folders and hostile surroundings of a suite (issue 26).

Runs that are not the spec's, tampered records, folders that belong to someone else, a
``~`` the shell did not expand, code planted in the working folder, and a runner killed
under its workers: each is one line (exit status 2) or handled, never a traceback, a hang
or a file of someone else's replaced. Suites here are one epoch of a tiny model on digits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from contdepth.cli import main
from contdepth.experiment import ExperimentSpec, check_experiment_dir, run_experiment, run_status, summarize
from contdepth.experiment.folder import run_folder, steps_file
from contdepth.train import ConfigError, train
from contdepth.train.progress import format_seconds

TINY = {
    "name": "tiny",
    "base": {"model": "continuousnet", "model_options": {"alpha": 2, "n_basis": 1}, "data": "digits",
             "train_size": 200, "validation_size": 100, "epochs": 1, "batch_size": 64, "eval_batch_size": 500},
    "seeds": [0],
    "arms": {"a": {}, "b": {"model_options": {"scheme": "rk4"}}},
    "comparisons": [{"arm": "b", "baseline": "a"}],
    "evaluate": {"schemes": ["euler"], "n_steps": [1, 2], "examples": 50},
}


def write_spec(folder: Path, spec: dict = TINY, name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A finished one-epoch suite (two arms, one seed, a manifestation grid each)."""
    folder = tmp_path_factory.mktemp("tiny")
    run_experiment(write_spec(folder), folder / "suite", threads=1, quiet=True, report=False)
    return folder / "suite"


@pytest.fixture()
def suite(tiny, tmp_path) -> Path:
    """A copy of the tiny suite to tamper with."""
    shutil.copytree(tiny, tmp_path / "suite")
    return tmp_path / "suite"


def one_line(capsys, argv: list[str], *needles: str, code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


# --- e) only the spec's runs count ----------------------------------------------------------------------
def test_a_run_extended_past_the_spec_is_not_counted_nor_done(suite, tmp_path, capsys):
    run = run_folder(suite, "a", 0)
    assert main(["train", "--resume", "--extend", "--epochs", "2", "--out", str(run), "--quiet"]) == 0
    summary = summarize(suite)
    assert summary["arms"]["a"]["n"] == 0  # its epoch-2 accuracy is not the 1-epoch spec's result
    assert any("a seed 0: not counted" in u and "schedule of 2 epochs" in u for u in summary["unfinished"])
    spec = ExperimentSpec.from_yaml(suite / "spec.yaml")
    with pytest.raises(ConfigError, match=r"not arm 'a' seed 0 of this spec .*schedule of 2 epochs"):
        run_status(spec, suite, spec.arm("a"), 0)
    one_line(capsys, ["experiment", str(suite / "spec.yaml"), "--out", str(suite), "--threads", "1"],
             "is not arm 'a' seed 0", "move it away")


def test_a_longer_run_copied_into_the_suite_is_not_done(suite, tmp_path):
    spec = ExperimentSpec.from_yaml(suite / "spec.yaml")
    longer = spec.config(spec.arm("a"), 0).replace(epochs=2, out=str(tmp_path / "longer"), threads=1)
    train(longer)
    shutil.rmtree(run_folder(suite, "a", 0))
    shutil.copytree(tmp_path / "longer", run_folder(suite, "a", 0))
    with pytest.raises(ConfigError, match="schedule of 2 epochs"):
        run_status(spec, suite, spec.arm("a"), 0)
    assert summarize(suite)["arms"]["a"]["n"] == 0


# --- f) tampered records: one line naming the file and the key -------------------------------------------
def _edit_json(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("file, change, key", [
    ("experiment.json", lambda r: r.update(sittings=[1]), "sittings[0]: must be an object"),
    ("experiment.json", lambda r: r["sittings"][0].update(command={"x": 1}), "sittings[0].command: must be a string"),
    ("experiment.json", lambda r: r["sittings"][0].update(reused={"a/seed-0": 5}), "sittings[0].reused.a/seed-0"),
    ("experiment.json", lambda r: r.update(spec_file=[1]), "spec_file: must be a string"),
    ("steps", lambda r: r.update(manifestations="abc"), "manifestations: must be an object"),
    ("steps", lambda r: r["manifestations"]["accuracy"]["euler"]["1"].update(test="x"),
     "manifestations.accuracy.euler.1.test: must be a number"),
    ("steps", lambda r: r["manifestations"]["accuracy"].update(euler={"one": {}}), "must be keyed by a step count"),
    ("steps", lambda r: r.update(seconds=1e308), "seconds: must be a number"),
])
def test_a_tampered_suite_record_is_one_line_naming_file_and_key(suite, capsys, file, change, key):
    path = suite / "experiment.json" if file == "experiment.json" else steps_file(suite, "a", 0)
    _edit_json(path, change)
    one_line(capsys, ["report", str(suite), "--no-plots", "--quiet"], str(path), key)
    one_line(capsys, ["experiment", str(suite / "spec.yaml"), "--out", str(suite), "--threads", "1", "--quiet"],
             str(path), key)


@pytest.mark.parametrize("change, key", [
    (lambda row: row.update(total_time=1e308), "history[0].total_time"),
    (lambda row: row.update(params=10**400), "history[0].params"),
    (lambda row: row.update(train_time="abc"), "history[0].train_time"),
    (lambda row: row.update(cpu_time=-1.0), "history[0].cpu_time"),
])
def test_a_tampered_run_history_is_not_counted_and_named(suite, capsys, change, key):
    path = run_folder(suite, "a", 0) / "checkpoint.json"
    text = path.read_text()
    record = json.loads(text)
    change(record["history"][0])
    path.write_text(json.dumps(record))  # json writes 10**400 as its digits, as a hostile file would
    assert main(["report", str(suite), "--no-plots", "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    unfinished = json.loads((suite / "summary.json").read_text())["unfinished"]
    assert any(u.startswith("a seed 0: not counted") and key in u for u in unfinished), unfinished
    one_line(capsys, ["experiment", str(suite / "spec.yaml"), "--out", str(suite), "--threads", "1", "--quiet"],
             key)


def test_values_a_steps_record_may_hold_are_summarised_not_a_traceback(suite, capsys):
    # null is "not measured" to records.py, so the report must take it (it raised a TypeError)
    compression = {"n_basis_after": 1, "n_steps_after": 1, "finetune_epochs": 0, "params_before": 10,
                   "params_after": 5, "accuracy_before": 0.5, "accuracy_projected": 0.4, "accuracy_after": None}
    _edit_json(steps_file(suite, "a", 0), lambda r: r.update(compression=compression))
    assert main(["report", str(suite), "--no-plots", "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert json.loads((suite / "summary.json").read_text())["arms"]["a"]["compression"]["accuracy_after_mean"] is None


def test_seeds_whose_grids_differ_are_summarised_not_a_key_error():
    # a seed's grid without a cell of the first seed's (edited by hand) raised KeyError in the mean grid
    from contdepth.experiment.report import _invariance

    full = {"accuracy": {"euler": {"1": {"test": 0.5}, "2": {"test": 0.7}}}}
    part = {"accuracy": {"rk4": {"1": {"test": 0.9}}}}
    grid = _invariance({0: full, 1: part})["test_accuracy_mean"]
    assert grid == {"euler": {"1": 50.0, "2": 70.0}}


# --- g) folders of another suite, links ------------------------------------------------------------------
def test_a_report_never_replaces_another_suites_report(suite, tiny, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    assert main(["report", str(other), "--no-plots", "--quiet"]) == 0  # other's own report, written by contdepth
    before = {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()}
    for out in (other, other / "runs"):
        one_line(capsys, ["report", str(suite), "--out", str(out), "--no-plots", "--quiet"],
                 "another suite's")
    assert {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()} == before
    # its own folder, or a folder inside it, is fine
    assert main(["report", str(suite), "--out", str(suite / "results"), "--no-plots", "--quiet"]) == 0


def test_a_report_is_never_written_through_a_link(suite, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "report"
    out.mkdir()
    (out / "plots").symlink_to(elsewhere, target_is_directory=True)
    one_line(capsys, ["report", str(suite), "--out", str(out), "--quiet"], "plots is a link")
    (out / "plots").unlink()
    (out / "report.md").symlink_to(elsewhere / "mine.md")
    one_line(capsys, ["report", str(suite), "--out", str(out), "--no-plots", "--quiet"], "report.md is a link")
    assert list(elsewhere.iterdir()) == [] and not (out / "summary.json").exists()


# --- i) export never writes over a suite's files ----------------------------------------------------------
@pytest.mark.parametrize("name", ["experiment.json", "spec.yaml", "summary.json", "runs/a/model.onnx"])
def test_export_refuses_every_file_of_a_suite(suite, capsys, name):
    target = suite / name
    before = target.read_bytes() if target.exists() else None
    one_line(capsys, ["export", str(run_folder(suite, "a", 0)), "--out", str(target), "--overwrite"],
             "lies in the experiment folder", str(suite))
    assert (target.read_bytes() if target.exists() else None) == before


# --- h) the time left counts the after-training steps; a renamed spec --------------------------------------
def test_the_time_left_counts_the_steps_still_to_do(suite):
    from contdepth.experiment.runner import Job, SuiteProgress

    spec = ExperimentSpec.from_yaml(suite / "spec.yaml")
    path = run_folder(suite, "a", 0) / "checkpoint.json"
    _edit_json(path, lambda d: d["history"][0].update(epoch_time=10.0))
    _edit_json(steps_file(suite, "a", 0), lambda r: r.update(seconds=60.0))  # a's steps took a minute
    shutil.rmtree(run_folder(suite, "b", 0))  # b: one epoch (10 s, a's) and its steps (60 s, a's) to do
    steps_file(suite, "b", 0).unlink()
    jobs = [Job(spec.raw, spec.source, arm.name, 0, str(suite), 1, "cpu", None, True) for arm in spec.arms]
    left = SuiteProgress(spec, suite, jobs, 1, quiet=True)._left()
    assert left.startswith(f"about {format_seconds(70.0)} left ("), left
    steps_file(suite, "a", 0).unlink()  # nothing timed yet: said, not taken as zero
    left = SuiteProgress(spec, suite, jobs, 1, quiet=True)._left()
    assert left.startswith(f"about {format_seconds(10.0)} left (") and "steps of 2 runs not yet timed" in left, left


def test_a_renamed_spec_file_is_the_same_experiment_when_the_spec_names_itself(suite, tmp_path):
    spec = ExperimentSpec.from_yaml(write_spec(tmp_path, TINY, "renamed.yaml"))
    assert check_experiment_dir(spec, suite) == "existing"
    unnamed = {k: v for k, v in TINY.items() if k != "name"}
    spec = ExperimentSpec.from_yaml(write_spec(tmp_path, unnamed, "renamed.yaml"))
    with pytest.raises(ConfigError, match=r"name: 'tiny' -> 'renamed'.*add 'name: tiny'"):
        check_experiment_dir(spec, suite)


@pytest.mark.parametrize("linked", ["steps/a", "runs/a"])
def test_a_suite_never_writes_through_a_link_in_its_folder(suite, tmp_path, capsys, linked):
    # A suite folder is input (copied, unpacked): steps/a -> a folder of the user's had its seed-0.json
    # replaced by the runner's steps record.
    user = tmp_path / "user"
    user.mkdir()
    (user / "seed-0.json").write_text("the user's\n")
    shutil.rmtree(suite / linked)  # so the run (or its steps) is to do: the runner will write there
    (suite / linked).symlink_to(user, target_is_directory=True)
    one_line(capsys, ["experiment", str(suite / "spec.yaml"), "--out", str(suite), "--threads", "1", "--quiet"],
             f"{suite / linked} is a link")
    assert [p.name for p in user.iterdir()] == ["seed-0.json"] and (user / "seed-0.json").read_text() == "the user's\n"


def test_a_suite_interrupted_while_reusing_runs_continues_when_run_again(tiny, tmp_path, monkeypatch):
    # The advice after Ctrl-C is "run the same command again": a new suite interrupted while it looked
    # for runs to reuse held spec.yaml but no experiment.json yet, and the rerun was refused ("not an
    # experiment folder").
    import contdepth.experiment.runner as runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "new"
    monkeypatch.setattr(runner, "reuse_runs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(tiny / "spec.yaml", out, threads=1, quiet=True, report=False, reuse=[tiny])
    monkeypatch.undo()
    run_experiment(tiny / "spec.yaml", out, threads=1, quiet=True, report=False, reuse=[tiny])
    sittings = json.loads((out / "experiment.json").read_text())["sittings"]
    assert len(sittings) == 2 and sorted(sittings[1]["reused"]) == ["a/seed-0", "b/seed-0"]


# --- d) ~ the shell did not expand ---------------------------------------------------------------------------
def test_a_tilde_in_out_is_the_home_folder_for_the_suite_and_its_report(tmp_path, monkeypatch, capsys):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    spec = {**TINY, "arms": {"a": {}}, "comparisons": [], "evaluate": None}
    spec.pop("evaluate")
    path = write_spec(work, spec)
    assert main(["experiment", str(path), "--out=~/suite", "--threads", "1", "--quiet"]) == 0
    assert (home / "suite" / "experiment.json").is_file() and (home / "suite" / "report.md").is_file()
    assert not (work / "~").exists()
    assert main(["report", "~/suite", "--out=~/rep", "--no-plots", "--quiet"]) == 0
    assert (home / "rep" / "summary.json").is_file() and not (work / "~").exists()


# --- a) b) workers: no code from the working folder; they end with their runner -----------------------------
def _contdepth() -> list[str]:
    """The console script (it does not put the working folder on the path), or its equivalent."""
    script = Path(sys.executable).parent / "contdepth"
    return [str(script)] if script.is_file() else [sys.executable, "-P", "-m", "contdepth"]


PLANTED = """import os
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "RAN-" + str(os.getpid())), "w").close()
raise ImportError("planted module")
"""


def test_workers_never_run_code_from_the_working_folder(tmp_path):
    spec = {**TINY, "arms": {"a": {}}, "comparisons": [], "seeds": [0, 1]}
    spec.pop("evaluate")
    write_spec(tmp_path, spec)
    (tmp_path / "json.py").write_text(PLANTED)  # the workers import json first thing
    (tmp_path / "yaml.py").write_text(PLANTED)
    done = subprocess.run([*_contdepth(), "experiment", "tiny.yaml", "--out", "out", "--workers", "2",
                           "--threads", "2", "--quiet", "--no-report"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr + "".join(p.read_text() for p in (tmp_path / "out").rglob("*.log"))
    assert not list(tmp_path.glob("RAN-*"))
    assert summarize(tmp_path / "out")["arms"]["a"]["n"] == 2


def test_an_imported_module_of_the_working_folder_is_found_by_name_only(tmp_path):
    from contdepth.experiment.process import worker_command

    (tmp_path / "mine.py").write_text("VALUE = 7\n")
    (tmp_path / "json.py").write_text(PLANTED)
    code = ("import json, os, sys\n"
            "from contdepth.plugins import allow_imports_from, import_modules\n"
            "allow_imports_from(json.loads(os.environ['FOLDERS']))\n"
            "import_modules(['mine'])\n"
            "import mine\n"
            "assert mine.VALUE == 7\n"
            "try:\n    import other\nexcept ImportError:\n    print('only by name')\n")
    (tmp_path / "other.py").write_text(PLANTED)
    command = worker_command()[:-2]  # the interpreter and its safe-path flag
    done = subprocess.run([*command, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FOLDERS": json.dumps({"mine": str(tmp_path)})})
    assert done.returncode == 0 and done.stdout.strip() == "only by name", done.stderr
    assert not list(tmp_path.glob("RAN-*"))


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_end_with_their_runner(tmp_path, sig):
    spec = {**TINY, "arms": {"a": {}}, "comparisons": [], "seeds": [0, 1]}
    spec.pop("evaluate")
    spec["base"] = {**TINY["base"], "epochs": 500}  # minutes of training: they must not run to the end
    write_spec(tmp_path, spec)
    runner = subprocess.Popen([*_contdepth(), "experiment", "tiny.yaml", "--out", "out", "--workers", "2",
                               "--threads", "2", "--no-report"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and runner.poll() is None:
            time.sleep(0.2)
            workers = _children(runner.pid)
        assert len(workers) == 2, "the workers did not start"
        time.sleep(1.0)
        runner.send_signal(sig)
        _, err = runner.communicate(timeout=60)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "a worker outlived its runner"
        if sig == signal.SIGTERM:
            assert runner.returncode == 143 and "Traceback" not in err
            assert "terminated (SIGTERM)" in err and "run the same command again (contdepth experiment" in err
    finally:
        for pid in [runner.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        runner.wait(timeout=30)


def test_stopping_workers_never_waits_forever_on_one_that_ignores_sigterm():
    # a worker whose code ignores SIGTERM (a user's --import module may handle it) kept an interrupted
    # runner waiting in stop_workers forever
    from contdepth.experiment.process import stop_workers

    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); "
            "time.sleep(300)")
    worker = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "1"  # the handler is in place
        tic = time.monotonic()
        stop_workers([worker], grace=0.5)
        assert worker.returncode == -signal.SIGKILL and time.monotonic() - tic < 30
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdout.close()


def test_an_empty_pythonpath_entry_does_not_put_the_working_folder_back(monkeypatch):
    """``PYTHONPATH=$UNSET:/x`` has an empty entry, which Python reads as the working folder."""
    from contdepth.experiment.process import worker_environment

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["", "/opt/mine", ""]))
    assert worker_environment()["PYTHONPATH"] == "/opt/mine"
    monkeypatch.setenv("PYTHONPATH", os.pathsep)
    assert "PYTHONPATH" not in worker_environment()


def test_a_stored_spec_reads_back_with_names_that_look_like_numbers(tmp_path):
    """The stored spec.yaml is written by contdepth and read by ``report``: text such as ``1e3`` must stay text."""
    from contdepth.common import load_yaml_text
    from contdepth.experiment import ExperimentSpec
    from contdepth.experiment.runner import spec_text

    spec = ExperimentSpec.from_dict({**TINY, "name": "1e5", "arms": {"1e3": {}}, "comparisons": []})
    stored = load_yaml_text(spec_text(spec), "spec.yaml")
    assert stored["name"] == "1e5" and list(stored["arms"]) == ["1e3"]

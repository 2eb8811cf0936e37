"""The suite on Ray and on Slurm (submitit's LocalExecutor): the local suite's results, bitwise; faults; extras.

One Ray instance for the module (``ray.init(num_cpus=2)``), as a user's script would hold
one: the backend uses it and leaves it running. Faults come from the plugin
``cluster_faults`` (this folder), which the workers import as ``--import`` modules reach them.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from contdepth.cli import main
from contdepth.experiment import ExperimentSpec, run_experiment
from contdepth.experiment.backends import Ray, Slurm, resolve_backend
from contdepth.experiment.folder import run_folder
from contdepth.experiment.remote import NotShared, check_shared, read_worker_marker, write_driver_marker
from contdepth.plugins import IMPORTS_ENV
from contdepth.train import ConfigError, read_checkpoint
from helpers import write_yaml

SPEC = {  # tests/experiment/test_experiment.py's tiny suite: 2 arms x 2 seeds x 2 epochs, steps after
    "name": "tiny",
    "description": "two arms on digits",
    "base": {"model": "continuousnet", "model_options": {"alpha": 4, "n_basis": 1}, "data": "digits",
             "validation_size": 300, "train_size": 600, "epochs": 2, "batch_size": 64, "eval_batch_size": 1000},
    "seeds": [0, 1],
    "arms": {"euler": {"compress": {"n_basis": 1, "finetune_epochs": 1, "latency_batch_sizes": [1],
                                    "latency_repeats": 2}},
             "rk4": {"model_options": {"scheme": "rk4"}, "refine_at": [2]}},
    "comparisons": [{"arm": "rk4", "baseline": "euler", "target": {"time_ratio_max": 0.5}}],
    "evaluate": {"schemes": ["euler", "midpoint", "rk4"], "n_steps": [1, 2], "examples": 150},
}
RUNS = [(arm, seed) for seed in (0, 1) for arm in ("euler", "rk4")]
#: Seed 0 of both arms without the steps: the same two runs (the steps change no run), for the fault tests.
SEED_0 = {**SPEC, "seeds": [0], "evaluate": None, "comparisons": [], "arms": {"euler": {}, "rk4": SPEC["arms"]["rk4"]}}


def final_accuracies(out: Path, runs=RUNS) -> dict:
    """Each run's last metrics row: test and validation accuracy, compared bitwise."""
    rows = {run: read_checkpoint(run_folder(out, *run))[0].history[-1] for run in runs}
    return {run: (row["test_accuracy"], row["val_accuracy"]) for run, row in rows.items()}


def timeless(value):
    """A summary without what the clock sets (times, latencies, speed-ups) and the command that made it."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items()
                if not re.search(r"time|latency|speedup", k) and k not in ("commands", "spec_file")}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def arm_faults(folder: Path, mode: str, run: str = "rk4/seed-0") -> None:
    import os

    (folder / "faults.json").write_text(json.dumps({"mode": mode, "run": run, "pid": os.getpid()}))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """The local suite, one run at a time, one thread."""
    folder = tmp_path_factory.mktemp("local")
    summary = run_experiment(write_yaml(folder, "tiny.yaml", SPEC), folder / "out", threads=1, quiet=True)
    return folder / "out", summary


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def faults_plugin(monkeypatch):
    """``--import cluster_faults`` as the command line hands it to the runner (imported here, named to workers)."""
    import cluster_faults  # noqa: F401 - imported as the command line imports an --import module

    monkeypatch.setenv(IMPORTS_ENV, "cluster_faults")


# --- Ray -----------------------------------------------------------------------------------------------
def test_a_suite_on_ray_is_the_local_suite_bitwise(reference, local_ray, tmp_path, capsys):
    out = tmp_path / "out"
    summary = run_experiment(write_yaml(tmp_path, "tiny.yaml", SPEC), out, workers=2, threads=2, backend="ray")
    printed = capsys.readouterr().out
    assert "4 runs submitted to ray" in printed and "4/4 runs done" in printed
    assert final_accuracies(out) == final_accuracies(reference[0])  # one thread per run: bitwise
    assert timeless(summary) == timeless(reference[1])
    assert json.loads((out / "summary.json").read_text()) == summary
    sitting = json.loads((out / "experiment.json").read_text())["sittings"][-1]
    assert (sitting["backend"], sitting["workers"], sitting["threads"]) == ("ray", 2, 2)
    assert json.loads((out / "logs" / "rk4" / "seed-1.log").read_text().splitlines()[-1])["did"] == ["trained", "steps"]
    assert not (out / ".shared").exists() and local_ray.is_initialized()  # markers gone; the caller's Ray kept
    again = run_experiment(out / "spec.yaml", out, workers=2, threads=2, backend="ray", quiet=True, report=False)
    assert again is None and final_accuracies(out) == final_accuracies(reference[0])


def test_ray_retries_a_run_whose_worker_was_killed_and_it_resumes_bitwise(reference, local_ray, tmp_path,
                                                                           faults_plugin):
    arm_faults(tmp_path, "kill")
    out = tmp_path / "out"
    run_experiment(write_yaml(tmp_path, "tiny.yaml", SEED_0), out, workers=2, threads=2, backend=Ray(max_retries=1),
                   quiet=True, report=False)
    assert (tmp_path / "killed").exists()  # killed once after epoch 1, retried by Ray, resumed from its checkpoint
    assert final_accuracies(out, RUNS[:2]) == final_accuracies(reference[0], RUNS[:2])


def test_a_config_error_in_a_ray_worker_ends_the_suite_in_one_line(local_ray, tmp_path, capsys, faults_plugin):
    spec = {**SPEC, "seeds": [0], "evaluate": None, "comparisons": [], "arms": {"rk4": SPEC["arms"]["rk4"]}}
    arm_faults(tmp_path, "config_error")
    code = main(["--import", "cluster_faults", "experiment", str(write_yaml(tmp_path, "tiny.yaml", spec)),
                 "--out", str(tmp_path / "out"), "--backend", "ray", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "1 run(s) failed: rk4 seed 0: model_options: refused by the test plugin cluster_faults" in err
    assert "logs/rk4/seed-0.log" in err
    with pytest.raises(ConfigError, match=r"threads: a run asks Ray for 3 CPU\(s\), and no node has them \(the "
                                          r"largest has 2 CPU\(s\)\)"):  # never a suite waiting forever
        run_experiment(tmp_path / "tiny.yaml", tmp_path / "wide", threads=3, backend="ray", quiet=True)


# --- Slurm through submitit ----------------------------------------------------------------------------
def test_a_suite_through_submitit_is_the_local_suite_and_a_killed_job_resumes_bitwise(reference, tmp_path,
                                                                                        faults_plugin):
    pytest.importorskip("submitit")
    arm_faults(tmp_path, "kill")
    out, spec = tmp_path / "out", write_yaml(tmp_path, "tiny.yaml", SEED_0)
    backend = Slurm(cluster="local", time=10)
    with pytest.raises(ConfigError, match=r"^1 run\(s\) failed: rk4 seed 0: job \d+ ended without a result .*"
                                          r"its run resumes when the suite is run again"):
        run_experiment(spec, out, workers=2, threads=2, backend=backend, quiet=True)
    assert read_checkpoint(run_folder(out, "rk4", 0))[0].epoch == 1 and (tmp_path / "killed").exists()
    run_experiment(spec, out, workers=2, threads=2, backend=backend, quiet=True, report=False)
    assert final_accuracies(out, RUNS[:2]) == final_accuracies(reference[0], RUNS[:2])
    assert json.loads((out / "slurm" / "jobs.json").read_text()).keys() == {"euler/seed-0", "rk4/seed-0"}
    assert json.loads((out / "logs" / "rk4" / "seed-0.log").read_text().splitlines()[-1])["did"] == ["resumed"]


def test_slurm_options_and_the_config_file_are_checked_in_one_line(tmp_path, capsys):
    pytest.importorskip("submitit")
    spec = write_yaml(tmp_path, "tiny.yaml", SPEC)
    bad = write_yaml(tmp_path, "slurm.yaml", {"slurm": {"slurm_frobnicate": 3}})
    for config, message in ((bad, "submitit refused the executor: Unknown argument 'frobnicate'"),
                            (write_yaml(tmp_path, "list.yaml", [1]), "must hold a mapping 'slurm:'")):
        code = main(["experiment", str(spec), "--out", str(tmp_path / "out"), "--backend", "slurm",
                     "--slurm-config", str(config)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out" / "runs").exists()
    for argv, message in ((["--slurm-time", "0"], "slurm_time: must be"),
                          (["--ray-address", "auto"], "--ray-address needs --backend ray, not slurm")):
        code = main(["experiment", str(spec), "--out", str(tmp_path / "x"), "--backend", "slurm", *argv])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert main(["experiment", str(spec), "--out", str(tmp_path / "x"), "--slurm-cpus", "2"]) == 2
    assert "--slurm-cpus needs --backend slurm, not local" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="the engine gives each run its GPU: use --device cuda, not cuda:1"):
        run_experiment(spec, tmp_path / "x", device="cuda:1", backend="slurm")  # before CUDA is looked for
    assert not (tmp_path / "x").exists()


# --- what every engine shares --------------------------------------------------------------------------
@pytest.mark.parametrize("backend, extra", [("ray", "ray"), ("slurm", "slurm")])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch, backend, extra):
    monkeypatch.setitem(sys.modules, {"ray": "ray", "slurm": "submitit"}[backend], None)  # import fails
    code = main(["experiment", str(write_yaml(tmp_path, "tiny.yaml", SPEC)), "--out", str(tmp_path / "out"),
                 "--backend", backend])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"pip install 'contdepth[{extra}]'" in err, err
    assert not (tmp_path / "out").exists()


def test_a_worker_that_does_not_share_the_folder_is_named_in_one_line(tmp_path):
    """Both halves of the check: the worker cannot read the driver's marker; the driver cannot read the worker's."""
    driver, worker = tmp_path / "driver", tmp_path / "worker"
    driver.mkdir(), worker.mkdir()
    write_driver_marker(driver, "ab12")
    with pytest.raises(NotShared, match=r"^out: the worker on .* does not see the suite's folder .*--out must be on "
                                        r"storage every worker shares"):
        check_shared(str(worker), "ab12")
    (worker / ".shared").mkdir()
    (worker / ".shared" / "ab12").write_text("{}")  # a stale copy: the worker writes where the driver cannot read
    name = check_shared(str(worker), "ab12")
    with pytest.raises(NotShared, match=r"does not reach this machine"):
        read_worker_marker(driver, "ab12", name)
    name = check_shared(str(driver), "ab12")
    read_worker_marker(driver, "ab12", name)
    assert not (driver / ".shared" / name).exists()
    for bad in (None, "../x", "cd34.host.1"):
        with pytest.raises(NotShared, match="malformed marker"):
            read_worker_marker(driver, "ab12", bad)


def test_backend_names_and_options_are_checked():
    assert resolve_backend("local") is None and resolve_backend("ray") == Ray() and resolve_backend("slurm") == Slurm()
    for value, message in (("kubernetes", "backend: must be one of local, ray, slurm"),
                           (Ray(max_retries=3).__class__, "backend: must be one of")):
        with pytest.raises(ConfigError, match=message):
            resolve_backend(value)
    with pytest.raises(ConfigError, match="ray_retries"):
        Ray(max_retries=-1)
    with pytest.raises(ConfigError, match="ray_address"):
        Ray(address=" ")
    with pytest.raises(ConfigError, match="slurm_partition"):
        Slurm(partition="a b")
    assert ExperimentSpec.from_dict(SPEC, source="tiny").name == "tiny"

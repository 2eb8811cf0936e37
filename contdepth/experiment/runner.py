"""Run an experiment: every ``(arm, seed)`` as an ordinary run folder, resumable at any point.

The experiment folder's layout and records are `contdepth.experiment.folder`'s.

Running the same spec again looks at each run folder: a finished run is skipped, an
interrupted one is resumed (``--resume``, bitwise the uninterrupted run), a missing one is
started; the steps are redone only where their result file is missing. A different spec
for an existing ``DIR`` is refused with the differences named. ``DIR`` is locked while a
suite runs in it, and every run folder by its own run.

``workers > 1`` trains that many runs at once in separate processes, each with
``threads // workers`` threads (a suite of small models keeps more cores busy that way).
Wall times measured side by side are then not comparable with those of a one-worker
suite: compare times only within one suite, and measure latency with one worker.

``backend`` ``ray`` or ``slurm`` hands the same jobs to that engine instead, with the
same rule for a run's threads (`contdepth.experiment.backends`); the folder, its records
and its resumption are the same whichever engine ran a sitting.

A spec with a seeds rule (``seeds: {min, max, half_width}``) runs in rounds: seeds
``0..min-1`` of every arm, then one more seed of every arm per round until the rule stops
(`contdepth.experiment.seeds`). Before each round the decision is recomputed from the
finished runs, so an interrupted suite continues where it stopped. With ``workers`` above the
number of arms a round also starts the next seeds ahead (enough to keep the workers busy,
never past ``max``); runs beyond the stopping point are kept but not counted.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from ..common.files import atomic_write_text
from ..common.json_values import to_json_value
from ..common.paths import user_path
from ..common.yaml_input import dump_yaml
from ..common.validate import check_int, check_threads
from ..train.config import ConfigError, check_device, check_output_path
from ..train.progress import default_threads
from ..train.rundir import RunLock
from .backends import Backend, Outcome, ProcessPool, Ray, Slurm, job_to_dict, log_of, require, resolve_backend
from .job import run_job
from .folder import (
    EXPERIMENT_FILE,
    EXPERIMENT_FORMAT,
    Job,
    SPEC_COPY,
    read_record,
    run_status,
)
from .progress import SuiteProgress
from .remote import NotShared, read_worker_marker, remove_markers, write_driver_marker
from .report import collect, write_report
from .reuse import reuse_runs
from .seeds import decision
from .spec import IDENTITY_VERSION, ExperimentSpec, difference


def spec_text(spec: ExperimentSpec) -> str:
    """The spec as YAML, as it is stored in an experiment folder (``contdepth report`` reads it back)."""
    return (f"# the spec of experiment {spec.name}, as first run (from {spec.source})\n"
            + dump_yaml({"name": spec.name, **spec.raw}, sort_keys=False, default_flow_style=None))


# --- the suite -----------------------------------------------------------------------------------------
def check_experiment_dir(spec: ExperimentSpec, folder: str | Path) -> str:
    """``new`` or ``existing``; refuses a folder that is not this experiment's (naming the differences)."""
    path = check_output_path(folder, "out", folder=True)
    record_path = path / EXPERIMENT_FILE
    if not path.exists() or not any(e for e in path.iterdir() if e.name != ".contdepth.lock"):
        return "new"
    if not record_path.is_file():
        raise ConfigError(f"out: {path} is not empty and holds no {EXPERIMENT_FILE}, so it is not an experiment "
                          "folder; choose a new --out")
    record = read_record(path)
    changes = difference(record.get("identity"), to_json_value(spec.identity(), "identity"))
    if changes:
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        old_name = record["identity"].get("name")
        if "name" not in spec.raw and old_name != spec.name and isinstance(old_name, str):
            # the identity is the spec's content and its name; without `name` the file's stem is the name
            shown += (f" (the spec sets no name, so its file name {spec.name!r} is its name: add 'name: {old_name}' "
                      "to it to continue that experiment)")
        raise ConfigError(f"out: {path} holds experiment {record.get('identity', {}).get('name')!r} with a different "
                          f"spec: {shown}. Use a new --out for a changed spec (the runs already made stay valid "
                          "for the spec they were made with)")
    return "existing"


def run_experiment(spec: ExperimentSpec | str | Path, out: str | Path, *, workers: int = 1,
                   threads: int | None = None, device: str = "cpu", data_dir: str | None = None,
                   report: bool = True, quiet: bool = False, command: str | None = None,
                   callbacks: Sequence[Callable] = (), reuse: Sequence[str | Path] = (),
                   backend: str | object = "local") -> dict | None:
    """Run every ``(arm, seed)`` of ``spec`` into ``out`` (see the module docstring); returns the summary.

    ``threads`` is the suite's total (default: the free cores, as ``contdepth train``; on
    ``ray`` and ``slurm``, one per run), a run's is ``threads // workers``;
    ``callbacks`` are given to every training run (one local worker only). ``report`` writes
    ``report.md``, ``summary.json`` and the plots at the end. ``reuse``: other experiment
    folders whose finished runs with this suite's exact config and seed are copied instead
    of trained (see `contdepth.experiment.reuse`). ``backend``: ``"local"`` (worker processes
    here), ``"ray"``, ``"slurm"`` or a `contdepth.experiment.backends.Ray` /
    `contdepth.experiment.backends.Slurm` holding the engine's options
    (`contdepth.experiment.backends`).
    """
    if not isinstance(spec, ExperimentSpec):
        spec = ExperimentSpec.from_yaml(user_path(spec))
    out = user_path(out)  # one path: the checks and every write use it (``--out=~/suite`` reaches here unexpanded)
    data_dir = str(user_path(data_dir)) if data_dir is not None else None
    reuse = [user_path(r) for r in reuse]
    choice = resolve_backend(backend)
    check_int(workers, "workers", low=1, high=256 if choice is None else 1 << 16)
    if choice is None:
        check_threads(threads)
    else:  # a cluster's runs: each worker checks its threads against its own machine
        check_int(threads, "threads", low=1, high=1 << 20, allow_none=True)
        out, data_dir = out.absolute(), (os.path.abspath(data_dir) if data_dir is not None else None)  # every node
        if callbacks:
            raise ConfigError(f"backend: callbacks run in this process, so they need the local backend, not "
                              f"{choice.name}")
        if device.startswith("cuda:"):
            raise ConfigError(f"device: with --backend {choice.name} the engine gives each run its GPU: use "
                              f"--device cuda, not {device}")
        require(choice)  # its extra, before any folder is made
    if callbacks and workers > 1:
        raise ConfigError("workers: callbacks run in this process, so they need workers=1")
    check_device(device)
    if data_dir is not None and not Path(data_dir).exists():  # a folder, or one text file (each run's preflight checks which)
        raise ConfigError(f"data_dir: {data_dir} does not exist")
    # every run's options and model (meta device: sizes, refinements, memory), checked before any
    # folder is made; the run folders are checked as each run starts
    spec.preflight(device=device, **({"data_dir": data_dir} if data_dir else {}))
    state = check_experiment_dir(spec, out)
    if threads is not None:
        total_threads = threads
    else:
        total_threads = default_threads()[0] if choice is None else workers
    per_worker = max(1, total_threads // workers)
    if getattr(choice, "cpus", None) is not None:  # --slurm-cpus: what Slurm gives each run, all used
        per_worker = choice.cpus
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        if state == "new" or not (out / EXPERIMENT_FILE).exists():
            record = {"format": EXPERIMENT_FORMAT, "identity_version": IDENTITY_VERSION, "identity": spec.identity(),
                      "spec_file": spec.source, "sittings": []}
            atomic_write_text(out / SPEC_COPY, spec_text(spec))
        else:
            record = read_record(out)
        sitting = {
            "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": socket.gethostname(),
            "workers": workers, "threads": total_threads, "device": device}
        if choice is not None:
            sitting["backend"] = choice.name
        record["sittings"].append(sitting)
        # written now, before anything can take time (looking for runs to reuse): a new folder
        # interrupted holding spec.yaml but no record would refuse "the same command again"
        atomic_write_text(out / EXPERIMENT_FILE, json.dumps(record, indent=1) + "\n")
        if reuse:
            sitting["reused"] = {}

            def record_copy(run: str, source: str) -> None:  # recorded as soon as it is copied
                sitting["reused"][run] = source
                atomic_write_text(out / EXPERIMENT_FILE, json.dumps(record, indent=1) + "\n")

            reuse_runs(spec, out, [(arm.name, seed) for seed in spec.seeds for arm in spec.arms], reuse,
                       on_copy=record_copy)
            if not quiet:
                print(f"experiment {spec.name}: reused {len(sitting['reused'])} finished run(s) from "
                      f"{', '.join(map(str, reuse))}", flush=True)
        atomic_write_text(out / EXPERIMENT_FILE, json.dumps(record, indent=1) + "\n")

        def jobs(seeds: Sequence[int]) -> list[Job]:  # seed-major: every arm has results early
            return [Job(spec.raw, spec.source, arm.name, seed, str(out), per_worker, device, data_dir,
                        quiet or workers > 1 or choice is not None) for seed in seeds for arm in spec.arms]

        engine = _open(choice, spec, out, workers, per_worker, total_threads, device)
        interrupted = True
        try:
            if spec.seed_rule is None:
                progress = SuiteProgress(spec, out, jobs(spec.seeds), workers, quiet)
                progress.start()
                _run_pending(progress, engine, callbacks)
            else:
                _run_seed_rule(spec, out, jobs, workers, quiet, callbacks, engine)
            interrupted = False
        finally:
            if engine is not None:
                engine.close(interrupted)
                if choice is not None:
                    remove_markers(out, engine.token)
    if not report:
        return None
    return write_report(out, quiet=quiet)


def open_backend(choice: Ray | Slurm, **context) -> Backend:
    """The engine's `Backend` for this sitting (``context``: see `contdepth.experiment.runner`)."""
    if isinstance(choice, Ray):
        from .ray_backend import RayBackend

        return RayBackend(choice, **context)
    from .slurm_backend import SlurmBackend

    return SlurmBackend(choice, **context)


def _open(choice, spec: ExperimentSpec, out: Path, workers: int, threads: int, suite_threads: int,
          device: str) -> Backend | None:
    """The sitting's `Backend`: ``None`` runs the jobs here, one after another (one local worker)."""
    if choice is None:
        return ProcessPool(workers) if workers > 1 else None
    from ..plugins import IMPORTS_ENV, module_folders

    token = secrets.token_hex(8)
    write_driver_marker(out, token)  # the shared-storage check's first half (contdepth.experiment.remote)
    names = [m for m in os.environ.get(IMPORTS_ENV, "").split(",") if m]
    try:
        engine = open_backend(choice, folder=out, threads=threads, suite_threads=suite_threads, device=device, token=token,
                              suite=spec.name, workers=workers,
                              imports={"imports": names, "import_folders": module_folders(names)})
    except BaseException:
        remove_markers(out, token)
        raise
    return engine


def _run_pending(progress: SuiteProgress, engine: Backend | None, callbacks: Sequence[Callable]) -> None:
    """The jobs of ``progress`` not yet done (``progress.start()`` found them): here, or through ``engine``."""
    if engine is None:
        for job in progress.pending:
            progress.starting(job)
            progress.finished(job, run_job(job, callbacks))
    else:
        _run_jobs(progress, engine)
    progress.done()


def _run_seed_rule(spec: ExperimentSpec, out: Path, jobs: Callable[[Sequence[int]], list[Job]], workers: int,
                   quiet: bool, callbacks: Sequence[Callable], engine: Backend | None) -> None:
    """Rounds of seeds until the spec's seeds rule stops (see the module docstring).

    The decision is recomputed from the folder before every round (the report's
    `contdepth.experiment.collect`, so a seed enters when the report would count it): nothing
    about the rule's progress is stored, so a sitting interrupted anywhere continues correctly.
    """
    rule = spec.seed_rule
    assert rule is not None
    ahead = max(0, -(-workers // len(spec.arms)) - 1)  # further seeds that keep the other workers busy
    while True:
        _, runs, unfinished = collect(out)
        decided = decision(spec, runs)
        if not quiet:
            print(f"experiment {spec.name}: seeds rule: {decided.text()}", flush=True)
        if decided.done:
            return
        progress = SuiteProgress(spec, out, jobs(range(min(rule.max, decided.n + ahead))), workers, quiet)
        progress.start()
        if not progress.pending:  # every run is done, yet the report does not count a seed the rule needs
            raise ConfigError(f"seeds: the rule needs seeds 0..{decided.n - 1}, and the report does not count "
                              f"them all: {'; '.join(unfinished[:3]) or 'no run named'}")
        _run_pending(progress, engine, callbacks)


def _run_jobs(progress: SuiteProgress, engine: Backend) -> None:
    """Hand the pending jobs to ``engine`` as it has room, and report each as it ends.

    A failed run does not stop the others: the failures are reported together at the end,
    one line. A worker that does not share the suite's folder stops the suite at once
    (every other would fail alike). On a cluster, a job's result must also be readable
    here: the run's files are checked, not only the engine's word.
    """
    queue = list(progress.pending)
    failures: list[str] = []
    remote = engine.name != "local"
    while queue or engine.running():
        room = engine.room()
        batch, queue = (queue, []) if room is None else (queue[:max(0, room)], queue[max(0, room):])
        if batch:
            if room is None and len(batch) > 1:
                progress.log(f"{len(batch)} runs submitted to {engine.name}")
            else:
                for job in batch:
                    progress.starting(job)
            engine.submit(batch)
        for outcome in engine.collect(1.0):
            job, result = outcome.job, outcome.result
            if result is not None and remote:
                if result.get("not_shared"):
                    raise NotShared(result["error"])
                read_worker_marker(Path(job.folder), engine.token, result.pop("marker", None))  # its writes reach us
            if result is not None and "error" in result:
                outcome = Outcome(job, failure=f"{result['error']} (log: {log_of(job)})")
            if outcome.failure is not None:
                failures.append(f"{job.arm} seed {job.seed}: {outcome.failure}")
                progress.log(f"run {job.arm} seed {job.seed} failed: {outcome.failure}")
                continue
            progress.finished(job, result)
    if failures:
        raise ConfigError(f"{len(failures)} run(s) failed: " + "; ".join(failures))


__all__ = ["Job", "SuiteProgress", "check_experiment_dir", "job_to_dict", "run_experiment", "run_job", "run_status",
           "spec_text"]

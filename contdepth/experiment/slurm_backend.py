"""The ``slurm`` backend: one Slurm job per job, as a job array, through submitit (``pip install 'contdepth[slurm]'``).

Every pending job is submitted at once (``executor.batch()``: one job array) with
``cpus_per_task`` = the run's threads, ``gpus_per_node``, ``timeout_min`` and the partition;
any further parameter of submitit's ``AutoExecutor.update_parameters`` comes from the
``slurm:`` section of ``--slurm-config``. The runner collects the jobs as they end
(``job.done()``, ``job.result()``). submitit's files (the pickled call, each job's
stdout and stderr) go to ``DIR/slurm/``; a run's own output to ``DIR/logs/ARM/seed-S.log``.

- **Code on the nodes.** submitit pickles the call: contdepth (and submitit) must be
  installed on the nodes in the same environment, with the packages behind the entry
  points; a module named with ``--import`` must be importable there (an installed
  package, or a folder on the shared storage, which is found where the runner found it).
- **Time limits and preemption.** The job is submitit ``Checkpointable``: a job reaching its
  time limit or preempted is requeued by submitit (up to ``slurm_max_num_timeout`` times,
  3 by default) and its run resumes from its last checkpoint; a job killed otherwise
  (node lost, ``scancel``) is resumed by the next sitting.
- **The driver may go.** Ctrl-C or SIGTERM cancels the jobs still queued or running (their
  runs resume next time). A driver that dies otherwise (its node, SIGKILL) leaves them
  running; ``DIR/slurm/jobs.json`` names them, and the next sitting follows a job Slurm
  still holds instead of submitting its run again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import submitit

from ..common.files import atomic_write_text, read_regular_text
from ..common.paths import user_path
from ..common.yaml_input import load_yaml_file
from ..train.config import ConfigError
from .backends import Outcome, Slurm, job_to_dict, log_of
from .folder import Job, check_no_links
from .remote import run_remote

SLURM_DIR = "slurm"
JOBS_FILE = "jobs.json"
#: States in which Slurm still holds a job: a new sitting follows it rather than submitting its run again.
LIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                         "COMPLETING", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"})


class SuiteJob(submitit.helpers.Checkpointable):
    """The callable submitit pickles: `run_remote` on the node; requeued as it is on timeout or preemption."""

    def __call__(self, job: dict, context: dict) -> dict:
        return run_remote(job, context)


def executor_parameters(choice: Slurm, *, threads: int, device: str, suite: str) -> tuple[dict, str | None]:
    """``update_parameters`` keywords from the file's ``slurm:`` section, then the flags; and the cluster."""
    params: dict = {}
    cluster = choice.cluster
    if choice.config is not None:
        raw = load_yaml_file(user_path(choice.config), "a Slurm config")
        section = raw.get("slurm") if isinstance(raw, dict) else None
        if not isinstance(section, dict) or not all(isinstance(k, str) for k in section):
            raise ConfigError(f"slurm_config: {choice.config} must hold a mapping 'slurm:' of submitit executor "
                              "parameters (slurm_account: ..., mem_gb: ...)")
        params.update(section)
        if "cluster" in params:
            cluster = params.pop("cluster")
            if cluster not in ("slurm", "local"):
                raise ConfigError(f"slurm_config: {choice.config}: cluster must be slurm or local, got {cluster!r}")
    params.update(timeout_min=choice.time, cpus_per_task=threads, name=f"contdepth-{suite}",
                  gpus_per_node=choice.gpus if choice.gpus is not None else int(device.startswith("cuda")))
    if choice.partition is not None:
        params["slurm_partition"] = choice.partition
    return params, cluster


class SlurmBackend:
    name = "slurm"

    def __init__(self, choice: Slurm, *, folder: Path, threads: int, device: str, token: str, imports: dict,
                 suite: str, workers: int, **_) -> None:
        self.workers = workers
        self.folder, self.token, self.context = folder, token, {"token": token, **imports}
        params, cluster = executor_parameters(choice, threads=threads, device=device, suite=suite)
        self.where = check_no_links(folder, folder / SLURM_DIR)
        self.where.mkdir(exist_ok=True)
        self.cluster = cluster or "auto"
        try:
            self.executor = submitit.AutoExecutor(folder=self.where, cluster=cluster)
            self.executor.update_parameters(**params)
        except (NameError, AssertionError, ValueError, TypeError, RuntimeError) as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise ConfigError(f"slurm: submitit refused the executor: {'; '.join(lines[:2]) or type(exc).__name__}"
                              ) from None
        self.poll_s = 0.5 if self.executor.cluster == "local" else 10.0
        self.jobs: dict = {}  # submitit job -> our Job
        self.record = self._read_record()

    # --- the record of submitted jobs, for a sitting after a driver that died ---------------------------------
    def _read_record(self) -> dict:
        path = self.where / JOBS_FILE
        if not path.exists():
            return {}
        try:
            record = json.loads(read_regular_text(path, "the Slurm job record"))
        except (ConfigError, ValueError):
            return {}  # unreadable: submitting again is safe (a run in use refuses a second job)
        return {k: v for k, v in record.items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(record, dict) else {}

    def _write_record(self) -> None:
        atomic_write_text(self.where / JOBS_FILE, json.dumps(self.record, indent=1, sort_keys=True) + "\n")

    def _live(self, key: str):
        """The Slurm job a previous sitting submitted for ``key`` if Slurm still holds it, else ``None``."""
        job_id = self.record.get(key)
        if job_id is None or self.executor.cluster != "slurm":
            return None  # submitit's local jobs end with their driver's sitting, or are cancelled by it
        job = submitit.SlurmJob(folder=self.where, job_id=job_id)
        try:
            state = job.state
        except Exception:  # noqa: BLE001 - sacct unreachable: submit again (a run in use refuses a second job)
            return None
        return job if str(state).split()[0].upper() in LIVE_STATES else None

    # --- Backend -------------------------------------------------------------------------------------------
    def room(self) -> int | None:
        """Slurm queues every job; submitit's local executor (no scheduler) runs ``--workers`` at once."""
        return None if self.executor.cluster == "slurm" else self.workers - len(self.jobs)

    def running(self) -> int:
        return len(self.jobs)

    def submit(self, jobs: Sequence[Job]) -> None:
        fresh = []
        for job in jobs:
            live = self._live(f"{job.arm}/seed-{job.seed}")
            if live is not None:
                self.jobs[live] = job
            else:
                fresh.append(job)
        with self.executor.batch():  # one job array on Slurm
            submitted = [self.executor.submit(SuiteJob(), job_to_dict(job), self.context) for job in fresh]
        for handle, job in zip(submitted, fresh):
            self.jobs[handle] = job
            self.record[f"{job.arm}/seed-{job.seed}"] = str(handle.job_id)
        if fresh:
            self._write_record()

    def collect(self, timeout: float) -> list[Outcome]:
        deadline = time.monotonic() + timeout
        while True:
            ended = [handle for handle in self.jobs if handle.done()]
            if ended or time.monotonic() >= deadline:
                break
            time.sleep(max(0.0, min(self.poll_s, deadline - time.monotonic())))
        outcomes = []
        for handle in ended:
            job = self.jobs.pop(handle)
            try:
                if self.executor.cluster != "slurm" and not handle.paths.result_pickle.exists():
                    # this machine's own files: no network file system to wait for (result() waits 15 s)
                    raise RuntimeError(f"job {handle.job_id} has not produced any output (state: {handle.state})")
                outcomes.append(Outcome(job, handle.result()))
            except Exception as exc:  # noqa: BLE001 - submitit's failed or uncompleted job, in one line
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                outcomes.append(Outcome(job, failure=f"job {handle.job_id} ended without a result ({first}); "
                                                     f"its run resumes when the suite is run again (log: "
                                                     f"{log_of(job)}, submitit's: {handle.paths.stderr})"))
        return outcomes

    def close(self, interrupted: bool) -> None:
        if interrupted:
            for handle in self.jobs:
                try:
                    handle.cancel(check=False)
                except Exception:  # noqa: BLE001 - already ended, or scancel unreachable: nothing more to do
                    pass
            deadline = time.monotonic() + 15.0  # local jobs: ended, and their run locks released, before we return
            while self.executor.cluster != "slurm" and time.monotonic() < deadline \
                    and not all(handle.done() for handle in self.jobs):
                time.sleep(0.2)
        self.jobs.clear()


__all__ = ["JOBS_FILE", "LIVE_STATES", "SLURM_DIR", "SlurmBackend", "SuiteJob", "executor_parameters"]

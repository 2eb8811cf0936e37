"""Where a suite's jobs run: local worker processes, a Ray cluster, or Slurm through submitit.

A job is one ``(arm, seed)``: its run and after-training steps (`run_job`), writing only
under the suite's folder. The runner (`contdepth.experiment.runner`) decides which jobs
are pending from the folder, hands them to a `Backend`, prints the progress as outcomes
come back, and writes the report; the backend only starts jobs and says how each ended.
So every engine writes the same records, and the same command again picks any suite up
from its files.

- ``local`` (the default, no extra): ``--workers N`` processes of this machine
  (`ProcessPool`); one worker runs the jobs in the runner's own process.
- ``ray`` (``pip install 'contdepth[ray]'``): one Ray task per job
  (`contdepth.experiment.ray_backend`).
- ``slurm`` (``pip install 'contdepth[slurm]'``): one Slurm job per job, as a job array,
  through submitit (`contdepth.experiment.slurm_backend`).

Each engine is imported only when chosen; without its extra the suite stops at once with
one line naming it. The choice is a name or an object (`Ray`, `Slurm`) holding its options.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol, Sequence

from ..common.files import read_regular_bytes
from ..common.validate import check_int
from ..train.config import ConfigError
from .folder import Job, check_no_links, log_file

BACKENDS = ("local", "ray", "slurm")


@dataclass(frozen=True)
class Outcome:
    """How a job ended: its result (`run_job`'s) or one line saying why not."""

    job: Job
    result: dict | None = None
    failure: str | None = None


class Backend(Protocol):
    """An engine running a suite's jobs (one sitting): the runner submits, collects, and closes."""

    name: str

    def room(self) -> int | None:
        """How many more jobs it takes now; ``None``: all of them (the engine queues them)."""

    def submit(self, jobs: Sequence[Job]) -> None:
        """Start ``jobs`` (the engine may queue them)."""

    def running(self) -> int:
        """Jobs submitted and not yet collected."""

    def collect(self, timeout: float) -> list[Outcome]:
        """The jobs ended since the last call; waits up to ``timeout`` seconds for one."""

    def close(self, interrupted: bool) -> None:
        """End the sitting; ``interrupted``: stop what still runs (its runs resume next time)."""


def job_to_dict(job: Job) -> dict:
    return {f.name: getattr(job, f.name) for f in fields(Job)}


# --- the choice ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ray:
    """Options of the ``ray`` backend: ``address`` of a running cluster (``None``: start a local Ray,
    or use the one this process has already started), and how often a task whose worker died
    (a node lost, the process killed) is retried: its run resumes from its last checkpoint."""

    address: str | None = None
    max_retries: int = 3
    name = "ray"
    extra = "ray"
    module = "ray"

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ConfigError(f"ray_address: must be a Ray address such as auto or ray://host:10001, got "
                              f"{self.address!r}")
        check_int(self.max_retries, "ray_retries", low=0, high=100)


@dataclass(frozen=True)
class Slurm:
    """Options of the ``slurm`` backend (submitit's executor parameters).

    ``partition``; ``time``: minutes each job may run (a job past it is requeued by submitit,
    up to 3 times, and resumes from its last checkpoint); ``gpus`` per job (default 1 with
    ``--device cuda``, else 0); ``cpus`` per job (default: a run's threads; a run uses them
    all); ``config``: a YAML file whose ``slurm:`` section holds any further parameter of
    submitit's ``AutoExecutor.update_parameters`` (``slurm_account``, ``mem_gb``,
    ``slurm_array_parallelism``, ...), and ``cluster: local`` to run the jobs as processes of
    this machine through submitit's ``LocalExecutor`` (to try a setup without Slurm).
    """

    partition: str | None = None
    time: int = 60
    gpus: int | None = None
    cpus: int | None = None
    config: str | None = None
    cluster: str | None = None
    name = "slurm"
    extra = "slurm"
    module = "submitit"

    def __post_init__(self) -> None:
        if self.partition is not None and (not isinstance(self.partition, str) or not self.partition.strip()
                                           or any(c.isspace() for c in self.partition)):
            raise ConfigError(f"slurm_partition: must be a partition name, got {self.partition!r}")
        check_int(self.time, "slurm_time", low=1, high=366 * 24 * 60)
        check_int(self.gpus, "slurm_gpus", low=0, high=64, allow_none=True)
        check_int(self.cpus, "slurm_cpus", low=1, high=1024, allow_none=True)
        if self.cluster not in (None, "slurm", "local"):
            raise ConfigError(f"slurm: cluster must be slurm or local, got {self.cluster!r}")


def resolve_backend(backend: object) -> Ray | Slurm | None:
    """``None`` for ``local``; the options object of another engine (its name alone: its defaults)."""
    if isinstance(backend, (Ray, Slurm)):
        return backend
    if backend == "local":
        return None
    if backend == "ray":
        return Ray()
    if backend == "slurm":
        return Slurm()
    raise ConfigError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")


def require(choice: Ray | Slurm) -> None:
    """Import the engine of ``choice`` now (before any folder is made); one line naming its extra if missing."""
    import importlib

    try:
        importlib.import_module(choice.module)
    except ImportError as exc:
        raise ConfigError(f"backend: {choice.name} needs {choice.module}, which cannot be imported here "
                          f"({type(exc).__name__}: {exc}); install it with pip install 'contdepth[{choice.extra}]'"
                          ) from None


# --- local worker processes --------------------------------------------------------------------------------
class ProcessPool:
    """Up to ``workers`` jobs at once, each in its own ``python -m contdepth.experiment.worker`` process.

    Separate interpreters rather than a multiprocessing pool: nothing of the caller's
    ``__main__`` is re-imported (a script without a main guard works), no torch thread
    pool is forked, and a worker that dies takes only its run down (it resumes next time).
    A worker's output goes to ``DIR/logs/ARM/seed-S.log`` (a pipe could fill and stall it);
    its result is the log's last line. Workers never run code from the working folder and
    end with the runner, however it ends (`contdepth.experiment.process`).
    """

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.processes: dict = {}

    def room(self) -> int:
        return self.workers - len(self.processes)

    def running(self) -> int:
        return len(self.processes)

    def submit(self, jobs: Sequence[Job]) -> None:
        from .process import start_worker

        for job in jobs:
            log = check_no_links(job.folder, log_file(job.folder, job.arm, job.seed))
            log.parent.mkdir(parents=True, exist_ok=True)
            self.processes[start_worker(job_to_dict(job), log)] = (job, log)

    def collect(self, timeout: float) -> list[Outcome]:
        from .process import release

        deadline = time.monotonic() + timeout
        while True:
            ended = [p for p in self.processes if p.poll() is not None]
            if ended or time.monotonic() >= deadline:
                break
            time.sleep(min(0.1, timeout))
        outcomes = []
        for process in ended:
            job, log = self.processes.pop(process)
            release(process)
            text = read_regular_bytes(log, "a worker's log", None).decode("utf-8", errors="replace")
            lines = text.strip().splitlines() or [""]
            try:
                result = json.loads(lines[-1]) if process.returncode == 0 else None
            except ValueError:
                result = None
            if isinstance(result, dict):
                outcomes.append(Outcome(job, result))
            else:
                outcomes.append(Outcome(job, failure=f"{lines[-1] or f'exit status {process.returncode}'} "
                                                     f"(log: {log})"))
        return outcomes

    def close(self, interrupted: bool) -> None:
        from .process import stop_workers

        stop_workers(list(self.processes))  # interrupted: stop the others; their runs resume next time
        self.processes.clear()


def log_of(job: Job) -> Path:
    return log_file(job.folder, job.arm, job.seed)


__all__ = ["BACKENDS", "Backend", "Outcome", "ProcessPool", "Ray", "Slurm", "job_to_dict", "log_of",
           "require", "resolve_backend"]

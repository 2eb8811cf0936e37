"""The ``ray`` backend: one Ray task per job (``pip install 'contdepth[ray]'``).

Every pending job is submitted at once as a task asking for ``num_cpus`` = the run's
threads (and one GPU with ``--device cuda``): Ray runs as many as its nodes hold and
queues the rest; the runner collects them as they finish (``ray.wait``). A task whose
worker process or node died is retried ``max_retries`` times (Ray's own retry; its run
resumes from its last checkpoint, as it would on the next sitting); an error of the run
itself is not retried.

- **Which Ray.** ``address`` given: that cluster (``auto``, ``ray://host:10001``); none,
  and this process has already called ``ray.init``: that one (left running); none: a
  local Ray with the suite's threads as its CPUs, shut down at the end.
- **Code on the workers.** contdepth and the packages behind the entry points must be
  installed alike on every node. Modules named with ``--import`` that are not installed
  packages (a ``models.py`` of yours) travel in the Ray job's ``runtime_env``
  (``py_modules``) when contdepth starts or joins Ray; with a Ray the calling script
  started itself, they are found in the folders the runner found them in (that machine's).
- **No code from the working folder.** Ray puts the driver's working folder first on its
  workers' module path; contdepth gives its Ray job an empty ``working_dir`` instead, so a
  ``torch.py`` in the folder a suite is started from is never imported by a worker (issue 26).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import ray

from ..train.config import ConfigError
from .backends import Outcome, Ray, job_to_dict, log_of
from .folder import Job
from .remote import probe, run_remote

#: Seconds the shared-storage probe may wait for every node (a node busy with other work may take a while).
PROBE_TIMEOUT_S = 300.0


def _modules_to_ship(names: Sequence[str]) -> list:
    """The ``--import`` modules imported from a folder of the user's, not from an installed package."""
    import sysconfig

    installed = {Path(p).resolve() for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])}
    shipped = []
    for name in names:
        module = sys.modules.get(name.split(".")[0])
        origin = getattr(getattr(module, "__spec__", None), "origin", None)
        if not isinstance(origin, str) or not origin.endswith(".py"):
            continue
        if not any(parent in installed for parent in Path(origin).resolve().parents):
            shipped.append(module)
    return shipped


class RayBackend:
    name = "ray"

    def __init__(self, choice: Ray, *, folder: Path, threads: int, device: str, token: str, imports: dict,
                 suite_threads: int, **_) -> None:
        self.choice, self.folder, self.token, self.imports = choice, folder, token, imports
        self.refs: dict = {}
        self.started_here = False
        if not ray.is_initialized():
            with tempfile.TemporaryDirectory(prefix="contdepth-ray-") as empty:  # uploaded at init; see the docstring
                runtime_env = {"working_dir": empty}
                shipped = _modules_to_ship(imports.get("imports", ()))
                if shipped:
                    runtime_env["py_modules"] = shipped
                options = dict(address=choice.address, runtime_env=runtime_env, logging_level=logging.WARNING,
                               log_to_driver=False, include_dashboard=False)
                if choice.address is None:
                    options["num_cpus"] = suite_threads  # --threads: the whole suite's
                try:
                    ray.init(**options)
                except (ConnectionError, ValueError, RuntimeError) as exc:
                    where = choice.address or "a new local instance"
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise ConfigError(f"ray_address: cannot start or reach Ray at {where}: {first}") from None
            self.started_here = True
        gpus = 1 if device.startswith("cuda") else 0
        self.task = ray.remote(run_remote).options(num_cpus=threads, num_gpus=gpus, max_retries=choice.max_retries,
                                                   retry_exceptions=False, name="contdepth-run")
        self._check_nodes(threads, gpus)

    def _check_nodes(self, threads: int, gpus: int) -> None:
        """A node that fits a run, and the shared-storage check on every node (`contdepth.experiment.remote`)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .remote import read_worker_marker

        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        if not any(n["Resources"]["CPU"] >= threads and n["Resources"].get("GPU", 0) >= gpus for n in nodes):
            biggest = max((int(n["Resources"]["CPU"]) for n in nodes), default=0)
            raise ConfigError(f"threads: a run asks Ray for {threads} CPU(s){' and a GPU' * gpus}, and no node has "
                              f"them (the largest has {biggest} CPU(s)); give fewer --threads per --workers")
        remote_probe = ray.remote(probe)
        refs = {remote_probe.options(num_cpus=0, name="contdepth-shared-check", scheduling_strategy=
                                     NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    str(self.folder), self.token): n for n in nodes}
        ready, waiting = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
        if waiting:
            hosts = ", ".join(refs[r].get("NodeManagerAddress", "?") for r in waiting)
            raise ConfigError(f"backend: the shared-storage check did not run on Ray node(s) {hosts} within "
                              f"{PROBE_TIMEOUT_S:.0f} s; are they busy or unreachable?")
        for answer in ray.get(ready):
            if "error" in answer:
                raise ConfigError(answer["error"])
            read_worker_marker(self.folder, self.token, answer["marker"])

    def room(self) -> None:
        return None

    def running(self) -> int:
        return len(self.refs)

    def submit(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.refs[self.task.remote(job_to_dict(job), {"token": self.token, **self.imports})] = job

    def collect(self, timeout: float) -> list[Outcome]:
        if not self.refs:
            return []
        ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in ready:
            job = self.refs.pop(ref)
            try:
                outcomes.append(Outcome(job, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:  # the run raised something unexpected
                cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
                first = (str(cause).strip().splitlines() or [""])[0]
                outcomes.append(Outcome(job, failure=f"{type(cause).__name__}: {first} (log: {log_of(job)})"))
            except ray.exceptions.RayError as exc:  # its worker or node died, retries spent, or cancelled
                first = (str(exc).strip().splitlines() or [""])[0]
                outcomes.append(Outcome(job, failure=f"{type(exc).__name__} after {self.choice.max_retries} "
                                                     f"retries: {first} (its run resumes when the suite is run "
                                                     "again)"))
        return outcomes

    def close(self, interrupted: bool) -> None:
        if interrupted:
            for ref in list(self.refs):
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already ended, or Ray itself going down: nothing to stop
                    pass
        self.refs.clear()
        if self.started_here:
            ray.shutdown()


__all__ = ["PROBE_TIMEOUT_S", "RayBackend"]

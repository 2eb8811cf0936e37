"""One job of a suite: an (arm, seed) run trained (fresh, resumed or skipped) and its after-training steps.

Its own module because every engine runs it: the local worker processes (`contdepth.experiment.worker`),
an engine's worker (`contdepth.experiment.remote`: Ray, Slurm) and the runner itself with one
worker (`contdepth.experiment.runner`); none of them imports another to reach it.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Sequence

from ..common.files import atomic_write_text
from ..train.checkpoint import read_description
from ..train.config import ConfigError
from ..train.trainer import train
from .folder import (
    Job,
    check_no_links,
    compressed_folder,
    run_status,
    steps_current,
    steps_file,
    steps_identity,
    steps_version,
    weights_identity,
)
from .spec import ExperimentSpec
from .steps import run_steps


def run_job(job: Job, callbacks: Sequence[Callable] = ()) -> dict:
    """Train ``job``'s run (fresh, resumed or skipped) and its after-training steps; returns what was done."""
    import torch

    spec = ExperimentSpec.from_dict(job.spec, source=job.source, default_name=job.spec.get("name", "experiment"))
    arm = spec.arm(job.arm)
    for path in (job.run_dir, steps_file(job.folder, arm.name, job.seed),
                 compressed_folder(job.folder, arm.name, job.seed)):  # what this job writes: never through a link
        check_no_links(job.folder, path)
    state, _ = run_status(spec, job.folder, arm, job.seed)
    run = {"out": str(job.run_dir), "threads": job.threads, "device": job.device, "quiet": job.quiet}
    if job.data_dir is not None:
        run["data_dir"] = job.data_dir
    did = []
    tic = time.perf_counter()
    if state in ("new", "partial"):
        config = spec.config(arm, job.seed, resume=state == "partial", **run)
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        train(config, callbacks=callbacks)
        did.append("resumed" if state == "partial" else "trained")
    if (arm.evaluate is not None or arm.compress is not None) and not steps_current(job.folder, arm, job.seed):
        previous = torch.get_num_threads()
        torch.set_num_threads(job.threads)
        description = read_description(job.run_dir)
        steps_tic = time.perf_counter()
        try:
            record = {"steps": steps_identity(arm), "checkpoint": weights_identity(description),
                      "contdepth": steps_version(),
                      **run_steps(arm, job.run_dir, job.folder, job.seed, device=job.device, threads=job.threads,
                                  data_dir=job.data_dir)}
            record["seconds"] = time.perf_counter() - steps_tic  # the suite's time-left estimate reads it
        except ValueError as exc:  # a step the model cannot take: one line, not a traceback
            raise ConfigError(f"{arm.name} seed {job.seed}: after-training steps: {exc}") from exc
        finally:
            torch.set_num_threads(previous)
        path = steps_file(job.folder, arm.name, job.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1, allow_nan=True) + "\n")
        did.append("steps")
    return {"arm": job.arm, "seed": job.seed, "did": did, "seconds": time.perf_counter() - tic}


__all__ = ["run_job"]

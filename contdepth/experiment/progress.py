"""A suite's progress: runs done of total and an estimate of the time left, printed between runs."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from ..common.files import read_regular_text
from ..train.progress import format_seconds
from ..train.rundir import CHECKPOINT_JSON
from .folder import Job, run_folder, run_status, steps_file
from .spec import ExperimentSpec


def steps_seconds(record: object) -> float | None:
    """How long a steps record's steps took: its ``seconds``, or for a record from before they were
    recorded, its manifestation grid's and fine-tuning's seconds; ``None`` if it says nothing usable."""
    if not isinstance(record, dict):
        return None
    if "seconds" in record:
        parts = [record["seconds"]]
    else:
        grid, compression = record.get("manifestations"), record.get("compression")
        parts = [grid.get("seconds", 0.0) if isinstance(grid, dict) else 0.0,
                 compression.get("finetune_time_s", 0.0) if isinstance(compression, dict) else 0.0]
    if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1e9 for p in parts):
        return None
    return float(sum(parts)) or None


class SuiteProgress:
    """Runs done of total and an estimate of the time left, printed between runs.

    The estimate multiplies the epochs still to train by the median epoch time of the arm
    (from the epochs already trained in this folder, any sitting), or of all arms when the
    arm has none yet, and adds for every run whose after-training steps are still to do the
    median time the arm's steps took (their records' ``seconds``), or all arms' steps when
    the arm has none yet: evaluating a grid of manifestations or compressing can take longer
    than the training. The median, not the mean: a wall time includes any time the process
    was stopped or the machine suspended, and one such epoch would otherwise set the
    estimate for the whole suite. Each run prints its own epochs beneath.
    """

    def __init__(self, spec: ExperimentSpec, folder: Path, jobs: list[Job], workers: int, quiet: bool) -> None:
        self.spec, self.folder, self.jobs, self.workers, self.quiet = spec, folder, jobs, workers, quiet
        self.done_count = 0
        self.pending: list[Job] = []
        self.started = time.perf_counter()

    def _epoch_times(self) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {}
        for job in self.jobs:
            path = run_folder(self.folder, job.arm, job.seed) / CHECKPOINT_JSON
            try:
                history = json.loads(read_regular_text(path, "a checkpoint description")).get("history", [])
            except (OSError, ValueError, AttributeError):
                continue
            times.setdefault(job.arm, []).extend(r["epoch_time"] for r in history
                                                 if isinstance(r, dict) and isinstance(r.get("epoch_time"), float))
        return times

    def _steps_times(self) -> dict[str, list[float]]:
        """Seconds the after-training steps took, per arm, from the steps records in this folder."""
        times: dict[str, list[float]] = {}
        for job in self.jobs:
            try:
                record = json.loads(read_regular_text(steps_file(self.folder, job.arm, job.seed), "a steps record"))
            except (OSError, ValueError):
                continue
            seconds = steps_seconds(record)
            if seconds is not None:
                times.setdefault(job.arm, []).append(seconds)
        return times

    def _left(self) -> str:
        times = self._epoch_times()
        every = [t for values in times.values() for t in values]
        if not every:
            return "time left: not known until an epoch has run"
        steps = self._steps_times()
        every_steps = [t for values in steps.values() for t in values]
        seconds, untimed = 0.0, 0
        for job in self.jobs:
            arm = self.spec.arm(job.arm)
            state, epochs_done = run_status(self.spec, self.folder, arm, job.seed)
            if state in ("new", "partial"):
                per_epoch = times.get(job.arm) or every
                seconds += (self.spec.config(arm, job.seed).epochs - epochs_done) * statistics.median(per_epoch)
            if state != "done" and (arm.evaluate is not None or arm.compress is not None):
                per_run = steps.get(job.arm) or every_steps
                if per_run:
                    seconds += statistics.median(per_run)
                else:
                    untimed += 1
        how = "epochs to train x median epoch time, steps to do x median steps time"
        if untimed:
            how += f"; the steps of {untimed} run{'s' * (untimed != 1)} not yet timed"
        return f"about {format_seconds(seconds / self.workers)} left ({how})"

    def log(self, text: str) -> None:
        if not self.quiet:
            print(f"experiment {self.spec.name}: {text}", flush=True)

    def start(self) -> None:
        states = {}
        for job in self.jobs:
            states[job] = run_status(self.spec, self.folder, self.spec.arm(job.arm), job.seed)[0]
        self.done_count = sum(s == "done" for s in states.values())
        self.pending = [job for job in self.jobs if states[job] != "done"]
        partial = sum(s == "partial" for s in states.values())
        seeds = len({job.seed for job in self.jobs})  # a seeds rule's round: the seeds it has asked for so far
        self.log(f"{len(self.jobs)} runs ({len(self.spec.arms)} arms x {seeds} seeds) in {self.folder}: "
                 f"{self.done_count} done, {partial} to resume, {len(self.pending) - partial} to do; "
                 f"{self.workers} worker{'s' * (self.workers != 1)} x {self.jobs[0].threads} "
                 f"thread{'s' * (self.jobs[0].threads != 1)}; {self._left()}")

    def starting(self, job: Job) -> None:
        state, epochs = run_status(self.spec, self.folder, self.spec.arm(job.arm), job.seed)
        what = {"new": "training", "partial": f"resuming after epoch {epochs}", "trained": "after-training steps",
                "done": "already done"}[state]
        self.log(f"run {self.done_count + 1}/{len(self.jobs)}: {job.arm} seed {job.seed}, {what}")

    def finished(self, job: Job, result: dict) -> None:
        self.done_count += 1
        self.log(f"{self.done_count}/{len(self.jobs)} runs done ({job.arm} seed {job.seed}: "
                 f"{', '.join(result['did']) or 'nothing to do'} in {format_seconds(result['seconds'])}); {self._left()}")

    def done(self) -> None:
        self.log(f"all {len(self.jobs)} runs done; this sitting took {format_seconds(time.perf_counter() - self.started)}")


__all__ = ["SuiteProgress", "steps_seconds"]

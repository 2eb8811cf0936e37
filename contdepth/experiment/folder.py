"""The layout and records of an experiment folder, shared by the runner, its steps and the report.

    DIR/experiment.json              the spec's identity and one entry per sitting (command, host, time)
    DIR/spec.yaml                    the spec, as first run
    DIR/runs/ARM/seed-S/             the run folder of (ARM, S)
    DIR/steps/ARM/seed-S.json        after-training steps of that run, tied to its final weights and
                                     the contdepth version and steps revision that computed them
    DIR/compressed/ARM/seed-S/       the compressed (and fine-tuned) model of that run
    DIR/logs/ARM/seed-S.log          a worker's output (``--workers`` above 1)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..common.files import read_regular_text
from ..common.paths import EXPERIMENT_FILE, EXPERIMENT_FORMAT
from ..train.checkpoint import CheckpointError, read_description
from ..train.config import ConfigError, TrainConfig
from ..train.rundir import CHECKPOINT_JSON, folder_state
from ..train.trainer import check_resume_config, with_recorded_corpus
from .records import check_sittings, check_steps_body
from .spec import IDENTITY_VERSION, Arm, ExperimentSpec

SPEC_COPY = "spec.yaml"
RUNS_DIR = "runs"
STEPS_DIR = "steps"
COMPRESSED_DIR = "compressed"


def run_folder(folder: str | Path, arm: str, seed: int) -> Path:
    return Path(folder) / RUNS_DIR / arm / f"seed-{seed}"


def steps_file(folder: str | Path, arm: str, seed: int) -> Path:
    return Path(folder) / STEPS_DIR / arm / f"seed-{seed}.json"


def compressed_folder(folder: str | Path, arm: str, seed: int) -> Path:
    return Path(folder) / COMPRESSED_DIR / arm / f"seed-{seed}"


def log_file(folder: str | Path, arm: str, seed: int) -> Path:
    return Path(folder) / "logs" / arm / f"seed-{seed}.log"


def check_no_links(folder: str | Path, path: str | Path) -> Path:
    """``path``, a file or folder the suite writes under its folder ``folder``, if no link is on the way.

    Why: a suite folder may have been copied or unpacked from elsewhere (it is input, like
    a checkpoint). A link in it (``steps/ARM`` -> a folder of the user's) would make the
    runner write, replace or truncate files there (``steps/ARM/seed-S.json``, a worker's
    log, a compressed run with ``overwrite``) that contdepth never wrote. Every part of
    ``path`` below ``folder`` must be no link (a missing part is made by the suite itself).
    """
    folder, path = Path(folder), Path(path)
    current = folder
    for part in path.relative_to(folder).parts:
        current = current / part
        if current.is_symlink():
            raise ConfigError(f"out: {current} is a link; a suite writes its files in its own folder, never through "
                              "a link to elsewhere: remove the link (or use a new --out)")
    return path


def read_record(folder: str | Path) -> dict:
    """``DIR/experiment.json`` (a ``ConfigError`` naming it if unreadable or not ours)."""
    path = Path(folder) / EXPERIMENT_FILE
    try:
        record = json.loads(read_regular_text(path, "an experiment record"))  # a FIFO here is refused, not waited on
    except (OSError, ValueError) as exc:
        raise ConfigError(f"out: {path} cannot be read as an experiment record: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != EXPERIMENT_FORMAT:
        raise ConfigError(f"out: {path} is not a contdepth experiment record")
    if (not isinstance(record.get("identity"), dict) or not isinstance(record.get("sittings"), list)
            or record.get("identity_version") != IDENTITY_VERSION):
        raise ConfigError(f"out: {path} is a malformed or older experiment record (identity, identity_version "
                          f"{IDENTITY_VERSION} and sittings expected); use a new --out")
    check_sittings(record, path)  # what the report prints and the runner appends to: checked, not trusted
    return record


def check_run_config(spec: ExperimentSpec, arm: Arm, seed: int, description: dict, path: Path) -> None:
    """The run in ``path`` was trained with ``(arm, seed)``'s config (the per-sitting options aside).

    The schedule's length too, which resuming may change (``--extend``) and so does not
    compare: a run extended to 3 epochs inside a 1-epoch suite, or a 2-epoch run copied
    into it, is another experiment's run, and its accuracy is not this spec's result. The
    stored ``epochs``, the checkpoint's epoch and every metrics row's ``schedule_epochs``
    must all fit the arm's ``epochs``.
    """

    try:
        stored = TrainConfig.from_dict(description.get("config") or {}, source=str(path / CHECKPOINT_JSON))
        expected = spec.config(arm, seed)
        check_resume_config(with_recorded_corpus(expected, stored), stored)
        schedules = sorted({row.get("schedule_epochs", expected.epochs) for row in description["history"]
                            if isinstance(row, dict)} - {expected.epochs})
        if stored.epochs != expected.epochs or description["epoch"] > expected.epochs or schedules:
            lengths = sorted({stored.epochs, *schedules} - {expected.epochs}) or [description["epoch"]]
            raise ConfigError(f"epochs: it was trained on a schedule of {', '.join(map(str, lengths))} epochs "
                              f"(to epoch {description['epoch']}), the arm's is {expected.epochs}")
    except ConfigError as exc:
        raise ConfigError(f"out: the run in {path} is not arm {arm.name!r} seed {seed} of this spec ({exc}); "
                          "move it away or use a new --out") from exc


def run_status(spec: ExperimentSpec, folder: str | Path, arm: Arm, seed: int) -> tuple[str, int]:
    """``(state, epochs done)``: ``done`` (trained and stepped), ``trained`` (steps left), ``partial``, ``new``.

    Reads only ``checkpoint.json`` (no tensors). A run folder whose stored config is not the
    arm's (another spec's run, or one edited by hand) is a `ConfigError` naming it,
    never a run to skip or resume.
    """
    path = run_folder(folder, arm.name, seed)
    if folder_state(path) != "run":
        return "new", 0
    description = read_description(path)
    check_run_config(spec, arm, seed, description, path)
    epochs = spec.config(arm, seed).epochs
    if description["epoch"] < epochs:
        return "partial", description["epoch"]
    needs_steps = arm.evaluate is not None or arm.compress is not None
    if needs_steps and not steps_current(folder, arm, seed, description):
        return "trained", description["epoch"]
    return "done", description["epoch"]


def steps_current(folder: str | Path, arm: Arm, seed: int, description: dict | None = None) -> bool:
    """Whether the steps record of ``(arm, seed)`` is for these steps and this run's final weights."""
    path = steps_file(folder, arm.name, seed)
    try:
        record = json.loads(read_regular_text(path, "a steps record"))
        if description is None:
            description = read_description(run_folder(folder, arm.name, seed))
    except (OSError, ValueError, CheckpointError):
        return False
    current = (isinstance(record, dict) and record.get("steps") == steps_identity(arm)
               and record.get("checkpoint") == weights_identity(description)
               and record.get("contdepth") == steps_version())
    if current:  # this run's steps by its identity: its results must then be readable (one line if not)
        check_steps_body(record, path)
    return current


#: Raised with every change of the library that changes what an after-training step computes
#: from the same weights. 2: the normalisation state's sampled range and variance floor (issue
#: 14) and PolyNet's per-application norms (issue 16); records from before carry no version.
#: 3: the training graph's own accuracy beside the grid and compressed models' validation
#: accuracy (issue 27); records of revision 2 lack them and are redone.
STEPS_REVISION = 3


def steps_version() -> str:
    """The version a steps record must carry to be reused: contdepth's and `STEPS_REVISION`.

    Why: the steps are computed from the weights by the library (manifestation accuracies,
    compression); after a change of how (an evaluation fix), a record from before would be
    reused silently. Steps are cheap next to training, so they are redone.
    """
    from .. import __version__

    return f"{__version__}+steps.{STEPS_REVISION}"


def steps_identity(arm: Arm) -> dict:
    """Which steps a steps record holds: a record of other steps is not reused."""
    return {"evaluate": arm.evaluate.to_dict() if arm.evaluate else None,
            "compress": arm.compress.to_dict() if arm.compress else None}


def weights_identity(description: dict) -> dict:
    """Which weights a steps record was computed from: a retrained run has other ones."""
    return {"epoch": description["epoch"], "tensors_sha256": description["tensors_sha256"]}


@dataclass(frozen=True, eq=False)  # identity: two jobs are never the same run
class Job:
    """One ``(arm, seed)`` of a suite and where its files go; plain values, so a worker process can take it."""

    spec: dict
    source: str
    arm: str
    seed: int
    folder: str
    threads: int
    device: str
    data_dir: str | None
    quiet: bool

    @property
    def run_dir(self) -> Path:
        return run_folder(self.folder, self.arm, self.seed)


__all__ = ["COMPRESSED_DIR", "EXPERIMENT_FILE", "EXPERIMENT_FORMAT", "Job", "RUNS_DIR", "SPEC_COPY", "STEPS_DIR",
           "check_no_links", "check_run_config", "compressed_folder", "log_file", "read_record", "run_folder",
           "run_status", "steps_current", "steps_file", "steps_identity", "steps_version", "STEPS_REVISION",
           "weights_identity"]

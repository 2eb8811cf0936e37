"""Take finished runs from other experiment folders instead of training them again (``--reuse DIR``).

Two suites often share arms (a baseline, a reference model): with the same training
config and seed, training is deterministic, so the run another folder already holds *is*
the run this suite would train. A run is taken only when

* it is a finished contdepth run (its checkpoint is at the config's last epoch),
* its stored training config equals the arm's for that seed in everything but the
  per-sitting options (threads, device, output folder ...), as resuming demands, and
* this suite has not started that ``(arm, seed)`` itself.

Its run files are copied (regular files only; the source is only read; all or nothing) and
``config.yaml`` gets the new folder as ``out``, so ``contdepth train --config`` on the copy still repeats
the run there. The sitting's record lists each copy with its source, and the report
names them. Wall times of copied runs were measured in the other suite's sitting: compare
CPU-time ratios across them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from ..common.files import atomic_write_text
from ..common.yaml_input import dump_yaml
from ..train.checkpoint import CheckpointError, read_description
from ..train.config import ConfigError, TrainConfig, read_yaml
from ..train.rundir import CHECKPOINT_JSON, CONFIG_FILE, LAST_DIR, METRICS_FILE, folder_state
from ..train.trainer import check_resume_config, with_recorded_corpus
from .folder import RUNS_DIR, check_no_links, run_folder
from .spec import ExperimentSpec


def reusable_run(spec: ExperimentSpec, arm: str, seed: int, sources: Iterable[Path]) -> Path | None:
    """The first finished run under ``sources`` (experiment folders) that is ``(arm, seed)`` of ``spec``.

    A candidate that cannot be read, was trained with another config, is not finished, was
    extended from a shorter schedule (its metrics rows say so: ``schedule_epochs``), or
    lacks one of its files is skipped, never an error: it is simply not this run.
    """
    config = spec.config(spec.arm(arm), seed)
    for source in sources:
        for candidate in sorted((source / RUNS_DIR).glob(f"*/seed-{seed}")):
            if candidate.is_symlink() or folder_state(candidate) != "run":
                continue
            try:
                description = read_description(candidate)
                stored = TrainConfig.from_dict(description.get("config") or {}, source=str(candidate))
                check_resume_config(with_recorded_corpus(config, stored), stored)
                run_files(candidate, description)
            except (CheckpointError, ConfigError):
                continue
            schedules = {row.get("schedule_epochs", config.epochs) for row in description["history"]}
            if stored.epochs == config.epochs == description["epoch"] and schedules == {config.epochs}:
                return candidate
    return None


def run_files(source: Path, description: dict) -> list[Path]:
    """The files a copy takes: the checkpoint's own, the records, and a graph run's ``last/`` checkpoint.

    Each must be a regular file (not a link): a ``ConfigError`` otherwise.
    """
    names = [CHECKPOINT_JSON, description["tensors"], METRICS_FILE, CONFIG_FILE]
    files = [source / name for name in names]
    last = source / LAST_DIR
    if last.exists():
        if last.is_symlink() or not last.is_dir():
            raise ConfigError(f"reuse: {last} is not a folder")
        files += [last / CHECKPOINT_JSON, last / read_description(last)["tensors"]]
    for path in files:
        if path.is_symlink() or not path.is_file():
            raise ConfigError(f"reuse: {path} is not a regular file")
    read_yaml(source / CONFIG_FILE, "a run's training config")  # the one YAML reader: a bad file is a ConfigError
    return files


def copy_run(source: Path, target: Path) -> None:
    """Copy the run in ``source`` to the new run folder ``target``, whole or not at all.

    Everything is checked first, the files are copied into a temporary folder beside
    ``target`` and that folder is renamed into place, so an interruption leaves no half
    run. The temporary folder is made by this call (``tempfile.mkdtemp``: a new name, never
    one that existed) and only that folder is ever removed, on failure: a folder of the
    user's that merely looks like a staging folder (``.seed-0.reuse``) is never touched.
    ``out`` in the copy's ``config.yaml`` is ``target``.
    """
    description = read_description(source)
    files = run_files(source, description)
    if target.exists() or target.is_symlink():
        raise ConfigError(f"reuse: {target} already exists")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.reuse-", dir=target.parent))
    try:
        if (source / LAST_DIR).exists():
            (staging / LAST_DIR).mkdir()
        for path in files:
            relative = path.relative_to(source)
            if relative.name == CONFIG_FILE and relative.parent == Path("."):
                config = read_yaml(path, "a run's training config")
                config["out"] = str(target)
                atomic_write_text(staging / CONFIG_FILE, dump_yaml(config, sort_keys=False, default_flow_style=None))
            else:
                shutil.copyfile(path, staging / relative)
        staging.rename(target)
    except BaseException:
        if staging.is_dir() and not staging.is_symlink():  # still the folder mkdtemp made for this copy
            shutil.rmtree(staging, ignore_errors=True)
        raise


def reuse_runs(spec: ExperimentSpec, folder: Path, pairs: Iterable[tuple[str, int]], sources: Iterable[str | Path],
               on_copy: Callable[[str, str], None] = lambda run, source: None) -> dict[str, str]:
    """Copy every reusable ``(arm, seed)`` of ``pairs`` not yet started in ``folder``; ``{"ARM/seed-S": source}``.

    ``on_copy(run, source)`` is called after each copy (the runner records it at once, so
    an interruption never leaves a copied run without its record).
    """
    sources = [Path(s) for s in sources]
    for source in sources:
        if not source.is_dir():
            raise ConfigError(f"reuse: {source} is not a folder")
        if source.resolve() == folder.resolve():
            raise ConfigError(f"reuse: {source} is this experiment's own folder")
    copied: dict[str, str] = {}
    for arm, seed in pairs:
        target = check_no_links(folder, run_folder(folder, arm, seed))  # a copy goes into the suite, not a link
        if target.exists() or target.is_symlink():  # started (or finished) here: this suite's own run
            continue
        found = reusable_run(spec, arm, seed, sources)
        if found is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_run(found, target)
            copied[f"{arm}/seed-{seed}"] = str(found)
            on_copy(f"{arm}/seed-{seed}", str(found))
    return copied

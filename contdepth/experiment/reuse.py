"""Take finished runs from other experiment folders instead of training them again (``--reuse DIR``).

Two suites often share arms (a baseline, a reference model): with the same training
config and seed, training is deterministic, so the run another folder already holds *is*
the run this suite would train. A run is taken only when

* it is a finished contdepth run (its checkpoint is at the config's last epoch),
* its stored training config equals the arm's for that seed in everything but the
  per-sitting options (threads, device, output folder ...), as resuming demands, and
* this suite has not started that ``(arm, seed)`` itself.

Its run files are copied (regular files only; the source is only read) and ``config.yaml``
gets the new folder as ``out``, so ``contdepth train --config`` on the copy still repeats
the run there. The sitting's record lists each copy with its source, and the report
names them. Wall times of copied runs were measured in the other suite's sitting: compare
CPU-time ratios across them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

import yaml

from ..common.files import atomic_write_text
from ..train.checkpoint import CheckpointError, read_description
from ..train.config import ConfigError, TrainConfig
from ..train.rundir import CONFIG_FILE, METRICS_FILE, folder_state
from ..train.trainer import check_resume_config
from .folder import RUNS_DIR, run_folder
from .spec import ExperimentSpec


def reusable_run(spec: ExperimentSpec, arm: str, seed: int, sources: Iterable[Path]) -> Path | None:
    """The first finished run under ``sources`` (experiment folders) that is ``(arm, seed)`` of ``spec``."""
    config = spec.config(spec.arm(arm), seed)
    for source in sources:
        for candidate in sorted((source / RUNS_DIR).glob(f"*/seed-{seed}")):
            if folder_state(candidate) != "run":
                continue
            try:
                description = read_description(candidate)
                stored = TrainConfig.from_dict(description.get("config") or {}, source=str(candidate))
                check_resume_config(config, stored)
            except (CheckpointError, ConfigError):
                continue
            if stored.epochs == config.epochs and description["epoch"] == config.epochs:
                return candidate
    return None


def copy_run(source: Path, target: Path) -> None:
    """Copy the run files of ``source`` into the new run folder ``target``; ``out`` in its config is ``target``."""
    description = read_description(source)
    names = ["checkpoint.json", description["tensors"], METRICS_FILE, CONFIG_FILE]
    files = [source / name for name in names]
    for path in files:  # the checkpoint's own files and the records; never a link or anything else
        if path.is_symlink() or not path.is_file():
            raise ConfigError(f"reuse: {path} is not a regular file, so the run in {source} is not copied")
    target.mkdir(parents=True, exist_ok=False)
    for path in files:
        if path.name != CONFIG_FILE:
            shutil.copyfile(path, target / path.name)
    config = yaml.safe_load((source / CONFIG_FILE).read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ConfigError(f"reuse: {source / CONFIG_FILE} is not a training config")
    config["out"] = str(target)
    atomic_write_text(target / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False, default_flow_style=None))


def reuse_runs(spec: ExperimentSpec, folder: Path, pairs: Iterable[tuple[str, int]],
               sources: Iterable[str | Path]) -> dict[str, str]:
    """Copy every reusable ``(arm, seed)`` of ``pairs`` not yet started in ``folder``; ``{"ARM/seed-S": source}``."""
    sources = [Path(s) for s in sources]
    for source in sources:
        if not source.is_dir():
            raise ConfigError(f"reuse: {source} is not a folder")
        if source.resolve() == folder.resolve():
            raise ConfigError(f"reuse: {source} is this experiment's own folder")
    copied: dict[str, str] = {}
    for arm, seed in pairs:
        target = run_folder(folder, arm, seed)
        if target.exists():  # started (or finished) here: this suite's own run
            continue
        found = reusable_run(spec, arm, seed, sources)
        if found is not None:
            copy_run(found, target)
            copied[f"{arm}/seed-{seed}"] = str(found)
    return copied

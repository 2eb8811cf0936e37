"""Checks of the records an experiment folder holds besides its runs: ``experiment.json`` and ``steps/``.

A suite folder is input like any checkpoint: it may have been edited, copied from
elsewhere or damaged. Its run folders are checked by the checkpoint reader; these checks
do the same for the suite's own records, so that ``contdepth report`` and ``--reuse`` answer
a tampered one in one line naming the file and the key (exit status 2) instead of a
traceback from deep inside the statistics (a sitting that is a number, a command that is
an object, a step's accuracy that is a string).

Each check returns nothing and raises `ConfigError` as
``PATH: KEY: problem``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NoReturn

from ..common.errors import OptionError
from ..common.validate import check_int, check_number, is_int, show
from ..train.checkpoint_description import MAX_PARAMS, MAX_SECONDS
from ..train.config import ConfigError


def _fail(path: Path, where: str, problem: str) -> NoReturn:
    raise ConfigError(str(path), f"{where[:120]}: {problem}")


def _checked(check: Callable[..., object], value: Any, path: Path, where: str, **bounds: Any) -> None:
    """``check`` (a common validator) of ``value``, its error as ``PATH: KEY: problem``.

    A number that may be missing (a value that was not measured) is ``allow_none``/``allow_nan``."""
    try:
        check(value, where[:120], **bounds)
    except OptionError as error:
        raise ConfigError(str(path), str(error)) from None


def _string(value: Any, path: Path, where: str, *, optional: bool = False) -> None:
    if not (isinstance(value, str) or (optional and value is None)):
        _fail(path, where, f"must be a string{' or null' if optional else ''}, got {show(value)}")


def _mapping(value: Any, path: Path, where: str) -> dict:
    if not isinstance(value, dict):
        _fail(path, where, f"must be an object, got {show(value)}")
    return value


# --- experiment.json -------------------------------------------------------------------------------------
def check_sittings(record: dict, path: Path) -> None:
    """``spec_file`` and every sitting of an experiment record (what the report prints and sums)."""
    _string(record.get("spec_file"), path, "spec_file", optional=True)
    for i, sitting in enumerate(record["sittings"]):
        where = f"sittings[{i}]"
        _mapping(sitting, path, where)
        for key in ("command", "started", "host", "device"):
            if key in sitting:
                _string(sitting[key], path, f"{where}.{key}")
        for key in ("workers", "threads"):
            if key in sitting:
                _checked(check_int, sitting[key], path, f"{where}.{key}", low=1, high=1 << 20)
        if "reused" in sitting:
            for run, source in _mapping(sitting["reused"], path, f"{where}.reused").items():
                _string(source, path, f"{where}.reused.{run}")


# --- steps/ARM/seed-S.json ---------------------------------------------------------------------------------
def check_steps_body(record: dict, path: Path) -> None:
    """The results of a steps record: the manifestation grid and the compression report, as the report reads them."""
    if "seconds" in record:
        _checked(check_number, record["seconds"], path, "seconds", low=0.0, high=MAX_SECONDS)
    if "manifestations" in record:
        _check_manifestations(_mapping(record["manifestations"], path, "manifestations"), path)
    if "compression" in record:
        _check_compression(_mapping(record["compression"], path, "compression"), path)


# What a grid cell holds: an accuracy is a fraction; a loss (mean cross-entropy, nats) any finite number >= 0.
_BOUNDS = {"accuracy": {"low": 0.0, "high": 1.0}, "loss": {"low": 0.0}}


def _check_grid(grid: dict, table: str, path: Path) -> None:
    """``manifestations.TABLE``: ``{scheme: {n: {split: value}}}``, at least one scheme and one step count each."""
    values = _mapping(grid.get(table), path, f"manifestations.{table}")
    if not values:
        _fail(path, f"manifestations.{table}", "must name at least one scheme")
    for scheme, row in values.items():
        where = f"manifestations.{table}.{scheme}"
        if not _mapping(row, path, where):
            _fail(path, where, "must name at least one step count")
        for n, cell in row.items():
            if not (isinstance(n, str) and n.isdigit() and 1 <= int(n) <= 1 << 20):
                _fail(path, f"{where}.{n}", "must be keyed by a step count (an integer >= 1)")
            for split, value in _mapping(cell, path, f"{where}.{n}").items():
                _checked(check_number, value, path, f"{where}.{n}.{split}", **_BOUNDS[table])


def _check_manifestations(grid: dict, path: Path) -> None:
    _string(grid.get("reading"), path, "manifestations.reading", optional=True)
    _check_grid(grid, "accuracy", path)
    if "loss" in grid:  # the losses beside the accuracies (text runs' readouts); older records have none
        _check_grid(grid, "loss", path)
    if "trained" in grid:  # the training graph's own accuracy (steps revision 3) and loss
        trained = _mapping(grid["trained"], path, "manifestations.trained")
        _string(trained.get("graph"), path, "manifestations.trained.graph", optional=True)
        for table in ("accuracy", "loss") if "loss" in trained else ("accuracy",):
            for split, value in _mapping(trained.get(table), path, f"manifestations.trained.{table}").items():
                _checked(check_number, value, path, f"manifestations.trained.{table}.{split}", **_BOUNDS[table])
    if "seconds" in grid:
        _checked(check_number, grid["seconds"], path, "manifestations.seconds", low=0.0, high=MAX_SECONDS)


def _per_batch(value: Any, path: Path, where: str, high: float, *, missing: bool) -> None:
    for batch, item in _mapping(value, path, where).items():
        _checked(check_number, item, path, f"{where}.{batch}", low=0.0, high=high, allow_none=missing,
                 allow_nan=missing)


def _check_compression(report: dict, path: Path) -> None:
    for key in ("n_basis_after", "n_steps_after"):
        value = report.get(key)
        values = value if isinstance(value, list) else [value]
        if not values or not all(is_int(v) and 1 <= v <= 1 << 20 for v in values):
            _fail(path, f"compression.{key}", f"must be an integer >= 1 or a list of them, got {show(value)}")
    _checked(check_int, report.get("finetune_epochs"), path, "compression.finetune_epochs", low=0, high=1 << 20)
    for key in ("params_before", "params_after"):
        _checked(check_int, report.get(key), path, f"compression.{key}", low=int(key == "params_before"),
                 high=MAX_PARAMS)
    for key in ("accuracy_before", "accuracy_projected", "accuracy_after"):
        missing = key == "accuracy_after"
        _checked(check_number, report.get(key), path, f"compression.{key}", low=0.0, high=1.0, allow_none=missing,
                 allow_nan=missing)
    for key in ("val_accuracy_before", "val_accuracy_projected", "val_accuracy_after"):  # null: no validation split
        _checked(check_number, report.get(key), path, f"compression.{key}", low=0.0, high=1.0, allow_none=True,
                 allow_nan=True)
    for key in ("latency_before", "latency_after", "onnx_latency_before", "onnx_latency_after"):
        if key in report:
            _per_batch(report[key], path, f"compression.{key}", MAX_SECONDS, missing=False)
    for key in ("speedup", "onnx_speedup"):
        if key in report:
            _per_batch(report[key], path, f"compression.{key}", 1e12, missing=True)


__all__ = ["check_sittings", "check_steps_body"]

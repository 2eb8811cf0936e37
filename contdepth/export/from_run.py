"""Export a trained run directory: what ``contdepth export RUN`` does.

The run's checkpoint is rebuilt, frozen at the requested manifestation and exported to
ONNX or as a ``torch.export`` program.  Next to the file goes a small JSON *sidecar*
(``<file>.json``) with what a deployment needs and the graph does not say: the
manifestation, the input and output shapes, the class names and the input normalisation.

The input shape comes from ``input_shape=``, else from a table of the built-in datasets'
image shapes, so no data has to be read for it.  The normalisation statistics of the
sidecar are the dataset's own (computed on its train split when it loads, under a second
for Fashion-MNIST); ``read_data=False`` leaves them out.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..common.files import atomic_write_text
from ..common.paths import refuse_experiment_path, user_path
from ..models.layers import check_block_size
from ..nn import continuous_blocks, layout
from ..solvers import available_schemes
from ..train import load_checkpoint
from ..train.config import ConfigError, check_output_path
from ..train.rundir import refuse_run_file
from ..train.trainer import load_data
from .onnx import export_onnx, onnx_max_abs_difference, require
from .program import export_program, refuse_existing, save_program
from .static import freeze, static_blocks

FORMATS = ("onnx", "torch_export")
SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2"}
SIDECAR_FORMAT = "contdepth-export"

# Image shape (channels, height, width) of the built-in datasets, so that an export needs no data.
DATASET_INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
}
CHECK_ATOL = 1e-4
# The example input (batch x one input) is allocated at once: bounds far above any real use.
MAX_BATCH_SIZE = 65_536
MAX_INPUT_VALUES = 2**24  # 16.7 million values per example (a 2048 x 2048 RGB image has 12.6 million)


@dataclass
class ExportResult:
    """What [`export_run`][contdepth.export.export_run] wrote and measured."""

    path: Path
    sidecar: Path | None
    format: str
    input_shape: tuple[int, ...]
    manifestation: list[dict]
    export_seconds: float
    max_abs_difference: float | None = None
    notes: list[str] = field(default_factory=list)


def _canonical(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def sidecar_path(path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _check_options(format: str, scheme: str | None, n_steps: int | None, batch_size: int,
                   input_shape: tuple[int, ...] | None) -> None:

    if format not in FORMATS:
        raise ConfigError(f"format: must be one of {', '.join(FORMATS)}; got {format!r}")
    if scheme is not None and scheme not in available_schemes():
        raise ConfigError(f"scheme: must be one of {', '.join(available_schemes())}; got {scheme!r}")
    if n_steps is not None:
        check_block_size(n_steps, "n_steps")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"batch_size: must be an integer >= 1 and at most {MAX_BATCH_SIZE:,} (the example input "
                          f"is allocated at once), got {batch_size!r}")
    if input_shape is not None and (len(input_shape) == 0 or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in input_shape)):
        raise ConfigError(f"input_shape: give the shape of one example (no batch), integers >= 1; got {input_shape!r}")


def _check_input_shape(model: torch.nn.Module, input_shape: tuple[int, ...]) -> None:
    """The shape of one input against what the model's first layer takes (rank, channels, features).

    Checked from the layers themselves, before any data is read: a wrong rank would
    otherwise surface as a ``ValueError`` from a normalisation layer deep in the network.
    """
    first = next((m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))), None)
    given = " ".join(str(d) for d in input_shape)
    refused = f"input_shape: the model does not accept inputs of shape {given}"
    if isinstance(first, torch.nn.Conv2d):
        if len(input_shape) != 3:
            raise ConfigError(f"{refused}: it takes C H W (3 values), got {len(input_shape)}")
        if input_shape[0] != first.in_channels:
            raise ConfigError(f"{refused}: it takes C H W with C = {first.in_channels} channel(s), "
                              f"got C = {input_shape[0]}")
    elif isinstance(first, torch.nn.Linear):
        size = math.prod(input_shape)
        if size != first.in_features:
            raise ConfigError(f"{refused}: it takes {first.in_features} values per example (any shape, flattened), "
                              f"got {size}")
    if math.prod(input_shape) > MAX_INPUT_VALUES:
        raise ConfigError(f"input_shape: at most {MAX_INPUT_VALUES:,} values per example, got {given}")


def _check_out(out: Path, overwrite: bool, sidecar: bool) -> None:
    """``out`` (and its sidecar) may be written: never a run's or an experiment's file; missing folders
    above it are created at the write (as ``train --out`` creates its folder), so only what exists is checked."""
    check_output_path(out, "out", folder=False)
    refuse_run_file(out)
    refuse_experiment_path(out)  # a suite's record, spec, report ...: never replaced, even with --overwrite
    if sidecar:
        refuse_run_file(sidecar_path(out))
    if not out.parent.is_dir():
        return  # nothing there yet to refuse: the folders are made before the write
    try:
        refuse_existing(out, overwrite, "out")
        if sidecar:
            refuse_existing(sidecar_path(out), overwrite, "out")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _input_count(model) -> int:
    """Required positional inputs of ``model.forward`` (1 for image models, 2 for graph models)."""
    import inspect

    return sum(1 for p in inspect.signature(model.forward).parameters.values()
               if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _load_dataset(config):
    """The run's dataset, or ``None`` with the reason when it cannot be read here."""

    try:
        return load_data(config), None
    except ConfigError as exc:
        return None, str(exc)


def _preprocessing(dataset) -> dict[str, Any]:
    return {
        "dataset": dataset.name,
        "formula": "x = (image / max_value - mean[c]) / std[c] per channel c, float32, N x C x H x W",
        "max_value": float(dataset.max_value),
        "mean": [float(v) for v in dataset.mean],
        "std": [float(v) for v in dataset.std],
    }


def _manifestation(static: torch.nn.Module) -> list[dict]:
    return [{"scheme": b.scheme_name, "n_steps": b.n_steps, "units": len(b.units),
             "evaluations": b.evaluations}
            for b in static_blocks(static)]


def export_run(run: str | Path, out: str | Path, *, format: str = "onnx", scheme: str | None = None,
               n_steps: int | None = None, batch_size: int = 1, dynamic_batch: bool = True,
               input_shape: tuple[int, ...] | None = None, overwrite: bool = False, check: bool = False,
               sidecar: bool = True, read_data: bool = True, data_dir: str | None = None) -> ExportResult:
    """Export the checkpoint of ``run`` at ``(scheme, n_steps)`` (default: the trained manifestation).

    Args:
        out: the file to write (``.onnx`` / ``.pt2`` by convention); an existing file (or
            sidecar) is refused unless ``overwrite``.
        format: ``"onnx"`` or ``"torch_export"``.
        batch_size: batch of the example input; with ``dynamic_batch`` any batch runs.
        input_shape: the shape of one input (e.g. ``(1, 28, 28)``); default: the dataset's.
        check: run the written file (ONNX Runtime, or the loaded program) on a fresh input
            and compare with the frozen model in torch; ``max_abs_difference`` reports it.
        read_data: load the run's dataset for the sidecar's normalisation statistics (and
            for the input shape of a dataset outside the built-in table).

    Errors in the options raise `ConfigError` naming the option,
    before anything is written.
    """
    from .. import __version__

    _check_options(format, scheme, n_steps, batch_size, input_shape)
    out = user_path(out)
    _check_out(out, overwrite, sidecar)
    if format == "onnx":  # a missing optional package fails before any work

        require("onnxscript", "ONNX export")
        require("onnx", "ONNX export")
        if check:
            require("onnxruntime", "--check of an ONNX file")
    model, info = load_checkpoint(run)
    if _input_count(model) != 1:
        raise ConfigError(
            f"format: {info.model_name!r} takes {_input_count(model)} inputs (a graph model multiplies by a sparse "
            "adjacency); export handles one dense input, and neither the ONNX exporter nor torch.export handle "
            "sparse tensors here. Use contdepth.export.freeze(model) (and torch.compile) in Python instead"
        )
    if (scheme is not None or n_steps is not None) and not continuous_blocks(model):
        raise ConfigError(f"scheme: model {info.model_name!r} has no ContinuousBlock, so it has one manifestation only")
    if input_shape is not None:
        _check_input_shape(model, tuple(input_shape))
    config = info.train_config()
    if data_dir is not None:
        config = config.replace(data_dir=data_dir)
    notes: list[str] = []
    dataset, why = _load_dataset(config) if read_data else (None, "not read (read_data=False)")
    if input_shape is None:
        if _canonical(config.data) in DATASET_INPUT_SHAPES:
            input_shape = DATASET_INPUT_SHAPES[_canonical(config.data)]
        elif dataset is not None:
            input_shape = (dataset.channels, *dataset.image_size)
        else:
            raise ConfigError(f"input_shape: dataset {config.data!r} is not one of the built-in ones and could not "
                              f"be read ({why}); give the shape of one input, e.g. --input-shape 3 32 32")
    if dataset is None and read_data:
        notes.append(f"dataset not readable here, the sidecar has no normalisation statistics: {why}")
    input_shape = tuple(int(d) for d in input_shape)

    static = freeze(model, scheme, n_steps) if continuous_blocks(model) else model.eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(batch_size, *input_shape, generator=generator)
    try:
        with torch.no_grad():
            logits = static(example)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"input_shape: the model does not accept inputs of shape {input_shape}: {exc}") from exc

    out.parent.mkdir(parents=True, exist_ok=True)  # every checked: make the missing folders above --out
    start = time.perf_counter()
    if format == "onnx":

        export_onnx(static, example, out, dynamic_batch=dynamic_batch, overwrite=overwrite)
    else:

        save_program(export_program(static, example, dynamic_batch=dynamic_batch), out, overwrite=overwrite)
    seconds = time.perf_counter() - start

    difference = None
    if check:
        probe = torch.randn(batch_size + 2 if dynamic_batch else batch_size, *input_shape, generator=generator)
        if format == "onnx":

            difference = onnx_max_abs_difference(out, static, probe)
        else:
            loaded = torch.export.load(str(out)).module()
            with torch.no_grad():
                difference = float((loaded(probe) - static(probe)).abs().max())

    manifestation = _manifestation(static)
    side = None
    if sidecar:
        batch: Any = "batch" if dynamic_batch else batch_size
        description = {
            "format": SIDECAR_FORMAT,
            "format_version": 1,
            "file": out.name,
            "export_format": format,
            "contdepth_version": __version__,
            "torch_version": torch.__version__,
            # options: the constructor's (how the model is built); layout: each block's basis size and
            # trained manifestation as the weights have them (after refinement or compression).
            "source": {"run": str(info.path.parent), "epoch": info.epoch, "model": info.model_name,
                       "options": info.model_options, "layout": layout(model)},
            "manifestation": manifestation,
            "input": {"name": "input", "shape": [batch, *input_shape], "dtype": "float32"},
            "output": {"name": "output", "shape": [batch, int(logits.shape[-1])], "meaning": "class logits"},
            "num_classes": int(logits.shape[-1]),
            "class_names": list(dataset.class_names) if dataset is not None and dataset.class_names else None,
            "preprocessing": _preprocessing(dataset) if dataset is not None else None,
        }
        if difference is not None:
            description["check"] = {"max_abs_difference": difference, "input_shape": list(probe.shape)}

        side = sidecar_path(out)
        atomic_write_text(side, json.dumps(description, indent=1) + "\n")
    return ExportResult(out, side, format, input_shape, manifestation, seconds, difference, notes)

"""``contdepth export``: a run's model frozen at one manifestation, as ONNX or a torch.export program."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..train.config import ConfigError
from . import add_command, options_of, runtime_of
from .options import Export

CLASSES = (Export,)
RUNTIME = {"run": {}, "out": {"required": True, "metavar": "FILE",
                              "help": "file to write (.onnx or .pt2); a sidecar <out>.json goes next to it"},
           "overwrite": {"help": "replace an existing --out and its sidecar"}, "data_dir": {}, "threads": {}}


def add(sub: Any) -> argparse.ArgumentParser:
    return add_command(sub, "export", classes=CLASSES, runtime=RUNTIME,
                       help="export a run's model at one manifestation (ONNX, torch.export)",
                       description="Freeze a checkpoint at one manifestation (theta evaluated at the stage times) "
                                   "and export the static graph, with a JSON sidecar next to it.")


def run(args: argparse.Namespace) -> int:
    options = options_of(args, Export)
    runtime = runtime_of(args, RUNTIME)
    import torch

    from ..export.from_run import CHECK_ATOL, export_run

    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    try:
        result = export_run(runtime.run, runtime.out, format=options.format, scheme=options.scheme,
                            n_steps=options.n_steps, batch_size=options.batch_size,
                            dynamic_batch=not options.static_batch,
                            input_shape=tuple(options.input_shape) if options.input_shape else None,
                            overwrite=runtime.overwrite, check=options.check, read_data=not options.no_data,
                            data_dir=runtime.data_dir)
    except ImportError as exc:  # onnx / onnxscript / onnxruntime not installed
        raise ConfigError(f"format: {exc}") from exc
    steps = ", ".join(f"{m['scheme']} x {m['n_steps']} ({m['units']} weight sets)" for m in result.manifestation)
    print(f"wrote {result.path} ({result.format}, input {list(result.input_shape)}, export {result.export_seconds:.1f} s)"
          + (f"; blocks: {steps}" if steps else ""))
    if result.sidecar is not None:
        print(f"wrote {result.sidecar}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.max_abs_difference is not None:
        ok = result.max_abs_difference <= CHECK_ATOL
        print(f"check: max abs difference from torch {result.max_abs_difference:.3g} "
              f"({'ok' if ok else 'FAILED'}, tolerance {CHECK_ATOL:g})")
        if not ok:
            return 1
    return 0


__all__ = ["CLASSES", "RUNTIME", "add", "run"]

"""ONNX export of a static manifestation, and running the result with ONNX Runtime.

``torch.onnx.export`` (the dynamo-based exporter, which needs ``onnxscript``) turns the
``torch.export`` program of the frozen model into an ONNX graph.  Parameters of an
evaluation-mode graph become initializers, so each stage's ``theta`` is a constant of the
file: the graph holds the unrolled stages and nothing of the depth basis.

``onnx``, ``onnxscript`` and ``onnxruntime`` are optional (``pip install contdepth[onnx]``)
and imported only here, inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..common.files import atomic_write_bytes
from ..solvers import Scheme
from .program import (
    batch_shapes,
    check_example,
    refuse_existing,
    static_model,
    tracing_example,
)

Tensor = torch.Tensor

EXTRA = "pip install contdepth[onnx]"


def require(module: str, purpose: str):
    """Import an optional package, or fail with an ``ImportError`` naming the extra that installs it."""
    try:
        return __import__(module)
    except ImportError as exc:
        raise ImportError(f"{purpose} needs the {module!r} package: {EXTRA}") from exc


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes about absent torchvision operators (they do not apply)
    and torch's own deprecation notice from inside ``torch.export`` (not ours to act on)."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: nn.Module, example: Tensor, path: str | Path, *, scheme: str | Scheme | None = None,
                n_steps: int | None = None, dynamic_batch: bool = True, overwrite: bool = False,
                opset_version: int | None = None, input_name: str = "input", output_name: str = "output") -> Path:
    """Write the ONNX graph of ``model`` at the manifestation ``(scheme, n_steps)`` to ``path``.

    Args:
        model: any model; ContinuousBlocks are frozen first ([`freeze`][contdepth.export.freeze]).
        example: an input batch fixing the input's shape (but the batch) and dtype.
        dynamic_batch: the batch dimension is named ``batch`` and any size runs; ``False``
            fixes it to ``example``'s.
        overwrite: replace an existing file; otherwise an existing ``path`` is refused.
        opset_version: the ONNX opset (the exporter's default when ``None``).

    The file is self-contained (weights inside, no external data) and written atomically.
    """

    require("onnxscript", "ONNX export")
    require("onnx", "ONNX export")
    path = Path(path)
    refuse_existing(path, overwrite)
    example = tracing_example(check_example(example), dynamic_batch)
    static = static_model(model, scheme, n_steps)
    with _quiet_exporter(), torch.no_grad():
        onnx_program = torch.onnx.export(
            static, (example,), input_names=[input_name], output_names=[output_name],
            dynamic_shapes=batch_shapes(dynamic_batch), opset_version=opset_version, dynamo=True, verbose=False,
        )
    atomic_write_bytes(path, onnx_program.model_proto.SerializeToString())
    return path


def onnx_session(path: str | Path, *, threads: int | None = None):
    """An ONNX Runtime CPU inference session for the file at ``path``.

    ``threads`` sets the intra-op thread count (ONNX Runtime's default uses every core).
    """
    ort = require("onnxruntime", "running an ONNX file")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(session_or_path, x: Tensor | np.ndarray) -> np.ndarray:
    """The graph's (first) output for the input ``x``."""
    session = session_or_path if hasattr(session_or_path, "run") else onnx_session(session_or_path)
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return session.run(None, {session.get_inputs()[0].name: array})[0]


def onnx_max_abs_difference(path: str | Path, model: nn.Module, x: Tensor) -> float:
    """``max |onnxruntime(x) - model(x)|``: how well the file reproduces ``model`` on ``x``.

    ``model`` is run as it is (put it in evaluation mode, at the exported manifestation).
    """
    with torch.no_grad():
        expected = model(x).detach().cpu().numpy()
    got = run_onnx(path, x)
    if got.shape != expected.shape:
        raise ValueError(f"path: the ONNX output has shape {got.shape}, the model's {expected.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))

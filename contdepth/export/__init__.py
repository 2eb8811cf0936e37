"""Deployment: static manifestations of a model and their export (ONNX, ``torch.export``).

    frozen = freeze(model, "rk4", 4)                 # theta evaluated once at the stage times
    export_onnx(model, example, "m.onnx", scheme="rk4", n_steps=4)
    program = export_program(model, example, scheme="rk4", n_steps=4)
    export_run("runs/fm", "m.onnx", scheme="rk4", n_steps=4, check=True)   # what `contdepth export` does

``onnx``, ``onnxscript`` and ``onnxruntime`` are needed only by the ONNX functions
(``pip install contdepth[onnx]``) and are imported inside them.
"""

from .from_run import (
    DATASET_INPUT_SHAPES,
    FORMATS,
    ExportResult,
    export_run,
    sidecar_path,
)
from .onnx import export_onnx, onnx_max_abs_difference, onnx_session, run_onnx
from .program import export_program, save_program, static_model
from .static import StaticBlock, freeze, static_blocks

__all__ = [
    "DATASET_INPUT_SHAPES", "FORMATS", "ExportResult", "StaticBlock", "export_onnx", "export_program", "export_run",
    "freeze", "onnx_max_abs_difference", "onnx_session", "run_onnx", "save_program", "sidecar_path",
    "static_blocks", "static_model",
]

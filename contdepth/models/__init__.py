"""Complete models by name: ``contdepth.models.create("continuousnet", num_classes=10, ...)``.

The registry (`registry`) names every model without importing torch; the modules that build
them (`image`, `architectures`, `graph`) and the classes below are imported on first use
(PEP 562), so listing the models (``contdepth train --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .registry import (
    KINDS,
    MODELS,
    available_models,
    create,
    created_name,
    is_graph_model,
    model_kind,
    model_options,
    register_model,
)

_SUBMODULES = ("architectures", "generation", "gpt", "gpt_growth", "graph", "growth", "image", "image_growth", "layers",
               "registry")
_NAMES: dict[str, str] = {
    **dict.fromkeys(("FractalUnit", "PolyRate", "PolyUnit", "RevUnit", "UnitStage"), "architectures"),
    **dict.fromkeys(("CGNN", "GCDE", "GCN", "CGNNRate"), "graph"),
    **dict.fromkeys(("ContinuousMLP", "ContinuousNet", "ResNet", "ResidualStage"), "image"),
    **dict.fromkeys(("GPT", "TransformerLayer", "CausalSelfAttention", "MLP", "continuous_from_layers"), "gpt"),
    **dict.fromkeys(("KVCache", "generate"), "generation"),
}

__all__ = ["FractalUnit", "PolyRate", "PolyUnit", "RevUnit", "UnitStage", "CGNN", "CGNNRate", "ContinuousMLP", "ContinuousNet", "GCDE", "GCN", "ResNet", "ResidualStage",
           "GPT", "TransformerLayer", "CausalSelfAttention", "MLP", "continuous_from_layers", "KVCache", "generate",
           "KINDS", "model_kind",
           "MODELS", "available_models", "create", "created_name", "is_graph_model", "model_options", "register_model"]


def __getattr__(name: str) -> Any:
    """Import a model module, or the one defining a public class, when it is first named."""
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


if TYPE_CHECKING:
    from . import architectures, graph, image, layers
    from .architectures import FractalUnit, PolyRate, PolyUnit, RevUnit, UnitStage
    from .generation import KVCache, generate
    from .graph import CGNN, GCDE, GCN, CGNNRate
    from .image import ContinuousMLP, ContinuousNet, ResNet, ResidualStage

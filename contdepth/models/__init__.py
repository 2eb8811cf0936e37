"""Complete models by name: ``contdepth.models.create("continuousnet", num_classes=10, ...)``."""

from . import architectures, graph, image  # noqa: F401  (registers the graph and image models)
from .architectures import FractalUnit, PolyRate, PolyUnit, RevUnit, UnitStage
from .graph import CGNN, GCDE, GCN, CGNNRate
from .image import ContinuousMLP, ContinuousNet, ResNet, ResidualStage
from .registry import available_models, create, created_name, is_graph_model, model_options, register_model

__all__ = ["FractalUnit", "PolyRate", "PolyUnit", "RevUnit", "UnitStage", "CGNN", "CGNNRate", "ContinuousMLP", "ContinuousNet", "GCDE", "GCN", "ResNet", "ResidualStage",
           "available_models", "create", "created_name", "is_graph_model", "model_options", "register_model"]

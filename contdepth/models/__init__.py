"""Complete models by name: ``contdepth.models.create("continuousnet", num_classes=10, ...)``."""

from . import image  # noqa: F401  (registers the image models)
from .image import ContinuousMLP, ContinuousNet, ResNet, ResidualStage
from .registry import available_models, create, model_options, register_model

__all__ = ["ContinuousMLP", "ContinuousNet", "ResNet", "ResidualStage", "available_models", "create",
           "model_options", "register_model"]

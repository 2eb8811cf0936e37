"""Neural-network building blocks with depth-dependent weights."""

from .block import CoefficientMap, ContinuousBlock, reset_template_parameters
from .model_tools import apply_layout, continuous_blocks, layout, manifest, project, refine

__all__ = [
    "CoefficientMap", "ContinuousBlock", "apply_layout", "continuous_blocks", "layout", "manifest", "project",
    "refine", "reset_template_parameters",
]

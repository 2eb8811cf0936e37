"""Neural-network building blocks with depth-dependent weights."""

from .adaptive import AdaptiveDepth, AdaptiveRecord, adaptive_depth
from .block import CoefficientMap, ContinuousBlock, reset_template_parameters
from .graph import GCNLayer, GCNRate, normalized_adjacency
from .model_tools import apply_layout, continuous_blocks, layout, manifest, project, refine

__all__ = [
    "AdaptiveDepth", "AdaptiveRecord", "adaptive_depth", "CoefficientMap", "ContinuousBlock", "GCNLayer", "GCNRate",
    "apply_layout", "continuous_blocks", "layout", "manifest", "normalized_adjacency", "project", "refine",
    "reset_template_parameters",
]

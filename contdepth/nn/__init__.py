"""Neural-network building blocks with depth-dependent weights."""

from .adaptive import AdaptiveDepth, AdaptiveRecord, adaptive_depth
from .block import CoefficientMap, ContinuousBlock, reset_template_parameters
from .graph import GCNLayer, GCNRate, feature_dropout, normalized_adjacency, propagate
from .model_tools import apply_layout, continuous_blocks, layout, manifest, project, refine

__all__ = [
    "AdaptiveDepth", "AdaptiveRecord", "adaptive_depth", "CoefficientMap", "ContinuousBlock", "GCNLayer", "GCNRate",
    "apply_layout", "continuous_blocks", "feature_dropout", "layout", "manifest", "normalized_adjacency", "project",
    "propagate", "refine",
    "reset_template_parameters",
]

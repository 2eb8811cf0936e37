"""Neural-network building blocks with depth-dependent weights."""

from .adaptive import AdaptiveDepth, AdaptiveRecord, adaptive_depth
from .block import ContinuousBlock
from .depth_function import CoefficientMap, DepthFunction, reset_template_parameters
from .norm_state import NormState
from .rate import BlockRate
from .temporary import Temporary
from .terms import Terms, has_terms
from .coefficient_tree import CoefficientTree
from .convert import units_to_block
from .convert_terms import layers_to_block
from .coupling import Coupling, is_partitioned
from .repeated import is_repeated
from .stage_plan import PlanCache, StagePlan, StageValues
from .integration import Adaptive, FixedGrid, Integration
from .template_call import TemplateCall
from .grow import GROWTH_METHODS, GrownModel, ParameterSource
from .graph import GCNLayer, GCNRate, feature_dropout, normalized_adjacency, propagate
from .model_tools import (
    MAX_N_BASIS, MAX_N_STEPS, apply_layout, check_layout, check_layout_entries, continuous_blocks, layout, manifest,
    named_continuous_blocks, project, refine,
)

__all__ = [
    "GROWTH_METHODS", "GrownModel", "ParameterSource",
    "AdaptiveDepth", "AdaptiveRecord", "adaptive_depth", "CoefficientMap", "ContinuousBlock", "Coupling", "is_partitioned", "is_repeated", "GCNLayer", "GCNRate",
    "MAX_N_BASIS", "MAX_N_STEPS", "apply_layout", "check_layout", "check_layout_entries", "continuous_blocks",
    "feature_dropout", "layout", "manifest", "named_continuous_blocks", "normalized_adjacency", "project", "propagate", "refine",
    "reset_template_parameters", "units_to_block", "layers_to_block", "BlockRate", "DepthFunction", "NormState", "PlanCache", "Temporary", "Terms", "has_terms", "Adaptive", "FixedGrid", "Integration", "StagePlan", "StageValues", "TemplateCall", "CoefficientTree",
]

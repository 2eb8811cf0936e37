"""Neural-network building blocks with depth-dependent weights."""

from .block import CoefficientMap, ContinuousBlock, reset_template_parameters

__all__ = ["CoefficientMap", "ContinuousBlock", "reset_template_parameters"]

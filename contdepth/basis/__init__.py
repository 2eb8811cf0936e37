"""Depth bases for weights that vary with depth: evaluate, refine, project, breakpoints."""

from .bases import (
    DepthBasis, Legendre, PiecewiseConstant, PiecewiseLinear, apply_matrix, available_bases,
    make_basis, projection_matrix,
)

__all__ = [
    "DepthBasis", "Legendre", "PiecewiseConstant", "PiecewiseLinear", "apply_matrix",
    "available_bases", "make_basis", "projection_matrix",
]

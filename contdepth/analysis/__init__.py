"""Analysis of trained and analytic continuous-depth models (convergence orders, sweeps)."""

from .convergence import fit_order

__all__ = ["fit_order"]

"""contdepth: continuous-in-depth neural networks on PyTorch.

A residual block ``x + f(x)`` is one forward-Euler step of ``dx/dt = f(theta(t), x)``;
contdepth makes the continuous view first-class: depth-dependent weights in a basis,
any explicit Runge-Kutta or multistep scheme, exact refinement and projection.
"""

from . import analysis, basis, common, data, experiment, export, models, nn, solvers, train
from .common import OptionError
from .analysis import ManifestationReport, analyze_manifestations, compress, resnet_as_continuous
from .basis import DepthBasis, Legendre, PiecewiseConstant, PiecewiseLinear, available_bases, make_basis
from .experiment import ExperimentSpec, run_experiment, write_report
from .export import StaticBlock, freeze
from .nn import AdaptiveDepth, CoefficientMap, ContinuousBlock, Coupling, adaptive_depth
from .solvers import (
    AdamsBashforth, BackwardEuler, ButcherTableau, FractalJoin, IntegrationStats, LMResNetScheme, NeumannSeries,
    RevNetCoupling, MaxStepsExceeded, RungeKutta, Scheme,
    Solution, StageTime, StepController, available_schemes, get_scheme, get_tableau, integrate, integrate_adaptive,
    register_scheme,
)

__version__ = "0.1.0"

__all__ = [
    "AdaptiveDepth", "ManifestationReport", "StaticBlock", "adaptive_depth", "analyze_manifestations", "compress",
    "freeze", "resnet_as_continuous", "ExperimentSpec", "run_experiment", "write_report",
    "AdamsBashforth", "ButcherTableau", "CoefficientMap", "ContinuousBlock", "DepthBasis", "IntegrationStats",
    "LMResNetScheme", "Legendre", "MaxStepsExceeded", "PiecewiseConstant", "PiecewiseLinear", "RungeKutta",
    "Scheme", "StageTime", "available_bases", "available_schemes", "get_scheme", "get_tableau", "integrate",
    "integrate_adaptive", "make_basis", "register_scheme", "__version__", "OptionError", "Solution", "StepController",
    "BackwardEuler", "Coupling", "FractalJoin", "NeumannSeries", "RevNetCoupling",
]

"""contdepth: continuous-in-depth neural networks on PyTorch.

A residual block ``x + f(x)`` is one forward-Euler step of ``dx/dt = f(theta(t), x)``;
contdepth makes the continuous view first-class: depth-dependent weights in a basis,
any explicit Runge-Kutta or multistep scheme, exact refinement and projection.

The subpackages and the names below are imported on first use (``contdepth.nn``,
``contdepth.ContinuousBlock``), not by ``import contdepth``: the command line
(``contdepth --help``) and a program that needs one part do not pay for torch, the
analysis, ONNX or TensorBoard until they use them (see ``benchmarks/startup.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: The subpackages, each imported when first named (``contdepth.analysis``).
SUBPACKAGES = ("analysis", "basis", "common", "data", "experiment", "export", "models", "nn", "solvers", "train")

#: Every public name of the package and the subpackage that defines it.
_NAMES: dict[str, str] = {
    "OptionError": "common",
    **dict.fromkeys(("ManifestationReport", "analyze_manifestations", "compress", "resnet_as_continuous"), "analysis"),
    **dict.fromkeys(("DepthBasis", "Legendre", "PiecewiseConstant", "PiecewiseLinear", "available_bases",
                     "make_basis", "register_basis"), "basis"),
    **dict.fromkeys(("ExperimentSpec", "run_experiment", "write_report"), "experiment"),
    **dict.fromkeys(("StaticBlock", "freeze"), "export"),
    **dict.fromkeys(("GROWTH_METHODS", "Growth", "grow"), "train"),
    **dict.fromkeys(("AdaptiveDepth", "CoefficientMap", "ContinuousBlock", "Coupling", "adaptive_depth",
                     "layers_to_block", "units_to_block"), "nn"),
    **dict.fromkeys(("AdamsBashforth", "BackwardEuler", "ButcherTableau", "FractalJoin", "IntegrationStats",
                     "LMResNetScheme", "NeumannSeries", "RevNetCoupling", "MaxStepsExceeded", "RungeKutta", "Scheme",
                     "Solution", "StageTime", "StepController", "available_schemes", "get_scheme", "get_tableau",
                     "integrate", "integrate_adaptive", "register_scheme"), "solvers"),
}

__all__ = [
    "AdaptiveDepth", "ManifestationReport", "StaticBlock", "adaptive_depth", "analyze_manifestations", "compress",
    "freeze", "resnet_as_continuous", "ExperimentSpec", "run_experiment", "write_report",
    "AdamsBashforth", "ButcherTableau", "CoefficientMap", "ContinuousBlock", "DepthBasis", "IntegrationStats",
    "LMResNetScheme", "Legendre", "MaxStepsExceeded", "PiecewiseConstant", "PiecewiseLinear", "RungeKutta",
    "Scheme", "StageTime", "available_bases", "available_schemes", "get_scheme", "get_tableau", "integrate",
    "integrate_adaptive", "make_basis", "register_basis", "register_scheme", "__version__", "OptionError", "Solution",
    "StepController",
    "BackwardEuler", "Coupling", "FractalJoin", "NeumannSeries", "RevNetCoupling", "units_to_block",
    "layers_to_block", "GROWTH_METHODS", "Growth", "grow",
]


def __getattr__(name: str) -> Any:
    """Import a subpackage, or the subpackage defining a public name, when it is first used (PEP 562)."""
    if name in SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)  # the import binds it on the package
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(SUBPACKAGES))


if TYPE_CHECKING:  # what type checkers and editors see: the same names, imported eagerly
    from . import analysis, basis, common, data, experiment, export, models, nn, solvers, train
    from .analysis import ManifestationReport, analyze_manifestations, compress, resnet_as_continuous
    from .basis import (
        DepthBasis, Legendre, PiecewiseConstant, PiecewiseLinear, available_bases, make_basis, register_basis,
    )
    from .common import OptionError
    from .experiment import ExperimentSpec, run_experiment, write_report
    from .export import StaticBlock, freeze
    from .nn import (
        AdaptiveDepth, CoefficientMap, ContinuousBlock, Coupling, adaptive_depth, layers_to_block, units_to_block,
    )
    from .train import GROWTH_METHODS, Growth, grow
    from .solvers import (
        AdamsBashforth, BackwardEuler, ButcherTableau, FractalJoin, IntegrationStats, LMResNetScheme,
        MaxStepsExceeded, NeumannSeries, RevNetCoupling, RungeKutta, Scheme, Solution, StageTime, StepController,
        available_schemes, get_scheme, get_tableau, integrate, integrate_adaptive, register_scheme,
    )

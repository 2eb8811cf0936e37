"""Integration schemes: validated Butcher tableaux, multistep methods, one fixed-grid and one adaptive driver.

A scheme supplies ``init`` and ``step``; [`solve_fixed_grid`][contdepth.solvers.solve_fixed_grid] owns the loop, the saved
outputs, checkpointing and the statistics, and [`solve_adaptive`][contdepth.solvers.solve_adaptive] reuses the same
Runge-Kutta step under a [`StepController`][contdepth.solvers.StepController].  `integrate` and
[`integrate_adaptive`][contdepth.solvers.integrate_adaptive] are the user-facing entry points; both return a [`Solution`][contdepth.solvers.Solution].
"""

from .adaptive import StepController, adaptive_rate_stage, solve_adaptive
from .fixed_grid import reconstruct_fixed_grid, solve_fixed_grid
from .fractal import FractalJoin
from .gradients import (
    GRADIENTS, RECONSTRUCTION_TOLERANCE, ReconstructionWarning, check_adjoint_scheme, check_gradient, check_reversible,
    reversible_schemes,
    solve_adjoint, solve_adjoint_adaptive, solve_reversible,
)
from .gradient_modes import (
    Adjoint, Backprop, Checkpoint, GradientMode, ReconstructionLog, Reversible, gradient_mode,
)
from .implicit import BackwardEuler, NeumannSeries, NotConverged
from .integrate import check_n_steps, check_rate_output, integrate, integrate_adaptive
from .multistep import AdamsBashforth, LMResNetScheme
from .partitioned import RevNetCoupling, split_halves
from .reversible import AsynchronousLeapfrog, ReversibleHeun
from .properties import SchemeProperties, format_scheme_table, scheme_properties, scheme_table
from .registry import SCHEMES, available_schemes, get_scheme, get_tableau, register_scheme
from .runge_kutta import RungeKutta, rk_step
from .scheme import Carry, Scheme, StageSchedule, StageTime
from .solution import IntegrationStats, MaxStepsExceeded, Solution
from .splitting import Splitting, lie_trotter, strang, strang_midpoint
from .tableau import ButcherTableau
from .term import FunctionTerm, SumTerm, Term, as_term

__all__ = [
    "Adjoint", "Backprop", "Checkpoint", "GradientMode", "ReconstructionLog", "Reversible", "gradient_mode",
    "FunctionTerm", "SumTerm", "Term", "as_term", "Splitting", "lie_trotter", "strang", "strang_midpoint",
    "GRADIENTS", "RECONSTRUCTION_TOLERANCE", "ReconstructionWarning", "check_adjoint_scheme", "check_gradient",
    "check_reversible",
    "reversible_schemes", "solve_adjoint", "solve_adjoint_adaptive", "solve_reversible", "AsynchronousLeapfrog",
    "ReversibleHeun",
    "AdamsBashforth", "BackwardEuler", "FractalJoin", "RevNetCoupling", "reconstruct_fixed_grid", "split_halves", "NeumannSeries", "NotConverged", "ButcherTableau", "Carry", "IntegrationStats", "LMResNetScheme", "MaxStepsExceeded",
    "RungeKutta", "Scheme", "Solution", "StageSchedule", "StageTime", "StepController", "adaptive_rate_stage",
    "SCHEMES", "available_schemes", "check_n_steps", "check_rate_output", "get_scheme", "get_tableau", "integrate",
    "integrate_adaptive", "register_scheme", "SchemeProperties", "format_scheme_table", "scheme_properties",
    "scheme_table", "rk_step", "solve_adaptive", "solve_fixed_grid",
]

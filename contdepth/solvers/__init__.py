"""Integration schemes: validated Butcher tableaux, multistep methods, fixed and adaptive grids."""

from .integrate import IntegrationStats, MaxStepsExceeded, check_n_steps, integrate, integrate_adaptive
from .multistep import AdamsBashforth, LMResNetScheme
from .registry import available_schemes, get_scheme, get_tableau, register_scheme
from .runge_kutta import RungeKutta, rk_step
from .scheme import Scheme, StageSchedule, StageTime
from .tableau import ButcherTableau

__all__ = [
    "AdamsBashforth", "ButcherTableau", "IntegrationStats", "LMResNetScheme", "MaxStepsExceeded",
    "RungeKutta", "Scheme", "StageSchedule", "StageTime", "available_schemes", "check_n_steps",
    "get_scheme", "get_tableau", "integrate", "integrate_adaptive", "register_scheme", "rk_step",
]

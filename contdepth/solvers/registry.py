"""Schemes by name: the built-ins and whatever users register.

The table is `SCHEMES`, a `contdepth.common.registry.Registry` (the shape every registry of
contdepth has: plain names, ``overwrite=True`` to replace one, one-line errors with the choices).
"""

from __future__ import annotations

from ..common.registry import Registry

from .fractal import FractalJoin
from .implicit import BackwardEuler, NeumannSeries
from .multistep import AdamsBashforth
from .partitioned import RevNetCoupling
from .reversible import AsynchronousLeapfrog, ReversibleHeun
from .runge_kutta import RungeKutta
from .scheme import Scheme
from .splitting import lie_trotter, strang, strang_midpoint
from .tableau import ButcherTableau
from .tableaux import BUILTIN_TABLEAUX, HEUN, KUTTA3, RK4

#: Every scheme by name (a `Registry`); the built-ins are registered below, on import.
SCHEMES: Registry[Scheme] = Registry("scheme")


def register_scheme(scheme: Scheme | ButcherTableau, name: str | None = None, *, overwrite: bool = False) -> Scheme:
    """Make ``scheme`` (or a tableau, wrapped as a Runge-Kutta scheme) available by name.

    Registering a name twice is refused unless ``overwrite=True``, so a typo cannot
    silently replace a built-in method.
    """
    if isinstance(scheme, ButcherTableau):
        scheme = RungeKutta(scheme)
    if not isinstance(scheme, Scheme):
        raise TypeError(f"scheme: expected a Scheme or ButcherTableau, got {type(scheme).__name__}")
    return SCHEMES.register(scheme.name if name is None else name, scheme, overwrite=overwrite)


def available_schemes() -> list[str]:
    """Names accepted wherever a ``scheme`` argument is taken."""
    return SCHEMES.names()


def get_scheme(scheme: str | Scheme | ButcherTableau) -> Scheme:
    """Resolve a scheme name, tableau or scheme object to a [`Scheme`][contdepth.solvers.Scheme]."""
    if isinstance(scheme, Scheme):
        return scheme
    if isinstance(scheme, ButcherTableau):
        return RungeKutta(scheme)
    if isinstance(scheme, str):
        return SCHEMES.get(scheme)
    raise TypeError(f"scheme: expected a name, Scheme or ButcherTableau, got {type(scheme).__name__}")


def get_tableau(scheme: str | ButcherTableau | Scheme) -> ButcherTableau:
    """The Butcher tableau behind a Runge-Kutta scheme (multistep schemes have none)."""
    if isinstance(scheme, ButcherTableau):
        return scheme
    resolved = get_scheme(scheme)
    if not isinstance(resolved, RungeKutta):
        raise ValueError(f"scheme: {resolved.name!r} is not a Runge-Kutta method and has no tableau")
    return resolved.tableau


for _tableau in BUILTIN_TABLEAUX:
    register_scheme(_tableau)
# Adams-Bashforth weights: Hairer, Norsett & Wanner, Solving ODEs I, Table III.1.1.
register_scheme(AdamsBashforth("ab2", ["3/2", "-1/2"], starter=HEUN, reference="Bashforth & Adams (1883)"))
register_scheme(AdamsBashforth("ab3", ["23/12", "-16/12", "5/12"], starter=KUTTA3, reference="Bashforth & Adams (1883)"))
register_scheme(
    AdamsBashforth("ab4", ["55/24", "-59/24", "37/24", "-9/24"], starter=RK4, reference="Bashforth & Adams (1883)")
)
# PolyNet's poly-2 unit read as a truncated Neumann series of backward Euler (Lu et al. 2018, Table 1),
# and the backward Euler step it approximates.
register_scheme(NeumannSeries(2))
register_scheme(BackwardEuler())
# FractalNet's mean join (a second-order Runge-Kutta scheme) and RevNet's coupling (forward
# Euler of a coupled two-half system), both read by Lu et al. (2018), Table 1.
register_scheme(FractalJoin())
register_scheme(RevNetCoupling())
# Reversible integrators: backward passes rebuild the states instead of storing them.
register_scheme(ReversibleHeun())
register_scheme(AsynchronousLeapfrog())
# Splittings of a field of two terms (Lu et al. 2019): the transformer layer, Macaron's, and Strang's
# with second-order sub-steps.
register_scheme(lie_trotter())
register_scheme(strang())
register_scheme(strang_midpoint())

"""What a scheme is, in numbers: order, cost, stability on the negative real axis, error constant.

``contdepth schemes`` prints [`scheme_table`][contdepth.solvers.scheme_table]; [`scheme_properties`][contdepth.solvers.scheme_properties] gives one scheme's
[`SchemeProperties`][contdepth.solvers.SchemeProperties]. For ``x' = lambda x`` and ``z = h lambda`` a one-step scheme gives
``x+ = R(z) x`` and a multistep one the recurrence of its characteristic polynomial
``rho(zeta) - z sigma(zeta)``; the *stability interval* is the largest ``r`` with every
``z`` in ``[-r, 0]`` stable (``|R(z)| <= 1``, or all roots ``|zeta| <= 1``).

The *modified equation* (the equation a scheme integrates more accurately than the one it
was given, Warming & Hyett 1974) is shown for the linear multistep schemes, as Lu et al.
(2018) derive it for LM-ResNet: expanding ``sum_j alpha_j u(t + j h) = h sum_j beta_j f``
in Taylor series gives ``u' + C h^p u^(p+1) + ... = f`` (Euler: ``u' + h/2 u'' = f``);
for the LM-ResNet scheme ``(1 + k) u' + (1 - k) h/2 u'' = f``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .fractal import FractalJoin
from .implicit import BackwardEuler, NeumannSeries
from .multistep import AdamsBashforth, LMResNetScheme
from .partitioned import RevNetCoupling
from .splitting import Splitting
from .reversible import AsynchronousLeapfrog, ReversibleHeun
from .registry import available_schemes, get_scheme
from .runge_kutta import RungeKutta
from .scheme import Scheme


@dataclass(frozen=True)
class SchemeProperties:
    """One scheme's numbers (``None`` where a property does not apply or is unknown).

    Attributes:
        name, kind: the registered name and what sort of scheme it is.
        stages: rate evaluations per step (``None``: an iteration, data-dependent).
        order: the classical order.
        stability_interval: ``r`` of the interval ``[-r, 0]`` of absolute stability
            (``math.inf``: the whole negative axis).
        error_constant: Runge-Kutta: ``A^(p+1)``, the 2-norm of the principal error
            coefficients; multistep: ``|C_(p+1)| / sigma(1)``.
        modified_equation: the leading terms of the modified equation, as text.
        reference: where the scheme comes from.
    """

    name: str
    kind: str
    stages: int | None
    order: int
    stability_interval: float | None
    error_constant: float | None
    modified_equation: str | None
    reference: str


def _polynomial_interval(coefficients: tuple[Fraction, ...]) -> float:
    """Largest ``r`` with ``|R(z)| <= 1`` on ``[-r, 0]`` for the polynomial ``R`` (lowest power first)."""
    c = [float(v) for v in coefficients]
    if len(c) <= 2 and c[-1] == 0:
        return math.inf
    value = lambda z: abs(np.polyval(c[::-1], z))  # noqa: E731
    return _first_crossing(lambda z: value(z) <= 1 + 1e-12)


def _first_crossing(stable, limit: float = 50.0, grid: int = 20_000) -> float:
    """The first ``r`` on a fine grid of ``[0, limit]`` where ``stable(-r)`` fails, refined by bisection."""
    previous = 0.0
    for r in np.linspace(0.0, limit, grid)[1:]:
        if not stable(-r):
            low, high = previous, float(r)
            for _ in range(60):
                mid = (low + high) / 2
                low, high = (mid, high) if stable(-mid) else (low, mid)
            return low
        previous = float(r)
    return math.inf


def _multistep_interval(alpha: list[float], beta: list[float]) -> float:
    """Stability interval of ``sum alpha_j x_{n+j} = z sum beta_j x_{n+j}`` (root condition, roots <= 1)."""
    def stable(z: float) -> bool:
        polynomial = [a - z * b for a, b in zip(alpha, beta)]  # lowest power first
        roots = np.roots(polynomial[::-1])
        return bool(np.all(np.abs(roots) <= 1 + 1e-9))

    return _first_crossing(stable, limit=10.0)


def _recursion_interval(scheme: Scheme) -> float:
    """Stability interval of a scheme with a two-part carry, from its step applied to ``x' = lambda x``.

    The step is linear in the carry for a linear rate, so its matrix ``M(z)`` (``z = h lambda``)
    comes from stepping the unit carries; ``z`` is stable when the spectral radius is at most 1.
    """
    import torch

    schedule = scheme.schedule(3)

    def stable(z: float) -> bool:
        rate = lambda stage, x: z * x  # noqa: E731  (h = 1)
        columns = []
        for j in range(2):
            unit = tuple(torch.tensor([float(i == j)], dtype=torch.float64) for i in range(2))
            columns.append(torch.cat(scheme.step(rate, unit, 1, schedule.steps[1], 1.0)))
        radius = max(abs(np.linalg.eigvals(torch.stack(columns, 1).numpy())))
        return bool(radius <= 1 + 1e-9)

    r = _first_crossing(stable, limit=5.0, grid=2_000)
    return 0.0 if r < 1e-6 else r  # a root leaves the unit disc at once: no interval (r = 0)


def _adams_bashforth_coefficients(scheme: AdamsBashforth) -> tuple[list[Fraction], list[Fraction]]:
    """``alpha_j``, ``beta_j`` for ``j = 0..k`` (``x_{n+k} - x_{n+k-1} = h sum beta f``)."""
    k = scheme.order
    alpha = [Fraction(0)] * (k + 1)
    alpha[k], alpha[k - 1] = Fraction(1), Fraction(-1)
    beta = [Fraction(0)] * (k + 1)
    for j, b in enumerate(scheme.beta):  # beta_0 multiplies f_{n+k-1}, beta_1 f_{n+k-2} ...
        beta[k - 1 - j] = b
    return alpha, beta


def error_constant(alpha: list[Fraction], beta: list[Fraction]) -> tuple[int, Fraction]:
    """``(p, C_(p+1) / sigma(1))`` of a linear multistep method of order ``p`` (Hairer, Norsett & Wanner I, III.2)."""
    sigma_one = sum(beta, Fraction(0))

    def c(q: int) -> Fraction:
        first = sum((a * Fraction(j) ** q for j, a in enumerate(alpha)), Fraction(0)) / math.factorial(q)
        second = sum((b * Fraction(j) ** (q - 1) for j, b in enumerate(beta)), Fraction(0)) / math.factorial(q - 1)
        return first - second

    q = 1
    while c(q) == 0 and q < 20:
        q += 1
    return q - 1, c(q) / sigma_one


def _leading(constant: Fraction, p: int) -> str:
    """``u' + C h^p u^(p+1) = f`` with the sign written out."""
    sign = "-" if constant < 0 else "+"
    return f"u' {sign} {abs(float(constant)):.4g} {_h(p)}{_power(p + 1)} = f"


def _power(q: int) -> str:
    return {1: "u'", 2: "u''", 3: "u'''"}.get(q, f"u^({q})")


def _h(q: int) -> str:
    return "" if q == 0 else ("h " if q == 1 else f"h^{q} ")


def lm_resnet_modified_equation(k: float) -> str:
    """``(1 + k) u' + (1 - k) h/2 u'' = f``: Lu et al. (2018), the LM-ResNet scheme around ``t_n``."""
    return f"{1 + k:.4g} u' + {(1 - k) / 2:.4g} h u'' = f"


def scheme_properties(scheme: str | Scheme, *, lm_k: float | None = None) -> SchemeProperties:
    """The [`SchemeProperties`][contdepth.solvers.SchemeProperties] of a scheme (a registered name or an object)."""
    resolved = get_scheme(scheme)
    name = resolved.name
    if isinstance(resolved, RungeKutta):
        tableau = resolved.tableau
        kind = "embedded RK pair" if tableau.is_embedded else "explicit Runge-Kutta"
        equation = None
        if tableau.stages == 1:  # forward Euler is also the one-step Adams method: x+ - x = h f
            p, constant = error_constant([Fraction(-1), Fraction(1)], [Fraction(1), Fraction(0)])
            equation = _leading(constant, p)
        return SchemeProperties(name, kind, tableau.stages, tableau.order,
                                _polynomial_interval(tableau.stability_polynomial()),
                                tableau.principal_error_norm(), equation, tableau.reference)
    if isinstance(resolved, AdamsBashforth):
        alpha, beta = _adams_bashforth_coefficients(resolved)
        p, constant = error_constant(alpha, beta)
        equation = _leading(constant, p)
        return SchemeProperties(name, f"Adams-Bashforth, {resolved.order}-step", 1, p,
                                _multistep_interval([float(a) for a in alpha], [float(b) for b in beta]),
                                abs(float(constant)), equation, resolved.reference)
    if isinstance(resolved, LMResNetScheme):
        k = float(resolved.k) if lm_k is None and isinstance(resolved.k, (int, float)) else lm_k
        if k is None:
            raise ValueError("lm_k: the scheme's k is a tensor or per step; give the k to describe (lm_k=...)")
        alpha, beta = [-k, -(1 - k), 1.0], [0.0, 1.0, 0.0]
        return SchemeProperties(f"{name} (k = {k:g})", "LM-ResNet two-step", 1, 1,
                                _multistep_interval(alpha, beta), None, lm_resnet_modified_equation(k),
                                "Lu, Zhong, Li & Dong (2018)")
    if isinstance(resolved, FractalJoin):  # Heun's method in the join's (Shu-Osher) form
        tableau = resolved.tableau
        return SchemeProperties(name, "FractalNet join (Heun, Shu-Osher form)", tableau.stages, tableau.order,
                                _polynomial_interval(tableau.stability_polynomial()),
                                tableau.principal_error_norm(), None, resolved.reference)
    if isinstance(resolved, RevNetCoupling):
        # Each stage evaluates one half's rate; the scalar test equation x' = lambda x has no
        # two-half coupling, so there is no stability interval on the real axis to give.
        return SchemeProperties(name, "partitioned, reversible (2 half-rates)", 2, 1, None, None, None,
                                resolved.reference)
    if isinstance(resolved, Splitting):
        # Each evaluation is one term's; the scalar test equation has no terms to split, so no
        # stability interval on the real axis is given.
        return SchemeProperties(name, f"splitting of {resolved.terms} terms ({resolved.sub_step} sub-steps)",
                                resolved.evaluations(1), resolved.order, None, None, None, resolved.reference)
    if isinstance(resolved, (ReversibleHeun, AsynchronousLeapfrog)):
        kind = "reversible (y, z)" if isinstance(resolved, ReversibleHeun) else "reversible leapfrog (x, v)"
        return SchemeProperties(name, kind, len(resolved.stage_offsets(2)[1]), resolved.order,
                                _recursion_interval(resolved), None, None, resolved.reference)
    if isinstance(resolved, NeumannSeries):
        polynomial = tuple(Fraction(1) for _ in range(resolved.terms + 1))  # 1 + z + ... + z^terms
        return SchemeProperties(name, f"Neumann series of backward Euler, {resolved.terms} terms", resolved.terms, 1,
                                _polynomial_interval(polynomial), None, None, resolved.reference)
    if isinstance(resolved, BackwardEuler):  # x+ - x = h f(x+)
        p, constant = error_constant([Fraction(-1), Fraction(1)], [Fraction(0), Fraction(1)])
        return SchemeProperties(name, "implicit (fixed-point iteration)", None, p, math.inf, abs(float(constant)),
                                _leading(constant, p), resolved.reference)
    return SchemeProperties(name, type(resolved).__name__, None, resolved.order, None, None, None,
                            getattr(resolved, "reference", ""))


def scheme_table(names: list[str] | None = None, *, lm_k: float = -0.05) -> list[SchemeProperties]:
    """Every registered scheme's properties, and the LM-ResNet scheme at ``k = lm_k``."""
    rows = [scheme_properties(n) for n in (names or available_schemes())]
    if names is None:
        rows.append(scheme_properties(LMResNetScheme(lm_k)))
    return rows


def format_scheme_table(rows: list[SchemeProperties]) -> str:
    """A plain-text table of [`scheme_table`][contdepth.solvers.scheme_table] (what ``contdepth schemes`` prints)."""
    def show(value: float | None, digits: int = 4) -> str:
        if value is None:
            return "-"
        return "inf" if value == math.inf else f"{value:.{digits}g}"

    header = ("scheme", "kind", "evals/step", "order", "stable on [-r, 0]: r", "error constant", "modified equation")
    body = [(r.name, r.kind, "iter." if r.stages is None else str(r.stages), str(r.order),
             show(r.stability_interval), show(r.error_constant), r.modified_equation or "-") for r in rows]
    widths = [max(len(str(row[i])) for row in (header, *body)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

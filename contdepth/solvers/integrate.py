"""The two entry points: :func:`integrate` (fixed grid) and :func:`integrate_adaptive`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable

import torch

from .registry import get_scheme, get_tableau
from .runge_kutta import rk_step
from .scheme import Rate, Scheme, StageTime, Tensor, as_fraction
from .tableau import ButcherTableau

Field = Callable[[float, Tensor], Tensor]


@dataclass(frozen=True)
class IntegrationStats:
    """What an integration cost.

    Attributes:
        n_steps: accepted steps.
        n_rejected: rejected steps (always 0 on a fixed grid).
        n_evaluations: calls of the rate function.
        step_ends: the time at the end of each accepted step.
    """

    n_steps: int
    n_evaluations: int
    n_rejected: int = 0
    step_ends: tuple[float, ...] = ()


class MaxStepsExceeded(RuntimeError):
    """Raised when an adaptive integration needs more than ``max_steps`` attempts."""


def check_n_steps(n_steps: object, name: str = "n_steps") -> int:
    """Validate a step count: an integer >= 1."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int):
        raise ValueError(f"{name}: must be an integer >= 1, got {n_steps!r}")
    if n_steps < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {n_steps}")
    return n_steps


def _check_state(x0: object) -> Tensor:
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0: expected a torch.Tensor, got {type(x0).__name__}")
    if not x0.is_floating_point():
        raise ValueError(f"x0: the state must be a floating-point tensor, got {x0.dtype}")
    return x0


def check_rate_output(out: object, x: Tensor, name: str) -> Tensor:
    """``out`` if it is a rate for state ``x``: a tensor of ``x``'s shape and dtype.

    Why: ``torch.add`` broadcasts shapes and promotes dtypes, so a rate of shape ``(1,)``
    or of dtype float64 for a float32 state would not fail; the state would silently
    change shape or precision. Costs three cheap comparisons per evaluation. A lower-precision
    rate is accepted under autocast, where that is the point.
    """
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name}: must return a tensor like the state; got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"{name}: output shape {tuple(out.shape)} differs from its input shape "
                         f"{tuple(x.shape)}; a rate function must map a state to a rate of the same shape")
    if out.dtype != x.dtype and not _autocast_allows(out, x):
        raise ValueError(f"{name}: output dtype {out.dtype} differs from its input dtype {x.dtype}; a rate "
                         "function must keep the state's dtype (else the state silently changes precision)")
    return out


def _autocast_allows(out: Tensor, x: Tensor) -> bool:
    """Under autocast a rate may come back in the autocast dtype (e.g. bfloat16 for a float32 state)."""
    device = out.device.type
    return torch.is_autocast_enabled(device) and out.dtype == torch.get_autocast_dtype(device)


def _field_rate(f: Field) -> Rate:
    """Adapt a plain ``f(t, x)`` to the ``rate(stage, x)`` contract, checking what it returns."""

    def rate(stage: StageTime, x: Tensor) -> Tensor:
        return check_rate_output(f(stage.t, x), x, "f")

    return rate


def integrate(
    f: Field,
    x0: Tensor,
    *,
    scheme: str | Scheme | ButcherTableau = "rk4",
    n_steps: int,
    t0: float = 0.0,
    t1: float = 1.0,
    return_path: bool = False,
    checkpoint: bool = False,
    return_stats: bool = False,
):
    """Integrate ``dx/dt = f(t, x)`` from ``t0`` to ``t1`` in ``n_steps`` equal steps.

    Args:
        f: the right-hand side; called as ``f(t, x)`` with a float ``t``.
        x0: initial state, any shape and floating dtype, on any device.
        scheme: a registered name (see :func:`available_schemes`), a tableau or a scheme.
        n_steps: number of steps, any integer >= 1.
        return_path: also return the states before the first and after every step,
            stacked into shape ``(n_steps + 1, *x0.shape)``.
        checkpoint: keep only step inputs for backward and recompute each step's
            internals there (activation checkpointing): less memory, more time.
        return_stats: also return an :class:`IntegrationStats`.

    Returns:
        The final state; with ``return_path`` and/or ``return_stats`` a tuple
        ``(state, [path], [stats])`` in that order.
    """
    resolved = get_scheme(scheme)
    n_steps = check_n_steps(n_steps)
    x0 = _check_state(x0)
    if t0 == t1:
        raise ValueError(f"t1: the interval is empty (t0 = t1 = {t0})")
    schedule = resolved.schedule(n_steps, t0, t1)
    state, path = resolved.integrate(_field_rate(f), x0, schedule, return_path=return_path, checkpoint=checkpoint)
    if not (return_path or return_stats):
        return state
    out: tuple = (state,)
    if return_path:
        out += (path,)
    if return_stats:
        span = (t1 - t0) / n_steps
        ends = tuple(t0 + span * (n + 1) for n in range(n_steps))
        out += (IntegrationStats(n_steps, resolved.evaluations(n_steps), 0, ends),)
    return out


# --- adaptive --------------------------------------------------------------------

_SAFETY, _FACTOR_MIN, _FACTOR_MAX = 0.9, 0.2, 10.0


def _rms(v: Tensor, scale: Tensor) -> float:
    """Scaled RMS norm; step-size control is not differentiated through (detached)."""
    return float(torch.sqrt(torch.mean((v.detach() / scale.detach()) ** 2)))


def _error_ratio(error: Tensor, x: Tensor, x_new: Tensor, rtol: float, atol: float) -> float:
    return _rms(error, atol + rtol * torch.maximum(x.detach().abs(), x_new.detach().abs()))


def _check_tolerance(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_finite_state(x0: Tensor, name: str) -> None:
    if not bool(torch.isfinite(x0).all()):
        raise ValueError(f"{name}: the initial state holds NaN/inf values; adaptive step control needs a finite state")


def _check_finite_rate(value: Tensor, t: Fraction, name: str) -> None:
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name}: returned non-finite values (NaN/inf) at t = {float(t):.6g}; the adaptive error "
                         "estimate is then not finite, which no step size can fix")


def adaptive_rate_stage(exact: Fraction, left: bool, breakpoint: bool = False) -> StageTime:
    """A stage time for an adaptive step (``index`` is -1: there is no fixed grid).

    A stage read from the left *at a breakpoint* gives plain ``f(t, x)`` fields the
    float just below the breakpoint, so they too see a time inside the step (exact
    consumers such as ContinuousBlock use ``exact`` and ``left`` instead).
    """
    t = float(exact)
    if left and breakpoint:
        t = math.nextafter(t, -math.inf)
    return StageTime(t, exact, left, -1)


def integrate_adaptive_rate(
    rate: Rate,
    x0: Tensor,
    *,
    tableau: ButcherTableau,
    rtol: float,
    atol: float,
    t0: Fraction,
    t1: Fraction,
    breakpoints: tuple[Fraction, ...] = (),
    max_steps: int = 10_000,
    first_step: float | None = None,
    return_path: bool = False,
    state_name: str = "x0",
    rate_name: str = "f",
) -> tuple[Tensor, Tensor | None, IntegrationStats]:
    """Adaptive integration of ``rate(stage, x)`` with exact step bookkeeping.

    Step boundaries are kept as exact rationals so that a step clipped to a breakpoint
    ends *exactly* there; stages at a step's end read depth functions from the left.

    Non-finite values: a non-finite error estimate rejects the step and shrinks it (a
    too large step may overflow), unless the rate at the step's start is itself NaN/inf,
    which no step size can fix: then a ``ValueError`` names ``rate_name`` and the time.
    A NaN/inf initial state is refused naming ``state_name``.  These checks run only
    when a norm is already non-finite, so a healthy integration pays nothing for them.
    """
    s = tableau.stages
    c = tableau.c
    e = tableau._b_error_float
    q = min(tableau.order, tableau.embedded_order or 1)
    exponent = -1.0 / (q + 1)
    ends = sorted(set(bp for bp in breakpoints if t0 < bp < t1)) + [t1]
    evaluations = accepted = rejected = 0

    x = x0
    t = t0
    path = [x0] if return_path else None
    step_ends: list[float] = []
    first_rate = rate(adaptive_rate_stage(t0, False), x0)
    evaluations += 1
    span = float(t1 - t0)
    if first_step is None:
        scale = atol + rtol * x0.abs()
        d0, d1 = _rms(x0, scale), _rms(first_rate, scale)
        if not math.isfinite(d0):
            _check_finite_state(x0, state_name)
        if not math.isfinite(d1):
            _check_finite_rate(first_rate, t0, rate_name)
        overflow = not (math.isfinite(d0) and math.isfinite(d1))  # finite values, squares too large
        h0 = 1e-6 * span if overflow or d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, float(ends[0] - t0))
        t_probe = t0 + Fraction(h0)
        x_probe = torch.add(x0, first_rate, alpha=h0)
        at_end = t_probe >= ends[0]
        f_probe = rate(adaptive_rate_stage(t_probe, at_end, at_end and ends[0] != t1), x_probe)
        evaluations += 1
        d2 = _rms(f_probe - first_rate, scale) / h0
        if overflow or not math.isfinite(d2):
            h = h0
        elif max(d1, d2) <= 1e-15:
            h = min(100 * h0, max(1e-6 * span, h0 * 1e-3))
        else:
            h = min(100 * h0, (0.01 / max(d1, d2)) ** (1.0 / (tableau.order + 1)))
    else:
        if not (isinstance(first_step, (int, float)) and first_step > 0):
            raise ValueError(f"first_step: must be a number > 0, got {first_step!r}")
        _check_finite_state(x0, state_name)
        h = float(first_step)

    segment = 0
    ratio = 0.0
    while t < t1:
        if accepted + rejected >= max_steps:
            raise MaxStepsExceeded(
                f"max_steps: {max_steps} steps attempted ({accepted} accepted, {rejected} rejected) "
                f"and only reached t = {float(t):.6g} of [{float(t0):.6g}, {float(t1):.6g}]; "
                "loosen rtol/atol or raise max_steps"
            )
        segment_end = ends[segment]
        t_end = t + Fraction(h)
        # Snap to the segment end when the step would reach it or leave a sliver.
        clipped = t_end >= segment_end or float(segment_end - t_end) < 1e-10 * span
        if clipped:
            t_end = segment_end
        h_step = float(t_end - t)
        if h_step <= 4 * math.ulp(max(abs(float(t)), 1.0)):
            why = ("the error estimate is not finite there: the rate returns NaN/inf just after t or overflows"
                   if not math.isfinite(ratio) else "the problem may be stiff")
            raise MaxStepsExceeded(f"rtol/atol: step size underflow at t = {float(t):.6g}; {why}")
        ends_on_breakpoint = t_end == segment_end and segment_end != t1
        stages = tuple(adaptive_rate_stage(t + ci * (t_end - t), ci >= 1, ends_on_breakpoint) for ci in c)
        x_new, k = rk_step(rate, x, h_step, tableau, stages, first_rate=first_rate)
        evaluations += s - (1 if first_rate is not None else 0)
        error = None
        for j, ej in enumerate(e):
            if ej != 0.0:
                error = k[j] * (h_step * ej) if error is None else torch.add(error, k[j], alpha=h_step * ej)
        ratio = 0.0 if error is None else _error_ratio(error, x, x_new, rtol, atol)
        if math.isfinite(ratio) and ratio <= 1.0:
            accepted += 1
            t, x = t_end, x_new
            step_ends.append(float(t))
            if path is not None:
                path.append(x)
            at_breakpoint = t == segment_end
            if at_breakpoint:
                segment += 1
            # FSAL: the last stage was f(t_end, x_new), read from the left; reuse it
            # unless t_end is a breakpoint, where the right-hand value may differ.
            first_rate = k[-1] if (tableau.fsal and not at_breakpoint) else None
            if first_rate is None and t < t1:
                first_rate = rate(adaptive_rate_stage(t, False), x)
                evaluations += 1
            factor = _FACTOR_MAX if ratio == 0.0 else min(_FACTOR_MAX, _SAFETY * ratio**exponent)
            # A step shortened to reach a segment end says little about the next one:
            # keep the untested proposal if it was larger.
            h = max(h, h_step * factor) if clipped else h_step * factor
        else:
            rejected += 1
            if not math.isfinite(ratio):
                _check_finite_rate(k[0], t, rate_name)  # k[0] = rate(t, x): no smaller step avoids it
            factor = _FACTOR_MIN if not math.isfinite(ratio) else max(_FACTOR_MIN, _SAFETY * ratio**exponent)
            h = h_step * factor
    stats = IntegrationStats(accepted, evaluations, rejected, tuple(step_ends))
    return x, (torch.stack(path) if path is not None else None), stats


def integrate_adaptive(
    f: Field,
    x0: Tensor,
    *,
    scheme: str | ButcherTableau = "dopri5",
    rtol: float,
    atol: float,
    t0: float = 0.0,
    t1: float = 1.0,
    breakpoints: Iterable[float | Fraction] = (),
    max_steps: int = 10_000,
    first_step: float | None = None,
    return_path: bool = False,
):
    """Integrate ``dx/dt = f(t, x)`` with an embedded pair and error control.

    Steps are accepted when the RMS of the error estimate, scaled by
    ``atol + rtol * max(|x_n|, |x_{n+1}|)``, is at most 1.  No step crosses a
    ``breakpoint`` (where ``f`` may jump, e.g. a piecewise-constant depth basis); a
    step ends exactly on it instead.  The whole tensor shares one step size.

    Returns:
        ``(state, stats)``, or ``(state, path, stats)`` with ``return_path``; the path
        holds the initial state and the state after each accepted step, and
        ``stats.step_ends`` their times.

    Raises:
        MaxStepsExceeded: more than ``max_steps`` steps were attempted.
    """
    tableau = get_tableau(scheme)
    if not tableau.is_embedded:
        raise ValueError(
            f"scheme: {tableau.name!r} has no error estimate; adaptive stepping needs an embedded pair "
            "such as 'dopri5' or 'bosh3'"
        )
    x0 = _check_state(x0)
    rtol, atol = _check_tolerance(rtol, "rtol"), _check_tolerance(atol, "atol")
    if rtol == 0 and atol == 0:
        raise ValueError("rtol: rtol and atol cannot both be 0")
    max_steps = check_n_steps(max_steps, "max_steps")
    t0f, t1f = as_fraction(t0, "t0"), as_fraction(t1, "t1")
    if not t1f > t0f:
        raise ValueError(f"t1: adaptive integration needs t1 > t0, got t0={t0}, t1={t1}")
    bps = tuple(as_fraction(bp, "breakpoints") for bp in breakpoints)
    for bp in bps:
        if not t0f <= bp <= t1f:
            raise ValueError(f"breakpoints: {float(bp)} lies outside [t0, t1] = [{t0}, {t1}]")
    state, path, stats = integrate_adaptive_rate(
        _field_rate(f), x0, tableau=tableau, rtol=rtol, atol=atol, t0=t0f, t1=t1f,
        breakpoints=bps, max_steps=max_steps, first_step=first_step, return_path=return_path,
    )
    return (state, path, stats) if return_path else (state, stats)

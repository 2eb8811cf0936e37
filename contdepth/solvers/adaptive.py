"""The adaptive driver: an embedded Runge-Kutta pair with error control, exact step bookkeeping.

It reuses [`rk_step`][contdepth.solvers.rk_step], the same step the fixed grid takes; what differs
is the [`StepController`][contdepth.solvers.StepController] that chooses each step's size.  Step boundaries are exact
rationals, so a step clipped to a breakpoint (where the rate may jump) or to a requested
output time ends *exactly* there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from ..common.validate import check_int, check_number
from .runge_kutta import rk_step
from .scheme import Rate, StageTime, Tensor
from .solution import IntegrationStats, MaxStepsExceeded, Solution
from .tableau import ButcherTableau


@dataclass(frozen=True)
class StepController:
    """How the adaptive driver picks step sizes (an integral controller, as in Hairer & Wanner II.4).

    After a step with error ratio ``r`` (RMS of the error over ``atol + rtol * |x|``; accepted
    when ``r <= 1``) the next size is ``h * clip(safety * r**(-1/(q+1)), factor_min, factor_max)``,
    where ``q`` is the lower order of the pair.

    Attributes:
        safety: the fraction of the optimal factor taken, in ``(0, 1]``.
        factor_min: the smallest factor after a rejection or a step, in ``(0, 1)``.
        factor_max: the largest growth factor, ``> 1``.
        first_step: the first step's size; ``None`` picks it from the rate at ``t0``
            (Hairer, Norsett & Wanner, Solving ODEs I, Sec. II.4, "starting step size").
        max_steps: the most step attempts (accepted and rejected) before
            [`MaxStepsExceeded`][contdepth.solvers.MaxStepsExceeded].
    """

    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    first_step: float | None = None
    max_steps: int = 10_000

    def __post_init__(self) -> None:
        check_number(self.safety, "controller.safety", low=0.0, high=1.0, low_open=True)
        check_number(self.factor_min, "controller.factor_min", low=0.0, high=1.0, low_open=True, high_open=True)
        check_number(self.factor_max, "controller.factor_max", low=1.0, low_open=True)
        if self.first_step is not None:
            check_number(self.first_step, "first_step", low=0.0, low_open=True)
        check_int(self.max_steps, "max_steps", low=1)


def _rms(v: Tensor, scale: Tensor) -> float:
    """Scaled RMS norm; step-size control is not differentiated through (detached)."""
    return float(torch.sqrt(torch.mean((v.detach() / scale.detach()) ** 2)))


def _error_ratio(error: Tensor, x: Tensor, x_new: Tensor, rtol: float, atol: float) -> float:
    return _rms(error, atol + rtol * torch.maximum(x.detach().abs(), x_new.detach().abs()))


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


def solve_adaptive(
    rate: Rate,
    x0: Tensor,
    *,
    tableau: ButcherTableau,
    rtol: float,
    atol: float,
    t0: Fraction,
    t1: Fraction,
    breakpoints: tuple[Fraction, ...] = (),
    t_eval: tuple[Fraction, ...] | None = None,
    return_path: bool = False,
    controller: StepController = StepController(),
    state_name: str = "x0",
    rate_name: str = "f",
) -> Solution:
    """Adaptive integration of ``rate(stage, x)`` from ``t0`` to ``t1 > t0``.

    No step crosses a ``breakpoint`` (the rate may jump there: a step ends on it and the
    next starts with a fresh rate evaluation) or a time in ``t_eval`` (the step ends on it
    and the state there is saved; the rate is continuous there, so FSAL reuse continues).
    Stages at a step's end read depth functions from the left.

    Non-finite values: a non-finite error estimate rejects the step and shrinks it (a
    too large step may overflow), unless the rate at the step's start is itself NaN/inf,
    which no step size can fix: then a ``ValueError`` names ``rate_name`` and the time.
    A NaN/inf initial state is refused naming ``state_name``.  These checks run only
    when a norm is already non-finite, so a healthy integration pays nothing for them.
    """
    s = tableau.stages
    c = tableau.c
    e = tableau.b_error_float
    q = min(tableau.order, tableau.embedded_order or 1)
    exponent = -1.0 / (q + 1)
    safety, factor_min, factor_max = controller.safety, controller.factor_min, controller.factor_max
    max_steps = controller.max_steps
    span_exact = t1 - t0
    for v in t_eval or ():
        if not t0 <= v <= t1:
            raise ValueError(f"t_eval: {float(v)!r} lies outside [t0, t1] = [{float(t0)}, {float(t1)}]")
    jumps = {bp for bp in breakpoints if t0 < bp < t1}
    # A requested time within a sliver of a breakpoint, t0 or t1 means that point: stepping onto
    # both would leave a step of ~1e-17 that no step size can take.
    anchors = sorted(jumps | {t0, t1})
    sliver = 1e-10 * float(span_exact)
    save_at: dict[Fraction, Fraction] = {}  # requested time -> the step end it is read at
    for v in t_eval or ():
        near = min(anchors, key=lambda a: abs(a - v))
        if float(abs(near - v)) >= sliver:
            near = v
            anchors.append(v)  # a later requested time a sliver away is read here too
        save_at[v] = near
    saves = set(save_at.values())
    ends = sorted(jumps | {t for t in saves if t0 < t < t1}) + [t1]
    evaluations = accepted = rejected = 0

    x = x0
    t = t0
    saved: dict[Fraction, Tensor] = {}
    if t0 in saves:
        saved[t0] = x0
    path = [x0] if return_path else None
    step_ends: list[float] = []
    first_rate = rate(adaptive_rate_stage(t0, False), x0)
    evaluations += 1
    span = float(t1 - t0)
    if controller.first_step is None:
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
        f_probe = rate(adaptive_rate_stage(t_probe, at_end, at_end and ends[0] in jumps), x_probe)
        evaluations += 1
        d2 = _rms(f_probe - first_rate, scale) / h0
        if overflow or not math.isfinite(d2):
            h = h0
        elif max(d1, d2) <= 1e-15:
            h = min(100 * h0, max(1e-6 * span, h0 * 1e-3))
        else:
            h = min(100 * h0, (0.01 / max(d1, d2)) ** (1.0 / (tableau.order + 1)))
    else:
        _check_finite_state(x0, state_name)
        h = float(controller.first_step)

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
        ends_on_jump = t_end == segment_end and segment_end in jumps
        stages = tuple(adaptive_rate_stage(t + ci * (t_end - t), ci >= 1, ends_on_jump) for ci in c)
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
            if t in saves:
                saved[t] = x
            at_jump = t in jumps
            if t == segment_end:
                segment += 1
            # FSAL: the last stage was f(t_end, x_new), read from the left; reuse it
            # unless t_end is a breakpoint, where the right-hand value may differ.
            first_rate = k[-1] if (tableau.fsal and not at_jump) else None
            if first_rate is None and t < t1:
                first_rate = rate(adaptive_rate_stage(t, False), x)
                evaluations += 1
            factor = factor_max if ratio == 0.0 else min(factor_max, safety * ratio**exponent)
            # A step shortened to reach a segment end says little about the next one:
            # keep the untested proposal if it was larger.
            h = max(h, h_step * factor) if clipped else h_step * factor
        else:
            rejected += 1
            if not math.isfinite(ratio):
                _check_finite_rate(k[0], t, rate_name)  # k[0] = rate(t, x): no smaller step avoids it
            factor = factor_min if not math.isfinite(ratio) else max(factor_min, safety * ratio**exponent)
            h = h_step * factor
    stats = IntegrationStats(accepted, evaluations, rejected, tuple(step_ends))
    if t_eval is not None:
        return Solution(x, stats, tuple(float(v) for v in t_eval), torch.stack([saved[save_at[v]] for v in t_eval]))
    if path is not None:
        return Solution(x, stats, (float(t0), *step_ends), torch.stack(path))
    return Solution(x, stats)

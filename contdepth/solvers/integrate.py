"""The two entry points: `integrate` (fixed grid) and [`integrate_adaptive`][contdepth.solvers.integrate_adaptive].

Both check their arguments, adapt a plain ``f(t, x)`` to the ``rate(stage, x)`` contract,
and hand over to a driver ([`solve_fixed_grid`][contdepth.solvers.solve_fixed_grid],
[`solve_adaptive`][contdepth.solvers.solve_adaptive]); both always return a [`Solution`][contdepth.solvers.Solution].
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, Iterable, Sequence

import torch

from ..common.errors import OptionError
from ..common.validate import check_int, check_number
from .adaptive import StepController, solve_adaptive
from .fixed_grid import solve_fixed_grid
from .gradient_modes import Checkpoint, gradient_mode
from .gradients import RECONSTRUCTION_TOLERANCE, module_parameters, solve_adjoint_adaptive
from .registry import get_scheme, get_tableau
from .scheme import Rate, Scheme, StageTime, Tensor, as_fraction, snap_to_grid
from .solution import IntegrationStats, Solution
from .term import FunctionTerm, SumTerm
from .tableau import ButcherTableau

Field = Callable[[float, Tensor], Tensor]


def check_n_steps(n_steps: object, name: str = "n_steps") -> int:
    """Validate a step count: an integer >= 1."""
    return check_int(n_steps, name, low=1)


def _check_state(x0: object) -> Tensor:
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0: expected a torch.Tensor, got {type(x0).__name__}")
    if not x0.is_floating_point():
        raise OptionError("x0", f"the state must be a floating-point tensor, got {x0.dtype}")
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


def _field_rate(f: Field | Sequence[Field]) -> Rate:
    """Adapt a plain ``f(t, x)`` (or a sequence of them: their sum, term by term) to the ``rate(stage, x)``
    contract, checking what it returns."""
    if isinstance(f, (list, tuple)):
        if not f or not all(callable(g) for g in f):
            raise OptionError("f", "a field given as terms must be a non-empty sequence of functions f(t, x)")
        return SumTerm([_field_rate(g) for g in f])
    if not callable(f):
        raise OptionError("f", f"must be a function f(t, x) or a sequence of them, got {type(f).__name__}")

    def rate(stage: StageTime, x: Tensor) -> Tensor:
        return check_rate_output(f(stage.t, x), x, "f")

    return rate


def _requested_times(t_eval: Iterable[float | Fraction] | Tensor, t0: Fraction, t1: Fraction) -> tuple[Fraction, ...]:
    """``t_eval`` as exact times, strictly monotone in the direction of integration, inside ``[t0, t1]``."""
    if isinstance(t_eval, torch.Tensor):
        if t_eval.dim() != 1:
            raise OptionError("t_eval", f"must be a 1-D sequence of times, got a tensor of shape {tuple(t_eval.shape)}")
        t_eval = t_eval.tolist()
    if isinstance(t_eval, (str, bytes)) or not isinstance(t_eval, Iterable):
        raise OptionError("t_eval", f"must be a sequence of times, got {type(t_eval).__name__}")
    times = tuple(as_fraction(v, "t_eval") for v in t_eval)
    if not times:
        raise OptionError("t_eval", "must hold at least one time")
    low, high = min(t0, t1), max(t0, t1)
    for v in times:
        if not low <= v <= high:
            raise OptionError("t_eval", f"{float(v)!r} lies outside [t0, t1] = [{float(t0)}, {float(t1)}]")
    forward = t1 > t0
    for a, b in zip(times, times[1:]):
        if not (a < b if forward else a > b):
            raise OptionError("t_eval", f"times must be strictly {'increasing' if forward else 'decreasing'} "
                                        f"from t0 to t1, got {float(a)!r} then {float(b)!r}")
    return times


def integrate(
    f: Field,
    x0: Tensor,
    *,
    scheme: str | Scheme | ButcherTableau = "rk4",
    n_steps: int,
    t0: float = 0.0,
    t1: float = 1.0,
    t_eval: Iterable[float] | Tensor | None = None,
    return_path: bool = False,
    checkpoint: bool = False,
    gradient: str = "backprop",
    params: Iterable[Tensor] | None = None,
    reconstruction_tolerance: float = RECONSTRUCTION_TOLERANCE,
) -> Solution:
    """Integrate ``dx/dt = f(t, x)`` from ``t0`` to ``t1`` in ``n_steps`` equal steps.

    Args:
        f: the right-hand side; called as ``f(t, x)`` with a float ``t``. A sequence of such
            functions ``(f_1, ..., f_m)`` is a field that is their sum: a splitting scheme
            (``lie_trotter``, ``strang``, ``strang_midpoint``) advances one at a time, every
            other scheme integrates the sum.
        x0: initial state, any shape and floating dtype, on any device.
        scheme: a registered name (see [`available_schemes`][contdepth.solvers.available_schemes]), a tableau or a scheme.
        n_steps: number of steps, any integer >= 1.
        t_eval: times in ``[t0, t1]``, monotone from ``t0`` to ``t1``, at which to save the
            state (like the ``t`` of torchdiffeq's ``odeint``). A time inside a step splits
            that step in two, so every saved state is a state of the integration, not an
            interpolation; a multistep scheme needs times on its grid. A time within
            rounding of a grid point (1e-12 of the interval; for a float32 tensor, its
            precision) is that grid point.
        return_path: save the state at ``t0`` and after every step.
        checkpoint: the same as ``gradient="checkpoint"`` (kept as an alias).
        gradient: how backward gets its gradients (see `contdepth.solvers.gradients`):
            ``"backprop"`` (store every activation), ``"checkpoint"`` (store each step's
            input, recompute the step), ``"reversible"`` (store nothing; rebuild the states
            backwards; reversible schemes only, the same gradient as backprop to round-off)
            or ``"adjoint"`` (solve the continuous adjoint backwards on the same grid; the
            ODE's gradient, which differs from the discrete one at the scheme's order).
        params: for ``"reversible"`` and ``"adjoint"``, the tensors ``f`` uses whose gradients
            are wanted (an ``nn.Module`` ``f`` supplies its own parameters). Tensors ``f``
            closes over that are not listed get no gradient from these modes.
        reconstruction_tolerance: ``"reversible"``: the largest relative error of the rebuilt
            input before the gradient is recomputed by backprop, with a warning.

    Returns:
        A [`Solution`][contdepth.solvers.Solution]: ``.state`` at ``t1``, ``.stats``, and with ``t_eval`` or
        ``return_path`` the saved times ``.ts`` and states ``.ys`` (shape ``(len(ts), *x0.shape)``).
    """
    resolved = get_scheme(scheme)
    n_steps = check_n_steps(n_steps)
    x0 = _check_state(x0)
    t0f, t1f = as_fraction(t0, "t0"), as_fraction(t1, "t1")
    if t0f == t1f:
        raise OptionError("t1", f"the interval is empty (t0 = t1 = {t0})")
    if t_eval is not None and return_path:
        raise OptionError("t_eval", "give t_eval or return_path, not both (return_path saves every step)")
    rate = _field_rate(f)
    mode = gradient_mode(gradient, checkpoint, tolerance=reconstruction_tolerance)
    if mode.reevaluates:  # reversible, adjoint: the final state only
        if t_eval is not None or return_path:
            raise OptionError("t_eval", f"saved states (t_eval, return_path) need gradient='backprop' or "
                                        f"'checkpoint'; gradient={mode.name!r} differentiates the final state only")
        mode.check(resolved)
        schedule = resolved.schedule(n_steps, t0, t1)
        state = mode.solve(resolved, FunctionTerm(rate, module_parameters(f, params)), x0, schedule).state
        return Solution(state, IntegrationStats(n_steps, resolved.evaluations(n_steps), 0, schedule.step_ends))
    checkpoint = isinstance(mode, Checkpoint)
    if t_eval is None:
        schedule = resolved.schedule(n_steps, t0, t1)
        save_at = frozenset(range(n_steps + 1)) if return_path else None
        return solve_fixed_grid(resolved, rate, x0, schedule, save_at=save_at, checkpoint=checkpoint)
    # 0.1 means the grid point 1/10; a float32 tensor's times are as exact as float32 is
    tolerance = 1e-12
    if isinstance(t_eval, torch.Tensor) and t_eval.is_floating_point():
        tolerance = max(tolerance, 4 * torch.finfo(t_eval.dtype).eps)
    times = _requested_times(t_eval, t0f, t1f)
    uniform = resolved.schedule(n_steps, t0f, t1f)
    times = tuple(snap_to_grid(t, uniform.grid, tolerance) for t in times)
    schedule = resolved.split_schedule(n_steps, t0f, t1f, times)
    position = {t: i for i, t in enumerate(schedule.grid)}
    solution = solve_fixed_grid(resolved, rate, x0, schedule, save_at=frozenset(position[t] for t in times),
                                checkpoint=checkpoint)
    return solution


def integrate_adaptive(
    f: Field,
    x0: Tensor,
    *,
    scheme: str | ButcherTableau = "dopri5",
    rtol: float = 1e-3,
    atol: float = 1e-6,
    t0: float = 0.0,
    t1: float = 1.0,
    t_eval: Iterable[float] | Tensor | None = None,
    breakpoints: Iterable[float | Fraction] = (),
    controller: StepController | None = None,
    max_steps: int | None = None,
    first_step: float | None = None,
    return_path: bool = False,
    gradient: str = "backprop",
    params: Iterable[Tensor] | None = None,
) -> Solution:
    """Integrate ``dx/dt = f(t, x)`` with an embedded pair and error control.

    Steps are accepted when the RMS of the error estimate, scaled by
    ``atol + rtol * max(|x_n|, |x_{n+1}|)``, is at most 1.  No step crosses a
    ``breakpoint`` (where ``f`` may jump, e.g. a piecewise-constant depth basis; compare
    diffrax's ``jump_ts``) or a time in ``t_eval``: a step ends exactly on it.  The whole
    tensor shares one step size.

    Args:
        rtol: relative tolerance (default ``1e-3``).
        atol: absolute tolerance (default ``1e-6``). The defaults are SciPy's ``solve_ivp``
            ones: about three correct digits, what a network's float32 activations use.
            torchdiffeq's ``1e-7`` / ``1e-9`` sit at float32's rounding (``2**-23`` is
            1.2e-7), so on a float32 state the error estimate is partly rounding, and they
            cost several times the steps (13 instead of 3 on a smooth scalar test) for
            digits a float32 network does not read. diffrax has no defaults. For a reference
            solution pass tighter values and a float64 state.
        t_eval: times in ``[t0, t1]``, increasing, at which to save the state.
        controller: the step-size controller ([`StepController`][contdepth.solvers.StepController]: safety factor,
            factor bounds, first step, max steps).  ``max_steps`` and ``first_step``
            are shorthands that override the controller's values.
        return_path: save ``t0`` and the end of every accepted step.
        gradient: ``"backprop"`` (through the accepted steps) or ``"adjoint"``: the backward
            pass solves the adjoint system adaptively from ``t1`` to ``t0`` with the same
            pair, tolerances and breakpoints; ``params`` as for `integrate`.

    Returns:
        A [`Solution`][contdepth.solvers.Solution]; ``stats.step_ends`` holds every accepted step's end.

    Raises:
        MaxStepsExceeded: more than ``max_steps`` steps were attempted.
    """
    tableau = get_tableau(scheme)
    if not tableau.is_embedded:
        raise OptionError("scheme", f"{tableau.name!r} has no error estimate; adaptive stepping needs an embedded "
                                    "pair such as 'dopri5' or 'bosh3'")
    x0 = _check_state(x0)
    rtol = check_number(rtol, "rtol", low=0.0)
    atol = check_number(atol, "atol", low=0.0)
    if rtol == 0 and atol == 0:
        raise OptionError("rtol", "rtol and atol cannot both be 0")
    if controller is None:
        controller = StepController()
    elif not isinstance(controller, StepController):
        raise TypeError(f"controller: expected a StepController, got {type(controller).__name__}")
    if max_steps is not None or first_step is not None:
        controller = StepController(
            controller.safety, controller.factor_min, controller.factor_max,
            controller.first_step if first_step is None else first_step,
            controller.max_steps if max_steps is None else max_steps,
        )
    t0f, t1f = as_fraction(t0, "t0"), as_fraction(t1, "t1")
    if not t1f > t0f:
        raise OptionError("t1", f"adaptive integration needs t1 > t0, got t0={t0}, t1={t1}")
    bps = tuple(as_fraction(bp, "breakpoints") for bp in breakpoints)
    for bp in bps:
        if not t0f <= bp <= t1f:
            raise OptionError("breakpoints", f"{float(bp)} lies outside [t0, t1] = [{t0}, {t1}]")
    if t_eval is not None and return_path:
        raise OptionError("t_eval", "give t_eval or return_path, not both (return_path saves every step)")
    times = None if t_eval is None else _requested_times(t_eval, t0f, t1f)
    if gradient not in ("backprop", "adjoint"):
        raise OptionError("gradient", f"adaptive integration supports 'backprop' or 'adjoint', got {gradient!r}")
    if gradient == "adjoint":
        if times is not None or return_path:
            raise OptionError("t_eval", "saved states (t_eval, return_path) need gradient='backprop'; "
                                        "gradient='adjoint' differentiates the final state only")
        state, stats = solve_adjoint_adaptive(_field_rate(f), x0, module_parameters(f, params), tableau=tableau,
                                              rtol=rtol, atol=atol, t0=t0f, t1=t1f, breakpoints=bps,
                                              controller=controller)
        return Solution(state, stats[0])
    return solve_adaptive(
        _field_rate(f), x0, tableau=tableau, rtol=rtol, atol=atol, t0=t0f, t1=t1f, breakpoints=bps,
        t_eval=times, return_path=return_path, controller=controller,
    )

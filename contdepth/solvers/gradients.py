"""Gradients without stored activations: reversible backward passes and the continuous adjoint.

Four ways to get ``d loss / d (x0, params)`` through an integration (``gradient=``):

- ``"backprop"``: autograd through every step; stores every stage's activations.
- ``"checkpoint"``: stores each step's input and recomputes the step in backward.
- ``"reversible"`` ([`solve_reversible`][contdepth.solvers.solve_reversible]): stores nothing but the input and the final
  carry; the backward pass rebuilds the states step by step from the end with the scheme's
  ``step_back`` and backpropagates through one recomputed step at a time. The gradient is
  that of the discrete forward pass (backprop's, to round-off), for reversible schemes only.
- ``"adjoint"`` ([`solve_adjoint`][contdepth.solvers.solve_adjoint], [`solve_adjoint_adaptive`][contdepth.solvers.solve_adjoint_adaptive]): the continuous
  adjoint. The backward pass solves ``x' = f``, ``a' = -a^T df/dx``, ``g' = -a^T df/dp`` from
  ``t1`` back to ``t0`` with the same scheme and grid (the adaptive driver for an adaptive
  forward pass), as torchdiffeq's ``odeint_adjoint`` does. Its gradient is that of the ODE,
  not of the discrete pass: the two differ at the scheme's order.

``params`` are the tensors the rate closes over and whose gradients are wanted; the
reversible and adjoint passes compute them with ``torch.autograd.grad`` on recomputed steps.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Callable, Sequence

import torch
from torch.autograd.function import once_differentiable

from ..common.compiling import eager
from .adaptive import StepController, solve_adaptive
from .fixed_grid import solve_fixed_grid
from .registry import available_schemes, get_scheme
from .reversible import rebuild_then_recompute
from .scheme import Rate, Scheme, StageSchedule, StageTime, Tensor
from .solution import IntegrationStats
from .tableau import ButcherTableau

GRADIENTS = ("backprop", "checkpoint", "reversible", "adjoint")

#: Default bound on the relative reconstruction error of a reversible backward pass
#: (max-norm of rebuilt minus stored input, over the input's max-norm).
RECONSTRUCTION_TOLERANCE = 1e-4


class ReconstructionWarning(UserWarning):
    """A reversible backward pass rebuilt the input with an error above its tolerance."""


def reversible_schemes() -> list[str]:
    """The registered schemes with a ``step_back`` (usable with ``gradient="reversible"``)."""
    return [name for name in available_schemes() if get_scheme(name).reversible]


def check_reversible(scheme: Scheme) -> Scheme:
    """``scheme`` if it can run backwards, else a ``ValueError`` naming the schemes that can."""
    if not scheme.reversible:
        raise ValueError(f"scheme: {scheme.name!r} is not reversible, so gradient='reversible' cannot rebuild its "
                         f"states; reversible schemes: {', '.join(reversible_schemes())}")
    return scheme


@dataclass
class _Problem:
    """What a backward pass needs besides tensors (an autograd Function's non-tensor input)."""

    scheme: Scheme
    rate: Rate
    backward_rate: Rate
    schedule: StageSchedule
    n_params: int
    tolerance: float = RECONSTRUCTION_TOLERANCE
    on_reconstruction: Callable[[float], None] | None = None
    backward_schedule: StageSchedule | None = None


def _sizes(schedule: StageSchedule) -> tuple[float, ...]:
    return schedule.step_sizes or (schedule.step_size,) * len(schedule.steps)


def _wanted(params: Sequence[Tensor]) -> list[int]:
    return [i for i, p in enumerate(params) if p.requires_grad]


def _accumulate(total: list[Tensor | None], grads: Sequence[Tensor | None], where: list[int]) -> None:
    for i, g in zip(where, grads):
        if g is not None:
            total[i] = g if total[i] is None else total[i] + g


def _autocast_state(x: Tensor) -> tuple[str, bool, torch.dtype]:
    """The forward pass's autocast setting, for the backward pass to recompute under the same one."""
    device = x.device.type
    return device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)


def _relative_error(rebuilt: Tensor, x0: Tensor, output_scale: float) -> float:
    """``max |rebuilt - x0|`` over the larger of ``max |x0|`` and the output's ``max |x1|`` (absolute where both are 0)."""
    if not x0.numel():
        return 0.0
    scale = max(float(x0.abs().max()), output_scale)
    difference = float((rebuilt - x0).abs().max())
    return difference / scale if scale > 0 else difference


class _Reversible(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: _Problem, x0: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        scheme, schedule = problem.scheme, problem.schedule
        carry = scheme.init(x0, len(schedule.steps))
        for n, (stages, h) in enumerate(zip(schedule.steps, _sizes(schedule))):
            carry = scheme.step(problem.rate, carry, n, stages, h)
        ctx.problem, ctx.params, ctx.autocast = problem, params, _autocast_state(x0)
        out = carry[0]
        # The input (for the reconstruction check and a fallback) is saved, so an in-place change is
        # caught. The final carry is held only until backward starts, so that each rebuilt carry
        # replaces it; an in-place change of the output is caught by its version counter.
        ctx.save_for_backward(x0.detach())
        ctx.final, ctx.version = tuple(carry), out._version
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        problem, params = ctx.problem, ctx.params
        scheme, schedule, rate = problem.scheme, problem.schedule, problem.backward_rate
        x0, = ctx.saved_tensors
        if ctx.final is None:
            raise RuntimeError("gradient='reversible': its backward pass runs once (it releases the final carry to "
                               "keep memory flat); to backpropagate twice through the same graph use "
                               "gradient='backprop' or 'checkpoint'")
        carry, ctx.final = ctx.final, None
        if carry[0]._version != ctx.version:
            raise RuntimeError("gradient='reversible': the integration's output was modified in place after the "
                               "forward pass, so its input cannot be rebuilt from it; use an out-of-place "
                               "operation (x = x.relu() rather than x.relu_())")
        wanted = _wanted(params)
        scale = float(carry[0].abs().max()) if carry[0].numel() else 0.0
        adjoint: tuple[Tensor, ...] = (grad_out, *(torch.zeros_like(c) for c in carry[1:]))
        totals: list[Tensor | None] = [None] * len(params)
        sizes = _sizes(schedule)
        fused = getattr(scheme, "step_back_vjp", None) or partial(rebuild_then_recompute, scheme)
        chosen = tuple(params[i] for i in wanted)
        device, enabled, dtype = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            for n in range(len(schedule.steps) - 1, -1, -1):
                stages, h = schedule.steps[n], sizes[n]
                # rebuild the step's input and differentiate the step, from the same evaluations
                before, adjoint, step_grads = fused(rate, carry, adjoint, n, stages, h, chosen)
                carry = tuple(c.detach() for c in before)
                adjoint = tuple(a.detach() for a in adjoint)
                _accumulate(totals, step_grads, wanted)
        error = _relative_error(carry[0], x0, scale)
        if problem.on_reconstruction is not None:
            problem.on_reconstruction(error)
        # under autocast the rates are rounded to the 16-bit dtype: a rebuilt state one float32 ulp
        # away can round to the neighbouring value, so the rebuild is good to that dtype's precision
        tolerance = max(problem.tolerance, torch.finfo(dtype).eps) if enabled else problem.tolerance
        if not error <= tolerance:  # also NaN
            warnings.warn(
                f"gradient='reversible': the backward pass rebuilt the input of {scheme.name!r} over "
                f"{len(schedule.steps)} steps with relative error {error:.3g} > tolerance {tolerance:g} (the scheme is "
                "unstable for this rate, or for 'revnet' a half's rate reads that half); this gradient was recomputed "
                "by backprop from the stored input instead. Use fewer steps, another reversible scheme, or "
                "gradient='checkpoint'",
                ReconstructionWarning, stacklevel=2,
            )
            with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
                start = x0.clone().requires_grad_()
                out = solve_fixed_grid(scheme, rate, start, schedule).state
                grads = torch.autograd.grad(out, (start, *chosen), grad_out, allow_unused=True)
            totals = [None] * len(params)
            _accumulate(totals, grads[1:], wanted)
            adjoint = (grads[0] if grads[0] is not None else torch.zeros_like(x0),)
        return (None, adjoint[0], *totals)


def solve_reversible(scheme: Scheme, rate: Rate, x0: Tensor, schedule: StageSchedule, params: Sequence[Tensor], *,
                     backward_rate: Rate | None = None, tolerance: float = RECONSTRUCTION_TOLERANCE,
                     on_reconstruction: Callable[[float], None] | None = None) -> Tensor:
    """The final state of ``scheme`` on ``schedule``, differentiable with no stored activations.

    ``params``: the tensors ``rate`` uses whose gradients are wanted. ``backward_rate`` (default
    ``rate``) is what the backward pass evaluates, e.g. one that does not update running
    statistics again. After rebuilding the input, its relative error against the stored
    input is passed to ``on_reconstruction``; above ``tolerance`` the gradient is recomputed
    by backprop from the stored input, with a [`ReconstructionWarning`][contdepth.solvers.ReconstructionWarning].
    """
    check_reversible(scheme)
    params = _distinct(params)
    problem = _Problem(scheme, rate, backward_rate or rate, schedule, len(params), tolerance, on_reconstruction)
    return _apply(_Reversible, problem, x0, params)


def _distinct(params: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """``params`` without repeats (a tensor listed twice would get its gradient twice)."""
    seen: set[int] = set()
    return tuple(p for p in params if not (id(p) in seen or seen.add(id(p))))


@eager  # torch.compiler.disable, applied when compiling (importing dynamo costs 3 s)
def _apply(function: type[torch.autograd.Function], problem: object, x0: Tensor, params: tuple[Tensor, ...]) -> Tensor:
    """Run a custom backward pass eagerly: ``torch.compile`` graphs around it, not through it."""
    return function.apply(problem, x0, *params)


def check_adjoint_scheme(scheme: Scheme) -> Scheme:
    """Refuse a scheme the adjoint cannot run: halves (RevNet), composed applications (PolyNet) or learnable tensors of its own (LM-ResNet's ``k``)."""
    if scheme.partitioned:
        raise ValueError(f"scheme: {scheme.name!r} splits the state in halves, which the adjoint's augmented state "
                         "[x, a, g] does not have; use gradient='reversible' (exact for it) or another scheme")
    if "term" in scheme.term_needs:
        raise ValueError(f"gradient: the adjoint cannot run {scheme.name!r}: it advances the field's terms one at a "
                         "time, and the adjoint's augmented system [x, a, g] is one field; use gradient='backprop' "
                         "or 'checkpoint' for it")
    if scheme.composes:
        raise ValueError(f"gradient: the adjoint cannot run {scheme.name!r}: it applies the rate to its own output "
                         "(each application with its own norms), which the adjoint's backward sweep does not "
                         "reproduce; use gradient='backprop' or 'checkpoint' for it")
    k = getattr(scheme, "k", None)
    if any(isinstance(v, Tensor) and v.requires_grad for v in (k if isinstance(k, (list, tuple)) else (k,))):
        raise ValueError(f"gradient: the adjoint differentiates the rate's parameters, not the learnable k of "
                         f"{scheme.name!r}; use gradient='backprop' or 'checkpoint' for it")
    if isinstance(k, (list, tuple)):
        # The backward sweep runs the scheme from t1 to t0, so its step n would take the k of forward
        # step n: another ODE (measured: 23 % off backprop's gradient at 256 steps, not converging).
        raise ValueError(f"gradient: the adjoint cannot run {scheme.name!r} with one k per step: its backward sweep "
                         "would apply them in the forward order; use one k for all steps, or gradient='backprop'")
    return scheme


# --- the continuous adjoint ------------------------------------------------------------------------
class _Augmented:
    """The adjoint system on one flat vector ``[x, a, g]``: ``x' = f``, ``a' = -a^T f_x``, ``g' = -a^T f_p``."""

    def __init__(self, rate: Rate, like: Tensor, params: Sequence[Tensor]) -> None:
        self.rate, self.shape, self.params = rate, like.shape, params
        self.n = like.numel()
        self.wanted = _wanted(params)
        self.sizes = [params[i].numel() for i in self.wanted]

    def pack(self, x: Tensor, a: Tensor) -> Tensor:
        zeros = x.new_zeros(sum(self.sizes))
        return torch.cat((x.reshape(-1), a.reshape(-1).to(x.dtype), zeros))

    def __call__(self, stage: StageTime, z: Tensor) -> Tensor:
        x = z[: self.n].view(self.shape)
        a = z[self.n: 2 * self.n].view(self.shape)
        with torch.enable_grad():
            xg = x.detach().requires_grad_()
            fx = self.rate(stage, xg)
            grads = torch.autograd.grad(fx, (xg, *(self.params[i] for i in self.wanted)), a, allow_unused=True)
        parts = [fx.detach().reshape(-1), -grads[0].reshape(-1) if grads[0] is not None else torch.zeros_like(a).reshape(-1)]
        for g, size in zip(grads[1:], self.sizes):
            parts.append(z.new_zeros(size) if g is None else -g.reshape(-1).to(z.dtype))
        return torch.cat(parts)

    def unpack(self, z: Tensor, dtype: torch.dtype) -> tuple[Tensor, list[Tensor | None]]:
        grad_x0 = z[self.n: 2 * self.n].view(self.shape).to(dtype)
        totals: list[Tensor | None] = [None] * len(self.params)
        offset = 2 * self.n
        for i, size in zip(self.wanted, self.sizes):
            p = self.params[i]
            totals[i] = z[offset: offset + size].view(p.shape).to(p.dtype)
            offset += size
        return grad_x0, totals


def _adjoint_backward(ctx, grad_out: Tensor, solve: Callable[[_Augmented, Tensor], Tensor]) -> tuple:
    """What both adjoint passes share: the augmented system from the saved final state, solved back
    to ``t0`` by ``solve(system, z1)`` under the forward's autocast, unpacked into the gradients."""
    x1, = ctx.saved_tensors
    system = _Augmented(ctx.problem.backward_rate, x1, ctx.params)
    device, enabled, dtype = ctx.autocast
    with torch.autocast(device, dtype=dtype, enabled=enabled):
        z0 = solve(system, system.pack(x1, grad_out))
    grad_x0, totals = system.unpack(z0, ctx.dtype)
    return (None, grad_x0, *totals)


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: _Problem, x0: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        x1 = solve_fixed_grid(problem.scheme, problem.rate, x0, problem.schedule).state
        ctx.problem, ctx.params, ctx.autocast, ctx.dtype = problem, params, _autocast_state(x0), x0.dtype
        ctx.save_for_backward(x1)
        return x1

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        problem = ctx.problem
        return _adjoint_backward(ctx, grad_out, lambda system, z1: solve_fixed_grid(
            problem.scheme, system, z1, problem.backward_schedule).state)


def solve_adjoint(scheme: Scheme, rate: Rate, x0: Tensor, schedule: StageSchedule, params: Sequence[Tensor], *,
                  backward_rate: Rate | None = None, backward_schedule: StageSchedule | None = None) -> Tensor:
    """The final state of ``scheme`` on ``schedule``, with the continuous adjoint as its gradient.

    The backward pass solves the adjoint system with the same scheme from ``t1`` back to
    ``t0`` on ``backward_schedule`` (default: the same steps, reversed), recomputing ``x``
    backwards alongside, as torchdiffeq's ``odeint_adjoint`` does.
    """
    params = _distinct(params)
    check_adjoint_scheme(scheme)
    if backward_schedule is None:
        grid = schedule.grid
        backward_schedule = scheme.schedule(len(schedule.steps), grid[-1], grid[0]) if grid else None
    if backward_schedule is None or len(backward_schedule.steps) != len(schedule.steps):
        raise ValueError("backward_schedule: the adjoint needs the forward grid reversed")
    problem = _Problem(scheme, rate, backward_rate or rate, schedule, len(params), backward_schedule=backward_schedule)
    return _apply(_Adjoint, problem, x0, params)


@dataclass
class _AdaptiveProblem:
    rate: Rate
    backward_rate: Rate
    tableau: ButcherTableau
    rtol: float
    atol: float
    t0: Fraction
    t1: Fraction
    breakpoints: tuple[Fraction, ...]
    controller: StepController
    stats: list


def _reversed_time(rate: Rate) -> Rate:
    """``-rate`` at ``t = -s``: integrating it over ``s`` from ``-t1`` to ``-t0`` runs ``rate`` from ``t1`` to ``t0``.

    A stage on a step boundary reads the depth function from inside its step: the side
    flips with the direction.
    """
    def flipped(stage: StageTime, z: Tensor) -> Tensor:
        left = not stage.left
        t = -stage.t
        if left:  # a plain f(t, x) reads the float time: just below a jump is its left side
            t = math.nextafter(t, -math.inf)
        return -rate(StageTime(t, -stage.exact, left, stage.index), z)

    return flipped


class _AdjointAdaptive(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: _AdaptiveProblem, x0: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        solution = solve_adaptive(problem.rate, x0, tableau=problem.tableau, rtol=problem.rtol, atol=problem.atol,
                                  t0=problem.t0, t1=problem.t1, breakpoints=problem.breakpoints,
                                  controller=problem.controller)
        problem.stats.append(solution.stats)
        ctx.problem, ctx.params, ctx.autocast, ctx.dtype = problem, params, _autocast_state(x0), x0.dtype
        ctx.save_for_backward(solution.state)
        return solution.state

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        p = ctx.problem

        def solve(system: _Augmented, z1: Tensor) -> Tensor:
            solution = solve_adaptive(_reversed_time(system), z1, tableau=p.tableau, rtol=p.rtol, atol=p.atol,
                                      t0=-p.t1, t1=-p.t0, breakpoints=tuple(-b for b in p.breakpoints),
                                      controller=p.controller, state_name="adjoint state", rate_name="adjoint system")
            p.stats.append(solution.stats)
            return solution.state

        return _adjoint_backward(ctx, grad_out, solve)


def solve_adjoint_adaptive(rate: Rate, x0: Tensor, params: Sequence[Tensor], *, tableau: ButcherTableau, rtol: float,
                           atol: float, t0: Fraction, t1: Fraction, breakpoints: tuple[Fraction, ...] = (),
                           controller: StepController = StepController(),
                           backward_rate: Rate | None = None) -> tuple[Tensor, list[IntegrationStats]]:
    """Adaptive forward pass; the backward pass solves the adjoint system adaptively from ``t1`` to ``t0``.

    Returns the final state and a list that receives the forward pass's statistics now and
    the backward pass's when it runs.
    """
    stats: list[IntegrationStats] = []
    problem = _AdaptiveProblem(rate, backward_rate or rate, tableau, rtol, atol, t0, t1, tuple(breakpoints),
                               controller, stats)
    return _apply(_AdjointAdaptive, problem, x0, _distinct(params)), stats


def module_parameters(f: object, params: Sequence[Tensor] | None) -> tuple[Tensor, ...]:
    """``params`` as a tuple of tensors; for an ``nn.Module`` ``f`` without ``params``, its parameters."""
    if params is None:
        return tuple(p for p in f.parameters() if p.requires_grad) if isinstance(f, torch.nn.Module) else ()
    if isinstance(params, torch.Tensor):
        params = (params,)
    params = tuple(params)
    bad = [i for i, p in enumerate(params) if not isinstance(p, torch.Tensor)]
    if bad:
        raise TypeError(f"params[{bad[0]}]: expected a tensor the rate uses, got {type(params[bad[0]]).__name__}")
    return params


def check_gradient(gradient: object, checkpoint: bool = False) -> str:
    """The gradient mode, with ``checkpoint=True`` as an alias of ``"checkpoint"``."""
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient: must be one of {', '.join(GRADIENTS)}; got {gradient!r}")
    if checkpoint:
        if gradient not in ("backprop", "checkpoint"):
            raise ValueError(f"checkpoint: checkpoint=True is gradient='checkpoint' and conflicts with gradient={gradient!r}")
        return "checkpoint"
    return gradient  # type: ignore[return-value]


__all__ = [
    "GRADIENTS", "RECONSTRUCTION_TOLERANCE", "ReconstructionWarning", "check_adjoint_scheme", "check_gradient",
    "check_reversible",
    "module_parameters", "reversible_schemes", "solve_adjoint", "solve_adjoint_adaptive", "solve_reversible",
]

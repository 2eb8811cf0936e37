"""Reversible schemes: each step can be undone from its output alone (``step_back``).

Backpropagation through a reversible scheme needs no stored activations: the backward pass
rebuilds the states step by step from the final one ([`solve_reversible`][contdepth.solvers.solve_reversible]).

- ``reversible_heun`` (Kidger, Foster, Li & Lyons, "Efficient and Accurate Gradients for
  Neural SDEs", NeurIPS 2021): a state ``y`` and an auxiliary ``z`` (``z_0 = y_0``),

      z_{n+1} = 2 y_n - z_n + h f(t_n, z_n)
      y_{n+1} = y_n + h/2 (f(t_n, z_n) + f(t_{n+1}, z_{n+1}))

  Order 2. Kidger et al. reuse ``f(t_{n+1}, z_{n+1})`` as the next step's first rate; here
  each step evaluates both ends, because depth-varying weights may jump at a step boundary
  (the end of a step reads them from the left, the start of the next from the right).
- ``alf``, the asynchronous leapfrog of MALI (Zhuang, Dvornek, Tatikonda & Duncan, ICLR 2021):
  a state ``x`` and a velocity ``v`` (``v_0 = f(t_0, x_0)``),

      k = x_n + h/2 v_n,   v_{n+1} = 2 f(t_n + h/2, k) - v_n,   x_{n+1} = k + h/2 v_{n+1}

  Order 2, one evaluation per step (plus one at the start).

Both are only neutrally stable: for ``x' = lambda x`` their two-component recursion has
determinant -1, so for real ``h lambda < 0`` one root exceeds 1 in modulus and a
reconstruction error grows from step to step (the price of reversibility; RevNet's coupling
does not have it for rates that read only the other half). Measure the reconstruction on the
model you train (``solve_reversible`` checks it against the stored input).
"""

from __future__ import annotations

from fractions import Fraction

import torch

from .scheme import Carry, Rate, Scheme, StageTime, Tensor

_ENDS = (Fraction(0), Fraction(1))
_HALF = Fraction(1, 2)

Grads = list  # per parameter: a gradient tensor or None


def evaluate_with_graph(rate: Rate, stage: StageTime, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(leaf, rate(stage, leaf))`` with ``leaf`` a detached copy of ``x`` that requires grad."""
    leaf = x.detach().requires_grad_()
    with torch.enable_grad():
        return leaf, rate(stage, leaf)


def vjp(out: Tensor, leaf: Tensor, params: tuple[Tensor, ...], cotangent: Tensor) -> tuple[Tensor, Grads]:
    """``(cotangent^T d out/d leaf, [cotangent^T d out/d p for p in params])`` (``None`` where unused)."""
    grads = torch.autograd.grad(out, (leaf, *params), cotangent, allow_unused=True)
    return (torch.zeros_like(leaf) if grads[0] is None else grads[0]), list(grads[1:])


def add_grads(total: Grads, more: Grads) -> Grads:
    return [b if a is None else (a if b is None else a + b) for a, b in zip(total, more)]


def rebuild_then_recompute(scheme: Scheme, rate: Rate, carry: Carry, adjoint: Carry, n: int,
                           stages: tuple[StageTime, ...], h: float, params: tuple[Tensor, ...]
                           ) -> tuple[Carry, Carry, Grads]:
    """The generic reversible backward step: ``step_back``, then the step recomputed under autograd.

    What a scheme without a fused ``step_back_vjp`` gets (and RevNet's coupling for a rate
    without one-half evaluations, where each half's rate may read both halves).
    """
    with torch.no_grad():
        before = scheme.step_back(rate, carry, n, stages, h)  # type: ignore[attr-defined]
    with torch.enable_grad():
        inputs = tuple(c.detach().requires_grad_() for c in before)
        after = scheme.step(rate, inputs, n, stages, h)
        grads = torch.autograd.grad(after, (*inputs, *params), adjoint, allow_unused=True)
    return (tuple(c.detach() for c in before),
            tuple(torch.zeros_like(c) if g is None else g for c, g in zip(inputs, grads)), list(grads[len(inputs):]))


class ReversibleHeun(Scheme):
    """Kidger et al.'s reversible Heun method; the carry is ``(y, z)`` (see the module docstring)."""

    order = 2
    reversible = True
    carry_size = 2

    def __init__(self, name: str = "reversible_heun") -> None:
        self.name = name
        self.reference = "Kidger, Foster, Li & Lyons, NeurIPS 2021 (reversible Heun)"

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        return (_ENDS,) * n_steps

    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        y = carry[0]
        z = carry[1] if len(carry) > 1 else y
        start, end = stages
        f0 = rate(start, z)
        z1 = torch.add(2 * y - z, f0, alpha=h)
        f1 = rate(end, z1)
        return (torch.add(y, f0 + f1, alpha=h / 2), z1)

    def step_back(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        """``(y_n, z_n)`` from ``(y_{n+1}, z_{n+1})``; before the first step only ``(y_0,)`` (``z_0 = y_0``)."""
        y1, z1 = carry
        start, end = stages
        f1 = rate(end, z1)
        z = torch.add(2 * y1 - z1, f1, alpha=-h)
        f0 = rate(start, z)
        y = torch.add(y1, f0 + f1, alpha=-h / 2)
        return (y,) if n == 0 else (y, z)

    def step_back_vjp(self, rate: Rate, carry: Carry, adjoint: Carry, n: int, stages: tuple[StageTime, ...],
                      h: float, params: tuple[Tensor, ...]) -> tuple[Carry, Carry, Grads]:
        """[`step_back`][contdepth.solvers.ReversibleHeun.step_back] and the step's vector-Jacobian product from the same two evaluations.

        The rebuilt states are the forward step's stage inputs, so the rates evaluated to
        rebuild them (with a graph) are the ones the step's derivative needs: two
        evaluations per step in backward instead of four (rebuild, then recompute).
        """
        y1, z1 = carry
        ay1, az1 = adjoint
        start, end = stages
        # y1 = y + h/2 (f0 + f1(z1)),  z1 = 2 y - z + h f0(z). Each evaluation's graph is used
        # and freed before the next is built: one evaluation's activations at a time.
        z1_leaf, f1 = evaluate_with_graph(rate, end, z1)
        back1, grads = vjp(f1, z1_leaf, params, ay1 * (h / 2))
        f1 = f1.detach()
        del z1_leaf
        az1_total = back1 + az1  # out of place: autograd may hand back one tensor for two gradients
        del back1
        z = torch.add(2 * y1 - z1, f1, alpha=-h)
        z_leaf, f0 = evaluate_with_graph(rate, start, z)
        back0, grads0 = vjp(f0, z_leaf, params, torch.add(ay1 * (h / 2), az1_total, alpha=h))
        del z_leaf
        y = torch.add(y1, f0.detach() + f1, alpha=-h / 2)
        ay = torch.add(ay1, az1_total, alpha=2)
        az = back0 - az1_total
        grads = add_grads(grads, grads0)
        if n == 0:  # z_0 = y_0
            return (y,), (ay + az,), grads
        return (y, z), (ay, az), grads


class AsynchronousLeapfrog(Scheme):
    """MALI's asynchronous leapfrog (ALF); the carry is ``(x, v)`` (see the module docstring)."""

    order = 2
    reversible = True
    carry_size = 2

    def __init__(self, name: str = "alf") -> None:
        self.name = name
        self.reference = "Zhuang, Dvornek, Tatikonda & Duncan, ICLR 2021 (MALI, asynchronous leapfrog)"

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        return ((Fraction(0), _HALF),) + ((_HALF,),) * (n_steps - 1) if n_steps else ()

    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        x = carry[0]
        v = carry[1] if len(carry) > 1 else rate(stages[0], x)  # v_0 = f(t_0, x_0)
        k = torch.add(x, v, alpha=h / 2)
        v1 = 2 * rate(stages[-1], k) - v
        return (torch.add(k, v1, alpha=h / 2), v1)

    def step_back(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        """``(x_n, v_n)`` from ``(x_{n+1}, v_{n+1})``; before the first step only ``(x_0,)``."""
        x1, v1 = carry
        k = torch.add(x1, v1, alpha=-h / 2)
        v = 2 * rate(stages[-1], k) - v1
        x = torch.add(k, v, alpha=-h / 2)
        return (x,) if n == 0 else (x, v)

    def step_back_vjp(self, rate: Rate, carry: Carry, adjoint: Carry, n: int, stages: tuple[StageTime, ...],
                      h: float, params: tuple[Tensor, ...]) -> tuple[Carry, Carry, Grads]:
        """[`step_back`][contdepth.solvers.AsynchronousLeapfrog.step_back] and the step's vector-Jacobian product from the same evaluation."""
        x1, v1 = carry
        ax1, av1 = adjoint
        k_leaf, u = evaluate_with_graph(rate, stages[-1], torch.add(x1, v1, alpha=-h / 2))
        v = 2 * u.detach() - v1
        x = torch.add(k_leaf.detach(), v, alpha=-h / 2)
        # v1 = 2 u(k) - v,  x1 = k + h/2 v1,  k = x + h/2 v
        back, grads = vjp(u, k_leaf, params, 2 * av1 + h * ax1)
        ak = ax1 + back
        ax, av = ak, ak * (h / 2) - av1 - ax1 * (h / 2)
        if n == 0:  # v_0 = f(t_0, x_0)
            x_leaf, v0 = evaluate_with_graph(rate, stages[0], x)
            back0, grads0 = vjp(v0, x_leaf, params, av)
            return (x,), (ax + back0,), add_grads(grads, grads0)
        return (x, v), (ax, av), grads

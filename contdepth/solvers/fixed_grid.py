"""The one fixed-grid driver: every scheme's loop, path, checkpointing and statistics.

A [`Scheme`][contdepth.solvers.Scheme] supplies ``init`` and ``step``; this driver walks the
schedule.  Keeping the loop in one place gives every scheme (Runge-Kutta, Adams-Bashforth,
LM-ResNet, and whatever a user registers) the same meaning of ``checkpoint`` and the same
saved outputs, and leaves a new integration strategy (reversible, adjoint) one place to hook in.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from .scheme import Rate, Scheme, StageSchedule, StageTime, Tensor
from .solution import IntegrationStats, Solution
from .term import Term, as_term


def solve_fixed_grid(
    scheme: Scheme,
    rate: Rate,
    x0: Tensor,
    schedule: StageSchedule,
    *,
    save_at: frozenset[int] | None = None,
    checkpoint: bool = False,
) -> Solution:
    """Integrate ``rate(stage, x)`` from ``x0`` over ``schedule`` with ``scheme``.

    Args:
        save_at: grid indices (0 is ``t0``, ``n`` the end of step ``n``) whose states go
            into ``Solution.ys``; ``None`` saves nothing.
        checkpoint: activation checkpointing *per step*: only each step's input carry is
            kept for backward and the step is recomputed there.  The last step is never
            checkpointed: backward needs its internals first, so recomputing them would
            cost time and save no peak memory.

    Returns:
        A [`Solution`][contdepth.solvers.Solution]; ``stats.n_evaluations`` is the scheme's count for the grid.
    """
    steps = schedule.steps
    sizes = schedule.step_sizes or (schedule.step_size,) * len(steps)
    if save_at is not None and not all(isinstance(i, int) and 0 <= i <= len(steps) for i in save_at):
        raise ValueError(f"save_at: grid indices must lie in 0..{len(steps)} (0 is t0, n the end of step n), "
                         f"got {sorted(save_at, key=str)}")
    counted = None
    if not scheme.fixed_evaluations:  # an iteration: count what it really evaluates
        rate = counted = CountedTerm(as_term(rate))

    carry = scheme.init(x0, len(steps))
    saved = [x0] if save_at is not None and 0 in save_at else []
    last = len(steps) - 1
    recompute = checkpoint and torch.is_grad_enabled()
    for n, stages in enumerate(steps):
        if recompute and n < last:
            carry = _torch_checkpoint(scheme.step, rate, carry, n, stages, sizes[n], use_reentrant=False)
        else:
            carry = scheme.step(rate, carry, n, stages, sizes[n])
        if save_at is not None and n + 1 in save_at:
            saved.append(carry[0])
    evaluations = sum(map(len, steps)) if counted is None else counted.calls
    stats = IntegrationStats(len(steps), evaluations, 0, schedule.step_ends)
    if save_at is None:
        return Solution(carry[0], stats)
    ts = tuple(float(schedule.grid[i]) for i in sorted(save_at))
    return Solution(carry[0], stats, ts, torch.stack(saved))


class CountedTerm(Term):
    """``term`` with a count of its evaluations (whole, halves and applications): for a step whose count depends on the data."""

    def __init__(self, term: Term) -> None:
        self.term, self.calls = term, 0
        self.part_count, self.part_dim, self.application_count = term.part_count, term.part_dim, term.application_count

    def __call__(self, stage: StageTime, x: Tensor) -> Tensor:
        self.calls += 1
        return self.term(stage, x)

    def part(self, stage: StageTime, other_half: Tensor, i: int) -> Tensor:
        self.calls += 1
        return self.term.part(stage, other_half, i)

    def application(self, stage: StageTime, x: Tensor, j: int) -> Tensor:
        self.calls += 1
        return self.term.application(stage, x, j)


def reconstruct_fixed_grid(scheme: Scheme, rate: Rate, end: Tensor | tuple[Tensor, ...],
                           schedule: StageSchedule) -> Tensor:
    """The input ``x0`` of [`solve_fixed_grid`][contdepth.solvers.solve_fixed_grid] recomputed from the final carry ``end``.

    Walks the schedule backwards with the scheme's ``step_back``; no state of the forward
    pass is needed, which is what reversible architectures (RevNet) use to avoid storing
    activations. ``end`` is the final state for a scheme whose carry is the state alone
    (``revnet``), or the whole final carry (``reversible_heun``: ``(y, z)``; ``alf``:
    ``(x, v)``). Exact to round-off for a reversible scheme whose rate has the structure the
    scheme requires (RevNet: each half's rate reads only the other half).
    """
    if not scheme.reversible:
        raise ValueError(f"scheme: {scheme.name!r} is not reversible (it has no step_back); "
                         "reversible schemes are those with reversible=True, e.g. 'revnet'")
    carry = (end,) if isinstance(end, Tensor) else tuple(end)
    if len(carry) != scheme.carry_size:
        raise ValueError(f"end: {scheme.name!r} steps back from its whole carry of {scheme.carry_size} tensors "
                         f"(the state and its auxiliaries), got {len(carry)}")
    steps = schedule.steps
    sizes = schedule.step_sizes or (schedule.step_size,) * len(steps)
    for n in range(len(steps) - 1, -1, -1):
        carry = scheme.step_back(rate, carry, n, steps[n], sizes[n])  # type: ignore[attr-defined]
    return carry[0]

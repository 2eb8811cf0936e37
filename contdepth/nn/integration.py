"""How a :class:`~contdepth.nn.ContinuousBlock` integrates its ODE: interchangeable strategies.

A block is its depth parameters (basis, coefficients, depth-dependent state) plus one
:class:`Integration`. :meth:`ContinuousBlock.manifest` swaps in another :class:`FixedGrid`
(scheme and steps), :func:`~contdepth.nn.adaptive_depth` an :class:`Adaptive` one (an
embedded pair and tolerances). A new strategy (reversible, adjoint) is a subclass with a
``run`` method that uses the block's public stage-value methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Protocol

import torch

from ..solvers import (
    ButcherTableau, IntegrationStats, Scheme, StageTime, StepController, solve_adaptive, solve_fixed_grid,
)

Tensor = torch.Tensor
Rate = Callable[[StageTime, Tensor], Tensor]


class DepthParameters(Protocol):
    """What a strategy may use of a block (:class:`~contdepth.nn.ContinuousBlock` provides it).

    The contract a new strategy (reversible, adjoint) builds on: the depth interval, the
    rate at a fixed grid's stages or at any depth, and the state update after a training pass.
    """

    t0: float
    t1: float
    training: bool
    state_names: tuple[str, ...]

    def stage_plan(self, scheme: Scheme | None = None, n_steps: int | None = None) -> Any: ...

    def grid_rate(self, plan: Any, samples: list | None, context: tuple = ()) -> Rate: ...

    def update_state(self, plan: Any, samples: list) -> None: ...

    def rate_at_any_depth(self, context: tuple = ()) -> Rate: ...

    def breakpoints(self) -> tuple[Fraction, ...]: ...


class Integration(ABC):
    """A way to integrate a block from ``t0`` to ``t1``."""

    @abstractmethod
    def run(self, block: DepthParameters, x: Tensor, context: tuple) -> tuple[Tensor, IntegrationStats | None]:
        """The block's output for input ``x`` (and its statistics, where the strategy measures them)."""


@dataclass(frozen=True)
class FixedGrid(Integration):
    """A manifestation: ``n_steps`` equal steps of ``scheme`` (``checkpoint``: recompute each step in backward).

    In training mode every stage evaluation samples the normalisation statistics at its
    depth; after the pass the block fits its depth-dependent state to the samples.
    """

    scheme: Scheme
    n_steps: int
    checkpoint: bool = False

    @property
    def units(self) -> int:
        """Rate evaluations per forward pass."""
        return self.scheme.evaluations(self.n_steps)

    def run(self, block: DepthParameters, x: Tensor, context: tuple) -> tuple[Tensor, IntegrationStats | None]:
        plan = block.stage_plan(self.scheme, self.n_steps)
        sampling = block.training and bool(block.state_names)
        samples: list[tuple[int, tuple[Tensor, ...]]] = []
        rate = block.grid_rate(plan, samples if sampling else None, context)
        out = solve_fixed_grid(plan.scheme, rate, x, plan.schedule, checkpoint=self.checkpoint).state
        if samples:
            collected = list(samples)
            samples.clear()  # evaluations recomputed during backward (checkpointing) are not samples
            block.update_state(plan, collected)
        return out, None


@dataclass(frozen=True)
class Adaptive(Integration):
    """Error-controlled steps of an embedded pair; no step crosses a basis breakpoint.

    ``record`` receives each call's :class:`IntegrationStats` (that is how
    :func:`~contdepth.nn.adaptive_depth` reports without counters on the modules).
    """

    tableau: ButcherTableau
    rtol: float
    atol: float
    controller: StepController = StepController()
    record: Callable[[IntegrationStats], None] | None = None

    def run(self, block: DepthParameters, x: Tensor, context: tuple) -> tuple[Tensor, IntegrationStats | None]:
        if block.training and block.state_names:
            raise RuntimeError(
                "adaptive depth: this block has depth-dependent normalisation state, which is only "
                "updated on a fixed grid; call model.eval() first (adaptive depth is for inference)"
            )
        rate: Callable[[StageTime, Tensor], Tensor] = block.rate_at_any_depth(context)
        solution = solve_adaptive(
            rate, x, tableau=self.tableau, rtol=self.rtol, atol=self.atol, t0=Fraction(block.t0),
            t1=Fraction(block.t1), breakpoints=block.breakpoints(), controller=self.controller,
            state_name="x", rate_name="template",
        )
        if self.record is not None:
            self.record(solution.stats)
        return solution.state, solution.stats

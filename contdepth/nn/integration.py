"""How a [`ContinuousBlock`][contdepth.nn.ContinuousBlock] integrates its ODE: interchangeable strategies.

A block is its depth function, its normalisation state and one
[`Integration`][contdepth.nn.Integration]. Its forward pass builds one
[`BlockRate`][contdepth.nn.BlockRate] for the strategy (on the strategy's grid, or at any
depth) and calls ``strategy.run(rate, x)``; the strategy never calls back into the block.
[`ContinuousBlock.manifest`][contdepth.nn.ContinuousBlock.manifest] swaps in another
[`FixedGrid`][contdepth.nn.FixedGrid] (scheme, steps and a gradient mode: `Backprop`,
`Checkpoint`, `Reversible`, `Adjoint`), [`adaptive_depth`][contdepth.nn.adaptive_depth] an
[`Adaptive`][contdepth.nn.Adaptive] one. A new strategy is a subclass with ``run`` (and
``manifestation`` if it integrates on a fixed grid).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..solvers import (
    Backprop, ButcherTableau, GradientMode, IntegrationStats, Scheme, StepController, gradient_mode, solve_adaptive,
)
from .rate import BlockRate

Tensor = torch.Tensor


class Integration(ABC):
    """A way to integrate a block from ``t0`` to ``t1``."""

    def manifestation(self) -> tuple[Scheme, int] | None:
        """``(scheme, n_steps)`` of the grid whose stage values the rate should precompute; ``None``: any depth."""
        return None

    @abstractmethod
    def run(self, rate: BlockRate, x: Tensor) -> tuple[Tensor, IntegrationStats | None]:
        """The block's output for input ``x`` (and its statistics, where the strategy measures them)."""


@dataclass(frozen=True)
class FixedGrid(Integration):
    """A manifestation: ``n_steps`` equal steps of ``scheme``, and how backward gets its gradients.

    ``gradient``: a [`GradientMode`][contdepth.solvers.GradientMode] or its name (``"backprop"``,
    ``"checkpoint"``, ``"reversible"``, ``"adjoint"``; a boolean is the old ``checkpoint``
    flag). The mode checks the scheme here, once (`refusal`). A block refuses such a grid
    where its mode is chosen (`checked`); a manifestation keeps it, because evaluating needs
    no gradient: without one to compute (``torch.no_grad()``, or nothing requires grad) every
    mode runs the plain forward pass, so a reversible model can be evaluated on any scheme, and
    a pass that needs the gradient raises the refusal.

    In training mode every stage evaluation samples the normalisation statistics at its
    depth; the block fits its state to them after the pass. Evaluations a backward pass
    recomputes are never samples and update no state.
    """

    scheme: Scheme
    n_steps: int
    gradient: GradientMode = None  # type: ignore[assignment]  (None: Backprop)
    refusal: str | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        value = self.gradient
        if isinstance(value, bool):  # FixedGrid(scheme, n, checkpoint)
            value = "checkpoint" if value else "backprop"
        mode = gradient_mode("backprop" if value is None else value)
        object.__setattr__(self, "gradient", mode)
        try:
            mode.check(self.scheme)
        except ValueError as exc:  # why the mode cannot differentiate this scheme
            object.__setattr__(self, "refusal", str(exc))

    def checked(self) -> "FixedGrid":
        """This grid, or the mode's refusal of its scheme as a ``ValueError``."""
        if self.refusal is not None:
            raise ValueError(self.refusal)
        return self

    @property
    def checkpoint(self) -> bool:
        """Whether backward recomputes each step from its stored input."""
        return self.gradient.name == "checkpoint"

    @property
    def units(self) -> int:
        """Rate evaluations per forward pass."""
        return self.scheme.evaluations(self.n_steps)

    def manifestation(self) -> tuple[Scheme, int]:
        return self.scheme, self.n_steps

    def run(self, rate: BlockRate, x: Tensor) -> tuple[Tensor, IntegrationStats]:
        plan, mode = rate.plan, self.gradient
        if self.refusal is not None:  # a manifestation the mode cannot differentiate: fine without a gradient
            wanted = x.requires_grad or any(p.requires_grad for p in rate.depth_parameters() + rate.learnable_context())
            if torch.is_grad_enabled() and wanted:
                raise ValueError(self.refusal)
            mode = Backprop()
        solution = mode.solve(plan.scheme, rate, x, plan.schedule, extra_parameters=rate.learnable_context(),
                              log=rate.source.log)
        stats = solution.stats  # the evaluations the forward pass made (an implicit step counts its iterations)
        if self.gradient.name == "reversible":
            stats = replace(stats, reconstruction=rate.source.log)
        return solution.state, stats


@dataclass(frozen=True)
class Adaptive(Integration):
    """Error-controlled steps of an embedded pair; no step crosses a basis breakpoint.

    ``record`` receives each call's [`IntegrationStats`][contdepth.solvers.IntegrationStats] (that is how
    [`adaptive_depth`][contdepth.nn.adaptive_depth] reports without counters on the modules).
    """

    tableau: ButcherTableau
    rtol: float
    atol: float
    controller: StepController = StepController()
    record: Callable[[IntegrationStats], None] | None = None

    def run(self, rate: BlockRate, x: Tensor) -> tuple[Tensor, IntegrationStats]:
        if rate.source.training and rate.source.state.names:
            raise RuntimeError(
                "adaptive depth: this block has depth-dependent normalisation state, which is only "
                "updated on a fixed grid; call model.eval() first (adaptive depth is for inference)"
            )
        t0, t1 = rate.interval
        solution = solve_adaptive(
            rate, x, tableau=self.tableau, rtol=self.rtol, atol=self.atol, t0=t0, t1=t1,
            breakpoints=rate.breakpoints(), controller=self.controller, state_name="x", rate_name="template",
        )
        if self.record is not None:
            self.record(solution.stats)
        return solution.state, solution.stats


__all__ = ["Adaptive", "FixedGrid", "Integration"]

"""How a [`ContinuousBlock`][contdepth.nn.ContinuousBlock] integrates its ODE: interchangeable strategies.

A block is its depth parameters (basis, coefficients, depth-dependent state) plus one
[`Integration`][contdepth.nn.Integration]. [`ContinuousBlock.manifest`][contdepth.nn.ContinuousBlock.manifest] swaps in another [`FixedGrid`][contdepth.nn.FixedGrid]
(scheme, steps and gradient mode: backprop, checkpoint, reversible, adjoint),
[`adaptive_depth`][contdepth.nn.adaptive_depth] an [`Adaptive`][contdepth.nn.Adaptive] one (an embedded pair and
tolerances). A new strategy is a subclass with a ``run`` method that uses the block's public
stage-value methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Protocol

import torch

from ..solvers import (
    ButcherTableau, IntegrationStats, Scheme, StageTime, StepController, check_gradient, check_reversible,
    solve_adaptive, solve_adjoint, solve_fixed_grid, solve_reversible,
)

Tensor = torch.Tensor
Rate = Callable[[StageTime, Tensor], Tensor]


class DepthParameters(Protocol):
    """What a strategy may use of a block ([`ContinuousBlock`][contdepth.nn.ContinuousBlock] provides it).

    The contract a new strategy (reversible, adjoint) builds on: the depth interval, the
    rate at a fixed grid's stages or at any depth, and the state update after a training pass.
    """

    t0: float
    t1: float
    training: bool
    state_names: tuple[str, ...]
    reconstruction_tolerance: float
    template: Any

    def stage_plan(self, scheme: Scheme | None = None, n_steps: int | None = None) -> Any: ...

    def values_at_stages(self, plan: Any = None) -> Any: ...

    def coefficient_items(self) -> Any: ...

    def grid_rate(self, plan: Any, samples: list | None, context: tuple = (), *, values: Any = None,
                  recompute: bool = False) -> Rate: ...

    def update_state(self, plan: Any, samples: list) -> None: ...

    def rate_at_any_depth(self, context: tuple = (), *, recompute: bool = False) -> Rate: ...

    def record_reconstruction(self, error: float) -> None: ...

    def breakpoints(self) -> tuple[Fraction, ...]: ...


class Integration(ABC):
    """A way to integrate a block from ``t0`` to ``t1``."""

    @abstractmethod
    def run(self, block: DepthParameters, x: Tensor, context: tuple) -> tuple[Tensor, IntegrationStats | None]:
        """The block's output for input ``x`` (and its statistics, where the strategy measures them)."""


@dataclass(frozen=True)
class FixedGrid(Integration):
    """A manifestation: ``n_steps`` equal steps of ``scheme``, and how backward gets its gradients.

    ``gradient`` (see `contdepth.solvers.gradients`): ``"backprop"``, ``"checkpoint"``
    (recompute each step in backward), ``"reversible"`` (rebuild the states backwards; a
    reversible scheme) or ``"adjoint"`` (the continuous adjoint on the reversed grid). A
    boolean third argument is the old ``checkpoint`` flag. Without a gradient to compute
    (``torch.no_grad()``, or nothing requires grad) every mode runs the plain forward pass,
    so a reversible model can still be evaluated on any manifestation.

    In training mode every stage evaluation samples the normalisation statistics at its
    depth; after the pass the block fits its depth-dependent state to the samples. The
    evaluations the backward pass recomputes are never samples, and they update no state.
    """

    scheme: Scheme
    n_steps: int
    gradient: str = "backprop"

    def __post_init__(self) -> None:
        if isinstance(self.gradient, bool):  # FixedGrid(scheme, n, checkpoint)
            object.__setattr__(self, "gradient", "checkpoint" if self.gradient else "backprop")
        check_gradient(self.gradient)

    @property
    def checkpoint(self) -> bool:
        """Whether backward recomputes each step from its stored input."""
        return self.gradient == "checkpoint"

    @property
    def units(self) -> int:
        """Rate evaluations per forward pass."""
        return self.scheme.evaluations(self.n_steps)

    def run(self, block: DepthParameters, x: Tensor, context: tuple) -> tuple[Tensor, IntegrationStats | None]:
        plan = block.stage_plan(self.scheme, self.n_steps)
        sampling = block.training and bool(block.state_names)
        samples: list[tuple[int, tuple[Tensor, ...]]] = []
        mode = self.gradient
        if mode in ("reversible", "adjoint") and not (torch.is_grad_enabled() and _needs_grad(block, x)):
            mode = "backprop"  # nothing to differentiate: the plain pass is the same computation
        values = block.values_at_stages(plan)
        rate = block.grid_rate(plan, samples if sampling else None, context, values=values)
        # context tensors that require grad (a learnable adjacency, conditioning features) are
        # differentiated like the weights: they enter the rate the backward pass re-evaluates
        learnable_context = tuple(c for c in context if isinstance(c, Tensor) and c.requires_grad)
        if mode in ("reversible", "adjoint"):
            _refuse_random_rate(block, mode)
        if mode == "reversible":
            params = tuple(t for row in values.parameters for t in row) + learnable_context
            out = solve_reversible(check_reversible(plan.scheme), rate, x, plan.schedule, params,
                                   backward_rate=block.grid_rate(plan, None, context, values=values, recompute=True),
                                   tolerance=block.reconstruction_tolerance, on_reconstruction=block.record_reconstruction)
        elif mode == "adjoint":
            params = tuple(c for _, c in block.coefficient_items()) + learnable_context
            out = solve_adjoint(plan.scheme, rate, x, plan.schedule, params,
                                backward_rate=block.rate_at_any_depth(context, recompute=True))
        else:
            out = solve_fixed_grid(plan.scheme, rate, x, plan.schedule, checkpoint=mode == "checkpoint").state
        if samples:
            collected = list(samples)
            samples.clear()  # evaluations recomputed during backward (checkpointing) are not samples
            block.update_state(plan, collected)
        return out, None


def _needs_grad(block: DepthParameters, x: Tensor) -> bool:
    return x.requires_grad or any(c.requires_grad for _, c in block.coefficient_items())


def _refuse_random_rate(block: DepthParameters, mode: str) -> None:
    """Reversible and adjoint backward passes evaluate the rate again: dropout would draw other masks."""
    if not block.training:
        return
    for name, module in block.template.named_modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            raise ValueError(
                f"gradient: {mode!r} evaluates the rate again in the backward pass, so the rate must be "
                f"deterministic; the template's {name or 'module'} ({type(module).__name__}, p={module.p}) draws "
                "new masks at every evaluation in training. Use gradient='checkpoint' (which replays the random "
                "state) or move the dropout out of the block"
            )


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

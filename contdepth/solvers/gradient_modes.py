"""How backward gets its gradients through a fixed grid: one object per mode, as diffrax's adjoints are.

[`Backprop`][contdepth.solvers.Backprop], [`Checkpoint`][contdepth.solvers.Checkpoint],
[`Reversible`][contdepth.solvers.Reversible] and [`Adjoint`][contdepth.solvers.Adjoint] each
say once which schemes they can run (``check``, called where a scheme is chosen: a block's
construction and every manifestation) and how to solve (``solve``). The strings
``"backprop"``, ``"checkpoint"``, ``"reversible"`` and ``"adjoint"`` stay as shorthands
([`gradient_mode`][contdepth.solvers.gradient_mode]).

Why objects: a mode carries its own settings (a reversible pass's reconstruction tolerance)
and its own checks, so a new mode is one class here instead of an ``if``/``elif`` at every
call site. What a mode learns while running (a reversible backward pass's reconstruction
error) goes into a [`ReconstructionLog`][contdepth.solvers.ReconstructionLog] its caller owns,
never into a module's ``__dict__``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from ..common.validate import check_number
from .fixed_grid import solve_fixed_grid
from .gradients import (
    GRADIENTS, RECONSTRUCTION_TOLERANCE, check_adjoint_scheme, check_gradient, check_reversible, solve_adjoint,
    solve_reversible,
)
from .scheme import Scheme, StageSchedule, Tensor
from .solution import IntegrationStats, ReconstructionLog, Solution
from .term import Term


class GradientMode(ABC):
    """One way to differentiate a fixed-grid integration (see `contdepth.solvers.gradients`)."""

    name: ClassVar[str]
    #: Whether the backward pass evaluates the rate again (then it must be deterministic).
    reevaluates: ClassVar[bool] = False

    def check(self, scheme: Scheme) -> Scheme:
        """``scheme`` if this mode can run it, else a one-line ``ValueError`` saying why and what can."""
        return scheme

    @abstractmethod
    def solve(self, scheme: Scheme, term: Term, x0: Tensor, schedule: StageSchedule, *,
              extra_parameters: tuple[Tensor, ...] = (), log: ReconstructionLog | None = None) -> Solution:
        """The [`Solution`][contdepth.solvers.Solution] of ``scheme`` on ``schedule`` from ``x0``, differentiable the
        mode's way; its ``stats`` count the evaluations the forward pass made.

        ``extra_parameters``: tensors the term closes over besides its own (a learnable
        graph adjacency passed as context) whose gradients are wanted.
        """

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Backprop(GradientMode):
    """Autograd through every step: stores every stage's activations."""

    name: ClassVar[str] = "backprop"

    def solve(self, scheme, term, x0, schedule, *, extra_parameters=(), log=None) -> Solution:
        return solve_fixed_grid(scheme, term, x0, schedule)


@dataclass(frozen=True)
class Checkpoint(GradientMode):
    """Stores each step's input and recomputes the step in backward (less memory, more time)."""

    name: ClassVar[str] = "checkpoint"

    def solve(self, scheme, term, x0, schedule, *, extra_parameters=(), log=None) -> Solution:
        return solve_fixed_grid(scheme, term, x0, schedule, checkpoint=True)


def _reevaluated(mode: GradientMode, scheme: Scheme, term: Term, x0: Tensor, schedule: StageSchedule,
                 parameters: tuple[Tensor, ...], solve: Callable[[], Tensor]) -> Solution:
    """What every mode whose backward pass evaluates the rate again does around its own ``solve``: the plain pass
    when there is no gradient to compute, a deterministic rate, and the forward pass's statistics (each stage once)."""
    if not _needs_graph(x0, parameters):
        return solve_fixed_grid(scheme, term, x0, schedule)
    _refuse_random(term, mode.name)
    return Solution(solve(), IntegrationStats(len(schedule.steps), sum(map(len, schedule.steps)), 0,
                                              schedule.step_ends))


def _needs_graph(x0: Tensor, parameters: tuple[Tensor, ...]) -> bool:
    """Whether there is a gradient to compute: without one the plain pass is the same computation."""
    return torch.is_grad_enabled() and (x0.requires_grad or any(p.requires_grad for p in parameters))


def _refuse_random(term: Term, mode: str) -> None:
    random = term.random_module()
    if random is not None:
        raise ValueError(
            f"gradient: {mode!r} evaluates the rate again in the backward pass, so the rate must be deterministic; "
            f"{random} draws new masks at every evaluation in training. Use gradient='checkpoint' (which replays "
            "the random state) or move the dropout out of the block"
        )


@dataclass(frozen=True)
class Reversible(GradientMode):
    """Stores nothing but the input and the final carry; backward rebuilds the states (reversible schemes).

    ``tolerance``: the largest relative error of the rebuilt input before the gradient is
    recomputed by backprop from the stored input (with a warning).
    """

    tolerance: float = RECONSTRUCTION_TOLERANCE
    name: ClassVar[str] = "reversible"
    reevaluates: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "tolerance", check_number(self.tolerance, "reconstruction_tolerance", low=0.0))

    def check(self, scheme: Scheme) -> Scheme:
        return check_reversible(scheme)

    def solve(self, scheme, term, x0, schedule, *, extra_parameters=(), log=None) -> Solution:
        parameters = term.grid_parameters() + tuple(extra_parameters)
        return _reevaluated(self, scheme, term, x0, schedule, parameters, lambda: solve_reversible(
            scheme, term, x0, schedule, parameters, backward_rate=term.recomputed(), tolerance=self.tolerance,
            on_reconstruction=None if log is None else log.record))


@dataclass(frozen=True)
class Adjoint(GradientMode):
    """The continuous adjoint: the backward pass solves the adjoint ODE on the reversed grid."""

    name: ClassVar[str] = "adjoint"
    reevaluates: ClassVar[bool] = True

    def check(self, scheme: Scheme) -> Scheme:
        return check_adjoint_scheme(scheme)

    def solve(self, scheme, term, x0, schedule, *, extra_parameters=(), log=None) -> Solution:
        parameters = term.depth_parameters() + tuple(extra_parameters)
        return _reevaluated(self, scheme, term, x0, schedule, parameters, lambda: solve_adjoint(
            scheme, term, x0, schedule, parameters, backward_rate=term.at_any_depth(recompute=True)))


MODES: dict[str, type[GradientMode]] = {"backprop": Backprop, "checkpoint": Checkpoint, "reversible": Reversible,
                                        "adjoint": Adjoint}
assert tuple(MODES) == GRADIENTS


def gradient_mode(value: str | GradientMode, checkpoint: bool = False, *,
                  tolerance: float | None = None) -> GradientMode:
    """A [`GradientMode`][contdepth.solvers.GradientMode] from an object or its shorthand string.

    ``checkpoint=True`` is the old flag for ``"checkpoint"``; ``tolerance`` is a reversible
    mode's reconstruction tolerance when ``value`` is the string ``"reversible"``.
    """
    if isinstance(value, GradientMode):
        if checkpoint and not isinstance(value, (Backprop, Checkpoint)):
            raise ValueError(f"checkpoint: checkpoint=True is gradient='checkpoint' and conflicts with "
                             f"gradient={value.name!r}")
        return Checkpoint() if checkpoint else value
    name = check_gradient(value, checkpoint)
    if name == "reversible" and tolerance is not None:
        return Reversible(tolerance)
    return MODES[name]()


__all__ = ["Adjoint", "Backprop", "Checkpoint", "GradientMode", "MODES", "ReconstructionLog", "Reversible",
           "gradient_mode"]

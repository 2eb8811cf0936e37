"""A rate as the schemes and gradient modes see it: a typed term, not a closure with attributes.

Why a class: a scheme may need more of a rate than ``f(t, x)``. RevNet's coupling evaluates
each half's rate from the other half alone (`part`), PolyNet's series applies the rate to
its own output with a normalisation per application (`application`), and a gradient mode
recomputes the rate in its backward pass without the forward pass's side effects
(`recomputed`, `at_any_depth`). A model that offers these subclasses [`Term`][contdepth.solvers.Term]
(a block's `BlockRate` in `contdepth.nn.rate`); a plain function is wrapped by
[`as_term`][contdepth.solvers.as_term] and offers the whole rate only. Schemes ask
``term.part_count`` / ``term.application_count`` and declare what they use in
``Scheme.term_needs``; nothing probes attributes with ``getattr``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .scheme import StageTime

Tensor = torch.Tensor


class Term:
    """The rate ``f(stage, x)`` and what its model offers beyond it.

    Attributes:
        part_count: halves whose rates `part` evaluates separately (0: none; 2 for a
            [`Coupling`][contdepth.nn.Coupling] template).
        part_dim: the dimension those halves split (``None``: not fixed by the model).
        application_count: applications `application` evaluates separately (0: none; a
            repeated template's, PolyNet's).
        term_count: terms of a field that is a sum, ``f = f_1 + ... + f_m``, that `term`
            evaluates one at a time (0: none; a transformer layer's attention and MLP), for
            splitting schemes.
    """

    part_count: int = 0
    part_dim: int | None = None
    application_count: int = 0
    term_count: int = 0

    def __call__(self, stage: StageTime, x: Tensor) -> Tensor:
        raise NotImplementedError

    def part(self, stage: StageTime, other_half: Tensor, i: int) -> Tensor:
        """The rate of half ``i`` (0: ``X``, 1: ``Y``) from the other half alone."""
        raise TypeError(f"{type(self).__name__}: this rate offers no halves (part_count is 0)")

    def application(self, stage: StageTime, x: Tensor, j: int) -> Tensor:
        """Application ``j`` of a repeated rate at ``x``."""
        raise TypeError(f"{type(self).__name__}: this rate offers no applications (application_count is 0)")

    def term(self, stage: StageTime, x: Tensor, i: int) -> Tensor:
        """Term ``i`` of a field that is a sum of terms, at ``x``."""
        raise TypeError(f"{type(self).__name__}: this rate offers no terms (term_count is 0)")

    # --- what gradient modes need ---------------------------------------------------------
    def recomputed(self) -> "Term":
        """The same evaluations for a backward pass: no samples taken, nothing of the model updated."""
        return self

    def at_any_depth(self, recompute: bool = False) -> "Term":
        """The rate at any exact stage time (an adjoint sweep's reversed grid, adaptive steps)."""
        return self

    def grid_parameters(self) -> tuple[Tensor, ...]:
        """The tensors this term's evaluations use whose gradients are wanted (a reversible pass's)."""
        return ()

    def depth_parameters(self) -> tuple[Tensor, ...]:
        """The tensors `at_any_depth`'s evaluations use whose gradients are wanted (the adjoint's)."""
        return self.grid_parameters()

    def random_module(self) -> str | None:
        """A submodule that draws new random numbers at every evaluation now (training dropout): its description."""
        return None


class FunctionTerm(Term):
    """A plain function ``f(stage, x)`` as a term; ``parameters`` are what a gradient mode differentiates."""

    def __init__(self, function: Callable[[StageTime, Tensor], Tensor], parameters: Sequence[Tensor] = ()) -> None:
        self.function = function
        self.parameters = tuple(parameters)

    def __call__(self, stage: StageTime, x: Tensor) -> Tensor:
        return self.function(stage, x)

    def grid_parameters(self) -> tuple[Tensor, ...]:
        return self.parameters


class SumTerm(Term):
    """A field given as its terms ``(f_1, ..., f_m)``: the whole rate is their sum, `term` evaluates one."""

    def __init__(self, terms: Sequence[Callable[[StageTime, Tensor], Tensor]], parameters: Sequence[Tensor] = ()) -> None:
        self.terms, self.parameters = tuple(terms), tuple(parameters)
        self.term_count = len(self.terms)

    def __call__(self, stage: StageTime, x: Tensor) -> Tensor:
        total = self.terms[0](stage, x)
        for f in self.terms[1:]:
            total = total + f(stage, x)
        return total

    def term(self, stage: StageTime, x: Tensor, i: int) -> Tensor:
        return self.terms[i](stage, x)

    def grid_parameters(self) -> tuple[Tensor, ...]:
        return self.parameters


def as_term(rate: Term | Callable[[StageTime, Tensor], Tensor]) -> Term:
    """``rate`` itself if it is a [`Term`][contdepth.solvers.Term], else a `FunctionTerm` around it."""
    return rate if isinstance(rate, Term) else FunctionTerm(rate)


__all__ = ["FunctionTerm", "SumTerm", "Term", "as_term"]

"""A block's normalisation state: the template's floating-point buffers as functions of depth.

As in Stateful ODE-Nets, BatchNorm's running mean and variance are coefficients in the
block's basis (``block.state``): in evaluation mode each stage reads them at its own depth, so
a trained model gives the same answers on every manifestation. In training mode each stage
evaluation samples the batch statistics at its depth, and after the pass the coefficients
move to the least-squares fit of the samples ([`NormState.update`][contdepth.nn.NormState.update]).
Integer buffers (``num_batches_tracked``) are shared over depth.

The state is read no deeper (or shallower) than it was sampled (`contdepth.nn.state_range`):
beyond that the fit is an extrapolation. The sampled range is a buffer of the *block*
(``state_depth_range``, where checkpoints have always kept it); this module keeps its exact
mirror (`range`) and the block writes the buffer when the range widens.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator

import torch
from torch import nn

from ..basis import DepthBasis, apply_matrix, projection_matrix
from ..common.compiling import eager
from .coefficient_tree import CoefficientTree
from .stage_plan import StagePlan
from .state_range import StateRange, unknown_range

Tensor = torch.Tensor


class NormState:
    """The depth-dependent statistics (``names``) and the shared integer buffers (``shared_names``) of a template.

    The buffers live in `tree` (the block registers it as ``state``, so ``state_dict`` keys read
    ``state.<template name>``); this object is not a module, so no buffer name of a template
    (a BatchNorm called ``range``) can clash with a method here. ``range`` mirrors the block's
    ``state_depth_range`` buffer (read every pass, no device sync); ``covers`` is the plan whose
    full sampling is known to lie inside it.
    """

    def __init__(self, names: tuple[str, ...] = (), shared_names: tuple[str, ...] = (),
                 tree: CoefficientTree | None = None) -> None:
        self.names, self.shared_names = tuple(names), tuple(shared_names)
        self.tree = CoefficientTree() if tree is None else tree
        self.range: StateRange | None = None
        self.covers: StagePlan | None = None

    @classmethod
    def from_template(cls, template: nn.Module, basis: DepthBasis) -> "NormState":
        """Buffers as depth functions that start constant at the template's own values."""
        buffers = list(template.named_buffers())
        state = cls(tuple(n for n, b in buffers if b.is_floating_point()),
                    tuple(n for n, b in buffers if not b.is_floating_point()))
        inverse = basis.collocation_inverse()
        values = dict(buffers)
        for name in state.names:
            value = values[name].detach()
            state.tree.set_buffer(name, apply_matrix(inverse, value.expand(basis.n, *value.shape).clone()))
        for name in state.shared_names:
            state.tree.set_buffer(name, values[name].detach().clone())
        return state

    def items(self) -> Iterator[tuple[str, Tensor]]:
        """``(template buffer name, depth coefficients)`` for the depth-dependent state."""
        for name in self.names:
            yield name, self.tree.get(name)

    def shared(self) -> dict[str, Tensor]:
        """The template's depth-independent (integer) buffers, by name."""
        return {name: self.tree.get(name) for name in self.shared_names}

    def depths(self, t0: float, t1: float) -> tuple[float, float] | None:
        """The sampled range as depths of ``[t0, t1]``: ``(shallowest, deepest)``; ``None``: never sampled."""
        if self.range is None:
            return None
        return t0 + (t1 - t0) * float(self.range.lo[0]), t0 + (t1 - t0) * float(self.range.hi[0])

    def stored_range(self, state_dict: dict, key: str) -> StateRange | None:
        """The range a state dict holds under ``key`` (``None``: none, or no state); a ``RuntimeError`` naming the key if bad."""
        if not self.names or key not in state_dict:
            return None
        try:
            return StateRange.decode(state_dict[key])
        except ValueError as exc:
            raise RuntimeError(f"{key}: {exc}") from exc

    @torch.no_grad()
    def loaded(self, stored: StateRange | None, key: str, state_dict: dict, missing_keys: list,
               range_buffer: Tensor | None) -> None:
        """After a load: mirror the range the state dict held (``stored``), or, saved before the range
        existed, make it unknown (the state is then read wherever a stage asks, as it was then)."""
        if not self.names:
            return
        if key not in state_dict:
            if key in missing_keys:
                missing_keys.remove(key)
            range_buffer.copy_(unknown_range())
        self.range, self.covers = stored, None

    @torch.no_grad()
    def update(self, plan: StagePlan, samples: list[tuple[int, tuple[Tensor | None, ...]]],
               basis: DepthBasis) -> None:
        """Move the coefficients to the least-squares fit of this pass's samples.

        Each sample is the module's own momentum update of the stage's state,
        ``(1 - m) * theta_state(t_i) + m * batch_stat_i``. With ``W`` the basis weights of the
        samples, ``c += pinv(W) (samples - W c)`` changes the coefficients only where the
        samples see them, and reduces to the usual running average when every stage reads one
        coefficient.

        A least-squares line through positive samples can still dip below zero at its ends,
        and BatchNorm then takes the square root of a negative number. So a *variance* (a
        buffer named ``running_var``) is kept, in a `convex` basis (piecewise constant or
        linear), no lower than the smallest variance this pass sampled: element by element
        its coefficients are raised to that floor, and the function, a convex combination of
        them, stays above it everywhere. Where the fit is positive nothing changes.
        """
        for j, (name, c) in enumerate(self.items()):
            # A one-half evaluation of a partitioned template samples only its half's state (None elsewhere).
            own = [(row, values[j]) for row, values in samples if values[j] is not None]
            if not own:
                continue
            rows = tuple(row for row, _ in own)
            correction = plan.pseudo_inverse(rows)
            w = plan.weights[list(rows)]
            y = torch.stack([value for _, value in own]).reshape(len(rows), -1)
            flat = c.view(c.shape[0], -1)
            residual = y - torch.as_tensor(w, dtype=c.dtype, device=c.device) @ flat
            flat += torch.as_tensor(correction, dtype=c.dtype, device=c.device) @ residual
            if basis.convex and name.rsplit(".", 1)[-1] == "running_var":
                torch.maximum(flat, y.min(dim=0).values, out=flat)

    def fit(self, plan: StagePlan, samples: list, basis: DepthBasis, range_buffer: Tensor | None) -> bool:
        """`update` with one pass's samples, then widen the sampled range to their depths; whether it widened.

        ``range_buffer``: the block's ``state_depth_range``, written when the range widens.
        """
        self.update(plan, samples, basis)
        return bool(samples) and plan is not self.covers and self.note_sampled(plan, samples, range_buffer)

    def widen(self, sampled: StateRange, range_buffer: Tensor | None = None) -> bool:
        """Include ``sampled`` in `range` (and in ``range_buffer``, the block's copy); whether that changed it."""
        if not self.names:
            return False
        widened = sampled.union(self.range)
        if widened == self.range:
            return False
        self.range = widened
        if range_buffer is not None:
            with torch.no_grad():
                range_buffer.copy_(widened.encode())
        return True

    @eager  # torch.compiler.disable, applied when compiling (importing dynamo costs 3 s)
    def note_sampled(self, plan: StagePlan, samples: list, range_buffer: Tensor | None = None) -> bool:
        """Widen the range to this pass's depths (eager: Fractions are never traced); whether it widened.

        Once a pass of ``plan`` sampled every row without widening anything, later passes of it
        cannot either: `covers` remembers it, so a steady training loop never comes here.
        """
        rows = {row for row, _ in samples}
        widened = self.widen(plan.sampled_range(rows), range_buffer)
        self.covers = None if widened or len(rows) < len(plan.row_span) else plan
        return widened

    def read_interval(self, basis: DepthBasis) -> tuple[Fraction, Fraction]:
        """The depths whose values are read: the sampled range, and for a discontinuous basis read from
        the inside of a piece at an end (a piecewise-constant cell sampled only at its left edge, from
        the right), that whole piece of ``basis``."""
        (lo, lo_side), (hi, hi_side) = self.range
        if not basis.continuous:
            if hi_side == 1:  # read from the right: the piece to the right of hi
                hi = min((b for b in basis.breakpoints if b > hi), default=Fraction(1))
            if lo_side == 0:  # read from the left: the piece to the left of lo
                lo = max((b for b in basis.breakpoints if b < lo), default=Fraction(0))
        return lo, hi

    @torch.no_grad()
    def change_basis(self, source: DepthBasis, target: DepthBasis, *, exact: bool) -> None:
        """Map every depth-dependent buffer from ``source`` onto ``target`` as the weights are mapped.

        Not ``exact`` (a projection) and sampled over part of the depth only: the best fit where the
        state is read; the extrapolation past the sampled depths, which nothing reads, must not pull
        the fit (a variance would go negative).
        """
        within = None
        if not exact and self.range is not None and not self.range.covers_all():
            within = self.read_interval(source)
        matrix = projection_matrix(source, target, within=within)
        for name, old in list(self.items()):
            self.tree.set_buffer(name, apply_matrix(matrix, old))


__all__ = ["NormState"]

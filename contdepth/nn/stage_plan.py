"""Where a manifestation evaluates ``theta``: its stage plan and the values there.

A [`StagePlan`][contdepth.nn.StagePlan] depends only on the manifestation (scheme, steps) and the basis, so a
block builds it once per manifestation and caches it; [`StageValues`][contdepth.nn.StageValues] are the
template's tensors at the plan's distinct stage values (what a fixed-grid forward pass and a
static export both use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator, NamedTuple

import numpy as np
import torch

from ..solvers import Scheme, StageSchedule

Tensor = torch.Tensor

DepthKey = tuple[Fraction, int]
"""A depth read from one side, totally ordered: ``(position in [0, 1], 0 left limit / 1 right limit)``.

A discontinuous depth function has two values at a jump; the key orders the left limit
just before the right one, so "the deepest depth sampled" is one key.
"""


def depth_key(position: Fraction, left: bool) -> DepthKey:
    """The `DepthKey` of reading depth ``position`` (of the interval) from the ``left`` side or not."""
    return (Fraction(position), 0 if left else 1)


@dataclass(frozen=True)
class StagePlan:
    """Where a manifestation evaluates ``theta``: its schedule and the basis weights there.

    Everything here depends only on the manifestation (scheme, steps, basis), so a block
    builds it once and caches it.

    Attributes:
        scheme, schedule: the manifestation's scheme and its exact stage times.
        row_of_point: schedule point index (`StageTime.index`) -> row of ``weights``.
        weights: ``(rows, n_basis)`` basis weights of each *distinct* stage value.
        one_hot: when every row selects one function: that function's index per row.
        row_span: per row, the lowest and highest `DepthKey` of the points reading it.
        state_weights: the basis weights the normalisation *state* is read with per row,
            when they differ from ``weights``: a point deeper (or shallower) than the
            state was ever sampled reads it at the deepest (shallowest) sampled depth.
            ``None``: the state is read where ``theta`` is.
        state_one_hot: ``one_hot`` of ``state_weights``.
    """

    scheme: Scheme
    schedule: StageSchedule
    row_of_point: tuple[int, ...]
    weights: np.ndarray
    one_hot: tuple[int, ...] | None
    row_span: tuple[tuple[DepthKey, DepthKey], ...] = ()
    state_weights: np.ndarray | None = None
    state_one_hot: tuple[int, ...] | None = None
    _as_tensor: dict = field(default_factory=dict, compare=False, repr=False)
    _pinv: dict = field(default_factory=dict, compare=False, repr=False)

    def pseudo_inverse(self, rows: tuple[int, ...]) -> np.ndarray:
        """``pinv(weights[rows])``, cached: the samples of one pass come in a fixed order."""
        found = self._pinv.get(rows)
        if found is None:
            found = self._pinv[rows] = np.linalg.pinv(self.weights[list(rows)])
        return found

    def weights_as(self, like: Tensor, *, state: bool = False) -> Tensor:
        """``weights`` (``state``: the state's weights) as a tensor with ``like``'s dtype and device (converted once)."""
        state = state and self.state_weights is not None
        key = (like.dtype, like.device, state)
        found = self._as_tensor.get(key)
        if found is None:
            found = self._as_tensor[key] = torch.as_tensor(self.state_weights if state else self.weights,
                                                           dtype=like.dtype, device=like.device)
        return found

    def evaluate(self, coefficients: Iterator[Tensor], *, state: bool = False) -> list[tuple[Tensor, ...]]:
        """For each distinct stage row, every coefficient tensor evaluated there (in order).

        ``state=True``: with the rows' `state_weights` (normalisation state).
        """
        rows = len(self.weights)
        one_hot = self.state_one_hot if state and self.state_weights is not None else self.one_hot
        columns: list[tuple[Tensor, ...]] = []
        for c in coefficients:
            if one_hot is not None:  # piecewise constant: views of the coefficients
                columns.append(tuple(c[k] for k in one_hot))
            else:  # one small matmul per tensor; unbind makes the per-row views in C++
                w = self.weights_as(c, state=state)
                columns.append((w @ c.reshape(c.shape[0], -1)).reshape(rows, *c.shape[1:]).unbind(0))
        return [tuple(column[r] for column in columns) for r in range(rows)]


class StageValues(NamedTuple):
    """The template's tensors at a plan's distinct stage values (see [`ContinuousBlock.values_at_stages`][contdepth.nn.ContinuousBlock.values_at_stages]).

    ``parameters[r]`` holds the values of `ContinuousBlock.parameter_names` at row
    ``r``, ``state[r]`` those of `ContinuousBlock.state_names` (``None`` without
    state), and ``shared`` the depth-independent buffers by name.
    """

    plan: StagePlan
    parameters: list[tuple[Tensor, ...]]
    state: list[tuple[Tensor, ...]] | None
    shared: dict[str, Tensor]

"""Where a manifestation evaluates ``theta``: its stage plan and the values there.

A [`StagePlan`][contdepth.nn.StagePlan] depends only on the manifestation (scheme, steps), the basis, the
depth interval and the state's sampled range, so a block builds it once per manifestation and caches it; [`StageValues`][contdepth.nn.StageValues] are the
template's tensors at the plan's distinct stage values (what a fixed-grid forward pass and a
static export both use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple

import numpy as np
import torch

from ..basis import DepthBasis
from ..solvers import Scheme, StageSchedule
from .state_range import DepthKey, StateRange, depth_key

if TYPE_CHECKING:  # for annotations only: the depth function builds on this module
    from .depth_function import DepthFunction


Tensor = torch.Tensor

@dataclass(frozen=True)
class StagePlan:
    """Where a manifestation evaluates ``theta``: its schedule and the basis weights there.

    Everything here depends only on the manifestation (scheme, steps), the basis, the interval
    and the sampled range of the state, so a block builds it once and caches it (`PlanCache`).

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

    def sampled_range(self, rows: set[int] | None = None) -> StateRange:
        """The depths ``rows`` (default: all) are read at, lowest to highest: what a pass sampling them samples."""
        spans = [self.row_span[r] for r in (range(len(self.row_span)) if rows is None else rows)]
        return StateRange(min(lo for lo, _ in spans), max(hi for _, hi in spans))

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
        state = state and self.state_weights is not None
        one_hot = self.state_one_hot if state else self.one_hot
        return evaluate_rows(len(self.weights), one_hot, coefficients, lambda c: self.weights_as(c, state=state))


def evaluate_rows(rows: int, one_hot: tuple[int, ...] | None, coefficients: Iterator[Tensor],
                  weights_as: Callable[[Tensor], Tensor]) -> list[tuple[Tensor, ...]]:
    """Coefficient tensors evaluated at ``rows`` depths: the one way stage values are computed.

    ``one_hot``: when every row selects one basis function, its index per row (the values are
    then views of the coefficients, exact); else ``weights_as(c)`` gives the ``(rows, n_basis)``
    weights as a tensor like ``c``, one small matmul per tensor.
    """
    columns: list[tuple[Tensor, ...]] = []
    for c in coefficients:
        if one_hot is not None:  # piecewise constant: views of the coefficients
            columns.append(tuple(c[k] for k in one_hot))
        else:  # unbind makes the per-row views in C++
            w = weights_as(c)
            columns.append((w @ c.reshape(c.shape[0], -1)).reshape(rows, *c.shape[1:]).unbind(0))
    return [tuple(column[r] for column in columns) for r in range(rows)]


def one_hot_rows(weights: np.ndarray) -> tuple[int, ...] | None:
    """When every row of ``weights`` selects one function: that function's index per row."""
    if np.all((weights == 0) | (weights == 1)) and np.all(weights.sum(axis=1) == 1):
        return tuple(int(k) for k in weights.argmax(axis=1))
    return None


def state_read_weights(basis: DepthBasis, key: DepthKey, weights: np.ndarray,
                       state_range: StateRange | None) -> np.ndarray:
    """The basis weights a stage at ``key`` reads the state with: ``theta``'s own ``weights`` inside the sampled
    range, else those of its nearest sampled end (a plan's rows and an any-depth rate both ask here)."""
    read = key if state_range is None else state_range.clamp(key)
    return weights if read == key else basis.weights(read[0], read[1] == 0)


def build_plan(scheme: Scheme, n_steps: int, depth: "DepthFunction", state_range: StateRange | None) -> StagePlan:
    """The plan of ``n_steps`` steps of ``scheme`` over ``depth``'s interval and basis, the state read inside ``state_range``."""
    basis = depth.basis
    schedule = scheme.schedule(n_steps, depth.t0, depth.t1)
    # A row is a distinct pair (theta's weights, the state's weights): they differ only
    # where a stage lies outside the depths the state was sampled at.
    rows: dict[tuple[tuple[float, ...], tuple[float, ...]], int] = {}
    row_of_point, spans = [], {}
    for exact, left in schedule.points:
        key = depth_key(depth.position(exact), left)
        weights_here = basis.weights(key[0], left)
        w = tuple(weights_here.tolist())
        w_state = tuple(state_read_weights(basis, key, weights_here, state_range).tolist())
        row = rows.setdefault((w, w_state), len(rows))
        row_of_point.append(row)
        lo, hi = spans.get(row, (key, key))
        spans[row] = (min(lo, key), max(hi, key))
    weights = np.array([w for w, _ in rows], dtype=float).reshape(len(rows), basis.n)
    state_weights = np.array([w for _, w in rows], dtype=float).reshape(len(rows), basis.n)
    clamped = not np.array_equal(weights, state_weights)
    return StagePlan(scheme, schedule, tuple(row_of_point), weights, one_hot_rows(weights),
                     row_span=tuple(spans[r] for r in range(len(rows))),
                     state_weights=state_weights if clamped else None,
                     state_one_hot=one_hot_rows(state_weights) if clamped else None)


class PlanCache:
    """A block's plans by (scheme, steps, basis, state range): built once per manifestation, at most `LIMIT` kept.

    Why a cache: building a plan does exact rational arithmetic per stage; a forward pass
    must not (and ``torch.compile`` must never trace it).
    """

    LIMIT = 64

    def __init__(self) -> None:
        self._plans: dict[tuple, StagePlan] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, scheme: Scheme, n_steps: int, depth: "DepthFunction", state_range: StateRange | None) -> StagePlan:
        key = (scheme, n_steps, depth.basis, depth.t0, depth.t1, state_range)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > self.LIMIT:
                self._plans.clear()
            plan = self._plans[key] = build_plan(scheme, n_steps, depth, state_range)
        return plan


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

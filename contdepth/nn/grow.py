"""Growing a stack in depth: the units (or cells) of a deeper stack mapped from a shallower one's.

A residual stack ``x <- x + f_k(x)`` (a ResNet stage's units ``x + body(x)``, a transformer layer's
two terms) grows by a *plan*: for each new unit, the old unit it copies and the factor on its
*output layers*, the last parameterised layer of each residual branch (a body's last conv or
norm, a term's output projection; multiplying its weight and bias by ``s`` multiplies the branch
by ``s``). The plans (`unit_plan`):

- ``interpolate``: unit ``k`` becomes ``factor`` copies with the output layers divided by
  ``factor``: forward Euler of the same ODE with the step divided by ``factor``;
- ``stack``: the whole stack repeated ``factor`` times (G_stack, Du et al. 2024, arXiv 2405.15319);
- ``zero``: after unit ``k``, ``factor - 1`` fresh units whose output layers are zero: each is the
  identity, so the stack computes exactly what it did.

`copy_units` applies a plan to a deeper stack built by its model
(the fresh units keep the model's own initialisation; copied units bring their buffers, a
BatchNorm's running statistics), `copy_cells` to the cells of a piecewise-constant
[`ContinuousBlock`][contdepth.nn.ContinuousBlock] with its normalisation state, and
`refine_matrix` is the matrix of ``block.refine()`` applied
``times`` times (``refine``: the same ``theta(t)`` on a basis ``2**times`` as fine), which `map_block`
applies to a block's coefficients and state. `last_layer`
picks a body's output layer as `units_to_block` does; `check_cell_growth` says whether a block can
grow by a method (before any work). Each also
says where every new parameter came from ([`ParameterSource`][contdepth.nn.ParameterSource]),
which `contdepth.train.grow` uses to carry the optimizer's state over. Nothing here knows a model:
a model names its units, their output layers, and builds the deeper stack from its own options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..basis import DepthBasis, apply_matrix, projection_matrix
from ..common.errors import OptionError
from ..common.validate import check_choice, check_int
from ..solvers import RungeKutta, Splitting
from .block import ContinuousBlock
from .state_range import DepthKey, StateRange
from .stored_layout import MAX_N_BASIS, MAX_N_STEPS

Tensor = torch.Tensor

#: The ways to grow depth and what each keeps of the model it grows.
GROWTH_METHODS: dict[str, str] = {
    "refine": "the depth function theta(t), exactly: on its old grid the model computes what it did",
    "interpolate": "the ODE: the same layers on a grid as many times finer (a discrete stack: each layer "
                   "repeated with its output layers divided by the factor)",
    "stack": "nothing: the stack repeated computes another function",
    "zero": "the function, exactly: the new layers are zero-initialised residual branches (identities)",
}
#: The largest growth factor in one call (grow again for more).
MAX_GROWTH_FACTOR = 16


def check_growth(method: object, factor: object) -> tuple[str, int]:
    """``(method, factor)`` checked: a `GROWTH_METHODS` name, an integer factor in 2..16 (a power of 2 to refine)."""
    method = check_choice(method, "method", GROWTH_METHODS)
    factor = check_int(factor, "factor", low=2, high=MAX_GROWTH_FACTOR)
    if method == "refine" and factor & (factor - 1):
        raise OptionError("factor", f"refine doubles the basis, so the factor must be a power of 2 (2, 4, 8, 16), "
                                    f"got {factor}")
    return method, factor


@dataclass(frozen=True)
class ParameterSource:
    """Where a new parameter came from: the old model's parameter ``name``, mapped linearly.

    ``new = scale * old``, or with a ``matrix`` ``new = matrix @ old`` along the first dimension (a
    block's basis dimension: a change of basis or of cells; a row of zeros is a freshly drawn cell).
    """

    name: str
    scale: float = 1.0
    matrix: np.ndarray | None = None

    def apply(self, value: Tensor, *, square: bool = False) -> Tensor:
        """``value`` (state shaped like the old parameter) mapped as the parameter was; ``square``: a
        second moment (an average of squares), mapped with the squared factor: with ``scale ** 2``, or
        when every row of ``matrix`` copies at most one old row, with its squared entries; otherwise
        (a refinement's averaging rows) with ``matrix`` itself, clamped at 0 as refinement maps it."""
        if self.matrix is None:
            return value * (self.scale ** 2 if square else self.scale)
        matrix = self.matrix
        if square and (np.count_nonzero(matrix, axis=1) <= 1).all():
            matrix = matrix * matrix
        out = apply_matrix(matrix, value)
        return out.clamp_(min=0) if square else out


@dataclass(frozen=True)
class UnitSource:
    """New unit from old unit ``index`` (``None``: freshly initialised) with its output layers times
    ``scale`` (0: zeroed); ``peer``: the old unit whose place it takes (its own index when copied)."""

    index: int | None
    scale: float
    peer: int


@dataclass(frozen=True)
class GrownModel:
    """A model's answer to a growth: the grown ``model``, the source of each of its parameters by name
    (``None``: freshly initialised), and for each fresh one the old parameter whose role it takes (``peers``)."""

    model: nn.Module
    sources: Mapping[str, ParameterSource | None]
    peers: Mapping[str, str]


def unit_plan(method: str, n: int, factor: int) -> tuple[UnitSource, ...]:
    """The new stack of ``interpolate``, ``stack`` or ``zero`` growth of ``n`` units by ``factor``."""
    if method == "interpolate":
        return tuple(UnitSource(k, 1.0 / factor, k) for k in range(n) for _ in range(factor))
    if method == "stack":
        return tuple(UnitSource(k, 1.0, k) for _ in range(factor) for k in range(n))
    if method == "zero":
        return tuple(s for k in range(n) for s in (UnitSource(k, 1.0, k), *[UnitSource(None, 0.0, k)] * (factor - 1)))
    raise OptionError("method", f"must be one of interpolate, stack, zero for a plan of units; got {method!r}")


def _is_output(name: str, outputs: Sequence[str]) -> bool:
    return name.rpartition(".")[0] in outputs


def last_layer(body: nn.Module) -> str:
    """The name of ``body``'s output layer: its last submodule (in registration order) that owns parameters,
    the layer `units_to_block` scales (a conv, a linear layer, or a norm's weight and bias: each is linear in
    them together, so multiplying them by ``s`` multiplies the body's output by ``s``)."""
    owners = [name for name, m in body.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners:
        raise OptionError("model", f"a residual body ({type(body).__name__}) has no parameters to grow")
    return owners[-1]


@torch.no_grad()
def copy_units(old: Sequence[nn.Module], new: Sequence[nn.Module], plan: Sequence[UnitSource],
               outputs: Sequence[str]) -> None:
    """Give each new unit its source's parameters and buffers, then scale its output layers (weight and bias).

    ``new`` is the deeper stack as its model built it (same unit type); a fresh unit keeps that
    initialisation, its output layers times its scale (zero: zeroed). ``outputs`` names each unit's
    output layers (``"attention.proj"``); every one must own parameters.
    """
    if len(new) != len(plan):
        raise ValueError(f"new: the plan has {len(plan)} units, the new stack {len(new)}")
    for unit, source in zip(new, plan):
        if source.index is not None:
            unit.load_state_dict(old[source.index].state_dict())
        for name in outputs:
            layer = unit.get_submodule(name)
            if not any(True for _ in layer.parameters(recurse=False)):
                raise ValueError(f"outputs: {name} owns no parameters to scale")
            for p in layer.parameters(recurse=False):
                if source.scale == 0:
                    p.zero_()
                else:
                    p.mul_(source.scale)


def unit_sources(plan: Sequence[UnitSource], names: Sequence[str], outputs: Sequence[str], prefix: str,
                 ) -> tuple[dict[str, ParameterSource | None], dict[str, str]]:
    """``(sources, peers)`` of the new stack's parameters, named ``f"{prefix}{j}.{name}"`` (``names``: a unit's own)."""
    sources: dict[str, ParameterSource | None] = {}
    peers: dict[str, str] = {}
    for j, source in enumerate(plan):
        for name in names:
            new = f"{prefix}{j}.{name}"
            if source.index is None:
                sources[new], peers[new] = None, f"{prefix}{source.peer}.{name}"
            else:
                scale = source.scale if _is_output(name, outputs) else 1.0
                sources[new] = ParameterSource(f"{prefix}{source.index}.{name}", scale)
    return sources, peers


def _check_cells(block: ContinuousBlock, role: str) -> None:
    if block.basis.name != "piecewise_constant":
        raise OptionError("method", f"stack and zero repeat or insert cells, which needs piecewise-constant weights; "
                                    f"the {role} block's are {block.basis.name} (their cells repeated would jump)")


def check_cell_growth(block: ContinuousBlock, method: str, factor: int) -> None:
    """Refuse, in one line, a growth of ``block`` that `copy_cells` or ``refine`` cannot do or that would leave a
    block's bounds: ``stack`` and ``zero`` need piecewise-constant cells, ``zero`` a one-step scheme (Runge-Kutta
    or splitting) with whole steps per cell (the grids on which an inserted zero cell is the identity)."""
    if method in ("stack", "zero") and block.basis.name != "piecewise_constant":
        raise OptionError("method", f"{method} repeats or inserts cells of a piecewise-constant theta(t); this "
                                    f"block's is {block.basis.name} (its cells repeated would jump): refine or "
                                    f"interpolate it")
    if method == "zero" and not isinstance(block.scheme, (RungeKutta, Splitting)):
        raise OptionError("method", f"zero keeps the function only under a one-step scheme (Runge-Kutta or "
                                    f"splitting), whose steps see their own cell alone; {block.scheme.name} does not")
    if method == "zero" and block.n_steps % block.n_basis:
        raise OptionError("method", f"zero keeps the function only when every cell holds whole steps; "
                                    f"{block.n_steps} steps on {block.n_basis} cells do not (give it a multiple of "
                                    f"{block.n_basis} steps first)")
    basis = block.basis
    for _ in range(factor.bit_length() - 1 if method == "refine" else 0):
        basis = basis.refined()
    cells = {"interpolate": block.n_basis, "refine": basis.n}.get(method, factor * block.n_basis)
    if cells > MAX_N_BASIS:
        raise OptionError("factor", f"{block.n_basis} cells grown by {factor} would be {cells}, over the "
                                    f"{MAX_N_BASIS} cells a block holds")
    if block.n_steps * factor > MAX_N_STEPS:
        raise OptionError("factor", f"{block.n_steps} steps grown by {factor} would be {block.n_steps * factor}, "
                                    f"over the {MAX_N_STEPS} steps of a block")


@torch.no_grad()
def copy_cells(old: ContinuousBlock, new: ContinuousBlock, plan: Sequence[UnitSource],
               outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """`copy_units` for the cells of piecewise-constant blocks (``outputs``: template layer names).

    Returns each template parameter's matrix, ``new = matrix @ old`` on its copied cells (a zero row
    for a fresh cell, which keeps ``new``'s draw, its output layers times the plan's scale).

    The normalisation state comes along: a copied cell's statistics are those its source read (its
    own; outside the depths the state was sampled at, the nearest sampled cell's), a fresh cell keeps
    ``new``'s own (the template's defaults: whatever they are, a zeroed output layer makes the cell
    add zero, in eval and in train mode); the shared counters are ``old``'s, and the sampled depths
    move with the cells (`mapped_range`). So every copied cell reads what its source read.
    """
    _check_cells(old, "old")
    _check_cells(new, "new")
    if new.n_basis != len(plan):
        raise ValueError(f"new: the plan has {len(plan)} cells, the new block {new.n_basis}")
    if new.state_names != old.state_names:
        raise ValueError(f"new: its state {new.state_names} is not the old block's {old.state_names}")
    olds = dict(old.coefficient_items())
    matrices = {}
    for name, coefficients in new.coefficient_items():
        output = _is_output(name, outputs)
        matrix = np.zeros((len(plan), old.n_basis))
        for j, source in enumerate(plan):
            scale = source.scale if output else 1.0
            if source.index is None and scale == 0:
                coefficients[j].zero_()
            elif source.index is None:
                coefficients[j].mul_(scale)
            else:
                matrix[j, source.index] = scale
        copied = [j for j, source in enumerate(plan) if source.index is not None]
        coefficients[copied] = apply_matrix(matrix[copied], olds[name].detach())
        matrices[name] = matrix
    copied = [j for j, source in enumerate(plan) if source.index is not None]
    reads = _read_cells(old.norm_state.range, old.n_basis)
    rows = [reads[plan[j].index] for j in copied]
    old_state = dict(old.state_items())
    for name, state in new.state_items():
        state[copied] = old_state[name][rows].to(state)
    for name, shared in new.shared_buffers().items():
        shared.copy_(old.shared_buffers()[name])
    if old.norm_state.range is not None:
        new.norm_state.widen(mapped_range(old.norm_state.range, plan, old.n_basis), new.state_depth_range)
    return matrices


def _cell(key: DepthKey, n: int) -> int:
    """The cell of ``n`` piecewise-constant cells a depth read from its side falls in."""
    position, side = key
    return min(max(math.ceil(position * n) - 1 if side == 0 else math.floor(position * n), 0), n - 1)


def _read_cells(sampled: StateRange | None, n: int) -> list[int]:
    """For each of ``n`` piecewise-constant cells, the cell whose state it reads: its own within the ``sampled``
    depths (all of them when ``None``: never sampled, read anywhere), else the nearest sampled end's."""
    if sampled is None:
        return list(range(n))
    lo, hi = _cell(sampled.lo, n), _cell(sampled.hi, n)
    return [min(max(k, lo), hi) for k in range(n)]


def mapped_range(sampled: StateRange, plan: Sequence[UnitSource], n: int) -> StateRange:
    """The depths (fractions of the interval) of ``n`` piecewise-constant cells ``sampled``, after ``plan``:
    its shallowest end in the first copy of its cell, its deepest in the last, at the same place in the cell."""
    def moved(key: DepthKey, last: bool) -> DepthKey:
        position, side = key
        cell = _cell(key, n)
        copies = [j for j, source in enumerate(plan) if source.index == cell]
        j = copies[-1] if last else copies[0]
        return (Fraction(j) + position * n - cell) / len(plan), side

    return StateRange(moved(sampled.lo, False), moved(sampled.hi, True))


@torch.no_grad()
def map_block(old: ContinuousBlock, new: ContinuousBlock, matrix: np.ndarray | None = None) -> None:
    """Give ``new`` ``old``'s coefficients and normalisation state, mapped by ``matrix`` along the basis
    dimension (``None``: as they are; `refine_matrix`'s: as ``block.refine()`` maps them), its shared
    counters and the depths its state was sampled at (fractions of the interval: a refinement keeps them)."""
    olds, states = dict(old.coefficient_items()), dict(old.state_items())
    for items, sources in ((new.coefficient_items(), olds), (new.state_items(), states)):
        for name, value in items:
            source = sources[name].detach()
            value.copy_(source if matrix is None else apply_matrix(matrix, source))
    for name, shared in new.shared_buffers().items():
        shared.copy_(old.shared_buffers()[name])
    if old.norm_state.range is not None:
        new.norm_state.widen(old.norm_state.range, new.state_depth_range)


def refine_matrix(basis: DepthBasis, times: int) -> tuple[np.ndarray, DepthBasis]:
    """``(matrix, refined basis)``: the map of ``block.refine()`` applied ``times`` times to a block of ``basis``."""
    matrix = np.eye(basis.n)
    for _ in range(times):
        finer = basis.refined()
        matrix, basis = projection_matrix(basis, finer) @ matrix, finer
    return matrix, basis


__all__ = ["GROWTH_METHODS", "MAX_GROWTH_FACTOR", "GrownModel", "ParameterSource", "UnitSource", "check_cell_growth",
           "check_growth", "copy_cells", "copy_units", "last_layer", "map_block", "mapped_range", "refine_matrix",
           "unit_plan", "unit_sources"]

"""Static manifestations: a model whose ContinuousBlocks are frozen into ordinary modules.

A live [`ContinuousBlock`][contdepth.nn.ContinuousBlock] evaluates ``theta(t)`` from its basis
coefficients on every call, picks the manifestation's plan from a cache keyed by exact
rationals and writes each stage's weights into a template on the meta device.  That is
what makes it continuous, and it is also what graph capturers (``torch.export``,
``torch.onnx.export``, ``torch.compile``) see as noise: dictionaries of Fractions,
numpy arrays and slot mutation.

[`freeze`][contdepth.export.freeze] removes all of it for one manifestation.  Each block becomes a
[`StaticBlock`][contdepth.export.StaticBlock] that owns, for every *distinct* stage value of its plan, a real
copy of the template whose parameters and normalisation statistics are ``theta`` and the
state evaluated at that stage time.  Its forward runs the same scheme's ``integrate``
over the same schedule and calls the copy of each stage, so the result is the same
function (to rounding), computed by a plain module tree in which the loop over stages
unrolls into a static graph.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from ..nn import ContinuousBlock, continuous_blocks, has_terms, is_partitioned, is_repeated
from ..nn.repeated import check_component_index, check_composing_training
from ..nn import manifest as manifest_model
from ..solvers import LMResNetScheme, Scheme, StageSchedule, StageTime, Term, solve_fixed_grid

Tensor = torch.Tensor


def _materialise(template: nn.Module, names: tuple[str, ...], values: Iterable[Tensor],
                 buffers: dict[str, Tensor], trainable: bool, frozen: frozenset[str] = frozenset()) -> nn.Module:
    """A real copy of the meta ``template`` holding ``values`` (in ``names`` order) and ``buffers``.

    Tied parameters (one tensor under several names) stay tied: every slot that held the
    same meta tensor receives the same new parameter. A parameter named in ``frozen`` (the
    block's coefficients of it have ``requires_grad=False``: a frozen layer) stays frozen
    even when ``trainable``.
    """
    unit = copy.deepcopy(template)
    by_name = {name: nn.Parameter(v.detach().clone(), requires_grad=trainable and name not in frozen)
               for name, v in zip(names, values)}
    canonical = {id(p): name for name, p in unit.named_parameters()}
    for name, p in list(unit.named_parameters(remove_duplicate=False)):
        owner_name, _, leaf = name.rpartition(".")
        owner = unit.get_submodule(owner_name) if owner_name else unit
        setattr(owner, leaf, by_name[canonical[id(p)]])  # a registered parameter's name: re-registers it
    for name, value in buffers.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = unit.get_submodule(owner_name) if owner_name else unit
        setattr(owner, leaf, value.detach().clone())  # a registered buffer's name: replaced, persistence kept
    left = [n for n, t in [*unit.named_parameters(), *unit.named_buffers()] if t.is_meta]
    if left:  # a tensor the block does not track (cannot happen for parameters and buffers)
        raise ValueError(f"template: tensors {', '.join(left)} have no value outside the meta device")
    return unit


class UnitsRate(Term):
    """A static block's rate: stage ``i`` calls unit ``row_of_point[i]``; halves and applications as its units offer them."""

    def __init__(self, units: nn.ModuleList, row_of_point: tuple[int, ...], context: tuple) -> None:
        self.units, self.rows, self.context = units, row_of_point, context
        if is_partitioned(units[0]):  # a Coupling: one half's rate at a time (revnet)
            self.part_count, self.part_dim = 2, units[0].dim
        elif has_terms(units[0]):  # a sum of terms: one at a time (splitting schemes)
            self.term_count = len(units[0].terms)
        elif is_repeated(units[0]):  # a norm of its own per application (polynet)
            self.application_count = len(units[0].applications)

    def __call__(self, stage: StageTime, y: Tensor) -> Tensor:
        return self.units[self.rows[stage.index]](y, *self.context)

    def part(self, stage: StageTime, half: Tensor, i: int) -> Tensor:
        check_component_index("part", i, self.part_count)
        return self.units[self.rows[stage.index]].part(i, half, *self.context)

    def term(self, stage: StageTime, y: Tensor, i: int) -> Tensor:
        check_component_index("term", i, self.term_count)
        return self.units[self.rows[stage.index]].term(i, y, *self.context)

    def application(self, stage: StageTime, y: Tensor, j: int) -> Tensor:
        check_component_index("application", j, self.application_count)
        return self.units[self.rows[stage.index]].application(j, y, *self.context)


class StaticBlock(nn.Module):
    """One manifestation of a [`ContinuousBlock`][contdepth.nn.ContinuousBlock], with ``theta`` evaluated in advance.

    ``units[r]`` is the template holding ``theta`` (and the depth-dependent normalisation
    state) at the ``r``-th distinct stage value of the plan; ``row_of_point[i]`` says which
    unit the ``i``-th evaluation point of the schedule calls.  For a piecewise-constant
    basis with euler and one step per cell this is exactly a ResNet stage (units scaled by
    ``h``); for a continuous basis with rk4 the shared end/start points of adjacent steps
    share a unit.

    The block computes the same function as the live block in its manifestation; it is
    an ordinary module (its weights are ``nn.Parameter`` objects, so it can be fine-tuned
    or compiled for training, as a discrete network: the units no longer share a basis).
    """

    def __init__(self, block: ContinuousBlock, *, trainable: bool = True) -> None:
        super().__init__()
        if not isinstance(block, ContinuousBlock):
            raise TypeError(f"block: expected a ContinuousBlock, got {type(block).__name__}")
        with torch.no_grad():
            values = block.values_at_stages()
            states = values.state if values.state is not None else [()] * len(values.parameters)
            frozen = frozenset(name for name, c in block.coefficient_items() if not c.requires_grad)
            self.units = nn.ModuleList(
                _materialise(block.template, block.parameter_names, values.parameters[row],
                             {**dict(zip(block.state_names, states[row])), **values.shared}, trainable, frozen)
                for row in range(len(values.parameters))
            )
        plan = values.plan
        self.scheme_name = plan.scheme.name
        self.n_steps = len(plan.schedule.steps)
        self.evaluations = sum(len(step) for step in plan.schedule.steps)  # rate calls per forward
        self.checkpoint = block.checkpoint
        self.row_of_point = tuple(plan.row_of_point)
        self._schedule: StageSchedule = plan.schedule
        self._scheme: Scheme = plan.scheme
        self._lm_k_kind = None
        if isinstance(plan.scheme, LMResNetScheme):
            self._register_lm_k(plan.scheme)
        self.train(block.training)

    def _register_lm_k(self, scheme: LMResNetScheme) -> None:
        """Make an LM-ResNet ``k`` that is a tensor part of this module's state.

        The live model keeps ``k`` as a parameter of the enclosing ``LMContinuousBlock``
        and the scheme holds a reference to it.  Registering the same tensor here (tied,
        not copied) lets exporters and ``torch.compile`` see it as module state instead of
        a captured constant, and keeps fine-tuning of ``k`` working.
        """
        k = scheme.k
        if isinstance(k, torch.Tensor):
            self._lm_k_kind = "tensor"
            self._register_tensor("lm_k", k)
        elif isinstance(k, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in k):
            self._lm_k_kind = "sequence"
            self._lm_k_floats = tuple(None if isinstance(v, torch.Tensor) else float(v) for v in k)
            for i, v in enumerate(k):
                if isinstance(v, torch.Tensor):
                    self._register_tensor(f"lm_k_{i}", v)

    def _register_tensor(self, name: str, value: Tensor) -> None:
        if isinstance(value, nn.Parameter):
            self.register_parameter(name, value)
        else:
            self.register_buffer(name, value)

    def _current_scheme(self) -> Scheme:
        if self._lm_k_kind == "tensor":
            return LMResNetScheme(self.lm_k)
        if self._lm_k_kind == "sequence":
            return LMResNetScheme([getattr(self, f"lm_k_{i}") if v is None else v
                                   for i, v in enumerate(self._lm_k_floats)])
        return self._scheme

    def forward(self, x: Tensor, *context: object) -> Tensor:
        rate = UnitsRate(self.units, self.row_of_point, context)
        scheme = self._current_scheme()
        if self.training and scheme.composes:  # the units' own statistics would see every application
            check_composing_training(scheme.name, self.units[0],
                                     [name for name, b in self.units[0].named_buffers() if b.is_floating_point()])
        return solve_fixed_grid(scheme, rate, x, self._schedule, checkpoint=self.checkpoint).state

    def extra_repr(self) -> str:
        return (f"scheme={self.scheme_name}, n_steps={self.n_steps}, evaluations={self.evaluations}, "
                f"units={len(self.units)}")


def freeze(model: nn.Module, scheme: str | Scheme | None = None, n_steps: int | None = None, *,
           trainable: bool = True, eval_mode: bool = True) -> nn.Module:
    """A static copy of ``model`` at the manifestation ``(scheme, n_steps)``.

    Every [`ContinuousBlock`][contdepth.nn.ContinuousBlock] of a deep copy is replaced by a [`StaticBlock`][contdepth.export.StaticBlock]
    (``scheme``/``n_steps`` default to each block's current ones); everything else (stem,
    stitches, head, LM-ResNet ``k``) is copied as it is.  ``model`` itself is not changed.

    Args:
        trainable: the stage weights are parameters with ``requires_grad=True`` (fine-tuning,
            ``torch.compile`` for training); ``False`` makes them frozen parameters. A template
            parameter the block holds frozen (``requires_grad=False``) stays frozen either way.
        eval_mode: return the copy in evaluation mode (what deployment wants: running
            statistics, no sampling of the normalisation state); ``False`` keeps the
            training flags of ``model``.

    The result contains no Fractions, numpy arrays or per-call plan lookups, so
    ``torch.export``, ``torch.onnx.export`` and ``torch.compile`` trace it into a graph
    in which the stages are unrolled.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not continuous_blocks(model):
        raise ValueError("model: contains no ContinuousBlock to freeze")
    work = copy.deepcopy(model)
    if scheme is not None or n_steps is not None:
        manifest_model(work, scheme, n_steps)
    if isinstance(work, ContinuousBlock):
        frozen: nn.Module = StaticBlock(work, trainable=trainable)
    else:
        frozen = work
        for name, module in list(work.named_modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, ContinuousBlock):
                    setattr(module, child_name, StaticBlock(child, trainable=trainable))
        if not trainable:
            for p in frozen.parameters():
                p.requires_grad_(False)
    if eval_mode:
        frozen.eval()
    return frozen


def static_blocks(model: nn.Module) -> list[StaticBlock]:
    """The [`StaticBlock`][contdepth.export.StaticBlock] modules of a frozen model, in module order."""
    return [m for m in model.modules() if isinstance(m, StaticBlock)]

"""A block's rate handed to its integration strategy: one typed [`BlockRate`][contdepth.nn.BlockRate].

``dx/dt = R(theta(t), x)`` evaluated at a stage: on a fixed grid the stage reads a
precomputed row of the [`StagePlan`][contdepth.nn.StagePlan]'s values; at any depth (adaptive
steps, an adjoint sweep) it evaluates ``theta`` and the state there. The rate offers what the
template offers: each half's rate of a [`Coupling`][contdepth.nn.Coupling] (`part`) and each
application of a repeated template (`application`), as methods of a
[`Term`][contdepth.solvers.Term], so schemes and gradient modes use it without knowing the
block. It holds the block's pieces (`RateSource`), never the block: a strategy cannot call
back into it. Normalisation samples taken by a training pass stay with the rate
(`take_samples`) for the block to fit after the pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..solvers import ReconstructionLog, StageTime, Term, reconstruct_fixed_grid
from .coupling import is_partitioned
from .depth_function import DepthFunction
from .norm_state import NormState
from .repeated import check_component_index, check_composing_training, is_repeated
from .terms import has_terms
from .stage_plan import StagePlan, StageValues, evaluate_rows, one_hot_rows, state_read_weights
from .template_call import TemplateCall

Tensor = torch.Tensor
# torch's dropout modules (their common base class is private): each draws a new mask per call in training.
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class Components(NamedTuple):
    """How a template is evaluated in parts: ``kind`` ``"part"`` (a Coupling's halves), ``"term"`` (a Terms
    template's) or ``"application"`` (a repeated template's), how many, the state indices each one samples,
    and a Coupling's split ``dim``."""

    kind: str
    count: int
    touched: tuple[frozenset[int], ...]
    dim: int | None = None


def components_of(template: nn.Module, state_names: tuple[str, ...]) -> Components | None:
    """The template's components, or ``None`` for an ordinary template.

    A component runs only its own submodule, so only the statistics under it are samples of
    that stage (a composing scheme refuses to train a repeated template with state outside
    every application).
    """
    if is_partitioned(template):
        kind, prefixes, dim = "part", template.parts, template.dim
    elif has_terms(template):
        kind, prefixes, dim = "term", template.terms, None
    elif is_repeated(template):
        kind, prefixes, dim = "application", template.applications, None
    else:
        return None
    touched = tuple(frozenset(j for j, name in enumerate(state_names) if name.startswith(prefix + "."))
                    for prefix in prefixes)
    return Components(kind, len(prefixes), touched, dim)


def random_module(template: nn.Module) -> str | None:
    """A submodule that draws new random masks at every evaluation in training: its description."""
    for name, module in template.named_modules():
        if isinstance(module, DROPOUTS) and module.p > 0:
            return f"the template's {name or 'module'} ({type(module).__name__}, p={module.p})"
    return None


@dataclass(frozen=True, eq=False)
class RateSource:
    """What a block's rates are made of, without the block: the template call, theta, the state and the mode."""

    call: TemplateCall
    depth: DepthFunction
    state: NormState
    training: bool
    components: Components | None
    log: ReconstructionLog | None = None


class BlockRate(Term):
    """The rate of one forward pass: on ``plan``'s grid (with its ``values``) or, without a plan, at any depth.

    ``samples`` (a list; training with normalisation state) collects each grid stage's updated
    statistics as ``(row, state)``. ``recompute=True`` is for evaluations a backward pass
    repeats: the modules update private copies of the statistics and counters, so nothing of
    the block changes.
    """

    def __init__(self, source: RateSource, context: tuple = (), *, plan: StagePlan | None = None,
                 values: StageValues | None = None, samples: list | None = None, recompute: bool = False) -> None:
        if source.call.template.training != source.training:  # the template is outside the module tree
            source.call.template.train(source.training)
        self.source, self.context, self.plan, self.samples, self.recompute = source, context, plan, samples, recompute
        if plan is not None and values is None:
            values = StageValues(plan, plan.evaluate(c for _, c in source.depth.items()),
                                 plan.evaluate((c for _, c in source.state.items()), state=True)
                                 if source.state.names else None, source.state.shared())
        self.values = values
        shared = list((values.shared if values is not None else source.state.shared()).values())
        self.shared = [v.clone() for v in shared] if recompute else shared
        self.copies = samples is not None or (recompute and source.training)
        components = source.components
        if components is not None:
            if components.kind == "part":
                self.part_count, self.part_dim = components.count, components.dim
            elif components.kind == "term":
                self.term_count = components.count
            else:
                self.application_count = components.count
        if samples is not None and plan is not None and plan.scheme.composes:
            check_composing_training(plan.scheme.name, source.call.template, source.state.names)

    # --- evaluation -----------------------------------------------------------------------------
    def __call__(self, stage: StageTime, x: Tensor) -> Tensor:
        return self._evaluate(stage, x)

    def part(self, stage: StageTime, other_half: Tensor, i: int) -> Tensor:
        check_component_index("part", i, self.part_count)
        return self._evaluate(stage, other_half, ("part", i))

    def application(self, stage: StageTime, x: Tensor, j: int) -> Tensor:
        check_component_index("application", j, self.application_count)
        return self._evaluate(stage, x, ("application", j))

    def term(self, stage: StageTime, x: Tensor, i: int) -> Tensor:
        check_component_index("term", i, self.term_count)
        return self._evaluate(stage, x, ("term", i))

    def _evaluate(self, stage: StageTime, x: Tensor, component: tuple[str, int] | None = None) -> Tensor:
        """The whole rate, one half's or one application's, with its state sample."""
        if self.plan is not None:
            row = self.plan.row_of_point[stage.index]
            params = self.values.parameters[row]
            state = self.values.state[row] if self.values.state is not None else None
        else:
            row, (params, state) = None, self._at_depth(stage)
        if state is not None:
            if self.copies:  # training: the module updates a private copy
                state = tuple(v.clone() for v in state)
            if self.samples is not None:  # a component samples only its own statistics
                own = None if component is None else self.source.components.touched[component[1]]
                self.samples.append((row, state if own is None else
                                     tuple(v if j in own else None for j, v in enumerate(state))))
        return self.source.call(x, params, state, self.shared, self.context, component=component)

    def _at_depth(self, stage: StageTime) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...] | None]:
        """``theta`` and the state at an exact stage time: the same evaluation as a plan's, for one row."""
        depth, state = self.source.depth, self.source.state
        key = depth.key(stage)
        w = depth.basis.weights(key[0], stage.left)
        params = _one_row(w, (c for _, c in depth.items()))
        if not state.names:
            return params, None
        w_state = state_read_weights(depth.basis, key, w, state.range)
        return params, _one_row(w_state, (c for _, c in state.items()))

    # --- what strategies and gradient modes need -------------------------------------------------
    def recomputed(self) -> "BlockRate":
        return BlockRate(self.source, self.context, plan=self.plan, values=self.values, recompute=True)

    def at_any_depth(self, recompute: bool = False) -> "BlockRate":
        return BlockRate(self.source, self.context, recompute=recompute)

    def grid_parameters(self) -> tuple[Tensor, ...]:
        if self.values is None:
            return self.depth_parameters()
        return tuple(t for row in self.values.parameters for t in row)

    def depth_parameters(self) -> tuple[Tensor, ...]:
        return tuple(c for _, c in self.source.depth.items())

    def learnable_context(self) -> tuple[Tensor, ...]:
        """Context tensors that require grad (a learnable adjacency): differentiated like the weights."""
        return tuple(c for c in self.context if isinstance(c, Tensor) and c.requires_grad)

    def random_module(self) -> str | None:
        return random_module(self.source.call.template) if self.source.training else None

    @property
    def interval(self) -> tuple[Fraction, Fraction]:
        return Fraction(self.source.depth.t0), Fraction(self.source.depth.t1)

    def breakpoints(self) -> tuple[Fraction, ...]:
        return self.source.depth.breakpoints()

    def reconstruct(self, out: Tensor) -> Tensor:
        """The input that gave ``out`` on this rate's grid, recomputed backwards with the scheme's ``step_back``.

        With ``revnet`` and a [`Coupling`][contdepth.nn.Coupling] template each step is undone exactly
        (``Y = Y+ - h G(X+)``, then ``X = X+ - h F(Y)``), to round-off, without storing anything
        from the forward pass. The shared counters the modules advance are put back.
        """
        plan = self.plan
        if plan.scheme.partitioned and self.part_count != 2:
            raise ValueError(
                f"reconstruct_input: {plan.scheme.name!r} undoes a step exactly only when each half's rate reads the "
                "other half alone; this block's template is not a Coupling (or alike), so the input cannot be rebuilt"
            )
        shared = self.source.state.shared()
        counters = {name: value.clone() for name, value in shared.items()}
        try:
            return reconstruct_fixed_grid(plan.scheme, self, out, plan.schedule)
        finally:
            with torch.no_grad():
                for name, value in shared.items():
                    value.copy_(counters[name])

    def take_samples(self) -> list:
        """The normalisation samples of the forward pass so far; later ones (a backward recomputation) are not kept."""
        if not self.samples:
            return []
        taken, self.samples = self.samples, []
        return taken


def _one_row(weights: np.ndarray, tensors) -> tuple[Tensor, ...]:
    row = weights.reshape(1, -1)
    return evaluate_rows(1, one_hot_rows(row), tensors,
                         lambda c: torch.as_tensor(row, dtype=c.dtype, device=c.device))[0]


__all__ = ["BlockRate", "Components", "RateSource", "components_of", "random_module"]

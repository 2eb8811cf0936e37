"""``ContinuousBlock``: any rate network with weights that are functions of depth.

``dx/dt = R(theta(t), x)`` on ``[t0, t1]`` where ``R`` is an ordinary module (the
*template*) and ``theta(t) = sum_k c_k phi_k(t)``.  The trainable values are the
coefficients ``c_k``; the template only supplies the architecture and the
initialiser.

A block is two parts:
- its **depth parameters**: basis, coefficients, depth-dependent normalisation state,
  their values at stage times ([`ContinuousBlock.stage_plan`][contdepth.nn.ContinuousBlock.stage_plan],
  [`ContinuousBlock.values_at_stages`][contdepth.nn.ContinuousBlock.values_at_stages]) and changes of basis (refine, project);
- an **integration strategy** (`contdepth.nn.integration`): a fixed grid (a
  *manifestation*: scheme and steps) or adaptive steps; it can change at any time
  without touching the weights.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..basis import DepthBasis, apply_matrix, make_basis, projection_matrix
from ..common.compiling import eager
from ..common.errors import OptionError
from ..common.validate import check_number
from ..solvers import (
    RECONSTRUCTION_TOLERANCE, IntegrationStats, Scheme, StageTime, StepController, check_adjoint_scheme,
    check_gradient, check_n_steps, check_reversible, get_scheme, reconstruct_fixed_grid,
)
from .integration import Adaptive, FixedGrid, Integration
from .coefficient_tree import CoefficientTree
from .coupling import is_partitioned
from .repeated import check_component_index, check_composing_training, is_repeated
from .retired import retire
from .stage_plan import StagePlan, StageValues, depth_key
from .state_range import StateRange, unknown_range
from .stored_layout import steps_for, stored_basis_size
from .template_call import TemplateCall

Tensor = torch.Tensor
Initializer = Callable[[nn.Module], None]
Rate = Callable[[StageTime, Tensor], Tensor]


@dataclass(frozen=True)
class CoefficientMap:
    """How a basis change mapped the coefficients: ``new = matrix @ old`` per parameter.

    ``pairs`` lists ``(old_parameter, new_parameter)`` so that per-parameter state
    kept elsewhere (optimizer momentum, Adam moments) can be mapped with the same
    linear operator.
    """

    matrix: np.ndarray
    pairs: tuple[tuple[nn.Parameter, nn.Parameter], ...]


def reset_template_parameters(template: nn.Module) -> None:
    """Redraw every parameter of ``template`` with its modules' own ``reset_parameters``."""
    uncovered = []
    for name, module in template.named_modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        elif any(True for _ in module.parameters(recurse=False)):
            uncovered.append(name or type(module).__name__)
    if uncovered:
        raise ValueError(
            f"template: submodule(s) {', '.join(uncovered)} own parameters but define no "
            "reset_parameters(), so independent draws per basis function are impossible; "
            "add reset_parameters() or pass initializer="
        )


class _Manifestation:
    """Returned by [`ContinuousBlock.manifest`][contdepth.nn.ContinuousBlock.manifest]; as a context manager it restores the old grid."""

    def __init__(self, block: "ContinuousBlock", previous: FixedGrid) -> None:
        self._block, self._previous = block, previous

    def __enter__(self) -> "ContinuousBlock":
        return self._block

    def __exit__(self, *exc: object) -> None:
        # the scheme and steps come back; a checkpoint flag set meanwhile stays set
        block = self._block
        block.grid = FixedGrid(self._previous.scheme, self._previous.n_steps, block.gradient)


class ContinuousBlock(nn.Module):
    """An ODE block ``dx/dt = template(x; theta(t))`` with depth-dependent weights.

    Args:
        template: any module mapping a state to a rate of the same shape.  Each of its
            parameters becomes coefficients of shape ``(n_basis, *param.shape)``; one with
            ``requires_grad=False`` stays frozen: its own value at every depth, no gradient,
            through refine, project and loading.
            Floating-point buffers (BatchNorm running statistics) become depth-dependent
            state in the same basis (see "Normalisation state" below).
        basis: ``"piecewise_constant"``, ``"piecewise_linear"``, ``"legendre"`` or a
            [`DepthBasis`][contdepth.basis.DepthBasis].
        n_basis: number of basis functions.
        scheme: integration scheme name or object (see ``available_schemes()``).
        n_steps: integration steps; defaults to ``n_basis``.
        t0: where the depth interval starts.
        t1: where it ends.
        checkpoint: recompute steps during backward to save activation memory (the same as
            ``gradient="checkpoint"``).
        gradient: how backward gets its gradients: ``"backprop"``, ``"checkpoint"``,
            ``"reversible"`` (no stored activations; a reversible scheme such as
            ``reversible_heun``, ``alf`` or ``revnet``) or ``"adjoint"`` (the continuous
            adjoint); see `contdepth.solvers.gradients`.
        reconstruction_tolerance: ``"reversible"``: the largest relative error of the
            rebuilt input before a backward pass falls back to backprop (with a warning);
            `reconstruction_error` holds the last backward pass's error.
        initializer: redraws the template's parameters in place; called once per basis
            function so every function gets an independent draw.  Defaults to the
            modules' own ``reset_parameters``.

    Initialisation: ``n_basis`` independent draws of the template's parameters are
    taken as the values of ``theta`` at the basis' collocation points (cell centres,
    nodes, Gauss points), so ``theta(t)`` starts with the template's own distribution
    there, and no two basis functions start identical.

    Normalisation state (as in Stateful ODE-Nets): a template's floating-point buffers,
    such as BatchNorm's running mean and variance, are coefficients in the same basis
    (``block.state``).  In evaluation mode each stage reads them at its own depth, so a
    trained model gives the same answers on every manifestation.  In training mode every
    stage evaluation is a sample of the batch statistics at its depth; after the forward
    pass the coefficients move towards the least-squares fit of those samples, by the
    module's momentum (per cell for a piecewise-constant basis: the average of the
    cell's samples).  Refinement and projection map the state with the same matrix as
    the weights.  Integer buffers (``num_batches_tracked``) are shared over depth.
    The state is read no deeper (or shallower) than it was ever sampled
    ([`state_depths`][contdepth.nn.ContinuousBlock.state_depths]; see `contdepth.nn.state_range`): beyond that the fit is an
    extrapolation, and a variance extrapolated from a 2-step Euler grid to ``t = 1`` can be
    negative.
    """

    _state_range: StateRange | None = None  # mirrors the buffer state_depth_range (read every pass, no device sync)
    _range_covers: StagePlan | None = None  # the plan whose full sampling is known to lie inside the range

    def __init__(
        self,
        template: nn.Module,
        *,
        basis: str | DepthBasis = "piecewise_constant",
        n_basis: int = 4,
        scheme: str | Scheme = "rk4",
        n_steps: int | None = None,
        t0: float = 0.0,
        t1: float = 1.0,
        checkpoint: bool = False,
        initializer: Initializer | None = None,
        gradient: str = "backprop",
        reconstruction_tolerance: float = RECONSTRUCTION_TOLERANCE,
    ) -> None:
        super().__init__()
        if not isinstance(template, nn.Module):
            raise TypeError(f"template: expected an nn.Module, got {type(template).__name__}")
        names = [name for name, _ in template.named_parameters()]
        if not names:
            raise ValueError("template: has no parameters, so there is nothing to vary with depth")
        if not (isinstance(t0, (int, float)) and isinstance(t1, (int, float)) and t1 > t0):
            raise ValueError(f"t1: the depth interval needs t1 > t0, got t0={t0!r}, t1={t1!r}")
        self.basis = make_basis(basis, n_basis)
        self.t0, self.t1 = float(t0), float(t1)
        buffers = list(template.named_buffers())
        self.parameter_names: tuple[str, ...] = tuple(names)
        self.state_names: tuple[str, ...] = tuple(name for name, b in buffers if b.is_floating_point())
        self.shared_names: tuple[str, ...] = tuple(name for name, b in buffers if not b.is_floating_point())
        self.coefficients = self._initial_coefficients(template, initializer or reset_template_parameters)
        self.state = self._initial_state(template)
        self._state_range = None
        self._range_covers = None
        if self.state_names:
            self.register_buffer("state_depth_range", unknown_range())
        # The template is kept only for its architecture: its own parameters are never
        # used (theta(t) is substituted), so it lives on the meta device and outside the
        # module tree (no parameters(), state_dict() or .to() for it).
        meta = copy.deepcopy(template).to("meta")
        object.__setattr__(self, "_call", TemplateCall(meta, self.parameter_names, self.state_names,
                                                       self.shared_names))
        self._plan_cache: dict[tuple, StagePlan] = {}
        self._integration: Integration | None = None  # None: the grid
        self.reconstruction_tolerance = check_number(reconstruction_tolerance, "reconstruction_tolerance", low=0.0)
        self.reconstruction_error: float | None = None
        gradient = check_gradient(gradient, bool(checkpoint))
        resolved = get_scheme(scheme)
        if gradient == "reversible":
            check_reversible(resolved)
        elif gradient == "adjoint":
            check_adjoint_scheme(resolved)
        self.grid = FixedGrid(resolved, check_n_steps(self.basis.n if n_steps is None else n_steps), gradient)

    # --- depth parameters ---------------------------------------------------------------
    def _initial_coefficients(self, template: nn.Module, initializer: Initializer) -> nn.Module:
        """Coefficients from ``n_basis`` draws at the collocation points; frozen parameters stay as given.

        A template parameter with ``requires_grad=False`` is a frozen layer: ``theta(t)`` holds
        its own value at every depth (not a fresh draw per function, which would be random
        features nobody asked for) and every coefficient of it keeps ``requires_grad=False``.
        """
        draws: dict[str, list[Tensor]] = {name: [] for name in self.parameter_names}
        given = dict(template.named_parameters())
        work = copy.deepcopy(template)
        with torch.no_grad():
            for _ in range(self.basis.n):
                initializer(work)
                for name, p in work.named_parameters():
                    draws[name].append((p if given[name].requires_grad else given[name]).detach().clone())
        inverse = self._collocation_inverse()
        tree = CoefficientTree()
        for name in self.parameter_names:
            stacked = torch.stack(draws[name])
            tree.set(name, nn.Parameter(apply_matrix(inverse, stacked), requires_grad=given[name].requires_grad))
        return tree

    def _collocation_inverse(self) -> np.ndarray:
        """Maps values at the collocation points to coefficients: ``theta(point_j) = value_j``."""
        colloc = np.stack(
            [self.basis.weights(Fraction(float(p))) for p in self.basis.collocation_points()]
        )
        return np.linalg.inv(colloc)

    def _initial_state(self, template: nn.Module) -> nn.Module:
        """Buffers as depth functions that start constant at the template's own values."""
        inverse = self._collocation_inverse()
        tree = CoefficientTree()
        buffers = dict(template.named_buffers())
        for name in self.state_names:
            value = buffers[name].detach()
            tree.set_buffer(name, apply_matrix(inverse, value.expand(self.basis.n, *value.shape).clone()))
        for name in self.shared_names:
            tree.set_buffer(name, buffers[name].detach().clone())
        return tree

    def state_items(self) -> Iterator[tuple[str, Tensor]]:
        """``(template buffer name, depth coefficients)`` for the depth-dependent state."""
        for name in self.state_names:
            yield name, self.state.get(name)

    def coefficient_items(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(template parameter name, coefficients)`` pairs, in the template's order."""
        for name in self.parameter_names:
            yield name, self.coefficients.get(name)

    def shared_buffers(self) -> dict[str, Tensor]:
        """The template's depth-independent (integer) buffers, by name."""
        return {name: self.state.get(name) for name in self.shared_names}

    @property
    def template(self) -> nn.Module:
        """The template's architecture (on the meta device: its own tensors are placeholders)."""
        return self._call.template

    @property
    def n_basis(self) -> int:
        return self.basis.n

    def theta(self, t: float | Fraction, *, left: bool = False) -> dict[str, Tensor]:
        """The template's parameters at depth ``t`` (in ``[t0, t1]``)."""
        position = (Fraction(t) - Fraction(self.t0)) / (Fraction(self.t1) - Fraction(self.t0))
        return {name: self.basis.evaluate(c, position, left=left) for name, c in self.coefficient_items()}

    def breakpoints(self) -> tuple[Fraction, ...]:
        """Depths in ``(t0, t1)`` where ``theta`` may jump or bend: no adaptive step crosses one."""
        t0, span = Fraction(self.t0), Fraction(self.t1) - Fraction(self.t0)
        return tuple(t0 + span * bp for bp in self.basis.breakpoints)

    def stage_plan(self, scheme: Scheme | None = None, n_steps: int | None = None) -> StagePlan:
        """The [`StagePlan`][contdepth.nn.StagePlan] of a manifestation (default: the block's grid), cached."""
        scheme = self.grid.scheme if scheme is None else scheme
        n_steps = self.grid.n_steps if n_steps is None else n_steps
        key = (scheme, n_steps, self.basis, self._state_range)
        plan = self._plan_cache.get(key)
        if plan is None:
            plan = self._build_plan(scheme, n_steps)
            if len(self._plan_cache) > 64:
                self._plan_cache.clear()
            self._plan_cache[key] = plan
        return plan

    def _build_plan(self, scheme: Scheme, n_steps: int) -> StagePlan:
        schedule = scheme.schedule(n_steps, self.t0, self.t1)
        t0, span = Fraction(self.t0), Fraction(self.t1) - Fraction(self.t0)
        # A row is a distinct pair (theta's weights, the state's weights): they differ only
        # where a stage lies outside the depths the state was sampled at.
        rows: dict[tuple[tuple[float, ...], tuple[float, ...]], int] = {}
        row_of_point, spans = [], {}
        for exact, left in schedule.points:
            key = depth_key((exact - t0) / span, left)
            w = tuple(self.basis.weights(key[0], left).tolist())
            read = key if self._state_range is None else self._state_range.clamp(key)
            w_state = w if read == key else tuple(self.basis.weights(read[0], read[1] == 0).tolist())
            row = rows.setdefault((w, w_state), len(rows))
            row_of_point.append(row)
            lo, hi = spans.get(row, (key, key))
            spans[row] = (min(lo, key), max(hi, key))
        weights = np.array([w for w, _ in rows], dtype=float).reshape(len(rows), self.basis.n)
        state_weights = np.array([w for _, w in rows], dtype=float).reshape(len(rows), self.basis.n)
        clamped = not np.array_equal(weights, state_weights)
        return StagePlan(scheme, schedule, tuple(row_of_point), weights, _one_hot(weights),
                         row_span=tuple(spans[r] for r in range(len(rows))),
                         state_weights=state_weights if clamped else None,
                         state_one_hot=_one_hot(state_weights) if clamped else None)

    def values_at_stages(self, plan: StagePlan | None = None) -> StageValues:
        """The template's parameters and state at every distinct stage value of ``plan``.

        This is what a static export ([`freeze`][contdepth.export.freeze]) materialises: one
        ordinary module per row, ``plan.row_of_point`` saying which row each stage calls.
        The tensors are views or functions of the coefficients (differentiable).
        """
        plan = self.stage_plan() if plan is None else plan
        parameters = plan.evaluate(c for _, c in self.coefficient_items())
        state = plan.evaluate((c for _, c in self.state_items()), state=True) if self.state_names else None
        return StageValues(plan, parameters, state, self.shared_buffers())

    def _values_at(self, weights: np.ndarray, tensors: Iterator[Tensor]) -> tuple[Tensor, ...]:
        """Each coefficient tensor evaluated with one row of basis weights."""
        nonzero = np.flatnonzero(weights)
        if len(nonzero) == 1 and weights[nonzero[0]] == 1.0:  # one function: a view, exact
            k = int(nonzero[0])
            return tuple(c[k] for c in tensors)
        out = []
        for c in tensors:
            w = torch.as_tensor(weights, dtype=c.dtype, device=c.device)
            out.append((w @ c.reshape(c.shape[0], -1)).reshape(c.shape[1:]))
        return tuple(out)

    # --- rate functions for the strategies ------------------------------------------------
    def _sync_template_mode(self) -> None:
        if self.template.training != self.training:  # the template is outside the module tree
            self.template.train(self.training)

    def grid_rate(self, plan: StagePlan, samples: list | None, context: tuple = (), *,
                  values: StageValues | None = None, recompute: bool = False) -> Rate:
        """The rate on a fixed grid: stage ``i`` reads the precomputed row ``plan.row_of_point[i]``.

        With ``samples`` (a list; training mode with normalisation state) each stage's
        updated statistics are appended as ``(row, state)`` for [`update_state`][contdepth.nn.ContinuousBlock.update_state].
        ``values``: the stage values to use (default: computed now). ``recompute=True``
        is for evaluations a backward pass repeats: the modules update private copies of
        the statistics and counters, so nothing of the block changes.
        """
        self._sync_template_mode()
        values = self.values_at_stages(plan) if values is None else values
        params, states, call = values.parameters, values.state, self._call
        shared = list(values.shared.values())
        if recompute:
            shared = [v.clone() for v in shared]
        copies = samples is not None or (recompute and self.training)
        row_of_point = plan.row_of_point

        components = self._components()
        touched = components[1] if components else None
        if samples is not None and plan.scheme.composes:
            check_composing_training(plan.scheme.name, self.template, self.state_names)

        def evaluate(stage: StageTime, x: Tensor, component: tuple[str, int] | None = None) -> Tensor:
            """The whole rate, one half's (a partitioned template) or one application's, with its state sample."""
            row = row_of_point[stage.index]
            stage_state = None
            if states is not None:
                stage_state = states[row]
                if copies:  # training: the module updates a private copy
                    stage_state = tuple(v.clone() for v in stage_state)
                if samples is not None:  # a component samples only its own statistics
                    own = None if component is None else touched[component[1]]
                    samples.append((row, stage_state if own is None else
                                    tuple(v if j in own else None for j, v in enumerate(stage_state))))
            return call(x, params[row], stage_state, shared, context, component=component)

        def rate(stage: StageTime, x: Tensor) -> Tensor:
            return evaluate(stage, x)

        if components is not None:
            self._attach_components(rate, components[0], evaluate)
        return rate

    def _components(self) -> tuple[str, tuple[frozenset[int], ...]] | None:
        """``(kind, state indices each component samples)`` for a template evaluated in components.

        ``kind`` is ``"part"`` for a partitioned template ([`Coupling`][contdepth.nn.Coupling]:
        one half's rate at a time) and ``"application"`` for a repeated one
        (`contdepth.nn.repeated`: PolyNet's rate with a norm per application);
        ``None`` for an ordinary template. A component runs only its own submodule, so only
        the statistics under it are samples of that stage (a composing scheme refuses to
        train a repeated template with state outside every application).
        """
        if is_partitioned(self.template):
            kind, prefixes = "part", self.template.parts
        elif is_repeated(self.template):
            kind, prefixes = "application", self.template.applications
        else:
            return None
        return kind, tuple(frozenset(j for j, name in enumerate(self.state_names) if name.startswith(prefix + "."))
                           for prefix in prefixes)

    def _attach_components(self, rate: Rate, kind: str, evaluate: Callable) -> None:
        """Offer ``rate.part`` (halves, with the ``dim`` they split) or ``rate.application`` to the schemes."""
        count = len(self.template.parts if kind == "part" else self.template.applications)

        def component(stage: StageTime, x: Tensor, i: int) -> Tensor:
            check_component_index(kind, i, count)
            return evaluate(stage, x, (kind, i))

        if kind == "part":
            component.dim = self.template.dim  # type: ignore[attr-defined]  (the halves the template splits)
        setattr(rate, kind, component)

    def rate_at_any_depth(self, context: tuple = (), *, recompute: bool = False) -> Rate:
        """The rate at any exact stage time (adaptive steps, adjoint sweeps), reading ``theta`` and the state there.

        ``recompute=True``: the modules update private copies of the statistics and counters.
        """
        self._sync_template_mode()
        t0, span = Fraction(self.t0), Fraction(self.t1) - Fraction(self.t0)
        shared = list(self.shared_buffers().values())
        if recompute:
            shared = [v.clone() for v in shared]
        copies = recompute and self.training
        has_state, call = bool(self.state_names), self._call

        def rate(stage: StageTime, x: Tensor, component: tuple[str, int] | None = None) -> Tensor:
            key = depth_key((stage.exact - t0) / span, stage.left)
            w = self.basis.weights(key[0], stage.left)
            values = self._values_at(w, (c for _, c in self.coefficient_items()))
            stage_state = None
            if has_state:
                read = key if self._state_range is None else self._state_range.clamp(key)
                w_state = w if read == key else self.basis.weights(read[0], read[1] == 0)
                stage_state = self._values_at(w_state, (c for _, c in self.state_items()))
            if copies and stage_state is not None:
                stage_state = tuple(v.clone() for v in stage_state)
            return call(x, values, stage_state, shared, context, component=component)

        components = self._components()
        if components is not None:
            self._attach_components(rate, components[0], rate)
        return rate

    @torch.no_grad()
    def update_state(self, plan: StagePlan, samples: list[tuple[int, tuple[Tensor, ...]]]) -> None:
        """Move the state coefficients to the least-squares fit of this pass's samples.

        Each sample is the module's own momentum update of the stage's state,
        ``(1 - m) * theta_state(t_i) + m * batch_stat_i``.  With ``W`` the basis weights
        of the samples, ``c += pinv(W) (samples - W c)`` changes the coefficients only
        where the samples see them, and reduces to the usual running average when
        every stage reads one coefficient.

        A least-squares line through positive samples can still dip below zero at its
        ends (a variance that falls steeply from ``t = 0`` on, say), and BatchNorm then
        takes the square root of a negative number. So a *variance* (a buffer named
        ``running_var``, as torch's batch and instance norms name it) is kept, in a
        `convex` basis (piecewise constant or linear),
        no lower than the smallest variance this pass sampled: element by element its
        coefficients are raised to that floor, and the function, a convex combination of
        them, stays above it everywhere. Where the fit is positive nothing changes.
        """
        floor_basis = self.basis.convex
        for j, (name, c) in enumerate(self.state_items()):
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
            if floor_basis and name.rsplit(".", 1)[-1] == "running_var":
                torch.maximum(flat, y.min(dim=0).values, out=flat)
        if samples and plan is not self._range_covers:  # an identity check: free under torch.compile
            self._note_sampled(plan, samples)

    @eager  # torch.compiler.disable, applied when compiling (importing dynamo costs 3 s)
    def _note_sampled(self, plan: StagePlan, samples: list) -> None:
        """Widen the sampled range to this pass's depths (eager: Fractions are never traced).

        Once a pass of ``plan`` sampled every row without widening anything, later passes
        of it cannot either: ``_range_covers`` remembers it, so a steady training loop
        never comes here (no graph break per step).
        """
        rows = {row for row, _ in samples}
        widened = self._widen_state_range(StateRange(min(plan.row_span[r][0] for r in rows),
                                                     max(plan.row_span[r][1] for r in rows)))
        self._range_covers = None if widened or len(rows) < len(plan.row_span) else plan

    @property
    def state_depths(self) -> tuple[float, float] | None:
        """The depths ``(shallowest, deepest)`` the normalisation state has been sampled at; ``None``: not yet.

        Stages outside read the state at the nearest end (see `contdepth.nn.state_range`).
        """
        if self._state_range is None:
            return None
        span = self.t1 - self.t0
        return (self.t0 + span * float(self._state_range.lo[0]), self.t0 + span * float(self._state_range.hi[0]))

    def assume_state_sampled_on(self, scheme: str | Scheme | None = None, n_steps: int | None = None) -> None:
        """Count the state as sampled at every stage depth of a manifestation (default: the block's grid).

        For a block whose state was trained before the sampled depths were recorded (a
        checkpoint of format 1): the manifestation it was trained on tells where.
        """
        plan = self.stage_plan(None if scheme is None else get_scheme(scheme),
                               None if n_steps is None else check_n_steps(n_steps))
        self._widen_state_range(StateRange(min(lo for lo, _ in plan.row_span), max(hi for _, hi in plan.row_span)))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """``nn.Module``'s loading, with the sampled-depth range validated first and mirrored after.

        A state dict without the range (saved before it existed) loads, strict or not, with the
        range unknown: the state is then read wherever a stage asks, as it was then.

        A state dict whose coefficients hold another number of basis functions (saved after
        `refine` or `project`) is taken at that size: the block is resized to it first
        (`resize`; see `contdepth.nn.stored_layout`), keeping its steps per function.
        """
        stored = stored_basis_size(self, state_dict, prefix)
        if stored is not None and stored != self.n_basis:
            self.resize(stored, steps_for(self, stored))
        key = prefix + "state_depth_range"
        loaded = None
        if self.state_names and key in state_dict:
            try:  # before anything of this block is copied: a bad value leaves the block as it was
                loaded = StateRange.decode(state_dict[key])
            except ValueError as exc:
                raise RuntimeError(f"{key}: {exc}") from exc
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if not self.state_names:
            return
        if key not in state_dict:
            if key in missing_keys:
                missing_keys.remove(key)
            self.state_depth_range.copy_(unknown_range())
        self._state_range, self._range_covers = loaded, None

    @torch.no_grad()
    def _widen_state_range(self, sampled: StateRange) -> bool:
        """Include ``sampled`` in the range; whether that changed it."""
        if not self.state_names:
            return False
        widened = sampled.union(self._state_range)
        if widened == self._state_range:
            return False
        self._state_range = widened
        self.state_depth_range.copy_(widened.encode())
        self.stage_plan()  # built eagerly, as when the grid is set (no Fraction arithmetic under torch.compile)
        return True

    # --- integration strategy -------------------------------------------------------------
    @property
    def grid(self) -> FixedGrid:
        """The block's manifestation: the fixed grid it integrates on unless another strategy is in use."""
        return self._grid

    @grid.setter
    def grid(self, grid: FixedGrid) -> None:
        if not isinstance(grid, FixedGrid):
            raise TypeError(f"grid: expected a FixedGrid, got {type(grid).__name__}")
        self._grid = grid
        self.stage_plan()  # built eagerly: torch.compile then never traces the Fraction arithmetic

    @property
    def integration(self) -> Integration:
        """The strategy the next forward pass uses: [`grid`][contdepth.nn.ContinuousBlock.grid], or one set by [`integrate_with`][contdepth.nn.ContinuousBlock.integrate_with]."""
        return self._grid if self._integration is None else self._integration

    @contextmanager
    def integrate_with(self, strategy: Integration) -> Iterator["ContinuousBlock"]:
        """Within the ``with`` statement the block integrates with ``strategy`` instead of its grid."""
        if not isinstance(strategy, Integration):
            raise TypeError(f"strategy: expected an Integration, got {type(strategy).__name__}")
        if self._integration is not None:
            raise RuntimeError("integrate_with: the block already integrates with another strategy "
                               f"({type(self._integration).__name__}); nested strategies are not supported")
        self._integration = strategy
        try:
            yield self
        finally:
            self._integration = None

    @property
    def scheme(self) -> Scheme:
        return self._grid.scheme

    @property
    def n_steps(self) -> int:
        return self._grid.n_steps

    @property
    def checkpoint(self) -> bool:
        """Recompute each step during backward (less activation memory, more time)."""
        return self._grid.checkpoint

    @checkpoint.setter
    def checkpoint(self, value: bool) -> None:
        self.grid = FixedGrid(self._grid.scheme, self._grid.n_steps, "checkpoint" if value else "backprop")

    @property
    def gradient(self) -> str:
        """How backward gets its gradients (``backprop``, ``checkpoint``, ``reversible``, ``adjoint``)."""
        return self._grid.gradient

    @gradient.setter
    def gradient(self, value: str) -> None:
        value = check_gradient(value)
        if value == "reversible":
            check_reversible(self._grid.scheme)
        elif value == "adjoint":
            check_adjoint_scheme(self._grid.scheme)
        self.grid = FixedGrid(self._grid.scheme, self._grid.n_steps, value)

    def record_reconstruction(self, error: float) -> None:
        """Called by a reversible backward pass with its relative reconstruction error.

        `reconstruction_error` is the last pass's; [`worst_reconstruction_error`][contdepth.nn.ContinuousBlock.worst_reconstruction_error]
        the largest since it was last asked (a trainer reports it once per epoch).
        """
        self.reconstruction_error = error
        worst = self.__dict__.get("_worst_reconstruction")
        self.__dict__["_worst_reconstruction"] = error if worst is None or not error <= worst else worst

    def worst_reconstruction_error(self, reset: bool = True) -> float | None:
        """The largest reconstruction error since the last call with ``reset`` (``None``: no reversible pass)."""
        worst = self.__dict__.get("_worst_reconstruction")
        if reset:
            self.__dict__["_worst_reconstruction"] = None
        return worst

    @property
    def units(self) -> int:
        """Rate evaluations per forward pass in the current manifestation."""
        return self._grid.units

    def manifest(self, scheme: str | Scheme | None = None, n_steps: int | None = None) -> _Manifestation:
        """Evaluate the block with another scheme and/or step count.

        The change takes effect at once; used as a context manager
        (``with block.manifest("euler", 16): ...``) it is undone on exit.
        """
        previous = self._grid
        new_scheme = previous.scheme if scheme is None else get_scheme(scheme)
        new_steps = previous.n_steps if n_steps is None else check_n_steps(n_steps)
        self.grid = FixedGrid(new_scheme, new_steps, previous.gradient)
        return _Manifestation(self, previous)

    # --- forward ----------------------------------------------------------------------
    def forward(self, x: Tensor, *context: object) -> Tensor:
        """Integrate ``dx/dt = template(x, *context; theta(t))`` over the block's depth.

        ``context`` (e.g. a graph's sparse adjacency for a GCN rate) is passed unchanged
        to every rate evaluation; it is not integrated and carries no depth.
        """
        return self.integration.run(self, x, context)[0]

    def forward_adaptive(self, x: Tensor, setting, *context: object) -> tuple[Tensor, IntegrationStats]:
        """Integrate the block with error control: ``(output, stats)``.

        ``setting`` is an [`AdaptiveDepth`][contdepth.nn.AdaptiveDepth] (pair, tolerances, max
        steps).  Steps end exactly on the basis breakpoints, where ``theta`` jumps, so
        each step sees one smooth piece; the step size is shared by the whole batch.
        Depth-dependent normalisation state is read at each stage's depth; updating it
        needs samples on a fixed grid, so a block with such state must be in eval mode.
        """
        strategy = Adaptive(setting.tableau, setting.rtol, setting.atol, StepController(max_steps=setting.max_steps))
        out, stats = strategy.run(self, x, context)
        return out, stats  # type: ignore[return-value]

    def reconstruct_input(self, out: Tensor, *context: object) -> Tensor:
        """The input that gave ``out`` on the block's grid, recomputed backwards (a reversible scheme).

        With the ``revnet`` scheme and a [`Coupling`][contdepth.nn.Coupling] template, each step
        is undone exactly (``Y = Y+ - h G(X+)``, then ``X = X+ - h F(Y)``), so the input is
        recovered to round-off without storing anything from the forward pass. Normalisation
        state is read, never updated (in training mode batch statistics are recomputed from
        the reconstructed halves, as the forward pass computed them).
        """
        plan = self.stage_plan()
        components = self._components()
        if plan.scheme.partitioned and (components is None or components[0] != "part"):
            raise ValueError(
                f"reconstruct_input: {plan.scheme.name!r} undoes a step exactly only when each half's rate reads the "
                "other half alone; this block's template is not a Coupling (or alike), so the input cannot be rebuilt"
            )
        # In training mode the modules update statistics in place: give them private copies
        # (discarded samples) and put the shared counters back afterwards.
        discarded: list | None = [] if self.training and self.state_names else None
        counters = {name: value.clone() for name, value in self.shared_buffers().items()}
        try:
            rate = self.grid_rate(plan, discarded, context)
            return reconstruct_fixed_grid(plan.scheme, rate, out, plan.schedule)
        finally:
            with torch.no_grad():
                for name, value in self.shared_buffers().items():
                    value.copy_(counters[name])

    # --- basis changes ----------------------------------------------------------------
    def _change_basis(self, target: DepthBasis, n_steps: int, *, exact: bool) -> CoefficientMap:
        matrix = projection_matrix(self.basis, target)
        state_matrix = matrix
        if not exact and self._state_range is not None and not self._state_range.covers_all():
            # The best fit of the state where it is read (the sampled depths): the extrapolation
            # past them, which nothing reads, must not pull the fit (a variance would go negative).
            state_matrix = projection_matrix(self.basis, target, within=self._state_read_interval())
        pairs = []
        with torch.no_grad():
            for name, old in self.coefficient_items():
                new = nn.Parameter(apply_matrix(matrix, old.detach()), requires_grad=old.requires_grad)
                self.coefficients.set(name, new)
                pairs.append((old, new))
            for name, old_state in list(self.state_items()):
                self.state.set_buffer(name, apply_matrix(state_matrix, old_state))
        retire(old for old, _ in pairs)  # an optimizer still holding them now fails at step()
        self.basis = target
        self.grid = FixedGrid(self._grid.scheme, n_steps, self._grid.gradient)
        return CoefficientMap(matrix, tuple(pairs))

    def _state_read_interval(self) -> tuple[Fraction, Fraction]:
        """The depths whose state values are read: the sampled range, and for a discontinuous basis
        read from the inside of a piece at an end (a piecewise-constant cell sampled only at
        its left edge, from the right), that whole piece of the current basis."""
        (lo, lo_side), (hi, hi_side) = self._state_range
        if not self.basis.continuous:
            if hi_side == 1:  # read from the right: the piece to the right of hi
                hi = min((b for b in self.basis.breakpoints if b > hi), default=Fraction(1))
            if lo_side == 0:  # read from the left: the piece to the left of lo
                lo = max((b for b in self.basis.breakpoints if b < lo), default=Fraction(0))
        return lo, hi

    def refine(self) -> CoefficientMap:
        """Double the basis and the steps; ``theta(t)`` is unchanged (exactly, up to rounding)."""
        return self._change_basis(self.basis.refined(), 2 * self._grid.n_steps, exact=True)

    def project(self, n_basis: int, n_steps: int | None = None) -> CoefficientMap:
        """Compress to the L2-best ``theta`` on ``n_basis`` functions; ``n_steps`` defaults to ``n_basis``.

        ``n_basis`` may not exceed the block's size: that is no compression, and it is exact
        only where the two spaces nest (2 -> 4 cells, not 2 -> 3), so a ``theta`` silently
        changed by "projecting up" is refused; `refine` is the exact way up.
        """
        target = self.basis.with_size(n_basis)
        if target.n > self.basis.n:
            raise OptionError("n_basis", f"project() compresses onto at most the block's {self.basis.n} basis "
                                         f"functions, got {target.n}; refine() grows the basis exactly")
        return self._change_basis(target, check_n_steps(target.n if n_steps is None else n_steps), exact=False)

    def resize(self, n_basis: int, n_steps: int | None = None) -> CoefficientMap:
        """Give the block ``n_basis`` functions, more or fewer, to receive coefficients stored at that size.

        For loading ([`apply_layout`][contdepth.nn.apply_layout], and ``load_state_dict``, which calls
        it by itself): the values until the load are the L2 projection of the current
        ``theta``, so nothing is left undefined. To change a trained block, `refine`
        (exact, up) and `project` (L2-best, down) say what happens to ``theta``.
        """
        target = self.basis.with_size(n_basis)
        return self._change_basis(target, check_n_steps(target.n if n_steps is None else n_steps), exact=False)

    def extra_repr(self) -> str:
        return (
            f"template={self.template!r}, basis={self.basis.name}, n_basis={self.basis.n}, "
            f"scheme={self.scheme.name}, n_steps={self.n_steps}, t0={self.t0}, t1={self.t1}"
            + ("" if self.gradient == "backprop" else f", gradient={self.gradient}")
        )


def _one_hot(weights: np.ndarray) -> tuple[int, ...] | None:
    """When every row of ``weights`` selects one function: that function's index per row."""
    if np.all((weights == 0) | (weights == 1)) and np.all(weights.sum(axis=1) == 1):
        return tuple(int(k) for k in weights.argmax(axis=1))
    return None

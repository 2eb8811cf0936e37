"""``ContinuousBlock``: any rate network with weights that are functions of depth.

``dx/dt = R(theta(t), x)`` on ``[t0, t1]`` where ``R`` is an ordinary module (the
*template*) and ``theta(t) = sum_k c_k phi_k(t)``.  The trainable values are the
coefficients ``c_k``; the template only supplies the architecture and the
initialiser.  A *manifestation* (scheme, n_steps) decides which discrete graph
computes the block; it can change at any time without touching the weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..basis import DepthBasis, apply_matrix, make_basis, projection_matrix
from ..solvers import IntegrationStats, Scheme, StageTime, check_n_steps, get_scheme
from ..solvers.integrate import check_rate_output, integrate_adaptive_rate
from ..solvers.scheme import StageSchedule
from .retired import retire

if TYPE_CHECKING:
    from .adaptive import AdaptiveDepth

Tensor = torch.Tensor
Initializer = Callable[[nn.Module], None]


@dataclass(frozen=True)
class CoefficientMap:
    """How a basis change mapped the coefficients: ``new = matrix @ old`` per parameter.

    ``pairs`` lists ``(old_parameter, new_parameter)`` so that per-parameter state
    kept elsewhere (optimizer momentum, Adam moments) can be mapped with the same
    linear operator.
    """

    matrix: np.ndarray
    pairs: tuple[tuple[nn.Parameter, nn.Parameter], ...]


@dataclass(frozen=True)
class _Plan:
    """Everything a forward pass needs that depends only on the manifestation."""

    scheme: Scheme
    schedule: StageSchedule
    row_of_point: tuple[int, ...]  # schedule point index -> row of `weights`
    weights: np.ndarray  # (rows, n_basis): basis weights of each distinct stage value
    one_hot: tuple[int, ...] | None  # when every row is one-hot: the selected function
    _as_tensor: dict = field(default_factory=dict, compare=False)
    _pinv: dict = field(default_factory=dict, compare=False)

    def pseudo_inverse(self, rows: tuple[int, ...]) -> np.ndarray:
        """``pinv(weights[rows])``, cached: the samples of one pass come in a fixed order."""
        found = self._pinv.get(rows)
        if found is None:
            found = self._pinv[rows] = np.linalg.pinv(self.weights[list(rows)])
        return found

    def weights_as(self, like: Tensor) -> Tensor:
        """``weights`` as a tensor with ``like``'s dtype and device (converted once)."""
        key = (like.dtype, like.device)
        found = self._as_tensor.get(key)
        if found is None:
            found = self._as_tensor[key] = torch.as_tensor(self.weights, dtype=like.dtype, device=like.device)
        return found


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
    """Returned by :meth:`ContinuousBlock.manifest`; as a context manager it restores the old one."""

    def __init__(self, block: "ContinuousBlock", previous: tuple[Scheme, int]) -> None:
        self._block, self._previous = block, previous

    def __enter__(self) -> "ContinuousBlock":
        return self._block

    def __exit__(self, *exc: object) -> None:
        self._block._set_manifestation(*self._previous)


class ContinuousBlock(nn.Module):
    """An ODE block ``dx/dt = template(x; theta(t))`` with depth-dependent weights.

    Args:
        template: any module mapping a state to a rate of the same shape.  Each of its
            parameters becomes coefficients of shape ``(n_basis, *param.shape)``.
            Floating-point buffers (BatchNorm running statistics) become depth-dependent
            state in the same basis (see "Normalisation state" below).
        basis: ``"piecewise_constant"``, ``"piecewise_linear"``, ``"legendre"`` or a
            :class:`~contdepth.basis.DepthBasis`.
        n_basis: number of basis functions.
        scheme: integration scheme name or object (see ``available_schemes()``).
        n_steps: integration steps; defaults to ``n_basis``.
        t0, t1: the depth interval.
        checkpoint: recompute steps during backward to save activation memory.
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
    """

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
        self.checkpoint = bool(checkpoint)
        self._names = tuple(names)
        buffers = list(template.named_buffers())
        self._state_names = tuple(name for name, b in buffers if b.is_floating_point())
        self._shared_names = tuple(name for name, b in buffers if not b.is_floating_point())
        self.coefficients = self._initial_coefficients(template, initializer or reset_template_parameters)
        self.state = self._initial_state(template)
        # The template is kept only for its architecture: its own parameters are never
        # used (functional_call substitutes theta(t)), so it lives on the meta device
        # and outside the module tree (no parameters(), state_dict() or .to() for it).
        object.__setattr__(self, "_template", copy.deepcopy(template).to("meta"))
        self._plan_cache: dict[tuple, _Plan] = {}
        self._scheme: Scheme = get_scheme(scheme)
        self._n_steps = check_n_steps(self.basis.n if n_steps is None else n_steps)
        self._plan()  # built eagerly: torch.compile then never traces the Fraction arithmetic

    # --- parameters -------------------------------------------------------------------
    def _initial_coefficients(self, template: nn.Module, initializer: Initializer) -> nn.Module:
        draws: dict[str, list[Tensor]] = {name: [] for name in self._names}
        work = copy.deepcopy(template)
        with torch.no_grad():
            for _ in range(self.basis.n):
                initializer(work)
                for name, p in work.named_parameters():
                    draws[name].append(p.detach().clone())
        inverse = self._collocation_inverse()
        tree = _CoefficientTree()
        for name in self._names:
            stacked = torch.stack(draws[name])
            tree.set(name, nn.Parameter(apply_matrix(inverse, stacked)))
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
        tree = _CoefficientTree()
        buffers = dict(template.named_buffers())
        for name in self._state_names:
            value = buffers[name].detach()
            tree.set_buffer(name, apply_matrix(inverse, value.expand(self.basis.n, *value.shape).clone()))
        for name in self._shared_names:
            tree.set_buffer(name, buffers[name].detach().clone())
        return tree

    def state_items(self) -> Iterator[tuple[str, Tensor]]:
        """``(template buffer name, depth coefficients)`` for the depth-dependent state."""
        for name in self._state_names:
            yield name, self.state.get(name)

    def coefficient_items(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(template parameter name, coefficients)`` pairs, in the template's order."""
        for name in self._names:
            yield name, self.coefficients.get(name)

    def theta(self, t: float | Fraction, *, left: bool = False) -> dict[str, Tensor]:
        """The template's parameters at depth ``t`` (in ``[t0, t1]``)."""
        position = (Fraction(t) - Fraction(self.t0)) / (Fraction(self.t1) - Fraction(self.t0))
        return {name: self.basis.evaluate(c, position, left=left) for name, c in self.coefficient_items()}

    # --- manifestation ----------------------------------------------------------------
    @property
    def scheme(self) -> Scheme:
        return self._scheme

    @property
    def n_steps(self) -> int:
        return self._n_steps

    @property
    def n_basis(self) -> int:
        return self.basis.n

    def _set_manifestation(self, scheme: Scheme, n_steps: int) -> None:
        self._scheme, self._n_steps = scheme, n_steps
        self._plan()

    def manifest(self, scheme: str | Scheme | None = None, n_steps: int | None = None) -> _Manifestation:
        """Evaluate the block with another scheme and/or step count.

        The change takes effect at once; used as a context manager
        (``with block.manifest("euler", 16): ...``) it is undone on exit.
        """
        previous = (self._scheme, self._n_steps)
        new_scheme = self._scheme if scheme is None else get_scheme(scheme)
        new_steps = self._n_steps if n_steps is None else check_n_steps(n_steps)
        self._set_manifestation(new_scheme, new_steps)
        return _Manifestation(self, previous)

    @property
    def units(self) -> int:
        """Rate evaluations per forward pass in the current manifestation."""
        return self._scheme.evaluations(self._n_steps)

    def _plan(self) -> _Plan:
        key = (self._scheme, self._n_steps, self.basis)
        plan = self._plan_cache.get(key)
        if plan is None:
            plan = self._build_plan()
            if len(self._plan_cache) > 64:
                self._plan_cache.clear()
            self._plan_cache[key] = plan
        return plan

    def _build_plan(self) -> _Plan:
        schedule = self._scheme.schedule(self._n_steps, self.t0, self.t1)
        t0, span = Fraction(self.t0), Fraction(self.t1) - Fraction(self.t0)
        rows: dict[tuple[float, ...], int] = {}
        row_of_point = []
        for exact, left in schedule.points:
            w = self.basis.weights((exact - t0) / span, left)
            row_of_point.append(rows.setdefault(tuple(w.tolist()), len(rows)))
        weights = np.array(list(rows), dtype=float).reshape(len(rows), self.basis.n)
        one_hot = None
        if np.all((weights == 0) | (weights == 1)) and np.all(weights.sum(axis=1) == 1):
            one_hot = tuple(int(k) for k in weights.argmax(axis=1))
        return _Plan(self._scheme, schedule, tuple(row_of_point), weights, one_hot)

    # --- forward ----------------------------------------------------------------------
    @staticmethod
    def _at_stages(plan: _Plan, coefficients: Iterator[tuple[str, Tensor]]) -> list[tuple[Tensor, ...]]:
        """For each distinct stage row, every coefficient tensor evaluated there (in order)."""
        rows = len(plan.weights)
        columns: list[tuple[Tensor, ...]] = []
        for _, c in coefficients:
            if plan.one_hot is not None:  # piecewise constant: views of the coefficients
                columns.append(tuple(c[k] for k in plan.one_hot))
            else:  # one small matmul per tensor; unbind makes the per-row views in C++
                w = plan.weights_as(c)
                columns.append((w @ c.reshape(c.shape[0], -1)).reshape(rows, *c.shape[1:]).unbind(0))
        return [tuple(column[r] for column in columns) for r in range(rows)]

    def _slots(self) -> tuple[list[tuple[dict, str, int]], list[tuple[dict, str, int]], list[tuple[dict, str, str]]]:
        """Where the template keeps each tensor: parameter, state and shared-buffer slots.

        Each slot is ``(owner._parameters or owner._buffers, leaf, index)``; tied
        parameters appear once in ``_names`` but in several slots.
        """
        found = self.__dict__.get("_slot_cache")
        if found is None:
            template = self._template

            def owner_of(name: str) -> tuple[nn.Module, str]:
                owner_name, _, leaf = name.rpartition(".")
                return (template.get_submodule(owner_name) if owner_name else template), leaf

            index = {name: i for i, name in enumerate(self._names)}
            canonical = {id(p): index[name] for name, p in template.named_parameters()}
            params = []
            for name, p in template.named_parameters(remove_duplicate=False):
                owner, leaf = owner_of(name)
                params.append((owner._parameters, leaf, canonical[id(p)]))
            state = []
            for i, name in enumerate(self._state_names):
                owner, leaf = owner_of(name)
                state.append((owner._buffers, leaf, i))
            shared = []
            for name in self._shared_names:
                owner, leaf = owner_of(name)
                shared.append((owner._buffers, leaf, name))
            found = self.__dict__["_slot_cache"] = (params, state, shared)
        return found

    def _call_template(self, x: Tensor, values: tuple[Tensor, ...], stage_state: tuple[Tensor, ...] | None,
                       shared: list[Tensor], context: tuple = ()) -> Tensor:
        """``template(x)`` with ``values`` as its parameters and ``stage_state`` as its state.

        The values are written straight into the template's parameter slots for the
        duration of one call, then the meta placeholders are put back.  This is what
        torch.func.functional_call does, minus its per-call bookkeeping (which costs
        40-70% on small templates).  A block instance must therefore not run forward in
        several threads at once.
        """
        template = self._template
        param_slots, state_slots, shared_slots = self._slots()
        placeholders, state_placeholders, shared_placeholders = self._placeholders()
        for table, leaf, i in param_slots:
            table[leaf] = values[i]
        if stage_state is not None:
            for table, leaf, i in state_slots:
                table[leaf] = stage_state[i]
        for (table, leaf, _), value in zip(shared_slots, shared):
            table[leaf] = value
        try:
            out = template(x, *context)
        finally:
            for (table, leaf, _), placeholder in zip(param_slots, placeholders):
                table[leaf] = placeholder
            for (table, leaf, _), placeholder in zip(state_slots, state_placeholders):
                table[leaf] = placeholder
            for (table, leaf, _), placeholder in zip(shared_slots, shared_placeholders):
                table[leaf] = placeholder
        if not isinstance(out, Tensor) or out.shape != x.shape or out.dtype != x.dtype:
            check_rate_output(out, x, "template")  # says what is wrong (or accepts an autocast dtype)
        return out

    def _placeholders(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """The template's own (meta) tensors in each slot, put back after every call."""
        found = self.__dict__.get("_placeholder_cache")
        if found is None:
            found = self.__dict__["_placeholder_cache"] = tuple(
                [table[leaf] for table, leaf, _ in slots] for slots in self._slots())
        return found

    def _rate_function(self, plan: _Plan, params: list[tuple[Tensor, ...]], samples: list | None,
                       context: tuple = ()):
        """The fixed-grid rate: stage ``i`` reads the precomputed row ``row_of_point[i]``."""
        row_of_point = plan.row_of_point
        states = self._at_stages(plan, self.state_items()) if self._state_names else None
        shared = [self.state.get(name) for name in self._shared_names]

        def rate(stage: StageTime, x: Tensor) -> Tensor:
            row = row_of_point[stage.index]
            stage_state = None
            if states is not None:
                stage_state = states[row]
                if samples is not None:  # training: the module updates a private copy
                    stage_state = tuple(v.clone() for v in stage_state)
                    samples.append((row, stage_state))
            return self._call_template(x, params[row], stage_state, shared, context)

        return rate

    # --- adaptive depth -----------------------------------------------------------------
    def _values_at(self, weights: np.ndarray, items: Iterator[tuple[str, Tensor]]) -> tuple[Tensor, ...]:
        """Each coefficient tensor evaluated with one row of basis weights."""
        nonzero = np.flatnonzero(weights)
        if len(nonzero) == 1 and weights[nonzero[0]] == 1.0:  # one function: a view, exact
            k = int(nonzero[0])
            return tuple(c[k] for _, c in items)
        out = []
        for _, c in items:
            w = torch.as_tensor(weights, dtype=c.dtype, device=c.device)
            out.append((w @ c.reshape(c.shape[0], -1)).reshape(c.shape[1:]))
        return tuple(out)

    def breakpoints(self) -> tuple[Fraction, ...]:
        """Depths in ``(t0, t1)`` where ``theta`` may jump or bend: no adaptive step crosses one."""
        t0, span = Fraction(self.t0), Fraction(self.t1) - Fraction(self.t0)
        return tuple(t0 + span * bp for bp in self.basis.breakpoints)

    def forward_adaptive(self, x: Tensor, setting: "AdaptiveDepth", *context: object
                         ) -> tuple[Tensor, IntegrationStats]:
        """Integrate the block with error control: ``(output, stats)``.

        The embedded pair of ``setting`` chooses its own steps to meet ``rtol``/``atol``
        instead of the manifestation's grid; steps end exactly on the basis breakpoints,
        where ``theta`` jumps, so each step sees one smooth piece.  The step size is
        shared by the whole batch (the error norm is an RMS over it).

        Depth-dependent normalisation state is read at each stage's depth; updating it
        would need samples on a fixed grid, so a block with such state must be in
        evaluation mode.  Without state (group norm, none) training works too.
        """
        if self.training and self._state_names:
            raise RuntimeError(
                "adaptive depth: this block has depth-dependent normalisation state, which is only "
                "updated on a fixed grid; call model.eval() first (adaptive depth is for inference)"
            )
        if self._template.training != self.training:
            self._template.train(self.training)
        t0, span = Fraction(self.t0), Fraction(self.t1) - Fraction(self.t0)
        shared = [self.state.get(name) for name in self._shared_names]
        has_state = bool(self._state_names)

        def rate(stage: StageTime, x: Tensor) -> Tensor:
            w = self.basis.weights((stage.exact - t0) / span, stage.left)
            values = self._values_at(w, self.coefficient_items())
            stage_state = self._values_at(w, self.state_items()) if has_state else None
            return self._call_template(x, values, stage_state, shared, context)

        out, _, stats = integrate_adaptive_rate(
            rate, x, tableau=setting.tableau, rtol=setting.rtol, atol=setting.atol, t0=t0,
            t1=Fraction(self.t1), breakpoints=self.breakpoints(), max_steps=setting.max_steps,
            state_name="x", rate_name="template",
        )
        return out, stats

    def forward(self, x: Tensor, *context: object) -> Tensor:
        """Integrate ``dx/dt = template(x, *context; theta(t))`` over the block's depth.

        ``context`` (e.g. a graph's sparse adjacency for a GCN rate) is passed unchanged
        to every rate evaluation; it is not integrated and carries no depth.
        """
        adaptive = self.__dict__.get("_adaptive")
        if adaptive is not None:  # inside contdepth.nn.adaptive_depth(...)
            setting, record = adaptive
            out, stats = self.forward_adaptive(x, setting, *context)
            record(stats)
            return out
        plan = self._plan()
        if self._template.training != self.training:  # the template is outside the module tree
            self._template.train(self.training)
        samples: list | None = [] if (self.training and self._state_names) else None
        rate = self._rate_function(plan, self._at_stages(plan, self.coefficient_items()), samples, context)
        out = plan.scheme.integrate(rate, x, plan.schedule, checkpoint=self.checkpoint)[0]
        if samples:
            collected = list(samples)
            samples.clear()  # evaluations recomputed during backward (checkpointing) are not samples
            self._update_state(plan, collected)
        return out

    @torch.no_grad()
    def _update_state(self, plan: _Plan, samples: list[tuple[int, tuple[Tensor, ...]]]) -> None:
        """Move the state coefficients to the least-squares fit of this pass's samples.

        Each sample is the module's own momentum update of the stage's state,
        ``(1 - m) * theta_state(t_i) + m * batch_stat_i``.  With ``W`` the basis weights
        of the samples, ``c += pinv(W) (samples - W c)`` changes the coefficients only
        where the samples see them, and reduces to the usual running average when
        every stage reads one coefficient.
        """
        rows = tuple(row for row, _ in samples)
        correction = plan.pseudo_inverse(rows)
        w = plan.weights[list(rows)]
        for j, (name, c) in enumerate(self.state_items()):
            y = torch.stack([values[j] for _, values in samples]).reshape(len(rows), -1)
            flat = c.view(c.shape[0], -1)
            residual = y - torch.as_tensor(w, dtype=c.dtype, device=c.device) @ flat
            flat += torch.as_tensor(correction, dtype=c.dtype, device=c.device) @ residual

    # --- basis changes ----------------------------------------------------------------
    def _change_basis(self, target: DepthBasis, n_steps: int) -> CoefficientMap:
        matrix = projection_matrix(self.basis, target)
        pairs = []
        with torch.no_grad():
            for name, old in self.coefficient_items():
                new = nn.Parameter(apply_matrix(matrix, old.detach()), requires_grad=old.requires_grad)
                self.coefficients.set(name, new)
                pairs.append((old, new))
            for name, old_state in list(self.state_items()):
                self.state.set_buffer(name, apply_matrix(matrix, old_state))
        retire(old for old, _ in pairs)  # an optimizer still holding them now fails at step()
        self.basis = target
        self._n_steps = n_steps
        self._plan()
        return CoefficientMap(matrix, tuple(pairs))

    def refine(self) -> CoefficientMap:
        """Double the basis and the steps; ``theta(t)`` is unchanged (exactly, up to rounding)."""
        return self._change_basis(self.basis.refined(), 2 * self._n_steps)

    def project(self, n_basis: int, n_steps: int | None = None) -> CoefficientMap:
        """Compress to the L2-best ``theta`` on ``n_basis`` functions; ``n_steps`` defaults to ``n_basis``."""
        target = self.basis.with_size(n_basis)
        return self._change_basis(target, check_n_steps(target.n if n_steps is None else n_steps))

    def extra_repr(self) -> str:
        return (
            f"template={self._template!r}, basis={self.basis.name}, n_basis={self.basis.n}, "
            f"scheme={self._scheme.name}, n_steps={self._n_steps}, t0={self.t0}, t1={self.t1}"
        )


class _CoefficientTree(nn.Module):
    """Holds coefficients under the template's own parameter names (``0.weight`` ...)."""

    def set(self, name: str, value: nn.Parameter) -> None:
        *path, leaf = name.split(".")
        node: nn.Module = self
        for part in path:
            if part not in node._modules:
                node.add_module(part, _CoefficientTree())
            node = node._modules[part]  # type: ignore[assignment]
        if leaf in node._parameters:
            del node._parameters[leaf]
        node.register_parameter(leaf, value)

    def set_buffer(self, name: str, value: Tensor) -> None:
        *path, leaf = name.split(".")
        node: nn.Module = self
        for part in path:
            if part not in node._modules:
                node.add_module(part, _CoefficientTree())
            node = node._modules[part]  # type: ignore[assignment]
        node.register_buffer(leaf, value)

    def get(self, name: str) -> Tensor:
        # Plain attribute access (not get_parameter) so that torch.func.functional_call,
        # which swaps in ordinary tensors, works on a whole block too.
        node: nn.Module | Tensor = self
        for part in name.split("."):
            node = getattr(node, part)
        return node  # type: ignore[return-value]

    def extra_repr(self) -> str:
        tensors = {**self._parameters, **self._buffers}
        return ", ".join(f"{k}: {tuple(v.shape)}" for k, v in tensors.items())

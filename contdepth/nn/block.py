"""``ContinuousBlock``: any rate network with weights that are functions of depth.

``dx/dt = R(theta(t), x)`` on ``[t0, t1]``, ``R`` an ordinary module (the *template*). A block is its
depth function ([`DepthFunction`][contdepth.nn.DepthFunction], ``block.depth``; coefficients in the tree
``block.coefficients``), its normalisation state ([`NormState`][contdepth.nn.NormState], ``block.norm_state``;
buffers in ``block.state``) and an integration strategy (`contdepth.nn.integration`). The forward pass
hands one [`BlockRate`][contdepth.nn.BlockRate] to ``strategy.run(rate, x)``, then fits the state.
"""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Iterator

import torch
from torch import nn

from ..basis import DepthBasis, make_basis, projection_matrix
from ..common.compiling import eager
from ..common.errors import OptionError
from ..common.validate import check_number
from ..solvers import (
    RECONSTRUCTION_TOLERANCE, IntegrationStats, ReconstructionLog, Scheme, StepController, check_n_steps,
    get_scheme, gradient_mode,
)
from .depth_function import CoefficientMap, DepthFunction, Initializer, reset_template_parameters
from .integration import Adaptive, FixedGrid, Integration
from .norm_state import NormState
from .rate import BlockRate, RateSource, components_of
from .stage_plan import PlanCache, StagePlan, StageValues
from .state_range import unknown_range
from .stored_layout import steps_for, stored_basis_size
from .template_call import TemplateCall
from .temporary import Temporary

Tensor = torch.Tensor


class ContinuousBlock(nn.Module):
    """An ODE block ``dx/dt = template(x; theta(t))`` with depth-dependent weights.

    Args:
        template: any module mapping a state to a rate of the same shape; each parameter becomes
            coefficients ``(n_basis, *param.shape)`` (one with ``requires_grad=False`` stays frozen at
            every depth), floating-point buffers depth-dependent state (`contdepth.nn.norm_state`).
        basis: ``"piecewise_constant"``, ``"piecewise_linear"``, ``"legendre"`` or a `DepthBasis`.
        n_basis, n_steps: basis functions and integration steps (default: ``n_basis``).
        scheme: integration scheme name or object (see ``available_schemes()``); ``t0``, ``t1``: the interval.
        gradient: a [`GradientMode`][contdepth.solvers.GradientMode] (``Backprop()``, ``Checkpoint()``,
            ``Reversible(tolerance)``, ``Adjoint()``) or its name, checked against the scheme here;
            ``checkpoint=True`` is ``"checkpoint"``; ``reconstruction_tolerance`` the tolerance of
            ``"reversible"`` (the largest relative error of a rebuilt input before backprop takes over).
        initializer: redraws the template's parameters in place, once per basis function
            (default: the modules' ``reset_parameters``): independent draws, ``theta``'s values at
            the basis' collocation points (cell centres, nodes, Gauss points).
    """

    def __init__(self, template: nn.Module, *, basis: str | DepthBasis = "piecewise_constant", n_basis: int = 4,
                 scheme: str | Scheme = "rk4", n_steps: int | None = None, t0: float = 0.0, t1: float = 1.0,
                 checkpoint: bool = False, initializer: Initializer | None = None, gradient="backprop",
                 reconstruction_tolerance: float = RECONSTRUCTION_TOLERANCE) -> None:
        super().__init__()
        if not isinstance(template, nn.Module):
            raise TypeError(f"template: expected an nn.Module, got {type(template).__name__}")
        if not any(True for _ in template.parameters()):
            raise ValueError("template: has no parameters, so there is nothing to vary with depth")
        if not (isinstance(t0, (int, float)) and isinstance(t1, (int, float)) and t1 > t0):
            raise ValueError(f"t1: the depth interval needs t1 > t0, got t0={t0!r}, t1={t1!r}")
        self._tolerance = check_number(reconstruction_tolerance, "reconstruction_tolerance", low=0.0)
        mode = gradient_mode(gradient, bool(checkpoint), tolerance=self._tolerance)
        if self._tolerance not in (getattr(mode, "tolerance", self._tolerance), RECONSTRUCTION_TOLERANCE):
            raise OptionError("reconstruction_tolerance", f"{self._tolerance:g} conflicts with {mode!r}; give it once")
        resolved = get_scheme(scheme)
        self.depth = DepthFunction.drawn(template, make_basis(basis, n_basis), t0, t1, initializer)
        self.norm_state = NormState.from_template(template, self.basis)
        self.coefficients, self.state = self.depth.tree, self.norm_state.tree  # the module tree: state_dict keys
        if self.norm_state.names:
            self.register_buffer("state_depth_range", unknown_range())
        # The template is kept only for its architecture: its own parameters are never used
        # (theta(t) is substituted), so it lives on the meta device and outside the module tree.
        meta = copy.deepcopy(template).to("meta")
        object.__setattr__(self, "_call", TemplateCall(meta, self.parameter_names, self.state_names,
                                                       self.shared_names))
        self.plans, self._components = PlanCache(), components_of(meta, self.state_names)  # the template's, fixed
        self.reconstruction = ReconstructionLog()
        self._integration: Integration | None = None  # None: the grid
        self.grid = FixedGrid(resolved, check_n_steps(self.basis.n if n_steps is None else n_steps), mode).checked()

    # --- the parts --------------------------------------------------------------------------
    basis = property(lambda self: self.depth.basis, doc="The depth function's basis.")
    t0 = property(lambda self: self.depth.t0, doc="Where the depth interval starts.")
    t1 = property(lambda self: self.depth.t1, doc="Where the depth interval ends.")
    parameter_names = property(lambda self: self.depth.names, doc="The template's parameter names.")
    state_names = property(lambda self: self.norm_state.names, doc="The template's floating-point buffers.")
    shared_names = property(lambda self: self.norm_state.shared_names, doc="The template's other buffers.")
    template = property(lambda self: self._call.template,
                        doc="The template's architecture (on the meta device: its tensors are placeholders).")
    n_basis = property(lambda self: self.basis.n)

    def coefficient_items(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(template parameter name, coefficients)`` pairs, in the template's order."""
        return self.depth.items()

    def state_items(self) -> Iterator[tuple[str, Tensor]]:
        """``(template buffer name, depth coefficients)`` for the depth-dependent state."""
        return self.norm_state.items()

    def shared_buffers(self) -> dict[str, Tensor]:
        """The template's depth-independent (integer) buffers, by name."""
        return self.norm_state.shared()

    def theta(self, t: float | Fraction, *, left: bool = False) -> dict[str, Tensor]:
        """The template's parameters at depth ``t`` (in ``[t0, t1]``)."""
        return self.depth.theta(t, left=left)

    def breakpoints(self) -> tuple[Fraction, ...]:
        """Depths in ``(t0, t1)`` where ``theta`` may jump or bend: no adaptive step crosses one."""
        return self.depth.breakpoints()

    def stage_plan(self, scheme: Scheme | None = None, n_steps: int | None = None) -> StagePlan:
        """The [`StagePlan`][contdepth.nn.StagePlan] of a manifestation (default: the block's grid), cached."""
        return self.plans.get(self.grid.scheme if scheme is None else scheme,
                              self.grid.n_steps if n_steps is None else n_steps, self.depth, self.norm_state.range)

    def values_at_stages(self, plan: StagePlan | None = None) -> StageValues:
        """The template's parameters and state at every distinct stage value of ``plan`` (what a static export
        materialises: one ordinary module per row). Views or functions of the coefficients (differentiable)."""
        return self.rate(plan=self.stage_plan() if plan is None else plan).values

    def rate(self, context: tuple = (), *, plan: StagePlan | None = None, samples: list | None = None,
             recompute: bool = False) -> BlockRate:
        """The block's [`BlockRate`][contdepth.nn.BlockRate] on ``plan`` (``None``: at any depth)."""
        source = RateSource(self._call, self.depth, self.norm_state, self.training, self._components,
                            self.reconstruction)
        return BlockRate(source, context, plan=plan, samples=samples, recompute=recompute)

    # --- normalisation state ------------------------------------------------------------------
    def update_state(self, plan: StagePlan, samples: list) -> None:
        """Fit the state to one pass's samples and widen the sampled range ([`NormState.fit`][contdepth.nn.NormState.fit])."""
        if self.norm_state.fit(plan, samples, self.basis, getattr(self, "state_depth_range", None)):
            self._plan_now()

    state_depths = property(lambda self: self.norm_state.depths(self.t0, self.t1),
                            doc="The depths ``(shallowest, deepest)`` the state has been sampled at; ``None``: not yet.")

    def assume_state_sampled_on(self, scheme: str | Scheme | None = None, n_steps: int | None = None) -> None:
        """Count the state as sampled at every stage depth of a manifestation (default: the grid): for a
        checkpoint of format 1, trained before the sampled depths were recorded."""
        plan = self.stage_plan(None if scheme is None else get_scheme(scheme),
                               None if n_steps is None else check_n_steps(n_steps))
        if self.norm_state.widen(plan.sampled_range(), getattr(self, "state_depth_range", None)):
            self._plan_now()

    @eager  # the widened range's plan, built outside any torch.compile graph (Fractions are never traced)
    def _plan_now(self) -> None:
        self.stage_plan()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """``nn.Module``'s loading, resized first to a stored basis size (`contdepth.nn.stored_layout`) and
        with the sampled-depth range validated first and mirrored after (missing: saved before it existed)."""
        stored = stored_basis_size(self, state_dict, prefix)
        if stored is not None and stored != self.n_basis:
            self.resize(stored, steps_for(self, stored))
        key = prefix + "state_depth_range"
        loaded = self.norm_state.stored_range(state_dict, key)  # validated before anything of this block is copied
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.norm_state.loaded(loaded, key, state_dict, missing_keys, getattr(self, "state_depth_range", None))

    # --- integration strategy -------------------------------------------------------------------
    @property
    def grid(self) -> FixedGrid:
        """The block's manifestation: the fixed grid it integrates on unless another strategy is in use."""
        return self._grid

    @grid.setter
    def grid(self, grid: FixedGrid) -> None:
        if not isinstance(grid, FixedGrid):
            raise TypeError(f"grid: expected a FixedGrid, got {type(grid).__name__}")
        self.stage_plan(grid.scheme, grid.n_steps)  # first (a failing schedule keeps the old grid), and eagerly
        self._grid = grid

    @property
    def integration(self) -> Integration:
        """The strategy the next forward pass uses: the grid, or one set by [`integrate_with`][contdepth.nn.ContinuousBlock.integrate_with]."""
        return self._grid if self._integration is None else self._integration

    def integrate_with(self, strategy: Integration) -> Temporary["ContinuousBlock"]:
        """Integrate with ``strategy`` instead of the grid until undone (``with block.integrate_with(s): ...``)."""
        if not isinstance(strategy, Integration):
            raise TypeError(f"strategy: expected an Integration, got {type(strategy).__name__}")
        if self._integration is not None:
            raise RuntimeError("integrate_with: the block already integrates with another strategy "
                               f"({type(self._integration).__name__}); nested strategies are not supported")
        self._integration = strategy
        return Temporary(lambda: setattr(self, "_integration", None), self)

    scheme = property(lambda self: self._grid.scheme)
    n_steps = property(lambda self: self._grid.n_steps)
    units = property(lambda self: self._grid.units, doc="Rate evaluations per forward pass in the current manifestation.")

    checkpoint = property(lambda self: self._grid.checkpoint, lambda self, value: setattr(
        self, "grid", FixedGrid(self.scheme, self.n_steps, "checkpoint" if value else "backprop")),
        doc="Recompute each step during backward (less activation memory, more time).")
    gradient = property(lambda self: self._grid.gradient.name, lambda self, value: setattr(
        self, "grid", FixedGrid(self.scheme, self.n_steps, gradient_mode(value, tolerance=self._tolerance)).checked()),
        doc="The gradient mode's name (backprop, checkpoint, reversible, adjoint); set a name or a GradientMode.")

    def _set_tolerance(self, value: float) -> None:
        self._tolerance = check_number(value, "reconstruction_tolerance", low=0.0)
        if self.gradient == "reversible":
            self.gradient = "reversible"  # the mode rebuilt with the new tolerance

    reconstruction_tolerance = property(lambda self: getattr(self._grid.gradient, "tolerance", self._tolerance),
                                        _set_tolerance, doc="The largest relative error of a reversible pass's "
                                                            "rebuilt input (the mode's, when reversible).")
    reconstruction_error = property(lambda self: self.reconstruction.last,
                                    doc="The last reversible backward pass's relative reconstruction error.")

    def worst_reconstruction_error(self, reset: bool = True) -> float | None:
        """The largest reconstruction error since the last call with ``reset`` (``None``: no reversible pass)."""
        return self.reconstruction.take_worst(reset)

    def manifest(self, scheme: str | Scheme | None = None, n_steps: int | None = None) -> Temporary["ContinuousBlock"]:
        """Evaluate with another scheme and/or step count, at once; as a context manager, undone on exit.

        The gradient mode checks the new scheme once: a scheme it cannot differentiate (``rk4`` for a
        reversible block) evaluates, and a pass that needs the gradient raises why.
        """
        previous = self._grid
        self.grid = FixedGrid(previous.scheme if scheme is None else get_scheme(scheme),
                              previous.n_steps if n_steps is None else check_n_steps(n_steps), previous.gradient)

        def undo() -> None:  # the scheme and steps come back; a gradient mode set meanwhile stays
            self.grid = FixedGrid(previous.scheme, previous.n_steps, self._grid.gradient)
        return Temporary(undo, self)

    # --- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor, *context: object) -> Tensor:
        """Integrate ``dx/dt = template(x, *context; theta(t))``; ``context`` (a graph's adjacency) reaches every evaluation."""
        return self.run(self.integration, x, *context)[0]

    def run(self, strategy: Integration, x: Tensor, *context: object) -> tuple[Tensor, IntegrationStats | None]:
        """``(output, stats)`` of integrating with ``strategy``; a training pass's samples then fit the state."""
        grid = strategy.manifestation()
        sampling = grid is not None and self.training and bool(self.state_names)
        rate = self.rate(context, plan=None if grid is None else self.stage_plan(*grid),
                         samples=[] if sampling else None)
        out, stats = strategy.run(rate, x)
        samples = rate.take_samples()  # before any backward pass: recomputed evaluations are not samples
        if samples:
            self.update_state(rate.plan, samples)
        return out, stats

    def forward_adaptive(self, x: Tensor, setting, *context: object) -> tuple[Tensor, IntegrationStats]:
        """``(output, stats)`` with error control (an [`AdaptiveDepth`][contdepth.nn.AdaptiveDepth]): `adaptive_depth`'s strategy."""
        strategy = Adaptive(setting.tableau, setting.rtol, setting.atol, StepController(max_steps=setting.max_steps))
        return self.run(strategy, x, *context)  # type: ignore[return-value]

    def reconstruct_input(self, out: Tensor, *context: object) -> Tensor:
        """The input that gave ``out`` on the block's grid, recomputed backwards (a reversible scheme;
        [`BlockRate.reconstruct`][contdepth.nn.BlockRate.reconstruct]). State is read, never updated."""
        return self.rate(context, plan=self.stage_plan(),
                         samples=[] if self.training and self.state_names else None).reconstruct(out)

    # --- basis changes ---------------------------------------------------------------------------
    def _change_basis(self, target: DepthBasis, n_steps: int, *, exact: bool) -> CoefficientMap:
        self.norm_state.change_basis(self.basis, target, exact=exact)
        mapped = self.depth.change_basis(target, projection_matrix(self.basis, target))
        self.grid = FixedGrid(self._grid.scheme, n_steps, self._grid.gradient)
        return mapped

    def refine(self) -> CoefficientMap:
        """Double the basis and the steps; ``theta(t)`` is unchanged (exactly, up to rounding)."""
        return self._change_basis(self.basis.refined(), 2 * self._grid.n_steps, exact=True)

    def project(self, n_basis: int, n_steps: int | None = None) -> CoefficientMap:
        """Compress to the L2-best ``theta`` on ``n_basis`` functions (at most the block's; `refine` grows
        exactly); ``n_steps`` defaults to ``n_basis``."""
        if (size := self.basis.with_size(n_basis).n) > self.basis.n:
            raise OptionError("n_basis", f"project() compresses onto at most the block's {self.basis.n} basis "
                                         f"functions, got {size}; refine() grows the basis exactly")
        return self.resize(n_basis, n_steps)

    def resize(self, n_basis: int, n_steps: int | None = None) -> CoefficientMap:
        """Give the block ``n_basis`` functions, more or fewer, to receive coefficients stored at that size
        (loading: [`apply_layout`][contdepth.nn.apply_layout]); until the load, the L2 projection of ``theta``."""
        target = self.basis.with_size(n_basis)
        return self._change_basis(target, check_n_steps(target.n if n_steps is None else n_steps), exact=False)

    def extra_repr(self) -> str:
        return (f"template={self.template!r}, basis={self.basis.name}, n_basis={self.basis.n}, "
                f"scheme={self.scheme.name}, n_steps={self.n_steps}, t0={self.t0}, t1={self.t1}"
                + ("" if self.gradient == "backprop" else f", gradient={self.gradient}"))


__all__ = ["CoefficientMap", "ContinuousBlock", "reset_template_parameters"]

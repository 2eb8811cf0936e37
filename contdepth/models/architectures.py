"""PolyNet, FractalNet and RevNet with ContinuousNet's topology, read as schemes (Lu et al. 2018, Table 1).

Each model has the stem, stitches and head of ``resnet``/``continuousnet``; what differs is
the unit, i.e. the scheme one unit takes:

- ``polynet``: the PolyInception poly-2 unit ``x + F(x) + F(F(x))`` (one ``F`` applied
  twice), the truncated Neumann series of backward Euler (scheme ``polynet``).
- ``fractalnet``: the two-column fractal block ``1/2 x + 1/2 (y + F2(y))``,
  ``y = x + F1(x)``: the mean join, a second-order Runge-Kutta step (scheme ``fractalnet``).
- ``revnet``: RevNet's coupling on two channel halves ``X+ = X + F(Y)``, ``Y+ = Y + G(X+)``
  (scheme ``revnet``); each stage's units can be undone exactly ([`UnitStage.inverse`][contdepth.models.UnitStage.inverse]).

``continuous=True`` builds a ContinuousNet whose blocks take that scheme, ``n_units`` basis
functions and steps; refine, project, manifest, analyze and export then apply as to any
ContinuousNet, and ``gradient`` picks the memory mode (``reversible`` for ``revnet``). The
units' rate is the pre-activation ``residual_rate`` throughout.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common.validate import check_bool, check_choice, check_int, check_number
from ..nn import Coupling
from ..solvers import NeumannSeries, get_scheme, gradient_mode, split_halves
from .image import ContinuousNet, StagedNet, stage_widths
from .layers import NORMS, STITCHES, norm_layer, per_stage, residual_rate
from .registry import register_model


class PolyRate(nn.Module):
    """PolyNet's residual rate: two convolutions shared by every application, two norms per application.

    Application ``j`` is ``residual_rate``'s pre-activation body with application ``j``'s
    norms: norm-ReLU-conv3x3-norm-ReLU-conv3x3. PolyNet shares the convolutions of a poly-N
    module and keeps one BatchNorm per application (Zhang et al. 2017): ``F(x)`` is
    distributed unlike ``x``, and a shared BatchNorm's running statistics would average
    the two and fit neither. A repeated template (`contdepth.nn.repeated`): calling it
    is application 0, the rate of the state.
    """

    def __init__(self, channels: int, norm: str, applications: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norms = nn.ModuleList(nn.ModuleList([norm_layer(norm, channels), norm_layer(norm, channels)])
                                   for _ in range(check_int(applications, "applications", low=1, high=8)))
        self.applications = tuple(f"norms.{j}" for j in range(applications))

    def forward(self, x: torch.Tensor, *context: object) -> torch.Tensor:
        return self.application(0, x)

    def application(self, j: int, x: torch.Tensor, *context: object) -> torch.Tensor:
        """The rate of the ``j``-th application (``F`` of ``F^j(x)`` in the poly-N sum)."""
        first, second = self.norms[j]
        return self.conv2(torch.relu(second(self.conv1(torch.relu(first(x))))))


class PolyUnit(nn.Module):
    """``x + F(x) + F(F(x)) + ...`` with ``terms`` powers of one residual rate ``F`` (PolyNet's poly-2: 2).

    ``F`` is a [`PolyRate`][contdepth.models.PolyRate]: the powers share its convolutions, each has its own norms.
    """

    def __init__(self, channels: int, norm: str, terms: int = 2) -> None:
        super().__init__()
        self.f = PolyRate(channels, norm, terms)
        self.terms = terms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = term = x
        for j in range(self.terms):
            term = self.f.application(j, term)
            out = out + term
        return out


class FractalUnit(nn.Module):
    """FractalNet's two-column block with the mean join: ``(x + y + F2(y)) / 2``, ``y = x + F1(x)``."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.f1 = residual_rate(channels, norm)
        self.f2 = residual_rate(channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.f1(x)
        return (x + y + self.f2(y)) * 0.5


class RevUnit(nn.Module):
    """RevNet's reversible unit on channel halves: ``X+ = X + F(Y)``, ``Y+ = Y + G(X+)``."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.f = residual_rate(channels // 2, norm)
        self.g = residual_rate(channels // 2, norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x, y = split_halves(z, 1, "RevUnit input")
        x = x + self.f(y)
        return torch.cat((x, y + self.g(x)), dim=1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The unit's input from its output: ``Y = Y+ - G(X+)``, then ``X = X+ - F(Y)``.

        In training mode the norms recompute the batch statistics of the rebuilt halves (as
        the forward pass computed them); their running statistics and counters are put back,
        so an inverse never counts as a second training pass.
        """
        x, y = split_halves(z, 1, "RevUnit output")
        kept = {name: b.clone() for name, b in self.named_buffers()}
        try:
            y = y - self.g(x)
            return torch.cat((x - self.f(y), y), dim=1)
        finally:
            with torch.no_grad():
                for name, b in self.named_buffers():
                    b.copy_(kept[name])


class UnitStage(nn.Module):
    """A stage's units applied in turn (each with its own weights: the discrete architecture)."""

    def __init__(self, units: list[nn.Module]) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return x

    def inverse(self, out: torch.Tensor) -> torch.Tensor:
        """The stage's input from its output, unit by unit in reverse (reversible units only)."""
        for unit in reversed(self.units):
            if not hasattr(unit, "inverse"):
                raise ValueError(f"inverse: {type(unit).__name__} units are not reversible (RevNet's are)")
            out = unit.inverse(out)
        return out


def _build(name: str, unit, scheme, *, in_channels: int, num_classes: int, alpha: int, widen: int,
           n_units: int | list[int], norm: str, eps: float, stitch: str, continuous: bool, basis: str,
           gradient: str, coupled: bool = False, applications: int = 0) -> nn.Module:
    """The discrete network of ``unit(width)`` units, or (``continuous``) its ContinuousNet with ``scheme``.

    The continuous template is ``residual_rate``, a [`Coupling`][contdepth.nn.Coupling] of two
    half-width ones (``coupled``), or a [`PolyRate`][contdepth.models.PolyRate] with ``applications`` norms.
    """
    stage_widths(alpha, widen)  # every option is checked before the first layer is built
    units = per_stage(n_units, "n_units")
    check_choice(norm, "norm", NORMS)
    check_choice(stitch, "stitch", STITCHES)
    check_bool(continuous, "continuous")
    common = dict(in_channels=check_int(in_channels, "in_channels", low=1),
                  num_classes=check_int(num_classes, "num_classes", low=1), alpha=alpha, widen=widen, norm=norm,
                  eps=check_number(eps, "eps"), stitch=stitch)
    if coupled and any(w % 2 for w in stage_widths(alpha, widen)):
        raise ValueError(f"alpha: {name} splits every stage's channels in two halves; alpha * widen must be even, "
                         f"got {alpha * widen}")
    from ..basis import available_bases

    check_choice(basis, "basis", tuple(available_bases()))
    mode = gradient_mode(gradient)
    gradient = mode.name
    if not continuous and gradient != "backprop":
        raise ValueError(f"gradient: {gradient!r} applies to the continuous form (continuous=true); the discrete "
                         f"{name} trains with backprop")
    if continuous:
        mode.check(get_scheme(scheme))  # the mode's own check, before any layer is built
        if coupled:
            def make_rate(width: int) -> nn.Module:
                return Coupling(residual_rate(width // 2, norm), residual_rate(width // 2, norm))
        elif applications:
            def make_rate(width: int) -> nn.Module:
                return PolyRate(width, norm, applications)
        else:
            make_rate = None
        return ContinuousNet(n_basis=units, basis=basis, scheme=scheme, n_steps=None, checkpoint=False,
                             make_rate=make_rate, gradient=gradient, **common)
    return StagedNet(make_body=lambda i, width: UnitStage([unit(width) for _ in range(units[i])]), **common)


@register_model("polynet")
def polynet(*, in_channels: int = 3, num_classes: int = 10, alpha: int = 16, widen: int = 1,
            n_units: int | list[int] = 2, terms: int = 2, norm: str = "batch", eps: float = 1.0,
            stitch: str = "residual", continuous: bool = False, basis: str = "piecewise_constant",
            gradient: str = "backprop") -> nn.Module:
    """PolyNet's poly-``terms`` units ``x + F(x) + ... + F^terms(x)`` (Zhang et al. 2017); ``terms=2`` is poly-2.

    ``continuous=True``: a ContinuousNet integrated with the truncated Neumann series scheme
    (``polynet`` for ``terms=2``). A unit costs ``terms`` rate evaluations for one rate's
    convolutions; as in PolyNet, each application has its own norms ([`PolyRate`][contdepth.models.PolyRate]), and
    every other scheme (a manifestation at ``rk4``, say) integrates application 0, the rate
    of the state.
    """
    terms = check_int(terms, "terms", low=1, high=8)
    scheme = "polynet" if terms == 2 else NeumannSeries(terms)
    return _build("polynet", lambda width: PolyUnit(width, norm, terms), scheme, in_channels=in_channels,
                  num_classes=num_classes, alpha=alpha, widen=widen, n_units=n_units, norm=norm, eps=eps,
                  stitch=stitch, continuous=continuous, basis=basis, gradient=gradient, applications=terms)


@register_model("fractalnet")
def fractalnet(*, in_channels: int = 3, num_classes: int = 10, alpha: int = 16, widen: int = 1,
               n_units: int | list[int] = 2, norm: str = "batch", eps: float = 1.0, stitch: str = "residual",
               continuous: bool = False, basis: str = "piecewise_constant", gradient: str = "backprop") -> nn.Module:
    """FractalNet's two-column blocks with the mean join (Larsson et al. 2017), read as a second-order RK step.

    A discrete unit has two rates (``F1``, ``F2``): twice a ResNet unit's parameters.
    ``continuous=True``: a ContinuousNet with the ``fractalnet`` scheme, whose two stages read
    ``theta`` at the step's start and end.
    """
    return _build("fractalnet", lambda width: FractalUnit(width, norm), "fractalnet", in_channels=in_channels,
                  num_classes=num_classes, alpha=alpha, widen=widen, n_units=n_units, norm=norm, eps=eps,
                  stitch=stitch, continuous=continuous, basis=basis, gradient=gradient)


@register_model("revnet")
def revnet(*, in_channels: int = 3, num_classes: int = 10, alpha: int = 16, widen: int = 1,
           n_units: int | list[int] = 2, norm: str = "batch", eps: float = 1.0, stitch: str = "residual",
           continuous: bool = False, basis: str = "piecewise_constant", gradient: str = "backprop") -> nn.Module:
    """RevNet's reversible units on channel halves (Gomez et al. 2017): ``X+ = X + F(Y)``, ``Y+ = Y + G(X+)``.

    ``F`` and ``G`` act on half the channels, so a unit has half a ResNet unit's parameters.
    The stitches stay ordinary (not reversible), as RevNet's downsampling units are.
    ``continuous=True``: a ContinuousNet whose template is a [`Coupling`][contdepth.nn.Coupling]
    of two half-width rates with their own depth-varying weights, integrated by ``revnet``.
    """
    return _build("revnet", lambda width: RevUnit(width, norm), "revnet", in_channels=in_channels,
                  num_classes=num_classes, alpha=alpha, widen=widen, n_units=n_units, norm=norm, eps=eps,
                  stitch=stitch, continuous=continuous, basis=basis, gradient=gradient, coupled=True)

"""Image classifiers: ContinuousNet, its discrete ResNet twin and LM-ResNet."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..basis import available_bases
from ..common.errors import OptionError
from ..common.validate import check_bool, check_choice, check_int, check_number
from ..nn import ContinuousBlock
from ..solvers import LMResNetScheme, Scheme, get_scheme, gradient_mode
from .layers import Head, NORMS, STITCHES, Stitch, check_block_size, make_stitch, per_stage, residual_rate, stem
from .registry import register_model

STRIDES = (1, 2, 2)
# The previous state of an LM stage's first unit: none (a plain step) or the stitch's shortcut.
LM_STARTS = ("euler", "shortcut")


def stage_widths(alpha: int, widen: int) -> tuple[int, int, int]:
    """The three stages' widths ``(a, 2a, 4a)`` with ``a = alpha * widen`` (both checked)."""
    check_int(alpha, "alpha", low=1)
    check_int(widen, "widen", low=1)
    base = alpha * widen
    return (base, 2 * base, 4 * base)


class Stage(nn.Sequential):
    """``(stitch, body)``; a body with ``uses_shortcut`` also receives the stitch's shortcut ``D(u)``.

    The authors' LM-ResNet takes the downsampling shortcut as the state before a stage's
    first unit (see [`ResidualStage`][contdepth.models.ResidualStage]). Kept a ``Sequential`` so parameter names stay
    ``stages.i.0`` (stitch) and ``stages.i.1`` (body).
    """

    @property
    def shortcut_start(self) -> bool:
        """Whether the body's first unit takes the stitch's shortcut ``D(u)`` as its previous state (else it is a
        plain residual step): an LM body with ``lm_start="shortcut"`` after a downsampling stitch."""
        stitch, body = self[0], self[1]
        return bool(getattr(body, "uses_shortcut", False)) and isinstance(stitch, Stitch) \
            and stitch.shortcut.stride != (1, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        stitch, body = self[0], self[1]
        if self.shortcut_start:
            shortcut = stitch.shortcut(u)  # D(u), computed once: the stitch's output is D(u) + eps * body(u)
            return body(shortcut + stitch.eps * stitch.body(u), previous=shortcut)
        return body(stitch(u))


def check_image_input(x: torch.Tensor, in_channels: int) -> None:
    """Refuse an input the stem cannot take, naming the option (``in_channels``) that would fit it.

    Without it a 1-channel batch fails deep inside torch ("expected input ... to have 3
    channels"), which names neither the model nor the option. Two integer comparisons per
    forward pass; under ``torch.compile`` or export they are shape guards.
    """
    if x.dim() != 4:
        raise OptionError("input", f"an image model takes N x C x H x W batches, got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise OptionError("in_channels", f"the model was built for {in_channels}-channel images (in_channels="
                                         f"{in_channels}), but the input has {x.shape[1]} channel(s) (shape "
                                         f"{tuple(x.shape)}); build it with in_channels={x.shape[1]}")


class StagedNet(nn.Module):
    """Stem, three (stitch, body) stages, head: the topology ContinuousNet and ResNet share.

    ``make_body(stage, width)`` builds what follows each stage's stitch; ``stitch`` is the
    kind of stitch (`STITCHES`).
    """

    def __init__(self, *, in_channels: int, num_classes: int, alpha: int, widen: int, norm: str, eps: float,
                 make_body: Callable[[int, int], nn.Module], stitch: str = "residual") -> None:
        super().__init__()
        self.stitch = stitch
        self.in_channels = in_channels
        self.stem = stem(in_channels, alpha, norm)
        stages, previous = [], alpha
        for i, (width, stride) in enumerate(zip(stage_widths(alpha, widen), STRIDES)):
            stages.append(Stage(make_stitch(stitch, previous, width, stride, norm, eps), make_body(i, width)))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.head = Head(previous, num_classes, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_channels)
        return self.head(self.stages(self.stem(x)))


class ContinuousNet(StagedNet):
    """Stem, three (stitch, ContinuousBlock) stages, head.

    Each stage's ContinuousBlock integrates the pre-activation residual rate over
    depth ``[0, 1]``; with ``scheme="euler"``, a piecewise-constant basis and
    ``n_steps = n_basis`` it computes ``x + f_k(x) / n_basis`` per unit, i.e. a ResNet.
    """

    def __init__(self, *, in_channels: int, num_classes: int, alpha: int, widen: int, n_basis: tuple[int, ...],
                 basis: str, scheme: str | Scheme, n_steps: tuple[int, ...] | None, norm: str, eps: float,
                 checkpoint: bool, stitch: str = "residual",
                 make_rate: Callable[[int], nn.Module] | None = None, gradient: str = "backprop") -> None:
        """``make_rate(width)`` builds a stage's template (default: the pre-activation ``residual_rate``)."""
        rate = make_rate or (lambda width: residual_rate(width, norm))

        def block(i: int, width: int) -> ContinuousBlock:
            return ContinuousBlock(
                rate(width), basis=basis, n_basis=n_basis[i], scheme=scheme,
                n_steps=None if n_steps is None else n_steps[i], checkpoint=checkpoint, gradient=gradient,
            )

        super().__init__(in_channels=in_channels, num_classes=num_classes, alpha=alpha, widen=widen, norm=norm,
                         eps=eps, make_body=block, stitch=stitch)


@register_model("continuousnet")
def continuousnet(*, in_channels: int = 3, num_classes: int = 10, alpha: int = 16, widen: int = 1,
                  n_basis: int | list[int] = 2, basis: str = "piecewise_constant", scheme: str = "euler",
                  n_steps: int | list[int] | None = None, norm: str = "batch", eps: float = 1.0,
                  checkpoint: bool = False, stitch: str = "residual", gradient: str = "backprop") -> nn.Module:
    """The ContinuousNet image classifier (Queiruga et al. 2020).

    ``gradient``: how backward gets its gradients (``backprop``, ``checkpoint``,
    ``reversible`` with a reversible scheme, ``adjoint``); ``checkpoint=True`` is ``"checkpoint"``.

    ``stitch``: ``residual`` (the reference's) or ``projection`` (a strided 1x1 convolution:
    cheaper, which matters most for a compressed model; see ``models.layers.STITCHES``).
    """
    stage_widths(alpha, widen)  # every option is checked before the first layer is built
    check_choice(basis, "basis", tuple(available_bases()))
    mode = gradient_mode(gradient, check_bool(checkpoint, "checkpoint"))
    mode.check(get_scheme(scheme))  # the mode's own check, before any layer is built
    gradient = mode.name
    return ContinuousNet(
        in_channels=check_int(in_channels, "in_channels", low=1),
        num_classes=check_int(num_classes, "num_classes", low=1), alpha=alpha, widen=widen,
        n_basis=per_stage(n_basis, "n_basis"), basis=basis, scheme=scheme,
        n_steps=None if n_steps is None else per_stage(n_steps, "n_steps"), norm=check_choice(norm, "norm", NORMS),
        eps=check_number(eps, "eps"), checkpoint=False, stitch=check_choice(stitch, "stitch", STITCHES),
        gradient=gradient,
    )


class ResidualStage(nn.Module):
    """``n_units`` pre-activation residual units, each with its own weights.

    With ``lm=True`` it is an LM-ResNet stage: ``u_{n+1} = (1-k_n) u_n + k_n u_{n-1} + f_n(u_n)``
    (the first unit is a plain residual step), with one learnable ``k_n`` per unit (or
    per unit and channel) initialised in ``[-0.1, 0]`` so training starts near a ResNet.
    ``drop_rates`` enables stochastic depth: unit ``n`` is skipped in training with
    probability ``drop_rates[n]``; survivors are scaled by ``1 / (1 - p)``.

    ``lm_start`` says what the first unit of an LM stage uses as its previous state:
    ``"euler"`` none (a plain residual step; contdepth's rule since the first release), or
    ``"shortcut"``, the authors' rule (Lu et al.'s ``MResNet``): after a downsampling stitch
    ``u -> D(u) + body(u)``, the first unit is an LM step with ``D(u)`` as ``u_{n-1}``. The
    authors' downsampling blocks play the part of contdepth's strided stitches; their first
    stage has no stitch and starts with a plain unit, so here the first stage (stride 1)
    starts plain under both rules.
    """

    def __init__(self, channels: int, n_units: int, norm: str, *, lm: bool = False, k_per_channel: bool = False,
                 drop_rates: tuple[float, ...] | None = None, lm_start: str = "euler") -> None:
        super().__init__()
        check_choice(lm_start, "lm_start", LM_STARTS)
        self.uses_shortcut = lm and lm_start == "shortcut"
        self.units = nn.ModuleList(residual_rate(channels, norm) for _ in range(n_units))
        self.lm = lm
        if lm:
            shape = (n_units, 1, channels, 1, 1) if k_per_channel else (n_units,)
            self.k = nn.Parameter(torch.empty(shape).uniform_(-0.1, 0.0))
        self.drop_rates = drop_rates or (0.0,) * n_units

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """The stage's output; ``previous`` is the state before the first unit (the authors' LM start)."""
        for n, unit in enumerate(self.units):
            p = self.drop_rates[n]
            if self.training and p > 0:
                keep = bool(torch.rand(()) >= p)
                update = unit(x) / (1 - p) if keep else None
            else:
                update = unit(x)
            if self.lm and previous is not None:
                k = self.k[n]
                nxt = (1 - k) * x + k * previous
            else:
                nxt = x
            if update is not None:
                nxt = nxt + update
            previous, x = x, nxt
        return x


class ResNet(StagedNet):
    """The discrete twin of ContinuousNet: same stem, stitches and head; independent units."""

    def __init__(self, *, in_channels: int, num_classes: int, alpha: int, widen: int, n_units: tuple[int, ...],
                 norm: str, eps: float, lm: bool = False, k_per_channel: bool = False, survival: float = 1.0,
                 stitch: str = "residual", lm_start: str = "euler") -> None:
        total = sum(n_units)
        # Linear decay rule of stochastic depth: unit l of L is dropped with probability
        # (l / L) * (1 - p_L), rising from ~0 to 1 - p_L at the last unit.
        rates = [(unit + 1) / total * (1 - survival) for unit in range(total)]
        starts = [sum(n_units[:i]) for i in range(len(n_units))]

        def stage(i: int, width: int) -> ResidualStage:
            return ResidualStage(width, n_units[i], norm, lm=lm, k_per_channel=k_per_channel,
                                 drop_rates=tuple(rates[starts[i]:starts[i] + n_units[i]]), lm_start=lm_start)

        super().__init__(in_channels=in_channels, num_classes=num_classes, alpha=alpha, widen=widen, norm=norm,
                         eps=eps, make_body=stage, stitch=stitch)


@register_model("resnet")
def resnet(*, in_channels: int = 3, num_classes: int = 10, alpha: int = 16, widen: int = 1,
           n_units: int | list[int] = 2, norm: str = "batch", eps: float = 1.0, stitch: str = "residual") -> nn.Module:
    """Pre-activation ResNet v2 with ContinuousNet's topology and ``n_units`` units per stage (and ``stitch``)."""
    stage_widths(alpha, widen)  # every option is checked before the first layer is built
    return ResNet(in_channels=check_int(in_channels, "in_channels", low=1),
                  num_classes=check_int(num_classes, "num_classes", low=1), alpha=alpha, widen=widen,
                  n_units=per_stage(n_units, "n_units"), norm=check_choice(norm, "norm", NORMS),
                  eps=check_number(eps, "eps"), stitch=check_choice(stitch, "stitch", STITCHES))


class LMContinuousBlock(nn.Module):
    """A ContinuousBlock manifested with the LM-ResNet two-step scheme and a learnable ``k``."""

    def __init__(self, block: ContinuousBlock, channels: int, k_per_channel: bool) -> None:
        super().__init__()
        shape = (1, channels, 1, 1) if k_per_channel else ()
        self.k = nn.Parameter(torch.empty(shape).uniform_(-0.1, 0.0))
        self.block = block
        # One scheme object holding the parameter itself: the optimizer updates k in place,
        # and the block's per-manifestation plan is built once, not on every forward.
        block.manifest(LMResNetScheme(self.k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


@register_model("lm_resnet")
def lm_resnet(*, in_channels: int = 3, num_classes: int = 10, alpha: int = 16, widen: int = 1,
              n_units: int | list[int] = 2, norm: str = "batch", eps: float = 1.0, k_per_channel: bool = False,
              survival: float = 1.0, continuous: bool = False, basis: str = "piecewise_constant",
              lm_start: str = "euler") -> nn.Module:
    """LM-ResNet (Lu et al. 2018): learnable two-step units; ``survival < 1`` adds stochastic depth.

    ``lm_start``: the previous state of a downsampling stage's first unit; ``"euler"`` (none:
    a plain residual step, the default, which keeps runs and checkpoints written before the
    option computing what they computed) or ``"shortcut"`` (the authors' code: the stitch's
    shortcut ``D(u)``; see [`ResidualStage`][contdepth.models.ResidualStage]). It applies to the discrete network.

    ``continuous=True`` builds instead a ContinuousNet whose blocks are integrated with the
    LM two-step scheme (one learnable ``k`` per stage), ``n_units`` basis functions and steps.
    """
    check_choice(lm_start, "lm_start", LM_STARTS)
    if isinstance(survival, bool) or not (isinstance(survival, (int, float)) and 0 < survival <= 1):
        raise ValueError(f"survival: the last unit's survival probability p_L must be in (0, 1], got {survival!r}")
    stage_widths(alpha, widen)  # every option is checked before the first layer is built
    units = per_stage(n_units, "n_units")
    check_bool(k_per_channel, "k_per_channel")
    check_bool(continuous, "continuous")
    if not continuous:
        return ResNet(in_channels=check_int(in_channels, "in_channels", low=1),
                      num_classes=check_int(num_classes, "num_classes", low=1), alpha=alpha, widen=widen,
                      n_units=units, norm=check_choice(norm, "norm", NORMS), eps=check_number(eps, "eps"),
                      lm=True, k_per_channel=k_per_channel, survival=float(survival), lm_start=lm_start)
    if lm_start != "euler":
        raise ValueError("lm_start: the authors' shortcut start applies to the discrete LM-ResNet (continuous=False); "
                         "the continuous LM variant starts each block with a plain step")
    if survival != 1.0:
        raise ValueError("survival: stochastic depth applies to the discrete LM-ResNet (continuous=False)")
    model = continuousnet(in_channels=in_channels, num_classes=num_classes, alpha=alpha, widen=widen,
                          n_basis=list(units), basis=basis, scheme="euler", norm=norm, eps=eps)
    for stage, width in zip(model.stages, stage_widths(alpha, widen)):
        stage[1] = LMContinuousBlock(stage[1], width, bool(k_per_channel))
    return model


class ContinuousMLP(nn.Module):
    """Flatten, lift to ``width``, one ContinuousBlock with an MLP rate, classify."""

    def __init__(self, in_features: int, num_classes: int, width: int, block: ContinuousBlock) -> None:
        super().__init__()
        self.lift = nn.Linear(in_features, width)
        self.block = block
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise OptionError("input", f"the model takes batches (N x ...), got shape {tuple(x.shape)}")
        if x[0].numel() != self.lift.in_features:
            raise OptionError("in_features", f"the model was built for {self.lift.in_features} values per example "
                                             f"(in_features, or in_channels * image_size ** 2), but the input of "
                                             f"shape {tuple(x.shape)} has {x[0].numel()}; build it with the "
                                             "input's size")
        return self.head(torch.relu(self.block(self.lift(x.flatten(1)))))


@register_model("continuous_mlp")
def continuous_mlp(*, in_features: int = 64, num_classes: int = 10, width: int = 128, n_basis: int = 2,
                   basis: str = "piecewise_constant", scheme: str = "rk4", n_steps: int | None = None,
                   in_channels: int | None = None, image_size: int | None = None) -> nn.Module:
    """An MLP whose hidden layer evolves as an ODE: for flat inputs (or images, flattened)."""
    if in_channels is not None and image_size is not None:
        in_features = check_int(in_channels, "in_channels", low=1) * check_int(image_size, "image_size", low=1) ** 2
    width = check_int(width, "width", low=1)
    check_block_size(n_basis, "n_basis")
    if n_steps is not None:
        check_block_size(n_steps, "n_steps")
    rate = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
    block = ContinuousBlock(rate, basis=basis, n_basis=n_basis, scheme=scheme, n_steps=n_steps)
    return ContinuousMLP(check_int(in_features, "in_features", low=1),
                         check_int(num_classes, "num_classes", low=1), width, block)

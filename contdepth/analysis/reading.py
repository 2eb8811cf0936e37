"""Reading a trained discrete ResNet as a continuous-in-depth model.

A ResNet stage computes ``x_{k+1} = x_k + f_k(x_k)`` with independent weights per unit.
Read as an ODE, that is one forward-Euler step of size ``h = 1/n`` per unit of
``dx/dt = R(theta(t), x)`` with a *piecewise-constant* ``theta(t)`` that has one cell
per unit, where ``R = n * f_k`` on cell ``k``. [`resnet_as_continuous`][contdepth.analysis.resnet_as_continuous] builds exactly
that ContinuousNet, so the ResNet's trained function is its ``("euler", n)``
manifestation and every other manifestation asks what the same ``theta(t)`` does
when integrated more accurately: the convergence test of the continuous-depth claim.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..models import ResNet, create
from ..nn import continuous_blocks

_UNIT_KEY = re.compile(r"stages\.([0-9]+)\.1\.units\.([0-9]+)\.(.+)")  # fullmatch


def _norm_name(module: nn.Module) -> str:
    if isinstance(module, nn.BatchNorm2d):
        return "batch"
    if isinstance(module, nn.GroupNorm):
        return "group"
    if isinstance(module, nn.Identity):
        return "none"
    raise ValueError(f"model: unrecognised normalisation layer {type(module).__name__} in the ResNet's stem")


def _last_linear_layer(unit: nn.Module) -> str:
    """Name of the unit's final parametrised layer, which must be linear in its weights.

    ``f(x) = W * g(x) (+ b)`` for that layer, so scaling ``W`` (and ``b``) by ``n`` scales
    the whole unit by ``n``; a nonlinear last layer (a norm) could not be scaled this way.
    """
    names = [name for name, m in unit.named_children() if any(True for _ in m.parameters(recurse=False))]
    if not names:
        raise ValueError("model: a residual unit has no parameters to read as theta(t)")
    last = unit.get_submodule(names[-1])
    if not isinstance(last, (nn.Conv2d, nn.Linear)):
        raise ValueError(f"model: a residual unit ends in {type(last).__name__}, not a convolution or linear layer; "
                         "its output cannot be rescaled by the number of units")
    return names[-1]


def resnet_as_continuous(model: nn.Module) -> nn.Module:
    """The ContinuousNet whose ``("euler", n_units)`` manifestation *is* ``model``.

    ``model`` is a [`ResNet`][contdepth.models.ResNet] (``create("resnet", ...)``). Every
    stage becomes a [`ContinuousBlock`][contdepth.nn.ContinuousBlock] with a piecewise-constant basis of one cell
    per unit, scheme ``euler`` and ``n_steps = n_units``; unit ``k``'s weights are cell
    ``k``'s coefficients, its last convolution multiplied by ``n_units`` (the Euler step
    multiplies the rate by ``h = 1/n_units``), and its normalisation running statistics
    are cell ``k``'s depth-dependent state. Stem, stitches and head are copied. In eval
    mode the result computes the ResNet's outputs (to rounding; exactly when ``n_units``
    is a power of two). Returned in eval mode, on ``model``'s dtype and device;
    ``model`` is not modified.

    LM-ResNet stages (``lm_resnet``) are two-step units with a learnable ``k_n`` per unit,
    not Euler steps of one ODE, and are rejected with a ``ValueError``.
    """

    if not isinstance(model, ResNet):
        raise ValueError(f"model: expected a ResNet (create('resnet', ...)), got {type(model).__name__}")
    stages = [stage[1] for stage in model.stages]
    if any(stage.lm for stage in stages):
        raise ValueError("model: LM-ResNet stages (lm_resnet) take two-step units u+ = (1-k_n) u + k_n u- + f_n(u) "
                         "with a different k_n per unit, which is no single ODE scheme; only plain ResNet stages "
                         "(x + f_k(x)) can be read as a piecewise-constant theta(t)")
    first = next(model.parameters())
    conv = model.stem[0]
    alpha = conv.out_channels
    widen = model.head.linear.in_features // (4 * alpha)  # the last stage is 4 * alpha * widen wide
    n_units = [len(stage.units) for stage in stages]
    with torch.random.fork_rng(devices=[]):  # the initial draw is overwritten; keep the caller's RNG as it was
        net = create("continuousnet", in_channels=conv.in_channels, num_classes=model.head.linear.out_features,
                     alpha=alpha, widen=widen, n_basis=n_units, basis="piecewise_constant", scheme="euler",
                     norm=_norm_name(model.stem[1]), eps=float(getattr(model.stages[0][0], "eps", 1.0)),
                     stitch=model.stitch)
    net.to(dtype=first.dtype, device=first.device)
    scaled = [_last_linear_layer(stage.units[0]) + "." for stage in stages]

    target = net.state_dict()  # tensors sharing storage with net's parameters and buffers
    written: set[str] = set()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            match = _UNIT_KEY.fullmatch(key)
            if match is None:
                target[key].copy_(value)
                written.add(key)
                continue
            s, k, name = int(match[1]), int(match[2]), match[3]
            block = net.stages[s][1]
            if name in block.parameter_names:
                factor = n_units[s] if name.startswith(scaled[s]) else 1
                key = f"stages.{s}.1.coefficients.{name}"
                target[key][k].copy_(value * factor)
            elif name in block.state_names:
                key = f"stages.{s}.1.state.{name}"
                target[key][k].copy_(value)
            else:  # integer buffers (num_batches_tracked) are shared over depth: keep the largest count
                key = f"stages.{s}.1.state.{name}"
                target[key].copy_(torch.maximum(target[key], value) if k else value)
            written.add(key)
    for s, stage in enumerate(net.stages):  # each unit's statistics were sampled at its own (Euler) step
        stage[1].assume_state_sampled_on()
        written.add(f"stages.{s}.1.state_depth_range")
    missing = sorted(set(target) - written)
    if missing:
        raise ValueError(f"model: the ResNet has no value for {missing[0]} of its continuous reading")
    return net.eval()


def as_continuous(model: nn.Module) -> tuple[nn.Module, str | None]:
    """``(model with ContinuousBlocks, how it was read)`` for a manifestation analysis.

    A model that already holds ContinuousBlocks is returned as it is (reading ``None``);
    a ResNet is read with [`resnet_as_continuous`][contdepth.analysis.resnet_as_continuous]; anything else is a ``ValueError``.
    """

    if continuous_blocks(model):
        return model, None
    if isinstance(model, ResNet):
        units = [len(stage[1].units) for stage in model.stages]
        return resnet_as_continuous(model), f"resnet read as piecewise-constant theta(t), one cell per unit {units}"
    raise ValueError(f"model: {type(model).__name__} has no ContinuousBlock and is not a ResNet, so it has a single "
                     "manifestation and nothing to analyse")


__all__ = ["as_continuous", "resnet_as_continuous"]

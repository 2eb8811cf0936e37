"""A stage of residual units ``x + body_k(x)`` as one ContinuousBlock, checked on a probe batch.

A stage of ``n`` units ``x <- x + body_k(x)`` is forward Euler with ``n`` steps of ``h = 1/n``
on the field ``n * body_k`` over cell ``k`` of a piecewise-constant ``theta(t)``. So it
converts to a [`ContinuousBlock`][contdepth.nn.ContinuousBlock] without changing an output,
but only if every unit *is* that. A torchvision-style unit ``relu(x + body(x))``
(post-activation), a strided or projection shortcut, bodies of different shapes, or a body
whose output does not scale with its last layer's weights (so ``n * body_k`` is no setting
of the same layers) convert to a different function, and a hand-written recipe gives no
warning. [`units_to_block`][contdepth.nn.units_to_block] checks each of these on a probe
batch and refuses the first it finds in one line; the block it returns computes the
stage's outputs on the probe (checked too).
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..common.errors import OptionError
from .block import ContinuousBlock

Tensor = torch.Tensor
#: A probe built from a shape is allocated at once: bounded far above a useful probe batch.
MAX_PROBE_VALUES = 2**24


def units_to_block(units: Iterable[nn.Module], *, probe: Tensor | None = None,
                   probe_shape: Sequence[int] | None = None, body: str | Callable[[nn.Module], nn.Module] = "body",
                   last_layer: str | None = None, rtol: float = 1e-4) -> ContinuousBlock:
    """The ContinuousBlock (piecewise constant, one cell per unit, ``euler`` x ``n``) that *is* ``units``.

    Args:
        units: the stage's residual units in order (a list, ``nn.Sequential`` or
            ``nn.ModuleList``), each computing ``x + body(x)`` with a body of the same layers.
        probe: a batch of the stage's *input* (what the first unit receives), on which every
            check runs; typical values are best (a signed random batch catches a final ReLU).
        probe_shape: instead of ``probe``: the shape of one, filled with a seeded normal
            draw in the bodies' dtype and device.
        body: the attribute holding a unit's body (``"body"``), or a function
            ``unit -> body module``.
        last_layer: the body's submodule whose weights are multiplied by ``n`` (the Euler
            step multiplies the rate by ``h = 1/n``); default: the last submodule that owns
            parameters.
        rtol: the largest difference allowed in each check, relative to the largest value
            compared (float32 rounding of the scaled weights stays far below 1e-4).

    Checks, on the probe in eval mode (normalisation reads its running statistics), unit by
    unit along the stage; the first failure is an
    ``contdepth.common.OptionError`` (a ``ValueError``) of one line naming the unit:

    - every body has the same parameter and buffer names, shapes and dtypes as the first
      (one template with other weights), and freezes (``requires_grad=False``) the same
      parameters (a block freezes a parameter at every depth or at none);
    - ``body(x)`` and ``unit(x)`` keep ``x``'s shape (a downsampling unit, strided or with a
      projection shortcut, is no ODE step: keep it outside the block, as contdepth's models
      keep their stitches);
    - ``unit(x) == x + body(x)`` (refuses post-activation ``relu(x + body(x))`` and any
      shortcut other than the identity);
    - ``body`` with the last layer's weights times ``c`` equals ``c * body(x)`` for ``c = 2``
      and ``c = n``: the field ``n * body_k`` must be a setting of the same layers, which is
      what lets ``theta(t)`` be one template's weights at every depth (a final activation,
      normalisation without affine weights or a bias-free scale after that layer breaks it);
    - the block's output equals the stage's.

    The units are not modified (their train/eval modes are restored). The block is
    returned in the first unit's mode; its normalisation state is counted as sampled at
    every unit's own step (as a ResNet's units measured it). Parameters a unit has frozen
    (``requires_grad=False``) stay frozen in the block.
    """
    units = _as_units(units)
    bodies = [_body_of(unit, body, k) for k, unit in enumerate(units)]
    _check_same_layers(bodies)
    check_rtol = _check_rtol(rtol)
    scaled = _last_layer_parameters(bodies[0], last_layer)
    n = len(units)
    x = _probe(probe, probe_shape, bodies[0])
    saved = [(m, m.training) for unit in units for m in unit.modules()] + \
            [(m, m.training) for b in bodies for m in b.modules()]
    block_mode = units[0].training
    try:
        for unit in units:
            unit.eval()
        for b in bodies:
            b.eval()
        with torch.no_grad():
            stage_in = x
            for k, (unit, b) in enumerate(zip(units, bodies)):
                x = _check_unit(k, unit, b, x, scaled, n, check_rtol)
            block = _build_block(bodies, scaled, n)
            block.eval()
            out = block(stage_in)
            difference = _difference(out, x)
            if difference > check_rtol * _scale(x):
                raise OptionError("units", f"the converted block differs from the units by {difference:.3g} on the "
                                           f"probe (largest output {_scale(x):.3g}); the units are not a pure "
                                           "function of their input and weights")
    finally:
        for module, mode in saved:
            module.training = mode
    return block.train(block_mode)


# --- the checks --------------------------------------------------------------------------------------
def _as_units(units: object) -> list[nn.Module]:
    if isinstance(units, nn.Module) and not isinstance(units, (nn.Sequential, nn.ModuleList)):
        raise OptionError("units", f"give the stage's units (a list, nn.Sequential or nn.ModuleList), "
                                   f"got one {type(units).__name__}")
    if isinstance(units, (str, bytes, Tensor)) or not isinstance(units, Iterable):
        raise OptionError("units", f"give the stage's units (a list of nn.Module), got {type(units).__name__}")
    units = list(units)
    if not units:
        raise OptionError("units", "the stage has no units to convert")
    for k, unit in enumerate(units):
        if not isinstance(unit, nn.Module):
            raise OptionError(f"units[{k}]", f"expected an nn.Module, got {type(unit).__name__}")
    return units


def _body_of(unit: nn.Module, body: str | Callable[[nn.Module], nn.Module], k: int) -> nn.Module:
    found = body(unit) if callable(body) else getattr(unit, body, None) if isinstance(body, str) else None
    if not isinstance(found, nn.Module):
        how = f"attribute {body!r}" if isinstance(body, str) else "body function"
        raise OptionError(f"units[{k}]", f"{type(unit).__name__} has no body module (the {how} gave "
                                         f"{type(found).__name__}); a convertible unit computes x + body(x): "
                                         "name its body with body=")
    return found


def _layers(module: nn.Module) -> dict[str, tuple[str, tuple[int, ...], torch.dtype]]:
    tensors = [("parameter", name, t) for name, t in module.named_parameters()]
    tensors += [("buffer", name, t) for name, t in module.named_buffers()]
    return {name: (kind, tuple(t.shape), t.dtype) for kind, name, t in tensors}


def _check_same_layers(bodies: list[nn.Module]) -> None:
    first = _layers(bodies[0])
    for k, b in enumerate(bodies[1:], start=1):
        mine = _layers(b)
        for name in sorted(set(first) | set(mine)):
            if name not in mine or name not in first:
                which = "lacks" if name not in mine else "has an extra"
                raise OptionError(f"units[{k}]", f"its body {which} tensor {name!r} compared with units[0]'s: every "
                                                 "unit must be the same layers with other weights (one template)")
            if mine[name] != first[name]:
                kind, shape, dtype = mine[name]
                raise OptionError(f"units[{k}]", f"its body's {kind} {name!r} has shape {shape} ({dtype}) but "
                                                 f"units[0]'s has {first[name][1]} ({first[name][2]}): every unit must "
                                                 "be the same layers (a unit of another width or stride stays "
                                                 "outside the block)")
        frozen = {name for name, p in bodies[0].named_parameters() if not p.requires_grad}
        mine_frozen = {name for name, p in b.named_parameters() if not p.requires_grad}
        if mine_frozen != frozen:  # a block freezes a parameter at every depth or none: never unfreeze one
            name = sorted(frozen ^ mine_frozen)[0]
            state, other = ("frozen", "trainable") if name in mine_frozen else ("trainable", "frozen")
            raise OptionError(f"units[{k}]", f"its body's parameter {name!r} is {state} but units[0]'s is {other}: "
                                             "a block freezes a parameter at every depth or at none, so every "
                                             "unit must freeze the same parameters")


def _check_rtol(rtol: object) -> float:
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 < rtol < 1:
        raise OptionError("rtol", f"must be a number in (0, 1), got {rtol!r}")
    return float(rtol)


def _last_layer_parameters(body: nn.Module, last_layer: str | None) -> tuple[str, ...]:
    """Names (in ``body``) of the parameters multiplied by ``n``: those the last layer owns itself."""
    if last_layer is None:
        owners = [name for name, m in body.named_modules() if any(True for _ in m.parameters(recurse=False))]
        if not owners:
            raise OptionError("units[0]", "its body has no parameters, so there is nothing to vary with depth")
        last_layer = owners[-1]
    elif not isinstance(last_layer, str):
        raise OptionError("last_layer", f"must be the name of a submodule of the body, got {type(last_layer).__name__}")
    try:
        module = body.get_submodule(last_layer)
    except AttributeError as exc:
        raise OptionError("last_layer", f"the body has no submodule {last_layer!r}") from exc
    names = tuple(f"{last_layer}.{name}" if last_layer else name for name, _ in module.named_parameters(recurse=False))
    if not names:
        raise OptionError("last_layer", f"{last_layer!r} owns no parameters to multiply by the number of units")
    return names


def _probe(probe: Tensor | None, probe_shape: Sequence[int] | None, body: nn.Module) -> Tensor:
    if (probe is None) == (probe_shape is None):
        raise OptionError("probe", "give a probe batch of the stage's input (probe=) or its shape (probe_shape=), "
                                   "one of them: the conversion is checked on it")
    if probe is not None:
        if not isinstance(probe, Tensor) or not probe.is_floating_point():
            raise OptionError("probe", f"must be a floating-point tensor, got {type(probe).__name__}"
                                       + (f" of {probe.dtype}" if isinstance(probe, Tensor) else ""))
        if not torch.isfinite(probe).all():
            raise OptionError("probe", "holds NaN or infinite values")
        return probe.detach()
    if isinstance(probe_shape, (str, bytes)) or not isinstance(probe_shape, Sequence) or not probe_shape or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in probe_shape):
        raise OptionError("probe_shape", f"must be a shape of integers >= 1 (batch first), got {probe_shape!r}")
    if math.prod(probe_shape) > MAX_PROBE_VALUES:
        raise OptionError("probe_shape", f"at most {MAX_PROBE_VALUES:,} values, got {tuple(probe_shape)}")
    like = next((t for t in [*body.parameters(), *body.buffers()] if t.is_floating_point()), None)
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    draw = torch.randn(tuple(probe_shape), generator=torch.Generator().manual_seed(0), dtype=dtype)
    return draw.to(like.device) if like is not None else draw


def _run(what: str, k: int, module: nn.Module, x: Tensor) -> Tensor:
    try:
        out = module(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptionError("probe", f"units[{k}]'s {what} cannot take a probe of shape {tuple(x.shape)}: "
                                   f"{first}") from exc
    if not isinstance(out, Tensor):
        raise OptionError(f"units[{k}]", f"its {what} returns {type(out).__name__}, not a tensor")
    return out


def _difference(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def _scale(x: Tensor) -> float:
    return max(float(x.abs().max()) if x.numel() else 0.0, torch.finfo(x.dtype).tiny)


def _check_unit(k: int, unit: nn.Module, body: nn.Module, x: Tensor, scaled: tuple[str, ...], n: int,
                rtol: float) -> Tensor:
    """Unit ``k`` on ``x``: every check of `units_to_block`; returns ``unit(x)``."""
    fx = _run("body", k, body, x.clone())  # clones: a layer working in place must not change the probe
    if fx.shape != x.shape:
        raise OptionError(f"units[{k}]", f"its body maps shape {tuple(x.shape)} to {tuple(fx.shape)}: a downsampling "
                                         "unit (strided, or with a projection shortcut) changes the state's shape, "
                                         "which no ODE step does; keep it outside the block")
    y = _run("unit", k, unit, x.clone())
    if y.shape != x.shape:
        raise OptionError(f"units[{k}]", f"maps shape {tuple(x.shape)} to {tuple(y.shape)}: a downsampling unit "
                                         "(strided or projection shortcut) is no ODE step; keep it outside the block")
    difference = _difference(y, x + fx)
    if difference > rtol * _scale(y):
        raise OptionError(f"units[{k}]", f"its output differs from x + body(x) by {difference:.3g} on the probe "
                                         f"(largest value {_scale(y):.3g}): a post-activation unit "
                                         "(relu(x + body(x)), torchvision's) or a shortcut other than the identity "
                                         "is not one Euler step; only x + body(x) converts")
    for training in (False, True):
        for factor in sorted({2, n} - {1}):
            difference, scale = _scaling_error(k, body, _batch_of_two(x) if training else x, scaled, factor, training)
            if difference > rtol * scale:
                layer = scaled[0].rpartition(".")[0] or scaled[0]
                mode = "in training mode " if training else ""
                raise OptionError(f"units[{k}]", f"its body is not linear in its last layer's weights ({layer!r}): "
                                                 f"{mode}with them times {factor} the output differs from {factor} * "
                                                 f"body(x) by {difference:.3g}, so the field n * body is no setting "
                                                 "of the same layers; end the body in a convolution or linear layer "
                                                 "(or name the layer that is, last_layer=)")
    return y


def _batch_of_two(x: Tensor) -> Tensor:
    """``x``, or for a probe of one example that example and a seeded variation of it.

    The training-mode check runs the body with batch statistics, which a batch of one does
    not have (``BatchNorm`` refuses it); any batch shows whether the body is linear in its
    last layer's weights, so one example must not get a valid unit refused.
    """
    if x.dim() == 0 or x.shape[0] != 1:
        return x
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype).to(x.device)
    return torch.cat([x, x + _scale(x) * noise])


def _scaling_error(k: int, body: nn.Module, x: Tensor, scaled: tuple[str, ...], factor: int,
                   training: bool) -> tuple[float, float]:
    """``(max |body_c(x) - c body(x)|, max |c body(x)|)`` with the last layer's weights times ``c = factor``.

    Both modes: the block trains too, and a normalisation without affine weights after the
    last layer undoes the factor with batch statistics (in eval mode, with running
    statistics, it may not show). A copy of the body runs, so no statistics of the caller's
    change; both calls draw the same random numbers (dropout masks).
    """
    from torch.func import functional_call  # here: importing torch.func costs start-up time

    work = copy.deepcopy(body).train(training)
    params = dict(work.named_parameters())
    devices = [x.device] if x.device.type == "cuda" else []
    outs = []
    for c in (1, factor):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            try:
                outs.append(functional_call(work, {name: params[name] * c for name in scaled}, (x.clone(),)))
            except (RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise OptionError("probe", f"units[{k}]'s body cannot run {'in training mode ' if training else ''}"
                                           f"on a probe of shape {tuple(x.shape)}: {first}") from exc
    expected = factor * outs[0]
    return _difference(outs[1], expected), _scale(expected)


def _build_block(bodies: list[nn.Module], scaled: tuple[str, ...], n: int) -> ContinuousBlock:
    """The block with cell ``k`` holding unit ``k``'s weights (the last layer's times ``n``) and statistics."""
    block = ContinuousBlock(copy.deepcopy(bodies[0]), basis="piecewise_constant", n_basis=n, scheme="euler",
                            n_steps=n, initializer=_keep)
    for name, coefficients in block.coefficient_items():
        factor = n if name in scaled else 1
        for k, b in enumerate(bodies):
            coefficients[k].copy_(b.get_parameter(name) * factor)
    for name, state in block.state_items():
        for k, b in enumerate(bodies):
            state[k].copy_(b.get_buffer(name))
    for name, shared in block.shared_buffers().items():  # integer counters: the largest (most updates)
        shared.copy_(torch.stack([b.get_buffer(name) for b in bodies]).max(dim=0).values)
    block.assume_state_sampled_on()
    return block


def _keep(module: nn.Module) -> None:
    """An initializer that draws nothing: every coefficient is overwritten with a unit's weights."""


__all__ = ["MAX_PROBE_VALUES", "units_to_block"]

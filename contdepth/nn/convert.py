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
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..common.errors import OptionError
from .block import ContinuousBlock
from .convert_checks import (  # noqa: F401  (MAX_PROBE_VALUES: importable from here, as before)
    MAX_PROBE_VALUES,
    batch_of_two,
    check_same_layers,
    checked_rtol,
    difference,
    keep_weights,
    largest,
    last_layer_parameters,
    probe_batch,
    run_on_probe,
    scaling_error,
)

Tensor = torch.Tensor


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
    check_same_layers(bodies)
    check_rtol = checked_rtol(rtol)
    scaled = last_layer_parameters(bodies[0], last_layer)
    n = len(units)
    x = probe_batch(probe, probe_shape, bodies[0])
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
            gap = difference(out, x)
            if gap > check_rtol * largest(x):
                raise OptionError("units", f"the converted block differs from the units by {gap:.3g} on the "
                                           f"probe (largest output {largest(x):.3g}); the units are not a pure "
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


# The helpers below are shared with `contdepth.nn.convert_terms` (a stack of transformer layers).
# Contract: ``owner`` names the sequence converted ("units", "layers"), ``who`` one element of it
# ("units[3]"), ``part`` the module of an element that is checked or run ("body", "attn term");
# every refusal is one ``OptionError`` of one line naming the element (or the option), as
# units_to_block's; nothing is modified (the scaling check runs a copy).


def _check_unit(k: int, unit: nn.Module, body: nn.Module, x: Tensor, scaled: tuple[str, ...], n: int,
                rtol: float) -> Tensor:
    """Unit ``k`` on ``x``: every check of `units_to_block`; returns ``unit(x)``."""
    # clones: a layer working in place must not change the probe
    fx = run_on_probe(body, x.clone(), who=f"units[{k}]", part="body")
    if fx.shape != x.shape:
        raise OptionError(f"units[{k}]", f"its body maps shape {tuple(x.shape)} to {tuple(fx.shape)}: a downsampling "
                                         "unit (strided, or with a projection shortcut) changes the state's shape, "
                                         "which no ODE step does; keep it outside the block")
    y = run_on_probe(unit, x.clone(), who=f"units[{k}]", part="unit")
    if y.shape != x.shape:
        raise OptionError(f"units[{k}]", f"maps shape {tuple(x.shape)} to {tuple(y.shape)}: a downsampling unit "
                                         "(strided or projection shortcut) is no ODE step; keep it outside the block")
    gap = difference(y, x + fx)
    if gap > rtol * largest(y):
        raise OptionError(f"units[{k}]", f"its output differs from x + body(x) by {gap:.3g} on the probe "
                                         f"(largest value {largest(y):.3g}): a post-activation unit "
                                         "(relu(x + body(x)), torchvision's) or a shortcut other than the identity "
                                         "is not one Euler step; only x + body(x) converts")
    for training in (False, True):
        for factor in sorted({2, n} - {1}):
            gap, scale = scaling_error(body, batch_of_two(x) if training else x, scaled, factor, training,
                                       who=f"units[{k}]", part="body")
            if gap > rtol * scale:
                layer = scaled[0].rpartition(".")[0] or scaled[0]
                mode = "in training mode " if training else ""
                raise OptionError(f"units[{k}]", f"its body is not linear in its last layer's weights ({layer!r}): "
                                                 f"{mode}with them times {factor} the output differs from {factor} * "
                                                 f"body(x) by {gap:.3g}, so the field n * body is no setting "
                                                 "of the same layers; end the body in a convolution or linear layer "
                                                 "(or name the layer that is, last_layer=)")
    return y


def _build_block(bodies: list[nn.Module], scaled: tuple[str, ...], n: int) -> ContinuousBlock:
    """The block with cell ``k`` holding unit ``k``'s weights (the last layer's times ``n``) and statistics."""
    block = ContinuousBlock(copy.deepcopy(bodies[0]), basis="piecewise_constant", n_basis=n, scheme="euler",
                            n_steps=n, initializer=keep_weights)
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


__all__ = ["MAX_PROBE_VALUES", "units_to_block"]

"""The checks a conversion of residual units makes on a probe batch, shared by the converters.

`contdepth.nn.convert` (ResNet units ``x + body(x)``) and `contdepth.nn.convert_terms` (transformer
layers ``x + t_1(x) + ...`` one term at a time) refuse what they cannot convert with the same
checks and the same wording: layers of one template, a last layer whose weights scale the output,
a probe batch, the runs on it. ``owner``/``part``/``who`` name what is checked in the one-line
messages ("units[3]'s body", "layers[2]'s term 1").
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import nn

from ..common.errors import OptionError

Tensor = torch.Tensor
#: A probe built from a shape is allocated at once: bounded far above a useful probe batch.
MAX_PROBE_VALUES = 2**24


def _layers(module: nn.Module) -> dict[str, tuple[str, tuple[int, ...], torch.dtype]]:
    tensors = [("parameter", name, t) for name, t in module.named_parameters()]
    tensors += [("buffer", name, t) for name, t in module.named_buffers()]
    return {name: (kind, tuple(t.shape), t.dtype) for kind, name, t in tensors}


def check_same_layers(modules: list[nn.Module], *, owner: str = "units", part: str = "body") -> None:
    """Refuse ``modules[k]`` whose tensors differ from ``modules[0]``'s, naming ``owner[k]``.

    Every module must have the same parameter and buffer names, shapes and dtypes as the first
    (one template with other weights) and freeze (``requires_grad=False``) the same parameters.
    """
    unit, first = owner.removesuffix("s"), _layers(modules[0])
    for k, b in enumerate(modules[1:], start=1):
        mine = _layers(b)
        for name in sorted(set(first) | set(mine)):
            if name not in mine or name not in first:
                which = "lacks" if name not in mine else "has an extra"
                raise OptionError(f"{owner}[{k}]", f"its {part} {which} tensor {name!r} compared with {owner}[0]'s: "
                                                   f"every {unit} must be the same layers with other weights (one "
                                                   "template)")
            if mine[name] != first[name]:
                kind, shape, dtype = mine[name]
                raise OptionError(f"{owner}[{k}]", f"its {part}'s {kind} {name!r} has shape {shape} ({dtype}) but "
                                                   f"{owner}[0]'s has {first[name][1]} ({first[name][2]}): every "
                                                   f"{unit} must be the same layers (a {unit} of another width or "
                                                   "stride stays outside the block)")
        frozen = {name for name, p in modules[0].named_parameters() if not p.requires_grad}
        mine_frozen = {name for name, p in b.named_parameters() if not p.requires_grad}
        if mine_frozen != frozen:  # a block freezes a parameter at every depth or none: never unfreeze one
            name = sorted(frozen ^ mine_frozen)[0]
            state, other = ("frozen", "trainable") if name in mine_frozen else ("trainable", "frozen")
            raise OptionError(f"{owner}[{k}]", f"its {part}'s parameter {name!r} is {state} but {owner}[0]'s is "
                                               f"{other}: a block freezes a parameter at every depth or at none, so "
                                               f"every {unit} must freeze the same parameters")


def checked_rtol(rtol: object) -> float:
    """``rtol`` as a float in ``(0, 1)``, else an ``OptionError`` naming ``rtol``."""
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 < rtol < 1:
        raise OptionError("rtol", f"must be a number in (0, 1), got {rtol!r}")
    return float(rtol)


def last_layer_parameters(body: nn.Module, last_layer: str | None, *, owner: str = "units", part: str = "body",
                          option: str = "last_layer") -> tuple[str, ...]:
    """Names (in ``body``) of the parameters multiplied by ``n``: those the last layer owns itself.

    ``last_layer`` names a submodule of ``body`` (``None``: the last submodule owning parameters,
    in registration order); a wrong name is refused naming ``option``.
    """
    if last_layer is None:
        owners = [name for name, m in body.named_modules() if any(True for _ in m.parameters(recurse=False))]
        if not owners:
            raise OptionError(f"{owner}[0]", f"its {part} has no parameters, so there is nothing to vary with depth")
        last_layer = owners[-1]
    elif not isinstance(last_layer, str):
        raise OptionError(option, f"must be the name of a submodule of the {part}, got {type(last_layer).__name__}")
    try:
        module = body.get_submodule(last_layer)
    except AttributeError as exc:
        raise OptionError(option, f"the {part} has no submodule {last_layer!r}") from exc
    names = tuple(f"{last_layer}.{name}" if last_layer else name for name, _ in module.named_parameters(recurse=False))
    if not names:
        raise OptionError(option, f"{last_layer!r} owns no parameters to multiply by the number of {owner}")
    return names


def probe_batch(probe: Tensor | None, probe_shape: Sequence[int] | None, like: nn.Module) -> Tensor:
    """The probe: ``probe`` (detached, checked finite) or a seeded normal draw of ``probe_shape`` in
    ``like``'s floating dtype and device (at most `MAX_PROBE_VALUES` values); exactly one of them."""
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
    found = next((t for t in [*like.parameters(), *like.buffers()] if t.is_floating_point()), None)
    dtype = found.dtype if found is not None else torch.get_default_dtype()
    draw = torch.randn(tuple(probe_shape), generator=torch.Generator().manual_seed(0), dtype=dtype)
    return draw.to(found.device) if found is not None else draw


def run_on_probe(module: nn.Module, x: Tensor, *, who: str, part: str) -> Tensor:
    """``module(x)``; an error it raises, or an output that is no tensor, becomes one line naming
    ``who`` (``"units[3]"``) and the ``part`` it ran (``"body"``)."""
    try:
        out = module(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptionError("probe", f"{who}'s {part} cannot take a probe of shape {tuple(x.shape)}: "
                                   f"{first}") from exc
    if not isinstance(out, Tensor):
        raise OptionError(who, f"its {part} returns {type(out).__name__}, not a tensor")
    return out


def difference(a: Tensor, b: Tensor) -> float:
    """``max |a - b|`` (0 for empty tensors)."""
    return float((a - b).abs().max()) if a.numel() else 0.0


def largest(x: Tensor) -> float:
    """``max |x|``, at least the dtype's smallest positive normal: what a difference is relative to."""
    return max(float(x.abs().max()) if x.numel() else 0.0, torch.finfo(x.dtype).tiny)


def batch_of_two(x: Tensor) -> Tensor:
    """``x``, or for a probe of one example that example and a seeded variation of it.

    The training-mode check runs the body with batch statistics, which a batch of one does
    not have (``BatchNorm`` refuses it); any batch shows whether the body is linear in its
    last layer's weights, so one example must not get a valid unit refused.
    """
    if x.dim() == 0 or x.shape[0] != 1:
        return x
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype).to(x.device)
    return torch.cat([x, x + largest(x) * noise])


def scaling_error(body: nn.Module, x: Tensor, scaled: tuple[str, ...], factor: int, training: bool, *,
                  who: str = "units[0]", part: str = "body") -> tuple[float, float]:
    """``(max |body_c(x) - c body(x)|, max |c body(x)|)`` with the parameters ``scaled`` times ``c = factor``.

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
                raise OptionError("probe", f"{who}'s {part} cannot run {'in training mode ' if training else ''}"
                                           f"on a probe of shape {tuple(x.shape)}: {first}") from exc
    expected = factor * outs[0]
    return difference(outs[1], expected), largest(expected)


def keep_weights(module: nn.Module) -> None:
    """An initializer that draws nothing: every coefficient is overwritten with a unit's (a layer's) weights."""

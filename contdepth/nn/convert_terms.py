"""A stack of pre-LayerNorm transformer layers as one ContinuousBlock, checked on a probe batch.

A pre-LN layer ``x <- x + A(x); x <- x + M(x)`` (``A``: attention with its LayerNorm, ``M``: the
MLP with its own) is one step of the Lie-Trotter splitting of ``dx/dt = a(x) + m(x)`` with
forward-Euler sub-steps of ``h = 1/n`` on the terms ``n * A_k`` and ``n * M_k`` (Lu et al. 2019,
arXiv 1906.02762). So a stack of ``n`` such layers converts to a
[`ContinuousBlock`][contdepth.nn.ContinuousBlock] whose template is
[`Terms`][contdepth.nn.Terms] ``(A, M)``, piecewise constant with one cell per layer, without
changing an output, but only if every layer *is* that. A post-LN layer ``LN(x + A(x))``, a
parallel one ``x + A(x) + M(x)``, layers of different widths, or a term whose output does not
scale with its last layer's weights convert to a different function, silently when done by hand.
[`layers_to_block`][contdepth.nn.layers_to_block] checks each on a probe batch and refuses the
first it finds in one line, as [`units_to_block`][contdepth.nn.units_to_block] does for a ResNet
stage (whose checks it shares); the block it returns computes the stack's outputs on the probe.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..common.errors import OptionError
from ..solvers import Scheme, get_scheme, lie_trotter, strang, strang_midpoint
from ..solvers.splitting import Splitting
from .block import ContinuousBlock
from .convert_checks import (
    batch_of_two, check_same_layers, checked_rtol, difference, keep_weights, largest, last_layer_parameters,
    probe_batch, run_on_probe, scaling_error,
)
from .terms import Terms

Tensor = torch.Tensor
TermSpec = str | Callable[[nn.Module], nn.Module]
#: The registered splittings are of two terms; a stack of another number of terms gets its own.
_SPLITTINGS = {"lie_trotter": lie_trotter, "strang": strang, "strang_midpoint": strang_midpoint}


def layers_to_block(layers: Iterable[nn.Module], *, terms: Sequence[TermSpec] = ("attention", "mlp"),
                    probe: Tensor | None = None, probe_shape: Sequence[int] | None = None,
                    last_layers: Sequence[str | None] | None = None, scheme: str | Scheme = "lie_trotter",
                    rtol: float = 1e-4) -> ContinuousBlock:
    """The ContinuousBlock (``Terms``, piecewise constant, a cell per layer, ``lie_trotter`` x ``n``) that is the stack.

    Args:
        layers: the stack's layers in order (a list, ``nn.Sequential`` or ``nn.ModuleList``) of
            your own layer class, each computing ``x = x + term_1(x); x = x + term_2(x); ...``.
            Each term must be a function of ``x`` alone: attention masks itself (causal
            masking inside the module, ``is_causal=True``); a term that takes a mask or
            positions as a second argument is out of scope.
        terms: the attribute holding each term in the order the layer applies them
            (``("attention", "mlp")``; one or more), or for any of them a function
            ``layer -> module``.
        probe: a batch of the stack's *input* (``(batch, tokens, width)`` for a transformer), on
            which every check runs; typical values are best.
        probe_shape: instead of ``probe``: the shape of one, filled with a seeded normal draw in
            the first term's dtype and device (at most ``MAX_PROBE_VALUES`` values).
        last_layers: per term, the submodule whose weights are multiplied by ``n`` (each Euler
            sub-step multiplies its term by ``h = 1/n``), or ``None``: the term's last submodule
            that owns parameters (an output projection). Default: ``None`` for every term.
        scheme: the scheme the returned block integrates with, on ``n`` steps. ``lie_trotter``
            (the default) *is* the stack and the conversion is checked under it whatever is given;
            another (``strang``, ``strang_midpoint``, ``rk4`` of the sum) then integrates the same
            ``theta(t)`` differently, close to the stack's outputs but not equal. A splitting named
            here gets as many terms as ``terms``.
        rtol: the largest difference allowed in each check, relative to the largest value
            compared.

    Checks, on the probe in eval mode (dropout off), layer by layer along the stack; the first
    failure is an ``contdepth.common.OptionError`` (a ``ValueError``) of one line naming the layer:

    - each term of every layer has the same parameter and buffer names, shapes, dtypes and
      frozen parameters as the first layer's (one template with other weights);
    - each term keeps the state's shape, and so does the layer;
    - the layer's output is the Lie-Trotter composition of its terms (refuses a post-LN layer
      ``LN(x + A(x))``, a parallel one ``x + A(x) + M(x)``, terms named in another order);
    - each term with its last layer's weights times ``c`` gives ``c`` times its output, for
      ``c = 2`` and ``c = n``, in eval and training mode: ``n * term`` must be a setting of the
      same layers (a final LayerNorm without affine weights or a final activation breaks it);
    - the block's output equals the stack's.

    The layers are not modified (their train/eval modes are restored); the block is returned in
    the first layer's mode, its template ``Terms`` of copies of the first layer's terms.
    Parameters the layers freeze stay frozen in the block.
    """
    layers = _as_layers(layers)
    labels = _labels(terms)
    parts = [f"{label} term" if isinstance(spec, str) else f"term {i}" for i, (spec, label) in
             enumerate(zip(terms, labels))]
    stack = [[_term_of(layer, spec, k, i) for i, spec in enumerate(terms)] for k, layer in enumerate(layers)]
    for i, part in enumerate(parts):
        check_same_layers([modules[i] for modules in stack], owner="layers", part=part)
    lasts = _last_layers(last_layers, len(labels))
    scaled = [last_layer_parameters(stack[0][i], lasts[i], owner="layers", part=part, option=f"last_layers[{i}]")
              for i, part in enumerate(parts)]
    check_rtol, exact = checked_rtol(rtol), _scheme("lie_trotter", len(labels))
    target = exact if isinstance(scheme, str) and scheme == "lie_trotter" else _scheme(scheme, len(labels))
    x = probe_batch(probe, probe_shape, stack[0][0])
    n = len(layers)
    saved = [(m, m.training) for root in [*layers, *(t for modules in stack for t in modules)] for m in root.modules()]
    block_mode = layers[0].training
    try:
        for module, _ in saved:
            module.eval()
        with torch.no_grad():
            stack_in = x
            for k, (layer, modules) in enumerate(zip(layers, stack)):
                x = _check_layer(k, layer, modules, labels, parts, x, scaled, n, check_rtol)
            block = _build_block(stack, scaled, n, exact)
            out = block.eval()(stack_in)
            gap = difference(out, x)
            if gap > check_rtol * largest(x):
                raise OptionError("layers", f"the converted block differs from the layers by {gap:.3g} on the probe "
                                            f"(largest output {largest(x):.3g}); the layers are not a pure function "
                                            "of their input and weights")
    finally:
        for module, mode in saved:
            module.training = mode
    if target is not exact:
        block.manifest(target)  # not as a context manager: the block keeps it
    return block.train(block_mode)


# --- the arguments -----------------------------------------------------------------------------------
def _as_layers(layers: object) -> list[nn.Module]:
    if isinstance(layers, nn.Module) and not isinstance(layers, (nn.Sequential, nn.ModuleList)):
        raise OptionError("layers", f"give the stack's layers (a list, nn.Sequential or nn.ModuleList), got one "
                                    f"{type(layers).__name__}")
    if isinstance(layers, (str, bytes, Tensor)) or not isinstance(layers, Iterable):
        raise OptionError("layers", f"give the stack's layers (a list of nn.Module), got {type(layers).__name__}")
    layers = list(layers)
    if not layers:
        raise OptionError("layers", "the stack has no layers to convert")
    for k, layer in enumerate(layers):
        if not isinstance(layer, nn.Module):
            raise OptionError(f"layers[{k}]", f"expected an nn.Module, got {type(layer).__name__}")
    return layers


def _labels(terms: object) -> list[str]:
    """Each term's name in messages: its attribute, or ``term<i>`` for a function."""
    if isinstance(terms, (str, bytes)) or not isinstance(terms, Sequence) or not terms:
        raise OptionError("terms", f"give the layer's terms in the order it applies them, a tuple of attribute "
                                   f"names or functions layer -> module (('attention', 'mlp')), got {terms!r}")
    for i, spec in enumerate(terms):
        if isinstance(spec, nn.Module) or not (isinstance(spec, str) or callable(spec)):
            raise OptionError(f"terms[{i}]", f"give an attribute name or a function layer -> module (every layer's "
                                             f"term is needed), got {type(spec).__name__}")
    return [spec if isinstance(spec, str) else f"term{i}" for i, spec in enumerate(terms)]


def _term_of(layer: nn.Module, spec: TermSpec, k: int, i: int) -> nn.Module:
    try:
        found = getattr(layer, spec, None) if isinstance(spec, str) else spec(layer)
    except (AttributeError, KeyError, IndexError, TypeError) as exc:
        raise OptionError(f"layers[{k}]", f"terms[{i}] fails on {type(layer).__name__}: {exc}") from exc
    if not isinstance(found, nn.Module):
        how = f"attribute {spec!r}" if isinstance(spec, str) else f"function terms[{i}]"
        raise OptionError(f"layers[{k}]", f"{type(layer).__name__} has no term module at its {how} (got "
                                          f"{type(found).__name__}); name each term's attribute, in the order the "
                                          "layer applies them, with terms=")
    return found


def _last_layers(last_layers: object, count: int) -> list[str | None]:
    if last_layers is None:
        return [None] * count
    if isinstance(last_layers, (str, bytes)) or not isinstance(last_layers, Sequence) or len(last_layers) != count:
        raise OptionError("last_layers", f"give one submodule name per term ({count} in all; None: the term's last "
                                         f"submodule with parameters), got {last_layers!r}")
    return list(last_layers)


def _scheme(scheme: object, count: int) -> Scheme:
    """``scheme`` resolved; a splitting named by its name gets ``count`` terms."""
    if isinstance(scheme, str) and scheme in _SPLITTINGS and count != 2:
        return _SPLITTINGS[scheme](count)
    resolved = get_scheme(scheme)  # type: ignore[arg-type]
    if isinstance(resolved, Splitting) and resolved.terms != count:
        raise OptionError("scheme", f"{resolved.name!r} splits a field of {resolved.terms} terms, and the layers "
                                    f"have {count}")
    return resolved


# --- the checks --------------------------------------------------------------------------------------
def _check_layer(k: int, layer: nn.Module, modules: list[nn.Module], labels: list[str], parts: list[str],
                 x: Tensor, scaled: list[tuple[str, ...]], n: int, rtol: float) -> Tensor:
    """Layer ``k`` on ``x``: every check of `layers_to_block`; returns ``layer(x)``."""
    who, z, inputs = f"layers[{k}]", x, []
    for module, part in zip(modules, parts):
        inputs.append(z)
        fz = run_on_probe(module, z.clone(), who=who, part=part)  # clones: in-place layers keep the probe
        if fz.shape != z.shape:
            raise OptionError(who, f"its {part} maps shape {tuple(z.shape)} to {tuple(fz.shape)}: a term is "
                                   "a rate of the state's own shape")
        z = z + fz
    y = run_on_probe(layer, x.clone(), who=who, part="forward")
    if y.shape != x.shape:
        raise OptionError(who, f"maps shape {tuple(x.shape)} to {tuple(y.shape)}: a layer that changes the state's "
                               "shape is no ODE step; keep it outside the block")
    gap = difference(y, z)
    if gap > rtol * largest(y):
        steps = "; ".join(f"x <- x + {label}(x)" for label in labels)
        raise OptionError(who, f"its output differs from the Lie-Trotter composition {steps} by {gap:.3g} on the "
                               f"probe (largest value {largest(y):.3g}): a post-LN layer (LN(x + A(x))), a parallel "
                               "one (x + A(x) + M(x)) or a term needing more than x (a mask) is no such step; only "
                               "the pre-LN form converts (name its terms in the order it applies them, terms=)")
    for module, label, part, z, names in zip(modules, labels, parts, inputs, scaled):
        for training in (False, True):
            for factor in sorted({2, n} - {1}):
                gap, scale = scaling_error(module, batch_of_two(z) if training else z, names, factor, training,
                                           who=who, part=part)
                if gap > rtol * scale:
                    last = names[0].rpartition(".")[0] or names[0]
                    mode = "in training mode " if training else ""
                    raise OptionError(who, f"its {part} is not linear in its last layer's weights ({last!r}): "
                                           f"{mode}with them times {factor} the output differs from {factor} * "
                                           f"{label}(x) by {gap:.3g}, so n * {label} is no setting of the same "
                                           "layers; end the term in a linear layer (or name the layer that is, "
                                           "last_layers=)")
    return y


def _build_block(stack: list[list[nn.Module]], scaled: list[tuple[str, ...]], n: int,
                 scheme: Scheme) -> ContinuousBlock:
    """The block with cell ``k`` holding layer ``k``'s term weights (each last layer's times ``n``) and buffers."""
    template = Terms(*(copy.deepcopy(module) for module in stack[0]))
    block = ContinuousBlock(template, basis="piecewise_constant", n_basis=n, scheme=scheme, n_steps=n,
                            initializer=keep_weights)

    def owner(name: str) -> tuple[int, str]:  # "modules_of_terms.1.fc.weight" -> (1, "fc.weight")
        i = next(i for i, prefix in enumerate(template.terms) if name.startswith(prefix + "."))
        return i, name[len(template.terms[i]) + 1:]

    for name, coefficients in block.coefficient_items():
        i, inner = owner(name)
        for k, modules in enumerate(stack):
            coefficients[k].copy_(modules[i].get_parameter(inner) * (n if inner in scaled[i] else 1))
    for name, state in block.state_items():
        i, inner = owner(name)
        for k, modules in enumerate(stack):
            state[k].copy_(modules[i].get_buffer(inner))
    for name, shared in block.shared_buffers().items():  # integer counters: the largest (most updates)
        i, inner = owner(name)
        shared.copy_(torch.stack([modules[i].get_buffer(inner) for modules in stack]).max(dim=0).values)
    block.assume_state_sampled_on()
    return block


__all__ = ["layers_to_block"]

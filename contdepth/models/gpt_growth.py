"""Growing a GPT in depth: `grow_gpt`, which `contdepth.models.growth.grower` hands to
`contdepth.train.grow` (which carries the optimizer along).

A layer's residual branches end in its two output projections (``attention.proj``, ``mlp.proj``),
so the stack operations of `contdepth.nn.grow` apply with those as the output layers:

- ``refine``: a continuous GPT's ``theta(t)`` on a basis ``factor`` times as fine, by the matrix of
  ``block.refine()`` (``n_basis`` and ``n_steps`` doubled per refinement, ``theta`` unchanged). A
  discrete GPT is converted (`continuous_from_layers`), refined (``block.refine()``) and given back
  as ``factor x layers`` discrete layers (`layers_from_continuous`):
  for its piecewise-constant cells that is exactly each layer repeated ``factor`` times with its
  output projections (weight and bias) divided by ``factor``, the discrete ``interpolate``.
- ``interpolate``: a discrete GPT's layers repeated in place with their output projections divided
  by ``factor`` (Euler of the same ODE on a grid ``factor`` times finer); a continuous GPT keeps its
  ``theta(t)`` and integrates it on ``factor`` times the steps (no new parameters).
- ``stack``: the layers ``[1..L]`` repeated ``factor`` times; a continuous (piecewise-constant) GPT's
  cells repeated on a depth interval ``factor`` times as long, so a step keeps its size (under a
  one-step scheme that is the repeated stack's function; a multistep one carries its history over).
- ``zero``: after each layer, ``factor - 1`` new ones of the model's own initialisation with zeroed
  output projections (weight and bias); a continuous (piecewise-constant) GPT gets new cells the
  same way, on a depth interval ``factor`` times as long (refused where an inserted cell would not be
  the identity: a multistep scheme, or steps that do not divide into the cells).

The grown model is built by ``contdepth.models.create("gpt", **options)``, its options read from
the model (`gpt_options`) with ``layers`` (and ``depth``, ``n_steps`` where they change) updated, so
``model.config`` rebuilds it; embeddings, positions, final norm and head are copied (tied stay
tied); its mode, dtype and device are the model's. Only ``zero`` draws from torch's global random
number generator (the new model's initialisation: seed it to reproduce a growth); the other
methods leave that generator as it was.
"""

from __future__ import annotations

import numpy as np
import torch

from ..basis import apply_matrix
from ..common.errors import OptionError
from ..nn.grow import (
    GrownModel, ParameterSource, check_cell_growth, check_growth, copy_cells, copy_units, refine_matrix, unit_plan, unit_sources,
)
from .gpt import GPT, continuous_from_layers
from .registry import create

#: A layer's output layers (the ends of its residual branches) and the same in the continuous template.
OUTPUTS = ("attention.proj", "mlp.proj")
TEMPLATE_OUTPUTS = ("modules_of_terms.0.proj", "modules_of_terms.1.proj")
_TERMS = {"0": "attention", "1": "mlp"}
#: What a grown GPT copies as it is: everything outside the stack.
OUTSIDE = ("embed", "position", "norm", "head")
#: A discrete GPT's most layers (its ``layers`` option's bound).
MAX_LAYERS = 4096


def gpt_options(model: GPT) -> dict[str, object]:
    """The options of ``create("gpt", ...)`` that build ``model``'s architecture, read from the module as it is."""
    if model.continuous:
        attention, mlp = model.layers.template.modules_of_terms
    else:
        attention, mlp = model.layers[0].attention, model.layers[0].mlp
    width = model.embed.embedding_dim
    options: dict[str, object] = {
        "width": width, "heads": attention.heads, "layers": _size(model), "context": model.context,
        "mlp_ratio": mlp.fc.out_features // width, "dropout": attention.dropout, "continuous": model.continuous,
        "tied_embeddings": model.head.weight is model.embed.weight}
    if model.continuous:
        block = model.layers
        options.update(basis=block.basis.name, scheme=block.scheme.name, n_steps=block.n_steps,
                       gradient=block.gradient, depth=block.t1)
    return options


def _size(model: GPT) -> int:
    return model.layers.n_basis if model.continuous else len(model.layers)


@torch.no_grad()
def grow_gpt(model: GPT, method: str, factor: int = 2) -> GrownModel:
    """``model`` grown in depth by ``method`` (``refine``, ``interpolate``, ``stack``, ``zero``) and ``factor``
    (2..16; a power of 2 to refine): the new model and where each of its parameters came from."""
    if not isinstance(model, GPT):
        raise OptionError("model", f"expected a GPT, got {type(model).__name__}")
    method, factor = check_growth(method, factor)
    options = gpt_options(model)
    _check(model, method, factor)
    with torch.random.fork_rng(devices=[], enabled=method != "zero"):  # only zero's fresh layers are drawn
        if model.continuous:
            return _grow_continuous(model, method, factor, options)
        if method == "refine":
            return _refine_layers(model, factor)
        return _grow_layers(model, method, factor, options)


def _check(model: GPT, method: str, factor: int) -> None:
    """The method applicable to this GPT, the grown stack within the bounds of a GPT or a block; before any work."""
    if model.continuous:
        check_cell_growth(model.layers, method, factor)  # the block's own bounds and what its cells allow
        return
    n = _size(model)
    if factor * n > MAX_LAYERS:
        raise OptionError("factor", f"{n} layers grown by {factor} would be {factor * n}, over the {MAX_LAYERS} "
                                    f"layers of a GPT")


def _build(model: GPT, options: dict) -> GPT:
    """The grown GPT built from ``options`` like ``model`` (device, dtype, mode), what is outside the stack copied."""
    reference = model.embed.weight
    grown = create("gpt", **options).to(device=reference.device, dtype=reference.dtype)
    for name in OUTSIDE:
        getattr(grown, name).load_state_dict(getattr(model, name).state_dict())
    return grown.train(model.training)


def _outside_sources(grown: GPT) -> dict[str, ParameterSource | None]:
    return {name: ParameterSource(name) for name, _ in grown.named_parameters() if not name.startswith("layers.")}


def _grow_layers(model: GPT, method: str, factor: int, options: dict) -> GrownModel:
    plan = unit_plan(method, len(model.layers), factor)
    grown = _build(model, {**options, "layers": len(plan)})
    copy_units(list(model.layers), list(grown.layers), plan, OUTPUTS)
    names = [name for name, _ in model.layers[0].named_parameters()]
    sources, peers = unit_sources(plan, names, OUTPUTS, "layers.")
    return GrownModel(grown, {**_outside_sources(grown), **sources}, peers)


def _refine_layers(model: GPT, factor: int) -> GrownModel:
    """Converted, refined (``block.refine()``), given back: each layer repeated with its output projections divided."""
    continuous = continuous_from_layers(model)  # depth = layers: a step of 1, the weights as they are
    maps = [continuous.layers.refine() for _ in range(factor.bit_length() - 1)]
    matrix = np.eye(len(model.layers))
    for cmap in maps:
        matrix = cmap.matrix @ matrix
    grown = layers_from_continuous(continuous)
    step = continuous.layers.t1 / continuous.layers.n_steps  # what layers_from_continuous multiplied the outputs by
    sources: dict[str, ParameterSource | None] = _outside_sources(grown)
    names = [name for name, _ in model.layers[0].named_parameters()]
    for j, row in enumerate(matrix):
        (k,) = np.flatnonzero(row)  # piecewise constant: each new cell copies one old cell
        for name in names:
            scale = float(row[k]) * (step if name.rpartition(".")[0] in OUTPUTS else 1.0)
            sources[f"layers.{j}.{name}"] = ParameterSource(f"layers.{k}.{name}", scale)
    return GrownModel(grown, sources, {})


def _grow_continuous(model: GPT, method: str, factor: int, options: dict) -> GrownModel:
    block = model.layers
    if method == "interpolate":  # the same theta(t) on a finer grid
        grown = _build(model, {**options, "n_steps": options["n_steps"] * factor})
        grown.layers.load_state_dict(block.state_dict())
        return GrownModel(grown, {name: ParameterSource(name) for name, _ in grown.named_parameters()}, {})
    prefix = "layers.coefficients."
    if method == "refine":
        matrix, basis = refine_matrix(block.basis, factor.bit_length() - 1)
        grown = _build(model, {**options, "layers": basis.n, "n_steps": options["n_steps"] * factor})
        olds = dict(block.coefficient_items())
        for name, coefficients in grown.layers.coefficient_items():
            coefficients.copy_(apply_matrix(matrix, olds[name].detach()))
        matrices = {name: matrix for name in olds}
    else:  # stack, zero: cells repeated or inserted, on a depth interval as many times longer
        plan = unit_plan(method, block.n_basis, factor)
        grown = _build(model, {**options, "layers": len(plan), "depth": block.t1 * factor,
                               "n_steps": options["n_steps"] * factor})
        matrices = copy_cells(block, grown.layers, plan, TEMPLATE_OUTPUTS)
    sources = {prefix + name: ParameterSource(prefix + name, matrix=matrix) for name, matrix in matrices.items()}
    return GrownModel(grown, {**_outside_sources(grown), **sources}, {})


@torch.no_grad()
def layers_from_continuous(model: GPT) -> GPT:
    """The discrete GPT that computes exactly what the continuous ``model`` does (`continuous_from_layers` inverted).

    It needs a piecewise-constant ``theta(t)`` under ``lie_trotter`` with one step per cell: layer
    ``k`` is cell ``k`` with each term's output projection (weight and bias) multiplied by the
    step ``h = depth / layers`` (1 on the default depth interval ``[0, layers]``).
    """
    if not isinstance(model, GPT) or not model.continuous:
        got = "a discrete GPT" if isinstance(model, GPT) else type(model).__name__
        raise OptionError("model", f"expected a continuous GPT, got {got}")
    block = model.layers
    if block.basis.name != "piecewise_constant" or block.scheme.name != "lie_trotter" or block.n_steps != block.n_basis:
        raise OptionError("model", f"discrete layers are piecewise-constant cells under lie_trotter with one step per "
                                   f"cell; this GPT has {block.basis.name} cells under {block.scheme.name} with "
                                   f"{block.n_steps} steps for {block.n_basis} cells")
    options = {key: value for key, value in gpt_options(model).items()
               if key not in ("basis", "scheme", "n_steps", "gradient", "depth")}
    with torch.random.fork_rng(devices=[]):  # every layer is overwritten: the generator is left as it was
        out = _build(model, {**options, "continuous": False})
    step = (block.t1 - block.t0) / block.n_steps
    for name, coefficients in block.coefficient_items():
        term, _, inner = name.removeprefix("modules_of_terms.").partition(".")
        layer_name = f"{_TERMS[term]}.{inner}"
        scale = step if name.rpartition(".")[0] in TEMPLATE_OUTPUTS else 1.0
        for k, layer in enumerate(out.layers):
            layer.get_parameter(layer_name).copy_(coefficients[k] * scale)
    return out


__all__ = ["MAX_LAYERS", "OUTPUTS", "OUTSIDE", "TEMPLATE_OUTPUTS", "gpt_options", "grow_gpt", "layers_from_continuous"]

"""Growing an image model in depth: `grow_image`, which `contdepth.models.growth.grower` hands to
`contdepth.train.grow` (which carries the optimizer along) for a ResNet, an LM-ResNet or a ContinuousNet.

Only a stage's body grows (its stride-1 residual units, or its block); stem, stitches and head are
copied. A unit's residual branch ends in its *output layer*, the body's last layer with parameters
(`contdepth.nn.grow.last_layer`, the layer `units_to_block` scales: the second convolution of the
pre-activation unit). What each method does and keeps:

- ``resnet``: ``interpolate``: each unit repeated ``factor`` times in place, its output layer divided
  by ``factor`` (forward Euler of the same ODE on a grid ``factor`` times finer: the continuous
  reading `contdepth.analysis.resnet_as_continuous` at ``euler x (factor * units)``); ``refine``:
  converted to that reading, refined, given back, which for its piecewise-constant cells *is*
  ``interpolate`` (the same model, built as ``interpolate`` builds it); ``stack``: the stage's units
  repeated (``[1..n, 1..n]``: nothing kept); ``zero``: after each unit ``factor - 1`` fresh units with
  their output layer zeroed (the function, exactly, in eval and train mode). Copied units bring their
  running statistics, fresh ones keep the new model's.
- ``lm_resnet`` (discrete: ``u+ = (1 - k_n) u + k_n u- + f_n(u)``): ``interpolate``: each unit
  repeated with ``f_n`` divided by ``factor`` and its ``k_n`` kept: the two-step scheme on a grid
  ``factor`` times finer, consistent with the same ODE ``(1 + k_n) u' = f_n(u)`` (Lu et al. 2018);
  ``stack``: the units and their ``k`` repeated. A copy of a stage's first unit that starts plain
  (no previous state) stays a plain step (its ``k`` is 0): so ``interpolate`` keeps that cell's ODE
  ``u' = f_0(u)`` and ``stack`` is the stage applied ``factor`` times. ``refine`` and ``zero`` are
  refused: a ``k_n`` per unit is no single ODE scheme, so there is no ``theta(t)`` to refine (the
  reading refuses it too), and an inserted identity unit would become the next unit's previous
  state, so no inserted unit keeps the function.
- ``continuousnet`` (one ContinuousBlock per stage on the depth interval ``[0, 1]``):
  ``refine``: ``block.refine()``'s map (basis and steps doubled per refinement), with its normalisation
  state: ``theta(t)`` and the state exactly, so on its old grid the model computes what it did;
  ``interpolate``: ``n_steps`` times ``factor`` (the same ``theta(t)`` on a finer grid, no new
  parameters); ``stack`` and ``zero`` (piecewise-constant cells): the cells repeated, or fresh cells
  with a zeroed output layer inserted, on ``factor`` times the steps. The interval stays ``[0, 1]``
  (the model has no depth option), so a step is ``factor`` times smaller: the copied cells' output
  layers are multiplied by ``factor``, the time change ``t -> t / factor`` of the grown ODE on
  ``[0, factor]``. Under a one-step scheme with whole steps per cell ``stack`` is the block applied
  ``factor`` times and ``zero`` the same function, exactly; ``zero`` is refused elsewhere. This is
  the continuous reading of the grown ResNet: ``resnet_as_continuous`` of a ResNet grown by ``zero``
  or ``stack`` holds the cells ``continuousnet`` growth gives its reading.
- ``lm_resnet`` with ``continuous=True`` (a ContinuousNet under the LM two-step scheme, one ``k`` per
  stage): ``refine`` and ``stack`` as above (``k`` kept); ``interpolate`` is refused (the model takes
  as many steps as cells: no option holds a finer grid; refine it, or `manifest` it), ``zero`` too
  (a two-step scheme carries the previous state into an inserted cell).

The grown model is built by ``contdepth.models.create(name, **options)``, the model's own options
(``model.config``) with the sizes that change (``n_units``; ``n_basis`` and ``n_steps``) updated, so
its ``config`` rebuilds it; its mode, dtype and device are the model's. Only ``zero`` draws from
torch's global random number generator (the fresh units); the other methods leave it as it was.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..basis import apply_matrix
from ..common.errors import OptionError
from ..nn import ContinuousBlock
from ..nn.grow import (
    GrownModel, ParameterSource, UnitSource, check_cell_growth, check_growth, copy_cells, copy_units, last_layer,
    map_block, refine_matrix, unit_plan, unit_sources,
)
from ..nn.stored_layout import MAX_N_BASIS
from .image import LMContinuousBlock, ResidualStage, StagedNet
from .registry import create, created_name

#: The image models that grow (by their registered names).
GROWABLE_IMAGE_MODELS = ("continuousnet", "lm_resnet", "resnet")


@torch.no_grad()
def grow_image(model: nn.Module, method: str, factor: int = 2) -> GrownModel:
    """``model`` (``resnet``, ``lm_resnet`` or ``continuousnet``) grown in depth by ``method`` and ``factor``
    (2..16; a power of 2 to refine): the new model and where each of its parameters came from."""
    method, factor = check_growth(method, factor)
    name = created_name(model)
    if name not in GROWABLE_IMAGE_MODELS or not isinstance(model, StagedNet):
        shown = f"{name} ({type(model).__name__})" if name else f"{type(model).__name__} (not built by create)"
        raise OptionError("model", f"image growth supports {', '.join(GROWABLE_IMAGE_MODELS)} built by "
                                   f"contdepth.models.create (it rebuilds them from their options), not {shown}")
    bodies = [stage[1] for stage in model.stages]
    with torch.random.fork_rng(devices=[], enabled=method != "zero"):  # only zero's fresh units are drawn
        if isinstance(bodies[0], ResidualStage):
            return _grow_units(model, name, method, factor, bodies)
        return _grow_blocks(model, name, method, factor, bodies)


def _build(model: StagedNet, name: str, options: dict) -> StagedNet:
    """The grown model built from ``options`` like ``model`` (device, dtype, mode), stem, stitches and head copied."""
    reference = next(model.parameters())
    grown = create(name, **options).to(device=reference.device, dtype=reference.dtype)
    grown.stem.load_state_dict(model.stem.state_dict())
    grown.head.load_state_dict(model.head.state_dict())
    for old, new in zip(model.stages, grown.stages):
        new[0].load_state_dict(old[0].state_dict())
    return grown.train(model.training)


def _same(grown: nn.Module) -> dict[str, ParameterSource | None]:
    """Every parameter from its namesake, unchanged (what each growth then overrides for the stack)."""
    return {name: ParameterSource(name) for name, _ in grown.named_parameters()}


# --- discrete: ResNet and LM-ResNet units ---------------------------------------------------------------------
def _grow_units(model: StagedNet, name: str, method: str, factor: int, stages: list[ResidualStage]) -> GrownModel:
    lm = stages[0].lm
    if lm and method == "refine":
        raise OptionError("method", "refine needs a theta(t) to refine, and an LM-ResNet's units with a k_n each are "
                                    "no single ODE scheme (resnet_as_continuous refuses them too): interpolate it "
                                    "(the same two-step ODE on a finer grid)")
    if lm and method == "zero":
        raise OptionError("method", "zero cannot keep an LM-ResNet's function: an inserted identity unit would "
                                    "become the next unit's previous state u_{n-1}, which its k_n term reads")
    plans = [unit_plan("interpolate" if method == "refine" else method, len(s.units), factor) for s in stages]
    if (most := max(len(p) for p in plans)) > MAX_N_BASIS:
        raise OptionError("factor", f"{most // factor} units grown by {factor} would be {most}, over the "
                                    f"{MAX_N_BASIS} units a stage holds")
    grown = _build(model, name, {**model.config["options"], "n_units": [len(p) for p in plans]})
    sources, peers = _same(grown), {}
    for i, (old, new, plan) in enumerate(zip(stages, [stage[1] for stage in grown.stages], plans)):
        outputs = (last_layer(old.units[0]),)
        copy_units(list(old.units), list(new.units), plan, outputs)
        names = [n for n, _ in old.units[0].named_parameters()]
        stage_sources, stage_peers = unit_sources(plan, names, outputs, f"stages.{i}.1.units.")
        sources.update(stage_sources)
        peers.update(stage_peers)
        if lm:
            matrix = _k_matrix(plan, len(old.units), plain=not model.stages[i].shortcut_start)
            new.k.copy_(apply_matrix(matrix, old.k.detach()))
            sources[f"stages.{i}.1.k"] = ParameterSource(f"stages.{i}.1.k", matrix=matrix)
    return GrownModel(grown, sources, peers)


def _k_matrix(plan: tuple[UnitSource, ...], n: int, *, plain: bool) -> np.ndarray:
    """The map of an LM stage's ``k`` (one row per new unit): its source's, except a copy of a first unit that
    starts plain, which stays a plain step (``k = 0``) wherever it lands after the first place."""
    matrix = np.zeros((len(plan), n))
    for j, source in enumerate(plan):
        if not (plain and source.index == 0 and j > 0):
            matrix[j, source.index] = 1.0
    return matrix


# --- continuous: ContinuousNet and its LM variant ----------------------------------------------------------------
def _block(body: nn.Module) -> ContinuousBlock:
    return body.block if isinstance(body, LMContinuousBlock) else body


def _grow_blocks(model: StagedNet, name: str, method: str, factor: int, bodies: list[nn.Module]) -> GrownModel:
    lm = isinstance(bodies[0], LMContinuousBlock)
    blocks = [_block(body) for body in bodies]
    prefixes = [f"stages.{i}.1.block." if lm else f"stages.{i}.1." for i in range(len(blocks))]
    if lm and method == "interpolate":
        raise OptionError("method", "lm_resnet (continuous) integrates on as many steps as it has cells, so no option "
                                    "holds interpolate's finer grid; refine it (the same theta(t) on twice the cells "
                                    "and steps), or manifest it on more steps")
    for block in blocks:
        check_cell_growth(block, method, factor)
    steps = [block.n_steps * factor for block in blocks]
    options = dict(model.config["options"])
    if method in ("interpolate", "refine"):  # interpolate: the same theta(t) on a finer grid; refine: on a finer basis
        times = factor.bit_length() - 1 if method == "refine" else 0
        refined = [refine_matrix(block.basis, times) for block in blocks]
        grown = _build(model, name, _sized(options, lm, [basis.n for _, basis in refined], steps))
        for body, block, new, (matrix, _) in zip(bodies, blocks, grown.stages, refined):
            map_block(block, _block(new[1]), matrix if times else None)  # as block.refine() maps them
            if lm:
                new[1].k.copy_(body.k)
        if not times:
            return GrownModel(grown, _same(grown), {})
        matrices = [{n: matrix for n in block.parameter_names} for block, (matrix, _) in zip(blocks, refined)]
    else:  # stack, zero: cells repeated or inserted, the copies' output layers times factor (steps factor x smaller)
        plans = [tuple(s if s.index is None else UnitSource(s.index, s.scale * factor, s.peer)
                       for s in unit_plan(method, block.n_basis, factor)) for block in blocks]
        grown = _build(model, name, _sized(options, lm, [len(p) for p in plans], steps))
        matrices = []
        for body, block, new, plan in zip(bodies, blocks, grown.stages, plans):
            matrices.append(copy_cells(block, _block(new[1]), plan, (last_layer(block.template),)))
            if lm:
                new[1].k.copy_(body.k)  # one k per stage, kept
    sources = _same(grown)
    for prefix, stage_matrices in zip(prefixes, matrices):
        sources.update({prefix + "coefficients." + n: ParameterSource(prefix + "coefficients." + n, matrix=m)
                        for n, m in stage_matrices.items()})
    return GrownModel(grown, sources, {})


def _sized(options: dict, lm: bool, cells: list[int], steps: list[int]) -> dict:
    """``options`` with the grown blocks' sizes; an LM ContinuousNet takes as many steps as cells (``n_units``)."""
    if not lm:
        return {**options, "n_basis": cells, "n_steps": steps}
    if cells != steps:
        raise OptionError("method", f"lm_resnet (continuous) integrates on as many steps as it has cells; grown it "
                                    f"would have {cells} cells for {steps} steps, which its options cannot build")
    return {**options, "n_units": cells}


__all__ = ["GROWABLE_IMAGE_MODELS", "grow_image"]

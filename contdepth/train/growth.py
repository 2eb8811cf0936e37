"""Growing depth mid-training: ``grow(model, method, factor, optimizer)`` carries the optimizer as refinement does.

    model, growth = cd.grow(model, "zero", factor=2, optimizer=optimizer)  # 2 layers -> 4, same outputs
    # ... the same loop goes on: `optimizer` now holds the grown model's parameters

The methods (`GROWTH_METHODS`, with what each keeps) are the model's (`grow_gpt`,
`contdepth.models.gpt_growth`); the optimizer part is generic: every new parameter takes its
source's place in the param groups (so each group keeps its learning rate, weight decay and
betas, and the decay follows the rule of `named_parameter_groups`), a new parameter without a
source the group of the old parameter whose role it takes (its *peer*: the same layer of the
unit it follows), and the per-parameter state is mapped with the parameter's own linear map, as
[`refine_with_optimizer`][contdepth.train.refine_with_optimizer] maps it: first moments (SGD's
``momentum_buffer``, Adam's ``exp_avg``) times the factor, second moments (``exp_avg_sq``,
``max_exp_avg_sq``) times its square, a count (Adam's ``step``) copied; a parameter without a
source starts with no state (its first step initialises it, as for a new optimizer).

In the trainer (``grow_at``, `grow_in_training`): at the start of each listed epoch the run's model
is grown by ``grow_method`` and ``grow_factor`` with the optimizer carried (``grow_optimizer``),
after seeding torch's generator with ``derive_seed(seed, GROWTH_STREAM, epoch)`` (so a resumed run
draws ``zero``'s new layers as the uninterrupted one did); from then on the checkpoints record the
grown model's options (`model_identity`). What the schedule leads to is known before any work:
`check_growth_schedule` replays every refinement and growth on the ``meta`` device (the preflight:
bounds and memory), and `grown_options` is what a checkpoint after an epoch must record (resume).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from ..common.errors import OptionError
from ..common.json_values import to_json_value
from ..common.validate import check_choice
from ..data import derive_seed
from ..models import create, created_name
from ..models.growth import grower
from ..nn import continuous_blocks
from ..nn import refine as refine_blocks
from ..nn.grow import GROWTH_METHODS, ParameterSource, check_growth
from .checkpoint_model import model_identity
from .config import CUSTOM_MODEL, REFINE_OPTIMIZER, TrainConfig
from .optim import SECOND_MOMENT_KEYS
from .runs import to_channels_last
from .sizes import check_memory, check_refinements

Tensor = torch.Tensor


@dataclass(frozen=True)
class Growth:
    """What [`grow`][contdepth.train.grow] did.

    ``sources``: every parameter of the grown model by name (as ``named_parameters`` names it), with
    its [`ParameterSource`][contdepth.nn.ParameterSource] (the old model's parameter and the
    linear map applied: a factor, or a matrix along a block's basis dimension) or ``None``: freshly
    initialised. ``peers``: for each of those, the old parameter whose role it takes (whose param
    group it joins).
    """

    method: str
    factor: int
    sources: Mapping[str, ParameterSource | None]
    peers: Mapping[str, str]

    @property
    def preserves(self) -> str:
        """What the method keeps of the model (`GROWTH_METHODS`)."""
        return GROWTH_METHODS[self.method]

    @property
    def fresh(self) -> tuple[str, ...]:
        """The grown model's parameters without a source (freshly initialised)."""
        return tuple(name for name, source in self.sources.items() if source is None)

    @property
    def unchanged(self) -> bool:
        """Whether every parameter is its old namesake unchanged (continuous ``interpolate``: only the grid changed)."""
        return all(s is not None and s.name == name and s.scale == 1.0 and s.matrix is None
                   for name, s in self.sources.items())

    def summary(self) -> str:
        """One line: the method, how many parameters were carried (and scaled) and how many are new."""
        carried = [s for s in self.sources.values() if s is not None]
        mapped = sum(1 for s in carried if s.scale != 1.0 or s.matrix is not None)
        return (f"{self.method} x{self.factor}: {len(carried)} parameters carried ({mapped} mapped), "
                f"{len(self.fresh)} new; keeps {self.preserves}")


def grow(model: nn.Module, method: str, factor: int = 2, optimizer: torch.optim.Optimizer | None = None,
         optimizer_state: str = "map") -> tuple[nn.Module, Growth]:
    """``(grown model, growth)``: ``model`` grown in depth ``factor`` times by ``method``; ``model`` is left as it was.

    Args:
        method: ``refine``, ``interpolate``, ``stack`` or ``zero`` (`GROWTH_METHODS` says what each keeps).
        factor: an integer in 2..16 (a power of 2 to refine).
        optimizer: updated in place to train the grown model: each new parameter takes its source's
            (or peer's) place in the param groups; parameters it holds outside ``model`` stay.
        optimizer_state: ``"map"``: the state mapped with each parameter's linear map (first moments
            times the factor, second moments times its square; none for a fresh parameter);
            ``"reset"``: every parameter's state dropped, as a new optimizer would start.

    Only ``zero`` draws from torch's global random number generator (the new layers' initialisation):
    seed it to reproduce a growth. A model of your own grows by its ``grow_depth(method, factor)``
    method (returning a `contdepth.nn.GrownModel`); contdepth's GPT (`contdepth.models.gpt_growth`)
    and image models resnet, lm_resnet and continuousnet (`contdepth.models.image_growth`) by
    functions beside them (`contdepth.models.growth.grower`).
    """
    method, factor = check_growth(method, factor)
    state = check_choice(optimizer_state, "optimizer_state", REFINE_OPTIMIZER)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise OptionError("optimizer", f"expected a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    hook = grower(model)
    if hook is None:
        name = created_name(model)
        shown = f"{name} ({type(model).__name__})" if name else type(model).__name__
        raise OptionError("model", f"growth supports gpt, resnet, lm_resnet and continuousnet, not {shown}")
    if optimizer is not None:
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not any(id(p) in held for p in model.parameters()):
            raise OptionError("optimizer", "holds none of the model's parameters (another model's optimizer, or one "
                                           "left behind by an earlier growth?)")
    grown = hook(method, factor)
    growth = Growth(method, factor, grown.sources, grown.peers)
    keep_frozen(model, grown.model, growth)
    if optimizer is not None:
        carry_optimizer(optimizer, model, grown.model, growth, reset=state == "reset")
    return grown.model, growth


@torch.no_grad()
def carry_optimizer(optimizer: torch.optim.Optimizer, old: nn.Module, new: nn.Module, growth: Growth, *,
                    reset: bool = False) -> None:
    """Move ``optimizer`` from ``old``'s parameters to ``new``'s along ``growth`` (see [`grow`][contdepth.train.grow]).

    Each group's parameters become the new model's whose source (or peer) it held, in the new
    model's order, followed by the parameters it held outside ``old``; a new parameter whose source
    the optimizer did not hold (a frozen one) is left out, as its source was.
    """
    olds = dict(old.named_parameters())
    old_ids = {id(p) for p in olds.values()}
    group_of = {id(p): i for i, group in enumerate(optimizer.param_groups) for p in group["params"]}
    params: list[list[Tensor]] = [[] for _ in optimizer.param_groups]
    states: dict[Tensor, dict] = {}
    for name, p in new.named_parameters():
        source = growth.sources[name]
        origin = olds[source.name if source is not None else growth.peers[name]]
        i = group_of.get(id(origin))
        if i is None:
            continue
        params[i].append(p)
        kept = optimizer.state.get(origin)
        if source is not None and kept and not reset:
            states[p] = {key: _carried(key, value, origin, source) for key, value in kept.items()}
    for i, group in enumerate(optimizer.param_groups):
        others = [p for p in group["params"] if id(p) not in old_ids]  # the optimizer's own, outside the model
        group["params"] = params[i] + others
        if not reset:
            states.update((p, optimizer.state[p]) for p in others if p in optimizer.state)
    optimizer.state.clear()
    optimizer.state.update(states)


def _carried(key: str, value: object, old: Tensor, source: ParameterSource) -> object:
    """One entry of ``old``'s optimizer state for a new parameter: its own copy, mapped when shaped like ``old``."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape == old.shape:
        return source.apply(value.detach(), square=key in SECOND_MOMENT_KEYS)
    if isinstance(value, Tensor):
        return value.clone()  # Adam's step: each new parameter counts its own
    return value


# --- growth in the trainer (grow_at) ----------------------------------------------------------------
#: ``derive_seed(seed, GROWTH_STREAM, epoch)`` seeds torch's generator before the growth at ``epoch``.
GROWTH_STREAM = 4


def keep_frozen(model: nn.Module, grown: nn.Module, growth: Growth) -> None:
    """A parameter the user froze (``requires_grad=False``) stays frozen in the grown model: each new
    parameter takes its source's flag, a fresh one its peer's. Nothing silent: a growth never starts
    training what was frozen."""
    old = dict(model.named_parameters())
    for name, parameter in grown.named_parameters():
        source = growth.sources.get(name)
        origin = old.get(source.name if source is not None else growth.peers.get(name, ""))
        if origin is not None and not origin.requires_grad:
            parameter.requires_grad_(False)


def grow_in_training(loop, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> nn.Module:
    """The growth at the start of ``epoch``: ``model`` grown as ``loop.config`` says, the optimizer carried;
    ``loop.model`` and ``loop.model_config`` (what the checkpoints record) follow the grown model."""
    config = loop.config
    torch.manual_seed(derive_seed(config.seed, GROWTH_STREAM, epoch))  # zero's new layers: the same on resume
    grown, growth = grow(model, config.grow_method, config.grow_factor, optimizer=optimizer,
                         optimizer_state=config.grow_optimizer)
    if config.channels_last:
        to_channels_last(grown)
    loop.model, loop.model_config = grown, model_identity(grown)
    depth = stack_depth(grown)
    loop.log(f"epoch {epoch}: grew the model, {growth.summary()}" + (f"; {depth} layers" if depth else ""))
    return grown


def stack_depth(model: nn.Module) -> int | None:
    """The units of ``model``'s residual stack: the cells of its ContinuousBlocks (summed), else the length of
    its ``layers`` (a discrete GPT's transformer layers); ``None`` when it has neither."""
    blocks = continuous_blocks(model)
    if blocks:
        return sum(block.n_basis for block in blocks)
    layers = getattr(model, "layers", None)
    return len(layers) if isinstance(layers, (nn.Sequential, nn.ModuleList)) else None


def growth_columns(config: TrainConfig, model: nn.Module, grown: bool) -> dict:
    """A metrics row's ``grown`` and ``layers`` (`stack_depth`), for a run with ``grow_at`` (none otherwise)."""
    if not config.grow_at:
        return {}
    depth = stack_depth(model)
    return {"grown": grown, **({"layers": depth} if depth is not None else {})}


def _events(config: TrainConfig, until: int | None = None) -> list[tuple[int, str]]:
    """``(epoch, "refine" | "grow")`` of the run's schedule up to ``until``, in order (never both at one epoch)."""
    events = [(e, "refine") for e in config.refine_at] + [(e, "grow") for e in config.grow_at]
    return sorted(e for e in events if until is None or e[0] <= until)


def grown_options(config: TrainConfig, options: dict, epoch: int) -> dict | None:
    """The model options the checkpoint after ``epoch`` records: ``options`` before the first growth, else the
    grown model's (`model_identity`), from the run's refinements and growths replayed on the ``meta`` device;
    ``None`` when the model's growth reads tensor values (it cannot run on ``meta``): nothing to compare with."""
    events = _events(config, epoch)
    if not any(kind == "grow" for _, kind in events):
        return options
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            model = create(config.model, **options)
            for _, kind in events:
                if kind == "refine":
                    refine_blocks(model)
                else:
                    model = grow(model, config.grow_method, config.grow_factor)[0]
    except NotImplementedError:  # "Cannot copy out of meta tensor": a growth that reads values
        return None
    return to_json_value(model_identity(model)["options"], "model.options")  # as the checkpoint holds them


def check_growth_schedule(model: nn.Module, config: TrainConfig) -> None:
    """Refuse a ``grow_at`` schedule that cannot run, before any work (the preflight; ``model`` on ``meta``).

    Replays every refinement and growth in order on the ``meta`` device: a model without a growth
    (`grow`'s message), a method the model refuses, a growth past the model's bounds (layers,
    cells, steps), a refinement past a block's, and weights, gradients and optimizer state of the
    final model beyond the memory there is (`contdepth.train.sizes.check_memory`). A growth that
    reads tensor values cannot run on ``meta``: the replay stops there (what is left is checked by
    each growth as it happens) and the memory check takes the model replayed so far.
    """
    if config.model == CUSTOM_MODEL:
        raise OptionError("grow_at", "a model of your own ('custom') cannot be rebuilt grown from a checkpoint; "
                                     "register it (contdepth.models.register_model) and train it by name")
    if grower(model) is None:
        try:
            grow(model, config.grow_method, config.grow_factor)
        except OptionError as exc:
            raise exc.renamed("grow_at") from None
    segment: list[int] = []
    count = 0
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        for epoch, kind in _events(config):
            if kind == "refine":
                segment.append(epoch)
                continue
            check_refinements(model, _refining(config, segment))
            for _ in segment:
                refine_blocks(model)
            segment, count = [], count + 1
            try:
                model = grow(model, config.grow_method, config.grow_factor)[0]
            except OptionError as exc:
                if exc.option == "method":
                    raise exc.renamed("grow_method") from None
                if exc.option == "factor" and count == 1:
                    raise exc.renamed("grow_factor") from None
                raise OptionError("grow_at", f"growth {count} (at the start of epoch {epoch}): {exc}") from None
            except NotImplementedError:  # a growth that reads values: the rest is checked as it happens
                break
        final = _refining(config, segment)
        check_refinements(model, final)
        try:
            check_memory(model, final)
        except OptionError as exc:
            raise OptionError("grow_at", f"after the growths at epochs {list(config.grow_at)}: {exc.problem}") \
                from None


def _refining(config: TrainConfig, epochs: list[int]) -> TrainConfig:
    """``config`` with only the refinements ``epochs`` (those between two growths), for the size checks: not
    validated again (an option such as ``refine_lr_scale`` would refuse a segment without refinements)."""
    part = copy.copy(config)
    object.__setattr__(part, "refine_at", tuple(epochs))
    return part


__all__ = ["GROWTH_METHODS", "GROWTH_STREAM", "Growth", "carry_optimizer", "check_growth_schedule", "grow",
           "grow_in_training", "growth_columns", "grown_options", "stack_depth"]

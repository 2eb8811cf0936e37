"""Growing depth mid-training: ``grow(model, method, factor, optimizer)`` carries the optimizer as refinement does.

    model, growth = cd.grow(model, "zero", factor=2, optimizer=optimizer)  # 2 layers -> 4, same outputs
    # ... the same loop goes on: `optimizer` now holds the grown model's parameters

The methods (`GROWTH_METHODS`, with what each keeps) are the model's (`GPT.grow_depth`,
`contdepth.models.gpt_growth`); the optimizer part is generic: every new parameter takes its
source's place in the param groups (so each group keeps its learning rate, weight decay and
betas, and the decay follows the rule of `named_parameter_groups`), a new parameter without a
source the group of the old parameter whose role it takes (its *peer*: the same layer of the
unit it follows), and the per-parameter state is mapped with the parameter's own linear map, as
[`refine_with_optimizer`][contdepth.train.refine_with_optimizer] maps it: first moments (SGD's
``momentum_buffer``, Adam's ``exp_avg``) times the factor, second moments (``exp_avg_sq``,
``max_exp_avg_sq``) times its square, a count (Adam's ``step``) copied; a parameter without a
source starts with no state (its first step initialises it, as for a new optimizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from ..common.errors import OptionError
from ..common.validate import check_choice
from ..models import created_name
from ..nn.grow import GROWTH_METHODS, ParameterSource, check_growth
from .config import REFINE_OPTIMIZER
from .optim import SECOND_MOMENT_KEYS

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
    seed it to reproduce a growth. Growth supports the GPT so far (``model.grow_depth``).
    """
    method, factor = check_growth(method, factor)
    state = check_choice(optimizer_state, "optimizer_state", REFINE_OPTIMIZER)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise OptionError("optimizer", f"expected a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    hook = getattr(model, "grow_depth", None) if isinstance(model, nn.Module) else None
    if hook is None:
        name = created_name(model)
        shown = f"{name} ({type(model).__name__})" if name else type(model).__name__
        raise OptionError("model", f"growth supports gpt so far, not {shown}")
    if optimizer is not None:
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not any(id(p) in held for p in model.parameters()):
            raise OptionError("optimizer", "holds none of the model's parameters (another model's optimizer, or one "
                                           "left behind by an earlier growth?)")
    grown = hook(method, factor)
    growth = Growth(method, factor, grown.sources, grown.peers)
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


__all__ = ["GROWTH_METHODS", "Growth", "carry_optimizer", "grow"]

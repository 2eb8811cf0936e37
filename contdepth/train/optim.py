"""Optimizers, the learning-rate schedule, and refinement that carries the optimizer along.

* [`build_optimizer`][contdepth.train.build_optimizer]: SGD (momentum, Nesterov, coupled L2 weight decay), Adam (coupled
  L2) or AdamW (decoupled),
  with biases and normalisation parameters in a group without weight decay (unless
  ``decay_norm_and_bias``).
* [`LRSchedule`][contdepth.train.LRSchedule]: the learning rate as a pure function of the global step (constant,
  step or cosine, with optional linear warm-up). It writes ``lr`` into the optimizer's
  param groups before every step, so it keeps working when refinement swaps the
  parameters inside those groups, and its whole state is one integer.
* [`refine_with_optimizer`][contdepth.train.refine_with_optimizer] / [`map_optimizer_state`][contdepth.train.map_optimizer_state]: refine every block and map
  the per-parameter optimizer state with the refinement's own matrix (``state="map"``), or
  drop it (``state="reset"``, the ContinuousNet reference code's fresh optimizer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from ..basis import apply_matrix
from ..nn import CoefficientMap, continuous_blocks
from ..nn import refine as refine_blocks
from .config import DECAY_SCOPES, REFINE_OPTIMIZER, TrainConfig

# Optimizer state that is a running average of squares: non-negative by construction.
SECOND_MOMENT_KEYS = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "acc_delta"})


def _model_decay_ids(model: nn.Module) -> set[int]:
    wrapped = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    module = model.module if wrapped else model
    choose = getattr(module, "weight_decay_parameters", None)
    if choose is None:
        raise ValueError(f"decay_scope: 'model' needs a model with weight_decay_parameters() (the graph models "
                         f"have it); {type(module).__name__} has none, use decay_scope 'all'")
    return {id(p) for p in choose()}


def named_parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False,
                           decay_scope: str = "all") -> list[dict]:
    """``[{"params", "names", "weight_decay"}, ...]``: decayed parameters, then the rest.

    ``decay_scope="all"``: a parameter is exempt from weight decay when it is 0- or
    1-dimensional in the network that uses it: biases, normalisation scales/shifts,
    LM-ResNet's scalar ``k`` (unless ``decay_norm_and_bias``). For a ContinuousBlock's
    coefficients, of shape ``(n_basis, *template_shape)``, that is judged on the template's
    shape (a conv kernel's coefficients are decayed, a BatchNorm scale's are not).
    ``decay_scope="model"``: exactly the model's ``weight_decay_parameters()`` are decayed,
    the convention of its reference setup (Kipf & Welling decay only the GCN's first layer,
    the one that sees the wide, sparse input). Empty groups are left out.
    """
    if decay_scope not in DECAY_SCOPES:
        raise ValueError(f"decay_scope: must be one of {', '.join(DECAY_SCOPES)}; got {decay_scope!r}")
    chosen = _model_decay_ids(model) if decay_scope == "model" else None
    coefficient_ids = {id(c) for block in continuous_blocks(model) for _, c in block.coefficient_items()}
    decay, exempt = ([], []), ([], [])
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if chosen is not None:
            decayed = id(p) in chosen
        else:
            ndim = p.dim() - 1 if id(p) in coefficient_ids else p.dim()
            decayed = decay_norm_and_bias or ndim >= 2
        target = decay if decayed else exempt
        target[0].append(p)
        target[1].append(name)
    groups = []
    if decay[0]:
        groups.append({"params": decay[0], "names": decay[1], "weight_decay": weight_decay})
    if exempt[0]:
        groups.append({"params": exempt[0], "names": exempt[1], "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config`` over ``model``'s trainable parameters.

    SGD, Adam and RMSprop apply weight decay the classic (coupled) way, ``g += wd * p``; AdamW decouples it.
    The param-group names are not stored in the optimizer; `group_names` recomputes
    them from the model.
    """
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]}
              for g in named_parameter_groups(model, config.weight_decay, config.decay_norm_and_bias,
                                              config.decay_scope)]
    if not groups:
        raise ValueError("model: has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adam":  # coupled L2 (g += wd * p), as the GCN baselines train
        return torch.optim.Adam(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                                weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                                 weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":  # torch's defaults (alpha 0.99, no momentum), as the CGNN authors train
        return torch.optim.RMSprop(groups, lr=config.lr, eps=config.eps, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer: must be one of sgd, adam, adamw, rmsprop; got {config.optimizer!r}")


def clip_gradients(net: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float | None,
                   scaler: "torch.amp.GradScaler | None" = None) -> None:
    """Clip the global norm of ``net``'s gradients to ``max_norm`` (``None``: do nothing).

    With an fp16 ``scaler`` the gradients are unscaled first (``scaler.unscale_``), so the
    norm is that of the true gradients; ``scaler.step`` then knows they are unscaled.
    """
    if max_norm is None:
        return
    if scaler is not None:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_norm)


def group_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """The model's name of every parameter in every param group (for checkpoints)."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    out = []
    for group in optimizer.param_groups:
        names = []
        for p in group["params"]:
            if id(p) not in name_of:
                raise ValueError("optimizer: holds a parameter that is not in the model (was it refined "
                                 "without map_optimizer_state?)")
            names.append(name_of[id(p)])
        out.append(names)
    return out


# --- refinement ----------------------------------------------------------------------------
def map_optimizer_state(optimizer: torch.optim.Optimizer, maps: Iterable[CoefficientMap]) -> int:
    """Move the optimizer from each map's old parameters to its new ones; returns how many moved.

    For every ``(old, new)`` pair: ``new`` takes ``old``'s place in its param group (same
    position, so group order is unchanged), and every state tensor shaped like ``old``
    (SGD ``momentum_buffer``, Adam ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq`` ...) becomes
    ``matrix @ state`` along dim 0, the map that took ``old`` to ``new``. Other state (Adam's
    scalar ``step``, a ``None`` momentum buffer) is kept as it is.

    Second-moment state is clamped at 0 after mapping: it is an average of squares, and a
    matrix with negative entries (projection, or rounding such as ``-1e-17`` in the
    piecewise-linear refinement matrix) could otherwise make it negative and
    ``sqrt(v)`` NaN. For the built-in bases refinement matrices are non-negative up to
    rounding (piecewise constant: copies; piecewise linear: midpoint averages; Legendre:
    zero-padding), so the clamp only removes rounding. Note what the mapped state means:
    for piecewise-constant weights each child cell inherits its parent's momentum, while
    its own gradient is about half of the parent's (each child covers half the steps), so
    the step size in coefficient space settles to about half once the history decays.
    Pairs whose ``old`` parameter is not in the optimizer are skipped.
    """
    where: dict[int, tuple[dict, int]] = {}
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            where[id(p)] = (group, i)
    moved = 0
    for cmap in maps:
        for old, new in cmap.pairs:
            found = where.pop(id(old), None)
            if found is None:
                continue
            group, i = found
            group["params"][i] = new
            where[id(new)] = (group, i)
            state = optimizer.state.pop(old, None)
            if state:
                optimizer.state[new] = {key: _map_value(key, value, old, cmap) for key, value in state.items()}
            moved += 1
    return moved


def _map_value(key: str, value: object, old: torch.Tensor, cmap: CoefficientMap) -> object:
    if not (isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape == old.shape):
        return value
    mapped = apply_matrix(cmap.matrix, value.detach())
    if key in SECOND_MOMENT_KEYS:
        mapped = mapped.clamp_(min=0)
    return mapped


def refine_with_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                          state: str = "map") -> list[CoefficientMap]:
    """``contdepth.nn.refine(model)``, then move ``optimizer`` onto the refined parameters.

    ``state="map"``: [`map_optimizer_state`][contdepth.train.map_optimizer_state] with the same maps, so the
    momentum (Adam's moments) describes the same ``theta(t)`` and training continues smoothly.
    ``state="reset"``: the refined parameters take their parents' places in the param groups
    (so the groups' weight decay and learning rate stay), then *every* parameter's state is
    dropped: the optimizer starts afresh, as in the ContinuousNet reference code, which builds
    a new SGD over the refined model (stem and head lose their momentum too). Its first step
    after the refinement is then a plain gradient step (SGD's buffer starts at the gradient).
    """
    if state not in REFINE_OPTIMIZER:
        raise ValueError(f"state: must be one of {', '.join(REFINE_OPTIMIZER)}; got {state!r}")
    maps = refine_blocks(model)
    if optimizer is not None:
        map_optimizer_state(optimizer, maps)
        if state == "reset":
            optimizer.state.clear()
    return maps


# --- learning-rate schedule --------------------------------------------------------------------
@dataclass(frozen=True)
class LRSchedule:
    """The learning rate of global step ``s`` (0-based, counted over the whole run).

    ``factor(s)`` is, for ``kind``:
      * ``constant``: 1;
      * ``step``: ``gamma ** k`` with ``k`` the number of ``milestones`` (1-based epochs)
        that are ``<=`` the step's epoch ``s // steps_per_epoch + 1``;
      * ``cosine``: ``min_lr + (base - min_lr) * (1 + cos(pi * p)) / 2`` (as a factor of the
        base) with ``p = (s - warmup_steps) / (total_steps - warmup_steps)``;
    times a linear warm-up ``(s + 1) / warmup_steps`` during the first ``warmup_steps``, times
    ``refine_lr_scale ** r`` with ``r`` the number of ``refine_at`` epochs ``<=`` the step's epoch
    (the learning rate after each refinement; 1 leaves the schedule unchanged), times the rule at a
    growth (``grow_lr``, for the ``grow_at`` epochs ``<=`` the step's epoch): ``keep`` 1; ``scale``
    ``grow_lr_scale ** g`` with ``g`` their number; ``rewarm`` ``(s - s_g + 1) / grow_rewarm_steps``
    for the ``grow_rewarm_steps`` steps from the last growth's first step ``s_g`` on (a later growth
    starts its own ramp), else 1.
    """

    kind: str
    base_lrs: tuple[float, ...]
    steps_per_epoch: int
    epochs: int
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_steps: int = 0
    min_lr: float = 0.0
    refine_at: tuple[int, ...] = ()
    refine_lr_scale: float = 1.0
    grow_at: tuple[int, ...] = ()
    grow_lr: str = "keep"
    grow_lr_scale: float = 1.0
    grow_rewarm_steps: int | None = None

    @classmethod
    def from_config(cls, config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> "LRSchedule":
        return cls(
            kind=config.schedule, base_lrs=tuple(float(config.lr) for _ in optimizer.param_groups),
            steps_per_epoch=steps_per_epoch, epochs=config.epochs, milestones=tuple(config.milestones),
            gamma=config.gamma, warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
            min_lr=config.min_lr, refine_at=tuple(config.refine_at), refine_lr_scale=config.refine_lr_scale,
            grow_at=tuple(config.grow_at), grow_lr=config.grow_lr, grow_lr_scale=config.grow_lr_scale,
            grow_rewarm_steps=config.grow_rewarm_steps,
        )

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def lrs(self, step: int) -> list[float]:
        warm = min(1.0, (step + 1) / self.warmup_steps) if step < self.warmup_steps else 1.0
        epoch = step // self.steps_per_epoch + 1
        refined = self.refine_lr_scale ** sum(1 for r in self.refine_at if r <= epoch) if self.refine_at else 1.0
        refined *= self.growth_factor(step)
        out = []
        for base in self.base_lrs:
            if self.kind == "constant":
                lr = base
            elif self.kind == "step":
                lr = base * self.gamma ** sum(1 for m in self.milestones if m <= epoch)
            elif self.kind == "cosine":
                span = max(1, self.total_steps - self.warmup_steps)
                p = min(1.0, max(0.0, (step - self.warmup_steps) / span))
                lr = self.min_lr + (base - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
            else:
                raise ValueError(f"schedule: must be one of constant, step, cosine; got {self.kind!r}")
            out.append(lr * warm * refined)
        return out

    def growth_factor(self, step: int) -> float:
        """The factor of ``grow_lr`` at step ``step`` (see the class docstring): 1 before the first growth."""
        grown = [g for g in self.grow_at if g <= step // self.steps_per_epoch + 1]
        if not grown or self.grow_lr == "keep":
            return 1.0
        if self.grow_lr == "scale":
            return self.grow_lr_scale ** len(grown)
        if self.grow_lr == "rewarm" and self.grow_rewarm_steps:
            since = step - (grown[-1] - 1) * self.steps_per_epoch
            return (since + 1) / self.grow_rewarm_steps if since < self.grow_rewarm_steps else 1.0
        raise ValueError(f"grow_lr: must be one of keep, scale, rewarm (rewarm with grow_rewarm_steps); "
                         f"got {self.grow_lr!r}")

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Write step ``step``'s learning rates into ``optimizer``; returns the first group's."""
        lrs = self.lrs(step)
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        return lrs[0]

    def state_dict(self, step: int) -> dict:
        return {"kind": self.kind, "base_lrs": list(self.base_lrs), "steps_per_epoch": self.steps_per_epoch,
                "epochs": self.epochs, "milestones": list(self.milestones), "gamma": self.gamma,
                "warmup_steps": self.warmup_steps, "min_lr": self.min_lr, "global_step": step,
                **({"refine_lr_scale": self.refine_lr_scale} if self.refine_lr_scale != 1.0 else {})}

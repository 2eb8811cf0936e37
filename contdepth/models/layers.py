"""Shared pieces of the image models: normalisation choice, rate functions, stitches."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..common.validate import check_choice, check_int
from ..nn import MAX_N_BASIS, MAX_N_STEPS

NORMS = ("batch", "group", "none")
# How stages change width and resolution: "residual" (shortcut + eps * conv-norm-ReLU-conv, the
# ContinuousNet reference's) or "projection" (a strided 1x1 convolution and a norm; nothing at all
# where width and resolution stay, as in the first stage). The stitches are discrete in every
# manifestation, so at inference their cost does not shrink with the steps: "projection" is
# what lets a compressed model run much faster than its source.
STITCHES = ("residual", "projection")
# Upper bounds of the per-block sizes, one source for options, models and checkpoints
# (contdepth.nn): n_steps <= MAX_N_STEPS; n_basis and n_units <= MAX_N_BASIS. The deepest
# networks trained in practice have a few hundred units per stage (ResNet-1202: 200), while
# a typo such as 1000000000 would otherwise build a billion-stage schedule and hang.


def block_size_limit(name: str) -> int:
    """The bound of a per-block size by its option name: steps, or basis functions and units."""
    return MAX_N_STEPS if "steps" in name else MAX_N_BASIS


def check_block_size(value: object, name: str) -> int:
    """A per-block size (``n_basis``, ``n_steps``, ``n_units``): an integer in 1..`block_size_limit`.

    The one bound of every step and basis count, whoever reads it (model options, ``train``'s
    ``eval_n_steps``, ``eval``/``analyze``/``compress``/``export`` flags, a spec's steps): a typo
    such as ``--n-steps 1000000000`` would build a billion-stage schedule and hang before anything
    is printed. Checkpoints obey the same bounds (`contdepth.nn.MAX_N_STEPS`, `MAX_N_BASIS`).
    """
    return check_int(value, name, low=1, high=block_size_limit(name), above="per block (far above any useful value)")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """``batch`` (running statistics, depth-dependent inside blocks), ``group`` or ``none``."""
    check_choice(kind, "norm", NORMS)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.Identity()


def residual_rate(channels: int, norm: str) -> nn.Sequential:
    """Pre-activation rate: norm-ReLU-conv3x3-norm-ReLU-conv3x3 (ResNet v2 unit body)."""
    return nn.Sequential(
        norm_layer(norm, channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        norm_layer(norm, channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
    )


class Stitch(nn.Module):
    """Change width/resolution between stages: ``shortcut(x) + eps * body(x)``.

    The shortcut is a strided 1x1 convolution; the body conv3x3(stride)-norm-ReLU-conv3x3.
    It is not part of any ODE, so it stays discrete in every manifestation.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            norm_layer(norm, out_channels), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.eps * self.body(x)


class ProjectionStitch(nn.Module):
    """Change width/resolution with a strided 1x1 convolution followed by a norm: the cheap stitch."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.norm = norm_layer(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def make_stitch(kind: str, in_channels: int, out_channels: int, stride: int, norm: str, eps: float) -> nn.Module:
    """The stitch of ``kind`` (see `STITCHES`); a ``projection`` that changes nothing is the identity."""
    check_choice(kind, "stitch", STITCHES)
    if kind == "residual":
        return Stitch(in_channels, out_channels, stride, norm, eps)
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return ProjectionStitch(in_channels, out_channels, stride, norm)


class Head(nn.Module):
    """Final norm-ReLU, global average pool, linear classifier."""

    def __init__(self, channels: int, num_classes: int, norm: str) -> None:
        super().__init__()
        self.norm = norm_layer(norm, channels)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.relu(self.norm(x)).mean(dim=(2, 3)))


def stem(in_channels: int, width: int, norm: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), norm_layer(norm, width), nn.ReLU())


def per_stage(value: object, name: str, stages: int = 3) -> tuple[int, ...]:
    """An int for every stage, or one int per stage."""
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * stages
    if len(values) != stages:
        raise ValueError(f"{name}: give one integer or {stages} (one per stage), got {value!r}")
    return tuple(check_block_size(v, name) for v in values)

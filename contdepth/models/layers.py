"""Shared pieces of the image models: normalisation choice, rate functions, stitches."""

from __future__ import annotations

import math

import torch
from torch import nn

NORMS = ("batch", "group", "none")


def check_choice(value: object, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: must be one of {', '.join(allowed)}; got {value!r}")
    return value  # type: ignore[return-value]


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
    return value


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
    return tuple(check_positive_int(v, name) for v in values)

"""The depths at which a block's normalisation state has been sampled.

Training samples the batch statistics only at the stage depths of the manifestation it
trains on, and the state coefficients are fitted to those samples. Inside the sampled
range the fit interpolates; outside it, it extrapolates, and a fitted *variance* can go
negative there (forward Euler with 2 steps samples ``t = 0`` and ``t = 1/2``; a linear
basis then sets the value at ``t = 1`` to ``2 s(1/2) - s(0)``). A block therefore reads its
state no further than the range it was sampled over: a deeper (shallower) stage reads the
deepest (shallowest) sample's depth. On the training manifestation this changes nothing.

The range is kept with the state (a buffer, so it travels in ``state_dict`` and
checkpoints) as exact rationals: an integer tensor is never cast by ``.to(dtype)``, and a
stage exactly at the deepest sampled depth must read exactly what it read in training.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import torch

DepthKey = tuple[Fraction, int]
"""A depth read from one side, totally ordered: ``(position in [0, 1], 0 left limit / 1 right limit)``.

A discontinuous depth function has two values at a jump; the key orders the left limit
just before the right one, so "the deepest depth sampled" is one key.
"""


def depth_key(position: Fraction, left: bool) -> DepthKey:
    """The `DepthKey` of reading depth ``position`` (of the interval) from the ``left`` side or not."""
    return (Fraction(position), 0 if left else 1)


def unknown_range() -> torch.Tensor:
    """The encoded range of a block never sampled (or loaded without one): all zeros, read anywhere.

    A function, not a constant: the tensor is made where it is called, so a model built
    under ``torch.device("meta")`` (a dry build) gets a meta buffer like all its others.
    """
    return torch.zeros(6, dtype=torch.int64)


class StateRange(NamedTuple):
    """The lowest and highest `DepthKey` sampled (positions in ``[0, 1]``)."""

    lo: DepthKey
    hi: DepthKey

    def clamp(self, key: DepthKey) -> DepthKey:
        """``key`` moved into the range (unchanged when inside)."""
        if key < self.lo:
            return self.lo
        if key > self.hi:
            return self.hi
        return key

    def covers_all(self) -> bool:
        """Whether every depth of ``[0, 1]`` lies inside (nothing is ever held at an end)."""
        return self.lo <= (Fraction(0), 1) and self.hi >= (Fraction(1), 0)

    def union(self, other: "StateRange | None") -> "StateRange":
        if other is None:
            return self
        return StateRange(min(self.lo, other.lo), max(self.hi, other.hi))

    def encode(self) -> torch.Tensor:
        """``[lo numerator, lo denominator, lo side, hi numerator, hi denominator, hi side]`` (int64)."""
        return torch.tensor([self.lo[0].numerator, self.lo[0].denominator, self.lo[1],
                             self.hi[0].numerator, self.hi[0].denominator, self.hi[1]], dtype=torch.int64)

    @staticmethod
    def decode(value: torch.Tensor) -> "StateRange | None":
        """The range a buffer holds (``None``: unknown, all zeros); raises ``ValueError`` for anything but a valid range."""
        if value.shape != (6,) or value.dtype != torch.int64:
            raise ValueError(f"state depth range: expected 6 int64 values, got shape {tuple(value.shape)} {value.dtype}")
        numbers = [int(v) for v in value.tolist()]
        if not any(numbers):
            return None
        keys = []
        for numerator, denominator, side in (numbers[:3], numbers[3:]):
            if denominator <= 0 or side not in (0, 1) or not 0 <= numerator <= denominator:
                raise ValueError(f"state depth range: {numbers} is not a range of depths in [0, 1]")
            keys.append((Fraction(numerator, denominator), side))
        if keys[0] > keys[1]:
            raise ValueError(f"state depth range: {numbers} ends before it starts")
        return StateRange(keys[0], keys[1])

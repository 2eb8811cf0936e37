"""RevNet's coupled rate as a block template: ``d[X, Y]/dt = [F(Y), G(X)]`` on two halves.

A [`ContinuousBlock`][contdepth.nn.ContinuousBlock] whose template is a [`Coupling`][contdepth.nn.Coupling] integrates
the coupled system of RevNet (Gomez et al. 2017) read as an ODE (Lu et al. 2018): ``F`` and
``G`` are two networks on half the channels, each with its own depth-varying weights
(``theta_F(t)``, ``theta_G(t)``). With the ``revnet`` scheme each step computes
``X+ = X + h F(Y)`` then ``Y+ = Y + h G(X+)`` and evaluates each network once; any other
scheme (``euler``, ``rk4`` ...) integrates the same coupled equation through
`Coupling.forward`, so a RevNet block manifests like every other block.
"""

from __future__ import annotations

import torch
from torch import nn

from ..solvers import split_halves

Tensor = torch.Tensor


class Coupling(nn.Module):
    """The rate ``[F(Y), G(X)]`` of a state ``[X, Y]`` split in two halves along ``dim``.

    Args:
        f: maps the ``Y`` half to the rate of ``X`` (same shape as a half).
        g: maps the ``X`` half to the rate of ``Y``.
        dim: the dimension split in halves (1: channels of ``(batch, channels, ...)``).

    `parts` names the submodule each half's rate uses, so a block knows which
    normalisation state a one-half evaluation ([`part`][contdepth.nn.Coupling.part]) updates.
    """

    parts = ("f", "g")

    def __init__(self, f: nn.Module, g: nn.Module, dim: int = 1) -> None:
        super().__init__()
        if not (isinstance(f, nn.Module) and isinstance(g, nn.Module)):
            raise TypeError("f, g: a Coupling needs two modules, one per half")
        if f is g:
            raise ValueError("g: F and G must be two modules (each half's rate has its own weights and statistics); "
                             "pass two instances")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise ValueError(f"dim: the dimension split in halves must be a non-negative integer, got {dim!r}")
        self.f, self.g = f, g
        self.dim = dim

    def forward(self, z: Tensor, *context: object) -> Tensor:
        x, y = split_halves(z, self.dim, "Coupling input")
        return torch.cat((self.f(y, *context), self.g(x, *context)), dim=self.dim)

    def part(self, i: int, other_half: Tensor, *context: object) -> Tensor:
        """The rate of half ``i`` (0: ``X``, from ``Y``; 1: ``Y``, from ``X``)."""
        return (self.f if i == 0 else self.g)(other_half, *context)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def is_partitioned(template: nn.Module) -> bool:
    """Whether ``template`` computes each half's rate on its own (a [`Coupling`][contdepth.nn.Coupling] or alike).

    The one test the live block and its frozen export share: ``parts`` names the submodule
    of each half, ``part(i, other_half, *context)`` computes half ``i``'s rate, and ``dim``
    is the dimension split.
    """
    return (isinstance(getattr(template, "parts", None), tuple) and callable(getattr(template, "part", None))
            and isinstance(getattr(template, "dim", None), int))

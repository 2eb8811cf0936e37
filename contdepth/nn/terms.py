"""A rate that is a sum of terms, as a block template: ``dx/dt = f_1(theta(t), x) + ... + f_m(theta(t), x)``.

A transformer layer is the Lie-Trotter splitting of ``dx/dt = a(x) + m(x)`` (attention and MLP,
Lu et al. 2019). A [`ContinuousBlock`][contdepth.nn.ContinuousBlock] whose template is
``cd.nn.Terms(attention, mlp)`` integrates that sum: a splitting scheme (``lie_trotter``,
``strang``, ``strang_midpoint``) advances one term at a time through
[`Terms.term`][contdepth.nn.Terms.term]; any other scheme (``euler``, ``rk4`` ...) integrates
their sum through `Terms.forward`, so the block manifests like every other block. Each term
has its own depth-varying weights (its submodule's parameters become its own coefficients).
"""

from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


class Terms(nn.Module):
    """The rate ``f_1(x) + ... + f_m(x)`` of modules ``f_i``, each also callable alone (`term`).

    `terms` names the submodule of each term, so a block knows which normalisation state a
    one-term evaluation updates (as `Coupling.parts` does for halves).
    """

    def __init__(self, *terms: nn.Module) -> None:
        super().__init__()
        if not terms or not all(isinstance(t, nn.Module) for t in terms):
            raise TypeError("terms: Terms needs one or more modules, one per term of the rate")
        if len({id(t) for t in terms}) != len(terms):
            raise ValueError("terms: each term must be its own module (its own weights and statistics); pass "
                             "separate instances")
        self.modules_of_terms = nn.ModuleList(terms)
        self.terms = tuple(f"modules_of_terms.{i}" for i in range(len(terms)))

    def forward(self, x: Tensor, *context: object) -> Tensor:
        total = self.modules_of_terms[0](x, *context)
        for module in self.modules_of_terms[1:]:
            total = total + module(x, *context)
        return total

    def term(self, i: int, x: Tensor, *context: object) -> Tensor:
        """Term ``i`` of the rate at ``x``."""
        return self.modules_of_terms[i](x, *context)


def has_terms(template: nn.Module) -> bool:
    """Whether ``template`` offers its terms one at a time (a [`Terms`][contdepth.nn.Terms] or alike):
    ``terms`` names the submodule of each, ``term(i, x, *context)`` computes term ``i``."""
    return isinstance(getattr(template, "terms", None), tuple) and callable(getattr(template, "term", None))


__all__ = ["Terms", "has_terms"]

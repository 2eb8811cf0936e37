"""Bases by name: the `BASES` registry, `register_basis`, and the built-ins declared without torch (issue 28)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

import contdepth as cd
from contdepth.basis import BASES, DepthBasis, PiecewiseConstant, make_basis, register_basis
from contdepth.basis.names import BUILTIN_BASES


def test_the_declared_builtins_are_the_classes_bases_py_registers():
    assert set(BASES.declared()) == set(BUILTIN_BASES)
    for name in BUILTIN_BASES:
        family = BASES.get(name)
        assert issubclass(family, DepthBasis) and family.name == name and family.__module__ == "contdepth.basis.bases"
    assert cd.make_basis is make_basis and cd.register_basis is register_basis


class Halves(DepthBasis):
    """Two cells of any size: the smallest basis with a breakpoint a user might register."""

    name = "halves_for_test"
    degree = 0
    continuous = False

    @property
    def breakpoints(self) -> tuple[Fraction, ...]:
        return (Fraction(1, 2),) if self.n == 2 else ()

    def piece_values(self, piece: int, t: np.ndarray) -> np.ndarray:
        return np.eye(self.n)[[piece] * len(t)]

    def with_size(self, n: int) -> "Halves":
        return Halves(n)

    def refined_size(self) -> int:
        return 2

    def collocation_points(self) -> np.ndarray:
        return (np.arange(self.n) + 0.5) / self.n


def test_a_registered_basis_is_a_basis_option_everywhere_and_gone_after_kept():
    with BASES.kept():
        assert register_basis(Halves) is Halves
        assert "halves_for_test" in cd.available_bases() and make_basis("halves_for_test", 2) == Halves(2)
        block = cd.ContinuousBlock(torch.nn.Linear(3, 3), basis="halves_for_test", n_basis=2, n_steps=2)
        assert block(torch.randn(2, 3)).shape == (2, 3) and block.basis.name == "halves_for_test"
        with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
            register_basis(Halves)
        with pytest.raises(ValueError, match="'piecewise_constant' is already registered"):
            register_basis(type("Cells", (PiecewiseConstant,), {}))  # inherits the built-in's name
    assert "halves_for_test" not in cd.available_bases()


def test_register_basis_takes_depth_basis_subclasses_only():
    with pytest.raises(TypeError, match="basis_class: expected a DepthBasis subclass"):
        register_basis(PiecewiseConstant(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^basis: unknown basis 'legendr'; .*did you mean 'legendre'\?$"):
        make_basis("legendr", 3)

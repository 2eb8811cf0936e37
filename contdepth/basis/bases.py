"""Depth bases: ``theta(t) = sum_k c_k phi_k(t)`` on the normalised depth ``t in [0, 1]``.

Three families, each a piecewise polynomial with known breakpoints:

* ``piecewise_constant`` -- ``n`` cells ``[k/n, (k+1)/n)``; a discrete ResNet stage.
* ``piecewise_linear``   -- continuous hat functions on ``n >= 2`` equispaced nodes.
* ``legendre``           -- shifted Legendre polynomials ``P_k(2t - 1)``, degree ``n - 1``.

Semantics at breakpoints are exact and decided with rational arithmetic: a depth
function is right-continuous, except that a caller may ask for the *left limit*
(what a stage at the end of its own step needs).  No epsilon offsets, no float
``int(n * t)`` indexing, so 7 cells work with 7, 49 or any other number of steps.

The coefficient operations (evaluate / refine / project) are linear maps, exposed
as matrices too, so the same map can be applied to optimizer state.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from fractions import Fraction
from functools import cached_property

import numpy as np
import torch

from ..common.validate import check_int
from .names import BASES, available_bases  # noqa: F401  (available_bases: its home before issue 28)

Tensor = torch.Tensor


def _as_position(t: float | int | Fraction) -> Fraction:
    if isinstance(t, bool) or not isinstance(t, (int, float, Fraction)):
        raise TypeError(f"t: expected a real number in [0, 1], got {type(t).__name__}")
    p = Fraction(t)
    if not 0 <= p <= 1:
        raise ValueError(f"t: depth functions live on [0, 1], got {float(t)}")
    return p


class DepthBasis(ABC):
    """A finite family of functions on ``[0, 1]`` that a block's weights are expanded in."""

    name: str
    #: polynomial degree on each piece (used to choose exact quadrature)
    degree: int
    #: the functions are nonnegative and sum to 1 at every depth, so a function in this basis
    #: lies between its smallest and largest coefficient (a positive quantity stays positive
    #: when its coefficients do)
    convex: bool = False
    #: the functions are continuous at their breakpoints (a value there has no sides)
    continuous: bool = True

    def __init__(self, n: int) -> None:
        self.n = n

    # --- structure ------------------------------------------------------------------
    @property
    @abstractmethod
    def breakpoints(self) -> tuple[Fraction, ...]:
        """Interior points of ``(0, 1)`` where the functions may jump or kink, ascending."""

    @property
    def pieces(self) -> tuple[Fraction, ...]:
        """All piece boundaries: ``0``, the breakpoints, ``1``."""
        return (Fraction(0), *self.breakpoints, Fraction(1))

    def piece_of(self, t: Fraction, left: bool = False) -> int:
        """Index of the piece whose value is taken at ``t`` (exact).

        Right-continuous by default; with ``left=True`` the left limit (the piece that
        ends at ``t`` when ``t`` is a breakpoint).  ``t = 0`` and ``t = 1`` fall into the
        first and last piece either way.
        """
        bps = self.breakpoints
        lo, hi = 0, len(bps)
        while lo < hi:  # count breakpoints <= t (right) or < t (left)
            mid = (lo + hi) // 2
            if bps[mid] < t or (not left and bps[mid] == t):
                lo = mid + 1
            else:
                hi = mid
        return lo

    @abstractmethod
    def piece_values(self, piece: int, t: np.ndarray) -> np.ndarray:
        """Values ``(len(t), n)`` of all functions at points ``t`` that lie in ``piece``."""

    @abstractmethod
    def with_size(self, n: int) -> "DepthBasis":
        """The same family with ``n`` functions."""

    @abstractmethod
    def refined_size(self) -> int:
        """Size of the refined basis (twice the cells / twice the functions)."""

    @abstractmethod
    def collocation_points(self) -> np.ndarray:
        """``n`` points where function values determine the coefficients (for initialisation)."""

    # --- evaluation -----------------------------------------------------------------
    def collocation_inverse(self) -> np.ndarray:
        """Maps values at the collocation points to coefficients: ``theta(point_j) = value_j`` (how draws become a depth function)."""
        return np.linalg.inv(np.stack([self.weights(Fraction(float(p))) for p in self.collocation_points()]))

    def weights(self, t: float | Fraction, left: bool = False) -> np.ndarray:
        """``phi_k(t)`` for all ``k`` (float64), with exact piece selection."""
        p = _as_position(t)
        return self.piece_values(self.piece_of(p, left), np.array([float(p)]))[0]

    def values(self, t: np.ndarray) -> np.ndarray:
        """``(len(t), n)`` right-continuous values at float points (for plots and quadrature)."""
        t = np.asarray(t, dtype=float)
        out = np.empty((t.size, self.n))
        for i, ti in enumerate(t.ravel()):
            out[i] = self.weights(Fraction(float(ti)))
        return out

    def evaluate(self, coeffs: Tensor, t: float | Fraction, *, left: bool = False) -> Tensor:
        """``theta(t) = sum_k coeffs[k] phi_k(t)``; ``coeffs`` has shape ``(n, *param_shape)``."""
        self._check_coeffs(coeffs)
        w = torch.as_tensor(self.weights(t, left), dtype=coeffs.dtype, device=coeffs.device)
        return torch.tensordot(w, coeffs, dims=1)

    # --- refinement and projection --------------------------------------------------
    def refined(self) -> "DepthBasis":
        """The finer basis (same family) that contains this one."""
        return self.with_size(self.refined_size())

    @cached_property
    def refine_matrix(self) -> np.ndarray:
        """``R`` with ``refine(c) = R @ c``: the same function on the refined basis."""
        return projection_matrix(self, self.refined())

    def refine(self, coeffs: Tensor) -> Tensor:
        """Coefficients of the *same* function on [`refined`][contdepth.basis.DepthBasis.refined] (exact up to rounding)."""
        return apply_matrix(self.refine_matrix, self._check_coeffs(coeffs))

    def project(self, coeffs: Tensor, n: int) -> Tensor:
        """L2-best approximation of the function on the same family with ``n`` functions."""
        target = self.with_size(n)
        return apply_matrix(projection_matrix(self, target), self._check_coeffs(coeffs))

    def _check_coeffs(self, coeffs: Tensor) -> Tensor:
        if coeffs.dim() < 1 or coeffs.shape[0] != self.n:
            raise ValueError(
                f"coeffs: expected leading dimension n_basis = {self.n}, got shape {tuple(coeffs.shape)}"
            )
        return coeffs

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.n == self.n  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.n))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n})"


def apply_matrix(matrix: np.ndarray, coeffs: Tensor) -> Tensor:
    """``matrix @ coeffs`` along the basis dimension, in the coefficients' dtype and device."""
    m = torch.as_tensor(matrix, dtype=coeffs.dtype, device=coeffs.device)
    return torch.tensordot(m, coeffs, dims=1)


def projection_matrix(source: DepthBasis, target: DepthBasis, *,
                      within: tuple[Fraction, Fraction] | None = None) -> np.ndarray:
    """``P`` (target.n x source.n) of the L2 projection from ``source`` onto ``target``.

    Both bases are piecewise polynomials, so on every interval between consecutive
    breakpoints of either basis the integrands are polynomials of degree
    ``source.degree + target.degree`` (cross) or ``2 * target.degree`` (Gram);
    Gauss-Legendre quadrature with enough nodes integrates both exactly (up to rounding).

    ``within=(lo, hi)`` measures the error only on ``[lo, hi]``: the best fit where a
    function is read (a block's normalisation state is never read outside the depths it
    was sampled at, so what it extrapolates beyond them must not pull the fit). A function
    of the target space is still reproduced exactly. Target functions that vanish on the
    whole interval get coefficient 0 (the minimum-norm solution); a single point
    (``lo == hi``) is matched there.
    """
    bounds = set(source.pieces) | set(target.pieces)
    if within is not None:
        lo, hi = Fraction(within[0]), Fraction(within[1])
        if lo == hi:  # one depth: the minimum-norm coefficients that reproduce the value there
            vt, vs = target.weights(lo)[None, :], source.weights(lo)[None, :]
            return np.linalg.pinv(vt) @ vs
        bounds = {b for b in bounds | {lo, hi} if lo <= b <= hi}
    bounds = sorted(bounds)
    n_nodes = (target.degree + max(source.degree, target.degree)) // 2 + 1
    nodes, node_weights = np.polynomial.legendre.leggauss(n_nodes)
    gram = np.zeros((target.n, target.n))
    cross = np.zeros((target.n, source.n))
    for a, b in zip(bounds[:-1], bounds[1:]):
        mid = (a + b) / 2
        fa, fb = float(a), float(b)
        t = fa + (fb - fa) * (nodes + 1) / 2
        w = node_weights * (fb - fa) / 2
        vt = target.piece_values(target.piece_of(mid), t)
        vs = source.piece_values(source.piece_of(mid), t)
        gram += vt.T @ (w[:, None] * vt)
        cross += vt.T @ (w[:, None] * vs)
    if within is None:
        return np.linalg.solve(gram, cross)
    return np.linalg.pinv(gram, rcond=1e-12) @ cross



class PiecewiseConstant(DepthBasis):
    """``n`` equal cells; cell ``k`` is ``[k/n, (k+1)/n)``.  Refinement splits every cell."""

    name = "piecewise_constant"
    degree = 0
    convex = True
    continuous = False

    def __init__(self, n: int) -> None:
        super().__init__(check_int(n, "n_basis", low=1, subject=f"the {self.name} basis's n_basis"))

    @cached_property
    def breakpoints(self) -> tuple[Fraction, ...]:
        return tuple(Fraction(k, self.n) for k in range(1, self.n))

    def piece_of(self, t: Fraction, left: bool = False) -> int:
        # Closed form of the bisection in the base class (cells are equal).
        k = math.ceil(t * self.n) - 1 if left else math.floor(t * self.n)
        return min(max(k, 0), self.n - 1)

    def piece_values(self, piece: int, t: np.ndarray) -> np.ndarray:
        out = np.zeros((len(t), self.n))
        out[:, piece] = 1.0
        return out

    def with_size(self, n: int) -> "PiecewiseConstant":
        return PiecewiseConstant(n)

    def refined_size(self) -> int:
        return 2 * self.n

    def collocation_points(self) -> np.ndarray:
        return (np.arange(self.n) + 0.5) / self.n


class PiecewiseLinear(DepthBasis):
    """Continuous hat functions on ``n >= 2`` equispaced nodes ``k/(n-1)``.

    Refinement inserts the midpoint of every cell (``n -> 2n - 1`` nodes, twice the cells).
    """

    name = "piecewise_linear"
    degree = 1
    convex = True

    def __init__(self, n: int) -> None:
        super().__init__(check_int(n, "n_basis", low=2, subject=f"the {self.name} basis's n_basis"))  # a hat: 2 nodes

    @property
    def cells(self) -> int:
        return self.n - 1

    @cached_property
    def breakpoints(self) -> tuple[Fraction, ...]:
        return tuple(Fraction(k, self.cells) for k in range(1, self.cells))

    def piece_of(self, t: Fraction, left: bool = False) -> int:
        k = math.ceil(t * self.cells) - 1 if left else math.floor(t * self.cells)
        return min(max(k, 0), self.cells - 1)

    def piece_values(self, piece: int, t: np.ndarray) -> np.ndarray:
        u = np.asarray(t) * self.cells - piece
        out = np.zeros((len(t), self.n))
        out[:, piece] = 1.0 - u
        out[:, piece + 1] = u
        return out

    def weights(self, t: float | Fraction, left: bool = False) -> np.ndarray:
        p = _as_position(t)
        piece = self.piece_of(p, left)
        out = np.zeros(self.n)
        u = p * self.cells - piece  # exact local coordinate
        out[piece] = float(1 - u)
        out[piece + 1] = float(u)
        return out

    def with_size(self, n: int) -> "PiecewiseLinear":
        return PiecewiseLinear(n)

    def refined_size(self) -> int:
        return 2 * self.cells + 1

    def collocation_points(self) -> np.ndarray:
        return np.arange(self.n) / self.cells


class Legendre(DepthBasis):
    """Shifted Legendre polynomials ``P_k(2t - 1)``, ``k < n``: smooth, no breakpoints.

    Refinement raises the degree (``n -> 2n`` functions, new coefficients zero).
    """

    name = "legendre"

    def __init__(self, n: int) -> None:
        super().__init__(check_int(n, "n_basis", low=1, subject=f"the {self.name} basis's n_basis"))

    @property
    def degree(self) -> int:  # type: ignore[override]
        return self.n - 1

    @property
    def breakpoints(self) -> tuple[Fraction, ...]:
        return ()

    def piece_of(self, t: Fraction, left: bool = False) -> int:
        return 0

    def piece_values(self, piece: int, t: np.ndarray) -> np.ndarray:
        x = 2.0 * np.asarray(t, dtype=float) - 1.0
        out = np.empty((len(x), self.n))
        out[:, 0] = 1.0
        if self.n > 1:
            out[:, 1] = x
        for k in range(1, self.n - 1):  # Bonnet's recursion
            out[:, k + 1] = ((2 * k + 1) * x * out[:, k] - k * out[:, k - 1]) / (k + 1)
        return out

    def with_size(self, n: int) -> "Legendre":
        return Legendre(n)

    def refined_size(self) -> int:
        return 2 * self.n

    def collocation_points(self) -> np.ndarray:
        nodes = np.polynomial.legendre.leggauss(self.n)[0]
        return (nodes + 1) / 2


for _family in (PiecewiseConstant, PiecewiseLinear, Legendre):  # the built-ins `names.BUILTIN_BASES` declares
    BASES.register(_family.name, _family)
del _family

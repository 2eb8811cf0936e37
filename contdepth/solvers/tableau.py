"""Butcher tableaux as validated, immutable values.

A Runge-Kutta method *is* its tableau: the step itself is one generic routine
([`contdepth.solvers.runge_kutta.rk_step`][contdepth.solvers.rk_step]).  Keeping the coefficients as data
lets us check them once, at construction, instead of trusting hand-written step code.

Coefficients are stored as exact `fractions.Fraction` values (``float``,
``int``, ``Fraction`` and strings such as ``"1/3"`` are accepted).  Exactness matters
for the stage *times*: with a piecewise-constant depth basis a stage at ``c = 1/3``
of a step may land exactly on a breakpoint, and a float ``1/3`` would quietly fall
into the wrong cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Iterable, Sequence, Union

import numpy as np

Number = Union[int, float, Fraction, str]

#: Tolerance for checks on coefficients given as floats (exact inputs meet them exactly).
_COEFFICIENT_TOLERANCE = 1e-12
#: Highest order the order conditions are checked for (37 rooted trees up to order 6).
_MAX_CHECKED_ORDER = 6


def _to_fraction(value: Number, what: str) -> Fraction:
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected a number, got a bool")
    if isinstance(value, (int, Fraction, str)):
        try:
            return Fraction(value)
        except (ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"{what}: cannot read {value!r} as a number") from exc
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what}: coefficients must be finite, got {value!r}")
        return Fraction(value)
    raise TypeError(f"{what}: expected int, float, Fraction or str, got {type(value).__name__}")


def _close(x: Fraction, y: Fraction) -> bool:
    return abs(float(x - y)) <= _COEFFICIENT_TOLERANCE


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta method: ``c | a`` over ``b`` (and optional error weights).

    Args:
        name: human-readable name, used in messages and tables.
        c: stage times as fractions of the step, length ``s``.
        a: the stage matrix; row ``i`` may list just its ``i`` sub-diagonal entries
            (ragged) or all ``s`` entries (which must then be zero on and above the
            diagonal: only explicit methods are supported).
        b: solution weights, length ``s``; they must sum to 1.
        b_error: optional error weights ``b - b_hat`` of an embedded lower-order
            solution; they must sum to 0.  Needed for adaptive stepping.
        reference: where the coefficients come from.

    The classical order ([`order`][contdepth.solvers.ButcherTableau.order]) and the order of the embedded solution
    ([`embedded_order`][contdepth.solvers.ButcherTableau.embedded_order]) are *computed* from the rooted-tree order conditions,
    so a mistyped coefficient shows up as a lower order instead of silently passing.
    """

    name: str
    c: tuple[Fraction, ...]
    a: tuple[tuple[Fraction, ...], ...]
    b: tuple[Fraction, ...]
    b_error: tuple[Fraction, ...] | None = None
    reference: str = ""
    # float copies for the hot loop (public: every step reads them), derived in __init__
    a_float: tuple[tuple[float, ...], ...] = field(init=False, repr=False, compare=False)
    b_float: tuple[float, ...] = field(init=False, repr=False, compare=False)
    b_error_float: tuple[float, ...] | None = field(init=False, repr=False, compare=False)
    c_float: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        name: str,
        c: Sequence[Number],
        a: Sequence[Sequence[Number]],
        b: Sequence[Number],
        b_error: Sequence[Number] | None = None,
        reference: str = "",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("name: a tableau needs a non-empty name")
        s = len(b)
        if s < 1:
            raise ValueError(f"b: tableau {name!r} needs at least one stage")
        if len(c) != s:
            raise ValueError(f"c: tableau {name!r} has {len(c)} stage times but {s} weights in b")
        if len(a) != s:
            raise ValueError(f"a: tableau {name!r} has {len(a)} rows but {s} stages")
        rows = []
        for i, row in enumerate(a):
            row = [_to_fraction(v, f"a[{i}]") for v in row]
            if len(row) == s:
                if any(v != 0 for v in row[i:]):
                    raise ValueError(
                        f"a: tableau {name!r} row {i} has entries on or above the diagonal; "
                        "only explicit methods (strictly lower-triangular a) are supported"
                    )
                row = row[:i]
            elif len(row) != i:
                raise ValueError(
                    f"a: tableau {name!r} row {i} must have {i} (ragged) or {s} (full) entries, "
                    f"got {len(row)}"
                )
            rows.append(tuple(row))
        cs = tuple(_to_fraction(v, f"c[{i}]") for i, v in enumerate(c))
        bs = tuple(_to_fraction(v, f"b[{i}]") for i, v in enumerate(b))
        for i, row in enumerate(rows):
            if not _close(sum(row, Fraction(0)), cs[i]):
                raise ValueError(
                    f"a: tableau {name!r} row {i} sums to {float(sum(row, Fraction(0)))!r} "
                    f"but c[{i}] = {float(cs[i])!r}; rows of a must sum to c"
                )
        if not _close(sum(bs, Fraction(0)), Fraction(1)):
            raise ValueError(f"b: weights of tableau {name!r} sum to {float(sum(bs))!r}, not 1")
        es = None
        if b_error is not None:
            if len(b_error) != s:
                raise ValueError(f"b_error: tableau {name!r} needs {s} error weights, got {len(b_error)}")
            es = tuple(_to_fraction(v, f"b_error[{i}]") for i, v in enumerate(b_error))
            if not _close(sum(es, Fraction(0)), Fraction(0)):
                raise ValueError(
                    f"b_error: error weights of tableau {name!r} sum to {float(sum(es))!r}, not 0"
                )
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "c", cs)
        set_(self, "a", tuple(rows))
        set_(self, "b", bs)
        set_(self, "b_error", es)
        set_(self, "reference", reference)
        set_(self, "a_float", tuple(tuple(float(v) for v in row) for row in rows))
        set_(self, "b_float", tuple(float(v) for v in bs))
        set_(self, "c_float", tuple(float(v) for v in cs))
        set_(self, "b_error_float", None if es is None else tuple(float(v) for v in es))
        if self.order < 1:
            raise ValueError(f"tableau {name!r} is not consistent (order < 1)")

    @property
    def stages(self) -> int:
        """Number of stages ``s`` (function evaluations per step, before FSAL reuse)."""
        return len(self.b)

    @property
    def is_embedded(self) -> bool:
        """Whether the tableau carries an error estimate, i.e. can step adaptively."""
        return self.b_error is not None

    @cached_property
    def order(self) -> int:
        """Classical order of the solution weights ``b`` (checked up to order 6)."""
        return _order_of(self.a_float, self.b_float)

    @cached_property
    def embedded_order(self) -> int | None:
        """Order of the embedded solution ``b - b_error`` (``None`` without error weights)."""
        if self.b_error_float is None:
            return None
        b_hat = tuple(b - e for b, e in zip(self.b_float, self.b_error_float))
        return _order_of(self.a_float, b_hat)

    @property
    def fsal(self) -> bool:
        """First-same-as-last: the last stage is evaluated at the new solution.

        Then the next step's first stage equals this step's last one and an adaptive
        integrator can reuse it (dopri5, bosh3).
        """
        s = self.stages
        return (
            s > 1
            and self.c[0] == 0
            and self.c[-1] == 1
            and self.b[-1] == 0
            and tuple(self.a[-1]) == tuple(self.b[:-1])
        )

    def stability_polynomial(self) -> tuple[Fraction, ...]:
        """Coefficients of ``R(z) = 1 + z b.1 + z^2 b.A1 + ...`` (``x+ = R(h lambda) x`` for ``x' = lambda x``).

        Exact rationals, lowest power first; an explicit method's ``R`` is a polynomial of
        degree at most ``s``.
        """
        s = self.stages
        vector = [Fraction(1)] * s  # A^{k-1} 1
        coefficients = [Fraction(1)]
        for _ in range(s):
            coefficients.append(sum((bi * vi for bi, vi in zip(self.b, vector)), Fraction(0)))
            vector = [sum((aij * vector[j] for j, aij in enumerate(row)), Fraction(0)) for row in self.a]
        while len(coefficients) > 1 and coefficients[-1] == 0:
            coefficients.pop()
        return tuple(coefficients)

    def principal_error_norm(self) -> float:
        """``A^(p+1)``: the 2-norm of the principal local error coefficients (Dormand & Prince 1980).

        ``tau(t) = (b . Phi(t) - 1/gamma(t)) / sigma(t)`` over the rooted trees ``t`` with
        ``p + 1`` nodes, ``p`` the order: ``0.5`` for Euler, about ``0.0145`` for the classic RK4.
        """
        s = self.stages
        a = np.zeros((s, s))
        for i, row in enumerate(self.a_float):
            a[i, : len(row)] = row
        b = np.asarray(self.b_float)
        taus = [(b @ _phi(t, a) - 1.0 / _gamma(t)) / _sigma(t) for t in _trees_of_order(self.order + 1)]
        return float(np.sqrt(np.sum(np.square(taus))))

    def __repr__(self) -> str:
        emb = f", embedded order {self.embedded_order}" if self.is_embedded else ""
        return f"ButcherTableau({self.name!r}, stages={self.stages}, order={self.order}{emb})"


# --- order conditions -------------------------------------------------------------
# A rooted tree is a sorted tuple of its subtrees; the single node is ().  For every
# tree t of order <= p the method must satisfy  b . Phi(t) = 1 / gamma(t)  where
# Phi(t) = prod_children (A Phi(child))  (elementwise; Phi(()) = ones).


def _trees_of_order(n: int, _cache: dict[int, list[tuple]] = {}) -> list[tuple]:
    """All rooted trees with ``n`` nodes (1, 1, 2, 4, 9, 20, ... of them)."""
    if n in _cache:
        return _cache[n]
    if n == 1:
        result = [()]
    else:
        found: set[tuple] = set()
        for partition in _partitions(n - 1):
            for children in _choose_children(partition):
                found.add(tuple(sorted(children)))
        result = sorted(found)
    _cache[n] = result
    return result


def _partitions(n: int, largest: int | None = None) -> Iterable[tuple[int, ...]]:
    largest = n if largest is None else largest
    if n == 0:
        yield ()
        return
    for first in range(min(n, largest), 0, -1):
        for rest in _partitions(n - first, first):
            yield (first, *rest)


def _choose_children(sizes: tuple[int, ...]) -> Iterable[list[tuple]]:
    if not sizes:
        yield []
        return
    for tree in _trees_of_order(sizes[0]):
        for rest in _choose_children(sizes[1:]):
            yield [tree, *rest]


def _tree_order(tree: tuple) -> int:
    return 1 + sum(_tree_order(child) for child in tree)


def _gamma(tree: tuple) -> int:
    return _tree_order(tree) * math.prod(_gamma(child) for child in tree)


def _sigma(tree: tuple) -> int:
    """The symmetry of a tree: the order of its automorphism group."""
    out = 1
    for child in set(tree):
        m = tree.count(child)
        out *= _sigma(child) ** m * math.factorial(m)
    return out


def _phi(tree: tuple, a: np.ndarray) -> np.ndarray:
    out = np.ones(a.shape[0])
    for child in tree:
        out = out * (a @ _phi(child, a))
    return out


def _order_of(a_rows: tuple[tuple[float, ...], ...], b: tuple[float, ...]) -> int:
    s = len(b)
    a = np.zeros((s, s))
    for i, row in enumerate(a_rows):
        a[i, : len(row)] = row
    bv = np.asarray(b, dtype=float)
    order = 0
    for p in range(1, _MAX_CHECKED_ORDER + 1):
        for tree in _trees_of_order(p):
            if abs(bv @ _phi(tree, a) - 1.0 / _gamma(tree)) > 1e-10:
                return order
        order = p
    return order

"""Splitting schemes: a field that is a sum of terms, ``f = f_1 + ... + f_m``, advanced one term at a time.

A transformer layer ``x <- x + A(LN1(x)); x <- x + M(LN2(x))`` is one step of the **Lie-Trotter**
splitting of ``dx/dt = a(t, x) + m(t, x)`` with forward-Euler sub-steps (Lu et al. 2019,
arXiv 1906.02762: attention is the particles' interaction, the MLP their own motion), and the
Macaron layer (half MLP, attention, half MLP) is a **Strang** splitting. The rate must offer its
terms (a [`Term`][contdepth.solvers.Term] with ``term_count``: a block with a
[`Terms`][contdepth.nn.Terms] template, or `integrate` given a sequence of fields); every other
scheme integrates their sum.

Orders (for non-commuting terms; measured in the tests on ``x' = (A + B) x``):

* ``lie_trotter`` (Euler sub-steps): order 1. The splitting itself is first order, and so is Euler.
* ``strang`` (Euler sub-steps, ``f_1/2, ..., f_m, ..., f_1/2``): **order 1**, not 2. Strang's
  symmetric composition cancels the splitting error at second order only when each sub-flow is
  exact to second order. With Euler sub-steps, for ``m = 2`` and a linear field the step is
  ``(I + hA/2)(I + hB)(I + hA/2) = I + h(A + B) + h^2 (A^2/4 + (AB + BA)/2) + O(h^3)`` against the
  exact ``I + h(A + B) + h^2 (A^2 + AB + BA + B^2)/2 + ...``: the ``h^2`` terms differ by
  ``-(A^2 + 2 B^2)/4``, so the local error is ``O(h^2)``, first order globally.
* ``strang_midpoint`` (explicit midpoint sub-steps): order 2, each sub-flow now second order.
"""

from __future__ import annotations

from fractions import Fraction

from ..common.validate import check_int
from .scheme import Carry, Rate, Scheme, StageTime, Tensor
from .term import Term

_HALF, _QUARTER = Fraction(1, 2), Fraction(1, 4)


def offers_terms(rate: Rate, count: int, scheme: str) -> Term:
    """``rate`` if it offers exactly ``count`` terms, else a one-line ``ValueError`` saying what it needs."""
    offered = rate.term_count if isinstance(rate, Term) else 0
    if offered != count:
        raise ValueError(
            f"scheme: {scheme!r} advances a field of {count} terms one term at a time, and this rate offers "
            f"{offered or 'none'}; give integrate a sequence of {count} fields, use a block whose template is "
            "cd.nn.Terms(...) with as many terms, or use another scheme (which integrates the sum)"
        )
    return rate  # type: ignore[return-value]


class Splitting(Scheme):
    """A splitting of a field of ``terms`` terms: ``sequence`` lists each sub-step as ``(term, fraction of h)``.

    ``sub_step`` is the method of each sub-step: ``"euler"`` (one evaluation at its start) or
    ``"midpoint"`` (two: its start, then its middle). Sub-step ``k`` starts where the previous
    ones of the same term left the time: a term's sub-steps cover the step once, in order.
    """

    splittable = True
    term_needs = frozenset({"term"})

    def __init__(self, name: str, sequence: tuple[tuple[int, Fraction], ...], terms: int, *, sub_step: str,
                 order: int, reference: str) -> None:
        self.name, self.sequence, self.terms, self.sub_step = name, sequence, check_int(terms, "terms", low=1), sub_step
        self.order, self.reference = order, reference
        if sub_step not in ("euler", "midpoint"):
            raise ValueError(f"sub_step: must be euler or midpoint, got {sub_step!r}")
        starts: dict[int, Fraction] = {}
        offsets = []
        for term, fraction in sequence:
            start = starts.get(term, Fraction(0))
            offsets.append(start)
            if sub_step == "midpoint":
                offsets.append(start + fraction / 2)
            starts[term] = start + fraction
        if any(total != 1 for total in starts.values()) or set(starts) != set(range(terms)):
            raise ValueError(f"sequence: every one of the {terms} terms must be advanced by exactly one step in total")
        self._offsets = tuple(offsets)

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        return (self._offsets,) * n_steps

    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        term = offers_terms(rate, self.terms, self.name)
        x = carry[0]
        k = 0
        for i, fraction in self.sequence:
            sub = h * float(fraction)
            if self.sub_step == "euler":
                x = x + sub * term.term(stages[k], x, i)
                k += 1
            else:  # explicit midpoint: x + sub f(t + sub/2, x + sub/2 f(t, x))
                half = x + (sub / 2) * term.term(stages[k], x, i)
                x = x + sub * term.term(stages[k + 1], half, i)
                k += 2
        return (x,)

    def __repr__(self) -> str:
        return f"Splitting({self.name!r}, terms={self.terms}, order={self.order})"


def lie_trotter(terms: int = 2, name: str = "lie_trotter") -> Splitting:
    """``f_1, f_2, ..., f_m``, each a full Euler step at ``t_n``: the transformer layer (order 1)."""
    return Splitting(name, tuple((i, Fraction(1)) for i in range(terms)), terms, sub_step="euler", order=1,
                     reference="Trotter (1959); Lu et al. (2019), arXiv 1906.02762 (the transformer layer)")


def _strang(terms: int) -> tuple[tuple[int, Fraction], ...]:
    first = tuple((i, _HALF) for i in range(terms - 1))
    return first + ((terms - 1, Fraction(1)),) + tuple(reversed(first))


def strang(terms: int = 2, name: str = "strang") -> Splitting:
    """``f_1/2, ..., f_m, ..., f_1/2`` with Euler sub-steps: Macaron's layer; order 1 (see the module docstring)."""
    return Splitting(name, _strang(terms), terms, sub_step="euler", order=1,
                     reference="Strang (1968); Lu et al. (2019), Macaron Net")


def strang_midpoint(terms: int = 2, name: str = "strang_midpoint") -> Splitting:
    """Strang's sequence with explicit-midpoint sub-steps: order 2."""
    return Splitting(name, _strang(terms), terms, sub_step="midpoint", order=2, reference="Strang (1968)")


__all__ = ["Splitting", "lie_trotter", "offers_terms", "strang", "strang_midpoint"]

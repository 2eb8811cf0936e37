"""RevNet's coupling as a partitioned scheme on a state split in two halves (Lu et al. 2018, Table 1).

RevNet (Gomez et al. 2017) splits the activations in two halves ``(X, Y)`` and computes

    X+ = X + F(Y),    Y+ = Y + G(X+)

Lu, Zhong, Li & Dong read it as forward Euler, taken one half after the other, for the
coupled system ``dX/dt = F(t, Y)``, ``dY/dt = G(t, X)`` (for Hamiltonian systems this is
the symplectic Euler method). With ``F = h f_X(t_n, .)`` and ``G = h f_Y(t_n, .)``:

    X_{n+1} = X_n + h f_X(t_n, [X_n, Y_n])
    Y_{n+1} = Y_n + h f_Y(t_n, [X_{n+1}, Y_n])

Each step is exactly invertible when ``f_X`` reads only ``Y`` and ``f_Y`` only ``X``:
``Y_n = Y_{n+1} - h f_Y(X_{n+1})`` and then ``X_n = X_{n+1} - h f_X(Y_n)``, which is what
lets RevNet recompute activations instead of storing them ([`RevNetCoupling.step_back`][contdepth.solvers.RevNetCoupling.step_back]).

The rate contract: ``rate(stage, z)`` on the whole state returns the whole rate
``[f_X, f_Y]`` (so every other scheme integrates the same coupled equation). A rate may
offer halves (a [`Term`][contdepth.solvers.Term] with ``part_count == 2``): ``rate.part(stage, half, i)``
is the rate of half ``i`` (0: ``X``, 1: ``Y``) from the *other* half alone; the scheme then
evaluates only what the step uses, which halves the cost. A
[`ContinuousBlock`][contdepth.nn.ContinuousBlock] whose template is a [`Coupling`][contdepth.nn.Coupling] offers
them (``rate.part_dim`` is the dimension its template splits); `integrate` wraps a plain
``f(t, z)`` and so always uses the whole rate.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from .scheme import Carry, Rate, Scheme, StageTime, Tensor
from .term import Term


def offers_halves(rate: Rate) -> bool:
    """Whether ``rate`` evaluates each half's rate from the other half alone (a `Term` with two parts)."""
    return isinstance(rate, Term) and rate.part_count == 2

_OFFSETS = (Fraction(0), Fraction(0))


def split_halves(z: Tensor, dim: int, what: str = "state") -> tuple[Tensor, Tensor]:
    """``(X, Y)``: the two halves of ``z`` along ``dim`` (its size there must be even)."""
    if z.dim() <= dim or z.shape[dim] % 2:
        raise ValueError(
            f"{what}: a partitioned scheme splits the state in two halves along dimension {dim}; "
            f"shape {tuple(z.shape)} has no even size there"
        )
    x, y = z.chunk(2, dim=dim)
    return x, y


class RevNetCoupling(Scheme):
    """RevNet's coupling: ``X+ = X + h f_X(t_n, Y)``, ``Y+ = Y + h f_Y(t_n, X+)``, on halves along ``dim``.

    Two stages per step, both at ``t_n``, each evaluating one half's rate (order 1).
    ``dim``: the dimension split in halves; ``None`` (the registered ``revnet``) splits
    dimension 1 of a batched state (channels of ``(batch, channels, ...)``, features of
    ``(nodes, features)``) and a one-dimensional state as a whole.
    """

    order = 1
    splittable = True
    reversible = True
    term_needs = frozenset({"part"})

    def __init__(self, dim: int | None = None, name: str = "revnet") -> None:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 0):
            raise ValueError(f"dim: the dimension split in halves must be a non-negative integer, got {dim!r}")
        self.dim = dim
        self.name = name
        self.reference = "Gomez, Ren, Urtasun & Grosse (2017), RevNet; Lu et al. (2018), Table 1"

    def stage_offsets(self, n_steps: int) -> tuple[tuple[Fraction, ...], ...]:
        return (_OFFSETS,) * n_steps

    def split_dim(self, z: Tensor, rate: Rate | None = None) -> int:
        """The dimension of ``z`` split in halves: the scheme's ``dim``, else the one the rate's halves split, else the default.

        A rate whose ``part`` names its ``dim`` (a block with a [`Coupling`][contdepth.nn.Coupling]
        template) fixes the split; a scheme given another ``dim`` is refused rather than
        integrating halves the template does not have.
        """
        own = rate.part_dim if isinstance(rate, Term) else None
        if self.dim is not None and own is not None and own != self.dim:
            raise ValueError(f"dim: the scheme splits dimension {self.dim} but the rate's template splits dimension "
                             f"{own}; give both the same dimension")
        if self.dim is not None:
            return self.dim
        if own is not None:
            return own
        return 1 if z.dim() >= 2 else 0

    def _half_rate(self, rate: Rate, stage: StageTime, x: Tensor, y: Tensor, i: int, dim: int) -> Tensor:
        """The rate of half ``i`` at ``[x, y]``: from ``rate.part`` if offered, else half of the whole rate."""
        if offers_halves(rate):
            return rate.part(stage, y if i == 0 else x, i)
        return rate(stage, torch.cat((x, y), dim=dim)).chunk(2, dim=dim)[i]

    def step(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        dim = self.split_dim(carry[0], rate)
        x, y = split_halves(carry[0], dim)
        first, second = stages
        x = torch.add(x, self._half_rate(rate, first, x, y, 0, dim), alpha=h)
        y = torch.add(y, self._half_rate(rate, second, x, y, 1, dim), alpha=h)
        return (torch.cat((x, y), dim=dim),)

    def step_back(self, rate: Rate, carry: Carry, n: int, stages: tuple[StageTime, ...], h: float) -> Carry:
        """The carry before step ``n`` from the carry after it: ``step`` undone in reverse order.

        Exact (to round-off) when ``f_X`` reads only ``Y`` and ``f_Y`` only ``X``; the
        fallback through the whole rate then gives the same values, and for a rate that
        couples a half to itself the result is not the step's input.
        """
        dim = self.split_dim(carry[0], rate)
        x, y = split_halves(carry[0], dim)
        first, second = stages
        y = torch.add(y, self._half_rate(rate, second, x, y, 1, dim), alpha=-h)
        x = torch.add(x, self._half_rate(rate, first, x, y, 0, dim), alpha=-h)
        return (torch.cat((x, y), dim=dim),)

    def step_back_vjp(self, rate: Rate, carry: Carry, adjoint: Carry, n: int, stages: tuple[StageTime, ...],
                      h: float, params: tuple[Tensor, ...]) -> tuple[Carry, Carry, list]:
        """[`step_back`][contdepth.solvers.RevNetCoupling.step_back] and the step's vector-Jacobian product from the same two half-evaluations.

        RevNet's own backward pass (Gomez et al. 2017, Algorithm 1): rebuild ``Y`` with
        ``G(X+)``, then ``X`` with ``F(Y)``, each evaluated once with a graph.
        """
        from .reversible import add_grads, rebuild_then_recompute, vjp

        if not offers_halves(rate):  # the whole rate: each half's rate may read both halves
            return rebuild_then_recompute(self, rate, carry, adjoint, n, stages, h, params)
        dim = self.split_dim(carry[0], rate)
        x1, y1 = split_halves(carry[0], dim)
        ax1, ay1 = split_halves(adjoint[0], dim)
        first, second = stages
        x1_leaf = x1.detach().requires_grad_()
        with torch.enable_grad():
            g = self._half_rate(rate, second, x1_leaf, y1, 1, dim)
        y = torch.add(y1, g.detach(), alpha=-h)
        y_leaf = y.detach().requires_grad_()
        with torch.enable_grad():
            f = self._half_rate(rate, first, x1, y_leaf, 0, dim)
        x = torch.add(x1, f.detach(), alpha=-h)
        # y1 = y + h G(x1),  x1 = x + h F(y)
        back_g, grads = vjp(g, x1_leaf, params, ay1 * h)
        ax1_total = ax1 + back_g
        back_f, grads_f = vjp(f, y_leaf, params, ax1_total * h)
        return ((torch.cat((x, y), dim=dim),), (torch.cat((ax1_total, ay1 + back_f), dim=dim),),
                add_grads(grads, grads_f))

    def __repr__(self) -> str:
        return f"RevNetCoupling(dim={self.dim}, name={self.name!r})"

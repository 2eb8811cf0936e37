"""The concept pages' figures, drawn with contdepth itself (``draw_all()`` -> ``{file name: PNG bytes}``).

Each figure is computed, not drawn by hand: the trajectories are ``contdepth.integrate`` on a
known field, the depth functions are ``contdepth.basis`` bases refined and projected, and the
stage depths come from the schemes' own schedules.
"""

from __future__ import annotations

import io
from fractions import Fraction

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import contdepth as cd  # noqa: E402
from contdepth.basis import make_basis  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def ode_view() -> bytes:
    """dx/dt = -2 t x + sin(3 t): the exact flow against forward Euler (a ResNet) with 2, 4 and 8 units."""

    def field(t, x):
        return -2 * t * x + torch.sin(3 * torch.as_tensor(t, dtype=x.dtype))

    x0 = torch.tensor([1.0], dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    fine = cd.integrate(field, x0, scheme="rk4", n_steps=200, return_path=True)
    ax.plot([float(t) for t in fine.ts], fine.ys[:, 0].numpy(), color="black", label="exact flow (rk4, 200 steps)")
    for n, style in ((2, "o--"), (4, "s--"), (8, "^--")):
        path = cd.integrate(field, x0, scheme="euler", n_steps=n, return_path=True)
        ax.plot([float(t) for t in path.ts], path.ys[:, 0].numpy(), style, label=f"forward Euler, {n} steps = ResNet, {n} units")
    ax.set_xlabel("depth t")
    ax.set_ylabel("x(t)")
    ax.legend(fontsize=8)
    return _png(fig)


def refinement() -> bytes:
    """A 4-cell piecewise-constant theta(t), refined to 8 cells (the same function), projected onto 2."""
    torch.manual_seed(3)
    basis = make_basis("piecewise_constant", 4)
    coefficients = torch.randn(4, dtype=torch.float64)
    refined_basis, refined = basis.refined(), basis.refine(coefficients)
    projected = basis.project(coefficients, 2)
    small = basis.with_size(2)
    ts = [i / 400 for i in range(401)]

    def curve(b, c):
        return [float(b.evaluate(c, Fraction(t).limit_denominator(10_000), left=t == 1.0)) for t in ts]

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(ts, curve(basis, coefficients), color="black", lw=3, label="theta(t), 4 cells")
    ax.plot(ts, curve(refined_basis, refined), color="tab:orange", lw=1.2, ls="--", label="refined: 8 cells, the same function")
    ax.plot(ts, curve(small, projected), color="tab:blue", lw=1.5, label="projected: L2-best on 2 cells")
    ax.set_xlabel("depth t")
    ax.set_ylabel("one weight of theta(t)")
    ax.legend(fontsize=8)
    return _png(fig)


MANIFESTATIONS = (("euler", 2), ("euler", 4), ("rk4", 2), ("rk4", 4))


def manifestations_figure():
    """Where euler and rk4 with 2 and 4 steps read a piecewise-linear theta(t).

    Two panels on one depth axis: theta(t) with every depth some manifestation reads it at, and
    below it one row per manifestation with its stage depths, named on the left where a name has
    room (a label beside the last stage, at t = 1, sat on that stage's mark). Drawn 7.5 inches
    wide: the concept pages show it at about 700 px, so its text stays at about its set size.
    """
    basis = make_basis("piecewise_linear", 3)
    coefficients = torch.tensor([0.2, 1.0, 0.4], dtype=torch.float64)
    ts = [i / 200 for i in range(201)]
    fig, (top, rows) = plt.subplots(2, 1, figsize=(7.5, 4.8), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    top.plot(ts, [float(basis.evaluate(coefficients, Fraction(t).limit_denominator(1000))) for t in ts],
             color="black", label="theta(t), piecewise linear, 3 nodes")
    read: set[Fraction] = set()
    for row, (scheme, n) in enumerate(MANIFESTATIONS):
        points = sorted({exact for exact, _ in cd.get_scheme(scheme).schedule(n, 0.0, 1.0).points})
        read |= set(points)
        rows.axhline(row, color="0.85", lw=0.8, zorder=0)
        rows.scatter([float(p) for p in points], [row] * len(points), marker="|", s=220, linewidths=2,
                     color="tab:blue" if scheme == "euler" else "tab:orange")
    depths = sorted(read)
    top.scatter([float(p) for p in depths], [float(basis.evaluate(coefficients, p)) for p in depths], s=28, zorder=3,
                color="tab:red", label="theta at a stage depth of some manifestation")
    top.set_ylabel("theta(t)")
    top.set_ylim(0, 1.15)
    top.legend(fontsize=9, loc="lower center")
    rows.set_yticks(range(len(MANIFESTATIONS)), [f"{scheme}, {n} steps" for scheme, n in MANIFESTATIONS])
    rows.set_ylim(len(MANIFESTATIONS) - 0.5, -0.5)
    rows.set_title("stage depths of each manifestation", fontsize=10, loc="left")
    rows.set_xlabel("depth t")
    rows.set_xlim(-0.04, 1.04)
    fig.tight_layout()
    return fig


def manifestations() -> bytes:
    return _png(manifestations_figure())


def draw_all() -> dict[str, bytes]:
    return {"ode_view.png": ode_view(), "refinement.png": refinement(), "manifestations.png": manifestations()}

"""``plots/loss_vs_flops.png``: a language-model suite's validation loss against cumulative training FLOPs.

Issue 30 asks for "the loss-against-FLOPs plot per method (mean and band over seeds)". One line per
text arm (`contdepth.experiment.losses.is_text`; image arms are not drawn, and a suite without a text
arm gets no such plot, so an image report is what it was). The points are the arm's evaluations,
each seed's `val_loss_curve` (`contdepth.experiment.flops_to_target`: training FLOPs summed through
the row, the row's ``val_loss`` in nats per byte). Seeds are aligned by row, as the per-epoch plot
aligns them by epoch: the first ``k`` rows, ``k`` the shortest seed's count; a row is drawn where
every seed has a loss and a positive FLOP sum (the x axis is logarithmic). The line is the mean
over seeds and the band runs from the lowest to the highest seed (min..max: with two or three seeds
a standard deviation says little).

An arm that grows trains more FLOPs per row as it goes, at the same rows on every seed; its seeds
should agree on FLOPs row by row. Where they do not, the mean and band are drawn at the mean of the
seeds' FLOPs and each seed's own curve is drawn thin at its own FLOPs, and the legend says so.
"""

from __future__ import annotations

from typing import Any

from ..analysis.plots import figure_png
from .losses import is_text

LOSS_PLOT_FILE = "loss_vs_flops.png"


def arm_curve(seeds: list[dict]) -> dict[str, Any] | None:
    """The drawn numbers of one arm from `collect`'s entries; ``None`` where no row can be drawn.

    ``flops`` (per drawn row: the seeds' common FLOPs, or their mean where they differ), ``mean``,
    ``low``, ``high`` (losses over seeds), ``n`` seeds, ``shared`` (every seed has the same FLOPs at every
    drawn row) and ``per_seed`` (each seed's own ``(flops, loss)`` points at the drawn rows).
    """
    curves = [v.get("val_loss_curve") or [] for v in seeds]
    if not curves:
        return None
    length = min(len(c) for c in curves)
    rows = [i for i in range(length)
            if all(c[i][0] is not None and c[i][0] > 0 and c[i][1] is not None for c in curves)]
    if not rows:
        return None
    xs = [[c[i][0] for c in curves] for i in rows]
    ys = [[c[i][1] for c in curves] for i in rows]
    return {"flops": [sum(x) / len(x) if len(set(x)) > 1 else x[0] for x in xs],
            "mean": [sum(y) / len(y) for y in ys], "low": [min(y) for y in ys], "high": [max(y) for y in ys],
            "n": len(curves), "shared": all(len(set(x)) == 1 for x in xs),
            "per_seed": [[(c[i][0], c[i][1]) for i in rows] for c in curves]}


def text_arms(runs: dict[str, dict[int, dict]]) -> dict[str, list[dict]]:
    """The arms of `collect`'s table whose finished runs are a language model's, with their entries."""
    return {arm: list(seeds.values()) for arm, seeds in runs.items() if seeds and is_text(list(seeds.values()))}


def loss_plot_files(arms: dict[str, dict]) -> tuple[str, ...]:
    """The file names this module adds to the report's plots, from the summary's arms (``text: true``)."""
    return (LOSS_PLOT_FILE,) if any(a.get("text") for a in arms.values()) else ()


def loss_plots(runs: dict[str, dict[int, dict]]) -> dict[str, bytes]:
    """``{LOSS_PLOT_FILE: PNG bytes}`` where the suite has a text arm, else ``{}`` (matplotlib needed for the first)."""
    arms = text_arms(runs)
    if not arms:
        return {}
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    drawn = False
    for i, name in enumerate(runs):  # colours by the arm's place in the suite, as in the other plots
        curve = arm_curve(arms[name]) if name in arms else None
        if curve is None:
            continue
        own = "" if curve["shared"] else "; FLOPs differ across seeds: thin lines at each seed's own"
        ax.plot(curve["flops"], curve["mean"], color=f"C{i}", marker=".", label=f"{name} (n={curve['n']}{own})")
        ax.fill_between(curve["flops"], curve["low"], curve["high"], color=f"C{i}", alpha=0.2)
        if not curve["shared"]:
            for points in curve["per_seed"]:
                ax.plot([p[0] for p in points], [p[1] for p in points], color=f"C{i}", linewidth=0.7, alpha=0.6)
        drawn = True
    if drawn:
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no evaluation with a validation loss and training FLOPs", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("cumulative training FLOPs")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("validation loss: mean over seeds, band min..max")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return {LOSS_PLOT_FILE: figure_png(fig)}


__all__ = ["LOSS_PLOT_FILE", "arm_curve", "loss_plot_files", "loss_plots", "text_arms"]

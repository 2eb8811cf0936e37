"""PNG plots of a manifestation report (matplotlib, the optional ``plot`` extra).

matplotlib is imported here, inside the functions, and only its object-oriented
``Figure`` API is used: no pyplot, no global backend state, no display needed.
"""

from __future__ import annotations

import io
import math
from typing import Any

# The report plotted is a contdepth.analysis.ManifestationReport; it is typed loosely here so
# that the report module, which renders its own plots, is the only one importing the other.
ManifestationReport = Any


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("plots need matplotlib: pip install 'contdepth[plot]' (or pass --no-plots)") from exc
    return Figure


def figure_png(fig) -> bytes:
    """A matplotlib ``Figure`` as PNG bytes (110 dpi, tight box): one look for every plot contdepth writes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _steps_axis(ax, steps) -> None:
    """Log-2 axis labelled with the analysed step counts themselves."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(steps), [str(n) for n in steps])
    ax.minorticks_off()


def plot_errors(report: ManifestationReport) -> bytes:
    """Log-log relative error against steps: one panel per block and one for the logits.

    Each scheme is a line; a dashed line of slope ``-p`` (``p`` the scheme's classical
    order) starts at the first point of the fit, so a model converging at the scheme's
    order runs parallel to it. Points left out of the fit (grids that straddle a jump of
    a piecewise-constant ``theta``) are drawn hollow.
    """
    Figure = _figure_class()
    panels = [*report.blocks, "logits"]
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.6 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = {s: f"C{i}" for i, s in enumerate(report.schemes)}
    for index, (ax, panel) in enumerate(zip(axes, panels)):
        lowest = math.inf
        for scheme in report.schemes:
            points = [(r.n_steps, r.logits_error if panel == "logits" else r.block_errors[index])
                      for r in report.rows if r.scheme == scheme]
            points = [(n, e) for n, e in points if math.isfinite(e) and e > 0]
            if not points:
                continue
            ns, es = zip(*points)
            order = report.order(scheme)
            fitted = order.logits_order if panel == "logits" else order.block_orders[index]
            label = f"{scheme} (fit {fitted:.2f})" if math.isfinite(fitted) else scheme
            ax.plot(ns, es, "-", color=colours[scheme], label=label)
            used = [(n, e) for n, e in points if n in report.fit_steps]
            skipped = [(n, e) for n, e in points if n not in report.fit_steps]
            for group, face in ((used, colours[scheme]), (skipped, "white")):
                if group:
                    ax.plot(*zip(*group), "o", color=colours[scheme], markerfacecolor=face)
            if used:  # the scheme's own slope, from the first point of the fit
                n0, e0 = used[0]
                slope = [(n, e0 * (n / n0) ** (-order.expected)) for n, _ in used]
                ax.plot(*zip(*slope), "--", color=colours[scheme], alpha=0.45, linewidth=1)
            lowest = min(lowest, *es)
        if lowest < 100 * report.error_floor:  # only where round-off is in sight
            ax.axhline(report.error_floor, color="grey", linestyle=":", linewidth=1)
        _steps_axis(ax, report.steps)
        ax.set_yscale("log")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("steps per block")
        ax.set_ylabel("relative error")
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{report.model}: error against {report.reference} "
                 "(dashed: slope -order of the scheme; hollow: not fitted)",
                 fontsize=9)
    return figure_png(fig)


def plot_accuracy(report: ManifestationReport) -> bytes:
    """Test accuracy against steps, one line per scheme; the reference as a horizontal line."""
    Figure = _figure_class()
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, scheme in enumerate(report.schemes):
        rows = [r for r in report.rows if r.scheme == scheme]
        ax.plot([r.n_steps for r in rows], [100 * r.accuracy for r in rows], "o-", color=f"C{i}", label=scheme)
    if report.trained and report.trained[0] in report.schemes and report.trained[1] in report.steps:
        trained = report.row(*report.trained)
        ax.plot([trained.n_steps], [100 * trained.accuracy], "k*", markersize=12, label="trained")
    ax.axhline(100 * report.reference_accuracy, color="grey", linestyle="--", linewidth=1,
               label=f"reference ({report.reference})")
    _steps_axis(ax, report.steps)
    ax.set_xlabel("steps per block")
    ax.set_ylabel(f"test accuracy (%), {report.examples} examples")
    ax.set_title(f"{report.model}: accuracy by manifestation (spread {100 * report.invariance['spread']:.2f} points)",
                 fontsize=9)
    ax.legend(fontsize=7)
    return figure_png(fig)


def check_matplotlib() -> None:
    """Fail early (before any work) when plots are asked for and matplotlib is missing."""
    _figure_class()

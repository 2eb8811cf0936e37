"""The result of a manifestation analysis: a terminal table, CSV and JSON (read back too).

JSON holds everything (non-finite numbers as the strings ``"NaN"``, ``"Infinity"``,
``"-Infinity"`` so the file stays standard JSON); ``manifestations.csv`` has one row per
``(scheme, n_steps)`` and ``orders.csv`` one row per scheme. Floats are written with
``repr``, so reading a file back gives the same numbers bit for bit.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..common.files import atomic_write_bytes, atomic_write_text
from ..common.json_values import to_json_value
from .plots import plot_accuracy, plot_errors

FORMAT = "contdepth-manifestation-report"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ManifestationRow:
    """One manifestation: accuracy, mean loss and relative errors against the reference."""

    scheme: str
    n_steps: int
    units: int  # rate evaluations per block
    accuracy: float
    loss: float
    logits_error: float
    block_errors: tuple[float, ...]
    aligned: bool  # the grid steps onto every basis breakpoint


@dataclass(frozen=True)
class OrderRow:
    """The fitted convergence order of one scheme, per block and for the logits."""

    scheme: str
    expected: int  # the scheme's classical order
    block_orders: tuple[float, ...]
    logits_order: float


def _decode_float(value: Any) -> float:
    return float(value)  # float("NaN"), float("Infinity") and numbers alike


def _fmt_error(value: float) -> str:
    return f"{value:.2e}" if math.isfinite(value) else str(value)


def _fmt_order(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "-"


@dataclass(frozen=True)
class ManifestationReport:
    """What [`analyze_manifestations`][contdepth.analysis.analyze_manifestations] measured.

    ``rows`` in grid order (scheme-major), ``orders`` one per scheme, fitted over
    ``fit_steps``. ``trained`` is the model's own ``(scheme, n_steps)`` when all its
    blocks share one; ``reading`` says how a model without ContinuousBlocks was read.
    """

    model: str
    reading: str | None
    blocks: tuple[str, ...]
    basis: tuple[str, ...]
    trained: tuple[str, int] | None
    reference: str
    reference_accuracy: float
    reference_loss: float
    dtype: str
    split: str
    examples: int
    schemes: tuple[str, ...]
    steps: tuple[int, ...]
    fit_steps: tuple[int, ...]
    error_floor: float
    rows: tuple[ManifestationRow, ...]
    orders: tuple[OrderRow, ...]
    seconds: float

    # --- derived ----------------------------------------------------------------------------------
    def row(self, scheme: str, n_steps: int) -> ManifestationRow:
        for r in self.rows:
            if r.scheme == scheme and r.n_steps == n_steps:
                return r
        raise KeyError(f"({scheme!r}, {n_steps}) is not in this report")

    def order(self, scheme: str) -> OrderRow:
        for o in self.orders:
            if o.scheme == scheme:
                return o
        raise KeyError(f"{scheme!r} is not in this report")

    @property
    def invariance(self) -> dict[str, Any]:
        """Spread of test accuracy over the manifestations listed (min, max, max - min).

        ``aligned_min``/``aligned_max``/``aligned_spread`` restrict it to the grids that step
        onto every basis breakpoint (``None`` when there are none): a piecewise-constant
        model cannot be expected to keep its accuracy on grids coarser than its cells.
        """
        def key(r: ManifestationRow) -> tuple:
            return (r.accuracy, r.scheme, r.n_steps)

        worst, best = min(self.rows, key=key), max(self.rows, key=key)
        fitted = [r.accuracy for r in self.rows if r.aligned]
        return {"manifestations": len(self.rows), "min": worst.accuracy, "max": best.accuracy,
                "spread": best.accuracy - worst.accuracy, "worst": [worst.scheme, worst.n_steps],
                "best": [best.scheme, best.n_steps], "aligned_manifestations": len(fitted),
                "aligned_min": min(fitted) if fitted else None, "aligned_max": max(fitted) if fitted else None,
                "aligned_spread": max(fitted) - min(fitted) if fitted else None}

    # --- text ---------------------------------------------------------------------------------------
    def format_table(self) -> str:
        """The terminal report: manifestations, fitted orders, invariance."""
        width = max(8, *(len(s) for s in self.schemes))
        cols = [*self.blocks, "logits"]
        cw = max(10, *(len(c) + 1 for c in cols))
        head = (f"{self.model}" + (f" ({self.reading})" if self.reading else "")
                + f": {self.examples} {self.split} examples, {self.dtype}; blocks {', '.join(self.basis)}")
        lines = [head, f"reference: {self.reference}: accuracy {100 * self.reference_accuracy:.2f}%, "
                       f"loss {self.reference_loss:.4f}",
                 "relative error ||y - y_ref|| / ||y_ref|| of each block's output and of the logits"
                 + ("   (* = trained manifestation)" if self.trained else "")]
        lines.append(f"{'scheme':<{width}} {'steps':>5} {'units':>5} {'acc %':>7} {'loss':>7}"
                     + "".join(f"{c:>{cw}}" for c in cols))
        for r in self.rows:
            mark = "*" if self.trained == (r.scheme, r.n_steps) else " "
            errors = [*r.block_errors, r.logits_error]
            lines.append(f"{r.scheme:<{width}} {r.n_steps:>5} {r.units:>5} {100 * r.accuracy:>6.2f}{mark} {r.loss:>7.4f}"
                         + "".join(f"{_fmt_error(e):>{cw}}" for e in errors))
        lines.append("")
        lines.append(f"fitted convergence order (least squares over steps {' '.join(map(str, self.fit_steps))}; "
                     f"errors below {self.error_floor:.1e} left out)")
        lines.append(f"{'scheme':<{width}} {'expected':>8}" + "".join(f"{c:>{cw}}" for c in cols))
        for o in self.orders:
            lines.append(f"{o.scheme:<{width}} {o.expected:>8}"
                         + "".join(f"{_fmt_order(v):>{cw}}" for v in [*o.block_orders, o.logits_order]))
        inv = self.invariance
        lines.append("")
        lines.append(f"invariance: test accuracy {100 * inv['min']:.2f}% .. {100 * inv['max']:.2f}% over "
                     f"{inv['manifestations']} manifestations, spread {100 * inv['spread']:.2f} points "
                     f"(lowest {inv['worst'][0]}/{inv['worst'][1]}, highest {inv['best'][0]}/{inv['best'][1]})")
        if 0 < inv["aligned_manifestations"] < inv["manifestations"]:
            lines.append(f"            on the {inv['aligned_manifestations']} grids that step onto every basis "
                         f"breakpoint: {100 * inv['aligned_min']:.2f}% .. {100 * inv['aligned_max']:.2f}%, "
                         f"spread {100 * inv['aligned_spread']:.2f} points")
        return "\n".join(lines)

    # --- files --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["trained"] = list(self.trained) if self.trained else None
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **data, "invariance": self.invariance}

    def to_json(self) -> str:
        return json.dumps(to_json_value(self.to_dict(), "report", strict=False, non_finite="text"), indent=1,
                          allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "ManifestationReport":
        """The report saved by `to_json` (``ValueError`` for anything else)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"report: not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"report: not a {FORMAT} file")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"report: written by a newer contdepth (format {data['format_version']})")
        try:
            rows = tuple(ManifestationRow(
                scheme=r["scheme"], n_steps=int(r["n_steps"]), units=int(r["units"]),
                accuracy=_decode_float(r["accuracy"]), loss=_decode_float(r["loss"]),
                logits_error=_decode_float(r["logits_error"]),
                block_errors=tuple(_decode_float(e) for e in r["block_errors"]), aligned=bool(r["aligned"]),
            ) for r in data["rows"])
            orders = tuple(OrderRow(
                scheme=o["scheme"], expected=int(o["expected"]),
                block_orders=tuple(_decode_float(v) for v in o["block_orders"]),
                logits_order=_decode_float(o["logits_order"]),
            ) for o in data["orders"])
            values = {f.name: data[f.name] for f in fields(cls) if f.name not in ("rows", "orders")}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"report: malformed ({exc!r})") from exc
        for name in ("blocks", "basis", "schemes"):
            values[name] = tuple(values[name])
        for name in ("steps", "fit_steps"):
            values[name] = tuple(int(n) for n in values[name])
        for name in ("reference_accuracy", "reference_loss", "error_floor", "seconds"):
            values[name] = _decode_float(values[name])
        values["trained"] = (values["trained"][0], int(values["trained"][1])) if values["trained"] else None
        return cls(**values, rows=rows, orders=orders)

    def manifestations_csv(self) -> str:
        """One row per manifestation: scheme, steps, units, accuracy, loss, aligned, errors."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["scheme", "n_steps", "units", "accuracy", "loss", "aligned", "logits_error",
                         *(f"error_{b}" for b in self.blocks)])
        for r in self.rows:
            writer.writerow([r.scheme, r.n_steps, r.units, repr(r.accuracy), repr(r.loss), int(r.aligned),
                             repr(r.logits_error), *(repr(e) for e in r.block_errors)])
        return buffer.getvalue()

    def orders_csv(self) -> str:
        """One row per scheme: its classical order and the fitted orders per block and logits."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["scheme", "expected", "logits_order", *(f"order_{b}" for b in self.blocks)])
        for o in self.orders:
            writer.writerow([o.scheme, o.expected, repr(o.logits_order), *(repr(v) for v in o.block_orders)])
        return buffer.getvalue()

    def write(self, out: str | Path, *, overwrite: bool = False, plots: bool = True) -> list[Path]:
        """Write ``analysis.json``, ``manifestations.csv``, ``orders.csv`` (and the PNG plots) into ``out``.

        An existing file of these names is never replaced unless ``overwrite``; the check
        happens before anything is written. Returns the paths written.
        """

        out = Path(out)
        names = list(REPORT_FILES) + (list(PLOT_FILES) if plots else [])
        check_output(out, names, overwrite=overwrite)
        figures = render_plots(self) if plots else {}
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in (("analysis.json", self.to_json()), ("manifestations.csv", self.manifestations_csv()),
                           ("orders.csv", self.orders_csv())):
            atomic_write_text(out / name, text)
            written.append(out / name)
        for name, png in figures.items():
            atomic_write_bytes(out / name, png)
            written.append(out / name)
        return written


REPORT_FILES = ("analysis.json", "manifestations.csv", "orders.csv")
PLOT_FILES = ("error_vs_steps.png", "accuracy_vs_steps.png")


def check_output(out: str | Path, names: list[str] | tuple[str, ...], *, overwrite: bool) -> None:
    """Refuse to write into ``out`` if any of ``names`` exists there (unless ``overwrite``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a folder")
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise ValueError(f"out: {out / existing[0]} already exists; pass overwrite=True (--overwrite) "
                              "to replace the analysis files there")


def render_plots(report: ManifestationReport) -> dict[str, bytes]:
    return {"error_vs_steps.png": plot_errors(report), "accuracy_vs_steps.png": plot_accuracy(report)}

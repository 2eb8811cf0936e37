"""Language-model runs in the report: losses in nats and bits per byte, throughput, comparisons in loss.

A text run (model ``gpt`` on data ``text``) records per epoch ``val_loss`` and ``test_loss`` (the
mean next-byte cross-entropy in nats per byte; lower is better), the same in bits per byte
(``val_bits_per_byte``, ``test_bits_per_byte``: ``/ ln 2``), next-byte accuracy (secondary) and
``tokens_per_second`` of the training pass. Image runs record losses too (nats per image) but
no bits per byte: the bits mark an arm as a text arm here, and only text arms get the fields
and tables below, so an image report is what it was.

Per text arm (`add_text_fields`): the final epoch's losses and bits per byte with their mean,
std and 95 % t-interval over seeds, the training throughput, and, where the ``evaluate`` step
recorded losses, the change of loss from the training graph to the ODE limit
(`contdepth.experiment.readouts.loss_change_to_ode`). Words follow numbers
(`contdepth.experiment.readouts.finding`): "lower" or "higher" only where the whole interval lies
on one side of 0.
"""

from __future__ import annotations

import math
from typing import Any

from .readouts import finding, loss_change_to_ode
from .stats import estimate

#: The final-epoch losses of a text arm, summarised per arm (``KEY_mean``, ``_std``, ``_ci95``, ``_n``).
TEXT_KEYS = ("val_loss", "test_loss", "val_bits_per_byte", "test_bits_per_byte")
TEXT_UNITS = {"loss": "nats per byte (mean next-byte cross-entropy, final epoch; lower is better)",
              "bits_per_byte": "loss / ln 2", "loss_diff": "nats per byte, arm - baseline, paired by seed",
              "tokens_per_second": "training tokens (bytes) per second of the training pass, over the run's epochs"}


def _number(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else math.nan


def _throughput(history: list[dict]) -> float | None:
    """Tokens per second of the run: its tokens over its training seconds, from the epochs that record both."""
    rows = [(_number(r.get("tokens_per_second")), _number(r.get("train_time"))) for r in history]
    rows = [(rate, seconds) for rate, seconds in rows if math.isfinite(rate) and math.isfinite(seconds) and seconds > 0]
    seconds = math.fsum(s for _, s in rows)
    return math.fsum(rate * s for rate, s in rows) / seconds if rows else None


def run_losses(history: list[dict]) -> dict[str, Any]:
    """A finished run's final ``val_loss`` and ``test_loss`` (NaN where not recorded) for `collect`; a text run's
    bits per byte and ``tokens_per_second`` (`_throughput`) too."""
    last = history[-1]
    out: dict[str, Any] = {key: _number(last.get(key)) for key in ("val_loss", "test_loss")}
    if "val_bits_per_byte" in last or "test_bits_per_byte" in last:
        out.update({key: _number(last.get(key)) for key in ("val_bits_per_byte", "test_bits_per_byte")})
        out["tokens_per_second"] = _throughput(history)
    return out


def is_text(values: list[dict]) -> bool:
    """Whether these runs (`collect`'s entries) are a language model's: they record bits per byte."""
    return any("test_bits_per_byte" in v or "val_bits_per_byte" in v for v in values)


def _finite(values: list) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def add_text_fields(entry: dict, seeds: dict[int, dict]) -> None:
    """A text arm's summary fields added to ``entry`` (the arm's summary); nothing for an image arm.

    ``KEY_mean``, ``_std``, ``_ci95``, ``_n`` of `TEXT_KEYS`; ``tokens_per_second_mean`` and ``_n``;
    each seed's values in ``per_seed``; ``invariance.loss_change_to_ode`` where the steps recorded losses.
    """
    values = list(seeds.values())
    if not is_text(values):
        return
    entry["text"] = True
    for key in TEXT_KEYS:
        e = estimate(_finite([v.get(key) for v in values]))
        entry.update({f"{key}_mean": e.mean, f"{key}_std": e.std, f"{key}_ci95": [e.low, e.high], f"{key}_n": e.n})
    e = estimate(_finite([v.get("tokens_per_second") for v in values]))
    entry["tokens_per_second_mean"], entry["tokens_per_second_n"] = e.mean, e.n
    for seed, v in seeds.items():
        entry["per_seed"][str(seed)].update({k: v.get(k) for k in (*TEXT_KEYS, "tokens_per_second")})
    grids = {s: v["steps"]["manifestations"] for s, v in seeds.items() if "manifestations" in v.get("steps", {})}
    change = loss_change_to_ode(grids)
    if change and "invariance" in entry:
        entry["invariance"]["loss_change_to_ode"] = change


# --- writing ------------------------------------------------------------------------------------------
def _ok(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mean_interval(arm: dict, key: str) -> str:
    mean, (low, high), n = arm.get(f"{key}_mean"), arm.get(f"{key}_ci95") or [None, None], arm.get(f"{key}_n", 0)
    if not _ok(mean):
        return "-"
    text = f"{mean:.4f}" + (f" [{low:.4f}, {high:.4f}]" if _ok(low) else "")
    return text + (f" (n={n})" if n != arm["n"] else "")


def text_arm_lines(arms: dict[str, dict]) -> list[str]:
    """The report's table of the text arms' losses (nothing where no arm is a text arm)."""
    text = {name: a for name, a in arms.items() if a.get("text")}
    if not text:
        return []
    lines = ["", "### Language-model arms: loss", "",
             "Final epoch's mean next-byte cross-entropy, nats per byte and bits per byte (lower is better): mean "
             "over seeds with its 95 % t-interval. The accuracies above are next-byte accuracies (secondary). "
             "Tokens per second: the training pass's bytes per second over each run's epochs, mean over seeds.", "",
             "| arm | n | validation loss (nats/byte) | test loss (nats/byte) | validation bits/byte | test bits/byte "
             "| tokens/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, a in text.items():
        rate, n = a.get("tokens_per_second_mean"), a.get("tokens_per_second_n", 0)
        tokens = f"{rate:,.0f}" + (f" (n={n})" if n != a["n"] else "") if _ok(rate) else "n/a"
        lines.append(f"| {name} | {a['n']} | " + " | ".join(_mean_interval(a, k) for k in TEXT_KEYS) + f" | {tokens} |")
    return lines


def _difference(mean: Any, ci95: Any, n: Any) -> str:
    if not _ok(mean):
        return "-"
    interval = f" [{ci95[0]:+.4f}, {ci95[1]:+.4f}]" if ci95 and _ok(ci95[0]) else ""
    return f"{mean:+.4f}{interval}, n={n}"


def _target_words(c: dict) -> str:
    """Each loss target with its verdict and the number it was decided on."""
    mean, (low, high) = c.get("loss_diff_mean"), c.get("loss_diff_ci95") or [None, None]
    words = []
    for key, met in (c.get("loss_targets_met") or {}).items():
        value = c["target"][key]
        if met is None:
            words.append(f"{key} {value:g}: undecided")
        elif key == "loss_abs_diff_max":
            words.append(f"{key} {value:g}: " + (f"yes (the interval [{low:+.4f}, {high:+.4f}] lies within ±{value:g})"
                                                 if met else f"**no** (the interval [{low:+.4f}, {high:+.4f}] reaches "
                                                 f"beyond ±{value:g}: equivalence not shown)"))
        else:
            what, number = ("mean", mean) if key == "loss_diff_max" else ("upper end", high)
            words.append(f"{key} {value:g}: " + (f"yes ({what} {number:+.4f} <= {value:g})" if met
                                                 else f"**no** ({what} {number:+.4f} > {value:g})"))
    return "; ".join(words) or "-"


def loss_comparison_lines(comparisons: list[dict]) -> list[str]:
    """The report's table of the comparisons with ``metric: loss`` (nothing where there are none)."""
    losses = [c for c in comparisons if c.get("metric") == "loss"]
    if not losses:
        return []
    lines = ["", "### Comparisons in loss", "",
             "Arm - baseline of the final epoch's loss per seed (nats; per byte for text), mean with its 95 % "
             "t-interval: negative, the arm's loss is lower. \"Lower\" or \"higher\" only where the whole interval "
             "lies on one side of 0; an interval that holds 0 is no difference found, not equality. Targets are "
             "decided on test (as accuracy targets are); validation beside it.", "",
             "| arm vs baseline | test loss diff | validation loss diff | reading (test) | targets |",
             "|---|---:|---:|---|---|"]
    for c in losses:
        reading = finding(c.get("loss_diff_ci95"), c.get("loss_diff_n", 0), "arm lower", "arm higher")
        lines.append(f"| {c.get('label') or c['arm'] + ' vs ' + c['baseline']} | "
                     f"{_difference(c['loss_diff_mean'], c['loss_diff_ci95'], c['loss_diff_n'])} | "
                     f"{_difference(c['val_loss_diff_mean'], c['val_loss_diff_ci95'], c['val_loss_diff_n'])} | "
                     f"{reading} | {_target_words(c)} |")
    return lines


__all__ = ["TEXT_KEYS", "TEXT_UNITS", "add_text_fields", "is_text", "loss_comparison_lines", "run_losses",
           "text_arm_lines"]

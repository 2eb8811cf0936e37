"""How many seeds: the spec's rule ``seeds: {min, max, half_width}``, decided from the finished runs.

The rule is sequential and read in order: at ``n = min, min + 1, ..., max`` it looks at seeds
``0..n-1`` only, and stops at the first ``n`` where every comparison's paired accuracy interval
has a half-width of at most ``half_width`` points, or at ``max``. The interval is the one the
report prints (`contdepth.experiment.stats`: the 95 % t-interval of the per-seed differences
``arm - baseline``, final-epoch accuracy in points), on the **test** split, which the targets
and ``met`` read, and, where both arms hold a validation split out, on **validation** too, where
settings are chosen: every accuracy interval of the comparisons table must be narrow enough.
A seed enters once every arm's run of it is counted by the report (trained and its
after-training steps done).

Why read in order: each step depends only on the seeds below its ``n``, so the decision is a
function of the finished runs, not of when they finished. A second sitting recomputes it and
continues where the first stopped; runs that finished beyond the stopping point (``--workers``
starts seeds ahead, or ``--reuse`` copied them) cannot move it. Nor are they counted: the
report's ``n`` is the rule's whatever the number of workers, and its intervals are the ones the
rule stopped on. They are listed under "Not yet counted".

The half-width depends on the spread of the differences, not on their mean, so the rule
chooses no result; it does read the test split, but only to know when the interval is as
narrow as the spec asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from .model_stages import model_entry
from .spec import ExperimentSpec, SeedRule
from .stats import estimate

# (key of a run's numbers in `contdepth.experiment.collect`, the split's name in the report)
SPLITS = (("accuracy", "test"), ("val_accuracy", "validation"))


@dataclass(frozen=True)
class SeedDecision:
    """Where the rule stands: the seeds it counts (``0..n-1``) and whether it has stopped.

    ``stopped`` is ``"half_width"``, ``"max"``, or ``None`` while seeds below ``n`` are still to
    finish. ``half_width`` is the widest half-width over the comparisons at ``measured_at``
    (the last ``n`` whose seeds had all finished; 0 where none had), ``widest`` names its
    comparison and split.
    """

    rule: SeedRule
    n: int
    stopped: str | None
    half_width: float = math.nan
    widest: str = ""
    measured_at: int = 0

    @property
    def done(self) -> bool:
        return self.stopped is not None

    def text(self) -> str:
        """One line: ``half-width 0.42 <= 0.5 at n=9 (...)``, ``max 20 reached: half-width 0.71 (...)``."""
        width = f"half-width {self.half_width:.2f}" if math.isfinite(self.half_width) else "half-width undefined"
        widest = f" ({self.widest})" if self.widest else ""
        if self.stopped == "half_width":
            return f"{width} <= {self.rule.half_width:g} at n={self.n}{widest}"
        if self.stopped == "max":
            return f"max {self.rule.max} reached: {width}{widest}"
        at = (f"; at n={self.measured_at}: {width} > {self.rule.half_width:g}{widest}"
              if self.measured_at else "")
        return f"not decided yet: n={self.n} needs seeds 0..{self.n - 1}, not all counted yet{at}"

    def to_dict(self) -> dict:
        return {**self.rule.to_dict(), "n": self.n, "stopped": self.stopped, "half_width_at_n": self.half_width,
                "widest": self.widest, "measured_at": self.measured_at, "text": self.text()}


def half_width(values: list[float]) -> float:
    """Half the width of the report's t-interval of ``values``; ``nan`` for fewer than two or a missing value."""
    e = estimate(values)
    return (e.high - e.low) / 2.0 if e.n >= 2 else math.nan


def decide(rule: SeedRule, differences: Mapping[int, Mapping[str, float]]) -> SeedDecision:
    """The rule read in order over ``differences[seed][label]``, the paired differences (points) of each
    seed whose runs have all finished; a seed missing from it has not.

    A label missing for one seed, or a ``nan``, makes that label's half-width undefined, which never
    stops the rule: it goes on to ``max``.
    """
    n, last = rule.min, (math.nan, "", 0)
    while True:
        if any(seed not in differences for seed in range(n)):
            return SeedDecision(rule, n, None, *last)
        labels = list(dict.fromkeys(label for seed in range(n) for label in differences[seed]))
        widths = {label: half_width([differences[seed].get(label, math.nan) for seed in range(n)])
                  for label in labels}
        widest = max(labels, key=lambda k: widths[k] if math.isfinite(widths[k]) else math.inf, default="")
        last = (widths[widest] if widest else math.nan, widest, n)
        if widths and all(w <= rule.half_width for w in widths.values()):  # nan <= x is False
            return SeedDecision(rule, n, "half_width", *last)
        if n >= rule.max:
            return SeedDecision(rule, n, "max", *last)
        n += 1


def differences(spec: ExperimentSpec, runs: Mapping[str, Mapping[int, dict]]) -> dict[int, dict[str, float]]:
    """Per seed counted in every arm: ``"arm vs baseline, split"`` -> the paired accuracy difference (points)."""
    seed0 = spec.seeds[0]
    validation = {arm.name: bool(spec.config(arm, seed0).validation_size) for arm in spec.arms}
    common = set.intersection(*(set(runs.get(arm.name, {})) for arm in spec.arms))
    out: dict[int, dict[str, float]] = {}
    for seed in sorted(common):
        out[seed] = {}
        for c in spec.comparisons:
            a, b = model_entry(runs[c.arm][seed], c.arm_model), model_entry(runs[c.baseline][seed], c.baseline_model)
            for key, split in SPLITS:
                if split == "validation" and not (validation[c.arm] and validation[c.baseline]):
                    continue
                # a compressed side without its record: NaN, so the rule cannot stop on it
                out[seed][f"{c.label}, {split}"] = (math.nan if a is None or b is None
                                                    else float(a[key]) - float(b[key]))
    return out


def decision(spec: ExperimentSpec, runs: Mapping[str, Mapping[int, dict]]) -> SeedDecision:
    """The rule of ``spec`` (which has one) decided on ``runs[arm][seed]`` (`contdepth.experiment.collect`'s)."""
    if spec.seed_rule is None:
        raise ValueError("seeds: the spec lists its seeds; it has no rule to decide")
    return decide(spec.seed_rule, differences(spec, runs))


def counted(spec: ExperimentSpec, runs: dict[str, dict[int, dict]], unfinished: list[str]
            ) -> tuple[dict[str, dict[int, dict]], list[str]]:
    """``runs`` and ``unfinished`` limited to the seeds the rule counts (``0..n-1``).

    A seed the rule has not asked for and that was never started is no unfinished run; one that
    was (started, or finished ahead by a worker or copied by ``--reuse``) is listed as not counted.
    ``unfinished`` entries are `contdepth.experiment.collect`'s, ``"ARM seed S: ..."`` (arm
    names hold no spaces).
    """
    d = decision(spec, runs)
    where = "beyond the stopping point" if d.done else "ahead of the rule"
    kept_runs = {arm: {s: v for s, v in seeds.items() if s < d.n} for arm, seeds in runs.items()}
    kept: list[str] = []
    for entry in unfinished:
        seed_text = entry.partition(" seed ")[2].partition(":")[0]
        if not seed_text.isdigit() or int(seed_text) < d.n:  # a line of another shape: kept as it is
            kept.append(entry)
        elif not entry.endswith(": not started"):
            kept.append(f"{entry} ({where}, n={d.n})")
    for arm, seeds in runs.items():
        kept += [f"{arm} seed {s}: finished {where} (n={d.n}), not counted" for s in sorted(seeds) if s >= d.n]
    return kept_runs, kept


def summary_fields(spec: ExperimentSpec, runs: Mapping[str, Mapping[int, dict]]) -> dict:
    """What ``summary.json`` says of the rule: the seeds counted and the decision (empty for listed seeds)."""
    if spec.seed_rule is None:
        return {}
    d = decision(spec, runs)
    return {"seeds": list(range(d.n)), "seed_rule": d.to_dict()}


__all__ = ["SeedDecision", "counted", "decide", "decision", "differences", "half_width", "summary_fields"]

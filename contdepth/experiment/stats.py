"""The statistics of an experiment: means over seeds and paired t-intervals.

A claim such as "refinement is as accurate as training from scratch" is a statement about
the *difference* between two arms run with the same seeds. Pairing by seed removes what
the seed does to both arms alike (initialisation, data order), so the interval is that of
the per-seed differences ``d_i = a_i - b_i``: ``mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)``,
Student's t with ``n - 1`` degrees of freedom. A cost *ratio* ``r_i = a_i / b_i`` is estimated
the same way on ``log r_i`` and exponentiated back (`ratio_estimate`): the geometric mean
and an interval that stays positive. The t quantile is computed here (a
regularised incomplete beta function inverted by bisection) so that the core needs no
scipy; ``tests/experiment/test_experiment.py`` checks it against scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

CONFIDENCE = 0.95


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the regularised incomplete beta function, for ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """The cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df: must be > 0, got {df}")
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on `t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: must lie in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:  # the quantile of df=1 at 0.9995 is 637, so this doubles a handful of times
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Estimate:
    """Mean of a sample with its standard deviation (``n - 1``) and a two-sided t-interval of the mean.

    With one value the std and interval are ``nan``: one seed says nothing about the noise.
    """

    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def interval(self) -> tuple[float, float]:
        return self.low, self.high


def estimate(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """[`Estimate`][contdepth.experiment.Estimate] of ``values`` (finite numbers); empty gives ``n = 0`` and ``nan`` everywhere."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Estimate(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class RatioEstimate:
    """Geometric mean of positive ratios with a t-interval computed on their logarithms.

    Why logs: a ratio lives on ``(0, inf)`` and is symmetric under ``a/b <-> b/a`` only on a log
    scale. The arithmetic interval of ratios can reach below 0 (a wall ratio of 0.941
    [-0.695, 2.576] from three seeds), which no time ratio can be; the interval of the
    mean log ratio, exponentiated back, is always positive and is the interval of the
    geometric mean. ``log_std`` is the standard deviation (``n - 1``) of the log ratios.
    """

    n: int
    mean: float
    log_std: float
    low: float
    high: float

    @property
    def interval(self) -> tuple[float, float]:
        return self.low, self.high


def ratio_estimate(ratios: Sequence[float], confidence: float = CONFIDENCE) -> RatioEstimate:
    """[`RatioEstimate`][contdepth.experiment.RatioEstimate] of paired per-seed ratios (each finite and > 0).

    ``exp(mean(log r))`` with ``exp(mean +- t_{0.975, n-1} * sd(log r) / sqrt(n))``; one ratio
    has no interval (``nan``), none gives ``n = 0``. A ratio that is 0, negative or not
    finite has no logarithm: the caller leaves it out and names the seed.
    """
    values = [float(r) for r in ratios]
    bad = [r for r in values if not (math.isfinite(r) and r > 0)]
    if bad:
        raise ValueError(f"ratios: each must be a finite number > 0, got {bad[0]!r}")
    logs = estimate([math.log(r) for r in values], confidence)
    return RatioEstimate(logs.n, math.exp(logs.mean), logs.std, math.exp(logs.low), math.exp(logs.high))


def paired(values: dict, baseline: dict) -> tuple[list, list[float], list[float]]:
    """``(keys, a, b)`` over the keys (seeds) present in both mappings, in sorted order."""
    keys = sorted(set(values) & set(baseline))
    return keys, [values[k] for k in keys], [baseline[k] for k in keys]


__all__ = ["CONFIDENCE", "Estimate", "RatioEstimate", "estimate", "paired", "ratio_estimate", "regularized_beta", "t_cdf",
           "t_quantile"]

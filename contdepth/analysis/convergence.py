"""Empirical convergence order: how fast an error falls as the step count grows."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def fit_order(steps: Sequence[int], errors: Sequence[float], *, floor: float = 1e-13) -> float:
    """Least-squares slope of ``-log(error)`` against ``log(steps)``.

    Errors at or below ``floor`` (round-off for float64 states of size ~1) carry no
    information about the order and are left out; ``nan`` is returned when fewer
    than two points remain.
    """
    if len(steps) != len(errors):
        raise ValueError(f"errors: expected {len(steps)} errors (one per step count), got {len(errors)}")
    pairs = [(n, e) for n, e in zip(steps, errors) if e > floor and np.isfinite(e)]
    if len(pairs) < 2:
        return float("nan")
    n, e = np.array(pairs, dtype=float).T
    return float(-np.polyfit(np.log(n), np.log(e), 1)[0])

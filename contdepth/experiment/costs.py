"""What a run cost, read from its history, and what a config ideally costs, from its depth.

A run's metrics rows record, per epoch, the floating-point operations of its training steps
(``train_flops``) and of its evaluation (``eval_flops``), the training pass's wall and CPU
seconds (``train_time``, ``train_cpu_time``) and the epoch's CPU seconds with evaluation
(``cpu_time``). `run_costs` sums each over the run's epochs. A run trained before a metric
was recorded (or resumed across that change) lacks it in some rows: its sum is then
*missing* (``None``), never a sum over the rows that happen to have it, so a comparison can
name the seed instead of comparing a part of one run with the whole of another.

`cell_epochs` is the cost a refinement arm can at best reach: the rate evaluations per
example of every block, summed over the epochs, as the config fixes them (a refinement
doubles a block's steps at the start of its epoch). For a piecewise-constant Euler block
with one step per cell (the default) that is the number of cells, so ``incremental.yaml``'s
``refined_late`` (1 cell in epochs 1-4, 2 in 5-6, 4 in 7-8) against ``scratch`` (4 cells in
all 8 epochs) is ``(4*1 + 2*2 + 2*4) / (8*4) = 0.5``. It leaves out what every epoch pays
whatever the depth (stem, stitches, head, evaluation), which is why a measured ratio sits
above it; the FLOP ratio of the training steps counts those too.
"""

from __future__ import annotations

import math
from typing import Any

from ..common.validate import is_number
from ..train.config import TrainConfig
from ..train.metrics import cost_metrics

# Summed per run over its epochs: integer counts, then seconds (the metric registry says which).
FLOP_KEYS = cost_metrics("flops")
SECOND_KEYS = cost_metrics("seconds")


def run_costs(history: list[dict]) -> dict[str, Any]:
    """Each cost of `FLOP_KEYS` and `SECOND_KEYS` summed over ``history``; ``None`` where any row lacks it.

    FLOPs stay integers (their ratio is exact); a value that is not a finite number counts
    as missing, as an absent one does.
    """
    out: dict[str, Any] = {}
    for key in FLOP_KEYS + SECOND_KEYS:
        values = [row.get(key) for row in history]
        if not values or not all(is_number(v, finite=True) for v in values):
            out[key] = None
        elif key in FLOP_KEYS:
            out[key] = sum(int(v) for v in values) if all(float(v).is_integer() for v in values) else None
        else:
            out[key] = math.fsum(float(v) for v in values)
    return out


def cell_epochs(config: TrainConfig) -> int | None:
    """Rate evaluations per example of every ContinuousBlock, summed over ``config.epochs`` epochs.

    Each block's count is its scheme's evaluations for its steps (``scheme.evaluations(n)``:
    ``n`` for Euler, ``4n`` for RK4), with ``n`` doubled at the start of every epoch in
    ``refine_at``. ``None`` for a model without ContinuousBlocks (a ResNet has no depth
    function to refine; its units are not cells of one). The model is built on the ``meta``
    device: no memory, no weights.
    """
    from ..nn import continuous_blocks
    from ..train.runs import dry_model

    blocks = continuous_blocks(dry_model(config))
    if not blocks:
        return None
    refine_at = set(config.refine_at)
    total = 0
    for block in blocks:
        n_steps = block.n_steps
        for epoch in range(1, config.epochs + 1):
            if epoch in refine_at:
                n_steps *= 2
            total += block.scheme.evaluations(n_steps)
    return total


def ideal_ratio(arm: TrainConfig, baseline: TrainConfig) -> float | None:
    """``cell_epochs(arm) / cell_epochs(baseline)``: the cost ratio a refinement arm could reach at best.

    ``None`` where either model has no ContinuousBlocks.
    """
    a, b = cell_epochs(arm), cell_epochs(baseline)
    return a / b if a is not None and b else None


__all__ = ["FLOP_KEYS", "SECOND_KEYS", "cell_epochs", "ideal_ratio", "run_costs"]

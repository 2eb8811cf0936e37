"""The end-to-end demo: train a ContinuousNet on digits with refinement, then evaluate the
same trained weights on other manifestations (scheme x steps per block).

``contdepth demo`` or ``python -m contdepth demo``; about a minute on two CPU cores.
"""

from __future__ import annotations

import time

from .config import TrainConfig
from .evaluate import format_manifestation_table, manifestation_table
from .trainer import RunResult, load_data, train

# ContinuousNet, alpha 12 (widths 12/24/48), one piecewise-constant cell per stage refined
# 1 -> 2 -> 4 at the start of epochs 5 and 10; forward Euler with n_steps = n_basis,
# so the trained network ends as a 4-unit-per-stage ResNet.
DEMO_CONFIG = TrainConfig(
    model="continuousnet",
    model_options={"alpha": 12, "n_basis": 1, "basis": "piecewise_constant", "scheme": "euler", "norm": "batch"},
    data="digits",
    epochs=15,
    batch_size=64,
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    schedule="cosine",
    warmup_epochs=1,
    refine_at=(5, 10),
    seed=0,
    threads=1,  # digits is small: one thread is as fast and never stalls on a busy machine
)
DEMO_SCHEMES = ("euler", "midpoint", "rk4")
DEMO_STEPS = (1, 2, 4, 8, 16)


def demo(*, epochs: int | None = None, threads: int | None = 1, quiet: bool = False, out: str | None = None,
         overwrite: bool = False) -> tuple[RunResult, dict]:
    """Train `DEMO_CONFIG`, print the test accuracy and the manifestation table.

    Returns the run result and the table ``{(scheme, n_steps): accuracy}``.
    """
    import torch

    from ..common.validate import check_threads

    check_threads(threads)  # before torch sizes its thread pool (a million threads abort the process)
    tic = time.perf_counter()
    changes: dict = {"threads": threads, "quiet": quiet, "out": out, "overwrite": overwrite}
    if epochs is not None:
        changes["epochs"] = epochs
        changes["refine_at"] = tuple(e for e in DEMO_CONFIG.refine_at if e <= epochs)
        changes["warmup_epochs"] = min(DEMO_CONFIG.warmup_epochs, epochs)
    config = DEMO_CONFIG.replace(**changes)
    print(f"contdepth demo: {config.model} {config.model_options} on {config.data}, {config.epochs} epochs, "
          f"refined at the start of epochs {list(config.refine_at)}", flush=True)
    dataset = load_data(config)
    result = train(config, dataset=dataset)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        table = manifestation_table(result.model, dataset, DEMO_SCHEMES, DEMO_STEPS, config.eval_batch_size)
    finally:
        torch.set_num_threads(previous)
    last = result.history[-1]
    steps = last["n_steps"]
    trained = (config.model_options["scheme"], steps[0]) if len(set(steps)) == 1 else None
    print()
    print(f"test accuracy {100 * result.final_test_accuracy:.2f}% after {last['epoch']} epochs "
          f"(n_basis {last['n_basis']}, {config.model_options['scheme']} with n_steps {steps}), "
          f"{result.num_params:,} parameters")
    print(format_manifestation_table(table, trained=trained))
    print(f"total time {time.perf_counter() - tic:.1f} s (training {result.total_time:.1f} s)")
    return result, table

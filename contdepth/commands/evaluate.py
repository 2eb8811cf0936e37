"""``contdepth eval``: a checkpoint at one manifestation, on a scheme x steps table, or with adaptive depth."""

from __future__ import annotations

import argparse
from typing import Any

from ..train.config import ConfigError
from ..train.config_checks import DEFAULT_EVAL_EVERY
from ..train.options import Evaluate
from . import add_command, options_of, runtime_of
from .options import TOLERANCE_FLOOR

CLASSES = (Evaluate,)
RUNTIME = {"run": {}, "batch_size": {}, "data_dir": {}, "threads": {}, "device": {}}


def add(sub: Any) -> argparse.ArgumentParser:
    return add_command(sub, "eval", classes=CLASSES, runtime=RUNTIME,
                       help="evaluate a run's checkpoint at any manifestation",
                       description="Evaluate a checkpoint on its dataset's test split.")


def adaptive_tolerances(options: Any) -> list[tuple[float, float]]:
    """``(rtol, atol)`` pairs of ``eval --adaptive``, checked before any work.

    ``options``: an `Evaluate` (or parsed arguments with its fields).
    """
    from ..nn import AdaptiveDepth

    if not options.adaptive:
        if options.rtol is not None or options.atol is not None:
            raise ConfigError("rtol: --rtol/--atol need --adaptive")
        return []
    if options.scheme or options.n_steps or options.table:
        raise ConfigError("adaptive: chooses its own steps; it cannot be combined with --scheme, --n-steps or --table")
    rtols = list(options.rtol or [1e-3])
    atols = list(options.atol or [max(r / 10, TOLERANCE_FLOOR) for r in rtols])
    if len(atols) == 1:
        atols = atols * len(rtols)
    if len(atols) != len(rtols):
        raise ConfigError(f"atol: give one value or one per --rtol ({len(rtols)}), got {len(atols)}")
    pairs = list(zip(rtols, atols))
    try:
        for rtol, atol in pairs:
            AdaptiveDepth(options.adaptive_scheme, rtol, atol)
    except ValueError as exc:  # AdaptiveDepth names "scheme", which is --adaptive-scheme here
        raise ConfigError(f"adaptive_{exc}" if str(exc).startswith("scheme") else str(exc)) from exc
    for name, values in (("rtol", rtols), ("atol", atols)):
        for value in values:
            if 0 < value < TOLERANCE_FLOOR:
                raise ConfigError(f"{name}: must be 0 or >= {TOLERANCE_FLOOR:g} (activations are float32, good to "
                                  f"about 1e-7: a smaller tolerance cannot be met), got {value:g}")
    return pairs


def run(args: argparse.Namespace) -> int:
    options = options_of(args, Evaluate)
    runtime = runtime_of(args, RUNTIME)
    tolerances = adaptive_tolerances(options)
    import torch

    from ..nn import continuous_blocks
    from ..train import evaluate, load_checkpoint
    from ..train.trainer import load_data

    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    model, info = load_checkpoint(runtime.run, device=runtime.device)
    config = info.train_config()
    if runtime.data_dir is not None:
        config = config.replace(data_dir=runtime.data_dir)
    blocks = continuous_blocks(model)
    if (options.scheme or options.n_steps or options.table) and not blocks:
        raise ConfigError(f"scheme: model {info.model_name!r} has no ContinuousBlock, so it has one manifestation only")
    if options.adaptive and not blocks:
        raise ConfigError(f"adaptive: model {info.model_name!r} has no ContinuousBlock to integrate adaptively")
    dataset = load_data(config)
    if options.adaptive:
        return _adaptive(model, info, config, dataset, options, runtime, tolerances)
    trained_scheme = blocks[0].scheme.name if blocks else None
    trained_steps = [b.n_steps for b in blocks]
    text = getattr(dataset, "is_text", False)
    splits = dataset.splits[1:] if text else ("test",)  # a text run: validation and test, in nats per byte
    results = {split: evaluate(model, dataset, runtime.batch_size, scheme=options.scheme, n_steps=options.n_steps,
                               split=split, device=runtime.device) for split in splits}
    loss, acc = results["test"]
    where = ""
    if blocks:
        steps = [options.n_steps] * len(blocks) if options.n_steps else trained_steps
        where = f" with {options.scheme or trained_scheme}, n_steps {steps}"
    if info.early_stopping is not None:  # a graph run keeps its best-validation weights
        where += f" (best-validation weights, epoch {info.early_stopping.best_epoch})"
    if text:
        import math

        measured = "; ".join(f"{split} loss {value:.4f} nats/byte ({value / math.log(2):.4f} bits/byte)"
                             for split, (value, _) in results.items())
        print(f"{info.path.parent}: step {info.epoch * (config.eval_every or DEFAULT_EVAL_EVERY)}, {info.model_name} "
              f"on {config.data}: {measured}{where}")
    else:
        print(f"{info.path.parent}: epoch {info.epoch}, {info.model_name} on {config.data}: "
              f"test accuracy {100 * acc:.2f}% (loss {loss:.4f}){where}")
    if options.table:
        from ..train import format_manifestation_table, manifestation_table

        trained = (trained_scheme, trained_steps[0]) if len(set(trained_steps)) == 1 else None
        if text:  # a text model's manifestations by their loss on the validation sample (or test without one)
            split = "val" if "val" in dataset.splits else "test"
            table = manifestation_table(model, dataset, options.schemes, options.steps, runtime.batch_size,
                                        device=runtime.device, split=split, measure="loss")
            title = f"{'validation' if split == 'val' else 'test'} loss (nats/byte)"
            print(format_manifestation_table(table, trained=trained, title=title, percent=False))
        else:
            table = manifestation_table(model, dataset, options.schemes, options.steps, runtime.batch_size,
                                        device=runtime.device)
            print(format_manifestation_table(table, trained=trained))
    return 0


def _adaptive(model: Any, info: Any, config: Any, dataset: Any, options: Evaluate, runtime: Any,
              tolerances: list[tuple[float, float]]) -> int:
    """Every tolerance pair: evaluations per block and accuracy, one table."""
    from ..solvers import MaxStepsExceeded
    from ..train import evaluate_adaptive, format_adaptive_table

    results = []
    for rtol, atol in tolerances:
        try:
            results.append(evaluate_adaptive(model, dataset, rtol, atol, scheme=options.adaptive_scheme,
                                             batch_size=runtime.batch_size, device=runtime.device))
        except MaxStepsExceeded as exc:  # a tolerance the model's float precision cannot meet
            raise ConfigError(f"rtol: --rtol {rtol:g} --atol {atol:g} could not be met ({exc})") from exc
        except ValueError as exc:  # e.g. an LM-ResNet block
            raise ConfigError(f"adaptive: {exc}") from exc
    print(f"{info.path.parent}: epoch {info.epoch}, {info.model_name} on {config.data}")
    print(format_adaptive_table(results))
    return 0


__all__ = ["CLASSES", "RUNTIME", "TOLERANCE_FLOOR", "adaptive_tolerances", "add", "run"]

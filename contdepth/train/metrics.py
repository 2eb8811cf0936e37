"""Every column of a run's metrics rows, named once: what it means, how a checkpoint checks it, how it sums.

Why a registry: a metric used to be named in four places (the training loop's row, the
checkpoint's history check, the experiment's cost sums and the report's units), and one that
was missed in one of them was either refused on resume or silently left out of a report. Now
a [`Metric`][contdepth.train.Metric] says it all:

* ``check``: the typed check a stored row's value must pass (`contdepth.train.typed_json`);
* ``meaning``: the words (and unit) the docs and the experiment report print;
* ``cost``: ``"flops"`` (summed over a run's epochs as exact integers) or ``"seconds"``
  (summed as floats) for the experiment's cost comparisons; ``None`` for other metrics;
* ``required``: every row has it (the loops read it back: the result, resume's elapsed time);
  ``"graph"``: every row of a graph run (its best-validation choice).

The trainer refuses a row with a key that is not registered (`check_row`), so a new column
that was not named here fails in the first test that trains. Register your own with
[`register_metric`][contdepth.train.register_metric]; a callback may still add unregistered
flat values to a row after the loop has checked and stored it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..common.registry import Registry, is_plain_name
from ..common.validate import show
from .typed_json import Bool, Int, ListOf, Number, Spec

#: The longest time a row may record (about 31 years) and the most parameters a model may
#: count: a report sums, squares and divides these, and 1e308 seconds or 10**400 parameters
#: overflowed there (issue 26) although no run can have them.
MAX_SECONDS = 1e9
MAX_PARAMS = 10**13
#: The most floating-point operations an epoch may record (``train_flops``, ``eval_flops``): a
#: year of a device at 10**15 operations a second is 3 x 10**22; a report divides and logs them.
MAX_FLOPS = 10**24
COSTS = ("flops", "seconds")


@dataclass(frozen=True)
class Metric:
    """One column of a metrics row (see the module docstring)."""

    name: str
    check: Spec
    meaning: str
    cost: str | None = None
    required: bool | str = False

    def __post_init__(self) -> None:
        if not is_plain_name(self.name):
            raise ValueError(f"metric: the name must be a letter, then letters, digits, '_' or '-' (a JSON key of a "
                             f"metrics row, a registry name), got {show(self.name)}")
        if self.cost not in (None, *COSTS):
            raise ValueError(f"metric {self.name}: cost must be one of {', '.join(COSTS)} or None, got {self.cost!r}")
        if self.required not in (False, True, "graph"):
            raise ValueError(f"metric {self.name}: required must be True, False or 'graph', got {self.required!r}")


#: Every metric by name: one `Registry` shape, as models, schemes, bases and datasets have.
METRICS: Registry[Metric] = Registry("metric")


def register_metric(metric: Metric, *, overwrite: bool = False) -> Metric:
    """Add ``metric`` to the registry (a name taken is refused unless ``overwrite``)."""
    if not isinstance(metric, Metric):
        raise TypeError(f"metric: expected a Metric, got {type(metric).__name__}")
    return METRICS.register(metric.name, metric, overwrite=overwrite)


def metric(name: str) -> Metric:
    """The registered metric ``name`` (an unknown one is one line listing them)."""
    return METRICS.get(name)


def available_metrics() -> list[str]:
    return METRICS.names()


class _Checks(Mapping):
    """``{name: check}`` of the registered metrics, read live: a metric registered later is checked too."""

    def __getitem__(self, name: str) -> Spec:
        if name not in METRICS:
            raise KeyError(name)
        return METRICS.get(name).check

    def __iter__(self) -> Iterator[str]:
        return iter(METRICS)

    def __len__(self) -> int:
        return len(METRICS)


#: What a checkpoint's history rows are checked against (`contdepth.train.checkpoint_description`).
HISTORY_CHECKS: Mapping[str, Spec] = _Checks()


def required_metrics(kind: bool | str = True) -> tuple[str, ...]:
    """The metrics every row has (``True``) or every row of a graph run has besides (``"graph"``)."""
    return tuple(name for name in METRICS if METRICS.get(name).required == kind)


def cost_metrics(cost: str) -> tuple[str, ...]:
    """The metrics a run's ``cost`` (``"flops"`` or ``"seconds"``) sums over its epochs."""
    if cost not in COSTS:
        raise ValueError(f"cost: must be one of {', '.join(COSTS)}, got {cost!r}")
    return tuple(name for name in METRICS if METRICS.get(name).cost == cost)


def check_row(row: dict) -> dict:
    """``row`` if every key is a registered metric, else a one-line ``ValueError`` naming the first that is not."""
    for key in row:
        if key not in METRICS:
            raise ValueError(f"metrics row: {show(key)} is not a registered metric (contdepth.train.register_metric): a "
                           "checkpoint would not check it and a report would not know it")
    return row


_ACCURACY, _LOSS, _SECONDS = Number(0.0, 1.0), Number(finite=False), Number(0.0, MAX_SECONDS)
_COUNTS = ListOf(Int(1), words="a list of integers >= 1 (one per block)")
_FLOPS = Int(0, MAX_FLOPS)
for _metric in (
    Metric("epoch", Int(1), "the epoch (1-based)", required=True),
    Metric("train_loss", _LOSS, "mean cross-entropy of the epoch's training batches"),
    Metric("train_accuracy", _ACCURACY, "accuracy on the epoch's training batches (fraction)"),
    Metric("val_accuracy", _ACCURACY, "validation accuracy after the epoch (fraction)", required="graph"),
    Metric("val_loss", _LOSS, "validation loss after the epoch", required="graph"),
    Metric("test_loss", _LOSS, "test loss after the epoch"),
    Metric("test_accuracy", _ACCURACY, "test accuracy after the epoch (fraction)", required=True),
    Metric("lr", Number(0.0), "the learning rate of the epoch's first step (first param group)"),
    Metric("n_steps", _COUNTS, "integration steps of every ContinuousBlock"),
    Metric("n_basis", _COUNTS, "basis functions of every ContinuousBlock"),
    Metric("reconstruction_error", _LOSS, "the worst relative error of a reversible backward pass's rebuilt input"),
    Metric("refined", Bool(), "whether the blocks were refined at the start of the epoch"),
    Metric("grown", Bool(), "whether the model was grown in depth at the start of the epoch (a run with grow_at)"),
    Metric("layers", Int(1), "units of the model's residual stack after any growth: a discrete GPT's layers, a "
                             "continuous model's cells summed over its blocks (a run with grow_at)"),
    Metric("params", Int(0, MAX_PARAMS), "trainable parameters"),
    Metric("schedule_epochs", Int(1), "the length of the run's schedule (shows an extended run)"),
    Metric("best_epoch", Int(0), "a graph run's best-validation epoch so far"),
    Metric("train_time", _SECONDS, "wall seconds of the refinement and training pass (no evaluation, no checkpoints)",
           cost="seconds"),
    Metric("train_cpu_time", _SECONDS, "CPU seconds of the training pass (no evaluation, no checkpoints)",
           cost="seconds"),
    Metric("epoch_time", _SECONDS, "wall seconds of the epoch: training and evaluation"),
    Metric("total_time", _SECONDS, "wall seconds of the run so far, checkpoints included", required=True),
    Metric("cpu_time", _SECONDS, "CPU seconds of the epoch, evaluation included", cost="seconds"),
    Metric("train_flops", _FLOPS, "floating-point operations of the epoch's training steps (forward and backward)",
           cost="flops"),
    Metric("eval_flops", _FLOPS, "floating-point operations of the epoch's validation and test passes",
           cost="flops"),
    Metric("val_bits_per_byte", _LOSS, "a text run's validation loss in bits per byte (val_loss / ln 2)"),
    Metric("test_bits_per_byte", _LOSS, "a text run's test loss in bits per byte (test_loss / ln 2)"),
    Metric("tokens_per_second", Number(0.0), "a text run's training throughput: tokens (bytes) per second of "
                                            "the training pass"),
    Metric("threads", Int(1), "torch threads of the process"),
    Metric("world_size", Int(1), "processes training together (DDP)"),
):
    register_metric(_metric)


__all__ = ["METRICS", "MAX_FLOPS", "MAX_PARAMS", "MAX_SECONDS", "Metric", "available_metrics", "check_row", "cost_metrics",
           "HISTORY_CHECKS", "metric", "register_metric", "required_metrics"]

"""The metric registry (issue 28): a metric is named once, and the training loop, the checkpoint's
history check and the experiment's cost sums all read it."""

from __future__ import annotations

import pytest

from contdepth import data
from contdepth.experiment import costs
from contdepth.train import Metric, TrainConfig, available_metrics, register_metric, train
from contdepth.train import metrics as registry
from contdepth.train.checkpoint_description import HISTORY, REQUIRED_ROW_KEYS
from contdepth.train.typed_json import Invalid, Number


@pytest.fixture
def own_metric():
    """A metric registered for one test, removed afterwards (the registry is process-wide)."""
    with registry.METRICS.kept():
        yield register_metric(Metric("grad_norm", Number(0.0), "the epoch's largest gradient norm"))


def test_every_column_the_loop_writes_is_a_registered_metric_and_the_loop_refuses_one_that_is_not():
    digits = data.load("digits", seed=0)
    config = TrainConfig(model="continuousnet", model_options={"alpha": 4, "n_basis": 1}, data="digits", epochs=1,
                         batch_size=64, quiet=True, threads=1, refine_at=[], validation_size=100)
    row = train(config, dataset=digits).history[0]
    assert set(row) <= set(available_metrics())
    with registry.METRICS.kept():
        registry.METRICS.unregister("train_cpu_time")  # a column nobody registered
        with pytest.raises(ValueError, match="'train_cpu_time' is not a registered metric"):
            train(config, dataset=digits)


def test_the_checkpoint_and_the_experiment_read_the_registry(own_metric):
    assert REQUIRED_ROW_KEYS == ("epoch", "test_accuracy", "total_time")
    row = {"epoch": 1, "test_accuracy": 0.5, "total_time": 1.0, "grad_norm": 2.0}
    assert HISTORY.check([row], "history", {}) == [row]  # a metric registered after import is checked too
    with pytest.raises(Invalid, match=r"history\[0\]\.grad_norm: must be a finite number >= 0.0"):
        HISTORY.check([{**row, "grad_norm": -1.0}], "history", {})
    assert set(costs.FLOP_KEYS) == {"train_flops", "eval_flops"}
    assert set(costs.SECOND_KEYS) == {"train_time", "train_cpu_time", "cpu_time"}


def test_a_metric_is_validated_and_named_once():
    assert "grad_norm" not in available_metrics()  # the fixture's registration was undone
    with pytest.raises(ValueError, match="already registered"):
        register_metric(Metric("epoch", Number(), "again"))
    with pytest.raises(ValueError, match="must be a letter, then letters"):
        Metric("grad norm", Number(), "a space")
    with pytest.raises(ValueError, match="cost must be one of flops, seconds"):
        Metric("x", Number(), "x", cost="joules")

"""Exact operation counts (issue 27): a hand-counted model, affinity in the batch, the cache, the
training rows' ``train_flops``/``eval_flops``/``train_cpu_time``, and training left bitwise unchanged."""

import threading

import pytest
import torch
from torch import nn

from contdepth import data
from contdepth.models import create
from contdepth.nn import ContinuousBlock, refine
from contdepth.train import ImageClassification, TrainConfig, read_checkpoint, train
from contdepth.train import cost
from contdepth.train.cost import FlopCounter, Probe, batch_counts, count_step_flops, per_example_flops
from helpers import without_times

TINY = {"alpha": 2, "n_basis": 1, "scheme": "euler", "norm": "batch"}
COST_KEYS = ("train_flops", "eval_flops", "train_cpu_time")


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", seed=0)


def tiny(**changes) -> TrainConfig:
    base = dict(model="continuousnet", model_options=dict(TINY), data="digits", epochs=3, batch_size=64, lr=0.1,
                refine_at=(2,), quiet=True, threads=1)
    return TrainConfig(**{**base, **changes})


def linear_block(d: int, c: int, n: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(ContinuousBlock(nn.Linear(d, d), basis="piecewise_constant", n_basis=n, scheme="euler"),
                         nn.Linear(d, c))


# --- the count ------------------------------------------------------------------------------------------------
def test_a_linear_block_and_head_count_what_the_hand_count_says_before_and_after_refinement():
    """FlopCounterMode counts a (b, n) x (n, m) product as 2 b n m and nothing elementwise.

    Euler with N steps of a Linear(d, d) rate, then a Linear(d, c) head, batch b:
    forward: N products (b, d) x (d, d) and one (b, d) x (d, c): 2 b d^2 N + 2 b d c;
    backward: every product's weight gradient (the same size as its forward) and its input
    gradient, except the first step's (its input, the data, needs none): 2 b d^2 (2N - 1) + 4 b d c.
    """
    d, c, b = 6, 3, 5
    model = linear_block(d, c, n=2)
    x = torch.randn(b, d)
    for n in (2, 4):  # refinement doubles the steps
        assert model[0].n_steps == n
        forward = 2 * b * d * d * n + 2 * b * d * c
        backward = 2 * b * d * d * (2 * n - 1) + 4 * b * d * c
        assert count_step_flops(model, (x,), train=False) == forward
        assert count_step_flops(model, (x,), train=True) == forward + backward
        refine(model)
    # the block's forward FLOPs doubled with its steps (the head's did not change)
    assert 2 * b * d * d * 4 == 2 * (2 * b * d * d * 2)


def test_the_meta_copy_counts_what_the_model_itself_does():
    model = linear_block(6, 3, n=3)
    x = torch.randn(5, 6)
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    assert count_step_flops(model, (x,), train=True) == counter.get_total_flops()


@pytest.mark.parametrize("name, options", [
    ("continuousnet", {"alpha": 2, "in_channels": 1, "basis": "piecewise_linear", "n_basis": 2, "norm": "batch"}),
    ("resnet", {"alpha": 2, "in_channels": 1}),
])
def test_a_real_copy_and_a_meta_copy_count_the_same(monkeypatch, name, options):
    """Small CPU steps are counted on a real copy (faster), others on ``meta``: the counts must agree."""
    from contdepth.train import cost

    torch.manual_seed(0)
    model = create(name, num_classes=10, **options)
    x = torch.empty(7, 1, 8, 8, device="meta")
    assert cost.small_step(model, (x,), torch.device("cpu"))
    manifestation = {"scheme": "rk4", "n_steps": 3} if name == "continuousnet" else {}
    for train in (True, False):
        real = count_step_flops(model, (x,), train=train, **manifestation)
        monkeypatch.setattr(cost, "SMALL_STEP", 0)
        assert not cost.small_step(model, (x,), torch.device("cpu"))
        assert count_step_flops(model, (x,), train=train, **manifestation) == real > 0
        monkeypatch.undo()


@pytest.mark.parametrize("name, options, per_step", [
    ("resnet", {"alpha": 2, "in_channels": 1}, False),  # no weights computed per step: linear in the batch
    ("continuousnet", {"alpha": 2, "in_channels": 1, "basis": "piecewise_linear", "n_basis": 2}, True),
])
def test_flops_are_affine_in_the_batch_size(name, options, per_step):
    """A step on b examples costs ``per_example x b + per_step``: the per_step part (theta(t) from
    the coefficients, normalisation statistics fitted in the basis) does not grow with the batch."""
    torch.manual_seed(0)
    model = create(name, num_classes=10, **options)
    for train in (True, False):
        per_example, constant = per_example_flops(model, (1, 8, 8), train=train)
        assert per_example > 0 and (constant > 0) == per_step
        for b in (1, 3, 64, 500):
            x = torch.empty(b, 1, 8, 8, device="meta")
            assert count_step_flops(model, (x,), train=train) == per_example * b + constant


def test_batch_counts_cover_every_sample():
    assert batch_counts(1437, 64) == {64: 22, 29: 1}
    assert batch_counts(128, 64) == {64: 2}
    assert batch_counts(100, 64, drop_last=True) == {64: 1}
    assert batch_counts(0, 64) == {}
    with pytest.raises(ValueError, match="batch_size"):
        batch_counts(10, 0)


def test_the_counter_counts_each_model_shape_once(monkeypatch):
    calls = []
    real = cost.count_step_flops
    monkeypatch.setattr(cost, "count_step_flops", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = linear_block(4, 2, n=1)
    counter = FlopCounter()
    probes = [Probe((torch.empty(8, 4, device="meta"),), 3), Probe((torch.empty(2, 4, device="meta"),), 1)]
    first = counter.epoch(model, probes, train=True)
    assert counter.epoch(model, probes, train=True) == first and len(calls) == 2  # cached: no new count
    assert first == 3 * count_step_flops(model, probes[0].inputs, train=True) + count_step_flops(
        model, probes[1].inputs, train=True)
    counter.epoch(model, probes, train=False, scheme="rk4")  # another kind of step: counted
    assert len(calls) == 4
    refine(model)  # a new shape: counted again
    assert counter.epoch(model, probes, train=True) > first and len(calls) == 6


@pytest.mark.parametrize("meta", [True, False])
def test_counting_leaves_the_model_and_the_random_state_as_they_were(monkeypatch, meta):
    """Train-mode counting would update running statistics and draw dropout masks: on the meta copy it
    cannot; the fallback (a real copy, for models the meta device cannot run) gives the draws back."""
    if not meta:
        monkeypatch.setattr(cost, "_meta_copy", lambda model: (_ for _ in ()).throw(NotImplementedError("no meta")))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(144, 10))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 1, 8, 8)
    rng = torch.get_rng_state()
    assert count_step_flops(model, (x,), train=True) > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training and all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# --- the training rows --------------------------------------------------------------------------------------
def test_a_run_records_exact_flops_and_training_cpu_time_in_every_row(tmp_path, digits):
    """Rows' sums are ``per_example x examples + per_step x steps`` for each epoch's model shape."""
    result = train(tiny(out=str(tmp_path / "run"), eval_scheme="rk4"), dataset=digits)
    samples = digits.num_train
    steps = -(-samples // 64)  # the last batch is smaller
    model = create("continuousnet", in_channels=1, num_classes=10, **TINY)
    for row in result.history:
        if row["refined"]:
            refine(model)
        assert all(key in row for key in COST_KEYS)
        assert 0 < row["train_cpu_time"] <= row["cpu_time"]
        per_example, per_step = per_example_flops(model, (1, 8, 8), train=True)
        assert row["train_flops"] == per_example * samples + per_step * steps
        eval_example, eval_step = per_example_flops(model, (1, 8, 8), train=False, scheme="rk4")
        assert eval_step == 0 and row["eval_flops"] == eval_example * digits.num_test
    first, second = result.history[0], result.history[1]
    assert second["train_flops"] > first["train_flops"]  # the refined blocks take twice the steps
    info, _ = read_checkpoint(tmp_path / "run")  # the rows pass the checkpoint's history checks
    assert [row["train_flops"] for row in info.history] == [row["train_flops"] for row in result.history]


def test_counting_changes_nothing_in_training(tmp_path, digits, monkeypatch):
    """The same run with and without the counts: bitwise the same weights and metrics."""
    config = tiny(validation_size=200)  # batch norm: a train-mode pass of the real model would move its statistics
    counted = train(config, dataset=digits)
    monkeypatch.setattr(ImageClassification, "flop_probes", lambda self, train: ())
    plain = train(config, dataset=digits)
    assert "train_flops" in counted.history[0] and "train_flops" not in plain.history[0]
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_flops")} for r in without_times(rows)]
    assert strip(counted.history) == strip(plain.history)
    for (key, a), b in zip(counted.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.equal(a, b), key


class Unclonable(nn.Module):
    """A user's module holding a lock: it trains, but no copy of it can be made to count."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_a_model_that_cannot_be_counted_trains_without_the_columns_and_says_so(digits, capsys):
    result = train(TrainConfig(data="digits", epochs=2, lr=0.1, threads=1), dataset=digits, model=Unclonable())
    assert len(result.history) == 2
    assert all("train_flops" not in row and "train_cpu_time" in row for row in result.history)
    out = capsys.readouterr().out
    assert out.count("train_flops/eval_flops: not counted for this run") == 1

"""Data-parallel training under torchrun: 2 CPU processes (gloo, loopback) against one process.

The equivalence tests launch the real command (``python -m torch.distributed.run ... -m
contdepth train``) and compare the checkpoint with a single-process run of the same global
batch. The model uses group norm, whose training forward treats samples independently, so
the only difference left is the order of floating-point sums.

That makes each *step* the same to round-off, not a whole *run*: a ReLU network's gradient jumps
where a pre-activation crosses 0, so once the two runs' parameters differ by round-off (1e-7), an
activation that sits within that distance of 0 takes the other side in one of them and the
trajectories part (measured with torch 2.13: seed 3 puts one at -4e-7 vs +4e-7 in the third step
after the refinement, which turns a 1e-7 difference into 8e-4 in the gradients and 4e-3 in the
weights after 18 steps; seed 5 parts too). So the end-to-end runs use a seed whose trajectory
crosses no kink in either run (``SEED``), and the step-by-step test, which compares gradients at
the very same parameters, is the proof that cannot hit that.

Which seed crosses a kink depends on the CPU's kernels as well: on an AVX-512 Xeon (2026-12-07) seed 4
parts too (largest parameter difference 1.0e-3 after 18 steps). So the end-to-end runs are compared at
``RUN_ATOL`` = 2e-2, far above a parted trajectory and far below a wrong one: the same run with the
per-process batch of 30 instead of the global 60 (what DDP without the gradient average would train)
ends 0.17 away, and ``test_the_end_to_end_tolerance_tells_a_wrong_batch_apart`` keeps that margin checked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contdepth.data.pipeline import Batches
from contdepth.train import ConfigError, TrainConfig, load_checkpoint, train
from contdepth.train.distributed import DistributedContext, has_stochastic_depth, launched_distributed
from helpers import REPO_ROOT

ROOT = REPO_ROOT
# 1797 digits with 1437 in the test split leave 360 training images: 6 steps of a global batch of 60.
DIGITS_OPTIONS = {"test_fraction": 0.7996}
MODEL = {"alpha": 4, "n_basis": 1, "norm": "group", "scheme": "euler"}
SEED = 4  # not 3 or 5: those runs part at a ReLU kink (module docstring)
RUN_ATOL = 2e-2  # end-to-end runs: a kink crossing parts them by ~1e-3, a wrong batch by ~0.17 (module docstring)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*train_args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=nproc -m contdepth train ARGS`` on loopback, one thread per process."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "contdepth", "train", *train_args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _torchrun(out: Path, *extra: str, epochs: int = 3) -> subprocess.CompletedProcess:
    """The ContinuousNet run of the equivalence tests on 2 processes; it must succeed."""
    done = _launch(
        "--model", "continuousnet", "--data", "digits", "--data-option",
        f"test_fraction={DIGITS_OPTIONS['test_fraction']}", "--alpha", "4", "--n-basis", "1", "--norm", "group",
        "--scheme", "euler", "--epochs", str(epochs), "--batch-size", "60", "--lr", "0.05", "--schedule", "constant",
        "--refine-at", "2", "--seed", str(SEED), "--out", str(out), *extra,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _single(out: Path | None, epochs: int = 3, batch_size: int = 60, **changes) -> TrainConfig:
    return TrainConfig(model="continuousnet", model_options=MODEL, data="digits", data_options=DIGITS_OPTIONS,
                       epochs=epochs, batch_size=batch_size, lr=0.05, schedule="constant", refine_at=[2], seed=SEED, threads=1, quiet=True,
                       out=None if out is None else str(out), **changes)


def _largest_difference(a: torch.nn.Module, b: torch.nn.Module) -> tuple[str, float]:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    return max(((name, float((sa[name].double() - sb[name].double()).abs().max())) for name in sa),
               key=lambda pair: pair[1])


def _assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module, atol: float = RUN_ATOL) -> None:
    name, difference = _largest_difference(a, b)
    assert difference <= atol, f"{name}: largest difference {difference:.3g} > {atol}"


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """The reference: one process, 3 epochs of 6 steps, refined at epoch 2 (constant lr, so that a
    2-epoch run is the first 2 epochs of this one)."""
    out = tmp_path_factory.mktemp("single") / "run"
    return train(_single(out))


def test_two_processes_match_one_with_the_same_global_batch_across_a_refinement(tmp_path, single_run):
    done = _torchrun(tmp_path / "ddp")
    assert "global batch 60 = 2 x 30 per process, 6 steps per epoch" in done.stdout
    assert done.stdout.count("epoch 3/3") == 1  # rank 0 alone prints
    model, info = load_checkpoint(tmp_path / "ddp")
    assert info.epoch == 3 and [b.n_basis for b in _blocks(model)] == [2, 2, 2]
    _assert_same_parameters(model, single_run.model)
    # the metrics are the global ones, summed over the processes
    ddp_history = info.history
    assert [row["world_size"] for row in ddp_history] == [2, 2, 2]
    assert [row["world_size"] for row in single_run.history] == [1, 1, 1]
    for mine, theirs in zip(ddp_history, single_run.history):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-3)
        assert mine["test_accuracy"] == pytest.approx(theirs["test_accuracy"], abs=3 / 1437)  # 3 of 1437 images
    # the operations are the whole run's, summed over the processes (this model computes nothing per
    # step that does not grow with the batch, so two halves of a batch cost what the batch does)
    for key in ("train_flops", "eval_flops"):
        assert [row[key] for row in ddp_history] == [row[key] for row in single_run.history], key
    # rank 1 wrote nothing of its own: one metrics line per epoch
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 3


def test_the_end_to_end_tolerance_tells_a_wrong_batch_apart(single_run):
    """The control of ``RUN_ATOL``: the global batch split wrongly (30 per step, no average over two
    processes) must fail the comparison by a wide margin, or the end-to-end tests could not fail."""
    wrong = train(_single(None, batch_size=30))
    assert _largest_difference(wrong.model, single_run.model)[1] > 5 * RUN_ATOL


def test_a_checkpoint_written_by_two_processes_resumes_in_one(tmp_path, single_run):
    _torchrun(tmp_path / "run", epochs=2)
    resumed = train(_single(tmp_path / "run", resume=True, extend=True))  # 2 epochs were asked for, 3 now
    assert [row["world_size"] for row in resumed.history] == [2, 2, 1]
    _assert_same_parameters(resumed.model, single_run.model)


# Each rank, at every step of the trainer's recipe (refined after epoch 1, the wrapper rebuilt), computes the
# one-process gradient of the whole global batch at the current parameters and DDP's gradient of its shard.
_STEP_BY_STEP = """
import json
import sys
import torch
import torch.distributed as dist
import torch.nn.functional as F
from contdepth.data import load
from contdepth.models import create
from contdepth.train import TrainConfig, build_optimizer, refine_with_optimizer
from contdepth.train.distributed import setup

context = setup("cpu")
dataset = load("digits", test_fraction=0.7996)
torch.manual_seed(3)
model = create("continuousnet", in_channels=1, num_classes=10, alpha=4, n_basis=1, norm="group", scheme="euler")
optimizer = build_optimizer(model, TrainConfig(batch_size=60, lr=0.05, schedule="constant", seed=3))
whole = dataset.batches("train", 60, seed=3)
shard = dataset.batches("train", 30, seed=3, num_replicas=2, rank=context.rank)
net = context.wrap(model)
rows = lambda t: sorted(map(tuple, t.flatten(1).tolist()))
worst, same_batch, same_parameters = [], True, True
for epoch in range(2):
    if epoch == 1:
        refine_with_optimizer(model, optimizer)
        net = context.wrap(model)
    for (x, y), (xs, ys) in zip(whole.epoch_batches(epoch), shard.epoch_batches(epoch)):
        gathered = [torch.empty_like(xs) for _ in range(2)]
        dist.all_gather(gathered, xs)
        same_batch &= rows(torch.cat(gathered)) == rows(x)
        parameters = list(model.parameters())
        expected = torch.autograd.grad(F.cross_entropy(model(x), y), parameters)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(xs), ys).backward()
        worst.append(max(float((p.grad - g).abs().max()) for p, g in zip(parameters, expected)))
        optimizer.step()
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        rank0 = flat.clone()
        dist.broadcast(rank0, src=0)
        same_parameters &= torch.equal(flat, rank0)
report = {"worst": worst, "same_batch": same_batch, "same_parameters": same_parameters}
with open(f"{sys.argv[1]}/rank{context.rank}.json", "w") as f:  # a file each: stdout lines of two ranks interleave
    json.dump(report, f)
context.close(finished=True)
"""


def test_every_step_equals_the_one_process_step_across_a_refinement(tmp_path):
    """DDP's averaged gradient is the global batch's gradient at the same parameters, before and after
    a refinement, and the ranks hold identical parameters after every step.

    Compared at the same parameters, no ReLU kink can tell the two apart (see the module docstring):
    the only difference is the order of the sums (measured: at most 2.1e-7 over the 12 steps).
    Without the rebuilt wrapper, DDP fails at the first step after the refinement (the new
    coefficients are not registered, the old ones get no gradient).
    """
    script = tmp_path / "steps.py"
    script.write_text(_STEP_BY_STEP)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", str(script), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert report["same_batch"] and report["same_parameters"]
        assert len(report["worst"]) == 12 and max(report["worst"]) <= 1e-6, report["worst"]


# What a rank does with the group, from setup() to close(), in a fresh interpreter (which torch modules are
# already imported decides the outcome), as one gloo process; it prints the gloo threads still running.
_GROUP_LIFETIME = """
import glob, json, os, sys
import torch
from contdepth.train import distributed

os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
distributed.launched_distributed = lambda: True  # one process stands in for a rank of a torchrun launch
context = distributed.setup("cpu")
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GroupNorm(2, 8), torch.nn.Linear(8, 2))
net = context.wrap(model)
net(torch.randn(6, 4)).square().mean().backward()
context.sum([1.0, 2.0])
net = context.wrap(model)  # rebuilt after a refinement
net(torch.randn(6, 4)).square().mean().backward()
context.broadcast_buffers(model)
del net
context.close(finished=True)
names = [open(path).read().strip() for path in glob.glob("/proc/self/task/*/comm")]
print(json.dumps([name for name in names if "gloo" in name]))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists the process's threads through /proc, which only Linux has")
def test_leaving_the_group_ends_its_gloo_threads():
    """After close() no gloo worker thread is left to free a tensor while Python shuts down.

    Before the fix the first DDP wrapper imported modules whose ``group=group.WORLD`` default
    arguments kept the group alive, its threads outlived ``destroy_process_group``, and one of them
    releasing a tensor during interpreter shutdown aborted rank 1 ("terminate called without an
    active exception").
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _GROUP_LIFETIME, str(_free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "[]", "gloo threads alive after close(): " + done.stdout.splitlines()[-1]


def _blocks(model):
    from contdepth.nn import continuous_blocks

    return continuous_blocks(model)


# --- the pieces, without launching processes -----------------------------------------------------------
def test_shards_of_every_step_together_are_the_single_process_batch():
    x, y = torch.randn(23, 1, 2, 2), torch.arange(23)
    whole = Batches(x, y, 6, seed=5)
    shards = [Batches(x, y, 2, seed=5, num_replicas=3, rank=r) for r in range(3)]
    assert len(whole) == 4 and all(len(s) == 4 for s in shards)  # 21 of 23 samples: 7 per process
    for k, ((_, yw), *parts) in enumerate(zip(whole.epoch_batches(1), *(s.epoch_batches(1) for s in shards))):
        together = torch.cat([yb for _, yb in parts])
        if k < 3:
            assert sorted(together.tolist()) == sorted(yw.tolist())
        else:  # the last batch: 5 of 23 for one process, 3 x 1 with the N mod W = 2 samples skipped
            assert set(together.tolist()) <= set(yw.tolist()) and len(together) == 3


def test_evaluation_shards_cover_every_sample_once():
    x, y = torch.randn(10, 1, 2, 2), torch.arange(10)
    seen = [yb for r in range(3)
            for _, yb in Batches(x, y, 4, shuffle=False, num_replicas=3, rank=r, even_shards=False)]
    assert sorted(torch.cat(seen).tolist()) == list(range(10))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_replicas": 0}, "num_replicas: expected an int >= 1"),
    ({"num_replicas": 2, "rank": 2}, r"rank: expected an int in \[0, 1\]"),
    ({"num_replicas": 2, "even_shards": "yes"}, "even_shards: expected true or false"),
])
def test_bad_shard_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Batches(torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.int64), 2, **kwargs)


def test_the_global_batch_must_split_evenly():
    context = DistributedContext(rank=0, world_size=4, local_rank=0, backend="gloo", device=torch.device("cpu"),
                                 owns_group=False)
    assert context.local_batch_size(128) == 32
    with pytest.raises(ConfigError, match="batch_size: the global batch 130 must be divisible by the number of "
                                          r"processes \(4\)"):
        context.local_batch_size(130)


def test_a_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched_distributed()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched_distributed()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_distributed()


def test_stochastic_depth_is_detected_for_ddp():
    from contdepth.models import create

    assert has_stochastic_depth(create("lm_resnet", in_channels=1, num_classes=10, survival=0.5))
    assert not has_stochastic_depth(create("lm_resnet", in_channels=1, num_classes=10))
    assert not has_stochastic_depth(create("continuousnet", in_channels=1, num_classes=10))


def test_graph_datasets_refuse_data_parallel_training():
    done = _launch("--model", "gcn", "--data", "karate", "--epochs", "1")
    assert done.returncode != 0
    assert "is a graph trained full-batch" in done.stderr + done.stdout


@pytest.mark.parametrize("device, backend, target", [("cpu", "gloo", "cpu"), ("cuda", "nccl", "cuda:1")])
def test_the_backend_follows_the_device(monkeypatch, device, backend, target):
    """gloo on CPU, nccl and GPU LOCAL_RANK on CUDA (the group itself is faked: no GPU here)."""
    import torch.distributed as dist

    from contdepth.train import distributed

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, value in (("RANK", "1"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(backend))
    monkeypatch.setattr(distributed, "_import_what_would_pin_the_group", lambda: None)  # a slow import, no group
    monkeypatch.setattr(dist, "get_backend", lambda: calls[0])
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    context = distributed.setup(device)
    assert calls == [backend]
    assert (context.rank, context.world_size, context.backend, str(context.device)) == (1, 2, backend, target)
    assert context.owns_group and not context.is_main


def test_a_fixed_gpu_is_refused_with_several_processes(monkeypatch):
    from contdepth.train import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="device: with several processes use 'cuda'"):
        distributed.setup("cuda:0")

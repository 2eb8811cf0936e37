"""Data-parallel training under torchrun: 2 CPU processes (gloo, loopback) against one process.

The equivalence tests launch the real command (``python -m torch.distributed.run ... -m
contdepth train``) and compare the checkpoint with a single-process run of the same global
batch. The model uses group norm, whose training forward treats samples independently, so
the only difference left is the order of floating-point sums.
"""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[1]
# 1797 digits with 1437 in the test split leave 360 training images: 6 steps of a global batch of 60.
DIGITS_OPTIONS = {"test_fraction": 0.7996}
MODEL = {"alpha": 4, "n_basis": 1, "norm": "group", "scheme": "euler"}


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
        "--refine-at", "2", "--seed", "3", "--out", str(out), *extra,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _single(out: Path | None, epochs: int = 3, **changes) -> TrainConfig:
    return TrainConfig(model="continuousnet", model_options=MODEL, data="digits", data_options=DIGITS_OPTIONS,
                       epochs=epochs, batch_size=60, lr=0.05, schedule="constant", refine_at=[2], seed=3, threads=1, quiet=True,
                       out=None if out is None else str(out), **changes)


def _assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module, atol: float = 1e-5) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        difference = float((sa[name].double() - sb[name].double()).abs().max())
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
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-5)
        assert mine["test_accuracy"] == pytest.approx(theirs["test_accuracy"], abs=1e-9)
    # rank 1 wrote nothing of its own: one metrics line per epoch
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_checkpoint_written_by_two_processes_resumes_in_one(tmp_path, single_run):
    _torchrun(tmp_path / "run", epochs=2)
    resumed = train(_single(tmp_path / "run", resume=True))
    assert [row["world_size"] for row in resumed.history] == [2, 2, 1]
    _assert_same_parameters(resumed.model, single_run.model)


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

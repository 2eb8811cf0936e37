"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` + DistributedDataParallel.

``torchrun --nproc_per_node=N -m contdepth train ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their
environment; `setup` reads them and joins the process group (``gloo`` on CPU,
``nccl`` on CUDA). A caller that has already called ``init_process_group`` itself is
joined as it is. Without those variables a run is a single process and nothing here is
used.

What data parallelism means in this library (see [`Batches`][contdepth.data.Batches]):

- ``batch_size`` is the **global** batch. Each of the ``W`` processes takes
  ``batch_size / W`` samples of every step, sharded by torch's ``DistributedSampler`` from
  the same seeded permutation, and DDP averages the gradients. The mean of ``W`` equal
  shard means is the global mean, so a step equals the single-process step with the same
  global batch (up to the order of floating-point sums) for any model whose forward pass
  treats samples independently in training: group/layer norm or none. BatchNorm in
  training normalises each shard by its own statistics, as it does under DDP everywhere.
- A checkpoint is the same whatever ``W`` wrote it (the model, the optimizer, the global
  step), so a run written by N processes resumes with any other number.
- Refinement happens at the same epoch on every rank (it is part of the configuration);
  the parameters it creates are new tensors, so the DDP wrapper is rebuilt around them
  (`DistributedContext.wrap`) to register its gradient hooks on the new ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError

ENV_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a data-parallel run: ``rank`` of ``world_size`` processes.

    ``owns_group`` records whether `setup` created the process group (and so must
    destroy it at the end) or found it initialised by the caller.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and progress output."""
        return self.rank == 0

    def local_batch_size(self, global_batch: int) -> int:
        """The per-process share of ``global_batch``; it must divide evenly so every shard weighs the same."""
        if global_batch % self.world_size:
            raise ConfigError(f"batch_size: the global batch {global_batch} must be divisible by the number of "
                              f"processes ({self.world_size}), so that every process takes an equal share")
        return global_batch // self.world_size

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel; call again after refinement replaced parameters.

        ``find_unused_parameters`` is switched on only for models that skip work at random
        (stochastic depth), because it costs a graph traversal per step.
        """
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids,
                                       find_unused_parameters=has_stochastic_depth(model))

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64, on the backend's device)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device if self.backend == "nccl" else "cpu")
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Make every process hold rank 0's buffers (BatchNorm running statistics).

        DDP broadcasts them at the start of each *training* forward; between the last
        training step and an evaluation they may differ (each shard updated its own).
        """
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def close(self, *, finished: bool) -> None:
        """Leave the process group this context created (a caller's own group is left alone).

        After a ``finished`` run all ranks meet at a barrier first (rank 0 still writes its
        last checkpoint after the final collective), so that no rank closes its connections
        while a peer may still use them. After an error there is no barrier (the others may
        be inside a collective that will never complete); this process exits and torchrun
        stops the rest.

        On both paths ``destroy_process_group`` frees the group and so joins the gloo worker
        threads while Python is fully alive: no thread is left to free a tensor during
        interpreter shutdown, which aborted rank 1 (see `_import_what_would_pin_the_group`;
        a barrier cannot prevent that, it orders the ranks, not a rank's own threads).
        """
        if self.owns_group and dist.is_initialized():
            try:
                if finished:
                    self.barrier()
            finally:
                dist.destroy_process_group()


def has_stochastic_depth(model: nn.Module) -> bool:
    """Whether some module skips sub-networks at random in training (``drop_rates`` > 0)."""
    return any(max(getattr(m, "drop_rates", ()) or (0.0,)) > 0 for m in model.modules())


def _import_what_would_pin_the_group() -> None:
    """Import ``torch._dynamo`` before the process group exists, so that leaving the group ends its threads.

    Why (the root cause of rank 1's "terminate called without an active exception", SIGABRT
    after a finished run): ``destroy_process_group`` drops torch's own references to the group,
    and the gloo backend joins its worker threads only when the last reference goes. The first
    ``DistributedDataParallel`` of a process imports ``torch._dynamo``, which imports
    ``torch.distributed.nn.functional`` and ``torch.distributed.fsdp.sharded_grad_scaler``, whose
    functions take ``group=group.WORLD`` as a default argument; evaluated while our group exists,
    those defaults hold it for the life of the process, so its threads outlive `close` into
    interpreter shutdown. A gloo worker keeps a finished work (and the tensors in it) a moment
    after ``wait()`` returns; when it drops the last reference to a tensor made in Python
    (`DistributedContext.sum`'s), it takes the GIL to free the Python object, and if the
    main thread has begun finalizing by then, CPython ends that thread with ``pthread_exit``,
    whose unwinding through a ``noexcept`` destructor calls ``std::terminate`` (pytorch issues
    190489 and 38228). Rare, and likelier under CPU load, when a worker waits long for a core.

    Imported first, those defaults are ``None``; ``destroy_process_group`` then frees the group
    and joins its threads while Python is fully alive. DDP would import the module anyway, so a
    distributed run pays nothing extra; a single-process run never comes here.
    """
    import torch._dynamo as _  # noqa: F401


def launched_distributed() -> bool:
    """True inside ``torchrun`` with more than one process, or when the caller initialised a group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> DistributedContext | None:
    """Join the data-parallel run this process was started in, or ``None`` for a single process.

    ``device`` is the configuration's: ``cpu`` gives the ``gloo`` backend; ``cuda`` gives
    ``nccl`` and this process's GPU ``cuda:LOCAL_RANK`` (``cuda:N`` is refused: every
    process would use the same GPU).
    """
    if not launched_distributed():
        return None
    if not dist.is_available():
        raise ConfigError("distributed: this torch build has no torch.distributed")
    if device.startswith("cuda:"):
        raise ConfigError(f"device: with several processes use 'cuda' (each process takes GPU LOCAL_RANK), "
                          f"not {device!r}")
    owns = not dist.is_initialized()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda was asked for but torch sees no GPU")
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if owns:
        missing = [name for name in ENV_VARIABLES + ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise ConfigError(f"distributed: WORLD_SIZE > 1 but {', '.join(missing)} not set; launch with torchrun")
        _import_what_would_pin_the_group()
        dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo")
    backend = str(dist.get_backend())
    if target.type == "cuda" and backend != "nccl" or target.type == "cpu" and backend not in ("gloo", "mpi"):
        raise ConfigError(f"distributed: the process group uses {backend!r}, which cannot run device {device!r}")
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                              backend=backend, device=target, owns_group=owns)

"""Exact floating-point operation counts of a run's training steps and evaluation passes.

Wall and CPU seconds move with whatever else the machine runs (issue 27 measured 21 % for
one config across suites); the operations a run performs do not. So every epoch's metrics
row records ``train_flops`` and ``eval_flops``, counted here.

**What is counted.** `torch.utils.flop_counter.FlopCounterMode`'s own rules: the
matrix products and convolutions (``mm``, ``addmm``, ``bmm``, ``baddbmm``,
``convolution`` and ``convolution_backward``, attention), two operations per
multiply-add, so a ``(b, n) x (n, m)`` product is ``2 b n m``. Elementwise work
(activations, normalisation, residual additions, the loss, the optimizer's update) has no
rule there and counts zero: the optimizer step is left out for that reason, and so are
sparse products (a graph's propagation), which it does not count either. A training step is
one forward in train mode and one backward (of ``output.sum()``: the loss's own
operations are uncounted, and the backward of any scalar of the output runs the same
products); an evaluation pass is one forward in eval mode without gradients, at the
evaluation manifestation (``eval_scheme``/``eval_n_steps``).

**How.** A task lists the inputs of its steps as `Probe`s: one per distinct input shape,
with how many steps of that shape an epoch takes (an image epoch has full batches and
perhaps one smaller last batch). `FlopCounter` counts one step of each probe once per
distinct model shape and manifestation (`model_signature`; a refinement changes the
shape, so the next epoch is counted again) and multiplies by the probe's count. The count
of a batch is exact for that batch size: it is *affine* in the batch size, ``per_example
x b + per_step``, not linear, because a ContinuousBlock evaluates its weights
``theta(t)`` from the coefficients once per step whatever the batch (a few hundred
operations next to millions per example). So an epoch's FLOPs are ``per_example x
examples + per_step x steps``, which counting each batch shape gives without assuming
anything (`per_example_flops` reports the two parts).

**Training is unchanged.** Counting runs on a copy of the model on the ``meta`` device
(shapes only: no memory, no arithmetic, no running-statistics update of the real model).
A model the ``meta`` device cannot run (a data-dependent ``.item()``, a sparse input) is
counted on a copy on its own device, whose normalisation statistics change only in the
copy. Either way the draws come from seed 0 inside ``torch.random.fork_rng``, so the
run's random state is given back untouched.

**Random architecture.** Where a draw decides which operations run (stochastic depth:
LM-ResNet with ``survival < 1`` skips whole units), the count is that of the fixed seed-0
draw, the same at every count (so a resumed run records what the uninterrupted one did),
but one sample: the epoch's real steps skip other units. Compare such a model's FLOPs as
an estimate, not exactly.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..nn import continuous_blocks, manifest

__all__ = ["FlopCounter", "Probe", "batch_counts", "count_step_flops", "model_signature", "per_example_flops"]


@dataclass(frozen=True)
class Probe:
    """The inputs of one kind of step (``model(*inputs)``) and how many such steps an epoch takes.

    ``inputs`` may be ``meta`` tensors (only their shape and dtype matter) or real ones (a
    graph's sparse adjacency, which the ``meta`` device cannot hold).
    """

    inputs: tuple[torch.Tensor, ...]
    count: int

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 0:
            raise ValueError(f"count: expected an integer >= 0, got {self.count!r}")


def batch_counts(samples: int, batch_size: int, *, drop_last: bool = False) -> dict[int, int]:
    """``{batch size: batches}`` of one pass over ``samples`` in batches of ``batch_size``."""
    if samples < 0 or batch_size < 1:
        raise ValueError(f"samples/batch_size: need samples >= 0 and batch_size >= 1, got {samples}, {batch_size}")
    full, rest = divmod(samples, batch_size)
    counts = {batch_size: full} if full else {}
    if rest and not drop_last:
        counts[rest] = 1
    return counts


def image_probes(counts: dict[int, int], example_shape: Sequence[int]) -> list[Probe]:
    """`Probe`s of float32 image batches ``(b, *example_shape)``, one per batch size in ``counts``."""
    return [Probe((torch.empty((b, *example_shape), device="meta"),), n) for b, n in counts.items() if n]


def model_signature(model: nn.Module) -> tuple:
    """What the FLOPs of a step depend on in the model: every tensor's name, shape and dtype, and
    each ContinuousBlock's scheme and step count (refinement and growth change it)."""
    tensors = tuple((name, tuple(t.shape), t.dtype) for name, t in model.state_dict().items())
    blocks = tuple((b.scheme.name, b.n_steps) for b in continuous_blocks(model))
    return tensors, blocks


def _input_signature(inputs: Iterable[torch.Tensor]) -> tuple:
    return tuple((tuple(t.shape), t.dtype, t.layout) for t in inputs)


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on ``meta`` (no data is copied)."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo).to("meta")


def _run(model: nn.Module, inputs: tuple[torch.Tensor, ...], train: bool, scheme: str | None,
         n_steps: int | None) -> int:
    """Count one step of ``model`` (already a copy: it is changed) on ``inputs``."""
    model.train(train)
    context = manifest(model, scheme, n_steps) if (scheme is not None or n_steps is not None) else None
    counter = FlopCounterMode(display=False)
    with counter, torch.set_grad_enabled(train):
        if context is not None:
            with context:
                out = model(*inputs)
        else:
            out = model(*inputs)
        if train:
            out.float().sum().backward()
    return int(counter.get_total_flops())


#: Below this many (parameters x input values), a CPU step is counted on a real copy: the ``meta``
#: device runs every operation through Python decompositions at a fixed cost per operation
#: (0.32 s for a 4-cell digits ContinuousNet's training step at batch 64, against 0.08 s for the
#: real step under the counter), so for small steps real arithmetic is the cheaper way to the same count.
SMALL_STEP = 10**10


def small_step(model: nn.Module, inputs: Sequence[torch.Tensor], device: torch.device) -> bool:
    """Whether a step is cheaper to count on a real CPU copy than on ``meta`` (`SMALL_STEP`).

    Only a speed choice: both devices see the same operations on the same shapes, so the
    count is the same (tested); a model on an accelerator is always counted on ``meta``
    (a real copy there would take its memory).
    """
    if device.type != "cpu":
        return False
    parameters = sum(p.numel() for p in model.parameters())
    values = sum(t.numel() for t in inputs)
    return parameters * values < SMALL_STEP


def count_step_flops(model: nn.Module, inputs: Sequence[torch.Tensor], *, train: bool, scheme: str | None = None,
                     n_steps: int | None = None) -> int:
    """The FLOPs of one step of ``model`` on ``inputs``: forward and backward (``train``) or an
    eval-mode forward at the ``scheme``/``n_steps`` manifestation; ``model`` is left as it was."""
    inputs = tuple(inputs)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    if not small_step(model, inputs, device):
        with _fixed_draws(device):
            try:
                return _run(_meta_copy(model), tuple(t.to("meta") for t in inputs), train, scheme, n_steps)
            except (RuntimeError, NotImplementedError, TypeError, ValueError):
                pass  # the meta device cannot run this model or input: count a real copy
    real = tuple(torch.zeros(t.shape, dtype=t.dtype, device=device) if t.is_meta else t for t in inputs)
    with _fixed_draws(device):
        return _run(copy.deepcopy(model), real, train, scheme, n_steps)


@contextmanager
def _fixed_draws(device: torch.device) -> Iterator[None]:
    """Random draws inside come from seed 0 and the caller's generators are given back afterwards.

    A model whose operations depend on a draw (LM-ResNet's stochastic depth skips a unit
    when ``torch.rand(())`` says so) is then counted the same way every time, whatever
    the run's random state, and the run's own draws are untouched.
    """
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.random.default_generator.manual_seed(0)
        if cuda:
            torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()
                                          ].manual_seed(0)
        yield


def per_example_flops(model: nn.Module, example_shape: Sequence[int], *, train: bool, scheme: str | None = None,
                      n_steps: int | None = None) -> tuple[int, int]:
    """``(per_example, per_step)``: a step on a batch of ``b`` images costs ``per_example x b + per_step``.

    From counts at batch sizes 1 and 2 (on ``meta``: free). ``per_step`` is the part that
    does not grow with the batch (a ContinuousBlock's weights evaluated from its coefficients).
    """
    one, two = (count_step_flops(model, (torch.empty((b, *example_shape), device="meta"),), train=train,
                                 scheme=scheme, n_steps=n_steps) for b in (1, 2))
    return two - one, 2 * one - two


class FlopCounter:
    """Epoch FLOPs from `Probe`s, each step shape counted once per model shape and manifestation.

    One lives for a run (the cache does not outlast it); `epoch` sums ``count x step FLOPs``
    over the probes. The cache key is (`model_signature`, the inputs' shapes, train or eval,
    the manifestation), so a refined model is counted afresh and an unchanged one never again.
    """

    def __init__(self) -> None:
        self._cache: dict[Hashable, int] = {}
        self.failed = False  # a model that could not be counted once is not tried again

    @property
    def counted(self) -> int:
        """Distinct steps counted so far (what the cache holds)."""
        return len(self._cache)

    def step(self, model: nn.Module, inputs: Sequence[torch.Tensor], *, train: bool, scheme: str | None = None,
             n_steps: int | None = None) -> int:
        key = (model_signature(model), _input_signature(inputs), train, scheme, n_steps)
        if key not in self._cache:
            self._cache[key] = count_step_flops(model, inputs, train=train, scheme=scheme, n_steps=n_steps)
        return self._cache[key]

    def epoch(self, model: nn.Module, probes: Iterable[Probe], *, train: bool, scheme: str | None = None,
              n_steps: int | None = None) -> int:
        """The FLOPs of an epoch's steps: ``sum(probe.count x step FLOPs)``."""
        return sum(p.count * self.step(model, p.inputs, train=train, scheme=scheme, n_steps=n_steps)
                   for p in probes if p.count)

    def epoch_columns(self, model: nn.Module, probes_of: Callable[..., Sequence[Probe]], *, eval_scheme: str | None,
                      eval_n_steps: int | None, log: Callable[[str], None]) -> dict[str, int]:
        """``train_flops`` and ``eval_flops`` of the epoch just run: the metrics row's cost columns.

        ``probes_of(train=...)`` is the task's `Probe`s of the epoch's training steps or
        evaluation passes (at ``eval_scheme``/``eval_n_steps``). Counted on a copy of
        ``model`` (the unwrapped one: DDP and ``compile`` change no operation), never the model
        itself, so training is unchanged. A model that cannot be counted even on a real copy
        trains on: the columns are left out of its rows (a report then names the run as
        lacking them) and ``log`` says why, once.
        """
        if self.failed:
            return {}
        columns = {}
        try:
            for key, train in (("train_flops", True), ("eval_flops", False)):
                probes = probes_of(train=train)
                if probes:
                    columns[key] = self.epoch(model, probes, train=train, scheme=None if train else eval_scheme,
                                              n_steps=None if train else eval_n_steps)
        except (RuntimeError, NotImplementedError, TypeError, ValueError, copy.Error) as exc:
            self.failed = True
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log(f"train_flops/eval_flops: not counted for this run (the model could not be run on a copy: {first})")
            return {}
        return columns

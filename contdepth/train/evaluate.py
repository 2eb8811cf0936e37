"""Evaluation of images (mini-batches), graphs (one full-batch pass) and text (a fixed sample of windows), at the
training manifestation or any other."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..common.errors import OptionError
from ..nn import adaptive_depth, continuous_blocks, manifest
from .options import DEFAULT_SCHEMES, DEFAULT_STEPS  # noqa: F401  (the grid's one default, here since issue 5)

if TYPE_CHECKING:
    from .distributed import DistributedContext

SPLITS = ("train", "val", "test")  # a graph dataset's node splits


# --- node classification: one full-batch forward pass ------------------------------------------------------------------------------------
def split_mask(dataset, split: str) -> torch.Tensor:
    """The boolean node mask of ``split`` (``train``, ``val`` or ``test``); checked to be usable."""
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {', '.join(SPLITS)} for a graph dataset; got {split!r}")
    mask = getattr(dataset, f"{split}_mask")
    if int(mask.sum()) == 0:
        raise ValueError(f"dataset: the {split} split is empty")
    return mask


@torch.no_grad()
def node_metrics(model: nn.Module, dataset, splits: Sequence[str] = ("val", "test"), *, scheme: str | None = None,
                 n_steps: int | None = None) -> dict[str, tuple[float, float]]:
    """``{split: (mean cross-entropy, accuracy)}`` from *one* eval-mode forward pass over the graph.

    ``dataset`` must already be on the model's device. ``scheme``/``n_steps`` evaluate
    another manifestation of every ContinuousBlock (restored afterwards); the model's
    mode is restored too.
    """
    masks = {s: split_mask(dataset, s) for s in splits}
    was_training = model.training
    model.eval()
    context = manifest(model, scheme, n_steps) if (scheme is not None or n_steps is not None) else nullcontext()
    try:
        with context:
            logits = model(*dataset.inputs)
    finally:
        model.train(was_training)
    out = {}
    for s, mask in masks.items():
        selected, labels = logits[mask], dataset.labels[mask]
        out[s] = (float(F.cross_entropy(selected, labels)), float((selected.argmax(dim=1) == labels).float().mean()))
    return out


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int = 500, *, scheme: str | None = None,
             n_steps: int | None = None, split: str = "test", device: str | torch.device | None = None,
             distributed: DistributedContext | None = None) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy in [0, 1])`` of ``model`` on ``dataset``'s ``split``.

    ``scheme``/``n_steps`` evaluate another manifestation of every ContinuousBlock
    (``contdepth.nn.manifest``), restored afterwards; ``None`` keeps the model's own. The
    model is evaluated in eval mode (running statistics) and its mode is restored.
    ``device`` defaults to the model's. A graph dataset (``is_graph``) is evaluated
    full-batch on the nodes of ``split``'s mask (``batch_size`` is then unused); a text dataset
    (``is_text``) on ``split``'s fixed evaluation sample (`TextDataset.eval_batches`: evenly spaced
    windows of the model's ``context + 1`` bytes, the same at every evaluation, so every row and
    manifestation is compared on the same bytes), in nats per byte and next-byte accuracy.
    ``distributed`` (a `DistributedContext`, inside a
    data-parallel run) makes each process evaluate every ``W``-th sample and sums the
    results over processes, so all of them return the metrics of the whole split.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    if getattr(dataset, "is_graph", False):
        return node_metrics(model, dataset.to(device), (split,), scheme=scheme, n_steps=n_steps)[split]
    if getattr(dataset, "is_text", False):  # the split's fixed sample of windows; every ``W``-th batch per process
        context = model_context(model)
        batches = dataset.eval_batches(split, batch_size, context, device=device)
        if distributed is not None:
            batches = batches[distributed.rank::distributed.world_size]
        empty = f"the {split} split has no evaluation window of {context + 1} bytes"
    else:
        shard = {} if distributed is None else {
            "num_replicas": distributed.world_size, "rank": distributed.rank, "even_shards": False}
        batches = dataset.batches(split, batch_size, shuffle=False, augment=False, device=device, **shard)
        empty = f"the {split} split is empty"
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    context_manager = manifest(model, scheme, n_steps) if (scheme is not None or n_steps is not None) else nullcontext()
    try:
        with context_manager:
            for xb, yb in batches:
                # a text model's logits (windows, tokens, 256) and targets (windows, tokens): one row per byte
                logits, yb = model(xb).flatten(0, -2), yb.flatten()
                total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(dim=1) == yb).sum())
                count += len(yb)
    finally:
        model.train(was_training)
    if distributed is not None:
        total_loss, correct, count = distributed.sum([total_loss, correct, count])
    if count == 0:
        raise ValueError(f"dataset: {empty}")
    return total_loss / count, correct / count


def model_context(model: nn.Module) -> int:
    """The longest input a text model takes: its integer attribute ``context`` (every text model must say it)."""
    module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    context = getattr(module, "context", None)
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise OptionError("model", f"a text model must say the longest input it takes in an integer attribute "
                                   f"'context'; {type(module).__name__} has {context!r}")
    return context


@dataclass(frozen=True)
class AdaptiveResult:
    """Accuracy and cost of one adaptive-depth evaluation ([`evaluate_adaptive`][contdepth.train.evaluate_adaptive]).

    ``evaluations[i]`` and ``steps[i]`` are block ``i``'s rate evaluations and accepted
    steps per batch (mean over the batches); ``fixed_evaluations[i]`` is what the
    block's own fixed grid spends per batch, for comparison.
    """

    rtol: float
    atol: float
    scheme: str
    loss: float
    accuracy: float
    evaluations: tuple[float, ...]
    steps: tuple[float, ...]
    rejected: tuple[int, ...]
    fixed_evaluations: tuple[int, ...]
    batch_size: int


@torch.no_grad()
def evaluate_adaptive(model: nn.Module, dataset, rtol: float, atol: float, *, scheme: str = "dopri5",
                      batch_size: int = 500, split: str = "test", max_steps: int = 10_000,
                      device: str | torch.device | None = None) -> AdaptiveResult:
    """Evaluate with every ContinuousBlock integrated adaptively ([`contdepth.nn.adaptive_depth`][contdepth.nn.adaptive_depth]).

    The step size is shared by a batch (its error norm is an RMS over the batch), so the
    evaluation counts depend a little on ``batch_size``.
    """
    fixed = tuple(block.units for block in continuous_blocks(model))
    context = adaptive_depth(model, rtol, atol, scheme=scheme, max_steps=max_steps)
    with context as record:
        loss, accuracy = evaluate(model, dataset, batch_size, split=split, device=device)
    return AdaptiveResult(rtol=float(rtol), atol=float(atol), scheme=str(scheme), loss=loss, accuracy=accuracy,
                          evaluations=tuple(record.mean_evaluations()), steps=tuple(record.mean_steps()),
                          rejected=tuple(record.rejected()), fixed_evaluations=fixed, batch_size=batch_size)


def format_adaptive_table(results: Sequence[AdaptiveResult]) -> str:
    """One row per tolerance: evaluations per block (mean per batch) and test accuracy."""
    if not results:
        return ""
    n_blocks = len(results[0].evaluations)
    head = f"{'rtol':>9} {'atol':>9}" + "".join(f"{'block ' + str(i + 1):>10}" for i in range(n_blocks))
    lines = [f"adaptive depth ({results[0].scheme}): rate evaluations per block and batch of "
             f"{results[0].batch_size}, test accuracy",
             head + f"{'total':>9}{'accuracy':>10}"]
    for r in results:
        lines.append(f"{r.rtol:>9.0e} {r.atol:>9.0e}" + "".join(f"{e:>10.1f}" for e in r.evaluations)
                     + f"{sum(r.evaluations):>9.1f}{100 * r.accuracy:>9.2f}%")
    fixed = results[0].fixed_evaluations
    lines.append(f"{'fixed grid (trained)':>19}" + "".join(f"{e:>10d}" for e in fixed) + f"{sum(fixed):>9d}")
    return "\n".join(lines)


def manifestation_table(model: nn.Module, dataset, schemes: Sequence[str] = DEFAULT_SCHEMES,
                        steps: Sequence[int] = DEFAULT_STEPS, batch_size: int = 500,
                        device: str | torch.device | None = None, *, split: str = "test",
                        measure: str = "accuracy") -> dict[tuple[str, int], float]:
    """``measure`` (``"accuracy"`` or ``"loss"``) on ``split`` of every manifestation ``(scheme, n_steps)``
    of the same trained model (a text model's is its loss, in nats per byte, on the validation sample)."""
    if measure not in ("accuracy", "loss"):
        raise ValueError(f"measure: must be accuracy or loss, got {measure!r}")
    index = 1 if measure == "accuracy" else 0
    return {(s, n): evaluate(model, dataset, batch_size, scheme=s, n_steps=n, split=split, device=device)[index]
            for s in schemes for n in steps}


def format_manifestation_table(table: dict[tuple[str, int], float], *, trained: tuple[str, int] | None = None,
                               title: str = "test accuracy (%)", percent: bool = True) -> str:
    """A text table, one row per scheme and one column per step count (accuracy in %, or ``percent=False``:
    the values as they are, a loss).

    ``trained`` marks the training manifestation with ``*``.
    """
    schemes = list(dict.fromkeys(s for s, _ in table))
    steps = sorted({n for _, n in table})
    width = max(8, *(len(s) for s in schemes))
    lines = [f"{title} by manifestation: scheme x steps per block"
             + ("   (* = trained)" if trained else "")]
    lines.append(f"{'scheme':<{width}}" + "".join(f"{n:>9}" for n in steps))
    for s in schemes:
        cells = []
        for n in steps:
            value = table.get((s, n))
            mark = "*" if trained == (s, n) else " "
            shown = f"{100 * value:>8.2f}" if percent else f"{value:>8.4f}"
            cells.append(f"{'':>9}" if value is None else f"{shown}{mark}")
        lines.append(f"{s:<{width}}" + "".join(cells))
    return "\n".join(lines)

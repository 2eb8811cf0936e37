"""Convergence and invariance of a trained model across its manifestations.

For every ``(scheme, n_steps)`` in a grid, [`analyze_manifestations`][contdepth.analysis.analyze_manifestations] measures the
test accuracy and how far each ContinuousBlock's output and the logits are from a
*reference* manifestation (a much finer grid): ``||y - y_ref|| / ||y_ref||`` over all
evaluated examples. If the model really is a discretisation of one continuous
function, those errors fall like ``n_steps^-p`` with ``p`` the scheme's order, and the
fitted orders say so; a trained ResNet read as a piecewise-constant ``theta(t)`` (see
`contdepth.analysis.reading`) is the standard counter-example.

The analysis runs on a copy of the model, by default in float64: an order is only
visible while the errors stay above round-off, and a smooth rate integrated with rk4
reaches float32's round-off within a few doublings of the steps. ``dtype="float32"`` is
about 7x faster for convolutions on a CPU (float64 has no oneDNN kernels) and is enough
for ReLU networks, whose errors fall only at order 2.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..common.progress import Progress
from ..common.validate import check_int
from ..nn import ContinuousBlock, adaptive_depth, continuous_blocks, manifest
from ..solvers import RungeKutta, available_schemes, check_n_steps, get_scheme
from ..train.config import EVAL_BATCH_SIZE
from ..train.evaluate import (  # one grid default for eval --table and analyze
    DEFAULT_SCHEMES,
    DEFAULT_STEPS,
    model_context,
)
from .convergence import fit_order
from .reading import as_continuous
from .report import ManifestationReport, ManifestationRow, OrderRow

if TYPE_CHECKING:
    from ..data import Dataset

REFERENCE_FACTOR = 4
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class Reference:
    """The manifestation the others are compared against.

    ``Reference("rk4", 64)``: a fixed grid; ``n_steps=None`` means four times the largest
    step count analysed. ``Reference("dopri5", adaptive=True, rtol=..., atol=...)``: an
    adaptive embedded pair at a tight tolerance (see [`reference_manifestation`][contdepth.analysis.reference_manifestation]).

    Four times, not two: the error measured at the finest analysed grid ``N`` is
    ``|x_N - x_ref|``, and with a reference only twice as fine its own error is still a
    quarter of ``x_N``'s for an order-2 field (a ReLU rate converges at order 2 whatever
    the scheme), which bends the last point of the fit by up to 0.3 in the local order.
    """

    scheme: str = "rk4"
    n_steps: int | None = None
    adaptive: bool = False
    rtol: float = 1e-9
    atol: float = 1e-9

    def __post_init__(self) -> None:
        if self.scheme not in available_schemes():
            raise ValueError(f"reference: scheme must be one of {', '.join(available_schemes())}; got {self.scheme!r}")
        if self.adaptive:
            if not _is_embedded(self.scheme):
                raise ValueError(f"reference: {self.scheme!r} has no error estimate, so it cannot be adaptive; "
                                 "use dopri5 or bosh3")
            if self.n_steps is not None:
                raise ValueError("reference: an adaptive reference chooses its own steps; give no n_steps")
            for name in ("rtol", "atol"):
                value = getattr(self, name)
                if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                    raise ValueError(f"reference: {name} must be a number > 0, got {value!r}")
        elif self.n_steps is not None:
            check_n_steps(self.n_steps, "reference")

    def resolved(self, steps: Sequence[int]) -> "Reference":
        """With ``n_steps`` filled in (four times the largest analysed step count)."""
        if self.adaptive or self.n_steps is not None:
            return self
        return Reference(self.scheme, REFERENCE_FACTOR * max(steps))

    def describe(self) -> str:
        if self.adaptive:
            return f"{self.scheme} adaptive (rtol {self.rtol:g}, atol {self.atol:g})"
        steps = self.n_steps if self.n_steps is not None else f"{REFERENCE_FACTOR} x max(steps)"
        return f"{self.scheme} with {steps} steps"


def _is_embedded(scheme: str) -> bool:
    resolved = get_scheme(scheme)
    return isinstance(resolved, RungeKutta) and resolved.tableau.is_embedded


def parse_reference(text: str) -> Reference:
    """Read a reference from text (the ``--reference`` option).

    ``"rk4:64"``: a fixed grid of 64 rk4 steps; ``"rk4"``: rk4 with four times the largest
    analysed step count; ``"dopri5"`` or ``"bosh3"`` alone: adaptive at tolerance 1e-9;
    ``"dopri5:1e-10"``: adaptive at that tolerance (a number that is not an integer).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"reference: expected SCHEME[:STEPS] or dopri5[:TOL], got {text!r}")
    scheme, sep, value = text.strip().partition(":")
    if scheme not in available_schemes():
        raise ValueError(f"reference: scheme must be one of {', '.join(available_schemes())}; got {scheme!r}")
    if not sep:
        return Reference(scheme, adaptive=_is_embedded(scheme))
    try:
        steps = int(value)
    except ValueError:
        pass
    else:
        return Reference(scheme, steps)
    try:
        tol = float(value)
    except ValueError:
        raise ValueError(f"reference: expected SCHEME:STEPS (an integer) or SCHEME:TOL (an adaptive tolerance), "
                         f"got {text!r}") from None
    return Reference(scheme, adaptive=True, rtol=tol, atol=tol)


def reference_manifestation(model: nn.Module, reference: Reference) -> AbstractContextManager:
    """A context manager under which ``model`` computes the reference manifestation.

    A fixed-grid reference is an ordinary manifestation; an adaptive one is
    [`contdepth.nn.adaptive_depth`][contdepth.nn.adaptive_depth]: every ContinuousBlock integrates with the
    embedded pair at ``reference.rtol``/``atol``, stepping exactly onto its basis'
    breakpoints. Raises ``ValueError`` (naming ``reference``) for a model it cannot apply to.
    """
    if not reference.adaptive:
        if reference.n_steps is None:
            raise ValueError("reference: n_steps is not resolved; call reference.resolved(steps) first")
        return manifest(model, reference.scheme, reference.n_steps)
    try:
        return adaptive_depth(model, reference.rtol, reference.atol, scheme=reference.scheme)
    except ValueError as exc:
        raise ValueError(f"reference: the adaptive {reference.scheme} reference cannot be used: {exc}") from exc


def check_grid(schemes: Iterable[str], steps: Iterable[int]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Validated, de-duplicated schemes and ascending step counts (``ValueError`` naming the argument)."""
    schemes = tuple(dict.fromkeys(schemes))
    if not schemes:
        raise ValueError("schemes: give at least one scheme")
    for s in schemes:
        if s not in available_schemes():
            raise ValueError(f"schemes: must be among {', '.join(available_schemes())}; got {s!r}")
    steps_list = list(steps)
    if not steps_list:
        raise ValueError("steps: give at least one step count")
    for n in steps_list:
        check_int(int(n) if isinstance(n, np.integer) else n, "steps", low=1)
    return schemes, tuple(sorted({int(n) for n in steps_list}))


def aligned(blocks: Sequence[ContinuousBlock], n_steps: int) -> bool:
    """Whether a uniform grid of ``n_steps`` steps puts a step boundary on every basis breakpoint.

    (Breakpoints are exact fractions, so ``b * n_steps`` is an integer exactly when it should be.)

    Only then does every step see a smooth ``theta(t)``, so only then does a scheme show
    its order: a step across a jump of a piecewise-constant ``theta`` has an O(1) local
    error whatever the scheme, which makes the convergence O(h) at best.
    """
    return all((b * n_steps).denominator == 1 for block in blocks for b in block.basis.breakpoints)


class _Capture:
    """Forward hooks that keep each block's latest output (one entry per block, in order)."""

    def __init__(self, blocks: Sequence[ContinuousBlock]) -> None:
        self.outputs: list[torch.Tensor | None] = [None] * len(blocks)
        self._handles = [block.register_forward_hook(self._hook(i)) for i, block in enumerate(blocks)]

    def _hook(self, i: int):
        def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.outputs[i] = output

        return keep

    def take(self) -> list[torch.Tensor]:
        outputs, self.outputs = self.outputs, [None] * len(self.outputs)
        if any(o is None for o in outputs):
            raise RuntimeError("model: a ContinuousBlock was not called in the forward pass")
        return outputs  # type: ignore[return-value]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(config["name"]) if isinstance(config, dict) and "name" in config else type(model).__name__


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    first = next(model.parameters(), None)
    return (first.dtype, first.device) if first is not None else (torch.float32, torch.device("cpu"))


@torch.no_grad()
def analyze_manifestations(
    model: nn.Module,
    dataset: Dataset,
    *,
    schemes: Sequence[str] = DEFAULT_SCHEMES,
    steps: Sequence[int] = DEFAULT_STEPS,
    reference: Reference | str | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
    max_examples: int | None = None,
    dtype: torch.dtype | str | None = torch.float64,
    device: str | torch.device | None = None,
    split: str = "test",
    progress: bool = False,
) -> ManifestationReport:
    """Accuracy and errors against a reference of every manifestation ``schemes x steps``.

    Args:
        model: a model with ContinuousBlocks, or a [`ResNet`][contdepth.models.ResNet]
            (read with [`resnet_as_continuous`][contdepth.analysis.resnet_as_continuous]). It is not
            modified: the analysis runs on a copy, in eval mode (running statistics).
        dataset: a [`Dataset`][contdepth.data.Dataset]; its ``split`` is evaluated in order.
        schemes: the grid's schemes; every block gets the same manifestation.
        steps: the grid's step counts.
        reference: [`Reference`][contdepth.analysis.Reference], a string for [`parse_reference`][contdepth.analysis.parse_reference], or ``None``
            for rk4 with four times the largest step count.
        max_examples: evaluate only the first ``max_examples`` examples of the split.
        dtype: the copy's floating-point type (``float64`` by default, so that the
            orders are visible above round-off); ``None`` keeps the model's.
        progress: a progress bar over batches on the terminal.

    The relative error of an output ``y`` (a block's output or the logits) is
    ``||y - y_ref|| / ||y_ref||`` with the norms taken over all evaluated examples, and
    the orders are fitted with [`fit_order`][contdepth.analysis.fit_order] over the *aligned*
    step counts (see [`aligned`][contdepth.analysis.aligned]) when at least two are listed, otherwise over all.
    Errors below ``100 * eps(dtype)`` are round-off and carry no order (float32 round-off in
    a ContinuousNet's outputs measures ~3e-7 relative, 35x below that floor).
    """
    schemes, steps = check_grid(schemes, steps)
    if isinstance(reference, str):
        reference = parse_reference(reference)
    reference = (reference or Reference()).resolved(steps)
    check_int(batch_size, "batch_size", low=1)
    check_int(max_examples, "max_examples", low=1, allow_none=True)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype: must be one of {', '.join(DTYPES)}; got {dtype!r}")
        dtype = DTYPES[dtype]

    work, reading = as_continuous(model)
    if work is model:
        work = copy.deepcopy(model)
    model_dtype, model_device = _model_dtype_device(work)
    dtype = dtype or model_dtype
    device = torch.device(device) if device is not None else model_device
    work.to(device=device, dtype=dtype).eval()
    blocks = continuous_blocks(work)
    names = {id(m): name for name, m in work.named_modules()}
    block_names = tuple(names[id(b)] or "block" for b in blocks)
    trained = [(b.scheme.name, b.n_steps) for b in blocks]
    grid = [(s, n) for s in schemes for n in steps]

    k = len(blocks)
    ref_sq = np.zeros(k + 1)  # per block, then the logits
    diff_sq = {m: np.zeros(k + 1) for m in grid}
    correct = {m: 0 for m in grid}
    loss = {m: 0.0 for m in grid}
    ref_correct, ref_loss, count = 0, 0.0, 0
    capture = _Capture(blocks)
    batches = _analysis_batches(dataset, split, batch_size, device, work)
    total = len(batches) if max_examples is None else min(len(batches), math.ceil(max_examples / batch_size))
    # a bar on a terminal, a line every so often in a log (nohup, CI): never a silent wait
    bar = Progress(total, f"{len(grid)} manifestations", unit="batches", enabled=bool(progress),
                   stream=sys.stderr)  # stdout is the table's (analyze ... > table.txt)
    tic = time.perf_counter()
    try:
        for inputs, yb, select in batches:
            if max_examples is not None and count >= max_examples:
                break
            if max_examples is not None and count + len(yb) > max_examples and select is not FLATTEN:
                if select is not None:  # a graph: the first nodes of the split
                    select, yb = select[: max_examples - count], yb[: max_examples - count]
                else:
                    inputs, yb = (inputs[0][: max_examples - count],), yb[: max_examples - count]
            inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
            with reference_manifestation(work, reference):
                ref_logits = _select(work(*inputs), select)
            refs = [*capture.take(), ref_logits]
            ref_sq += [float(r.square().sum()) for r in refs]
            ref_correct += int((ref_logits.argmax(1) == yb).sum())
            ref_loss += float(F.cross_entropy(ref_logits, yb, reduction="sum"))
            for m in grid:
                with manifest(work, *m):
                    logits = _select(work(*inputs), select)
                outs = [*capture.take(), logits]
                diff_sq[m] += [float((o - r).square().sum()) for o, r in zip(outs, refs)]
                correct[m] += int((logits.argmax(1) == yb).sum())
                loss[m] += float(F.cross_entropy(logits, yb, reduction="sum"))
            count += len(yb)
            bar.update(1)
    finally:
        capture.close()
        bar.close()
    if count == 0:
        raise ValueError(f"dataset: the {split} split is empty")
    seconds = time.perf_counter() - tic

    ref_norm = np.sqrt(ref_sq)
    rows = []
    for s, n in grid:
        with np.errstate(divide="ignore", invalid="ignore"):
            errors = np.sqrt(diff_sq[(s, n)]) / ref_norm
        rows.append(ManifestationRow(
            scheme=s, n_steps=n, units=get_scheme(s).evaluations(n), accuracy=correct[(s, n)] / count,
            loss=loss[(s, n)] / count, logits_error=float(errors[-1]),
            block_errors=tuple(float(e) for e in errors[:-1]), aligned=aligned(blocks, n),
        ))
    floor = 100 * torch.finfo(dtype).eps
    fit_steps = tuple(n for n in steps if aligned(blocks, n))
    if len(fit_steps) < 2:
        fit_steps = steps
    orders = []
    for s in schemes:
        chosen = [r for r in rows if r.scheme == s and r.n_steps in fit_steps]
        ns = [r.n_steps for r in chosen]
        orders.append(OrderRow(
            scheme=s, expected=get_scheme(s).order,
            block_orders=tuple(fit_order(ns, [r.block_errors[i] for r in chosen], floor=floor) for i in range(k)),
            logits_order=fit_order(ns, [r.logits_error for r in chosen], floor=floor),
        ))
    return ManifestationReport(
        model=_model_name(model), reading=reading, blocks=block_names,
        basis=tuple(f"{b.basis.name}:{b.n_basis}" for b in blocks),
        trained=trained[0] if len(set(trained)) == 1 else None,
        reference=reference.describe(), reference_accuracy=ref_correct / count, reference_loss=ref_loss / count,
        dtype=str(dtype).replace("torch.", ""), split=split, examples=count, schemes=schemes, steps=steps,
        fit_steps=tuple(fit_steps), error_floor=floor, rows=tuple(rows), orders=tuple(orders), seconds=seconds,
    )


#: The ``select`` of a text batch: its logits ``(windows, tokens, 256)`` are flattened to one row per
#: predicted byte (``max_examples`` then counts bytes and stops at whole batches).
FLATTEN = "flatten"


def _select(logits: torch.Tensor, select: torch.Tensor | str | None) -> torch.Tensor:
    if isinstance(select, str):
        return logits.flatten(0, 1)
    return logits if select is None else logits[select]


def _analysis_batches(dataset, split: str, batch_size: int, device: torch.device, model: nn.Module | None = None
                      ) -> list | object:
    """``(inputs, targets, select)`` per batch: image batches, or one full pass over a graph.

    For a graph (node classification) the model sees every node at once; ``select``
    picks the split's nodes out of the logits, and block outputs cover the whole graph.
    """
    if getattr(dataset, "is_graph", False):
        graph = dataset.to(device)
        nodes = graph.mask(split).nonzero().flatten()
        return [(graph.inputs, graph.labels[nodes], nodes)]
    if getattr(dataset, "is_text", False):  # the split's fixed evaluation sample, one row per predicted byte
        return [((x,), y.flatten(), FLATTEN)
                for x, y in dataset.eval_batches(split, batch_size, model_context(model), device=device)]

    class _Images:
        def __init__(self) -> None:
            self._batches = dataset.batches(split, batch_size, shuffle=False, augment=False, device=device)

        def __len__(self) -> int:
            return len(self._batches)

        def __iter__(self):
            for xb, yb in self._batches:
                yield (xb,), yb, None

    return _Images()


__all__ = [
    "DEFAULT_SCHEMES", "DEFAULT_STEPS", "Reference", "aligned", "analyze_manifestations", "check_grid",
    "parse_reference", "reference_manifestation",
]

"""Incremental decoding and sampling for the byte-level [`GPT`][contdepth.models.GPT].

A [`KVCache`][contdepth.models.KVCache] keeps, for every call of an attention term
during one forward pass, that call's keys and values for all tokens so far: its *slot*. A
discrete stack calls each layer's attention once; a continuous block on a fixed grid calls its
attention term once per stage that evaluates it (every stage of ``rk4`` of the sum, each
attention sub-step of ``lie_trotter`` or ``strang``), always in the same order. So call ``i`` of
the next pass, on the new tokens only, appends to slot ``i`` and attends over it. This is exact
for any fixed grid: the keys and values of a past token at a given stage depend only on the
tokens before it (attention is causal, every other part acts per token), so they are what the
full pass computes there. A grid whose number of calls depends on the data (an implicit scheme's
iteration) or no grid at all ([`adaptive_depth`][contdepth.nn.adaptive_depth]) is refused.

    model.eval()
    cache = KVCache(model)
    logits = model(prompt, cache=cache)        # (batch, tokens, 256); positions 0 ..
    logits = model(next_bytes, cache=cache)    # positions go on from len(cache)

[`generate`][contdepth.models.generate] samples bytes, with or without the cache (the
same bytes for the same seed).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..common.errors import OptionError
from ..common.validate import check_bool, check_int, check_number
from ..nn import continuous_blocks
from .gpt import GPT, VOCAB, CausalSelfAttention

Tensor = torch.Tensor
MAX_TOKENS = 1_000_000  # bytes one call of generate may sample


def _manifestation(model: GPT) -> tuple:
    """``(scheme, n_steps)`` of each block: the grid whose attention calls the slots follow."""
    grids = []
    for block in continuous_blocks(model):
        grid = block.integration.manifestation()
        if grid is None:
            raise ValueError("cache: a key/value cache needs a fixed grid (the same attention calls on every pass); "
                             "a block integrates without one (adaptive depth): decode without the cache")
        if not grid[0].fixed_evaluations:
            raise ValueError(f"cache: scheme {grid[0].name!r} iterates a data-dependent number of times; a key/value "
                             "cache needs the same attention calls on every pass: decode without the cache")
        grids.append(grid)
    return tuple(grids)


def _attentions(model: GPT) -> list[CausalSelfAttention]:
    """The attention modules a pass calls: the stack's, and those inside each block's template."""
    found = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    return found + [m for block in continuous_blocks(model) for m in block.template.modules()
                    if isinstance(m, CausalSelfAttention)]


def _describe(grids: tuple) -> str:
    return ", ".join(f"{scheme.name} x {n}" for scheme, n in grids) or "the discrete stack"


class KVCache:
    """The keys and values of one GPT's attention calls, for feeding tokens a few at a time.

    ``model(tokens, cache=cache)`` gives the logits of ``tokens`` placed after the ``len(cache)``
    tokens fed before, as the full causal pass over all of them would (to rounding), and adds them
    to the cache. It runs in eval mode and without a gradient; the batch size and the model's
    manifestation stay what the first pass had (a new cache for another). A pass that fails
    leaves the cache as it was.
    """

    def __init__(self, model: GPT) -> None:
        if not isinstance(model, GPT):
            raise OptionError("model", f"a key/value cache is for a contdepth GPT, got {type(model).__name__}")
        self.model = model
        self.slots: list[tuple[Tensor, Tensor]] = []  # per attention call: keys, values (batch, heads, tokens, d)
        self.length = 0
        self.batch: int | None = None
        self.grids: tuple | None = None  # the blocks' manifestation the slots were filled with
        self._pending: list[tuple[Tensor, Tensor]] | None = None
        self._masks: dict[tuple[int, int], Tensor | None] = {}

    def __len__(self) -> int:
        return self.length

    def check(self, model: nn.Module, tokens: Tensor) -> int:
        """Refuse a pass this cache cannot serve (one line each); return the number of tokens cached."""
        if model is not self.model:
            raise ValueError("cache: was made for another model")
        if model.training:
            raise ValueError("cache: incremental decoding is for evaluation (dropout would change the cached keys); "
                             "call model.eval() first")
        if tokens.shape[1] < 1:
            raise ValueError("tokens: a cached pass needs at least one new token")
        if self.batch is not None and tokens.shape[0] != self.batch:
            raise ValueError(f"tokens: a batch of {tokens.shape[0]} sequences, but the cache holds {self.batch}")
        grids = _manifestation(model)
        if self.grids is not None and grids != self.grids:
            raise ValueError(f"cache: filled with {_describe(self.grids)}, but the model now integrates with "
                             f"{_describe(grids)}; start a new cache")
        return self.length

    @contextmanager
    def extending(self, model: GPT, tokens: Tensor) -> Iterator[None]:
        """Within: every attention call takes its slot; on success the slots hold ``tokens`` too."""
        attentions = _attentions(model)
        if any(a.kv_session is not None for a in attentions):
            raise RuntimeError("cache: another cached pass of this model is running")
        self._pending, self._masks = [], {}
        try:
            for attention in attentions:
                attention.kv_session = self
            yield
        finally:
            for attention in attentions:
                vars(attention).pop("kv_session", None)
            pending, self._pending = self._pending, None
        if self.slots and len(pending) != len(self.slots):  # a safety net: check() compares the grids first
            raise RuntimeError(f"cache: this pass called attention {len(pending)} times, the cached ones "
                               f"{len(self.slots)}; start a new cache")
        self.slots, self.length = pending, self.length + tokens.shape[1]
        self.batch, self.grids = tokens.shape[0], _manifestation(model)

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The next attention call's keys and values for every token so far, and its mask (``None``: causal
        when nothing was cached, else one new token seeing every key)."""
        if self._pending is None:
            raise RuntimeError("cache: attention called outside a cached pass")
        i, new = len(self._pending), k.shape[2]
        if self.slots:
            if i >= len(self.slots):
                raise RuntimeError(f"cache: this pass calls attention more often than the cached ones "
                                   f"({len(self.slots)}); start a new cache")
            past_k, past_v = self.slots[i]
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        self._pending.append((k, v))
        total = k.shape[2]
        key = (new, total)
        if key not in self._masks:  # new token j (position total - new + j) sees keys 0 .. total - new + j
            self._masks[key] = None if new == 1 or new == total else torch.ones(
                new, total, dtype=torch.bool, device=k.device).tril(diagonal=total - new)
        return k, v, self._masks[key]


def _draw(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> int:
    """One byte from ``logits`` (256): one uniform draw per byte whatever the settings, inverse CDF."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    logits = logits.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(logits).all()):
        raise FloatingPointError("model: its logits are not finite (NaN or infinite weights?)")
    if temperature == 0:
        return int(torch.argmax(logits))
    if top_k is not None and top_k < VOCAB:
        logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[-1], -math.inf)
    probabilities = torch.softmax((logits - logits.max()) / temperature, dim=0)
    cdf = torch.cumsum(probabilities, dim=0)
    return int(torch.searchsorted(cdf, u * cdf[-1], right=True).clamp(max=VOCAB - 1))


def check_sampling(prompt: bytes, tokens: int, temperature: float, top_k: int | None,
                   seed: int) -> tuple[int, float, int | None, int]:
    """`generate`'s arguments checked (an [`OptionError`][contdepth.common.errors.OptionError] naming the first
    bad one): ``(tokens, temperature, top_k, seed)``."""
    if not isinstance(prompt, (bytes, bytearray)) or not prompt:
        raise OptionError("prompt", f"expected non-empty bytes, got {type(prompt).__name__}"
                                    + (" of length 0" if isinstance(prompt, (bytes, bytearray)) else ""))
    return (check_int(tokens, "tokens", low=1, high=MAX_TOKENS), check_number(temperature, "temperature", low=0.0),
            check_int(top_k, "top_k", low=1, high=VOCAB, allow_none=True),
            check_int(seed, "seed", low=0, high=2 ** 64 - 1))


def generate(model: GPT, prompt: bytes, tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
             seed: int = 0, cache: bool = True) -> bytes:
    """``tokens`` bytes sampled after ``prompt`` (the prompt not included).

    Each byte is drawn from the model's next-byte distribution given the last ``model.context``
    bytes so far (all of them while fewer): ``softmax(logits / temperature)`` over the ``top_k``
    most likely bytes (ties at the k-th value kept; ``None``: all 256); ``temperature=0`` takes
    the most likely byte. Runs in eval mode (restored after) without gradients; ``seed`` seeds a
    ``torch.Generator`` that draws one uniform number per byte, so a seed gives the same bytes.

    ``cache=True`` feeds one byte per pass through a [`KVCache`][contdepth.models.KVCache]
    while the window grows. Once it holds ``context`` bytes, the window slides by one byte per
    step, which moves every position, so the cache is rebuilt from the window (the last
    ``context`` bytes) for each further byte: the same pass as without the cache. So both give
    the same bytes: before the context fills, their logits agree to rounding, and a byte could
    differ only where a draw falls within rounding of the boundary between two bytes (or two
    logits tie within rounding, greedy); past the context the cache saves nothing.
    """
    if not isinstance(model, GPT):
        raise OptionError("model", f"generate samples from a contdepth GPT, got {type(model).__name__}")
    tokens, temperature, top_k, seed = check_sampling(prompt, tokens, temperature, top_k, seed)
    cache = check_bool(cache, "cache")
    if cache:
        _manifestation(model)  # refused before any work
    generator = torch.Generator().manual_seed(seed)
    device, context = model.embed.weight.device, model.context
    sequence, out = list(prompt[-context:]), bytearray()
    state: KVCache | None = None
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(tokens):
                if not cache:
                    logits = model(torch.tensor([sequence[-context:]], device=device))
                elif state is None or len(state) == context:  # the window slid: rebuilt from it
                    state = KVCache(model)
                    logits = model(torch.tensor([sequence[-context:]], device=device), cache=state)
                else:
                    logits = model(torch.tensor([sequence[-1:]], device=device), cache=state)
                byte = _draw(logits[0, -1], temperature, top_k, generator)
                out.append(byte)
                sequence.append(byte)
                if len(sequence) > 2 * context:
                    del sequence[:-context]
    finally:
        model.train(training)
    return bytes(out)


__all__ = ["KVCache", "MAX_TOKENS", "check_sampling", "generate"]

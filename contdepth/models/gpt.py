"""A byte-level decoder-only transformer (GPT), discrete or in continuous depth.

A pre-LayerNorm transformer layer ``x <- x + A(LN1(x)); x <- x + M(LN2(x))`` is one forward-Euler
step of the Lie-Trotter splitting of ``dx/dt = a(theta(t), x) + m(theta(t), x)`` (Lu et al. 2019,
arXiv 1906.02762). The continuous form is one [`ContinuousBlock`][contdepth.nn.ContinuousBlock]
whose template is ``cd.nn.Terms(attention, mlp)``: with ``layers`` piecewise-constant cells and
the ``lie_trotter`` scheme on ``layers`` steps it *is* a stack of ``layers`` layers, and it
manifests with any scheme (``strang``, ``strang_midpoint``, ``rk4`` of the sum) and any number of
steps.

Its depth interval is ``[0, depth]`` with ``depth = layers`` by default: a step of the trained grid
has size 1, so a cell's weights *are* a discrete layer's, initialised and moved by AdamW as a
discrete stack's are (the comparison at equal parameters and FLOPs compares architectures, not
parametrisations). ``depth=1`` is the ODE on ``[0, 1]``: the same functions, with each term's
output projection ``layers`` times the discrete one's (each Euler sub-step multiplies its term by
``h = 1 / layers``), which Adam's scale-free steps then move ``layers`` times more slowly in
effect.
[`continuous_from_layers`][contdepth.models.gpt.continuous_from_layers] converts a discrete
stack exactly.

Bytes are the tokens (a vocabulary of 256, no tokenizer); positions are learned; attention is
causal through ``torch.nn.functional.scaled_dot_product_attention``; the output head shares the
embedding's weights unless ``tied_embeddings=False``. ``model(tokens, cache=KVCache(model))`` decodes
incrementally (`contdepth.models.generation`: the key/value cache and sampling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..common.validate import check_bool, check_int, check_number
from ..nn import ContinuousBlock, Terms
from .registry import register_model

if TYPE_CHECKING:
    from .generation import KVCache

Tensor = torch.Tensor
VOCAB = 256  # bytes
INIT_STD = 0.02  # GPT-2's initial standard deviation of every linear and embedding weight


def _init_linear(layer: nn.Linear, std: float = INIT_STD) -> None:
    nn.init.normal_(layer.weight, 0.0, std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class CausalSelfAttention(nn.Module):
    """The attention term ``a(x) = proj(attention(LN(x)))`` on ``(batch, tokens, width)``, each token seeing its past.

    ``kv_session``: while a cached pass runs (`contdepth.models.KVCache`), the session that
    appends this call's keys and values to its slot and returns the cached ones with the mask; ``None``
    otherwise (the plain causal pass).
    """

    kv_session = None

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        _init_linear(self.qkv)
        _init_linear(self.proj)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(self.norm(x)).split(width, dim=-1)
        shape = (batch, tokens, self.heads, width // self.heads)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        if self.kv_session is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:  # every token's keys and values so far; no mask: causal if nothing was cached, else one new token
            k, v, mask = self.kv_session.extend(k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and k.shape[2] == tokens)
        return F.dropout(self.proj(y.transpose(1, 2).reshape(batch, tokens, width)), self.dropout, self.training)


class MLP(nn.Module):
    """The MLP term ``m(x) = proj(gelu(fc(LN(x))))``: each token's own motion."""

    def __init__(self, width: int, ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, ratio * width)
        self.proj = nn.Linear(ratio * width, width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        _init_linear(self.fc)
        _init_linear(self.proj)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(self.proj(F.gelu(self.fc(self.norm(x)))), self.dropout, self.training)


class TransformerLayer(nn.Module):
    """``x <- x + a(x); x <- x + m(x)``: a discrete pre-LayerNorm layer."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = CausalSelfAttention(width, heads, dropout)
        self.mlp = MLP(width, mlp_ratio, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(x)
        return x + self.mlp(x)


class GPT(nn.Module):
    """Bytes ``(batch, tokens)`` -> next-byte logits ``(batch, tokens, 256)``; the layers discrete or one block."""

    def __init__(self, *, width: int = 128, heads: int = 4, layers: int = 4, context: int = 128, mlp_ratio: int = 4,
                 dropout: float = 0.0, continuous: bool = False, basis: str = "piecewise_constant",
                 scheme: str = "lie_trotter", n_steps: int | None = None, tied_embeddings: bool = True,
                 gradient: str = "backprop", depth: float | None = None) -> None:
        super().__init__()
        width, heads = check_int(width, "width", low=1, high=65536), check_int(heads, "heads", low=1, high=1024)
        if width % heads:
            raise ValueError(f"heads: the width ({width}) must split evenly over the heads, got {heads}")
        layers, context = check_int(layers, "layers", low=1, high=4096), check_int(context, "context", low=1, high=1 << 20)
        mlp_ratio = check_int(mlp_ratio, "mlp_ratio", low=1, high=64)
        dropout = check_number(dropout, "dropout", low=0.0, high=1.0, high_open=True)
        self.context, self.continuous = context, check_bool(continuous, "continuous")
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Embedding(context, width)
        nn.init.normal_(self.embed.weight, 0.0, INIT_STD)
        nn.init.normal_(self.position.weight, 0.0, INIT_STD)
        if depth is not None and not self.continuous:
            raise ValueError("depth: the length of the depth interval of the continuous form; a discrete GPT has "
                             "none (set continuous=True, or leave depth unset)")
        self.depth = float(layers) if depth is None else check_number(depth, "depth", low=0.0, low_open=True,
                                                                       high=1e6)
        if self.continuous:
            template = Terms(CausalSelfAttention(width, heads, dropout), MLP(width, mlp_ratio, dropout))
            self.layers: nn.Module = ContinuousBlock(template, basis=basis, n_basis=layers, scheme=scheme,
                                                     n_steps=layers if n_steps is None else n_steps, gradient=gradient,
                                                     t1=self.depth)
        else:
            self.layers = nn.Sequential(*(TransformerLayer(width, heads, mlp_ratio, dropout) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB, bias=False)
        if check_bool(tied_embeddings, "tied_embeddings"):
            self.head.weight = self.embed.weight
        else:
            _init_linear(self.head)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, cache: "KVCache | None" = None) -> Tensor:
        """Next-byte logits of ``tokens``; with a ``cache`` (a [`KVCache`][contdepth.models.KVCache] of this
        model), of new tokens after the cached ones: positions go on from the cache's length, attention sees
        every cached token, and the cache grows by ``tokens`` (eval mode, no gradient)."""
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32, torch.uint8):
            raise ValueError(f"tokens: expected (batch, tokens) byte values as integers, got {tuple(tokens.shape)} "
                             f"{tokens.dtype}")
        start = 0  # the tokens cached before these
        if cache is not None:
            # the cache's protocol (check, extending), not its class: generation imports this module, not the reverse
            if not (callable(getattr(cache, "check", None)) and callable(getattr(cache, "extending", None))):
                raise ValueError(f"cache: expected a KVCache of this model, got {type(cache).__name__}")
            start = cache.check(self, tokens)
        if start + tokens.shape[1] > self.context:
            cached = f" after the {start} cached" if start else ""
            raise ValueError(f"tokens: {tokens.shape[1]} tokens{cached} exceed the model's context of {self.context}")
        if cache is None:
            return self._logits(tokens, 0)
        with torch.no_grad(), cache.extending(self, tokens):
            return self._logits(tokens, start)

    def _logits(self, tokens: Tensor, start: int) -> Tensor:
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.drop(self.embed(tokens.long()) + self.position(positions))
        return self.head(self.norm(self.layers(x)))


@register_model("gpt", kind="text")
def gpt(*, width: int = 128, heads: int = 4, layers: int = 4, context: int = 128, mlp_ratio: int = 4,
        dropout: float = 0.0, continuous: bool = False, basis: str = "piecewise_constant", scheme: str = "lie_trotter",
        n_steps: int | None = None, tied_embeddings: bool = True, gradient: str = "backprop",
        depth: float | None = None) -> GPT:
    """The byte-level [`GPT`][contdepth.models.GPT]: ``layers`` discrete layers, or with ``continuous=True`` one
    block of ``layers`` cells of ``basis`` on the depth interval ``[0, depth]`` (default ``[0, layers]``),
    integrated by ``scheme`` on ``n_steps`` (default ``layers``) steps."""
    return GPT(width=width, heads=heads, layers=layers, context=context, mlp_ratio=mlp_ratio, dropout=dropout,
               continuous=continuous, basis=basis, scheme=scheme, n_steps=n_steps, tied_embeddings=tied_embeddings,
               gradient=gradient, depth=depth)


@torch.no_grad()
def continuous_from_layers(model: GPT, *, depth: float | None = None) -> GPT:
    """The continuous GPT that computes exactly what the discrete ``model`` does.

    Layer ``k`` becomes cell ``k`` of a piecewise-constant ``theta(t)`` under ``lie_trotter`` with one
    step per cell, on the depth interval ``[0, depth]`` (default: the number of layers, where a step
    has size 1 and the weights are copied as they are). With another ``depth`` each term's output
    projection (weights and bias) is multiplied by ``layers / depth``, since each Euler sub-step
    multiplies its term by ``h = depth / layers``.
    """
    if model.continuous:
        raise ValueError("model: already continuous")
    layers = list(model.layers)
    first = layers[0]
    width, heads = first.attention.proj.in_features, first.attention.heads
    out = GPT(width=width, heads=heads, layers=len(layers), context=model.context,
              mlp_ratio=first.mlp.fc.out_features // width, dropout=first.attention.dropout, continuous=True,
              tied_embeddings=model.head.weight is model.embed.weight, depth=depth).to(model.embed.weight)
    for name in ("embed", "position", "norm", "head"):
        getattr(out, name).load_state_dict(getattr(model, name).state_dict())
    scale = len(layers) / out.depth
    for name, coefficients in out.layers.coefficient_items():
        term, _, inner = name.removeprefix("modules_of_terms.").partition(".")
        part = "attention" if term == "0" else "mlp"
        values = torch.stack([layer.get_parameter(f"{part}.{inner}") for layer in layers])
        if inner.startswith("proj.") and scale != 1.0:
            values = values * scale
        coefficients.copy_(values)
    return out.train(model.training)


__all__ = ["GPT", "MLP", "CausalSelfAttention", "TransformerLayer", "VOCAB", "continuous_from_layers"]

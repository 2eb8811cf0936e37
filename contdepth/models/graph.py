"""Node-classification models on graphs: ``gcn``, ``gcde`` and ``cgnn``.

Every model is called as ``model(features, adjacency) -> logits (N, num_classes)`` with
``adjacency`` the sparse ``D^-1/2 (A + I) D^-1/2`` of :func:`contdepth.nn.normalized_adjacency`
(what a :class:`~contdepth.data.GraphDataset` carries), and offers
``weight_decay_parameters()``: the parameters the reference setups regularise (Kipf &
Welling decay only the first layer), for a trainer that wants that convention.

The two continuous models keep their ODE inside a :class:`~contdepth.nn.ContinuousBlock`,
so manifest / refine / project / checkpoint layouts work on them exactly as on images.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..basis import available_bases
from ..nn.block import ContinuousBlock
from ..nn.graph import ACTIVATIONS, GCNLayer, GCNRate, activation
from ..solvers import get_scheme
from .layers import check_choice, check_positive_int
from .registry import register_model

Tensor = torch.Tensor
DECODERS = ("linear", "gcn")


def _check_probability(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: a dropout probability must be a number in [0, 1), got {value!r}")
    return float(value)


def _check_time(value: object, name: str = "t1") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: the integration time must be a finite number > 0, got {value!r}")
    return float(value)


def _check_basis(basis: object, n_basis: object, scheme: object, n_steps: object) -> None:
    check_choice(basis, "basis", tuple(available_bases()))
    check_positive_int(n_basis, "n_basis")
    get_scheme(scheme)  # type: ignore[arg-type]  (raises listing the schemes)
    if n_steps is not None:
        check_positive_int(n_steps, "n_steps")


class GCN(nn.Module):
    """Kipf & Welling's two-layer GCN: dropout, GCN, ReLU, dropout, GCN."""

    def __init__(self, in_features: int, num_classes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.layer1 = GCNLayer(in_features, hidden)
        self.layer2 = GCNLayer(hidden, num_classes)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = torch.relu(self.layer1(x, adjacency))
        x = F.dropout(x, self.dropout, self.training)
        return self.layer2(x, adjacency)

    def weight_decay_parameters(self) -> list[nn.Parameter]:
        """Kipf & Welling apply weight decay (5e-4) to the first layer only."""
        return list(self.layer1.parameters())


@register_model("gcn")
def gcn(*, in_features: int, num_classes: int, hidden: int = 16, dropout: float = 0.5) -> nn.Module:
    """The discrete two-layer GCN baseline (Kipf & Welling 2017; Cora: Adam lr 0.01, decay 5e-4 on layer 1)."""
    return GCN(check_positive_int(in_features, "in_features"), check_positive_int(num_classes, "num_classes"),
               check_positive_int(hidden, "hidden"), _check_probability(dropout, "dropout"))


class GCDE(nn.Module):
    """Neural graph ODE (Poli et al. 2019): GCN encoder -> ContinuousBlock of GCN layers -> decoder.

    The block integrates ``dh/dt = GCNRate(theta(t))(h, adjacency)`` over ``[0, t1]``; the
    adjacency rides along as context. ``n_basis=1`` is the autonomous (depth-constant) ODE.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int, dropout: float, activation_name: str,
                 block: ContinuousBlock, decoder: str) -> None:
        super().__init__()
        self.dropout = dropout
        self.encoder = GCNLayer(in_features, hidden)
        self.activation = activation(activation_name)
        self.block = block
        self.decoder_kind = decoder
        self.decoder = GCNLayer(hidden, num_classes) if decoder == "gcn" else nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        x = F.dropout(x, self.dropout, self.training)
        h = self.activation(self.encoder(x, adjacency))
        h = self.block(h, adjacency)
        h = F.dropout(h, self.dropout, self.training)
        return self.decoder(h, adjacency) if self.decoder_kind == "gcn" else self.decoder(h)

    def weight_decay_parameters(self) -> list[nn.Parameter]:
        """As for the GCN: the first (encoder) layer, which sees the wide, sparse input."""
        return list(self.encoder.parameters())


@register_model("gcde")
def gcde(*, in_features: int, num_classes: int, hidden: int = 64, dropout: float = 0.5, activation: str = "tanh",
         rate_layers: int = 2, basis: str = "piecewise_constant", n_basis: int = 1, scheme: str = "rk4",
         n_steps: int | None = None, t1: float = 1.0, decoder: str = "gcn", checkpoint: bool = False) -> nn.Module:
    """Neural graph ODE; ``activation`` is used after the encoder and between the rate's GCN layers."""
    check_positive_int(in_features, "in_features")
    check_positive_int(num_classes, "num_classes")
    check_positive_int(hidden, "hidden")
    check_positive_int(rate_layers, "rate_layers")
    check_choice(activation, "activation", ACTIVATIONS)
    check_choice(decoder, "decoder", DECODERS)
    _check_basis(basis, n_basis, scheme, n_steps)
    block = ContinuousBlock(GCNRate(hidden, rate_layers, activation), basis=basis, n_basis=n_basis, scheme=scheme,
                            n_steps=n_steps, t1=_check_time(t1), checkpoint=bool(checkpoint))
    return GCDE(in_features, num_classes, hidden, _check_probability(dropout, "dropout"), activation, block, decoder)


class CGNNRate(nn.Module):
    """The CGNN right-hand side ``dH/dt = alpha (A_hat - I) H [+ H (W - I)] + E``.

    ``A_hat = (I + adjacency) / 2`` with ``adjacency = D^-1/2 (A + I) D^-1/2``, so
    ``alpha (A_hat - I) = alpha / 2 (adjacency - I)``: the paper's halved, regularised
    adjacency (Xhonneux et al. 2020, eq. 7 uses ``alpha/2 (I + D^-1/2 A D^-1/2)``) applied
    to the GCN propagation matrix, as the authors' code does (self loops of weight 1).
    ``alpha = sigmoid(a)`` is per node, in ``(0, 1)``. The weighted variant adds the
    channel mixing ``H (W - I)`` with ``W = U diag(clamp(d, 0, 1)) U^T``, symmetric with
    eigenvalues in ``[0, 1] * |U|^2``, which keeps the dynamics from blowing up.
    ``E`` (the encoded features, also ``H(0)``) is the restart term passed as context.
    """

    def __init__(self, num_nodes: int, hidden: int, alpha_init: float, weighted: bool) -> None:
        super().__init__()
        self.alpha_init, self.weighted = alpha_init, weighted
        self.a = nn.Parameter(torch.empty(num_nodes))
        if weighted:
            self.u = nn.Parameter(torch.empty(hidden, hidden))
            self.d = nn.Parameter(torch.empty(hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``alpha = alpha_init`` everywhere, ``W = I`` (so the mixing term starts at zero), as in the authors' code."""
        with torch.no_grad():
            self.a.fill_(math.log(self.alpha_init / (1.0 - self.alpha_init)))
            if self.weighted:
                nn.init.eye_(self.u)
                self.d.fill_(1.0)

    def alpha(self) -> Tensor:
        return torch.sigmoid(self.a)

    def forward(self, h: Tensor, adjacency: Tensor, e: Tensor) -> Tensor:
        rate = 0.5 * torch.sigmoid(self.a).unsqueeze(1) * (adjacency @ h - h) + e
        if self.weighted:
            w = (self.u * self.d.clamp(0.0, 1.0)) @ self.u.T
            rate = rate + h @ w - h
        return rate


class CGNN(nn.Module):
    """Continuous GNN with restart (Xhonneux et al. 2020): encode, integrate to ``t1``, decode.

    ``E = Linear(dropout(x))``; ``H(t1)`` solves ``dH/dt = CGNNRate(H)`` from ``H(0) = E``
    inside a ContinuousBlock (``n_basis=1``: the paper's constant alpha and W; any scheme
    and step count is a manifestation); then ReLU, dropout and a linear decoder.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int, input_dropout: float, dropout: float,
                 block: ContinuousBlock) -> None:
        super().__init__()
        self.input_dropout, self.dropout = input_dropout, dropout
        self.encoder = nn.Linear(in_features, hidden)
        self.block = block
        self.decoder = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        if adjacency.shape[0] != self.num_nodes:
            raise ValueError(
                f"adjacency: this cgnn was built for num_nodes={self.num_nodes} (one alpha per node), "
                f"got a graph of {adjacency.shape[0]} nodes"
            )
        e = self.encoder(F.dropout(x, self.input_dropout, self.training))
        h = self.block(e, adjacency, e)
        return self.decoder(F.dropout(torch.relu(h), self.dropout, self.training))

    @property
    def num_nodes(self) -> int:
        return int(self.block.coefficients.get("a").shape[1])

    def weight_decay_parameters(self) -> list[nn.Parameter]:
        """The encoder and decoder weights (the authors decay every parameter; alpha and W are left free here)."""
        return list(self.encoder.parameters()) + list(self.decoder.parameters())


@register_model("cgnn")
def cgnn(*, in_features: int, num_classes: int, num_nodes: int, hidden: int = 16, input_dropout: float = 0.5,
         dropout: float = 0.0, alpha_init: float = 0.9, weighted: bool = False, t1: float = 10.0,
         scheme: str = "rk4", n_steps: int = 10, basis: str = "piecewise_constant", n_basis: int = 1,
         checkpoint: bool = False) -> nn.Module:
    """CGNN; ``weighted=True`` adds the learnable channel mixing ``H (W - I)``; ``t1`` is the paper's ``T``."""
    check_positive_int(in_features, "in_features")
    check_positive_int(num_classes, "num_classes")
    check_positive_int(num_nodes, "num_nodes")
    check_positive_int(hidden, "hidden")
    if isinstance(alpha_init, bool) or not isinstance(alpha_init, (int, float)) or not 0.0 < alpha_init < 1.0:
        raise ValueError(f"alpha_init: the initial alpha must lie in (0, 1), got {alpha_init!r}")
    if not isinstance(weighted, bool):
        raise ValueError(f"weighted: must be true or false, got {weighted!r}")
    _check_basis(basis, n_basis, scheme, n_steps)
    block = ContinuousBlock(CGNNRate(num_nodes, hidden, float(alpha_init), weighted), basis=basis,
                            n_basis=n_basis, scheme=scheme, n_steps=n_steps, t1=_check_time(t1),
                            checkpoint=bool(checkpoint))
    return CGNN(in_features, num_classes, hidden, _check_probability(input_dropout, "input_dropout"),
                _check_probability(dropout, "dropout"), block)

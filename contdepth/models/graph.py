"""Node-classification models on graphs: ``gcn``, ``gcde`` and ``cgnn``.

Every model is called as ``model(features, adjacency) -> logits (N, num_classes)`` with
``adjacency`` the sparse ``D^-1/2 (A + I) D^-1/2`` of [`contdepth.nn.normalized_adjacency`][contdepth.nn.normalized_adjacency]
(what a [`GraphDataset`][contdepth.data.GraphDataset] carries) and ``features`` dense or sparse COO
(``GraphDataset.inputs`` gives bag-of-words features sparse: the same model, the same
outputs, a fraction of the cost of input dropout and the first layer), and offers
``weight_decay_parameters()``: the parameters the reference setups regularise (Kipf &
Welling decay only the first layer), for a trainer that wants that convention.

The two continuous models keep their ODE inside a [`ContinuousBlock`][contdepth.nn.ContinuousBlock],
so manifest / refine / project / checkpoint layouts work on them exactly as on images.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..basis import available_bases
from ..common.validate import check_bool, check_choice, check_int, check_number
from ..nn.block import ContinuousBlock
from ..nn.graph import ACTIVATIONS, GCNLayer, activation, feature_dropout, propagate
from ..solvers import get_scheme
from .layers import check_block_size
from .registry import register_model

Tensor = torch.Tensor
DECODERS = ("linear", "gcn")


def _check_probability(value: object, name: str) -> float:
    """A dropout probability: a number in [0, 1)."""
    return check_number(value, name, low=0.0, high=1.0, high_open=True, subject="a dropout probability")


def _check_time(value: object) -> float:
    """The end of the integration, ``t1``: a finite number > 0."""
    return check_number(value, "t1", low=0.0, low_open=True, subject="the integration time")


def _check_basis(basis: object, n_basis: object, scheme: object, n_steps: object) -> None:
    check_choice(basis, "basis", tuple(available_bases()))
    check_block_size(n_basis, "n_basis")
    get_scheme(scheme)  # type: ignore[arg-type]  (raises listing the schemes)
    if n_steps is not None:
        check_block_size(n_steps, "n_steps")


class GCN(nn.Module):
    """Kipf & Welling's two-layer GCN: dropout, GCN, ReLU, dropout, GCN."""

    def __init__(self, in_features: int, num_classes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.layer1 = GCNLayer(in_features, hidden)
        self.layer2 = GCNLayer(hidden, num_classes)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        x = feature_dropout(x, self.dropout, self.training)
        x = torch.relu(self.layer1(x, adjacency))
        x = F.dropout(x, self.dropout, self.training)
        return self.layer2(x, adjacency)

    def weight_decay_parameters(self) -> list[nn.Parameter]:
        """Kipf & Welling apply weight decay (5e-4) to the first layer only."""
        return list(self.layer1.parameters())


@register_model("gcn", graph=True)
def gcn(*, in_features: int, num_classes: int, hidden: int = 16, dropout: float = 0.5) -> nn.Module:
    """The discrete two-layer GCN baseline (Kipf & Welling 2017; Cora: Adam lr 0.01, decay 5e-4 on layer 1)."""
    return GCN(check_int(in_features, "in_features", low=1), check_int(num_classes, "num_classes", low=1),
               check_int(hidden, "hidden", low=1), _check_probability(dropout, "dropout"))


class GCDERate(nn.Module):
    """The rate of a neural graph ODE: ``n_layers`` GCN layers, dropout before each, an activation between.

    This is the GDE paper's function ``f``: ``GCN(act, dropout p_1)`` ... ``GCN(no act,
    dropout p_n)``, each layer dropping its *input*. Inside a ContinuousBlock every stage
    of every step draws its own masks, so in training the block integrates a stochastic
    rate (what torchdiffeq does with the reference model); in evaluation dropout is the
    identity, the rate is deterministic and every manifestation converges to one ODE.
    Checkpointed steps replay the same masks (torch.utils.checkpoint restores the RNG).
    The last layer has no activation, so the rate can take either sign.
    """

    def __init__(self, features: int, n_layers: int, activation_name: str, dropout: tuple[float, ...]) -> None:
        super().__init__()
        if len(dropout) != n_layers:
            raise ValueError(f"dropout: expected one probability per layer ({n_layers}), got {len(dropout)}")
        self.dropout = tuple(dropout)
        self.layers = nn.ModuleList(GCNLayer(features, features) for _ in range(n_layers))
        self.activation = activation(activation_name)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        for i, (layer, p) in enumerate(zip(self.layers, self.dropout)):
            if i:
                x = self.activation(x)
            if p:
                x = F.dropout(x, p, self.training)
            x = layer(x, adjacency)
        return x

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}"


class GCDE(nn.Module):
    """Neural graph ODE (Poli et al. 2019): GCN encoder -> ContinuousBlock of GCN layers -> decoder.

    ``dropout(input_dropout) -> GCN -> encoder activation -> ODE -> dropout(decoder_dropout)
    -> decoder``. The block integrates ``dh/dt = GCDERate(theta(t))(h, adjacency)`` over
    ``[0, t1]``; the adjacency rides along as context. ``n_basis=1`` is the autonomous
    (depth-constant) ODE.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int, input_dropout: float,
                 decoder_dropout: float, encoder_activation: str, block: ContinuousBlock, decoder: str) -> None:
        super().__init__()
        self.input_dropout, self.decoder_dropout = input_dropout, decoder_dropout
        self.encoder = GCNLayer(in_features, hidden)
        self.activation = activation(encoder_activation)
        self.block = block
        self.decoder_kind = decoder
        self.decoder = GCNLayer(hidden, num_classes) if decoder == "gcn" else nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        x = feature_dropout(x, self.input_dropout, self.training)
        h = self.activation(self.encoder(x, adjacency))
        h = self.block(h, adjacency)
        h = F.dropout(h, self.decoder_dropout, self.training)
        return self.decoder(h, adjacency) if self.decoder_kind == "gcn" else self.decoder(h)

    def weight_decay_parameters(self) -> list[nn.Parameter]:
        """As for the GCN: the first (encoder) layer, which sees the wide, sparse input."""
        return list(self.encoder.parameters())


def _check_rate_dropout(value: object, n_layers: int) -> tuple[float, ...]:
    """One probability for every rate layer, or a list with one per layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_layers:
            raise ValueError(
                f"rate_dropout: a list needs one probability per rate layer (rate_layers={n_layers}), "
                f"got {len(value)}: {list(value)!r}"
            )
        return tuple(_check_probability(p, f"rate_dropout[{i}]") for i, p in enumerate(value))
    return (_check_probability(value, "rate_dropout"),) * n_layers


@register_model("gcde", graph=True)
def gcde(*, in_features: int, num_classes: int, hidden: int = 32, input_dropout: float = 0.9,
         rate_dropout: float | tuple[float, ...] = (0.5, 0.5), decoder_dropout: float = 0.4,
         encoder_activation: str = "relu", activation: str = "softplus", rate_layers: int = 2,
         basis: str = "piecewise_constant", n_basis: int = 1, scheme: str = "rk4", n_steps: int | None = None,
         t1: float = 1.0, decoder: str = "gcn", checkpoint: bool = False) -> nn.Module:
    """Neural graph ODE: the GDE paper's Cora model (Poli et al. 2019, GCDE-rk4).

    The layers are the paper's (GCN encoder, GCN(softplus)-GCN rate, one RK4 step over
    ``[0, 1]``, GCN decoder). The default sizes and dropouts are the setting chosen on
    Cora's validation split (the README's graph results hold the search and its numbers;
    the paper's are hidden 64, no input dropout, rate dropout 0.9/0.2).

    ``input_dropout`` drops input features before the encoder, ``decoder_dropout`` the ODE's
    output before the decoder; ``rate_dropout`` is one probability for every rate layer or a
    list with one per layer (``rate_layers`` long), applied to that layer's input.
    ``encoder_activation`` follows the encoder; ``activation`` sits between rate layers.
    """
    check_int(in_features, "in_features", low=1)
    check_int(num_classes, "num_classes", low=1)
    check_int(hidden, "hidden", low=1)
    check_int(rate_layers, "rate_layers", low=1)
    check_choice(activation, "activation", ACTIVATIONS)
    check_choice(encoder_activation, "encoder_activation", ACTIVATIONS)
    check_choice(decoder, "decoder", DECODERS)
    _check_basis(basis, n_basis, scheme, n_steps)
    rate = GCDERate(hidden, rate_layers, activation, _check_rate_dropout(rate_dropout, rate_layers))
    block = ContinuousBlock(rate, basis=basis, n_basis=n_basis, scheme=scheme, n_steps=n_steps,
                            t1=_check_time(t1), checkpoint=check_bool(checkpoint, "checkpoint"))
    return GCDE(in_features, num_classes, hidden, _check_probability(input_dropout, "input_dropout"),
                _check_probability(decoder_dropout, "decoder_dropout"), encoder_activation, block, decoder)


class CGNNRate(nn.Module):
    """The CGNN right-hand side ``dH/dt = alpha (A_hat - I) H [+ H (W - I)] + E``.

    ``A_hat = (I + adjacency) / 2`` with ``adjacency = D^-1/2 (A + I) D^-1/2``, so
    ``alpha (A_hat - I) = alpha / 2 (adjacency - I)``: the paper's halved, regularised
    adjacency (Xhonneux et al. 2020, eq. 7 uses ``alpha/2 (I + D^-1/2 A D^-1/2)``) applied
    to the normalised propagation matrix, as the authors' code does ([`CGNN`][contdepth.models.CGNN] first
    re-weights its self loops to ``self_loop_weight``; the authors use 0.555 on Cora).
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
        rate = 0.5 * torch.sigmoid(self.a).unsqueeze(1) * (propagate(adjacency, h) - h) + e
        if self.weighted:
            w = (self.u * self.d.clamp(0.0, 1.0)) @ self.u.T
            rate = rate + h @ w - h
        return rate


def reweight_self_loops(adjacency: Tensor, self_loop_weight: float) -> Tensor:
    """``D_s^-1/2 (A + s I) D_s^-1/2`` from ``adjacency = D^-1/2 (A + I) D^-1/2`` (``s = self_loop_weight``).

    The dataset carries only the GCN matrix (self loops of weight 1), but the authors of
    CGNN tune the self-loop weight (0.555 on Cora). Both ``A`` and ``D`` can be read back
    from the normalised matrix, since its diagonal is ``1 / d_i``: ``d_i = 1 / a_ii``,
    ``A_ij = a_ij sqrt(d_i d_j)``, and the new degree is ``d_i - 1 + s``.
    """
    adjacency = adjacency.coalesce()
    (rows, cols), values = adjacency.indices(), adjacency.values()
    degree = torch.zeros(adjacency.shape[0], dtype=values.dtype, device=values.device)
    loop = rows == cols
    degree[rows[loop]] = 1.0 / values[loop]
    if bool((degree <= 0).any()):
        raise ValueError("adjacency: expected D^-1/2 (A + I) D^-1/2 with a positive diagonal (one self loop per node)")
    weights = torch.where(loop, torch.full_like(values, self_loop_weight), values * (degree[rows] * degree[cols]).sqrt())
    new_degree = degree - 1.0 + self_loop_weight
    new_values = weights / (new_degree[rows] * new_degree[cols]).sqrt()
    return torch.sparse_coo_tensor(adjacency.indices(), new_values, adjacency.shape, is_coalesced=True,
                                   check_invariants=False)


class CGNN(nn.Module):
    """Continuous GNN with restart (Xhonneux et al. 2020): encode, integrate to ``t1``, decode.

    ``E = Linear(dropout(x))``; ``H(t1)`` solves ``dH/dt = CGNNRate(H)`` from ``H(0) = E``
    inside a ContinuousBlock (``n_basis=1``: the paper's constant alpha and W; any scheme
    and step count is a manifestation); then ReLU, dropout and a linear decoder.
    ``self_loop_weight != 1`` re-weights the self loops of the given adjacency (see
    `reweight_self_loops`; cached per adjacency tensor). ``detach_restart`` makes the
    restart term ``E`` a constant for autograd (the encoder then learns only through
    ``H(0)``), as the authors' code does (``x0.clone().detach()``).
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int, input_dropout: float, dropout: float,
                 block: ContinuousBlock, self_loop_weight: float = 1.0, detach_restart: bool = False) -> None:
        super().__init__()
        self.input_dropout, self.dropout = input_dropout, dropout
        self.self_loop_weight, self.detach_restart = self_loop_weight, detach_restart
        self.encoder = nn.Linear(in_features, hidden)
        self.block = block
        self.decoder = nn.Linear(hidden, num_classes)
        self._reweighted: tuple[Tensor, Tensor] | None = None

    def _adjacency(self, adjacency: Tensor) -> Tensor:
        if self.self_loop_weight == 1.0:
            return adjacency
        if self._reweighted is None or self._reweighted[0] is not adjacency:
            self._reweighted = (adjacency, reweight_self_loops(adjacency, self.self_loop_weight))
        return self._reweighted[1]

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        if adjacency.shape[0] != self.num_nodes:
            raise ValueError(
                f"adjacency: this cgnn was built for num_nodes={self.num_nodes} (one alpha per node), "
                f"got a graph of {adjacency.shape[0]} nodes"
            )
        e = self.encoder(feature_dropout(x, self.input_dropout, self.training))
        h = self.block(e, self._adjacency(adjacency), e.detach() if self.detach_restart else e)
        return self.decoder(F.dropout(torch.relu(h), self.dropout, self.training))

    @property
    def num_nodes(self) -> int:
        return int(self.block.coefficients.get("a").shape[1])

    def weight_decay_parameters(self) -> list[nn.Parameter]:
        """The encoder and decoder (the authors decay every parameter, alpha and W too: ``decay_norm_and_bias``)."""
        return list(self.encoder.parameters()) + list(self.decoder.parameters())


@register_model("cgnn", graph=True)
def cgnn(*, in_features: int, num_classes: int, num_nodes: int, hidden: int = 16, input_dropout: float = 0.5,
         dropout: float = 0.0, alpha_init: float = 0.85, weighted: bool = False, t1: float = 16.0,
         scheme: str = "rk4", n_steps: int = 14, basis: str = "piecewise_constant", n_basis: int = 1,
         checkpoint: bool = False, self_loop_weight: float = 0.555, detach_restart: bool = True) -> nn.Module:
    """CGNN; ``weighted=True`` adds the learnable channel mixing ``H (W - I)``; ``t1`` is the paper's ``T``;
    ``self_loop_weight`` (> 0) the weight of the self loops in the normalised adjacency; ``detach_restart``
    stops gradients through the restart term ``E`` (see [`CGNN`][contdepth.models.CGNN]).

    The defaults are the authors' Cora settings (run_cora_cgnn.py of
    DeepGraphLearning/ContinuousGNN: self-loop weight 0.555, the restart term detached,
    hidden 16) except a longer diffusion ``T = 16`` (theirs 12.1) and ``alpha`` starting at
    0.85 (theirs ``sigmoid(0.918) = 0.715``; their ``alpha`` option is the pre-sigmoid value),
    chosen on Cora's validation split (the README's graph results hold the search). RK4 with
    14 steps stands in for their adaptive dopri5. They train with RMSprop (lr 0.0047) and L2
    decay 5e-4 on every parameter (``optimizer=rmsprop``, ``decay_norm_and_bias=True`` in a
    TrainConfig)."""
    check_int(in_features, "in_features", low=1)
    check_int(num_classes, "num_classes", low=1)
    check_int(num_nodes, "num_nodes", low=1)
    check_int(hidden, "hidden", low=1)
    check_number(alpha_init, "alpha_init", low=0.0, high=1.0, low_open=True, high_open=True, range_apart=True,
                 subject="the initial alpha")
    check_bool(weighted, "weighted")
    check_bool(detach_restart, "detach_restart")
    self_loop_weight = check_number(self_loop_weight, "self_loop_weight", low=0.0, low_open=True)
    _check_basis(basis, n_basis, scheme, n_steps)
    block = ContinuousBlock(CGNNRate(num_nodes, hidden, float(alpha_init), weighted), basis=basis,
                            n_basis=n_basis, scheme=scheme, n_steps=n_steps, t1=_check_time(t1),
                            checkpoint=check_bool(checkpoint, "checkpoint"))
    return CGNN(in_features, num_classes, hidden, _check_probability(input_dropout, "input_dropout"),
                _check_probability(dropout, "dropout"), block, self_loop_weight, detach_restart)

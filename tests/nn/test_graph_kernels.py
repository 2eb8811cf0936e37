"""The fast graph kernels: ``propagate`` (cached CSR product), ``feature_dropout`` and ``GraphDataset.inputs``."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import torch

from contdepth import data
from contdepth.models import create
from contdepth.nn import feature_dropout, propagate


def random_sparse(n: int = 9, density: float = 0.3, seed: int = 0) -> torch.Tensor:
    """A non-symmetric sparse float64 matrix, so a backward pass that forgot the transpose would show."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(n, n, generator=g, dtype=torch.float64) * (torch.rand(n, n, generator=g) < density)
    return dense.to_sparse_coo().coalesce()


def test_propagate_matches_the_dense_product_and_its_gradient():
    adjacency = random_sparse()
    assert not torch.equal(adjacency.to_dense(), adjacency.to_dense().T)
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64)
    out = propagate(adjacency, x)
    torch.testing.assert_close(out, adjacency.to_dense() @ x)
    (grad,) = torch.autograd.grad((out * weight).sum(), x)
    torch.testing.assert_close(grad, adjacency.to_dense().T @ weight)
    assert torch.autograd.gradcheck(lambda v: propagate(adjacency, v), (x,))
    torch.testing.assert_close(propagate(adjacency.to_sparse_csr(), x), out)  # a CSR adjacency works too
    torch.testing.assert_close(propagate(adjacency.to_dense(), x), out)


def test_propagate_sees_in_place_changes_and_learned_edge_weights():
    adjacency = random_sparse(seed=1)
    x = torch.randn(9, 3, dtype=torch.float64)
    before = propagate(adjacency, x)
    adjacency.mul_(2.0)  # the cached CSR copy must not be reused
    torch.testing.assert_close(propagate(adjacency, x), 2.0 * before)
    adjacency = adjacency.coalesce()
    values = adjacency.values().clone().requires_grad_(True)
    learned = torch.sparse_coo_tensor(adjacency.indices(), values, adjacency.shape, check_invariants=True)
    propagate(learned, x).sum().backward()
    assert values.grad is not None and values.grad.abs().sum() > 0


def test_an_adjacency_that_was_propagated_through_stays_copyable_and_picklable():
    adjacency = random_sparse(seed=2)
    propagate(adjacency, torch.ones(9, 2, dtype=torch.float64))
    for clone in (copy.deepcopy(adjacency), pickle.loads(pickle.dumps(adjacency))):
        torch.testing.assert_close(clone.to_dense(), adjacency.to_dense())


def test_feature_dropout_on_sparse_features_has_the_distribution_of_dense_dropout():
    torch.manual_seed(0)
    dense = (torch.rand(200, 500) < 0.1).double() * torch.rand(200, 500, dtype=torch.float64)
    sparse = dense.to_sparse_coo().coalesce()
    assert feature_dropout(sparse, 0.5, training=False) is sparse
    assert feature_dropout(sparse, 0.0, training=True) is sparse
    dropped = feature_dropout(sparse, 0.3, training=True).to_dense()
    kept = dropped != 0
    assert not bool((kept & (dense == 0)).any())  # zeros stay zero
    torch.testing.assert_close(dropped[kept], dense[kept] / 0.7)  # survivors rescaled by 1 / (1 - p)
    nnz = int((dense != 0).sum())
    fraction = 1 - int(kept.sum()) / nnz
    assert abs(fraction - 0.3) < 4 * (0.3 * 0.7 / nnz) ** 0.5
    torch.testing.assert_close(feature_dropout(dense, 0.3, training=False), dense)


def test_dataset_inputs_are_sparse_for_bag_of_words_and_models_agree_on_both():
    graph = data.load("karate")  # one-hot identities: 1/34 non-zero
    features, adjacency = graph.inputs
    assert features.layout == torch.sparse_coo and adjacency is graph.adjacency
    assert graph.inputs[0] is features  # computed once
    torch.testing.assert_close(features.to_dense(), graph.features)
    dense_graph = dataclasses.replace(graph, features=torch.rand(34, 34) + 0.1)
    assert dense_graph.inputs[0].layout == torch.strided
    for name, options in (("gcn", {}), ("gcde", {}), ("cgnn", {"num_nodes": 34})):
        torch.manual_seed(0)
        model = create(name, in_features=34, num_classes=graph.num_classes, **options).eval()
        torch.testing.assert_close(model(*graph.inputs), model(graph.features, graph.adjacency))
        model.train()
        for attribute in ("dropout", "input_dropout"):  # the inputs' dropout draws differ; the rest repeat per seed
            if isinstance(getattr(model, attribute, None), float):
                setattr(model, attribute, 0.0)
        grads = []
        for inputs in (graph.inputs, (graph.features, graph.adjacency)):
            model.zero_grad()
            torch.manual_seed(1)
            model(*inputs).square().sum().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for sparse_grad, dense_grad in zip(*grads):
            torch.testing.assert_close(sparse_grad, dense_grad, rtol=1e-4, atol=1e-5)


def test_models_train_with_sparse_inputs():
    graph = data.load("karate")
    torch.manual_seed(0)
    model = create("gcn", in_features=34, num_classes=graph.num_classes, dropout=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(50):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(*graph.inputs)[graph.train_mask], graph.labels[graph.train_mask])
        loss.backward()
        optimizer.step()
    model.eval()
    accuracy = (model(*graph.inputs).argmax(1)[graph.train_mask] == graph.labels[graph.train_mask]).float().mean()
    assert accuracy == 1.0

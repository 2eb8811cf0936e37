"""Graph data: the normalised adjacency, GraphDataset, the Cora reader and the karate club."""

from __future__ import annotations


import pytest
import torch

from contdepth import data
from contdepth.data import GraphDataset, load_karate, read_cora
from contdepth.nn import normalized_adjacency

from helpers import CORA_DIR, write_cora


def dense_reference(edges: list[tuple[int, int]], n: int, weights: list[float] | None = None) -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 the obvious dense way (A's diagonal cleared first)."""
    a = torch.zeros(n, n, dtype=torch.float64)
    for k, (i, j) in enumerate(edges):
        if weights is None:
            a[i, j] = 1.0
        else:
            a[i, j] += weights[k]
    a.fill_diagonal_(0.0)
    a = a + torch.eye(n, dtype=torch.float64)
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


# --- normalized_adjacency ------------------------------------------------------------------

def test_normalized_adjacency_matches_dense_with_loops_duplicates_and_isolated_nodes():
    # 0-1, 1-2, 2-0 triangle, 3-4 edge listed twice, a self loop on 1, node 5 isolated
    edges = [(0, 1), (1, 0), (1, 2), (2, 1), (2, 0), (0, 2), (3, 4), (4, 3), (3, 4), (4, 3), (1, 1)]
    index = torch.tensor(edges).T
    got = normalized_adjacency(index, 6, dtype=torch.float64)
    assert got.is_sparse and got.is_coalesced() and got.shape == (6, 6)
    assert got._nnz() == 8 + 6  # off-diagonal entries + one loop per node, nothing dense
    torch.testing.assert_close(got.to_dense(), dense_reference(edges, 6), rtol=0, atol=1e-15)
    assert got.to_dense()[5, 5] == 1.0  # an isolated node keeps its own features


def test_normalized_adjacency_weights_are_summed_for_repeated_edges():
    edges = [(0, 1), (1, 0), (1, 2), (2, 1), (1, 2), (2, 1)]
    weights = [2.0, 2.0, 0.5, 0.5, 1.5, 1.5]
    got = normalized_adjacency(torch.tensor(edges).T, 3, torch.tensor(weights), dtype=torch.float64)
    torch.testing.assert_close(got.to_dense(), dense_reference(edges, 3, weights), rtol=0, atol=1e-15)
    assert got.dtype == torch.float64
    assert normalized_adjacency(torch.tensor(edges).T, 3).dtype == torch.float32


@pytest.mark.parametrize("index, n, weights, message", [
    (torch.tensor([[0, 1], [1, 0]]), 0, None, "num_nodes"),
    (torch.tensor([[0, 1, 2]]), 3, None, "edge_index: expected shape"),
    (torch.tensor([[0.0], [1.0]]), 3, None, "integer"),
    (torch.tensor([[0, 3], [3, 0]]), 3, None, r"node ids must lie in \[0, 3\)"),
    (torch.tensor([[0], [1]]), 3, None, "not symmetric"),
    (torch.tensor([[0, 1], [1, 0]]), 3, torch.tensor([1.0, 2.0]), "not symmetric"),
    (torch.tensor([[0, 1], [1, 0]]), 3, torch.tensor([1.0]), "weights: expected a tensor of shape"),
    (torch.tensor([[0, 1], [1, 0]]), 3, torch.tensor([-1.0, -1.0]), "finite and >= 0"),
])
def test_normalized_adjacency_rejects_bad_input(index, n, weights, message):
    with pytest.raises(ValueError, match=message):
        normalized_adjacency(index, n, weights)


# --- the Cora text format --------------------------------------------------------------------

def test_read_cora_tiny(tmp_path):
    g = read_cora(write_cora(tmp_path), name="tiny")
    assert isinstance(g, GraphDataset) and g.is_graph
    assert (g.num_nodes, g.num_features, g.num_classes, g.num_edges) == (5, 4, 3, 6)
    assert g.split_sizes == {"train": 2, "val": 1, "test": 1}
    assert g.labels.tolist() == [0, 1, 2, 0, -1]
    assert g.train_mask.tolist() == [True, True, False, False, False]
    assert g.mask("val").tolist() == [False, False, True, False, False]
    # rows divided by their sums (Kipf & Welling); the empty row stays zero
    torch.testing.assert_close(g.features[2], torch.tensor([0.25, 0.25, 0.0, 0.5]))
    assert g.features[3].abs().sum() == 0
    raw = read_cora(tmp_path, normalize_features=False, num_features=6)
    assert raw.num_features == 6 and raw.features[2].tolist() == [1.0, 1.0, 0.0, 2.0, 0.0, 0.0]
    edges = [tuple(e) for e in raw.edge_index.T.tolist()]
    expected = normalized_adjacency(raw.edge_index, 5, torch.tensor([1.0, 1, 1, 1, 2, 2]))
    torch.testing.assert_close(raw.adjacency.to_dense(), expected.to_dense())
    assert edges[0] == (0, 1) and raw.adjacency.dtype == torch.float32


@pytest.mark.parametrize("file, text, message", [
    ("feature.txt", "0\t0:1.0\nx\t1:1.0\n", r"feature\.txt:2: bad node id 'x'"),
    ("feature.txt", "0\t0:1.0\n1\t1-1.0\n", r"feature\.txt:2: bad feature '1-1\.0'"),
    ("feature.txt", "0\t0:1.0\n1\t-1:1.0\n", r"feature\.txt:2: feature index -1 out of range"),
    ("feature.txt", "0\t0:1.0\n0\t1:1.0\n", r"feature\.txt:2: node 0 listed twice"),
    ("feature.txt", "0\t0:1.0\n2\t1:1.0\n", r"feature\.txt: node ids must be 0\.\.1"),
    ("label.txt", "0\t0\n1\t1\n2\t2\n3\n", r"label\.txt:4: expected 2 columns"),
    ("label.txt", "0\t0\n1\tb\n2\t2\n3\t0\n", r"label\.txt:2: bad class 'b'"),
    ("label.txt", "0\t0\n1\t1\n7\t2\n3\t0\n", r"label\.txt:3: node id 7 out of range"),
    ("net.txt", "0\t1\t1\n1\t0\n", r"net\.txt:2: expected 3 columns"),
    ("net.txt", "0\t1\t1\n1\t5\t1\n", r"net\.txt:2: node id 5 out of range"),
    ("net.txt", "0\t1\t1\n1\t-2\t1\n", r"net\.txt:2: node id -2 out of range"),
    ("net.txt", "0\t1\t1\n1\t0\tw\n", r"net\.txt:2: bad edge weight 'w'"),
    ("net.txt", "0\t1\t1\n1\t2\t1\n", r"net\.txt: edge_index: the graph is not symmetric"),
    ("dev.txt", "2\n4\n", r"dev\.txt:2: node 4 has no label"),
    ("test.txt", "\n1\n", r"test\.txt:2: node 1 is already in train\.txt \(line 2\)"),
    ("train.txt", "0\n1 2\n", r"train\.txt:2: expected 1 columns"),
    ("train.txt", "0\n99\n", r"train\.txt:2: node id 99 out of range"),
])
def test_read_cora_names_file_and_line_of_malformed_input(tmp_path, file, text, message):
    write_cora(tmp_path, **{file.replace(".", "_"): text})
    with pytest.raises(ValueError, match=message):
        read_cora(tmp_path)


def test_read_cora_missing_file_and_folder(tmp_path):
    write_cora(tmp_path)
    (tmp_path / "dev.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"dev\.txt: missing"):
        read_cora(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        read_cora(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="data_dir: the 'cora' dataset is read from files"):
        data.load("cora")


@pytest.mark.skipif(not (CORA_DIR / "feature.txt").is_file(), reason=f"Cora files not present in {CORA_DIR}")
def test_real_cora():
    g = data.load("cora", data_dir=CORA_DIR)
    assert (g.num_nodes, g.num_features, g.num_classes) == (2708, 1433, 7)
    assert g.split_sizes == {"train": 140, "val": 500, "test": 1000}
    assert g.num_edges == 10556 and g.adjacency._nnz() == 10556 + 2708
    assert int((g.labels >= 0).sum()) == 1640
    assert g.features.dtype == torch.float32 and torch.allclose(g.features.sum(1), torch.ones(2708))
    # the symmetric normalisation: D^-1/2 (A+I) D^-1/2 has largest eigenvalue 1 with eigenvector D^1/2 1
    degree = torch.bincount(g.edge_index[0], minlength=2708).double() + 1
    v = degree.sqrt()
    torch.testing.assert_close(torch.sparse.mm(g.adjacency.double(), v[:, None])[:, 0], v)


# --- the karate club, GraphDataset, the registry ---------------------------------------------

def test_karate():
    g = data.load("karate")
    assert (g.num_nodes, g.num_features, g.num_classes, g.num_edges) == (34, 34, 2, 156)
    assert g.class_names == ("Mr. Hi", "Officer")
    assert torch.equal(g.features, torch.eye(34))
    assert g.split_sizes == {"train": 8, "val": 8, "test": 18}
    assert (g.labels >= 0).all() and int((g.labels == 0).sum()) == 17
    assert g.labels[0] == 0 and g.labels[33] == 1  # the instructor and the administrator
    for split in ("train", "val"):
        assert torch.bincount(g.labels[g.mask(split)]).tolist() == [4, 4]
    again = load_karate()
    assert all(torch.equal(g.mask(s), again.mask(s)) for s in ("train", "val", "test"))
    other = load_karate(split_seed=1, train_per_class=2)
    assert other.split_sizes == {"train": 4, "val": 8, "test": 22}
    assert not torch.equal(other.train_mask, g.train_mask)
    dense = g.adjacency.to_dense()
    torch.testing.assert_close(dense, dense.T)
    with pytest.raises(ValueError, match="data_dir: dataset 'karate' is embedded"):
        data.load("karate", data_dir="/tmp")
    with pytest.raises(ValueError, match="train_per_class, val_per_class"):
        load_karate(train_per_class=10, val_per_class=7)
    with pytest.raises(ValueError, match="options: seed_split not understood"):
        data.load("karate", seed_split=1)


def test_graph_dataset_checks_and_to():
    g = load_karate()
    moved = g.to("cpu")
    assert moved is not g and moved.adjacency.is_sparse and moved.split_sizes == g.split_sizes
    import dataclasses

    with pytest.raises(ValueError, match="val_mask: overlaps an earlier split"):
        dataclasses.replace(g, val_mask=g.train_mask.clone())
    unlabelled = g.labels.clone()
    unlabelled[g.test_mask] = -1
    with pytest.raises(ValueError, match="test_mask: contains unlabelled nodes"):
        dataclasses.replace(g, labels=unlabelled)
    with pytest.raises(ValueError, match="adjacency: expected a sparse"):
        dataclasses.replace(g, adjacency=g.adjacency.to_dense())
    with pytest.raises(ValueError, match="split: must be one of"):
        g.mask("dev")

"""Node-classification graphs: [`GraphDataset`][contdepth.data.GraphDataset], the Cora text reader and Zachary's karate club.

A graph dataset is one graph with all its nodes in memory (full-batch training): dense
features, the raw edge list, the normalised sparse adjacency that every graph model takes,
labels (``-1`` where unknown) and boolean train/validation/test masks.

Cora format (the text files of Yang et al. 2016 / GMNN / CGNN, tab-separated, ids ``0..N-1``):
``feature.txt`` ``node<TAB>index:value ...``; ``label.txt`` ``node<TAB>class``; ``net.txt``
``node<TAB>node<TAB>weight`` (both directions of every edge); ``train.txt``, ``dev.txt``,
``test.txt`` one node id per line. The node count is the number of lines of ``feature.txt``
(each id exactly once). Every malformed line is a ``ValueError`` naming the file and line.

Every size comes from what the files hold, never from a number written in them: the feature
width is at most the number of ``index:value`` entries (a feature no node has is no feature),
a class id is below the number of labelled nodes (every class has a member), and the dense
feature matrix must fit in this machine's memory, so an index of ``10**12`` is one error
line instead of a 48 TB allocation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch

from ..common.validate import check_int
from ..nn.graph import normalized_adjacency

Tensor = torch.Tensor
SPLITS = ("train", "val", "test")
# Features at most this dense are handed to models as a sparse COO matrix (``GraphDataset.inputs``).
SPARSE_FEATURE_DENSITY = 0.1
CORA_FILES = {"train": "train.txt", "val": "dev.txt", "test": "test.txt"}


@dataclass(frozen=True, eq=False)
class GraphDataset:
    """One graph for semi-supervised node classification (see the module docstring).

    ``features`` ``(N, F)`` float32; ``adjacency`` sparse COO ``(N, N)`` coalesced float32
    ``D^-1/2 (A + I) D^-1/2``; ``edge_index`` ``(2, E)`` int64, both directions;
    ``labels`` ``(N,)`` int64 with ``-1`` for unlabelled nodes; ``*_mask`` ``(N,)`` bool,
    disjoint, every masked node labelled. ``is_graph`` tells a trainer to use the
    full-batch node loop (image datasets lack the attribute).
    """

    is_graph: ClassVar[bool] = True

    name: str
    features: Tensor = field(repr=False)
    adjacency: Tensor = field(repr=False)
    edge_index: Tensor = field(repr=False)
    labels: Tensor = field(repr=False)
    train_mask: Tensor = field(repr=False)
    val_mask: Tensor = field(repr=False)
    test_mask: Tensor = field(repr=False)
    num_classes: int
    source: str = ""
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = self.features.shape[0] if self.features.dim() == 2 else -1
        if n < 1:
            raise ValueError(f"features: expected an (N, F) tensor with N >= 1, got shape {tuple(self.features.shape)}")
        if not self.adjacency.is_sparse or tuple(self.adjacency.shape) != (n, n):
            raise ValueError(f"adjacency: expected a sparse ({n}, {n}) tensor, got {self.adjacency.layout} "
                             f"of shape {tuple(self.adjacency.shape)}")
        if self.edge_index.dim() != 2 or self.edge_index.shape[0] != 2 or self.edge_index.dtype != torch.int64:
            raise ValueError(f"edge_index: expected a (2, E) int64 tensor, got {self.edge_index.dtype} "
                             f"of shape {tuple(self.edge_index.shape)}")
        if self.labels.shape != (n,) or self.labels.dtype != torch.int64:
            raise ValueError(f"labels: expected an int64 tensor of shape ({n},), got {self.labels.dtype} "
                             f"of shape {tuple(self.labels.shape)}")
        check_int(self.num_classes, "num_classes", low=1)
        if int(self.labels.max()) >= self.num_classes or int(self.labels.min()) < -1:
            raise ValueError(f"labels: must lie in [0, {self.num_classes}) or be -1 (unlabelled)")
        covered = torch.zeros(n, dtype=torch.bool, device=self.labels.device)
        for split in SPLITS:
            mask = getattr(self, f"{split}_mask")
            if mask.shape != (n,) or mask.dtype != torch.bool:
                raise ValueError(f"{split}_mask: expected a bool tensor of shape ({n},), got {mask.dtype} "
                                 f"of shape {tuple(mask.shape)}")
            if bool((mask & covered).any()):
                raise ValueError(f"{split}_mask: overlaps an earlier split")
            if bool((self.labels[mask] < 0).any()):
                raise ValueError(f"{split}_mask: contains unlabelled nodes")
            covered |= mask
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names: need {self.num_classes} names, got {len(self.class_names)}")

    @property
    def num_nodes(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_edges(self) -> int:
        """Directed edges in ``edge_index`` (an undirected edge counts twice)."""
        return int(self.edge_index.shape[1])

    @property
    def split_sizes(self) -> dict[str, int]:
        """``{"train": ..., "val": ..., "test": ...}`` node counts."""
        return {split: int(getattr(self, f"{split}_mask").sum()) for split in SPLITS}

    @functools.cached_property
    def inputs(self) -> tuple[Tensor, Tensor]:
        """``(features, adjacency)`` as the trainer hands them to a model: ``model(*dataset.inputs)``.

        Features at most ``SPARSE_FEATURE_DENSITY`` (10%) non-zero (bag-of-words: Cora is
        1.3%) come as a coalesced sparse COO copy, which every graph model takes like the
        dense matrix: input dropout then draws only the non-zeros and the first layer is a
        sparse product, which makes a Cora epoch several times faster on CPU. The
        ``features`` field itself stays dense. Computed once per dataset.
        """
        features = self.features
        if features.layout == torch.strided and features.numel():
            density = int(torch.count_nonzero(features)) / features.numel()
            if density <= SPARSE_FEATURE_DENSITY:
                features = features.to_sparse_coo().coalesce()
        return features, self.adjacency

    def mask(self, split: str) -> Tensor:
        """The boolean mask of ``split`` (``train``, ``val`` or ``test``)."""
        if split not in SPLITS:
            raise ValueError(f"split: must be one of {', '.join(SPLITS)}; got {split!r}")
        return getattr(self, f"{split}_mask")

    def to(self, device: str | torch.device) -> "GraphDataset":
        """A copy with every tensor on ``device`` (the original is left as it is)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **moved)


def make_graph_dataset(name: str, features: Tensor, edge_index: Tensor, labels: Tensor,
                       splits: dict[str, Tensor], *, num_classes: int, weights: Tensor | None = None,
                       adjacency: Tensor | None = None, source: str = "",
                       class_names: tuple[str, ...] | None = None) -> GraphDataset:
    """Build a [`GraphDataset`][contdepth.data.GraphDataset]; ``adjacency`` defaults to ``normalized_adjacency(edge_index, N, weights)``.

    ``splits`` maps ``train``/``val``/``test`` to node-id tensors.
    """
    n = int(features.shape[0])
    if adjacency is None:
        adjacency = normalized_adjacency(edge_index, n, weights)
    masks = {}
    for split in SPLITS:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[splits[split]] = True
        masks[f"{split}_mask"] = mask
    return GraphDataset(
        name=name, features=features.to(torch.float32), adjacency=adjacency,
        edge_index=edge_index, labels=labels, num_classes=num_classes, source=source, class_names=class_names,
        **masks,
    )


# --- Cora text format -------------------------------------------------------------------

def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, tab/space-separated fields)`` of the non-blank lines of ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (the Cora format needs feature.txt, label.txt, net.txt, "
                                "train.txt, dev.txt, test.txt)")
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                fields = line.split()
                if fields:
                    yield number, fields
    except UnicodeDecodeError:
        raise ValueError(_undecodable(path)) from None


def _undecodable(path: Path) -> str:
    """``PATH:LINE: not UTF-8 text ...`` for the first line that does not decode (text mode cannot say which)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"{path}:{number}: not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
    return f"{path}: not UTF-8 text"


def _memory_bytes() -> int | None:
    """Physical memory of this machine, or ``None`` where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _human(size: float) -> str:
    """``size`` bytes in binary units, for messages."""
    if size < 1024:
        return f"{int(size)} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"


def _node_id(text: str, path: Path, number: int, num_nodes: int | None = None) -> int:
    try:
        node = int(text)
    except ValueError:
        raise ValueError(f"{path}:{number}: bad node id {text!r} (expected an integer)") from None
    if node < 0 or (num_nodes is not None and node >= num_nodes):
        limit = f"[0, {num_nodes})" if num_nodes is not None else ">= 0"
        raise ValueError(f"{path}:{number}: node id {node} out of range (expected {limit}, "
                         "the ids of feature.txt)")
    return node


def _columns(fields: list[str], count: int, path: Path, number: int, what: str) -> None:
    if len(fields) != count:
        raise ValueError(f"{path}:{number}: expected {count} columns ({what}), got {len(fields)}")


def _read_features(path: Path, num_features: int | None) -> Tensor:
    rows: dict[int, list[tuple[int, float]]] = {}
    first_line: dict[int, int] = {}
    top_index, top_line, num_entries = -1, 0, 0
    for number, fields in _lines(path):
        node = _node_id(fields[0], path, number)
        if node in rows:
            raise ValueError(f"{path}:{number}: node {node} listed twice (first on line {first_line[node]})")
        entries = []
        for item in fields[1:]:
            index_text, sep, value_text = item.partition(":")
            try:
                if not sep:
                    raise ValueError
                index, value = int(index_text), float(value_text)
            except ValueError:
                raise ValueError(f"{path}:{number}: bad feature {item!r} (expected index:value)") from None
            if index < 0 or (num_features is not None and index >= num_features):
                allowed = f"[0, {num_features})" if num_features is not None else ">= 0"
                raise ValueError(f"{path}:{number}: feature index {index} out of range (expected {allowed})")
            if not math.isfinite(value):
                raise ValueError(f"{path}:{number}: feature value {value_text!r} is not finite")
            entries.append((index, value))
            if index > top_index:
                top_index, top_line = index, number
        rows[node], first_line[node] = entries, number
        num_entries += len(entries)
    if not rows:
        raise ValueError(f"{path}: no nodes")
    n = len(rows)
    missing = sorted(set(range(n)) - set(rows))
    if missing:
        raise ValueError(f"{path}: node ids must be 0..{n - 1} (one line each); missing {missing[:5]}, "
                         f"out of range {sorted(k for k in rows if k >= n)[:5]}")
    width = num_features if num_features is not None else top_index + 1
    if width < 1:
        raise ValueError(f"{path}: no feature indices, so the feature width is unknown; pass num_features")
    if num_features is None and width > num_entries:
        raise ValueError(f"{path}:{top_line}: feature index {top_index} out of range: the file holds {num_entries} "
                         f"feature entries, so at most {num_entries} features (indices 0..{num_entries - 1}) are "
                         "used; pass num_features to set a wider matrix")
    need, memory = 4 * n * width, _memory_bytes()
    if memory is not None and 2 * need > memory:  # the features and their normalised copy
        raise ValueError(f"{path}: a dense {n} x {width} float32 feature matrix needs {_human(need)} (twice, "
                         f"with its normalised copy); this machine has {_human(memory)} of memory")
    features = torch.zeros(n, width, dtype=torch.float32)
    for node, entries in rows.items():
        if entries:
            index = torch.tensor([i for i, _ in entries])
            features[node, index] = torch.tensor([v for _, v in entries], dtype=torch.float32)
    return features


def _read_labels(path: Path, num_nodes: int) -> Tensor:
    found: dict[int, tuple[int, int]] = {}  # node -> (class, line)
    for number, fields in _lines(path):
        _columns(fields, 2, path, number, "node, class")
        node = _node_id(fields[0], path, number, num_nodes)
        try:
            label = int(fields[1])
        except ValueError:
            raise ValueError(f"{path}:{number}: bad class {fields[1]!r} (expected an integer >= 0)") from None
        if label < 0:
            raise ValueError(f"{path}:{number}: bad class {label} (expected an integer >= 0)")
        if node in found and found[node][0] != label:
            raise ValueError(f"{path}:{number}: node {node} has two labels ({found[node][0]} and {label})")
        found.setdefault(node, (label, number))
    labels = torch.full((num_nodes,), -1, dtype=torch.int64)
    if found:
        # Checked before the classes size anything (the model's output layer): with K labelled
        # nodes a class id >= K leaves some class without a member.
        top, line = max(found.values())
        if top >= len(found):
            raise ValueError(f"{path}:{line}: class {top} out of range: the file labels {len(found)} nodes, so "
                             f"classes must lie in [0, {len(found)})")
        labels[torch.tensor(list(found))] = torch.tensor([label for label, _ in found.values()])
    return labels


def _read_edges(path: Path, num_nodes: int) -> tuple[Tensor, Tensor]:
    sources, targets, weights = [], [], []
    for number, fields in _lines(path):
        _columns(fields, 3, path, number, "node, node, weight")
        sources.append(_node_id(fields[0], path, number, num_nodes))
        targets.append(_node_id(fields[1], path, number, num_nodes))
        try:
            weight = float(fields[2])
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{path}:{number}: bad edge weight {fields[2]!r} (expected a finite number >= 0)")
        weights.append(weight)
    return torch.tensor([sources, targets], dtype=torch.int64).reshape(2, -1), torch.tensor(weights)


def _read_split(path: Path, num_nodes: int, labels: Tensor, taken: dict[int, str]) -> Tensor:
    nodes = []
    for number, fields in _lines(path):
        _columns(fields, 1, path, number, "node")
        node = _node_id(fields[0], path, number, num_nodes)
        if node in taken:
            raise ValueError(f"{path}:{number}: node {node} is already in {taken[node]}")
        if labels[node] < 0:
            raise ValueError(f"{path}:{number}: node {node} has no label in label.txt")
        taken[node] = f"{path.name} (line {number})"
        nodes.append(node)
    if not nodes:
        raise ValueError(f"{path}: the split is empty")
    return torch.tensor(nodes, dtype=torch.int64)


def read_cora(data_dir: str | Path, *, name: str = "cora", num_features: int | None = None,
              normalize_features: bool = True) -> GraphDataset:
    """Read a graph in the Cora text format from ``data_dir`` (see the module docstring).

    ``num_features`` fixes the feature width (default: largest index + 1). With
    ``normalize_features`` each feature row is divided by its sum (rows of zeros stay
    zero), the preprocessing of Kipf & Welling's GCN and of the CGNN code.
    """
    if data_dir is None:
        raise ValueError(f"data_dir: the {name!r} dataset is read from files; give the folder holding "
                         "feature.txt, label.txt, net.txt, train.txt, dev.txt, test.txt (--data-dir)")
    if num_features is not None:
        num_features = _positive(num_features, "num_features")
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"data_dir: {folder} is not a folder")
    features = _read_features(folder / "feature.txt", num_features)
    n = features.shape[0]
    labels = _read_labels(folder / "label.txt", n)
    edge_index, weights = _read_edges(folder / "net.txt", n)
    taken: dict[int, str] = {}
    splits = {split: _read_split(folder / file, n, labels, taken) for split, file in CORA_FILES.items()}
    known = labels[labels >= 0]
    num_classes = int(known.max()) + 1 if len(known) else 1
    if normalize_features:
        total = features.sum(dim=1, keepdim=True)
        features = features / torch.where(total == 0, torch.ones_like(total), total)
    try:
        adjacency = normalized_adjacency(edge_index, n, weights)
    except ValueError as exc:
        raise ValueError(f"{folder / 'net.txt'}: {exc}") from exc
    return make_graph_dataset(name, features, edge_index, labels, splits, num_classes=num_classes,
                              adjacency=adjacency, source=f"{name} text format from {folder}")


def load_cora(data_dir: str | Path | None = None, *, normalize_features: bool = True) -> GraphDataset:
    """Cora (2,708 papers, 1,433 features, 7 classes, 140/500/1,000 split) from ``data_dir``."""
    return read_cora(data_dir, name="cora", normalize_features=normalize_features)  # type: ignore[arg-type]


def _positive(value: object, name: str) -> int:
    return check_int(int(value) if isinstance(value, np.integer) else value, name, low=1)


# --- Zachary's karate club -------------------------------------------------------------

KARATE_CLASSES = ("Mr. Hi", "Officer")


def load_karate(*, train_per_class: int = 4, val_per_class: int = 4, split_seed: int = 0) -> GraphDataset:
    """Zachary's karate club (34 members, 78 friendships) from networkx: the embedded graph default.

    Labels are the two factions after the split (networkx's ``club`` attribute: 0 = "Mr. Hi",
    1 = "Officer"); features are one-hot node identities (34 x 34), so only the graph
    carries information. The split is fixed: ``train_per_class`` and ``val_per_class``
    nodes of each class drawn with ``numpy.random.default_rng(split_seed)``, the rest
    test (default 8 / 8 / 18). It does not follow the training seed, so runs with
    different seeds are compared on the same split.
    """
    train_per_class = _positive(train_per_class, "train_per_class")
    val_per_class = _positive(val_per_class, "val_per_class")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
        raise ValueError(f"split_seed: must be an integer >= 0, got {split_seed!r}")
    try:
        import networkx as nx
    except ImportError as exc:
        raise ImportError("the 'karate' dataset is built with networkx, which is not installed: "
                          "pip install networkx  (or: pip install 'contdepth[data]')") from exc
    graph = nx.karate_club_graph()
    nodes = sorted(graph.nodes)
    n = len(nodes)
    labels = torch.tensor([KARATE_CLASSES.index(graph.nodes[v]["club"]) for v in nodes], dtype=torch.int64)
    edges = [(u, v) for u, v in graph.edges if u != v]
    edge_index = torch.tensor(edges + [(v, u) for u, v in edges], dtype=torch.int64).T.contiguous()
    rng = np.random.default_rng(int(split_seed))
    splits: dict[str, list[int]] = {split: [] for split in SPLITS}
    for c in range(len(KARATE_CLASSES)):
        members = np.flatnonzero(labels.numpy() == c)
        if len(members) <= train_per_class + val_per_class:
            raise ValueError(f"train_per_class, val_per_class: class {KARATE_CLASSES[c]!r} has only "
                             f"{len(members)} members, leaving none for the test split")
        chosen = rng.permutation(members)
        splits["train"] += chosen[:train_per_class].tolist()
        splits["val"] += chosen[train_per_class:train_per_class + val_per_class].tolist()
        splits["test"] += chosen[train_per_class + val_per_class:].tolist()
    return make_graph_dataset(
        "karate", torch.eye(n), edge_index, labels,
        {split: torch.tensor(sorted(ids), dtype=torch.int64) for split, ids in splits.items()},
        num_classes=len(KARATE_CLASSES), class_names=KARATE_CLASSES,
        source=f"networkx {nx.__version__} karate_club_graph, per-class split {train_per_class}/{val_per_class}/rest "
               f"split_seed={int(split_seed)}",
    )

"""Image- and node-classification datasets and byte-level text: readers for the standard file formats,
the embedded default (scikit-learn's 8x8 digits) and a seeded, resumable batch pipeline written with torch ops.

    from contdepth import data
    ds = data.load("digits", seed=0)                 # no files needed
    ds = data.load("cifar10", data_dir="~/data")     # folder with cifar-10-batches-py/
    g = data.load("cora", data_dir="~/data/cora")    # a GraphDataset (full-batch node classification)
    t = data.load("text", data_dir="corpus.txt")     # a TextDataset (bytes; t.train_batch(32, 256, seed=0, step=0))
    for xb, yb in ds.batches("train", 128, seed=0):  # float32, normalised, augmented
        ...
"""

from .cifar import load_cifar10, load_cifar100
from .dataset import Dataset, channel_stats, hold_out, make_dataset
from .digits import load_digits
from .graph import GraphDataset, load_cora, load_karate, make_graph_dataset, read_cora
from .idx import FASHION_MNIST_DEFAULT_DIR, load_fashion_mnist, load_mnist, parse_idx, read_idx
from .pipeline import Augment, Batches, augment_batch, derive_seed, iterate, make_generator, normalize
from .registry import DATASETS, available_datasets, dataset_kind, is_graph_dataset, load, register_dataset
from .safe_pickle import RestrictedUnpickler, UnsafePickleError, safe_load, safe_load_path
from .text import TextDataset, load_text

__all__ = [
    "DATASETS", "FASHION_MNIST_DEFAULT_DIR", "Augment", "Batches", "Dataset", "GraphDataset", "RestrictedUnpickler",
    "TextDataset", "UnsafePickleError", "augment_batch", "available_datasets", "channel_stats", "dataset_kind",
    "derive_seed", "hold_out", "is_graph_dataset", "iterate", "load", "load_cifar10", "load_cifar100", "load_cora",
    "load_digits", "load_fashion_mnist", "load_karate", "load_mnist", "load_text", "make_dataset", "make_generator",
    "make_graph_dataset", "normalize", "parse_idx", "read_cora", "read_idx", "register_dataset", "safe_load",
    "safe_load_path",
]

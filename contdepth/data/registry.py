"""Datasets by name: ``load("cifar10", data_dir=...)``.

A flat table of loader functions, `DATASETS` (a `contdepth.common.registry.Registry`, the shape
every registry of contdepth has). Each loader takes the options it understands as keywords;
[`load`][contdepth.data.load] checks the options against the loader's signature first, so a misspelt option
is a ``ValueError`` listing the accepted ones rather than a ``TypeError`` deep inside.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..common.registry import Registry
from .cifar import load_cifar10, load_cifar100
from .dataset import Dataset
from .digits import load_digits
from .graph import load_cora, load_karate
from .idx import load_fashion_mnist, load_mnist
from .text import load_text

Loader = Callable[..., Dataset]


def _canonical(name: str) -> str:
    """``"Fashion-MNIST"`` and ``"fashion_mnist"`` name the same dataset."""
    return name.strip().lower().replace("-", "_")


#: What a dataset holds (the same kinds as the models': ``contdepth.models.registry.KINDS``).
KINDS = ("image", "graph", "text")

#: Every dataset by its canonical name; a graph (node classification) or text dataset carries the tag
#: ``"graph"`` or ``"text"``.
DATASETS: Registry[Loader] = Registry("dataset", option="name", normalize=_canonical)


def register_dataset(name: str, loader: Loader, *, overwrite: bool = False, graph: bool = False,
                     kind: str | None = None) -> None:
    """Make ``loader`` available to [`load`][contdepth.data.load] as ``name``.

    ``loader`` may take ``data_dir`` and/or ``seed`` and any keyword options; [`load`][contdepth.data.load]
    passes only those it declares. Registering a name twice needs ``overwrite=True``.
    ``graph=True`` marks a graph (node classification) dataset, so that a model/dataset
    mismatch is found from the names alone, before any file is read; ``kind`` names it in general
    (`KINDS`; ``graph=True`` is ``kind="graph"``).
    """
    if not callable(loader):
        raise TypeError(f"loader: expected a callable returning a Dataset, got {type(loader).__name__}")
    if graph and kind not in (None, "graph"):
        raise ValueError(f"kind: graph=True contradicts kind={kind!r}")
    kind = kind or ("graph" if graph else "image")
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}; got {kind!r}")
    DATASETS.register(name, loader, overwrite=overwrite, tags=() if kind == "image" else (kind,))


def available_datasets() -> list[str]:
    """Names accepted by [`load`][contdepth.data.load]."""
    return DATASETS.names()


def is_graph_dataset(name: str) -> bool:
    """Whether dataset ``name`` is a graph (registered with ``graph=True``); no file is read."""
    return name in DATASETS and "graph" in DATASETS.tags(name)


def dataset_kind(name: str) -> str:
    """``"image"``, ``"graph"`` or ``"text"``: what dataset ``name`` holds; no file is read (unknown: one line)."""
    tags = DATASETS.tags(name)
    return next((k for k in KINDS if k in tags), "image")


def load(name: str, *, data_dir: str | Path | None = None, seed: int = 0, **options: Any) -> Dataset:
    """Load a dataset by name: ``digits`` (embedded), ``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100``;
    graphs (a [`GraphDataset`][contdepth.data.GraphDataset]): ``cora`` (files) and ``karate`` (embedded, networkx);
    byte-level text (a [`TextDataset`][contdepth.data.TextDataset]): ``text`` (a UTF-8 file or folder in ``data_dir``).

    ``data_dir`` is where the files are (``fashion_mnist`` defaults to the Debian package's
    folder; ``digits`` needs none); ``seed`` draws the split where a dataset has no official
    one (``digits``) and is ignored otherwise. ``options`` go to the dataset's loader, e.g.
    ``test_fraction`` for ``digits``, ``labels="coarse"`` for ``cifar100`` or ``pattern="*"`` for ``text``.
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a dataset name (str), got {type(name).__name__}")
    loader = DATASETS.get(name)
    params = inspect.signature(loader).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [
        p for p in params if p not in ("data_dir", "seed") and params[p].kind is not inspect.Parameter.VAR_KEYWORD
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise ValueError(
            f"options: {', '.join(unknown)} not understood by dataset {_canonical(name)!r}; "
            f"it accepts: {', '.join(accepted) if accepted else 'no options'}"
        )
    kwargs = dict(options)
    if "data_dir" in params:
        kwargs["data_dir"] = data_dir
    elif data_dir is not None:
        raise ValueError(f"data_dir: dataset {_canonical(name)!r} is embedded and reads no files; leave data_dir unset")
    if "seed" in params:
        kwargs["seed"] = seed
    return loader(**kwargs)


register_dataset("digits", load_digits)
register_dataset("fashion_mnist", load_fashion_mnist)
register_dataset("mnist", load_mnist)
register_dataset("cifar10", load_cifar10)
register_dataset("cifar100", load_cifar100)
register_dataset("cora", load_cora, graph=True)
register_dataset("karate", load_karate, graph=True)
register_dataset("text", load_text, kind="text")

"""CIFAR-10 and CIFAR-100 from the standard "python version" batch files.

Those files (https://www.cs.toronto.edu/~kriz/cifar.html) are Python 2 pickles of dicts
with ``bytes`` keys: ``b"data"`` is a ``uint8`` array ``N x 3072`` (1024 red, then green,
then blue values, each a row-major 32x32 plane), labels are a list of ints under
``b"labels"`` (CIFAR-10) or ``b"fine_labels"``/``b"coarse_labels"`` (CIFAR-100). They are
read with :mod:`contdepth.data.safe_pickle`, never with plain ``pickle.load``.

``data_dir`` may be the folder holding the batches, its parent, the downloaded
``.tar.gz`` itself or a folder holding it: an archive is read in memory in one pass,
never extracted to disk.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .dataset import Dataset, make_dataset
from .pipeline import Augment
from .safe_pickle import safe_load

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_CIFAR_AUGMENT = Augment(padding=4, flip=0.5)


def _key(d: dict[Any, Any], key: str, source: str) -> Any:
    """``d[b"key"]`` (as in the real files) or ``d["key"]`` (a re-pickled copy with str keys)."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in d)
    raise ValueError(f"{source}: missing key {key!r} (found keys: {keys})")


def _locate(
    data_dir: Path, folder_name: str, archive_name: str, members: tuple[str, ...]
) -> tuple[str, Callable[[str], bytes]]:
    """Find the batch files; return a description of where and a reader of one member's bytes."""
    for folder in (data_dir, data_dir / folder_name):
        if all((folder / m).is_file() for m in members):
            return str(folder), lambda m, folder=folder: (folder / m).read_bytes()
    archive = data_dir if data_dir.is_file() else data_dir / archive_name
    if archive.is_file():
        contents: dict[str, bytes] = {}

        def read_member(m: str) -> bytes:
            # One pass over the (compressed, sequential) archive reads every member at once.
            if not contents:
                try:
                    with tarfile.open(archive, "r:*") as tar:
                        for info in tar:
                            handle = tar.extractfile(info) if info.isfile() else None
                            if handle is not None and info.name.startswith(folder_name + "/"):
                                contents[info.name[len(folder_name) + 1:]] = handle.read()
                except (tarfile.TarError, EOFError, OSError) as exc:
                    raise ValueError(f"{archive}: corrupt or truncated archive ({exc})") from exc
            if m not in contents:
                raise FileNotFoundError(f"{archive}: has no member {folder_name}/{m}")
            return contents[m]

        return str(archive), read_member
    raise FileNotFoundError(
        f"expected the CIFAR batch files {', '.join(members)} in {data_dir} or {data_dir / folder_name}, "
        f"or the archive {data_dir / archive_name}; "
        f"{'none of these exist' if not data_dir.exists() else 'not found there'}. "
        f"Download {archive_name} (the python version) from https://www.cs.toronto.edu/~kriz/cifar.html "
        "and pass data_dir=<the folder it is in, or where it was extracted>."
    )


def _read_batch(read: Callable[[str], bytes], member: str, where: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (``N x 3 x 32 x 32`` uint8 images, int64 labels), validated."""
    source = f"{where}/{member}"
    batch = safe_load(read(member), name=source)
    if not isinstance(batch, dict):
        raise ValueError(f"{source}: expected a dict, got {type(batch).__name__}")
    data = _key(batch, "data", source)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{source}: 'data' must be a uint8 array of shape N x 3072, got {desc}")
    raw_labels = _key(batch, label_key, source)
    if not isinstance(raw_labels, (list, np.ndarray)) or not all(isinstance(v, (int, np.integer)) for v in raw_labels):
        raise ValueError(f"{source}: {label_key!r} must be a list of ints")
    labels = np.asarray(raw_labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise ValueError(f"{source}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _read_names(read: Callable[[str], bytes], member: str, where: str, key: str) -> tuple[str, ...] | None:
    """Class names from the meta file, if it is there (it is optional for training)."""
    try:
        meta = safe_load(read(member), name=f"{where}/{member}")
    except FileNotFoundError:
        return None
    names = meta.get(key.encode(), meta.get(key)) if isinstance(meta, dict) else None
    if not isinstance(names, list):
        return None
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _build(
    name: str,
    parts_train: list[tuple[np.ndarray, np.ndarray]],
    part_test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    where: str,
    class_names: tuple[str, ...] | None,
) -> Dataset:
    train_x = torch.from_numpy(np.ascontiguousarray(np.concatenate([p[0] for p in parts_train])))
    train_y = torch.from_numpy(np.concatenate([p[1] for p in parts_train]))
    test_x = torch.from_numpy(np.ascontiguousarray(part_test[0]))
    test_y = torch.from_numpy(part_test[1])
    if class_names is not None and len(class_names) != num_classes:
        class_names = None  # a meta file from elsewhere; the names are a convenience, not data
    return make_dataset(
        name, train_x, train_y, test_x, test_y, num_classes=num_classes, max_value=255.0,
        source=f"CIFAR python batches in {where}", augment=_CIFAR_AUGMENT, class_names=class_names,
    )


def load_cifar10(data_dir: str | Path | None = None) -> Dataset:
    """CIFAR-10 (Krizhevsky, 2009): 50,000 + 10,000 colour 32x32 images, 10 classes."""
    if data_dir is None:
        raise FileNotFoundError(
            "cifar10: pass data_dir=<folder with cifar-10-batches-py/ (data_batch_1..5, test_batch) or "
            "cifar-10-python.tar.gz>; download it from https://www.cs.toronto.edu/~kriz/cifar.html"
        )
    members = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
    where, read = _locate(Path(data_dir).expanduser(), "cifar-10-batches-py", "cifar-10-python.tar.gz", members)
    train = [_read_batch(read, m, where, "labels") for m in members[:5]]
    test = _read_batch(read, "test_batch", where, "labels")
    names = _read_names(read, "batches.meta", where, "label_names") or CIFAR10_CLASSES
    return _build("cifar10", train, test, 10, where, names)


def load_cifar100(data_dir: str | Path | None = None, *, labels: Literal["fine", "coarse"] = "fine") -> Dataset:
    """CIFAR-100 (Krizhevsky, 2009): 50,000 + 10,000 colour 32x32 images.

    ``labels="fine"`` gives the 100 classes, ``"coarse"`` the 20 superclasses.
    """
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels: expected 'fine' or 'coarse', got {labels!r}")
    if data_dir is None:
        raise FileNotFoundError(
            "cifar100: pass data_dir=<folder with cifar-100-python/ (train, test) or cifar-100-python.tar.gz>; "
            "download it from https://www.cs.toronto.edu/~kriz/cifar.html"
        )
    where, read = _locate(Path(data_dir).expanduser(), "cifar-100-python", "cifar-100-python.tar.gz", ("train", "test"))
    key = f"{labels}_labels"
    train = _read_batch(read, "train", where, key)
    test = _read_batch(read, "test", where, key)
    names = _read_names(read, "meta", where, f"{labels}_label_names")
    return _build("cifar100", [train], test, 100 if labels == "fine" else 20, where, names)

"""CIFAR-10 and CIFAR-100 from the standard "python version" batch files.

Those files (https://www.cs.toronto.edu/~kriz/cifar.html) are Python 2 pickles of dicts
with ``bytes`` keys: ``b"data"`` is a ``uint8`` array ``N x 3072`` (1024 red, then green,
then blue values, each a row-major 32x32 plane), labels are a list of ints under
``b"labels"`` (CIFAR-10) or ``b"fine_labels"``/``b"coarse_labels"`` (CIFAR-100). They are
read with `contdepth.data.safe_pickle`, never with plain ``pickle.load``.

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

# The largest member of the real archives is CIFAR-100's ``train`` (50,000 images, 155 MB). A
# member's size is what its tar header says, so a larger one is refused before it is read.
_MAX_MEMBER = 1 << 30
_META_FILES = ("batches.meta", "meta")


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
        wanted = {f"{folder_name}/{m}" for m in members + _META_FILES}

        def read_member(m: str) -> bytes:
            # One pass over the (compressed, sequential) archive reads the wanted members at once;
            # any other member is skipped unread, whatever its size.
            if not contents:
                try:
                    with tarfile.open(archive, "r:*") as tar:
                        for info in tar:
                            if not info.isfile() or info.name not in wanted:
                                continue
                            if info.size > _MAX_MEMBER:
                                raise ValueError(f"{archive}: member {info.name} is {info.size} bytes; a CIFAR "
                                                 f"batch file is at most 155 MB (refusing over {_MAX_MEMBER})")
                            handle = tar.extractfile(info)
                            if handle is not None:
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


def _read_batch(
    read: Callable[[str], bytes], member: str, where: str, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (``N x 3 x 32 x 32`` uint8 images, int64 labels), validated."""
    source = f"{where}/{member}"
    blob = read(member)
    batch = safe_load(blob, name=source)
    if not isinstance(batch, dict):
        raise ValueError(f"{source}: expected a dict, got {type(batch).__name__}")
    data = _key(batch, "data", source)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{source}: 'data' must be a uint8 array of shape N x 3072, got {desc}")
    if data.nbytes > len(blob):  # safe_load builds arrays from the file's bytes; never trust less
        raise ValueError(f"{source}: 'data' claims {data.nbytes} bytes of pixels, more than the file's {len(blob)}")
    if len(data) == 0:
        raise ValueError(f"{source}: holds no images (a CIFAR batch has N x 3072 pixel values, N >= 1)")
    labels = _labels(_key(batch, label_key, source), source, label_key, num_classes)
    if len(labels) != len(data):
        raise ValueError(f"{source}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _labels(raw: Any, source: str, label_key: str, num_classes: int) -> np.ndarray:
    """Class ids as int64, each checked to be an int in ``[0, num_classes)`` *before* conversion.

    Checked on the Python values: ``numpy.asarray`` of a label like ``2**70`` raises
    ``OverflowError`` instead of saying which file and position is wrong.
    """
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise ValueError(f"{source}: {label_key!r} must be a list of ints, got a {raw.dtype} array "
                             f"of shape {raw.shape}")
        values = raw.tolist()
    elif isinstance(raw, list):
        values = raw
    else:
        raise ValueError(f"{source}: {label_key!r} must be a list of ints, got {type(raw).__name__}")
    for position, value in enumerate(values):
        if type(value) is not int:  # bool is an int subclass, but never a class id
            raise ValueError(f"{source}: {label_key!r} must be a list of ints, got {type(value).__name__} "
                             f"at position {position}")
        if not 0 <= value < num_classes:
            raise ValueError(f"{source}: label {value} at position {position} out of range; "
                             f"labels must lie in [0, {num_classes})")
    return np.asarray(values, dtype=np.int64).reshape(-1)


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
    train = [_read_batch(read, m, where, "labels", 10) for m in members[:5]]
    test = _read_batch(read, "test_batch", where, "labels", 10)
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
    key, num_classes = f"{labels}_labels", 100 if labels == "fine" else 20
    train = _read_batch(read, "train", where, key, num_classes)
    test = _read_batch(read, "test", where, key, num_classes)
    names = _read_names(read, "meta", where, f"{labels}_label_names")
    return _build("cifar100", [train], test, num_classes, where, names)

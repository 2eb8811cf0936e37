"""IDX files (the MNIST / Fashion-MNIST format) and the two datasets stored in it.

The format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the values in
row-major order, big-endian. Images are ``0x00000803`` (uint8, 3 dims), labels
``0x00000801`` (uint8, 1 dim). The reader is written here, with numpy, because it is
short and because every size is checked against the file length, so a truncated download
fails with the file's name instead of producing a silently shorter dataset.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset, make_dataset
from .pipeline import Augment

# type byte -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:  # truncated or corrupt gzip stream
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return raw


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one IDX file into a native-endian numpy array.

    Raises ``ValueError`` naming ``name`` when the magic number is wrong or the payload
    is shorter or longer than the header's sizes say.
    """
    if len(data) < 4:
        raise ValueError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: not an IDX file (magic number {data[:4].hex()} does not start with 0000)")
    type_code, ndim = data[2], data[3]
    dtype = IDX_DTYPES.get(type_code)
    if dtype is None:
        known = ", ".join(f"0x{k:02x}" for k in IDX_DTYPES)
        raise ValueError(f"{name}: unknown IDX value type 0x{type_code:02x}; known: {known}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, need {header} for {ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing data"
        raise ValueError(
            f"{name}: {kind}: header says shape {shape} of {dtype.name} ({expected} bytes in all), "
            f"file has {len(data)} bytes"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)  # native order and writable (torch needs both)


def read_idx(path: str | Path, *, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (raw or gzip); ``magic`` (e.g. ``0x00000803``) is checked when given."""
    path = Path(path)
    data = _read_bytes(path)
    if magic is not None and (len(data) < 4 or int.from_bytes(data[:4], "big") != magic):
        found = data[:4].hex() if len(data) >= 4 else f"{len(data)} bytes"
        raise ValueError(f"{path}: expected IDX magic number 0x{magic:08x}, found {found}")
    return parse_idx(data, name=str(path))


def _find_idx_dir(data_dir: Path, torchvision_name: str) -> Path | None:
    """The folder holding the four files: ``data_dir`` itself, ``data_dir/raw`` or the torchvision layout."""
    for candidate in (data_dir, data_dir / "raw", data_dir / torchvision_name / "raw"):
        if all(_resolve(candidate, stem) is not None for stem in IDX_FILES.values()):
            return candidate
    return None


def _resolve(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx_dataset(
    name: str,
    data_dir: str | Path | None,
    *,
    default_dir: Path | None,
    torchvision_name: str,
    how_to_get: str,
    class_names: tuple[str, ...],
) -> Dataset:
    """Read the standard four IDX files of an MNIST-like dataset from a folder."""
    expected = ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())
    if data_dir is None:
        if default_dir is None:
            raise FileNotFoundError(
                f"{name}: no data_dir given and there is no default location. Pass data_dir=<folder> holding "
                f"the four IDX files ({expected}). {how_to_get}"
            )
        data_dir = default_dir
    root = Path(data_dir).expanduser()
    folder = _find_idx_dir(root, torchvision_name)
    if folder is None:
        where = "does not exist" if not root.exists() else "does not hold all of them"
        missing = [stem for stem in IDX_FILES.values() if _resolve(root, stem) is None] if root.is_dir() else []
        detail = f" (missing: {', '.join(missing)})" if missing else ""
        raise FileNotFoundError(
            f"{name}: expected the four IDX files {expected} in {root} (or {root}/raw, {root}/{torchvision_name}/raw), "
            f"but {root} {where}{detail}. {how_to_get}"
        )
    paths = {key: _resolve(folder, stem) for key, stem in IDX_FILES.items()}
    arrays = {
        key: read_idx(path, magic=0x00000803 if key.endswith("images") else 0x00000801)
        for key, path in paths.items()
        if path is not None
    }
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise ValueError(
                f"{name}: {paths[f'{split}_images']} has {len(images)} images but "
                f"{paths[f'{split}_labels']} has {len(labels)} labels"
            )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise ValueError(
            f"{name}: train images are {arrays['train_images'].shape[1:]} "
            f"but test images are {arrays['test_images'].shape[1:]}"
        )
    for key in ("train_labels", "test_labels"):
        if len(arrays[key]) and int(arrays[key].max()) >= len(class_names):
            raise ValueError(
                f"{paths[key]}: label {int(arrays[key].max())} out of range for {len(class_names)} classes"
            )
    train_x = torch.from_numpy(arrays["train_images"]).unsqueeze(1)
    test_x = torch.from_numpy(arrays["test_images"]).unsqueeze(1)
    train_y = torch.from_numpy(arrays["train_labels"]).to(torch.int64)
    test_y = torch.from_numpy(arrays["test_labels"]).to(torch.int64)
    flips = name == "fashion_mnist"  # clothes are left-right symmetric as a class; digits are not
    return make_dataset(
        name, train_x, train_y, test_x, test_y,
        num_classes=len(class_names), max_value=255.0, source=f"IDX files in {folder}",
        augment=Augment(padding=2, flip=0.5 if flips else 0.0), class_names=class_names,
    )


def load_fashion_mnist(data_dir: str | Path | None = None) -> Dataset:
    """Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 grey 28x28 images, 10 classes.

    Without ``data_dir`` it reads ``/usr/share/datasets/fashion-mnist`` (the Debian package
    ``dataset-fashion-mnist``).
    """
    return load_idx_dataset(
        "fashion_mnist", data_dir, default_dir=FASHION_MNIST_DEFAULT_DIR, torchvision_name="FashionMNIST",
        how_to_get=(
            "On Debian/Ubuntu `apt-get install dataset-fashion-mnist` installs them in "
            f"{FASHION_MNIST_DEFAULT_DIR}; otherwise download them from https://github.com/zalandoresearch/fashion-mnist."
        ),
        class_names=FASHION_MNIST_CLASSES,
    )


def load_mnist(data_dir: str | Path | None = None) -> Dataset:
    """MNIST (LeCun et al., 1998): 60,000 + 10,000 grey 28x28 handwritten digits. Needs ``data_dir``."""
    return load_idx_dataset(
        "mnist", data_dir, default_dir=None, torchvision_name="MNIST",
        how_to_get=(
            "Get the standard MNIST files (same names, e.g. from http://yann.lecun.com/exdb/mnist/ or a mirror)."
        ),
        class_names=tuple(str(d) for d in range(10)),
    )

"""IDX files (the MNIST / Fashion-MNIST format) and the two datasets stored in it.

The format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the values in
row-major order, big-endian. Images are ``0x00000803`` (uint8, 3 dims), labels
``0x00000801`` (uint8, 1 dim). The reader is written here, with numpy, because it is
short and because every size is checked against the file length, so a truncated download
fails with the file's name instead of producing a silently shorter dataset.

Sizes are computed with Python integers (a header of ``2**31 x 2**31 x 4`` wraps an int64 to
0) and compared with the bytes present *before* anything of that size is allocated: a raw
file's length is known from the file system, and a gzip stream is decompressed in chunks up
to one byte past the declared size, never further, so a small bomb cannot expand in memory.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

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


# gzip streams are decompressed this much at a time, so memory follows the data actually there.
_GZIP_CHUNK = 1 << 20


def _read_up_to(stream: BinaryIO, size: int) -> bytearray:
    """At most ``size`` bytes of ``stream``, read in chunks: never a buffer of an unchecked size."""
    buf = bytearray()
    while len(buf) < size:
        chunk = stream.read(min(_GZIP_CHUNK, size - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _read_exactly(stream: BinaryIO, size: int) -> bytearray:
    """``size`` bytes (fewer at end of file) into one buffer; only for a size checked against the file."""
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    view.release()
    return buf if got == size else buf[:got]


def _read_idx_stream(stream: BinaryIO, name: str, size: int | None, magic: int | None) -> np.ndarray:
    """The array in ``stream``; ``size`` is its length in bytes when known (``None`` for gzip)."""
    head = _read_up_to(stream, 4)
    if magic is not None and (len(head) < 4 or int.from_bytes(head, "big") != magic):
        found = head.hex() if len(head) >= 4 else f"{len(head)} bytes"
        raise ValueError(f"{name}: expected IDX magic number 0x{magic:08x}, found {found}")
    if len(head) < 4:
        raise ValueError(f"{name}: too short for an IDX header ({len(head)} bytes)")
    if head[0] != 0 or head[1] != 0:
        raise ValueError(f"{name}: not an IDX file (magic number {head.hex()} does not start with 0000)")
    type_code, ndim = head[2], head[3]
    dtype = IDX_DTYPES.get(type_code)
    if dtype is None:
        known = ", ".join(f"0x{k:02x}" for k in IDX_DTYPES)
        raise ValueError(f"{name}: unknown IDX value type 0x{type_code:02x}; known: {known}")
    header = 4 + 4 * ndim
    dims = _read_up_to(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        have = 4 + len(dims) if size is None else size
        raise ValueError(f"{name}: truncated IDX header ({have} bytes, need {header} for {ndim} dimensions)")
    shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    count = math.prod(shape)  # Python ints: no wrap-around
    expected = header + count * dtype.itemsize
    if size is None:  # gzip: decompress one byte past the declared size, to see trailing data
        payload = _read_up_to(stream, expected - header + 1)
        have = header + len(payload)
        found = f"{have} bytes once decompressed" if have <= expected else f"more than {expected} once decompressed"
    else:  # the length is known: compare first, then read into one buffer of that (checked) size
        payload = _read_exactly(stream, expected - header) if size == expected else bytearray()
        have = header + len(payload) if size == expected else size  # (less if the file shrank meanwhile)
        found = f"{have} bytes"
    if have != expected:
        kind = "truncated" if have < expected else "has trailing data"
        raise ValueError(
            f"{name}: {kind}: header says shape {shape} of {dtype.name} ({expected} bytes in all), file has {found}"
        )
    values = np.frombuffer(payload, dtype=dtype, count=count).reshape(shape)
    if dtype.itemsize == 1:  # already native and writable: no copy of the largest files
        return values.view(dtype.newbyteorder("="))
    return values.astype(dtype.newbyteorder("="), copy=True)  # native order (torch needs it)


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one IDX file into a native-endian, writable numpy array.

    Raises ``ValueError`` naming ``name`` when the magic number is wrong or the payload
    is shorter or longer than the header's sizes say.
    """
    return _read_idx_stream(io.BytesIO(data), name, len(data), None)


def read_idx(path: str | Path, *, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (raw, or gzip whatever its name); ``magic`` (e.g. ``0x00000803``) is checked when given."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            f.seek(0)
            return _read_idx_stream(f, str(path), os.fstat(f.fileno()).st_size, magic)
        f.seek(0)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                return _read_idx_stream(stream, str(path), None, magic)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # truncated or corrupt gzip stream
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


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
        if images.size == 0:  # found now, not after an epoch of training on the other split
            raise ValueError(f"{paths[f'{split}_images']}: holds no images (shape {images.shape}); "
                             f"the {split} split must not be empty")
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

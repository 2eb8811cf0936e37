"""IDX reader (MNIST / Fashion-MNIST): exact round trips, corruption, missing files, the real files."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from contdepth import data
from contdepth.data.idx import FASHION_MNIST_DEFAULT_DIR, IDX_FILES

STEMS = list(IDX_FILES.values())


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Serialise ``array`` exactly as the IDX format specifies (big-endian header and values)."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write(path: Path, payload: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_mnist_dir(folder: Path, *, gz: bool, n_train: int = 6, n_test: int = 4, size: tuple[int, int] = (5, 4)):
    """Four tiny IDX files; returns the arrays written."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays["train_labels"][:2] = (0, 9)  # two distinct classes, so statistics are well defined
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_FILES.items():
        write(folder / stem, idx_bytes(arrays[key]), gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_round_trip_exact(tmp_path, gz):
    images = np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    ip = write(tmp_path / "train-images-idx3-ubyte", idx_bytes(images), gz)
    lp = write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels), gz)
    got_images = data.read_idx(ip, magic=0x00000803)
    got_labels = data.read_idx(lp, magic=0x00000801)
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 5, 4)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize(
    ("type_code", "values"),
    [
        (0x09, np.array([[-128, 0], [5, 127]], dtype=np.int8)),
        (0x0B, np.array([[-30000, 1], [2, 30000]], dtype=np.int16)),
        (0x0C, np.array([-(2**31), 2**31 - 1], dtype=np.int32)),
        (0x0D, np.array([1.5, -2.25, 1e30], dtype=np.float32)),
        (0x0E, np.array([[np.pi], [-1e300]], dtype=np.float64)),
    ],
)
def test_idx_other_value_types_are_big_endian(type_code, values):
    got = data.parse_idx(idx_bytes(values, type_code), name="x.idx")
    assert got.dtype == values.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_load_mnist_reads_all_four_files_exactly(tmp_path, gz):
    arrays = make_mnist_dir(tmp_path, gz=gz)
    ds = data.load("mnist", data_dir=tmp_path)
    assert ds.name == "mnist" and ds.num_classes == 10 and ds.channels == 1 and ds.image_size == (5, 4)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(arrays["train_images"]))
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(arrays["test_images"]))
    assert ds.train_y.tolist() == arrays["train_labels"].tolist()
    assert ds.test_y.tolist() == arrays["test_labels"].tolist()
    assert ds.mean[0] == pytest.approx(arrays["train_images"].mean() / 255)
    assert ds.std[0] == pytest.approx(arrays["train_images"].std() / 255)
    assert str(tmp_path) in ds.source


def test_mixed_raw_and_gzip_and_torchvision_layout(tmp_path):
    make_mnist_dir(tmp_path / "MNIST" / "raw", gz=False)
    # gzip one file in place: either form is accepted per file
    p = tmp_path / "MNIST" / "raw" / STEMS[1]
    write(p, p.read_bytes(), gz=True)
    p.unlink()
    ds = data.load_mnist(tmp_path)
    assert ds.num_train == 6 and ds.num_test == 4


def test_gzip_detected_by_content_not_name(tmp_path):
    images = np.ones((2, 3, 3), dtype=np.uint8)
    p = tmp_path / "images"
    p.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(data.read_idx(p), images)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_truncated_idx_names_the_file(tmp_path, gz):
    payload = idx_bytes(np.zeros((4, 5, 5), dtype=np.uint8))[:-7]
    p = write(tmp_path / "train-images-idx3-ubyte", payload, gz)
    with pytest.raises(ValueError, match="truncated") as info:
        data.read_idx(p)
    assert str(p) in str(info.value)


def test_trailing_data_and_short_header_are_errors(tmp_path):
    p = tmp_path / "a"
    p.write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="trailing data") as info:
        data.read_idx(p)
    assert str(p) in str(info.value)
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match="truncated IDX header"):
        data.read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        data.read_idx(p)


def test_wrong_magic_names_the_file(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))  # a labels file where images belong
    with pytest.raises(ValueError, match="0x00000803") as info:
        data.read_idx(p, magic=0x00000803)
    assert str(p) in str(info.value)
    p.write_bytes(b"\x12\x34\x08\x01" + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(p)
    p.write_bytes(b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(ValueError, match="unknown IDX value type 0x07"):
        data.read_idx(p)


def test_corrupt_gzip_names_the_file(tmp_path):
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros(1000, dtype=np.uint8)))[:20])
    with pytest.raises(ValueError, match="gzip") as info:
        data.read_idx(p)
    assert str(p) in str(info.value)


def test_corrupt_file_inside_dataset_names_it(tmp_path):
    make_mnist_dir(tmp_path, gz=False)
    bad = tmp_path / STEMS[2]
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(ValueError) as info:
        data.load("mnist", data_dir=tmp_path)
    assert str(bad) in str(info.value)


def test_label_count_mismatch(tmp_path):
    make_mnist_dir(tmp_path, gz=False)
    (tmp_path / STEMS[1]).write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))  # 6 images, 5 labels
    with pytest.raises(ValueError, match="6 images but .* 5 labels"):
        data.load_mnist(tmp_path)


def test_label_out_of_range(tmp_path):
    make_mnist_dir(tmp_path, gz=False)
    (tmp_path / STEMS[3]).write_bytes(idx_bytes(np.array([0, 1, 2, 10], dtype=np.uint8)))
    with pytest.raises(ValueError, match="label 10 out of range"):
        data.load_mnist(tmp_path)


def test_mnist_without_data_dir_says_what_to_pass():
    with pytest.raises(FileNotFoundError) as info:
        data.load("mnist")
    message = str(info.value)
    assert "data_dir" in message
    for stem in STEMS:
        assert stem in message


def test_missing_directory_message(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        data.load("fashion_mnist", data_dir=missing)
    message = str(info.value)
    assert str(missing) in message and "does not exist" in message
    assert "dataset-fashion-mnist" in message and "apt-get" in message
    for stem in STEMS:
        assert stem in message


def test_partial_directory_lists_missing_files(tmp_path):
    make_mnist_dir(tmp_path, gz=True)
    (tmp_path / (STEMS[3] + ".gz")).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing: {STEMS[3]}"):
        data.load_mnist(tmp_path)


def test_fashion_mnist_default_augment_flips_mnist_does_not(tmp_path):
    make_mnist_dir(tmp_path, gz=False)
    assert data.load_fashion_mnist(tmp_path).augment.flip > 0
    assert data.load_mnist(tmp_path).augment.flip == 0


@pytest.mark.skipif(
    not all((FASHION_MNIST_DEFAULT_DIR / name).exists() or (FASHION_MNIST_DEFAULT_DIR / (name + ".gz")).exists()
            for name in STEMS),
    reason=f"Fashion-MNIST not installed in {FASHION_MNIST_DEFAULT_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_default_dir():
    start = time.perf_counter()
    ds = data.load("fashion_mnist")
    elapsed = time.perf_counter() - start
    assert (ds.num_train, ds.num_test) == (60000, 10000)
    assert ds.image_size == (28, 28) and ds.channels == 1 and ds.num_classes == 10
    assert ds.train_y.bincount().tolist() == [6000] * 10
    assert ds.test_y.bincount().tolist() == [1000] * 10
    # published train statistics of Fashion-MNIST
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-4)
    assert ds.std[0] == pytest.approx(0.3530, abs=1e-4)
    assert ds.class_names[0] == "T-shirt/top"
    assert elapsed < 30, f"loading took {elapsed:.1f}s"

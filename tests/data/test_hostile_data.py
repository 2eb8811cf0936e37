"""Hostile data files: every malformed or crafted input is one ValueError naming the file (and line),
refused before anything is allocated that the file does not actually hold, and one line from the CLI."""

from __future__ import annotations

import gzip
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from contdepth import data
from contdepth.cli import main
from contdepth.data import UnsafePickleError, read_cora
from contdepth.data import graph as graph_module
from contdepth.train.config import ConfigError, read_yaml
from helpers import TINY_CORA

_np_reconstruct = np.zeros(1).__reduce__()[0]  # numpy's own, under numpy 1.x or 2.x

TINY_MODEL = ["--model", "continuousnet", "--alpha", "4", "--n-basis", "1", "--batch-size", "8", "--threads", "1",
              "--epochs", "1"]


def cli_error(capsys, argv: list[str]) -> str:
    """Run ``contdepth ARGV``, require exit 2 and exactly one stderr line; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


# --- helpers: pickles a hostile author could write ------------------------------------------------

class Reduce:
    """An object that pickles as ``func(*args)`` (and ``BUILD state`` when given)."""

    def __init__(self, func, args: tuple, state=None) -> None:
        self.value = (func, args) if state is None else (func, args, state)

    def __reduce__(self):
        return self.value


def batch(n: int, labels=None) -> dict:
    rng = np.random.default_rng(n)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, n).tolist()) if labels is None else labels}


def write_cifar10(folder: Path, **replace: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for member in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        content = replace.get(member, batch(3))
        blob = content if isinstance(content, bytes) else pickle.dumps(content, protocol=2)
        (folder / member).write_bytes(blob)
    return folder


# --- case 1: a refused pickle is a ValueError naming the file, one line from the CLI --------------

def test_unsafe_pickle_error_is_a_value_error():
    with pytest.raises(ValueError, match="refused to load global os.system"):
        data.safe_load(b"cos\nsystem\n(S'true'\ntR.", name="x.pkl")
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)


def test_cli_refused_pickle_is_one_line_naming_the_file(tmp_path, capsys):
    folder = write_cifar10(tmp_path / "cifar", data_batch_2=pickle.dumps(Reduce(eval, ("1",))))
    out = tmp_path / "run"
    line = cli_error(capsys, ["train", "--data", "cifar10", "--data-dir", str(folder), "--out", str(out),
                              *TINY_MODEL])
    assert line.startswith("contdepth train: error: ")
    assert f"{folder}/data_batch_2: refused to load global builtins.eval" in line
    assert not out.exists()


# --- case 2: CIFAR labels are ints in [0, num_classes), checked before any conversion -------------

@pytest.mark.parametrize("labels, message", [
    ([0, 2**70, 1], r"label 1180591620717411303424 at position 1 out of range; labels must lie in \[0, 10\)"),
    ([0, -1, 1], r"label -1 at position 1 out of range; labels must lie in \[0, 10\)"),
    ([0, 10, 1], r"label 10 at position 1 out of range; labels must lie in \[0, 10\)"),
    ([0, True, 1], r"'labels' must be a list of ints, got bool at position 1"),
    ([0, 1.0, 1], r"'labels' must be a list of ints, got float at position 1"),
])
def test_cifar_labels_are_validated(tmp_path, labels, message):
    write_cifar10(tmp_path, test_batch=batch(3, labels))
    with pytest.raises(ValueError, match=message) as info:
        data.load_cifar10(tmp_path)
    assert str(tmp_path / "test_batch") in str(info.value)


def test_cifar100_coarse_labels_use_20_classes(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        content = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                   b"fine_labels": [99, 0], b"coarse_labels": [19, 20]}
        (tmp_path / split).write_bytes(pickle.dumps(content))
    with pytest.raises(ValueError, match=r"train: label 20 at position 1 out of range; labels must lie in \[0, 20\)"):
        data.load_cifar100(tmp_path, labels="coarse")
    assert data.load_cifar100(tmp_path).train_y.tolist() == [99, 0]


# --- case 6: arrays are backed by the bytes in the file; no uninitialised or object arrays ---------

def test_ndarray_constructor_cannot_allocate_from_a_tiny_pickle():
    blob = pickle.dumps({b"data": Reduce(np.ndarray, ((100_000, 3072), np.dtype("u1"))), b"labels": []})
    assert len(blob) < 300
    with pytest.raises(UnsafePickleError, match=r"x\.pkl: .*numpy\.ndarray"):
        data.safe_load(blob, name="x.pkl")


def test_reconstruct_must_start_from_an_empty_array():
    blob = pickle.dumps(Reduce(_np_reconstruct, (np.ndarray, (100_000, 3072), b"B")))
    with pytest.raises(UnsafePickleError, match="_reconstruct"):
        data.safe_load(blob, name="x.pkl")


def test_reconstructed_array_without_state_is_refused():
    blob = pickle.dumps([Reduce(_np_reconstruct, (np.ndarray, (0,), b"b"))])
    with pytest.raises(ValueError, match=r"x\.pkl: .*array without its data"):
        data.safe_load(blob, name="x.pkl")


@pytest.mark.parametrize("state, message", [
    ((1, (1_000_000,), np.dtype("u1"), False, b"abc"),
     r"3 bytes of data, but shape \(1000000,\) of uint8 needs 1000000"),
    ((1, (2**31, 2**31, 4), np.dtype("u1"), False, b""), "needs 18446744073709551616"),
    ((1, (-1,), np.dtype("u1"), False, b""), "shape"),
    ((1, (100_000_000,), np.dtype("O"), False, [1, 2]), "dtype"),  # numpy itself would crash on this state
])
def test_array_state_must_match_the_bytes_present(state, message):
    blob = pickle.dumps(Reduce(_np_reconstruct, (np.ndarray, (0,), b"b"), state))
    with pytest.raises(ValueError, match=message):
        data.safe_load(blob, name="x.pkl")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("array", [
    np.arange(12, dtype=">i4").reshape(3, 4), np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
    np.array([True, False]), np.zeros((0, 3), np.uint8),
])
def test_ordinary_arrays_still_round_trip_writable(protocol, array):
    got = data.safe_load(pickle.dumps({"a": [array, (array,)]}, protocol=protocol))
    for value in (got["a"][0], got["a"][1][0]):
        assert type(value) is np.ndarray and value.dtype == array.dtype and value.flags.writeable
        np.testing.assert_array_equal(value, array)


def test_cifar_batch_without_images_is_refused(tmp_path):
    write_cifar10(tmp_path, data_batch_4={b"data": np.zeros((0, 3072), np.uint8), b"labels": []})
    with pytest.raises(ValueError, match="data_batch_4: holds no images"):
        data.load_cifar10(tmp_path)


# --- case 3 and 4: Cora sizes bounded by the file; undecodable bytes named by file and line ------

CORA = TINY_CORA  # the small Cora folder of test_graph_data


def write_cora(folder: Path, **changes: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**CORA, **{k.replace("_", "."): v for k, v in changes.items()}}.items():
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


@pytest.mark.parametrize("file, text, message", [
    ("feature.txt", "0\t0:1.0\n1\t1000000000000:1.0\n",
     r"feature\.txt:2: feature index 1000000000000 out of range: the file holds 2 feature entries"),
    ("label.txt", "0\t0\n1\t1000000000000\n2\t1\n3\t0\n",
     r"label\.txt:2: class 1000000000000 out of range: the file labels 4 nodes"),
])
def test_cora_sizes_are_bounded_by_the_file(tmp_path, file, text, message):
    write_cora(tmp_path, **{file: text})
    with pytest.raises(ValueError, match=message):
        read_cora(tmp_path)


def test_cora_dense_features_are_refused_beyond_memory(tmp_path, monkeypatch):
    write_cora(tmp_path)
    monkeypatch.setattr(graph_module, "_memory_bytes", lambda: 100)  # 5 x 4 x 4 bytes, twice
    with pytest.raises(ValueError, match=r"feature\.txt: a dense 5 x 4 float32 feature matrix needs"):
        read_cora(tmp_path)
    monkeypatch.setattr(graph_module, "_memory_bytes", lambda: None)  # unknown: no limit
    assert read_cora(tmp_path).num_features == 4


@pytest.mark.parametrize("file", ["feature.txt", "label.txt", "net.txt", "dev.txt"])
def test_cora_non_utf8_names_file_and_line(tmp_path, file):
    good = CORA[file].encode()
    first, rest = good.split(b"\n", 1)
    write_cora(tmp_path, **{file: first + b"\n" + b"\xff\xfe" + rest})
    with pytest.raises(ValueError, match=rf"{file.replace('.', '[.]')}:2: not UTF-8 text"):
        read_cora(tmp_path)


def test_yaml_config_non_utf8_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"epochs: 2\nlr: 0.1 # \xe9t\xe9\n")
    with pytest.raises(ConfigError, match=rf"{path}: line 2: not UTF-8 text"):
        read_yaml(path)
    line = cli_error(capsys, ["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert line.startswith("contdepth train: error: ") and "line 2: not UTF-8 text" in line


# --- case 5 and 7: IDX sizes in Python ints, compared with the bytes present before reading -------

def idx_header(shape: tuple[int, ...], type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_sizes_cannot_overflow(tmp_path, gz):
    payload = idx_header((2**31, 2**31, 4))  # 2**64 bytes: int64 wraps to 0, which matched an empty payload
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(gzip.compress(payload) if gz else payload)
    with pytest.raises(ValueError, match=r"truncated: header says shape \(2147483648, 2147483648, 4\)") as info:
        data.read_idx(p)
    assert str(p) in str(info.value)
    with pytest.raises(ValueError, match="truncated"):
        data.parse_idx(payload, name="x")


def test_gzip_bomb_is_not_decompressed_beyond_the_declared_size(tmp_path):
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(idx_header((1000,), 0x08) + bytes(64 * 2**20), compresslevel=1))
    assert p.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="has trailing data") as info:
            data.read_idx(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(p) in str(info.value)
    assert peak < 4 * 2**20


def test_gzip_huge_declared_size_reads_only_what_is_there(tmp_path):
    p = tmp_path / "images.gz"
    p.write_bytes(gzip.compress(idx_header((60_000, 10_000, 10_000)) + bytes(1000)))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="truncated"):
            data.read_idx(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_round_trip_still_exact(tmp_path, gz):
    values = np.arange(-6, 6, dtype=">i2").reshape(2, 3, 2)
    blob = idx_header(values.shape, 0x0B) + values.tobytes()
    p = tmp_path / "a"
    p.write_bytes(gzip.compress(blob) if gz else blob)
    got = data.read_idx(p)
    assert got.dtype == np.int16 and got.flags.writeable
    np.testing.assert_array_equal(got, values)


# --- case 8: an empty split is refused when loading, before any training -------------------------

def write_mnist(folder: Path, n_test: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 5, 4), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_header(images.shape) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_header(labels.shape) + labels.tobytes())
    return folder


def test_empty_idx_test_split_is_refused(tmp_path, capsys):
    folder = write_mnist(tmp_path / "mnist", n_test=0)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: holds no images"):
        data.load_mnist(folder)
    out = tmp_path / "run"
    line = cli_error(capsys, ["train", "--data", "mnist", "--data-dir", str(folder), "--out", str(out), *TINY_MODEL])
    assert "t10k-images-idx3-ubyte: holds no images" in line
    assert not out.exists()


def test_empty_cifar_test_batch_is_refused(tmp_path):
    write_cifar10(tmp_path, test_batch={b"data": np.zeros((0, 3072), np.uint8), b"labels": []})
    with pytest.raises(ValueError, match="test_batch: holds no images"):
        data.load_cifar10(tmp_path)


@pytest.mark.parametrize("split", ["train", "test"])
def test_dataset_refuses_an_empty_split(split):
    x = torch.randint(0, 256, (4, 1, 2, 2), dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.int64)
    splits = {"train": (x, y), "test": (x, y)}
    splits[split] = (x[:0], y[:0])
    with pytest.raises(ValueError, match=rf"toy: the {split} split is empty"):
        data.make_dataset("toy", *splits["train"], *splits["test"], num_classes=2, max_value=255.0, source="t")


# --- other sizes a header declares: tar members ------------------------------------------------

def test_cifar_archive_reads_only_the_batches_and_bounds_their_size(tmp_path, monkeypatch):
    import tarfile

    from contdepth.data import cifar as cifar_module

    src = write_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    (src / "extra.bin").write_bytes(bytes(100_000))  # not a batch: never read, whatever its size
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    monkeypatch.setattr(cifar_module, "_MAX_MEMBER", 50_000)
    assert data.load_cifar10(archive).num_train == 15
    monkeypatch.setattr(cifar_module, "_MAX_MEMBER", 5_000)  # a batch of 3 images is ~9.3 kB
    with pytest.raises(ValueError, match=r"cifar-10-python\.tar\.gz: member cifar-10-batches-py/data_batch_1 is"):
        data.load_cifar10(archive)

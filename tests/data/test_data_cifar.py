"""CIFAR python batches: exact round trips for every pickle flavour, and the restricted unpickler."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import pickletools
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from contdepth import data
from contdepth.data import UnsafePickleError


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the real CIFAR files (protocol 2).

    Python 2 ``str`` (keys, label names, the array's raw bytes) is ``SHORT_BINSTRING`` /
    ``BINSTRING``, which ``encoding="bytes"`` turns into ``bytes``; numpy 1.x's module path
    ``numpy.core.multiarray`` names ``_reconstruct``.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    def save_global(self, obj, name=None) -> None:
        module = {"numpy._core.multiarray": "numpy.core.multiarray"}.get(obj.__module__, obj.__module__)
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__name__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str
    dispatch[type] = save_global


FLAVOURS = ["py2", "protocol2", "default", "protocol5"]


def dumps(obj, flavour: str) -> bytes:
    if flavour == "py2":
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(obj)
        return buf.getvalue()
    protocol = {"protocol2": 2, "default": pickle.DEFAULT_PROTOCOL, "protocol5": 5}[flavour]
    return pickle.dumps(obj, protocol=protocol)


def test_py2_writer_matches_the_real_files_layout():
    blob = dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, "py2")
    assert blob.startswith(b"\x80\x02}q\x00(U\x04data")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in blob and b"cnumpy\ndtype\n" in blob
    ops = {op.name for op, _, _ in pickletools.genops(blob)}
    assert "BINSTRING" in ops and not ops & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"}


def cifar_batch(rng, n: int, label_keys: dict[str, int], batch_label: str) -> tuple[dict, np.ndarray, dict]:
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = {key: [int(v) for v in rng.integers(0, k, n)] for key, k in label_keys.items()}
    batch = {
        b"batch_label": batch_label.encode(),
        b"data": images.reshape(n, 3072),  # R plane, G plane, B plane: exactly the real layout
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    batch.update({key.encode(): value for key, value in labels.items()})
    return batch, images, labels


def write_cifar10(folder: Path, flavour: str, *, meta: bool = True) -> tuple[np.ndarray, list, np.ndarray, list]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        batch, images, labels = cifar_batch(rng, 3, {"labels": 10}, f"training batch {i} of 5")
        (folder / f"data_batch_{i}").write_bytes(dumps(batch, flavour))
        train_x.append(images)
        train_y += labels["labels"]
    batch, test_x, labels = cifar_batch(rng, 4, {"labels": 10}, "testing batch 1 of 1")
    (folder / "test_batch").write_bytes(dumps(batch, flavour))
    if meta:
        names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
        meta_dict = {b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}
        (folder / "batches.meta").write_bytes(dumps(meta_dict, flavour))
    return np.concatenate(train_x), train_y, test_x, labels["labels"]


def write_cifar100(folder: Path, flavour: str):
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", 7), ("test", 5)):
        batch, images, labels = cifar_batch(rng, n, {"fine_labels": 100, "coarse_labels": 20}, split)
        (folder / split).write_bytes(dumps(batch, flavour))
        out[split] = (images, labels)
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(dumps(meta, flavour))
    return out


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("point_at", ["batches", "parent"])
def test_cifar10_round_trip_exact(tmp_path, flavour, point_at):
    folder = tmp_path / "cifar-10-batches-py"
    train_x, train_y, test_x, test_y = write_cifar10(folder, flavour)
    ds = data.load("cifar10", data_dir=folder if point_at == "batches" else tmp_path)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (15, 3, 32, 32)
    assert torch.equal(ds.train_x, torch.from_numpy(train_x))
    assert torch.equal(ds.test_x, torch.from_numpy(test_x))
    assert ds.train_y.tolist() == train_y and ds.test_y.tolist() == test_y
    assert ds.num_classes == 10 and ds.channels == 3 and ds.image_size == (32, 32)
    assert ds.class_names[1] == "automobile"
    assert ds.augment == data.Augment(padding=4, flip=0.5)
    expected_mean = train_x.reshape(15, 3, -1).transpose(1, 0, 2).reshape(3, -1).mean(axis=1) / 255
    np.testing.assert_allclose(ds.mean, expected_mean, rtol=1e-12)


def test_cifar10_from_tar_archive(tmp_path):
    src = tmp_path / "src"
    train_x, train_y, test_x, test_y = write_cifar10(src / "cifar-10-batches-py", "py2")
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    for where in (archive.parent, archive):
        ds = data.load_cifar10(where)
        assert torch.equal(ds.train_x, torch.from_numpy(train_x)) and ds.test_y.tolist() == test_y
        assert str(archive) in ds.source


@pytest.mark.parametrize("flavour", ["py2", "default"])
def test_cifar100_fine_and_coarse(tmp_path, flavour):
    written = write_cifar100(tmp_path / "cifar-100-python", flavour)
    fine = data.load("cifar100", data_dir=tmp_path)
    coarse = data.load("cifar100", data_dir=tmp_path / "cifar-100-python", labels="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert torch.equal(fine.train_x, torch.from_numpy(written["train"][0]))
    assert torch.equal(coarse.test_x, torch.from_numpy(written["test"][0]))
    assert fine.train_y.tolist() == written["train"][1]["fine_labels"]
    assert coarse.test_y.tolist() == written["test"][1]["coarse_labels"]
    assert fine.class_names[3] == "fine3" and coarse.class_names[3] == "coarse3"
    with pytest.raises(ValueError, match="labels: expected 'fine' or 'coarse'"):
        data.load("cifar100", data_dir=tmp_path, labels="medium")


def test_meta_file_is_optional(tmp_path):
    write_cifar10(tmp_path, "default", meta=False)
    assert data.load_cifar10(tmp_path).class_names == data.cifar.CIFAR10_CLASSES


def test_missing_cifar_directory_message(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load("cifar10", data_dir=tmp_path / "nope")
    message = str(info.value)
    assert "cifar-10-batches-py" in message and "data_batch_1" in message and "test_batch" in message
    assert "cifar-10-python.tar.gz" in message and "https://www.cs.toronto.edu/~kriz/cifar.html" in message
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        data.load("cifar100", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="data_dir"):
        data.load("cifar10")


# ----------------------------------------------------------------------------- malicious pickles


class SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class EvalCall:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (builtins.eval, (self.code,))


class OpenCall:
    """Creates a file when unpickled by a plain unpickler, without a shell."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


class PopenCall:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", self.marker],))


def evil_payloads(marker: Path) -> dict[str, object]:
    return {
        "os.system": SystemCall(f"touch {marker}"),
        "builtins.eval": EvalCall(f"__import__('os').system('touch {marker}')"),
        "builtins.open": OpenCall(str(marker)),
        "subprocess.Popen": PopenCall(str(marker)),
    }


def test_the_payloads_really_are_malicious(tmp_path):
    """Sanity check of the test itself: a plain unpickler does create the file."""
    marker = tmp_path / "proof"
    pickle.loads(pickle.dumps(OpenCall(str(marker)))).close()
    assert marker.exists()


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "builtins.open", "subprocess.Popen"])
@pytest.mark.parametrize("protocol", [0, 2, pickle.DEFAULT_PROTOCOL, 5])
def test_malicious_batch_is_refused_without_side_effect(tmp_path, payload, protocol):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, "default")
    evil = {b"data": evil_payloads(marker)[payload], b"labels": [0]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=protocol))
    with pytest.raises(pickle.UnpicklingError) as info:
        data.load("cifar10", data_dir=tmp_path)
    assert isinstance(info.value, UnsafePickleError)
    assert payload.split(".")[1] in str(info.value) and "data_batch_3" in str(info.value)
    assert not marker.exists()


def test_malicious_meta_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    write_cifar10(tmp_path, "py2")
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": SystemCall(f"touch {marker}")}))
    with pytest.raises(UnsafePickleError, match="batches.meta"):
        data.load_cifar10(tmp_path)
    assert not marker.exists()


def test_safe_load_refuses_globals_directly():
    for blob in (b"cos\nsystem\n(S'true'\ntR.", b"cbuiltins\ngetattr\n.", b"cnumpy\nload\n."):
        with pytest.raises(UnsafePickleError, match="refused to load global"):
            data.safe_load(blob)
    # numpy's allowed names cannot be steered into other numpy functions
    with pytest.raises(UnsafePickleError, match="numpy.core.multiarray.scalar"):
        data.safe_load(b"cnumpy.core.multiarray\nscalar\n.")


def test_codecs_encode_only_as_latin1():
    assert data.safe_load(pickle.dumps(b"\x00\xffabc", protocol=2)) == b"\x00\xffabc"
    evil = b"c_codecs\nencode\n(X\x03\x00\x00\x00abcX\x04\x00\x00\x00zlibtR."
    with pytest.raises(UnsafePickleError, match="latin1"):
        data.safe_load(evil)


def test_persistent_ids_are_refused():
    with pytest.raises(UnsafePickleError, match="persistent"):
        data.safe_load(b"\x80\x02X\x01\x00\x00\x00aQ.")


# ----------------------------------------------------------------------------- corrupt batches


def test_truncated_batch_names_the_file(tmp_path):
    write_cifar10(tmp_path, "py2")
    p = tmp_path / "test_batch"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="not a readable data pickle") as info:
        data.load_cifar10(tmp_path)
    assert str(p) in str(info.value)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([1, 2, 3], "expected a dict"),
        ({b"labels": [0]}, "missing key 'data'"),
        ({b"data": np.zeros((1, 3072), np.uint8)}, "missing key 'labels'"),
        ({b"data": np.zeros((1, 1024), np.uint8), b"labels": [0]}, "N x 3072"),
        ({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["cat"]}, "list of ints"),
    ],
)
def test_malformed_batch_contents(tmp_path, batch, message):
    write_cifar10(tmp_path, "default")
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=message) as info:
        data.load_cifar10(tmp_path)
    assert "data_batch_1" in str(info.value)


def test_out_of_range_label(tmp_path):
    write_cifar10(tmp_path, "default")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        data.load_cifar10(tmp_path)


def test_string_keys_are_accepted(tmp_path):
    """A batch re-pickled with str keys (e.g. after loading with encoding='latin1')."""
    train_x, *_ = write_cifar10(tmp_path, "default")
    blob = data.safe_load_path(tmp_path / "data_batch_1")
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({k.decode(): v for k, v in blob.items()}))
    assert torch.equal(data.load_cifar10(tmp_path).train_x, torch.from_numpy(train_x))

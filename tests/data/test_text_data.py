"""The byte-level text dataset: files and folders, contiguous splits, seeded windows, the fixed evaluation
sample, and one-line refusals of hostile inputs (binary, invalid UTF-8, FIFOs, a sparse 10 GB file)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from contdepth import data
from contdepth.data import TextDataset, load_text
from contdepth.data import text as text_module

FORTUNES = Path("/usr/share/games/fortunes")
# 200 lines of ASCII and multi-byte UTF-8 (2- and 3-byte characters)
CORPUS = "".join(f"line {i}: caf\u00e9 \u2013 na\u00efve {i * i}\n" for i in range(200)).encode()


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def refusal(call, *args, **kwargs) -> str:
    """The one-line ValueError that ``call(*args, **kwargs)`` raises."""
    with pytest.raises(ValueError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write(tmp_path / "corpus.txt", CORPUS)


def test_a_file_is_memory_mapped_and_hashed(corpus):
    ds = load_text(corpus)
    assert isinstance(ds, TextDataset) and ds.is_text and not ds.is_graph
    assert isinstance(ds.data, np.memmap) and not ds.data.flags.writeable
    assert ds.name == "text" and ds.source == str(corpus.resolve()) and ds.files == (str(corpus.resolve()),)
    assert ds.num_bytes == len(CORPUS) and ds.data.tobytes() == CORPUS
    assert ds.sha256 == hashlib.sha256(CORPUS).hexdigest()
    line = ds.describe()
    assert "\n" not in line and ds.sha256[:12] in line and f"{len(CORPUS):,}" in line


def test_splits_are_contiguous_and_sized_by_the_fractions(corpus):
    n = len(CORPUS)
    ds = load_text(corpus, val_fraction=0.1, test_fraction=0.2)
    assert ds.splits == ("train", "val", "test")
    assert ds.ranges == {"train": (0, n - round(n / 10) - round(n / 5)),
                         "val": (n - round(n / 10) - round(n / 5), n - round(n / 5)), "test": (n - round(n / 5), n)}
    assert sum(ds.split_bytes(s) for s in ds.splits) == n
    without = load_text(corpus, val_fraction=0, test_fraction=0.25)
    assert without.splits == ("train", "test") and without.ranges["test"] == (n - n // 4, n)
    assert "split" in refusal(without.split_bytes, "val")


def test_a_folder_concatenates_matching_regular_files_sorted(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    write(folder / "b.txt", b"second file\n")
    write(folder / "a.txt", b"first file\n")
    write(folder / "c.md", b"not matched\n")
    write(folder / "skip.txt", b"excluded\n")
    (folder / "sub.txt").mkdir()  # a folder matching the pattern: skipped, never descended into
    write(folder / "sub.txt" / "deep.txt", b"not read\n")
    write(tmp_path / "outside.txt", b"reached through a link\n")
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")
    ds = load_text(folder, exclude="skip*", val_fraction=0, test_fraction=0.25)
    assert [Path(f).name for f in ds.files] == ["a.txt", "b.txt"]
    assert ds.data.tobytes() == b"first file\nsecond file\n"
    assert ds.sha256 == hashlib.sha256(b"first file\nsecond file\n").hexdigest()
    assert [Path(f).name for f in load_text(folder, pattern="*", val_fraction=0, test_fraction=0.25).files] == [
        "a.txt", "b.txt", "c.md", "skip.txt"]


def test_train_batch_is_a_pure_function_of_seed_and_step(corpus):
    ds = load_text(corpus)
    x, y = ds.train_batch(8, 16, seed=3, step=5)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    again = ds.train_batch(8, 16, seed=3, step=5)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    assert not torch.equal(x, ds.train_batch(8, 16, seed=3, step=6)[0])
    assert not torch.equal(x, ds.train_batch(8, 16, seed=4, step=5)[0])
    assert torch.equal(x[:, 1:], y[:, :-1])
    stop = ds.ranges["train"][1]
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        window = bytes(row_x + row_y[-1:])
        starts = [i for i in range(stop - 16) if CORPUS[i:i + 17] == window]
        assert starts, "every window is 17 consecutive bytes of the train range"


def test_train_batch_draws_the_documented_generator(corpus):
    ds = load_text(corpus)
    generator = torch.Generator().manual_seed(data.derive_seed(7, 3, 11))
    starts = torch.randint(0, ds.ranges["train"][1] - 9 + 1, (4,), generator=generator).tolist()
    x, y = ds.train_batch(4, 8, seed=7, step=11)
    assert [bytes(r) for r in x.tolist()] == [CORPUS[s:s + 8] for s in starts]
    assert [bytes(r) for r in y.tolist()] == [CORPUS[s + 1:s + 9] for s in starts]


def test_eval_batches_are_fixed_and_evenly_spaced(corpus):
    ds = load_text(corpus, val_fraction=0.2, test_fraction=0.2, eval_windows=5)
    start, stop = ds.ranges["val"]
    batches = ds.eval_batches("val", 2, 10)
    assert [len(x) for x, _ in batches] == [2, 2, 1] and ds.num_eval_windows("val", 10) == 5
    span = stop - start - 11
    starts = [start + i * span // 4 for i in range(5)]
    assert starts[0] == start and starts[-1] + 11 == stop
    xs = torch.cat([x for x, _ in batches]).tolist()
    ys = torch.cat([y for _, y in batches]).tolist()
    assert [bytes(r) for r in xs] == [CORPUS[s:s + 10] for s in starts]
    assert [bytes(r) for r in ys] == [CORPUS[s + 1:s + 11] for s in starts]
    again = ds.eval_batches("val", 2, 10)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    # a long context: as many whole windows as fit, never overlapping
    length = stop - start
    assert ds.num_eval_windows("test", length // 3 - 1) == 3
    assert len(ds.eval_batches("train", 64, 4)) == 1 and ds.num_eval_windows("train", 4) == 5


def test_a_window_longer_than_a_split_is_one_line(corpus):
    ds = load_text(corpus)
    length = ds.split_bytes("test")
    message = refusal(ds.eval_batches, "test", 4, length)
    assert str(corpus.resolve()) in message and "test split" in message and f"{length:,}" in message
    assert f"{length + 1:,}" in message
    assert "train split" in refusal(ds.train_batch, 2, ds.split_bytes("train"), seed=0, step=0)


@pytest.mark.parametrize("call, option", [
    (lambda ds: ds.train_batch(0, 8, seed=0, step=0), "batch_size"),
    (lambda ds: ds.train_batch(2, 0, seed=0, step=0), "context"),
    (lambda ds: ds.train_batch(2, 8, seed=-1, step=0), "seed"),
    (lambda ds: ds.train_batch(2, 8, seed=0, step=-1), "step"),
    (lambda ds: ds.train_batch(2**20, 2**12, seed=0, step=0), "batch_size"),
    (lambda ds: ds.eval_batches("dev", 2, 8), "split"),
    (lambda ds: ds.eval_batches("val", True, 8), "batch_size"),
])
def test_bad_batch_arguments_are_one_line(corpus, call, option):
    assert refusal(call, load_text(corpus)).startswith(f"{option}: ")


@pytest.mark.parametrize("options, option", [
    ({"val_fraction": 0.5}, "val_fraction"), ({"val_fraction": -0.1}, "val_fraction"),
    ({"test_fraction": 0}, "test_fraction"), ({"test_fraction": 0.5}, "test_fraction"),
    ({"test_fraction": "0.1"}, "test_fraction"), ({"eval_windows": 0}, "eval_windows"),
    ({"eval_windows": 1_000_001}, "eval_windows"), ({"pattern": ""}, "pattern"), ({"exclude": 3}, "exclude"),
])
def test_bad_options_are_one_line(corpus, options, option):
    assert refusal(load_text, corpus, **options).startswith(f"{option}: ")


def test_no_data_dir_says_so():
    assert "--data-dir" in refusal(load_text, None)


def test_binary_and_invalid_utf8_name_the_file_and_offset(tmp_path):
    binary = write(tmp_path / "binary.txt", CORPUS[:100] + b"\0" + CORPUS[100:])
    message = refusal(load_text, binary)
    assert str(binary) in message and "byte 100 " in message and "binary" in message
    bad = write(tmp_path / "latin1.txt", CORPUS[:57] + "caf\u00e9".encode("latin-1") + CORPUS[57:])
    message = refusal(load_text, bad)
    assert str(bad) in message and "byte 60 " in message and "UTF-8" in message and "0xe9" in message
    truncated = write(tmp_path / "cut.txt", CORPUS + "\u2013".encode()[:2])  # ends inside a character
    assert f"byte {len(CORPUS):,} " in refusal(load_text, truncated)
    folder = tmp_path / "folder"
    folder.mkdir()
    write(folder / "a.txt", CORPUS)
    write(folder / "b.txt", b"fine\n\xff")  # the offset is the file's own
    message = refusal(load_text, folder)
    assert str(folder / "b.txt") in message and "byte 5 " in message


def test_a_character_across_a_chunk_boundary_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setattr(text_module, "CHUNK_BYTES", 7)
    content = ("ab\u00e9cd\u2013\U0001f600" * 40).encode()  # 2-, 3- and 4-byte characters at every phase
    ds = load_text(write(tmp_path / "chunked.txt", content))
    assert ds.sha256 == hashlib.sha256(content).hexdigest()
    message = refusal(load_text, write(tmp_path / "bad.txt", content[:30] + b"\x80" + content[30:]))
    assert "byte 30 " in message


def test_empty_inputs_are_one_line(tmp_path):
    empty = write(tmp_path / "empty.txt", b"")
    assert str(empty) in refusal(load_text, empty) and "empty" in refusal(load_text, empty)
    folder = tmp_path / "nothing"
    folder.mkdir()
    assert str(folder) in refusal(load_text, folder)
    write(folder / "notes.md", b"hello world\n")
    assert "'*.txt'" in refusal(load_text, folder)
    write(folder / "blank.txt", b"")
    assert "empty" in refusal(load_text, folder)
    tiny = write(tmp_path / "tiny.txt", b"0123456789")
    assert "val split 0 bytes" in refusal(load_text, tiny)
    assert "test split 1 byte;" in refusal(load_text, tiny, val_fraction=0, test_fraction=0.1)
    assert "no such file" in refusal(load_text, tmp_path / "missing.txt").lower()


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    message = refusal(load_text, fifo)
    assert str(fifo) in message and "not a regular file" in message
    folder = tmp_path / "with_fifo"
    folder.mkdir()
    os.mkfifo(folder / "pipe.txt")
    write(folder / "real.txt", CORPUS)
    assert [Path(f).name for f in load_text(folder).files] == ["real.txt"]


def test_a_sparse_10_gb_file_is_not_read_whole(tmp_path):
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(10 * 2**30)  # all NUL bytes, no disk space: the first chunk answers
    message = refusal(load_text, huge)
    assert str(huge) in message and "binary" in message and "byte 0 " in message


def test_size_limits_are_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4):
        write(folder / f"{i}.txt", CORPUS)
    monkeypatch.setattr(text_module, "MAX_FILES", 3)
    assert "more than 3 files" in refusal(load_text, folder)
    monkeypatch.setattr(text_module, "MAX_FILES", 100)
    monkeypatch.setattr(text_module, "MAX_FOLDER_BYTES", len(CORPUS))
    message = refusal(load_text, folder)
    assert str(folder) in message and "concatenate" in message
    monkeypatch.setattr(text_module, "MAX_BYTES", 100)
    assert "2**40" in refusal(load_text, folder / "0.txt")


def test_load_by_name_passes_the_options(tmp_path, corpus):
    ds = data.load("text", data_dir=corpus.parent, pattern="corpus*", eval_windows=3)
    assert ds.files == (str(corpus.resolve()),) and ds.eval_windows == 3
    assert data.dataset_kind("text") == "text" and not data.is_graph_dataset("text")
    message = refusal(data.load, "text", data_dir=corpus, patern="*")
    assert "patern" in message and "pattern" in message
    assert "--data-dir" in refusal(data.load, "text")


@pytest.mark.skipif(not FORTUNES.is_dir(),
                    reason="the reference corpus is Debian's fortunes package (apt-get install fortunes), not installed here")
def test_debian_fortunes_load():
    ds = load_text(FORTUNES, pattern="*", exclude="*.dat")
    assert 1_000_000 < ds.num_bytes < 20_000_000
    assert not any(f.endswith((".dat", ".u8")) for f in ds.files)  # index files excluded, symlinks skipped
    assert ds.files == tuple(sorted(ds.files))
    x, y = ds.train_batch(4, 64, seed=0, step=0)
    assert x.shape == (4, 64) and int(x.max()) < 256

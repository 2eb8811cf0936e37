"""Byte-level text for language modelling: [`load_text`][contdepth.data.load_text] and
[`TextDataset`][contdepth.data.TextDataset].

The tokens are the bytes of UTF-8 text (a vocabulary of 256, no tokenizer). A corpus is one file,
memory-mapped (never read whole), or the matching files of one folder, read into one array of at
most 2 GiB. The bytes are split into contiguous ranges: train first, then validation, then test.

Every byte is checked once, in chunks of at most 16 MiB whatever the corpus size: a NUL byte is
a binary file, a byte sequence that is not UTF-8 is refused with its offset, and the same pass
computes the corpus's SHA-256, which identifies it in a run's record. Every refusal is one
``ValueError`` line naming the file or folder.
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import os
import stat
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch

from ..common.errors import OptionError
from ..common.validate import check_choice, check_int, check_number, check_seed, show
from .pipeline import make_generator

Tensor = torch.Tensor

#: The bytes checked (NUL, UTF-8) and hashed at a time: the memory of the check, whatever the corpus size.
CHUNK_BYTES = 16 * 2**20
#: The largest corpus (one memory-mapped file).
MAX_BYTES = 2**40
#: The largest folder: its files are read into memory (concatenate a larger one into one file).
MAX_FOLDER_BYTES = 2 * 2**30
MAX_FILES = 100_000
MAX_EVAL_WINDOWS = 1_000_000
#: The most bytes one batch of windows may hold (``batch_size * (context + 1)``).
MAX_BATCH_BYTES = 2**31
#: ``derive_seed(seed, TRAIN_STREAM, step)`` seeds the window starts of training step ``step``.
TRAIN_STREAM = 3


@dataclass(frozen=True, eq=False)
class TextDataset:
    """A byte corpus and its contiguous splits (see the module docstring).

    ``ranges`` maps each split to its ``(start, stop)`` byte offsets; ``data`` holds the bytes
    (``numpy.uint8``, read-only; a memory map for one file). ``eval_windows`` is the most windows
    a split's fixed evaluation sample has ([`eval_batches`][contdepth.data.TextDataset.eval_batches]).
    ``is_text`` tells a trainer to use the language-model loop.
    """

    is_text: ClassVar[bool] = True
    is_graph: ClassVar[bool] = False
    vocab_size: ClassVar[int] = 256

    name: str
    source: str
    files: tuple[str, ...] = field(repr=False)
    sha256: str
    num_bytes: int
    ranges: dict
    eval_windows: int
    data: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        check_int(self.eval_windows, "eval_windows", low=1, high=MAX_EVAL_WINDOWS)

    @property
    def splits(self) -> tuple[str, ...]:
        """``("train", "val", "test")``, or ``("train", "test")`` without validation."""
        return tuple(self.ranges)

    def split_bytes(self, split: str) -> int:
        """The length of ``split`` in bytes."""
        start, stop = self.ranges[check_choice(split, "split", self.splits)]
        return stop - start

    def _window(self, split: str, context: int) -> int:
        """``context + 1`` (a window's bytes), checked against ``split``'s length."""
        check_int(context, "context", low=1)
        length = self.split_bytes(split)
        if length < context + 1:
            raise ValueError(f"{self.source}: the {split} split has {length:,} bytes, shorter than a window of "
                             f"{context + 1:,} bytes (context {context:,} + 1)")
        return context + 1

    def _batch(self, starts: np.ndarray, window: int, device: str | torch.device | None) -> tuple[Tensor, Tensor]:
        """``(x, y)`` int64 of the windows at ``starts``: only those bytes are read."""
        chunk = torch.from_numpy(np.asarray(self.data[starts[:, None] + np.arange(window)])).to(torch.int64)
        x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
        return (x, y) if device is None else (x.to(device), y.to(device))

    def train_batch(self, batch_size: int, context: int, *, seed: int, step: int,
                    device: str | torch.device | None = None) -> tuple[Tensor, Tensor]:
        """``(x, y)``, both int64 ``(batch_size, context)``; ``y`` is ``x`` shifted by one byte.

        The window starts are drawn uniformly from the train range by a generator seeded with
        ``derive_seed(seed, 3, step)``: a pure function of ``(seed, step)``, so a resumed run
        draws what the uninterrupted one drew.
        """
        _check_batch(batch_size, context)
        check_seed(seed)
        check_int(step, "step", low=0)
        window = self._window("train", context)
        start, stop = self.ranges["train"]
        generator = make_generator(seed, TRAIN_STREAM, step)
        starts = torch.randint(start, stop - window + 1, (batch_size,), generator=generator)
        return self._batch(starts.numpy(), window, device)

    def num_eval_windows(self, split: str, context: int) -> int:
        """``min(eval_windows, split_bytes // (context + 1))``: the windows of ``split``'s evaluation sample."""
        window = self._window(split, context)
        return min(self.eval_windows, self.split_bytes(split) // window)

    def eval_batches(self, split: str, batch_size: int, context: int, *,
                     device: str | torch.device | None = None) -> list[tuple[Tensor, Tensor]]:
        """The fixed evaluation sample of ``split`` (``"val"``, ``"test"`` or ``"train"``) in batches.

        [`num_eval_windows`][contdepth.data.TextDataset.num_eval_windows] windows of
        ``context + 1`` bytes, not overlapping, whose starts are evenly spaced over the split (the
        first at its start and, from two windows on, the last ending at its end): no seed, the same
        windows every call.
        """
        _check_batch(batch_size, context)
        count = self.num_eval_windows(split, context)
        window = context + 1
        start, stop = self.ranges[split]
        span = stop - start - window
        starts = np.array([start + (i * span) // max(count - 1, 1) for i in range(count)], dtype=np.int64)
        return [self._batch(starts[i:i + batch_size], window, device) for i in range(0, count, batch_size)]

    def describe(self) -> str:
        """One line: files, bytes, split sizes and the first 12 hex digits of the SHA-256."""
        files = f"{len(self.files)} files in" if len(self.files) > 1 else "file"
        sizes = ", ".join(f"{split} {self.split_bytes(split):,}" for split in self.splits)
        return f"{self.name}: {files} {self.source}, {self.num_bytes:,} bytes ({sizes}), sha256 {self.sha256[:12]}"


def _check_batch(batch_size: int, context: int) -> None:
    check_int(batch_size, "batch_size", low=1)
    check_int(context, "context", low=1)
    if batch_size * (context + 1) > MAX_BATCH_BYTES:
        raise OptionError("batch_size", f"a batch of {batch_size:,} windows of {context + 1:,} bytes holds more "
                                        f"than {MAX_BATCH_BYTES:,} bytes; use a smaller batch_size or context")


def _open_regular(path: Path) -> int:
    """A read-only descriptor of the regular file ``path``: checked with ``stat`` before it is opened (a FIFO
    is never opened, so never waited on) and with ``fstat`` after (nothing swapped in between)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"{path}: not a regular file (a FIFO, socket or device is not read)")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path}: not a regular file (a FIFO, socket or device is not read)")
    return fd


def _folder_files(folder: Path, pattern: str, exclude: str | None) -> list[tuple[Path, int]]:
    """The regular files of ``folder`` (top level) matching ``pattern`` and not ``exclude``, sorted, with sizes."""
    found: list[tuple[Path, int]] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not fnmatch.fnmatchcase(entry.name, pattern) or (exclude and fnmatch.fnmatchcase(entry.name,
                                                                                                      exclude)):
                    continue
                if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                    continue  # symbolic links, folders, FIFOs, devices: skipped
                found.append((Path(entry.path), entry.stat(follow_symlinks=False).st_size))
                if len(found) > MAX_FILES:
                    raise ValueError(f"{folder}: more than {MAX_FILES:,} files match {pattern!r}; "
                                     f"concatenate them into one file")
    except OSError as exc:
        raise ValueError(f"{folder}: cannot be listed ({exc.strerror or exc})") from None
    return sorted(found, key=lambda item: item[0].name)


def _read_folder(folder: Path, files: list[tuple[Path, int]]) -> np.ndarray:
    """The files' bytes, concatenated into one array (sizes checked first: at most `MAX_FOLDER_BYTES`)."""
    total = sum(size for _, size in files)
    if total > MAX_FOLDER_BYTES:
        raise ValueError(f"{folder}: its {len(files):,} matching files hold {total:,} bytes, more than the "
                         f"{MAX_FOLDER_BYTES:,} a folder may (they are read into memory); concatenate them into "
                         f"one file, which is memory-mapped")
    data = np.empty(total, dtype=np.uint8)
    view, at = memoryview(data), 0
    for path, size in files:
        with os.fdopen(_open_regular(path), "rb") as f:
            got = 0
            while got < size:
                n = f.readinto(view[at + got:at + size])
                if not n:
                    raise ValueError(f"{path}: changed while being read (listed with {size:,} bytes, read {got:,})")
                got += n
        at += size
    view.release()
    return data


def _scan(data: np.ndarray, where: Callable[[int], str]) -> str:
    """The SHA-256 of ``data``, in one pass of `CHUNK_BYTES` chunks that refuses NUL bytes and invalid UTF-8.

    ``where(offset)`` names the file and byte of a corpus offset. A character split across
    two chunks is whole: the incremental decoder keeps its first bytes for the next chunk.
    """
    digest, decoder, total = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")(), len(data)
    for start in range(0, total, CHUNK_BYTES):
        chunk = data[start:start + CHUNK_BYTES].tobytes()
        pending = len(decoder.getstate()[0])
        nul = chunk.find(b"\0")
        try:
            decoder.decode(chunk, final=start + len(chunk) == total)
            bad = None
        except UnicodeDecodeError as exc:
            bad = start - pending + exc.start
        if nul >= 0 and (bad is None or start + nul < bad):
            raise ValueError(f"{where(start + nul)} is a NUL byte: binary data, not UTF-8 text")
        if bad is not None:
            raise ValueError(f"{where(bad)} is not valid UTF-8 (byte 0x{int(data[bad]):02x}); "
                             f"the text dataset reads UTF-8 text")
        digest.update(chunk)
    return digest.hexdigest()


def _split_ranges(total: int, val_fraction: float, test_fraction: float, source: str) -> dict:
    """Contiguous ``{"train", ["val",] "test"}`` byte ranges; ``round(total * fraction)`` bytes each held out."""
    n_val, n_test = round(total * val_fraction), round(total * test_fraction)
    sizes = {"train": total - n_val - n_test, **({"val": n_val} if val_fraction else {}), "test": n_test}
    ranges, at = {}, 0
    for split, size in sizes.items():
        if size < 2:
            raise ValueError(f"{source}: {total:,} bytes leave the {split} split {size} byte{'s' * (size != 1)}; "
                             f"a split needs at least 2 (a byte and the next)")
        ranges[split] = (at, at + size)
        at += size
    return ranges


def load_text(data_dir: str | Path | None, *, val_fraction: float = 0.05, test_fraction: float = 0.05,
              pattern: str = "*.txt", exclude: str | None = None, eval_windows: int = 64,
              sha256: str | None = None) -> TextDataset:
    """A byte-level corpus of UTF-8 text for language modelling (see the module docstring).

    ``data_dir`` is one text file, memory-mapped, or a folder: its regular files whose names
    match the glob ``pattern`` and not ``exclude`` (top level only, sorted by name) are
    concatenated in that order; symbolic links, sub-folders and other non-regular files in it are
    skipped (``pattern`` and ``exclude`` apply to a folder only). The last ``test_fraction`` of
    the bytes is the test split, the ``val_fraction`` before it the validation split (none when
    0), the rest the train split. ``sha256`` (hex), when given, must be the corpus's digest: a
    run records it (its config's ``data_options``), so a resumed run or a rerun of its config on a
    corpus that changed since is refused instead of silently training on other bytes.

    Raises:
        ValueError: one line naming the file or folder: not a regular file or folder, empty, no
            file matching, larger than 2**40 bytes (a folder: 2 GiB, 100,000 files), a NUL byte
            (binary), invalid UTF-8 (with its offset), a split shorter than 2 bytes; or a bad option.
    """
    if data_dir is None:
        raise OptionError("data_dir", "the text dataset needs --data-dir (a UTF-8 text file or a folder of them)")
    val_fraction = check_number(val_fraction, "val_fraction", low=0, high=0.5, high_open=True)
    test_fraction = check_number(test_fraction, "test_fraction", low=0, high=0.5, low_open=True, high_open=True)
    if not isinstance(pattern, str) or not pattern:
        raise OptionError("pattern", f"must be a non-empty glob such as '*.txt', got {show(pattern)}")
    if exclude is not None and (not isinstance(exclude, str) or not exclude):
        raise OptionError("exclude", f"must be a non-empty glob such as '*.dat' or null, got {show(exclude)}")
    eval_windows = check_int(eval_windows, "eval_windows", low=1, high=MAX_EVAL_WINDOWS)
    if sha256 is not None and not (isinstance(sha256, str) and len(sha256) == 64
                                   and all(c in "0123456789abcdef" for c in sha256)):
        raise OptionError("sha256", f"must be 64 lower-case hex digits (a SHA-256 digest) or null, got {show(sha256)}")
    path = Path(data_dir).expanduser().resolve()
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read as text data ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        listed = _folder_files(path, pattern, exclude)
        if not listed:
            also = f" and not {exclude!r}" if exclude else ""
            raise ValueError(f"{path}: no regular file in this folder matches {pattern!r}{also}")
        data = _read_folder(path, listed)
        files = tuple(str(p) for p, _ in listed)
        offsets = np.cumsum([0] + [size for _, size in listed]).tolist()

        def where(offset: int) -> str:
            i = bisect_right(offsets, offset) - 1
            return f"{files[i]}: byte {offset - offsets[i]:,}"
    elif stat.S_ISREG(mode):
        with os.fdopen(_open_regular(path), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                raise ValueError(f"{path}: {size:,} bytes, more than the {MAX_BYTES:,} (2**40) a corpus may hold")
            data = np.memmap(f, dtype=np.uint8, mode="r", shape=(size,)) if size else np.empty(0, np.uint8)
        files = (str(path),)

        def where(offset: int) -> str:
            return f"{path}: byte {offset:,}"
    else:
        raise ValueError(f"{path}: not a regular file or folder (a FIFO, socket or device is not read)")
    if len(data) == 0:
        raise ValueError(f"{path}: empty; the text dataset needs UTF-8 text")
    data.flags.writeable = False
    digest = _scan(data, where)
    if sha256 is not None and digest != sha256:
        raise ValueError(f"{path}: its content (sha256 {digest[:12]}...) is not the corpus recorded for this run "
                         f"(sha256 {sha256[:12]}...): the text changed since; restore it, or drop data_options.sha256 "
                         "to train on the new text as a new run")
    ranges = _split_ranges(len(data), val_fraction, test_fraction, str(path))
    return TextDataset(name="text", source=str(path), files=files, sha256=digest, num_bytes=len(data),
                       ranges=ranges, eval_windows=eval_windows, data=data)

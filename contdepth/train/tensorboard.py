"""Optional TensorBoard logging: the per-epoch metrics of a run and a manifestation table.

``metrics.jsonl`` stays the record; TensorBoard is a view of it. ``contdepth train
--tensorboard`` writes ``RUN/tensorboard/`` (rank 0 only): every numeric field of each
epoch's metrics line, grouped (``loss/train``, ``accuracy/val``, ``lr``, ``time/epoch`` ...)
at step = epoch. A resumed or overwritten run starts its writer with ``purge_step`` at its
first new epoch, so TensorBoard drops the older events from that step on instead of drawing
two histories over each other: no file is removed. ``contdepth analyze --tensorboard DIR``
adds the manifestation table (text) and each scheme's accuracy against its step count.

Needs the ``tensorboard`` package (``pip install 'contdepth[tb]'``); asking for it without
the package is a one-line error before any training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..common.errors import OptionError

TENSORBOARD_DIR = "tensorboard"

_GROUPS = {"loss": "loss", "accuracy": "accuracy", "time": "time"}


def summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or an `OptionError` saying how to get it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise OptionError("tensorboard", f"needs the tensorboard package ({exc}); install it with "
                                         "pip install 'contdepth[tb]'") from exc
    return SummaryWriter


def metric_tag(key: str) -> str:
    """``train_loss`` -> ``loss/train``, ``val_accuracy`` -> ``accuracy/val``, ``epoch_time`` -> ``time/epoch``."""
    head, _, tail = key.rpartition("_")
    if head and tail in _GROUPS:
        return f"{_GROUPS[tail]}/{head}"
    return key


class TensorBoardLogger:
    """A training callback (``callback(row, model, optimizer)``) writing each epoch's numbers to ``log_dir``."""

    def __init__(self, log_dir: str | Path, first_epoch: int = 1) -> None:
        writer = summary_writer_class()
        self.log_dir = Path(log_dir)
        self.writer = writer(str(self.log_dir), purge_step=first_epoch)

    def __call__(self, row: dict, model: Any = None, optimizer: Any = None) -> None:
        step = int(row["epoch"])
        for key, value in row.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(metric_tag(key), value, step)
        self.writer.flush()  # each epoch visible at once, as metrics.jsonl is

    def close(self) -> None:
        self.writer.close()


def log_manifestation_table(log_dir: str | Path, rows: list[tuple[str, int, float]], table: str) -> Path:
    """The table of ``contdepth analyze`` as text, and ``manifestation/SCHEME`` accuracy (percent) at step = steps."""
    writer = summary_writer_class()(str(log_dir))
    try:
        for scheme, n_steps, accuracy in rows:
            if math.isfinite(accuracy):
                writer.add_scalar(f"manifestation/{scheme}", accuracy, n_steps)
        writer.add_text("manifestation/table", "    " + table.replace("\n", "\n    "))  # markdown: preformatted
    finally:
        writer.close()
    return Path(log_dir)

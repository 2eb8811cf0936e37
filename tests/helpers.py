"""Problems and builders shared by several test modules (no test module imports another).

Importable as ``helpers`` from every test folder: ``tests/`` is on ``sys.path`` because its
``conftest.py`` lives there (pytest's default ``prepend`` import mode).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from contdepth.data import make_graph_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
CORA_DIR = REPO_ROOT.parent / "shared" / "data" / "cora"

# --- an ODE with a known solution (solvers) ---------------------------------------------------------
# A non-autonomous linear system:
#   x1' = cos(t) x1,        x1(t) = exp(sin t)
#   x2' = -2 t x2 + t,      x2(t) = 1/2 + (x2(0) - 1/2) exp(-t^2)
X0 = torch.tensor([1.0, 2.0], dtype=torch.float64)


def field(t, x):
    return torch.stack([math.cos(t) * x[0], -2 * t * x[1] + t])


def exact(t):
    return torch.tensor([math.exp(math.sin(t)), 0.5 + 1.5 * math.exp(-t * t)], dtype=torch.float64)


# --- a tiny graph in the Cora file format (data) ----------------------------------------------------
TINY_CORA = {
    "feature.txt": "0\t0:1.0 2:1.0\n1\t1:1.0\n2\t0:1.0 1:1.0 3:2.0\n3\t\n4\t3:1.0\n",
    "label.txt": "0\t0\n1\t1\n2\t2\n3\t0\n",
    "net.txt": "0\t1\t1\n1\t0\t1\n1\t2\t1\n2\t1\t1\n3\t4\t2\n4\t3\t2\n",
    "train.txt": "0\n1\n",
    "dev.txt": "2\n",
    "test.txt": "3\n",
}


def write_cora(folder: Path, **changes: str) -> Path:
    """The tiny graph's files in ``folder`` (``changes``: file name with ``_`` for ``.`` -> text)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**TINY_CORA, **changes}.items():
        (folder / name.replace("_", ".")).write_text(text)
    return folder


# --- a two-community graph for node classification (train) --------------------------------------------
def communities(flip_val: bool = False, seed: int = 0):
    """Two noisy communities of 30 nodes (features hint at the class, edges mostly inside a class).

    ``flip_val`` gives the validation nodes the *other* class: the better the model
    fits the training nodes, the worse its validation accuracy, so validation accuracy
    is highest early and then falls.
    """
    g = torch.Generator().manual_seed(seed)
    n = 60
    labels = torch.arange(n) % 2
    features = torch.randn(n, 6, generator=g) * 0.5
    features[:, 0] += labels.float()
    features[:, 1] += 1.0 - labels.float()
    src, dst = torch.randint(0, n, (240,), generator=g), torch.randint(0, n, (240,), generator=g)
    keep = (labels[src] == labels[dst]) & (src != dst)
    edge_index = torch.cat([torch.stack([src[keep], dst[keep]]), torch.stack([dst[keep], src[keep]])], dim=1)
    edge_index = torch.unique(edge_index, dim=1)
    perm = torch.randperm(n, generator=g)
    splits = {"train": perm[:16], "val": perm[16:32], "test": perm[32:]}
    if flip_val:
        labels = labels.clone()
        labels[splits["val"]] = 1 - labels[splits["val"]]
    return make_graph_dataset("communities", features, edge_index, labels, splits, num_classes=2)


# --- interrupting and comparing training runs (train) ---------------------------------------------------
class Interrupt(Exception):
    """Raised by :func:`interrupt_after` to stop a run as a Ctrl-C would."""


def interrupt_after(epoch: int):
    """A training callback that raises :class:`Interrupt` once ``epoch`` is done."""

    def callback(row, model, optimizer):
        if row["epoch"] == epoch:
            raise Interrupt

    return callback


def without_times(history: list[dict]) -> list[dict]:
    """Metrics rows without their timings and speeds (which differ between identical runs)."""
    return [{k: v for k, v in row.items() if "time" not in k and "per_second" not in k} for row in history]


def write_yaml(folder: Path, name: str, value) -> Path:
    """``value`` as YAML in ``folder/name`` (a spec or a config for a test): the path."""
    import yaml

    path = folder / name
    path.write_text(yaml.safe_dump(value))
    return path


# --- checkpoints in the layout of formats 1 and 2 (issue 28) ---------------------------------------------
def to_format_2(info: dict) -> dict:
    """``info`` (a format-3 ``checkpoint.json``) rewritten in place as formats 1 and 2 wrote it: the LR
    schedule's state under ``scheduler``, with ``grad_scaler`` and ``early_stopping`` inside it."""
    scheduler = dict(info.pop("lr_schedule", None) or {})
    for key in ("grad_scaler", "early_stopping"):
        if key in info:
            scheduler[key] = info.pop(key)
    info["scheduler"] = scheduler or None
    info["format_version"] = 2
    return info


def in_format_2(change):
    """``change(info)`` applied after `to_format_2`, for a change written against the format-2 keys."""

    def changed(info: dict) -> None:
        to_format_2(info)
        change(info)

    return changed


# --- hostile inputs that used to hang -------------------------------------------------------------------
class Hung(Exception):
    """Raised by :func:`bounded` when the code under test ran past its time."""


@contextlib.contextmanager
def bounded(seconds: float = 5.0, memory: int = 512 << 20):
    """Fail instead of hanging: ``Hung`` after ``seconds`` (SIGALRM; a blocking ``open`` of a FIFO is
    interrupted too) and ``MemoryError`` past ``memory`` more bytes of address space (an alias bomb
    expanding in C code, ``repr`` or ``json.dumps``, which no signal handler interrupts)."""
    import resource
    import signal

    def expire(signum, frame):
        raise Hung(f"still running after {seconds} s")

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    limit = used + memory if hard == resource.RLIM_INFINITY else min(used + memory, hard)
    previous = signal.signal(signal.SIGALRM, expire)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

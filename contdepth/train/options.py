"""The options of the commands that work on trained runs, as validated dataclasses.

- `Runtime`: what a command reads and writes and what it computes on (run folder, output,
  threads, device, data folder, evaluation batch, quiet); each command takes the fields it uses.
- `Evaluate`: which manifestations to evaluate: one, a scheme x steps grid, or adaptive depth
  (``contdepth eval``, and an experiment spec's ``evaluate`` step, which reads the grid).
- `Compress`: projection onto fewer basis functions and steps, fine-tuning, latency
  (``contdepth compress``, ``compress_run`` and an experiment spec's ``compress`` step).

Why one class each: the command line and a spec read the same options, and with one class
there is one set of bounds (a value is refused in a spec exactly when it is refused as a flag).
Every field carries its help (`contdepth.common.options.option`): the flags are generated from
it. Importing this module imports no torch (``contdepth --help`` reads the fields); the checks
import the registries when they run. Every problem is an `OptionError` naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common.errors import OptionError
from ..common.options import option
from ..common.validate import check_bool, check_int, check_number, check_threads, show
from .config import EVAL_BATCH_SIZE, check_device

#: The grid of ``contdepth eval --table``, ``contdepth analyze`` and a spec's ``evaluate`` step.
DEFAULT_SCHEMES = ("euler", "midpoint", "rk4")
DEFAULT_STEPS = (1, 2, 4, 8, 16)
SPLITS = ("val", "test")
# Fine-tuning epochs of a compression: far above any useful value, and a typo (100000) is refused
# before a run folder is made instead of training for days.
MAX_FINETUNE_EPOCHS = 10_000
# Latency timing: the timed input of one batch is allocated at once (a CIFAR batch of 65,536 is
# 800 MB), and 10,000 timed calls already take minutes for a small model.
MAX_LATENCY_BATCH = 65_536
MAX_LATENCY_REPEATS = 10_000


def _set(options: Any, name: str, value: Any) -> None:
    object.__setattr__(options, name, value)  # a frozen dataclass normalising its own field


# --- checks shared by the classes ---------------------------------------------------------------
def check_scheme(value: object, name: str) -> str:
    """A registered scheme's name (`contdepth.solvers.available_schemes`)."""
    from ..solvers import available_schemes

    if not isinstance(value, str) or value not in available_schemes():
        raise OptionError(name, f"must be one of {', '.join(available_schemes())}; got {value!r}")
    return value


def check_schemes(values: object, name: str) -> tuple[str, ...]:
    """A non-empty list of registered scheme names."""
    from ..solvers import available_schemes

    names = available_schemes()
    if (not isinstance(values, (list, tuple)) or not values
            or not all(isinstance(s, str) and s in names for s in values)):
        raise OptionError(name, f"must be a list of scheme names from {', '.join(names)}; got {values!r}")
    return tuple(values)


def check_counts(values: object, name: str) -> tuple[int, ...]:
    """A non-empty list of step counts, each within `contdepth.models.layers.check_block_size`'s bound."""
    from ..models.layers import check_block_size

    if not isinstance(values, (list, tuple)) or not values:
        raise OptionError(name, f"must be a list of step counts, got {show(values)}")
    return tuple(check_block_size(n, name) for n in values)


def one_or_per_block(value: object, name: str) -> int | tuple[int, ...]:
    """A count for every block (an integer) or one per block (a list); a list of one is its value."""
    from ..models.layers import check_block_size

    if isinstance(value, (list, tuple)):
        if not value:
            raise OptionError(name, "must be an integer, or a list of integers (one per block), got []")
        counts = tuple(check_block_size(v, name) for v in value)
        return counts[0] if len(counts) == 1 else counts
    return check_block_size(value, name)


# --- the classes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Runtime:
    """What a command reads and writes and what it computes on; each command takes the fields it uses.

    The options every command spells the same way: ``--threads``, ``--device``,
    ``--data-dir``, ``--batch-size`` (of evaluation), ``--out``, ``--overwrite``, ``--quiet``.
    A command may say what ``--out`` or ``--quiet`` mean for it (``add_flags`` overrides); their
    checks are the same everywhere. Where ``--out`` is a folder or a file is the command's to check.
    """

    run: str | None = option(None, positional=True, metavar="RUN", help="run directory (or its checkpoint.json)")
    out: str | None = option(None, metavar="DIR", help="where to write")
    overwrite: bool = option(False, help="replace what this command wrote in --out before")
    batch_size: int = option(EVAL_BATCH_SIZE, metavar="N",
                             help="evaluation batch: examples per forward pass (changes only speed and memory); "
                                  "the same default as train --eval-batch-size")
    data_dir: str | None = option(None, metavar="DIR",
                                  help="where the dataset's files are now: a folder (a text run's: one text file or a "
                                       "folder) (default: the run's data_dir)")
    threads: int | None = option(None, metavar="N",
                                 help="torch threads, at most the machine's CPUs (default: torch's setting)")
    device: str = option("cpu", help="cpu, cuda or cuda:N")
    quiet: bool = option(False, help="print less")

    def __post_init__(self) -> None:
        check_int(self.batch_size, "batch_size", low=1)
        check_threads(self.threads)
        check_device(self.device)
        if self.data_dir is not None and not Path(self.data_dir).expanduser().exists():
            raise OptionError("data_dir", f"{self.data_dir} does not exist")  # which kind the data needs: its reader says
        for name in ("overwrite", "quiet"):
            check_bool(getattr(self, name), name)


@dataclass(frozen=True)
class Evaluate:
    """Which manifestations of a trained model to evaluate: one, a scheme x steps grid, or adaptive depth.

    ``contdepth eval`` takes every field but ``splits`` and ``examples``; an experiment spec's
    ``evaluate`` step takes the grid (``schemes``; ``steps``, its key ``n_steps``), ``splits``
    and ``examples`` (`to_dict` writes those keys). A model without ContinuousBlocks is
    evaluated on the grid through its reading as a piecewise-constant ``theta(t)``.
    """

    scheme: str | None = option(None, metavar="SCHEME",
                                help="evaluate with this scheme (default: the trained one; contdepth schemes lists "
                                     "them)")
    n_steps: int | None = option(None, metavar="N", help="evaluate with this many steps per block (default: the "
                                                         "trained ones)")
    table: bool = option(False, help="print a scheme x steps accuracy table (--schemes x --steps)")
    schemes: tuple[str, ...] = option(DEFAULT_SCHEMES, metavar="SCHEME", items=(str, "+"),
                                      help="schemes of the table")
    steps: tuple[int, ...] = option(DEFAULT_STEPS, metavar="N", items=(int, "+"), help="step counts of the table")
    adaptive: bool = option(False, group="adaptive depth (every block integrated with error control)",
                            help="integrate each block with an embedded pair instead of a fixed grid; prints "
                                 "evaluations per block and accuracy for each tolerance")
    rtol: tuple[float, ...] | None = option(None, group="adaptive depth (every block integrated with error control)",
                                            metavar="R", items=(float, "+"),
                                            help="relative tolerance(s); several values give a table (default: 1e-3)")
    atol: tuple[float, ...] | None = option(None, group="adaptive depth (every block integrated with error control)",
                                            metavar="A", items=(float, "+"),
                                            help="absolute tolerance(s): one value, or one per --rtol (default: "
                                                 "rtol / 10)")
    adaptive_scheme: str = option("dopri5", group="adaptive depth (every block integrated with error control)",
                                  help="embedded pair: dopri5 or bosh3")
    splits: tuple[str, ...] | None = option(("test",), flag=False,
                                            help="the splits evaluated, val and/or test; None in a spec: the "
                                                 "validation split where the run holds one out, and test")
    examples: int | None = option(None, flag=False,
                                  help="evaluate only the first N images of each split (the same for every "
                                       "manifestation and run); None: all")

    def __post_init__(self) -> None:
        if self.scheme is not None:
            check_scheme(self.scheme, "scheme")
        if self.n_steps is not None:
            from ..models.layers import check_block_size

            check_block_size(self.n_steps, "n_steps")
        _set(self, "schemes", check_schemes(self.schemes, "schemes"))
        _set(self, "steps", check_counts(self.steps, "steps"))
        for name in ("table", "adaptive"):
            check_bool(getattr(self, name), name)
        for name in ("rtol", "atol"):
            values = getattr(self, name)
            if values is not None:
                if not isinstance(values, (list, tuple)) or not values:
                    raise OptionError(name, f"must be a list of tolerances, got {values!r}")
                _set(self, name, tuple(check_number(v, name, low=0) for v in values))
        if not isinstance(self.adaptive_scheme, str):
            raise OptionError("adaptive_scheme", f"must be a scheme name, got {self.adaptive_scheme!r}")
        if self.splits is not None:
            if (not isinstance(self.splits, (list, tuple)) or not self.splits
                    or not all(isinstance(s, str) and s in SPLITS for s in self.splits)):
                raise OptionError("splits", f"must be a list of val and/or test, got {self.splits!r}")
            _set(self, "splits", tuple(self.splits))
        check_int(self.examples, "examples", low=1, allow_none=True)

    def to_dict(self) -> dict:
        """The grid as a spec writes it (``n_steps`` for ``steps``): part of an experiment's identity."""
        return {"schemes": list(self.schemes), "n_steps": list(self.steps),
                "splits": list(self.splits) if self.splits is not None else None, "examples": self.examples}


@dataclass(frozen=True)
class Compress:
    """Project onto ``n_basis`` functions and ``n_steps`` steps per block, fine-tune, time both.

    ``finetune_epochs`` 0 measures projection only; above 0 the projected-only accuracy is
    measured too, so one step gives both. ``lr`` defaults to a tenth of the run's. ``onnx``
    (experiment specs) also times both models exported to ONNX in ONNX Runtime (the ``onnx`` extra).
    """

    n_basis: int | tuple[int, ...] = option(metavar="K", items=(int, "+"),
                                            help="basis functions per block after compression: one value or one "
                                                 "per block")
    n_steps: int | tuple[int, ...] | None = option(None, metavar="M", items=(int, "+"),
                                                   help="steps per block after compression (default: K)")
    finetune_epochs: int = option(0, metavar="E", help=f"fine-tuning epochs, at most {MAX_FINETUNE_EPOCHS:,}")
    lr: float | None = option(None, help="fine-tuning learning rate (default: the run's lr / 10)")
    latency_batch_sizes: tuple[int, ...] = option((1, 256), metavar="B", items=(int, "*"),
                                                  help="batch sizes of the latency comparison (none: skip it)")
    latency_repeats: int | None = option(None, metavar="N",
                                         help="timed calls per model and batch size (default: 50 up to batch 16, "
                                              "10 above)")
    onnx: bool = option(False, flag=False, help="also time both models exported to ONNX, in ONNX Runtime "
                                                "(experiment specs)")

    def __post_init__(self) -> None:
        _set(self, "n_basis", one_or_per_block(self.n_basis, "n_basis"))
        if self.n_steps is not None:
            _set(self, "n_steps", one_or_per_block(self.n_steps, "n_steps"))
        check_int(self.finetune_epochs, "finetune_epochs", low=0)
        if self.finetune_epochs > MAX_FINETUNE_EPOCHS:
            raise OptionError("finetune_epochs", f"must be at most {MAX_FINETUNE_EPOCHS:,}, got "
                                                 f"{self.finetune_epochs:,}")
        if self.lr is not None:
            _set(self, "lr", check_number(self.lr, "lr", low=0, low_open=True, float32=True))
        sizes = self.latency_batch_sizes
        if not isinstance(sizes, (list, tuple)):
            raise OptionError("latency_batch_sizes", f"must be a list of batch sizes, got {sizes!r}")
        for b in sizes:
            if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_LATENCY_BATCH:
                raise OptionError("latency_batch_sizes", f"every batch size must be an integer in "
                                                         f"1..{MAX_LATENCY_BATCH:,} (the timed input is allocated at "
                                                         f"once), got {b!r}")
        _set(self, "latency_batch_sizes", tuple(sizes))
        if self.latency_repeats is not None:
            check_int(self.latency_repeats, "latency_repeats", low=1, high=MAX_LATENCY_REPEATS)
        check_bool(self.onnx, "onnx")

    def to_dict(self) -> dict:
        """As a spec writes it: part of an experiment's identity."""
        def plain(value: Any) -> Any:
            return list(value) if isinstance(value, tuple) else value

        return {"n_basis": plain(self.n_basis), "n_steps": plain(self.n_steps), "finetune_epochs": self.finetune_epochs,
                "lr": self.lr, "latency_batch_sizes": list(self.latency_batch_sizes),
                "latency_repeats": self.latency_repeats, "onnx": self.onnx}


__all__ = ["DEFAULT_SCHEMES", "DEFAULT_STEPS", "MAX_FINETUNE_EPOCHS", "MAX_LATENCY_BATCH", "MAX_LATENCY_REPEATS",
           "Compress", "Evaluate", "Runtime", "check_counts", "check_scheme", "check_schemes", "one_or_per_block"]

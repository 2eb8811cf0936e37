"""``TrainConfig``: every option of a training run, validated when it is built.

A config comes from keyword arguments, a YAML file (`TrainConfig.from_yaml`), a
plain mapping ([`TrainConfig.from_dict`][contdepth.train.TrainConfig.from_dict]) or all of them layered
([`TrainConfig.from_sources`][contdepth.train.TrainConfig.from_sources]: defaults, then the file, then explicit overrides such as
command-line flags). Every problem is a `ConfigError` whose message starts with the
option's name and, where there is a fixed set, lists the allowed values.

Epochs are **1-based** everywhere: ``epochs=10`` runs epochs 1..10, ``metrics.jsonl`` and the
progress lines number them 1..10, ``refine_at=[3]`` refines *at the start of epoch 3* (after
two completed epochs, before epoch 3's first step) and ``milestones=[8]`` multiplies the
learning rate by ``gamma`` from the start of epoch 8 on (PyTorch's ``MultiStepLR`` with
``milestones=[7]``, stepped once per epoch).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from ..common.errors import OptionError
from ..common.validate import check_bool, check_choice, check_int, check_plain_value
from ..common.yaml_input import dump_yaml, load_yaml_file
# The registries (data, models, solvers) import torch: the functions that validate import them,
# so that reading the fields (``contdepth train --help``) does not load torch.

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")
# Arithmetic of the training steps: fp32, or mixed precision (autocast) to bfloat16 or float16;
# float16 needs a GradScaler (its range is too small for small gradients), bfloat16 does not.
PRECISIONS = ("fp32", "bf16", "fp16")
DECAY_SCOPES = ("all", "model")
# What refinement does with the optimizer state: map it with the refinement's own matrix, or
# start the optimizer afresh (the reference code builds a new SGD after every refinement).
REFINE_OPTIMIZER = ("map", "reset")
# A learning-rate factor per refinement is bounded: past 16x (or below 1/16) a run diverges or stops learning.
MAX_REFINE_LR_SCALE = 16.0
# Options a resumed run may change; every other option must match the run being resumed.
RESUMABLE_CHANGES = ("epochs", "threads", "quiet", "out", "resume", "overwrite", "extend", "device", "data_dir",
                     "eval_batch_size", "tensorboard")


# A bad option: the message starts with the option's name. The same class as
# contdepth.common.OptionError (kept under this name: it is how the training API has always
# spelled it), so every layer's validators raise what the command line answers with exit 2.
ConfigError = OptionError


# --- validators shared by TrainConfig and the other commands' options ----------------------------------
def check_count(value: object, name: str) -> int:
    """A step or basis count: an integer in ``1..block_size_limit(name)`` (far above any useful value).

    Without the upper bound a typo such as ``--n-steps 1000000000`` builds a billion-stage
    schedule and hangs before anything is printed. The bounds are `contdepth.nn.MAX_N_STEPS`
    for step counts and `contdepth.nn.MAX_N_BASIS` for basis sizes, which checkpoints obey too.
    """

    from ..models.layers import block_size_limit

    check_int(value, name, low=1)
    limit = block_size_limit(name)
    if value > limit:
        raise ConfigError(f"{name}: must be at most {limit:,} per block (far above any useful value), "
                          f"got {value:,}")
    return value


def check_device(device: object, name: str = "device", *, available: bool = True) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``; with ``available`` also present on this machine.

    One validator for every command, called before anything is loaded, so that a device
    torch cannot use is an option error and not an ``AssertionError`` from deep inside.
    """
    # isascii: str.isdigit() also passes "²" and other digits int() cannot read (a ValueError traceback later)
    ok = isinstance(device, str) and (device in ("cpu", "cuda") or (device.startswith("cuda:")
                                                                   and device[5:].isascii() and device[5:].isdigit()))
    if not ok:
        raise ConfigError(f"{name}: must be cpu, cuda or cuda:N; got {device!r}")
    if available and device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{name}: {device} requested but CUDA is not available here (torch "
                              f"{torch.__version__}); use cpu")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{name}: {device} requested but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device  # type: ignore[return-value]


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists: a file there means nothing below it can be created."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_path(path: str | Path, name: str = "out", *, folder: bool) -> Path:
    """Refuse an output path that cannot be created, before any work.

    ``path`` is a folder to create (``folder=True``) or a file to write; it must not exist as
    the other kind, and its nearest existing ancestor must be a writable folder (a regular
    file there would otherwise surface as ``NotADirectoryError`` after the data loaded).
    """
    path = Path(path).expanduser()
    if path.exists():
        if folder and not path.is_dir():
            raise ConfigError(f"{name}: {path} exists and is not a folder")
        if not folder and path.is_dir():
            raise ConfigError(f"{name}: {path} is a folder; give the path of a file to write")
    ancestor = path if folder and path.is_dir() else nearest_existing(path.absolute().parent)
    if not ancestor.is_dir():
        raise ConfigError(f"{name}: {path} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}: {path} cannot be created: the folder {ancestor} is not writable")
    return path


#: The model name of a run whose model is the user's own module (``train(config, model=MyNet())``):
#: contdepth cannot rebuild it by name, so loading such a run needs an instance (``load_checkpoint(run, model=...)``).
CUSTOM_MODEL = "custom"


def check_model_data(model: str, data: str) -> None:
    """A graph model needs a graph dataset and an image model an image dataset (from the names alone)."""
    if model == CUSTOM_MODEL:  # the user's module: the dataset decides the task
        return
    from ..data import available_datasets, is_graph_dataset
    from ..models import available_models, is_graph_model

    graph_model, graph_data = is_graph_model(model), is_graph_dataset(data)
    if graph_model == graph_data:
        return
    graphs = [d for d in available_datasets() if is_graph_dataset(d)]
    images = [d for d in available_datasets() if not is_graph_dataset(d)]
    if graph_model:
        raise ConfigError(f"model: {model} is a graph model (node classification); data {data!r} is an image dataset. "
                          f"Graph datasets: {', '.join(graphs)}")
    graph_models = [m for m in available_models() if is_graph_model(m)]
    raise ConfigError(f"model: {model} is an image model; data {data!r} is a graph dataset (node classification), "
                      f"for the graph models {', '.join(graph_models)}. Image datasets: {', '.join(images)}")


def option(default: Any = MISSING, *, help: str, group: str, default_factory: Any = MISSING,
           metavar: str | tuple[str, ...] | None = None, flag: bool = True, items: tuple[type, Any] | None = None,
           choices: tuple[str, ...] | None = None, listing: Callable[[], str] | None = None) -> Any:
    """A [`TrainConfig`][contdepth.train.TrainConfig] field with its help: the one source of ``contdepth train --help``.

    Args:
        help: what the option means (one or two sentences; the default is added by the CLI).
        group: the ``--help`` section (``model and data``, ``optimisation``, ``continuous
            depth``, ``graph data``, ``run``).
        metavar: the value's name in ``--help``.
        flag: ``False`` for options the command line spells differently (``model_options``
            is given as ``--model-option KEY=VALUE`` and the model flags).
        items: for a tuple option, ``(item type, nargs)`` on the command line.
        choices: the values ``--help`` lists and the parser accepts.
        listing: names the allowed values from their registry, appended to ``help`` when it is
            read (`TrainConfig.help_text`), so that models registered later (plugins,
            ``--import``) are listed too; it must not import torch (``contdepth train --help``).
    """
    metadata = {"help": help, "group": group, "metavar": metavar, "flag": flag, "items": items, "choices": choices,
                "listing": listing}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _model_listing() -> str:
    """The registry's models, image and graph apart (the registry names them without importing torch)."""
    from ..models.registry import available_models

    return (f"image models: {', '.join(available_models(graph=False))}; "
            f"graph models: {', '.join(available_models(graph=True))}")


OPTION_GROUPS = ("model and data", "optimisation", "continuous depth", "graph data", "run")


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run (see the module docstring for epoch numbering).

    Each field carries its help text (`option`, [`help_text`][contdepth.train.TrainConfig.help_text]): the command line
    generates its ``train`` flags, help and defaults from these fields, so the three cannot
    drift apart. Construction validates every option (`ConfigError` names it).
    """

    # --- model and data ---
    model: str = option("continuousnet", group="model and data", listing=_model_listing,
                        help="model name (contdepth.models.available_models(); your own: "
                             "contdepth.models.register_model)")
    model_options: dict = option(default_factory=dict, group="model and data", flag=False,
                                 help="keyword options of the model (alpha, n_basis, basis, scheme, n_steps, norm ...); "
                                      "in_channels and num_classes (and image_size where a model takes it) come from "
                                      "the dataset")
    data: str = option("digits", group="model and data",
                       help="dataset: digits, fashion_mnist, mnist, cifar10, cifar100; graphs (full-batch node "
                            "classification): karate, cora")
    data_dir: str | None = option(None, group="model and data", metavar="DIR",
                                  help="folder holding the dataset's files (default: the dataset's own)")
    data_options: dict = option(default_factory=dict, group="model and data", flag=False,
                                help="keyword options of the dataset loader (test_fraction ...)")
    split_seed: int = option(0, group="model and data",
                             help="seed of the train/test split (datasets without an official one, such as digits) "
                                  "and of the validation draw; apart from --seed, so every seed is evaluated on the "
                                  "same images")
    validation_size: int = option(0, group="model and data", metavar="N",
                                  help="hold out this many train images (drawn by --split-seed) as a validation split, "
                                       "evaluated every epoch (val_loss, val_accuracy); choose settings on it, report "
                                       "the test split; 0: none")
    train_size: int | None = option(None, group="model and data", metavar="N",
                                    help="train on only this many of the remaining train images, drawn by --split-seed "
                                         "(default: all)")
    # --- optimisation ---
    epochs: int = option(10, group="optimisation", metavar="N", help="training epochs, numbered from 1")
    batch_size: int = option(128, group="optimisation", metavar="N",
                             help="training batch (the global batch under torchrun; unused by graph runs)")
    eval_batch_size: int = option(500, group="optimisation", metavar="N",
                                  help="batch of the evaluations (changes only speed)")
    optimizer: str = option("sgd", group="optimisation",
                            help="sgd (momentum, nesterov; coupled L2 weight decay), adam (betas, eps; coupled), "
                                 "adamw (betas, eps; decoupled weight decay) or rmsprop (eps; smoothing 0.99, coupled)")
    lr: float = option(0.1, group="optimisation", help="base learning rate")
    momentum: float = option(0.9, group="optimisation", help="SGD momentum")
    nesterov: bool = option(False, group="optimisation", help="Nesterov momentum (SGD)")
    betas: tuple = option((0.9, 0.999), group="optimisation", metavar=("BETA1", "BETA2"), items=(float, 2),
                          help="Adam/AdamW betas")
    eps: float = option(1e-8, group="optimisation", help="Adam/AdamW/RMSprop epsilon")
    weight_decay: float = option(5e-4, group="optimisation",
                                 help="L2 weight decay (see --decay-norm-and-bias, --decay-scope)")
    decay_norm_and_bias: bool = option(False, group="optimisation",
                                       help="also decay biases and normalisation scales and shifts (every parameter "
                                            "that is 0- or 1-dimensional in the network using it; per template "
                                            "parameter inside a ContinuousBlock); default: exempt them")
    decay_scope: str = option("all", group="optimisation", choices=DECAY_SCOPES,
                              help="all (the rule of --decay-norm-and-bias) or model: exactly the model's "
                                   "weight_decay_parameters() (graph models: the first layer, as Kipf & Welling)")
    schedule: str = option("cosine", group="optimisation",
                           help="constant, step (lr * gamma**k after the k-th milestone) or cosine (per step from lr "
                                "down to --min-lr at the end of the run)")
    milestones: tuple = option((), group="optimisation", metavar="EPOCH", items=(int, "*"),
                               help="step schedule: lr *= gamma from the start of each of these epochs (1-based)")
    gamma: float = option(0.1, group="optimisation", help="step schedule factor")
    warmup_epochs: float = option(0.0, group="optimisation", metavar="E",
                                  help="linear warm-up from lr / warmup_steps to lr over this many epochs (may be "
                                       "fractional), before any schedule")
    min_lr: float = option(0.0, group="optimisation", help="final learning rate of the cosine schedule")
    label_smoothing: float = option(0.0, group="optimisation", help="cross-entropy label smoothing, in [0, 1)")
    # --- continuous depth ---
    refine_at: tuple = option((), group="continuous depth", metavar="EPOCH", items=(int, "*"),
                              help="refine every ContinuousBlock at the start of these epochs (1-based): basis and "
                                   "steps doubled, the function unchanged; the optimizer state as --refine-optimizer "
                                   "says")
    refine_optimizer: str = option("map", group="continuous depth", choices=REFINE_OPTIMIZER,
                                   help="the optimizer state at --refine-at: map (momentum and moments refined with the "
                                        "same matrix, training continues smoothly) or reset (every parameter's state "
                                        "dropped, a fresh optimizer: what the ContinuousNet reference code does)")
    refine_lr_scale: float = option(1.0, group="continuous depth", metavar="FACTOR",
                                    help="multiply the learning rate by this at each --refine-at (cumulative, every "
                                         "parameter): a child cell's gradient is about half its parent's, so 2 keeps "
                                         "the blocks' step in function space; 1 leaves the schedule as it is")
    eval_scheme: str | None = option(None, group="continuous depth", metavar="SCHEME",
                                     help="scheme of the per-epoch evaluation (default: the training one)")
    eval_n_steps: int | None = option(None, group="continuous depth", metavar="N",
                                      help="steps per block of the per-epoch evaluation (default: the training ones)")
    # --- graph data ---
    patience: int | None = option(None, group="graph data", metavar="EPOCHS",
                                  help="stop after this many epochs without a better validation accuracy (ties broken "
                                       "by validation loss); the best-validation weights are kept either way; image "
                                       "datasets refuse it (default: run every epoch)")
    # --- run ---
    seed: int = option(0, group="run",
                       help="seed of the initialisation, data order, augmentation and any randomness in the model; "
                            "the same seed and thread count give bitwise identical runs on CPU")
    out: str | None = option(None, group="run", metavar="DIR",
                             help="run directory: checkpoints, metrics.jsonl, config.yaml (default: nothing written)")
    threads: int | None = option(None, group="run", metavar="N",
                                 help="torch.set_num_threads for the run (default: torch's setting)")
    device: str = option("cpu", group="run", help="cpu, cuda or cuda:N (bitwise determinism is promised on CPU)")
    precision: str = option("fp32", group="run", choices=PRECISIONS,
                            help="fp32; bf16 (mixed precision: autocast to bfloat16); fp16 (autocast to float16 "
                                 "with a GradScaler, whose state the checkpoints keep): for GPUs, where it is faster")
    channels_last: bool = option(False, group="run",
                                 help="keep the model's 4-D weights and the image batches in the channels_last memory "
                                      "format (faster convolutions on GPUs with tensor cores; refused on CPU)")
    compile: bool = option(False, group="run",
                           help="torch.compile the model's training steps (the first steps compile; evaluation "
                                "runs eagerly; for GPUs, where kernel launches dominate a small model)")
    quiet: bool = option(False, group="run", help="no progress bars, epoch lines or summary")
    tensorboard: bool = option(False, group="run",
                               help="also log each epoch's metrics to OUT/tensorboard for TensorBoard (needs the "
                                    "tensorboard package: pip install 'contdepth[tb]'; metrics.jsonl stays the record)")
    overwrite: bool = option(False, group="run",
                             help="replace the run files of an existing --out (unrelated files are kept)")
    resume: bool = option(False, group="run",
                          help="continue the run in --out from its last checkpoint, exactly: the epochs, and so the "
                               "learning-rate schedule, stay the run's")
    extend: bool = option(False, group="run",
                          help="with --resume: allow a different --epochs; the schedule is recomputed for the new "
                               "length (a cosine schedule is stretched) and the run says what changes")

    @classmethod
    def help_text(cls, name: str) -> str:
        """The help of option ``name`` (what ``contdepth train --help`` shows, without the default)."""
        for f in fields(cls):
            if f.name == name:
                listing = f.metadata["listing"]
                return f.metadata["help"] + (f"; {listing()}" if listing is not None else "")
        raise ConfigError(f"{name}: not an option; allowed: {', '.join(cls.option_names())}")

    @classmethod
    def default_of(cls, name: str) -> Any:
        """The default value of option ``name``."""
        for f in fields(cls):
            if f.name == name:
                return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        raise ConfigError(f"{name}: not an option; allowed: {', '.join(cls.option_names())}")

    def __post_init__(self) -> None:
        _validate(self)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> "TrainConfig":
        """Build from a mapping with the field names as keys; unknown keys are errors."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: expected a mapping of option names to values, got {type(values).__name__}")
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(values) - set(cls.option_names()))
        if unknown:
            raise ConfigError(
                f"{unknown[0]}: not an option (in {source}); allowed: {', '.join(cls.option_names())}"
            )
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_yaml(path), source=str(path))

    @classmethod
    def from_sources(cls, file: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                     base: "TrainConfig | None" = None) -> "TrainConfig":
        """Layer ``base`` (or the defaults), the YAML ``file`` and ``overrides``, later wins.

        ``model_options`` and ``data_options`` are merged key by key (an override of
        ``alpha`` keeps the file's ``n_basis``); every other option is replaced.
        """
        merged: dict[str, Any] = base.to_dict() if base is not None else {}
        layers = []
        if file is not None:
            layers.append(({str(k).replace("-", "_"): v for k, v in read_yaml(file).items()}, str(file)))
        if overrides:
            layers.append(({str(k).replace("-", "_"): v for k, v in overrides.items()}, "overrides"))
        for layer, source in layers:
            unknown = sorted(set(layer) - set(cls.option_names()))
            if unknown:
                raise ConfigError(f"{unknown[0]}: not an option (in {source}); allowed: {', '.join(cls.option_names())}")
            for key, value in layer.items():
                if key in ("model_options", "data_options") and isinstance(value, Mapping):
                    previous = merged.get(key) or {}
                    merged[key] = {**(previous if isinstance(previous, Mapping) else {}), **value}
                else:
                    merged[key] = value
        return cls.from_dict(merged, source=str(file) if file is not None else "config")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready: tuples become lists."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = _plain(value)
            out[f.name] = value
        return out

    def to_yaml(self) -> str:
        """The config as YAML that `read_yaml` reads back as it is (`contdepth.common.dump_yaml`)."""
        return dump_yaml(self.to_dict(), sort_keys=False, default_flow_style=None)


def read_yaml(path: str | Path, what: str = "a training config") -> dict[str, Any]:
    """A YAML mapping from ``path``, through the one YAML reader (`contdepth.common.load_yaml_file`).

    So a FIFO, an alias bomb, a 10,000-level document, a date or a ``!!python`` tag is one
    line naming the file, and no Python object is ever built. ``what`` names the file's role
    in errors (``"an experiment spec"``).
    """
    path = Path(path)
    values = load_yaml_file(path, what)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: must hold a mapping of names to values ({what}), got {type(values).__name__}")
    return values


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --- validation -------------------------------------------------------------------------
def _set(config: TrainConfig, name: str, value: Any) -> None:
    object.__setattr__(config, name, value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The option checks of a TrainConfig: the common validator family (contdepth.common.validate)
# applied to a field by name.
def _int(config: TrainConfig, name: str, minimum: int | None = None, optional: bool = False) -> None:
    check_int(getattr(config, name), name, low=minimum, allow_none=optional)


def _seed(config: TrainConfig, name: str) -> None:
    """A seed in ``0..2**63 - 1``: what ``torch.manual_seed`` accepts (2**64 and up overflow inside it)."""
    value = getattr(config, name)
    if not _is_int(value) or not 0 <= value < 2**63:
        raise OptionError(name, f"must be an integer in 0..2**63-1, got {value!r}")


def _float(config: TrainConfig, name: str, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}")
    ok = True
    if low is not None:
        ok &= value > low if low_open else value >= low
    if high is not None:
        ok &= value < high if high_open else value <= high
    if not ok and high is None:
        raise ConfigError(f"{name}: must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{'-inf' if low is None else f'{low:g}'}, {high:g}{right}"
        raise ConfigError(f"{name}: must lie in {interval}, got {value!r}")
    _set(config, name, float(value))


# The largest float32: the optimizers multiply the (float32) parameters and gradients by lr, eps and
# weight_decay as scalars of the parameters' type, and torch refuses a scalar past it mid-step
# ("value cannot be converted to type float without overflow").
FLOAT32_MAX = 3.4028234663852886e38


def _float32(config: TrainConfig, name: str) -> None:
    """An optimizer hyperparameter the parameters' float32 arithmetic can hold (checked after `_float`)."""
    value = getattr(config, name)
    if value > FLOAT32_MAX:
        raise ConfigError(f"{name}: must be at most {FLOAT32_MAX:.4g}, the largest float32 (the type the optimizer "
                          f"computes in), got {value!r}")


def _bool(config: TrainConfig, name: str) -> None:
    check_bool(getattr(config, name), name)


def _choice(config: TrainConfig, name: str, allowed: tuple[str, ...] | list[str]) -> None:
    check_choice(getattr(config, name), name, allowed)


def _epoch_list(config: TrainConfig, name: str, upper: int | None) -> None:
    value = getattr(config, name)
    if value is None:
        value = ()
    if _is_int(value):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
        raise ConfigError(f"{name}: must be a list of epoch numbers (integers), got {value!r}")
    value = tuple(value)
    if any(v < 1 for v in value):
        raise ConfigError(f"{name}: epochs are numbered from 1, got {list(value)}")
    late = [v for v in value if upper is not None and v > upper]
    if late:
        flag = "--" + name.replace("_", "-")
        raise ConfigError(
            f"{name}: every epoch must be in 1..epochs={upper}, got {list(value)} (epoch {late[0]} is after the last "
            f"one); pass {flag} with no value to clear it ({name}: [] in YAML), or give epochs up to {upper}"
        )
    if list(value) != sorted(set(value)):
        raise ConfigError(f"{name}: epochs must be strictly increasing (no repeats), got {list(value)}")
    _set(config, name, value)


def _validate(c: TrainConfig) -> None:
    from ..data import available_datasets, is_graph_dataset
    from ..models import available_models, model_options
    from ..solvers import available_schemes

    if not isinstance(c.model, str):
        raise ConfigError(f"model: must be a model name; allowed: {', '.join(available_models())}")
    if c.model != CUSTOM_MODEL:
        _choice(c, "model", available_models())
    if c.model_options is None:
        _set(c, "model_options", {})
    if not isinstance(c.model_options, Mapping):
        raise ConfigError(f"model_options: must be a mapping of option names to values, got {c.model_options!r}")
    check_plain_value(c.model_options, "model_options")  # stored as JSON; bounded before _plain walks it
    _set(c, "model_options", _plain(dict(c.model_options)))
    if c.model == CUSTOM_MODEL:
        if c.model_options:
            raise ConfigError(f"model_options: a {CUSTOM_MODEL!r} model is your own module, built by you; it takes no "
                              f"model_options, got {sorted(c.model_options)}")
        accepted = {}
    else:
        accepted = model_options(c.model)
    unknown = sorted(set(c.model_options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"model_options.{unknown[0]}: not an option of model {c.model!r}; allowed: {', '.join(sorted(accepted))}"
        )
    missing = [k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in c.model_options
               and k not in ("in_channels", "num_classes", "in_features", "num_nodes")]
    if missing:
        raise ConfigError(f"model_options.{missing[0]}: required by model {c.model!r}")

    if not isinstance(c.data, str):
        raise ConfigError(f"data: must be a dataset name; allowed: {', '.join(available_datasets())}")
    canonical = c.data.strip().lower().replace("-", "_")
    if canonical not in available_datasets():
        raise ConfigError(f"data: must be one of {', '.join(available_datasets())}; got {c.data!r}")
    if c.data_dir is not None:
        if not isinstance(c.data_dir, (str, Path)):
            raise ConfigError(f"data_dir: must be a folder path or null, got {c.data_dir!r}")
        _set(c, "data_dir", str(c.data_dir))
    if c.data_options is None:
        _set(c, "data_options", {})
    if not isinstance(c.data_options, Mapping):
        raise ConfigError(f"data_options: must be a mapping of option names to values, got {c.data_options!r}")
    check_plain_value(c.data_options, "data_options")
    _set(c, "data_options", _plain(dict(c.data_options)))
    _seed(c, "split_seed")
    _int(c, "validation_size", 0)
    _int(c, "train_size", 1, optional=True)

    if (c.validation_size or c.train_size is not None) and is_graph_dataset(canonical):
        name = "validation_size" if c.validation_size else "train_size"
        raise ConfigError(f"{name}: {c.data!r} is a graph dataset with its own train/validation/test node split; "
                          "leave it unset")

    _int(c, "epochs", 1)
    _int(c, "batch_size", 1)
    _int(c, "eval_batch_size", 1)
    _choice(c, "optimizer", OPTIMIZERS)
    _float(c, "lr", 0.0, low_open=True)
    _float32(c, "lr")
    _float(c, "momentum", 0.0, 1.0, high_open=True)
    _bool(c, "nesterov")
    if c.nesterov and (c.optimizer != "sgd" or c.momentum == 0):
        raise ConfigError("nesterov: needs optimizer sgd with momentum > 0")
    betas = c.betas
    if (not isinstance(betas, (list, tuple)) or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"betas: must be two numbers in [0, 1), got {betas!r}")
    _set(c, "betas", tuple(float(b) for b in betas))
    _float(c, "eps", 0.0, low_open=True)
    _float32(c, "eps")
    _float(c, "weight_decay", 0.0)
    _float32(c, "weight_decay")
    _bool(c, "decay_norm_and_bias")
    _choice(c, "decay_scope", DECAY_SCOPES)
    if c.decay_scope == "model" and c.decay_norm_and_bias:
        raise ConfigError("decay_norm_and_bias: has no effect with decay_scope 'model' (the model chooses what "
                          "is decayed); leave it false")
    _choice(c, "schedule", SCHEDULES)
    _epoch_list(c, "milestones", c.epochs)
    if c.milestones and c.schedule != "step":
        raise ConfigError(f"milestones: only used by schedule step (schedule is {c.schedule!r})")
    _float(c, "gamma", 0.0, 1.0, low_open=True)
    _float(c, "warmup_epochs", 0.0)
    if c.warmup_epochs > c.epochs:
        raise ConfigError(f"warmup_epochs: must not exceed epochs={c.epochs}, got {c.warmup_epochs}; pass a shorter "
                          "--warmup-epochs (0: no warm-up) or more --epochs")
    _float(c, "min_lr", 0.0)
    if c.min_lr >= c.lr:
        raise ConfigError(f"min_lr: must be below lr={c.lr}, got {c.min_lr}")
    _float(c, "label_smoothing", 0.0, 1.0, high_open=True)
    _epoch_list(c, "refine_at", c.epochs)
    _choice(c, "refine_optimizer", REFINE_OPTIMIZER)
    _float(c, "refine_lr_scale", 1.0 / MAX_REFINE_LR_SCALE, MAX_REFINE_LR_SCALE)
    if c.refine_lr_scale != 1.0 and not c.refine_at:
        raise ConfigError(f"refine_lr_scale: {c.refine_lr_scale} has no effect without refine_at; leave it 1")
    if c.refine_optimizer != "map" and not c.refine_at:
        raise ConfigError(f"refine_optimizer: {c.refine_optimizer!r} has no effect without refine_at; leave it 'map'")
    if c.eval_scheme is not None:
        if not isinstance(c.eval_scheme, str) or c.eval_scheme not in available_schemes():
            raise ConfigError(f"eval_scheme: must be one of {', '.join(available_schemes())} or null; got {c.eval_scheme!r}")
    _int(c, "eval_n_steps", 1, optional=True)
    if c.eval_n_steps is not None:
        check_count(c.eval_n_steps, "eval_n_steps")
    _int(c, "patience", 1, optional=True)

    _seed(c, "seed")
    if c.out is not None:
        if not isinstance(c.out, (str, Path)) or not str(c.out):
            raise ConfigError(f"out: must be a folder path or null, got {c.out!r}")
        _set(c, "out", str(Path(c.out).expanduser()))  # one path for the checks and the writes (issue 26)
    _int(c, "threads", 1, optional=True)
    check_device(c.device, available=False)  # a saved config names its device; whether it exists here is preflight's
    for name in ("quiet", "overwrite", "resume", "extend", "channels_last", "compile"):
        _bool(c, name)
    _choice(c, "precision", PRECISIONS)
    if c.extend and not c.resume:
        raise ConfigError("extend: only applies with resume (it lets a resumed run change its epochs)")
    if c.overwrite and c.resume:
        raise ConfigError("overwrite: cannot be combined with resume (one keeps the run, the other replaces it)")
    if c.resume and c.out is None:
        raise ConfigError("resume: needs out, the run directory to continue")

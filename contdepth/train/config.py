"""``TrainConfig``: every option of a training run, validated when it is built.

A config comes from keyword arguments, a YAML file (:meth:`TrainConfig.from_yaml`), a
plain mapping (:meth:`TrainConfig.from_dict`) or all of them layered
(:meth:`TrainConfig.from_sources`: defaults, then the file, then explicit overrides such as
command-line flags). Every problem is a :class:`ConfigError` whose message starts with the
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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")
DECAY_SCOPES = ("all", "model")
# Options a resumed run may change; every other option must match the run being resumed.
RESUMABLE_CHANGES = ("epochs", "threads", "quiet", "out", "resume", "overwrite", "extend", "device", "data_dir",
                     "eval_batch_size")


class ConfigError(ValueError):
    """A bad option: the message starts with the option's name."""


# --- validators shared by TrainConfig and the other commands' options ----------------------------------
def check_count(value: object, name: str) -> int:
    """A step or basis count: an integer in ``1..block_size_limit(name)`` (far above any useful value).

    Without the upper bound a typo such as ``--n-steps 1000000000`` builds a billion-stage
    schedule and hangs before anything is printed. The bounds are :data:`contdepth.nn.MAX_N_STEPS`
    for step counts and :data:`contdepth.nn.MAX_N_BASIS` for basis sizes, which checkpoints obey too.
    """
    from ..models.layers import block_size_limit

    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: must be an integer >= 1, got {value!r}")
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
    ok = isinstance(device, str) and (device in ("cpu", "cuda") or (device.startswith("cuda:")
                                                                   and device[5:].isdigit()))
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


def check_model_data(model: str, data: str) -> None:
    """A graph model needs a graph dataset and an image model an image dataset (from the names alone)."""
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


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run (see the module docstring for epoch numbering).

    Model and data:
        model: a name from ``contdepth.models.available_models()``.
        model_options: keyword options of that model (``alpha``, ``n_basis``, ``basis``,
            ``scheme``, ``n_steps``, ``norm`` ...). ``in_channels`` and ``num_classes`` (and
            ``image_size`` where a model takes it) are filled in from the dataset.
        data: a name from ``contdepth.data.available_datasets()``.
        data_dir: where the dataset's files are (``None``: the dataset's default).
        data_options: extra keyword options of the dataset loader (``test_fraction`` ...).
        split_seed: seed of the train/test split for datasets without an official one
            (digits) and of the validation draw; kept apart from ``seed`` so that runs
            with different seeds are evaluated on the same test and validation images.
        validation_size: image datasets: hold out this many train images (a random draw
            by ``split_seed``) as a validation split, evaluated every epoch beside the
            test split (``val_loss``, ``val_accuracy``). Settings are chosen on it; the
            test accuracy is only reported. 0: no validation split.
        train_size: image datasets: train on only this many of the (remaining) train
            images, an equally random draw by ``split_seed``; ``None``: all of them.

    Optimisation:
        epochs, batch_size, eval_batch_size: sizes (``eval_batch_size`` only changes speed).
        optimizer: ``sgd`` (with ``momentum``, ``nesterov``; coupled L2 weight decay added
            to the gradient), ``adam`` (``betas``, ``eps``; coupled L2 weight decay, what
            the GCN baselines use), ``adamw`` (``betas``, ``eps``; decoupled weight decay) or
            ``rmsprop`` (``eps``; smoothing 0.99, no momentum, coupled L2 weight decay: the
            torch defaults, which the CGNN authors train with).
        lr, weight_decay: base learning rate and weight decay.
        decay_norm_and_bias: ``False`` (default) exempts biases and normalisation
            scales/shifts (every parameter that is 0- or 1-dimensional in the network that
            uses it, i.e. per *template* parameter for a ContinuousBlock's coefficients) from
            weight decay, the usual practice; ``True`` decays every parameter.
        decay_scope: ``all`` (default: the rule above) or ``model``: decay exactly the
            model's ``weight_decay_parameters()``, its reference setup's convention (the
            graph models: the first layer, as Kipf & Welling).
        schedule: ``constant``, ``step`` (``lr * gamma**k`` after the k-th of ``milestones``)
            or ``cosine`` (per step from ``lr`` down to ``min_lr`` at the end of the run).
        warmup_epochs: linear warm-up from ``lr / warmup_steps`` to ``lr`` over this many
            epochs (may be fractional), before any schedule.
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.

    Continuous depth:
        refine_at: epochs (1-based) at whose start every ContinuousBlock is refined (basis
            and steps doubled, function unchanged) and the optimizer state mapped with the
            same matrix.
        eval_scheme, eval_n_steps: the manifestation used for the per-epoch test
            evaluation (``None``: the training manifestation).

    Graph data (full-batch node classification, :mod:`contdepth.train.node`):
        patience: stop after this many epochs without a better validation accuracy
            (ties broken by validation loss); ``None``: run all epochs. Graph runs always
            keep and return the best-validation weights; datasets without a validation
            split (the image ones) reject it. ``batch_size`` and ``eval_batch_size`` are
            unused there (the graph is one batch; an epoch is one optimizer step).

    Run:
        seed: seeds the initialisation, the data order/augmentation and any randomness
            inside the model; the same seed (and thread count) gives bitwise-identical runs.
        out: run directory (``None``: nothing is written).
        threads: ``torch.set_num_threads`` for the run (``None``: leave torch's setting).
        device: ``cpu`` or ``cuda`` / ``cuda:N`` (bitwise determinism is promised on CPU).
        quiet: no progress bars, epoch lines or summary.
        overwrite: replace the run files in an existing ``out`` (unrelated files are kept).
        resume: continue the run in ``out`` from its last checkpoint, exactly: the
            epochs, and so the learning-rate schedule, stay the run's.
        extend: with ``resume``, allow ``epochs`` to differ from the run's. The schedule is
            then recomputed for the new length (a cosine schedule is stretched, so the
            learning rate changes from where it was); the run announces what changes.
    """

    model: str = "continuousnet"
    model_options: dict = field(default_factory=dict)
    data: str = "digits"
    data_dir: str | None = None
    data_options: dict = field(default_factory=dict)
    split_seed: int = 0
    validation_size: int = 0
    train_size: int | None = None
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 500
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = False
    decay_scope: str = "all"
    schedule: str = "cosine"
    milestones: tuple = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    refine_at: tuple = ()
    eval_scheme: str | None = None
    eval_n_steps: int | None = None
    patience: int | None = None
    seed: int = 0
    out: str | None = None
    threads: int | None = None
    device: str = "cpu"
    quiet: bool = False
    overwrite: bool = False
    resume: bool = False
    extend: bool = False

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
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` (``yaml.safe_load``: no Python objects are constructed)."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")  # YAML is UTF-8 whatever the locale says
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"config: {path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config: {path} must hold a mapping of option names to values, got {type(values).__name__}")
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


def _int(config: TrainConfig, name: str, minimum: int | None = None, optional: bool = False) -> None:
    value = getattr(config, name)
    if optional and value is None:
        return
    if not _is_int(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"{name}: must be an integer{bound}{' or null' if optional else ''}, got {value!r}")


def _seed(config: TrainConfig, name: str) -> None:
    """A seed in ``0..2**63 - 1``: what ``torch.manual_seed`` accepts (2**64 and up overflow inside it)."""
    value = getattr(config, name)
    if not _is_int(value) or not 0 <= value < 2**63:
        raise ConfigError(f"{name}: must be an integer in 0..2**63-1, got {value!r}")


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


def _bool(config: TrainConfig, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: must be true or false, got {value!r}")


def _choice(config: TrainConfig, name: str, allowed: tuple[str, ...] | list[str]) -> None:
    value = getattr(config, name)
    if value not in allowed:
        raise ConfigError(f"{name}: must be one of {', '.join(allowed)}; got {value!r}")


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
    from ..data import available_datasets
    from ..models import available_models, model_options
    from ..solvers import available_schemes

    if not isinstance(c.model, str):
        raise ConfigError(f"model: must be a model name; allowed: {', '.join(available_models())}")
    _choice(c, "model", available_models())
    if c.model_options is None:
        _set(c, "model_options", {})
    if not isinstance(c.model_options, Mapping):
        raise ConfigError(f"model_options: must be a mapping of option names to values, got {c.model_options!r}")
    _set(c, "model_options", _plain(dict(c.model_options)))
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
    _set(c, "data_options", _plain(dict(c.data_options)))
    _seed(c, "split_seed")
    _int(c, "validation_size", 0)
    _int(c, "train_size", 1, optional=True)
    from ..data import is_graph_dataset

    if (c.validation_size or c.train_size is not None) and is_graph_dataset(canonical):
        name = "validation_size" if c.validation_size else "train_size"
        raise ConfigError(f"{name}: {c.data!r} is a graph dataset with its own train/validation/test node split; "
                          "leave it unset")

    _int(c, "epochs", 1)
    _int(c, "batch_size", 1)
    _int(c, "eval_batch_size", 1)
    _choice(c, "optimizer", OPTIMIZERS)
    _float(c, "lr", 0.0, low_open=True)
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
    _float(c, "weight_decay", 0.0)
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
        _set(c, "out", str(c.out))
    _int(c, "threads", 1, optional=True)
    check_device(c.device, available=False)  # a saved config names its device; whether it exists here is preflight's
    for name in ("quiet", "overwrite", "resume", "extend"):
        _bool(c, name)
    if c.extend and not c.resume:
        raise ConfigError("extend: only applies with resume (it lets a resumed run change its epochs)")
    if c.overwrite and c.resume:
        raise ConfigError("overwrite: cannot be combined with resume (one keeps the run, the other replaces it)")
    if c.resume and c.out is None:
        raise ConfigError("resume: needs out, the run directory to continue")

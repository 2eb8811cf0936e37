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
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from ..common.errors import OptionError
from ..common.json_values import to_json_value
from ..common.options import option  # noqa: F401  (the field helper of TrainConfig, and of every command's options)
from ..common.yaml_input import dump_yaml, load_yaml_file
# What a valid config is (and the checks other commands share) lives in config_checks; the names
# stay importable from here, where they always were.
from .config_checks import (  # noqa: F401
    CUSTOM_MODEL,
    DECAY_SCOPES,
    GROW_LR,
    GROW_METHODS,
    MAX_REFINE_LR_SCALE,
    OPTIMIZERS,
    PRECISIONS,
    REFINE_OPTIMIZER,
    SCHEDULES,
    check_device,
    check_model_data,
    check_output_path,
    nearest_existing,
    validate_config,
)

# Evaluation batch of every command that evaluates (train's per-epoch evaluation, eval, analyze,
# compress, an experiment's steps): it changes only speed and memory, so one value, chosen once.
EVAL_BATCH_SIZE = 500
# Options a resumed run may change; every other option must match the run being resumed.
RESUMABLE_CHANGES = ("epochs", "max_steps", "threads", "quiet", "out", "resume", "overwrite", "extend", "device", "data_dir",
                     "eval_batch_size", "tensorboard")


# A bad option: the message starts with the option's name. The same class as
# contdepth.common.OptionError (kept under this name: it is how the training API has always
# spelled it), so every layer's validators raise what the command line answers with exit 2.
ConfigError = OptionError


def _model_listing() -> str:
    """The registry's models, image and graph apart (the registry names them without importing torch)."""
    from ..models.registry import available_models

    return (f"image models: {', '.join(available_models(kind='image'))}; "
            f"graph models: {', '.join(available_models(kind='graph'))}; "
            f"text models: {', '.join(available_models(kind='text'))}")


OPTION_GROUPS = ("model and data", "optimisation", "continuous depth", "growth", "graph data", "text data", "run")


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
                            "classification): karate, cora; text (next-byte prediction, for gpt): text")
    data_dir: str | None = option(None, group="model and data", metavar="DIR",
                                  help="folder holding the dataset's files (default: the dataset's own); for text: "
                                       "a UTF-8 file or a folder of .txt files")
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
    eval_batch_size: int = option(EVAL_BATCH_SIZE, group="optimisation", metavar="N",
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
    grad_clip: float | None = option(None, group="optimisation", metavar="NORM",
                                     help="clip the gradients' global norm to this before every step (transformers "
                                          "usually train with 1.0); default: no clipping")
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
    # --- growth ---
    grow_at: tuple = option((), group="growth", metavar="EPOCH", items=(int, "*"),
                            help="grow the model in depth at the start of these epochs (1-based; a text run's epoch "
                                 "e starts at step (e-1) x --eval-every) by --grow-method and --grow-factor, the "
                                 "optimizer carried over (contdepth.train.grow; the gpt model so far)")
    grow_method: str = option("refine", group="growth", choices=GROW_METHODS,
                              help="how --grow-at grows: refine (theta(t) on a finer basis, exactly), interpolate "
                                   "(each layer repeated with its output projections divided: the same ODE on a "
                                   "finer grid), stack (the stack repeated) or zero (new layers with zeroed output "
                                   "projections: the same function)")
    grow_factor: int = option(2, group="growth", metavar="K",
                              help="each growth multiplies the depth by this, 2..16 (a power of 2 to refine)")
    grow_optimizer: str = option("map", group="growth", choices=REFINE_OPTIMIZER,
                                 help="the optimizer state at --grow-at: map (each parameter's state carried with "
                                      "its own map; a new layer starts with none) or reset (every state dropped)")
    grow_lr: str = option("keep", group="growth", choices=GROW_LR,
                          help="the learning rate at --grow-at: keep (the schedule as it is), scale (times "
                               "--grow-lr-scale at each growth, cumulative) or rewarm (ramped linearly from "
                               "1/N of the schedule's value back to it over the N = --grow-rewarm-steps steps "
                               "after each growth)")
    grow_lr_scale: float = option(1.0, group="growth", metavar="FACTOR",
                                  help="with --grow-lr scale: multiply the learning rate by this at each growth "
                                       "(cumulative, every parameter)")
    grow_rewarm_steps: int | None = option(None, group="growth", metavar="STEPS",
                                           help="with --grow-lr rewarm: the training steps over which the learning "
                                                "rate ramps back up after each growth")
    # --- graph data ---
    patience: int | None = option(None, group="graph data", metavar="EPOCHS",
                                  help="stop after this many epochs without a better validation accuracy (ties broken "
                                       "by validation loss); the best-validation weights are kept either way; image "
                                       "datasets refuse it (default: run every epoch)")
    # --- text data ---
    eval_every: int | None = option(None, group="text data", metavar="STEPS",
                                    help="training steps between evaluations of a text run: its epoch (--epochs, "
                                         "--refine-at, --warmup-epochs count these); default 100")
    max_steps: int | None = option(None, group="text data", metavar="STEPS",
                                   help="a text run's training steps (its token budget is max_steps x batch_size x "
                                        "context): sets epochs to max_steps / eval_every")
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
        validate_config(self)

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
            if "max_steps" in layer and "epochs" not in layer:
                merged.pop("epochs", None)  # a text run's epochs follow its new step budget (max_steps / eval_every)
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
        """JSON/YAML-ready: tuples become lists (`contdepth.common.to_json_value`, the one normaliser)."""
        return {f.name: to_json_value(getattr(self, f.name), f.name, strict=False) for f in fields(self)}

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

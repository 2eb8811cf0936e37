"""The rules of a `TrainConfig`: what each option may hold, and which options go together.

Why apart from the dataclass: `contdepth.train.config` declares the options (their help, defaults
and ``--help`` groups) and how a config is built from files and flags; this module says what a
valid config is. Every value check is the common family (`contdepth.common.validate`), so a
training option is worded as every other option is; what is left here is what only a training
run knows (epoch lists, growth schedules, option pairs that contradict each other); the checks
other commands share (devices, output paths, a model and its dataset of one kind) are in
`contdepth.train.command_checks`.

Like the config module, nothing here imports torch when imported: the registries (data, models,
solvers) are imported by the checks that read them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..common.errors import OptionError
from ..common.json_values import to_json_value
from ..common.validate import (check_bool, check_choice, check_int, check_number, check_plain_value, check_seed,
                               is_int, is_number, show)

# The checks other commands share live in command_checks; importable from here, where they always were.
from .command_checks import (  # noqa: F401
    CUSTOM_MODEL,
    check_device,
    check_model_data,
    check_output_path,
    nearest_existing,
)

if TYPE_CHECKING:
    from .config import TrainConfig

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
# The ways to grow depth in a run (`contdepth.nn.grow.GROWTH_METHODS`, named here without importing torch) and
# the learning-rate rule at a growth: keep the schedule, multiply it (cumulatively), or ramp it up again.
GROW_METHODS = ("refine", "interpolate", "stack", "zero")
GROW_LR = ("keep", "scale", "rewarm")


#: Steps between a text run's evaluations when ``eval_every`` is not given: a text run's "epoch".
DEFAULT_EVAL_EVERY = 100


# --- the config's own rules -----------------------------------------------------------------------------
def _set(config: TrainConfig, name: str, value: Any) -> None:
    """Store a normalised value (a number as ``float``, a list as a tuple): the config is frozen, its checks are not.

    Number options are checked with `check_number` ``range_apart``: the wording the training
    config always had ("lr: must be > 0, got 0"; "momentum: must lie in [0, 1), got 1.0")."""
    object.__setattr__(config, name, value)


def _options(config: TrainConfig, name: str) -> None:
    """``model_options`` / ``data_options``: a mapping of JSON values (``None`` is empty), stored as plain dicts."""
    value = getattr(config, name)
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise OptionError(name, f"must be a mapping of option names to values, got {show(value)}")
    check_plain_value(value, name)  # stored as JSON; bounded before the normaliser walks it
    _set(config, name, to_json_value(dict(value), name))


def _epoch_list(config: TrainConfig, name: str, upper: int | None) -> None:
    value = getattr(config, name)
    if value is None:
        value = ()
    if is_int(value):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(is_int(v) for v in value):
        raise OptionError(name, f"must be a list of epoch numbers (integers), got {show(value)}")
    value = tuple(value)
    if any(v < 1 for v in value):
        raise OptionError(name, f"epochs are numbered from 1, got {list(value)}")
    late = [v for v in value if upper is not None and v > upper]
    if late:
        flag = "--" + name.replace("_", "-")
        raise OptionError(name, f"every epoch must be in 1..epochs={upper}, got {list(value)} (epoch {late[0]} is "
                                f"after the last one); pass {flag} with no value to clear it ({name}: [] in YAML), "
                                f"or give epochs up to {upper}")
    if list(value) != sorted(set(value)):
        raise OptionError(name, f"epochs must be strictly increasing (no repeats), got {list(value)}")
    _set(config, name, value)


def validate_config(c: TrainConfig) -> None:
    """Check every option of ``c`` and normalise it in place (floats, tuples, plain dicts); `OptionError` names it."""
    _check_model_and_data(c)
    _check_optimisation(c)
    _check_depth(c)
    _check_run(c)


def _check_model_and_data(c: TrainConfig) -> None:
    from ..data import available_datasets, dataset_kind
    from ..models import available_models, model_options

    if not isinstance(c.model, str):
        raise OptionError("model", f"must be a model name; allowed: {', '.join(available_models())}")
    if c.model != CUSTOM_MODEL:
        check_choice(c.model, "model", available_models())
    _options(c, "model_options")
    if c.model == CUSTOM_MODEL:
        if c.model_options:
            raise OptionError("model_options", f"a {CUSTOM_MODEL!r} model is your own module, built by you; it takes "
                                               f"no model_options, got {sorted(c.model_options)}")
        accepted = {}
    else:
        accepted = model_options(c.model)
    unknown = sorted(set(c.model_options) - set(accepted))
    if unknown:
        raise OptionError(f"model_options.{unknown[0]}",
                          f"not an option of model {c.model!r}; allowed: {', '.join(sorted(accepted))}")
    missing = [k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in c.model_options
               and k not in ("in_channels", "num_classes", "in_features", "num_nodes")]
    if missing:
        raise OptionError(f"model_options.{missing[0]}", f"required by model {c.model!r}")

    if not isinstance(c.data, str):
        raise OptionError("data", f"must be a dataset name; allowed: {', '.join(available_datasets())}")
    canonical = c.data.strip().lower().replace("-", "_")
    if canonical not in available_datasets():
        raise OptionError("data", f"must be one of {', '.join(available_datasets())}; got {show(c.data)}")
    if c.data_dir is not None:
        if not isinstance(c.data_dir, (str, Path)):
            raise OptionError("data_dir", f"must be a folder path or null, got {show(c.data_dir)}")
        _set(c, "data_dir", str(c.data_dir))
    _options(c, "data_options")
    check_seed(c.split_seed, "split_seed")
    check_int(c.validation_size, "validation_size", low=0)
    check_int(c.train_size, "train_size", low=1, allow_none=True)
    kind = dataset_kind(canonical)
    if (c.validation_size or c.train_size is not None) and kind != "image":
        name = "validation_size" if c.validation_size else "train_size"
        if kind == "graph":
            raise OptionError(name, f"{c.data!r} is a graph dataset with its own train/validation/test node split; "
                                    "leave it unset")
        raise OptionError(name, f"{c.data!r} is a text dataset, split into contiguous byte ranges by its "
                                "data_options val_fraction and test_fraction; leave it unset")
    check_int(c.eval_every, "eval_every", low=1, high=10**9, allow_none=True)
    check_int(c.max_steps, "max_steps", low=1, high=10**12, allow_none=True)
    if kind != "text":
        for name in ("eval_every", "max_steps"):
            if getattr(c, name) is not None:
                raise OptionError(name, f"is for text datasets (a run counted in steps); {c.data!r} is "
                                        f"{'an' if kind == 'image' else 'a'} {kind} dataset, whose runs count epochs: "
                                        "leave it unset")
    elif c.max_steps is not None:
        every = c.eval_every or DEFAULT_EVAL_EVERY
        if c.max_steps % every:
            raise OptionError("max_steps", f"must be a multiple of eval_every ({every}: the run is evaluated and "
                                           f"checkpointed every {every} steps), got {c.max_steps}")
        derived = c.max_steps // every
        if c.epochs not in (derived, 10):  # 10: epochs left at its default
            raise OptionError("epochs", f"{c.epochs} contradicts max_steps {c.max_steps} (= {derived} evaluations of "
                                        f"{every} steps, a text run's epochs); give one of them")
        _set(c, "epochs", derived)


def _check_optimisation(c: TrainConfig) -> None:
    check_int(c.epochs, "epochs", low=1)
    check_int(c.batch_size, "batch_size", low=1)
    check_int(c.eval_batch_size, "eval_batch_size", low=1)
    check_choice(c.optimizer, "optimizer", OPTIMIZERS)
    _set(c, "lr", check_number(c.lr, "lr", low=0.0, low_open=True, float32=True, range_apart=True))
    _set(c, "momentum", check_number(c.momentum, "momentum", low=0.0, high=1.0, high_open=True, range_apart=True))
    check_bool(c.nesterov, "nesterov")
    if c.nesterov and (c.optimizer != "sgd" or c.momentum == 0):
        raise OptionError("nesterov", "needs optimizer sgd with momentum > 0")
    betas = c.betas
    if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(is_number(b) and 0 <= b < 1 for b in betas):
        raise OptionError("betas", f"must be two numbers in [0, 1), got {show(betas)}")
    _set(c, "betas", tuple(float(b) for b in betas))
    _set(c, "eps", check_number(c.eps, "eps", low=0.0, low_open=True, float32=True, range_apart=True))
    _set(c, "weight_decay", check_number(c.weight_decay, "weight_decay", low=0.0, float32=True, range_apart=True))
    check_bool(c.decay_norm_and_bias, "decay_norm_and_bias")
    check_choice(c.decay_scope, "decay_scope", DECAY_SCOPES)
    if c.decay_scope == "model" and c.decay_norm_and_bias:
        raise OptionError("decay_norm_and_bias", "has no effect with decay_scope 'model' (the model chooses what "
                                                 "is decayed); leave it false")
    check_choice(c.schedule, "schedule", SCHEDULES)
    _epoch_list(c, "milestones", c.epochs)
    if c.milestones and c.schedule != "step":
        raise OptionError("milestones", f"only used by schedule step (schedule is {c.schedule!r})")
    _set(c, "gamma", check_number(c.gamma, "gamma", low=0.0, high=1.0, low_open=True, range_apart=True))
    _set(c, "warmup_epochs", check_number(c.warmup_epochs, "warmup_epochs", low=0.0, range_apart=True))
    if c.warmup_epochs > c.epochs:
        raise OptionError("warmup_epochs", f"must not exceed epochs={c.epochs}, got {c.warmup_epochs}; pass a "
                                           "shorter --warmup-epochs (0: no warm-up) or more --epochs")
    _set(c, "min_lr", check_number(c.min_lr, "min_lr", low=0.0, range_apart=True))
    if c.min_lr >= c.lr:
        raise OptionError("min_lr", f"must be below lr={c.lr}, got {c.min_lr}")
    _set(c, "label_smoothing", check_number(c.label_smoothing, "label_smoothing", low=0.0, high=1.0, high_open=True,
                                            range_apart=True))
    if c.grad_clip is not None:
        _set(c, "grad_clip", check_number(c.grad_clip, "grad_clip", low=0.0, low_open=True, range_apart=True))


def _check_depth(c: TrainConfig) -> None:
    from ..models.layers import check_block_size
    from ..solvers import available_schemes

    _epoch_list(c, "refine_at", c.epochs)
    check_choice(c.refine_optimizer, "refine_optimizer", REFINE_OPTIMIZER)
    _set(c, "refine_lr_scale", check_number(c.refine_lr_scale, "refine_lr_scale", low=1.0 / MAX_REFINE_LR_SCALE,
                                            high=MAX_REFINE_LR_SCALE, range_apart=True))
    if c.refine_lr_scale != 1.0 and not c.refine_at:
        raise OptionError("refine_lr_scale", f"{c.refine_lr_scale} has no effect without refine_at; leave it 1")
    if c.refine_optimizer != "map" and not c.refine_at:
        raise OptionError("refine_optimizer", f"{c.refine_optimizer!r} has no effect without refine_at; leave it 'map'")
    if c.eval_scheme is not None and (not isinstance(c.eval_scheme, str) or c.eval_scheme not in available_schemes()):
        raise OptionError("eval_scheme", f"must be one of {', '.join(available_schemes())} or null; "
                                         f"got {show(c.eval_scheme)}")
    check_int(c.eval_n_steps, "eval_n_steps", low=1, allow_none=True)
    if c.eval_n_steps is not None:
        check_block_size(c.eval_n_steps, "eval_n_steps")
    check_int(c.patience, "patience", low=1, allow_none=True)
    _check_growth(c)


def _check_growth(c: TrainConfig) -> None:
    """``grow_at`` and the options that say how each growth happens (`contdepth.train.growth`)."""
    from ..nn.grow import check_growth

    _epoch_list(c, "grow_at", c.epochs)
    check_choice(c.grow_method, "grow_method", GROW_METHODS)
    try:  # the growth's own bounds (a power of 2 to refine, at most 16)
        check_growth(c.grow_method, c.grow_factor)
    except OptionError as exc:
        raise exc.renamed(f"grow_{exc.option}") from None
    check_choice(c.grow_optimizer, "grow_optimizer", REFINE_OPTIMIZER)
    check_choice(c.grow_lr, "grow_lr", GROW_LR)
    _set(c, "grow_lr_scale", check_number(c.grow_lr_scale, "grow_lr_scale", low=1.0 / MAX_REFINE_LR_SCALE,
                                          high=MAX_REFINE_LR_SCALE, range_apart=True))
    check_int(c.grow_rewarm_steps, "grow_rewarm_steps", low=1, high=10**9, allow_none=True)
    if not c.grow_at:
        for name in ("grow_method", "grow_factor", "grow_optimizer", "grow_lr", "grow_lr_scale", "grow_rewarm_steps"):
            default = type(c).default_of(name)
            if getattr(c, name) != default:
                raise OptionError(name, f"{show(getattr(c, name))} has no effect without grow_at; leave it "
                                        f"{'unset' if default is None else show(default)}")
        return
    both = sorted(set(c.grow_at) & set(c.refine_at))
    if both:
        raise OptionError("grow_at", f"epoch {both[0]} is in refine_at too; refine and grow at different epochs "
                                     "(or grow with grow_method refine)")
    if c.grow_lr == "scale" and c.grow_lr_scale == 1.0:
        raise OptionError("grow_lr_scale", "grow_lr 'scale' needs a factor other than 1 (the learning rate is "
                                           "multiplied by it at each growth)")
    if c.grow_lr != "scale" and c.grow_lr_scale != 1.0:
        raise OptionError("grow_lr_scale", f"{c.grow_lr_scale} has no effect with grow_lr {c.grow_lr!r}; set grow_lr "
                                           "'scale' or leave it 1")
    if c.grow_lr == "rewarm" and c.grow_rewarm_steps is None:
        raise OptionError("grow_rewarm_steps", "grow_lr 'rewarm' needs the steps over which the learning rate "
                                               "ramps back up after each growth")
    if c.grow_lr != "rewarm" and c.grow_rewarm_steps is not None:
        raise OptionError("grow_rewarm_steps", f"{c.grow_rewarm_steps} has no effect with grow_lr {c.grow_lr!r}; "
                                               "set grow_lr 'rewarm' or leave it unset")


def _check_run(c: TrainConfig) -> None:
    check_seed(c.seed, "seed")
    if c.out is not None:
        if not isinstance(c.out, (str, Path)) or not str(c.out):
            raise OptionError("out", f"must be a folder path or null, got {show(c.out)}")
        _set(c, "out", str(Path(c.out).expanduser()))  # one path for the checks and the writes (issue 26)
    check_int(c.threads, "threads", low=1, allow_none=True)
    check_device(c.device, available=False)  # a saved config names its device; whether it exists here is preflight's
    for name in ("quiet", "overwrite", "resume", "extend", "channels_last", "compile"):
        check_bool(getattr(c, name), name)
    check_choice(c.precision, "precision", PRECISIONS)
    if c.extend and not c.resume:
        raise OptionError("extend", "only applies with resume (it lets a resumed run change its epochs)")
    if c.overwrite and c.resume:
        raise OptionError("overwrite", "cannot be combined with resume (one keeps the run, the other replaces it)")
    if c.resume and c.out is None:
        raise OptionError("resume", "needs out, the run directory to continue")

"""What a run checks before it works, and how it reads what it needs: the preflight, resume's checks, the data.

Apart from the loop (`contdepth.train.trainer`, which imports every name here and where they
have always been importable) because none of it trains: every check that needs no data and
writes nothing (`preflight`), the rules a resumed run must keep (`check_resume`,
`check_resume_config`, `with_recorded_corpus`) and the dataset with its held-out split
(`load_data`, `with_held_out`).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from .. import data
from ..common.errors import OptionError
from ..data import dataset_kind
from ..models import model_options
from ..nn import continuous_blocks
from ..nn.repeated import check_composing_training
from ..solvers import get_scheme
from .checkpoint import (
    CheckpointError,
    CheckpointInfo,
)
from .config import (
    CUSTOM_MODEL,
    RESUMABLE_CHANGES,
    ConfigError,
    TrainConfig,
    check_device,
    check_model_data,
    check_output_path,
)
from .growth import check_growth_schedule
from .rundir import check_run_dir
from .sizes import check_memory, check_refinements
from .runs import (
    dry_model,
    model_options_for,
)
from .tensorboard import TENSORBOARD_DIR, summary_writer_class

# --- preflight ---------------------------------------------------------------------------------------


def preflight(config: TrainConfig, user_model: nn.Module | None = None, *, folder: bool = True) -> None:
    """Every check that needs no data and writes nothing; raises `ConfigError`.

    Refuses a graph model on an image dataset (and the reverse) by their names; builds the
    model on the ``meta`` device (no memory, no initialisation cost) so that bad model option
    *values* fail here with the model's own message (and a scheme that composes the rate,
    ``polynet``, on normalisation statistics every application would share); checks that ``refine_at``/``eval_*``
    have blocks to act on, that every refinement keeps the blocks within the sizes a
    checkpoint may hold and that the weights, gradients and optimizer state fit the memory
    there is (`contdepth.train.sizes`; with ``grow_at`` every refinement and growth replayed in
    order, `contdepth.train.growth.check_growth_schedule`), that the device exists here, and the run folder.
    ``folder=False`` leaves out the checks of ``out`` (an experiment checks every arm before
    its run folders exist, and each run's folder when the run starts).
    """
    check_model_data(config.model, config.data)
    if config.model == CUSTOM_MODEL:
        model = user_model
        if model is None:
            raise ConfigError(f"model: {CUSTOM_MODEL!r} is a model given in Python (contdepth.train.train(config, "
                              "model=MyNet())); on the command line, register your model (contdepth.models."
                              "register_model) and name the module with --import MODULE")
    else:
        options = model_options_for(config)
        try:
            model = dry_model(config)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise _model_options_error(config.model, options, exc) from exc
    if config.decay_scope == "model" and not hasattr(model, "weight_decay_parameters"):
        raise ConfigError(f"decay_scope: 'model' needs a model that names its decayed parameters "
                          f"(weight_decay_parameters(): the graph models); {config.model!r} does not, use 'all'")
    blocks = continuous_blocks(model)
    for block in blocks:  # a composing scheme on shared statistics fails at the first step
        if block.scheme.composes:
            try:
                check_composing_training(block.scheme.name, block.template, block.state_names)
            except ValueError as exc:
                if config.model == CUSTOM_MODEL:  # a model given in Python: no model_options to name
                    raise ConfigError(f"model: {exc}") from exc
                raise _model_options_error(config.model, options, exc) from exc
    has_blocks = bool(blocks)
    if config.refine_at and not has_blocks:
        raise ConfigError(f"refine_at: model {config.model!r} has no ContinuousBlock to refine")
    if (config.eval_scheme or config.eval_n_steps) and not has_blocks:
        raise ConfigError(f"eval_scheme: model {config.model!r} has no ContinuousBlock to manifest")
    if config.eval_scheme:
        get_scheme(config.eval_scheme)
    if config.data_dir is not None:
        where = Path(config.data_dir).expanduser()
        if dataset_kind(config.data) == "text":  # one text file, or a folder of them (the reader checks which)
            if not where.exists():
                raise ConfigError(f"data_dir: {config.data_dir} does not exist (a UTF-8 text file or a folder of them)")
        elif not where.is_dir():
            raise ConfigError(f"data_dir: {config.data_dir} is not a folder")
    check_device(config.device)
    if config.grow_at:  # every refinement and growth replayed on the meta device: bounds, then memory
        check_growth_schedule(model, config)
    elif model is not None:
        check_refinements(model, config)
        check_memory(model, config)
    if torch.device(config.device).type == "cpu":
        for name in ("channels_last", "compile"):
            if getattr(config, name):
                raise ConfigError(
                    f"{name}: is for GPUs (--device cuda); on CPU torch {torch.__version__.split('+')[0]} aborts the "
                    "process in the backward pass of a strided 1x1 convolution in channels_last memory format (a "
                    "double free), the layout both options lead to"
                )
    if config.tensorboard:
        if config.out is None and folder:
            raise ConfigError("tensorboard: needs --out (the logs go to OUT/tensorboard)")
        try:
            summary_writer_class()
        except OptionError as exc:
            raise ConfigError(str(exc)) from exc
        # the writer creates OUT/tensorboard in its own thread: a file there or a read-only folder
        # surfaced as its traceback mid-run; here it is one line before any work
        if folder:
            check_output_path(Path(config.out) / TENSORBOARD_DIR, "tensorboard", folder=True)
    if folder:
        check_run_dir(config.out, overwrite=config.overwrite, resume=config.resume)


def _model_options_error(model: str, options: dict, exc: Exception) -> ConfigError:
    """``model_options.NAME: ...`` when the model named the option, else the model and its options."""
    # A registered model may raise a plain ValueError("name: problem"): read the name from it.
    error = exc if isinstance(exc, OptionError) else OptionError(str(exc))
    head = error.option.split("[", 1)[0]
    if head and (head in options or head in model_options(model)):
        return error.within("model_options")
    # torch's C++ errors run to a dozen lines (its "Exception raised from ..." and frames): the first says it
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return ConfigError(f"model_options: model {model!r} cannot be built with {options}: {first}")


def restore_grad_scaler(scaler: torch.amp.GradScaler, info: CheckpointInfo) -> None:
    """Load the fp16 GradScaler state of a checkpoint (numbers only, checked when it was read)."""
    state = info.grad_scaler
    if state is None:
        return  # a run saved before its first fp16 step: the scaler starts fresh
    expected = set(scaler.state_dict())
    if expected and set(state) != expected:
        raise CheckpointError(f"{info.path}: grad_scaler holds {sorted(state)}, expected {sorted(expected)}")
    scaler.load_state_dict(dict(state))


def check_resume(config: TrainConfig, info: CheckpointInfo) -> None:
    """A resumed run continues exactly: same options, same epochs unless ``extend`` says otherwise."""
    saved = info.train_config()
    check_resume_config(config, saved)
    if config.epochs < info.epoch:
        raise ConfigError(f"epochs: the run in {config.out} already completed {info.epoch} epochs, "
                          f"got epochs={config.epochs}")
    if config.epochs != saved.epochs and not config.extend:
        if saved.schedule == "cosine":
            effect = (f"its cosine schedule is then recomputed to span {config.epochs} epochs, which changes the "
                      f"learning rate from epoch {info.epoch + 1} on")
        else:
            effect = f"its {saved.schedule} schedule does not depend on the length, so only the number of epochs changes"
        raise ConfigError(
            f"epochs: the run in {config.out} is set up for {saved.epochs} epochs and --resume continues it exactly; "
            f"to change it to {config.epochs} epochs add --extend (extend: true): {effect}")


def with_recorded_corpus(config: TrainConfig, saved: TrainConfig) -> TrainConfig:
    """``config`` with the text corpus digest its run recorded (``data_options.sha256``) when it names none.

    A resumed text run is then checked against the bytes it trained on, and its options compare
    equal to the saved ones (which hold the digest the first session added).
    """
    recorded = saved.data_options.get("sha256")
    if recorded is None or "sha256" in config.data_options or config.data != saved.data:
        return config
    return config.replace(data_options={**config.data_options, "sha256": recorded})


def check_resume_config(config: TrainConfig, saved: TrainConfig) -> None:
    """A resumed run may change only `RESUMABLE_CHANGES`."""
    for f in fields(TrainConfig):
        if f.name in RESUMABLE_CHANGES:
            continue
        given, stored = getattr(config, f.name), getattr(saved, f.name)
        if given != stored:
            raise ConfigError(
                f"{f.name}: differs from the run being resumed (saved {stored!r}, given {given!r}); a resumed run "
                f"may change only {', '.join(RESUMABLE_CHANGES)}"
            )


def load_data(config: TrainConfig):
    """The dataset of ``config``, with its validation split held out (``validation_size``, ``train_size``)."""
    try:
        dataset = data.load(config.data, data_dir=config.data_dir, seed=config.split_seed, **config.data_options)
    except (ValueError, OSError, ImportError) as exc:  # unknown option, missing files, no scikit-learn
        raise ConfigError(f"data: {exc}") from exc
    return with_held_out(config, dataset)


def with_held_out(config: TrainConfig, dataset):
    """``dataset`` split as ``config`` says ([`contdepth.data.hold_out`][contdepth.data.hold_out]); unchanged without the options.

    A dataset that already has a validation split (a user's own, or one split by this
    config before, as a fine-tuning run receives it) is taken as it is when its sizes are
    the config's or the config asks for none; otherwise it is refused, so a split is never
    silently redrawn.
    """
    if getattr(dataset, "is_graph", False) or getattr(dataset, "is_text", False):
        return dataset  # their own splits (a graph's node masks, a text's contiguous byte ranges)
    if getattr(dataset, "val_x", None) is not None:
        if config.validation_size not in (0, dataset.num_val) or config.train_size not in (None, dataset.num_train):
            raise ConfigError(f"validation_size: the dataset given already has a validation split ({dataset.num_val} "
                              f"images, {dataset.num_train} to train on), not the {config.validation_size} / "
                              f"{config.train_size} asked for")
        return dataset
    if not config.validation_size and config.train_size is None:
        return dataset
    try:
        return data.hold_out(dataset, config.validation_size, seed=config.split_seed, train_size=config.train_size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

"""The ``contdepth`` command: ``train``, ``eval``, ``analyze``, ``compress``, ``export``, ``experiment``,
``report`` and ``demo``.

    contdepth train --model continuousnet --data digits --epochs 12 --alpha 8 --n-basis 1 \\
        --refine-at 4 8 --out runs/digits
    contdepth train --config configs/fashion_mnist.yaml --out runs/fmnist --threads 2
    contdepth train --resume --out runs/fmnist            # continue after an interruption
    contdepth eval runs/digits --scheme rk4 --n-steps 8
    contdepth eval runs/digits --table
    contdepth eval runs/digits --adaptive --rtol 1e-2 1e-4       # adaptive depth: evaluations per block
    contdepth analyze runs/digits                                # convergence orders, invariance, plots
    contdepth compress runs/digits --n-basis 1 --finetune-epochs 2 --out runs/digits-small
    contdepth export runs/digits --scheme rk4 --n-steps 4 --format onnx --out digits.onnx --check
    contdepth experiment experiments/refinement.yaml --out runs/refinement   # seeds x arms, resumable
    contdepth report runs/refinement --out experiments/results/refinement
    contdepth demo

Every ``train`` option is a [`TrainConfig`][contdepth.train.TrainConfig] field (``--refine-at`` for
``refine_at``); ``--config FILE`` reads the same keys from YAML and flags override the
file. Options are checked before any work: a bad one exits with status 2 and a message
naming it, having created no folder and loaded no data. ``python -m contdepth`` is the same.
"""

from __future__ import annotations

import argparse
import errno
import math
import shlex
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .common.errors import OptionError
from .cli_parser import CommandParser
from .common.paths import user_path
from .common.validate import check_int, check_threads
from .common.yaml_input import load_yaml_text
from .plugins import IMPORTS_ENV, import_modules, load_plugins
from .train.config import (
    OPTION_GROUPS,
    ConfigError,
    TrainConfig,
    check_count,
    check_device,
    check_output_path,
    read_yaml,
)

# model-option flags: --flag -> model_options key (nargs "+" for per-stage lists)
MODEL_FLAGS: dict[str, tuple[str, Any, str | None, str]] = {
    "alpha": ("alpha", int, None, "base width (channels of the first stage)"),
    "widen": ("widen", int, None, "width multiplier"),
    "n_basis": ("n_basis", int, "+", "basis functions per block: one value or one per stage"),
    "basis": ("basis", str, None, "depth basis: piecewise_constant, piecewise_linear, legendre"),
    "scheme": ("scheme", str, None, "integration scheme used in training (euler, rk4, ...)"),
    "n_steps": ("n_steps", int, "+", "steps per block: one value or one per stage (default n_basis)"),
    "norm": ("norm", str, None, "normalisation: batch, group, none"),
}
# Smallest nonzero --rtol/--atol of eval --adaptive. Activations are float32 (unit round-off
# 6e-8): an error estimate much below that is round-off, so a tolerance of 1e-12 is never met
# (the step size shrinks until max_steps, minutes later), and 1e-300 even underflows the error
# scale atol + rtol * |x| to 0 (a NaN step size). 1e-9 is already far below anything useful.
TOLERANCE_FLOOR = 1e-9
# compress --latency-*: the timed input of one batch is allocated at once (a CIFAR batch of
# 65,536 is 800 MB), and 10,000 timed calls already take minutes for a small model.
MAX_LATENCY_BATCH = 65_536
MAX_LATENCY_REPEATS = 10_000


def _key_value(text: str, flag: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read by the one YAML reader (bounded aliases, depth and size, plain types)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{flag}: expected KEY=VALUE, got {text!r}")
    value = load_yaml_text(raw, f"{flag} {key.strip()[:60]}") if raw.strip() else None
    return key.strip().replace("-", "_"), value


def _add_train(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    S = argparse.SUPPRESS
    p = sub.add_parser("train", help="train a model (see contdepth train --help)", argument_default=S,
                       description="Train a model. Flags override --config FILE; every check runs before any work.")
    p.add_argument("--config", metavar="FILE", help="YAML file with TrainConfig keys (flags override it)")
    add_config_flags(p)
    return p


def _flag_type(annotation: str) -> type:
    """The argparse ``type`` of a TrainConfig field from its (string) annotation."""
    base = annotation.split("|")[0].strip()
    return {"int": int, "float": float, "str": str}[base]


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per [`TrainConfig`][contdepth.train.TrainConfig] field, generated from the field: name, type, help and default.

    Why generated: the help existed three times (docstring, CLI, README) and drifted; now
    a field's ``option(help=...)`` is the only place, and a new field gets its flag for free.
    ``model_options`` and ``data_options`` are spelled ``--model-option KEY=VALUE`` /
    ``--data-option KEY=VALUE``, with the common model options as their own flags.
    """
    from dataclasses import MISSING, fields


    groups = {name: parser.add_argument_group(name) for name in OPTION_GROUPS}
    for f in fields(TrainConfig):
        meta, group = f.metadata, groups[f.metadata["group"]]
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        if f.name == "model_options":
            for flag, (_, kind, nargs, text) in MODEL_FLAGS.items():
                group.add_argument(f"--{flag.replace('_', '-')}", dest=f"model__{flag}", type=kind, nargs=nargs,
                                   metavar=flag.upper(), help=text)
            group.add_argument("--model-option", dest="model_option", action="append", metavar="KEY=VALUE",
                               help="any other model option (value read as YAML: 3, 0.5, true, [1,2,4]); repeatable")
            continue
        if f.name == "data_options":
            group.add_argument("--data-option", dest="data_option", action="append", metavar="KEY=VALUE",
                               help="dataset loader option, e.g. test_fraction=0.25; repeatable")
            continue
        if not meta["flag"]:
            continue
        help_text = TrainConfig.help_text(f.name)  # with the registry's names where the field lists them
        if default is not None:  # "not set" means something different per option: its help says what
            help_text += f" (default: {_format_default(default)})"
        flag = f"--{f.name.replace('_', '-')}"
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
        if meta["metavar"] is not None:
            kwargs["metavar"] = meta["metavar"]
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif meta["items"] is not None:
            item_type, nargs = meta["items"]
            group.add_argument(flag, type=item_type, nargs=nargs, **kwargs)
        else:
            group.add_argument(flag, type=_flag_type(str(f.type)), **kwargs)


def _format_default(value: Any) -> str:
    if value is None or value == () or value == {}:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def train_config_from_args(args: argparse.Namespace):  # -> TrainConfig
    """The [`TrainConfig`][contdepth.train.TrainConfig] of parsed ``train`` arguments (defaults < saved run < file < flags)."""

    from .train.checkpoint import read_checkpoint
    from .train.rundir import check_run_dir
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "func", "argv")}
    overrides: dict[str, Any] = {}
    model_options: dict[str, Any] = {}
    data_options: dict[str, Any] = {}
    for key, value in given.items():
        if key.startswith("model__"):
            name = MODEL_FLAGS[key[len("model__"):]][0]
            model_options[name] = value[0] if isinstance(value, list) and len(value) == 1 else value
        elif key == "model_option":
            for item in value:
                k, v = _key_value(item, "--model-option")
                model_options[k] = v
        elif key == "data_option":
            for item in value:
                k, v = _key_value(item, "--data-option")
                data_options[k] = v
        else:
            overrides[key] = value
    if model_options:
        overrides["model_options"] = model_options
    if data_options:
        overrides["data_options"] = data_options
    file = getattr(args, "config", None)
    base = None
    if overrides.get("resume"):
        out = overrides.get("out")
        if out is None and file is not None:

            out = read_yaml(file).get("out")
        if out is None:
            raise ConfigError("resume: needs --out, the run directory to continue")

        check_run_dir(out, overwrite=False, resume=True)
        info, _ = read_checkpoint(out)
        base = info.train_config()
    return TrainConfig.from_sources(file, overrides, base=base)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train
    config = train_config_from_args(args)
    try:
        train(config)
    except KeyboardInterrupt:
        print(f"\ncontdepth train: interrupted{interrupted_advice(config.out, config)}", file=sys.stderr)
        return 130
    return 0


def interrupted_advice(out: str | None, config=None) -> str:
    """What to do after an interruption, by what is on disk now (so the advice works).

    An interrupted ``--resume --extend`` run is advised to extend again: its checkpoint may
    still hold the old length.
    """
    from .train.rundir import folder_state
    import shlex


    if out is None:
        return " (nothing was saved: no --out)"
    if folder_state(out) == "run":
        extend = f" --epochs {config.epochs} --extend" if config is not None and config.extend else ""
        return f"; continue with: contdepth train --resume --out {shlex.quote(str(out))}{extend}"
    return f"; nothing was saved in {out} yet: run the same command again to start over"


def _add_eval(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="evaluate a run's checkpoint at any manifestation",
                       description="Evaluate a checkpoint on its dataset's test split.")
    p.add_argument("run", metavar="RUN", help="run directory (or its checkpoint.json)")
    p.add_argument("--scheme", help="evaluate with this scheme (default: the trained one)")
    p.add_argument("--n-steps", type=int, help="evaluate with this many steps per block (default: the trained ones)")
    p.add_argument("--table", action="store_true", help="print a scheme x steps accuracy table")
    p.add_argument("--schemes", nargs="+", default=None, help="schemes of the table (default: euler midpoint rk4)")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="step counts of the table (default: 1 2 4 8 16)")
    g = p.add_argument_group("adaptive depth (every block integrated with error control)")
    g.add_argument("--adaptive", action="store_true",
                   help="integrate each block with an embedded pair instead of a fixed grid; prints evaluations "
                        "per block and accuracy for each tolerance")
    g.add_argument("--rtol", type=float, nargs="+", default=None, metavar="R",
                   help="relative tolerance(s); several values give a table (default: 1e-3)")
    g.add_argument("--atol", type=float, nargs="+", default=None, metavar="A",
                   help="absolute tolerance(s): one value, or one per --rtol (default: rtol / 10)")
    g.add_argument("--adaptive-scheme", default="dopri5", help="embedded pair: dopri5 or bosh3 (default: dopri5)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--data-dir", default=None, help="where the dataset is now (default: the run's data_dir)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    return p


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from .nn import continuous_blocks
    from .solvers import MaxStepsExceeded, available_schemes
    from .train import (
        evaluate,
        evaluate_adaptive,
        format_adaptive_table,
        format_manifestation_table,
        load_checkpoint,
        manifestation_table,
    )
    from .train.evaluate import DEFAULT_SCHEMES, DEFAULT_STEPS
    from .train.trainer import load_data

    schemes = ([args.scheme] if args.scheme else []) + list(args.schemes or [])
    for s in schemes:
        if s not in available_schemes():
            raise ConfigError(f"scheme: must be one of {', '.join(available_schemes())}; got {s!r}")
    if args.n_steps is not None:
        check_count(args.n_steps, "n_steps")
    for n in args.steps or []:
        check_count(n, "steps")
    _check_common(args)
    tolerances = _adaptive_tolerances(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, info = load_checkpoint(args.run, device=args.device)
    config = info.train_config()
    if args.data_dir is not None:
        config = config.replace(data_dir=args.data_dir)
    blocks = continuous_blocks(model)
    if (args.scheme or args.n_steps or args.table) and not blocks:
        raise ConfigError(f"scheme: model {info.model_name!r} has no ContinuousBlock, so it has one manifestation only")
    if args.adaptive and not blocks:
        raise ConfigError(f"adaptive: model {info.model_name!r} has no ContinuousBlock to integrate adaptively")
    dataset = load_data(config)
    if args.adaptive:

        results = []
        for rtol, atol in tolerances:
            try:
                results.append(evaluate_adaptive(model, dataset, rtol, atol, scheme=args.adaptive_scheme,
                                                 batch_size=args.batch_size, device=args.device))
            except MaxStepsExceeded as exc:  # a tolerance the model's float precision cannot meet
                raise ConfigError(f"rtol: --rtol {rtol:g} --atol {atol:g} could not be met ({exc})") from exc
            except ValueError as exc:  # e.g. an LM-ResNet block
                raise ConfigError(f"adaptive: {exc}") from exc
        print(f"{info.path.parent}: epoch {info.epoch}, {info.model_name} on {config.data}")
        print(format_adaptive_table(results))
        return 0
    trained_scheme = blocks[0].scheme.name if blocks else None
    trained_steps = [b.n_steps for b in blocks]
    loss, acc = evaluate(model, dataset, args.batch_size, scheme=args.scheme, n_steps=args.n_steps, device=args.device)
    where = ""
    if blocks:
        steps = [args.n_steps] * len(blocks) if args.n_steps else trained_steps
        where = f" with {args.scheme or trained_scheme}, n_steps {steps}"
    selected = (info.scheduler or {}).get("early_stopping") if isinstance(info.scheduler, dict) else None
    if isinstance(selected, dict) and "best_epoch" in selected:  # a graph run keeps its best-validation weights
        where += f" (best-validation weights, epoch {selected['best_epoch']})"
    print(f"{info.path.parent}: epoch {info.epoch}, {info.model_name} on {config.data}: "
          f"test accuracy {100 * acc:.2f}% (loss {loss:.4f}){where}")
    if args.table:
        table = manifestation_table(model, dataset, args.schemes or DEFAULT_SCHEMES, args.steps or DEFAULT_STEPS,
                                    args.batch_size, device=args.device)
        trained = (trained_scheme, trained_steps[0]) if len(set(trained_steps)) == 1 else None
        print(format_manifestation_table(table, trained=trained))
    return 0


def _adaptive_tolerances(args: argparse.Namespace) -> list[tuple[float, float]]:
    """``(rtol, atol)`` pairs of ``eval --adaptive``, checked before any work."""

    from .nn import AdaptiveDepth
    if not args.adaptive:
        if args.rtol is not None or args.atol is not None:
            raise ConfigError("rtol: --rtol/--atol need --adaptive")
        return []
    if args.scheme or args.n_steps or args.table:
        raise ConfigError("adaptive: chooses its own steps; it cannot be combined with --scheme, --n-steps or --table")
    rtols = args.rtol or [1e-3]
    atols = args.atol or [max(r / 10, TOLERANCE_FLOOR) for r in rtols]
    if len(atols) == 1:
        atols = atols * len(rtols)
    if len(atols) != len(rtols):
        raise ConfigError(f"atol: give one value or one per --rtol ({len(rtols)}), got {len(atols)}")
    pairs = list(zip(rtols, atols))
    try:
        for rtol, atol in pairs:
            AdaptiveDepth(args.adaptive_scheme, rtol, atol)
    except ValueError as exc:  # AdaptiveDepth names "scheme", which is --adaptive-scheme here
        raise ConfigError(f"adaptive_{exc}" if str(exc).startswith("scheme") else str(exc)) from exc
    for name, values in (("rtol", rtols), ("atol", atols)):
        for value in values:
            if 0 < value < TOLERANCE_FLOOR:
                raise ConfigError(f"{name}: must be 0 or >= {TOLERANCE_FLOOR:g} (activations are float32, good to "
                                  f"about 1e-7: a smaller tolerance cannot be met), got {value:g}")
    return pairs


def _check_common(args: argparse.Namespace) -> None:
    """The options eval, analyze and compress share, checked before the checkpoint is read."""
    if getattr(args, "batch_size", None) is not None:
        check_int(args.batch_size, "batch_size", low=1)
    check_threads(getattr(args, "threads", None))
    if getattr(args, "device", None) is not None:
        check_device(args.device)
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise ConfigError(f"data_dir: {data_dir} is not a folder")


def _add_compress(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("compress", help="project a run's model onto fewer basis functions and steps",
                       description="L2-project every ContinuousBlock (weights and normalisation statistics) onto "
                                   "K basis functions, optionally fine-tune, and report parameters, test accuracy "
                                   "and inference latency before and after. Writes a new run directory.")
    p.add_argument("run", metavar="RUN", help="run directory of the trained model (left untouched)")
    p.add_argument("--n-basis", type=int, nargs="+", required=True, metavar="K",
                   help="basis functions per block after compression: one value or one per block")
    p.add_argument("--n-steps", type=int, nargs="+", default=None, metavar="M",
                   help="steps per block after compression (default: K)")
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="E", help="fine-tuning epochs (default 0)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the run's lr / 10)")
    p.add_argument("--out", required=True, help="new run directory for the compressed model")
    p.add_argument("--overwrite", action="store_true", help="replace the run files of an existing --out")
    p.add_argument("--latency-batch-sizes", type=int, nargs="*", default=[1, 256], metavar="B",
                   help="batch sizes of the latency comparison (none: skip it); default 1 256")
    p.add_argument("--latency-repeats", type=int, default=None,
                   help="timed calls per model and batch size (default: 50 up to batch 16, 10 above)")
    p.add_argument("--batch-size", type=int, default=500, help="evaluation batch size")
    p.add_argument("--data-dir", default=None, help="where the dataset is now (default: the run's data_dir)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no fine-tuning progress lines")
    return p


def _cmd_compress(args: argparse.Namespace) -> int:
    from .analysis.compression import compress_run
    one = lambda values: values[0] if values is not None and len(values) == 1 else values  # noqa: E731
    for name, values in (("n_basis", args.n_basis), ("n_steps", args.n_steps or [])):
        for v in values:
            check_count(v, name)
    if args.finetune_epochs < 0:
        raise ConfigError(f"finetune_epochs: must be an integer >= 0, got {args.finetune_epochs}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise ConfigError(f"lr: must be a finite number > 0, got {args.lr}")
    if args.latency_repeats is not None and not 1 <= args.latency_repeats <= MAX_LATENCY_REPEATS:
        raise ConfigError(f"latency_repeats: must be an integer in 1..{MAX_LATENCY_REPEATS:,}, "
                          f"got {args.latency_repeats}")
    for b in args.latency_batch_sizes:
        if not 1 <= b <= MAX_LATENCY_BATCH:
            raise ConfigError(f"latency_batch_sizes: every batch size must be an integer in 1..{MAX_LATENCY_BATCH:,} "
                              f"(the timed input is allocated at once), got {b}")
    _check_common(args)
    report = compress_run(args.run, one(args.n_basis), one(args.n_steps), out=args.out,
                          finetune_epochs=args.finetune_epochs, lr=args.lr, overwrite=args.overwrite,
                          data_dir=args.data_dir, batch_size=args.batch_size,
                          latency_batch_sizes=tuple(args.latency_batch_sizes), latency_repeats=args.latency_repeats,
                          threads=args.threads, device=args.device, quiet=args.quiet)
    print(f"{args.run} -> {args.out}")
    print(report.format())
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="train a ContinuousNet on digits with refinement; print a manifestation table")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="threads (default 1: as fast on digits, and the same numbers everywhere)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--out", default=None, help="also save the run here")
    p.add_argument("--overwrite", action="store_true")
    return p


def _cmd_demo(args: argparse.Namespace) -> int:
    from .train.demo import demo
    demo(epochs=args.epochs, threads=args.threads, quiet=args.quiet, out=args.out, overwrite=args.overwrite)
    return 0


def _add_analyze(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("analyze", help="convergence and invariance of a run across manifestations",
                       description="For every scheme x steps: test accuracy and the relative error of each block's "
                                   "output and of the logits against a reference manifestation; fitted convergence "
                                   "orders; the accuracy spread. A resnet run is read as a piecewise-constant "
                                   "theta(t) with one cell per unit. Writes analysis.json, manifestations.csv, "
                                   "orders.csv and two PNG plots.")
    p.add_argument("run", metavar="RUN", help="run directory (or its checkpoint.json)")
    p.add_argument("--schemes", nargs="+", default=None, help="schemes to analyse (default: euler midpoint rk4)")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="step counts per block (default: 1 2 4 8 16)")
    p.add_argument("--reference", default=None, metavar="REF",
                   help="rk4:64 (fixed grid), rk4 (4 x the largest step count; the default), "
                        "dopri5 or dopri5:TOL (adaptive)")
    p.add_argument("--max-examples", type=int, default=None, help="analyse only the first N test examples")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--dtype", default="float64", help="float64 (default: orders stay above round-off) or float32")
    p.add_argument("--out", default=None, help="output folder (default: RUN/analysis)")
    p.add_argument("--overwrite", action="store_true", help="replace the analysis files already in --out")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots (no matplotlib needed)")
    p.add_argument("--data-dir", default=None, help="where the dataset is now (default: the run's data_dir)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="also write the manifestation table and accuracy against steps per scheme to DIR for "
                        "TensorBoard (e.g. RUN/analysis/tensorboard: not the training's RUN/tensorboard, whose "
                        "resumed writers purge later steps; needs pip install 'contdepth[tb]')")
    return p


def _cmd_analyze(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .analysis import analyze_manifestations, as_continuous, parse_reference, reference_manifestation
    from .analysis.manifestations import DTYPES, check_grid
    from .analysis.plots import check_matplotlib
    from .analysis.report import PLOT_FILES, REPORT_FILES, check_output
    from .solvers import MaxStepsExceeded
    from .train import load_checkpoint
    from .train.evaluate import DEFAULT_SCHEMES, DEFAULT_STEPS
    from .train.tensorboard import log_manifestation_table, summary_writer_class
    from .train.trainer import load_data

    def checked(value: int | None, name: str) -> None:
        if value is not None:
            check_int(value, name, low=1)

    try:
        schemes, steps = check_grid(args.schemes or DEFAULT_SCHEMES, args.steps or DEFAULT_STEPS)
        reference = parse_reference(args.reference) if args.reference else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for n in steps:
        check_count(n, "steps")
    if args.dtype not in DTYPES:
        raise ConfigError(f"dtype: must be one of {', '.join(DTYPES)}; got {args.dtype!r}")
    if reference is not None:
        _check_reference(reference, args.dtype)
        reference = reference.resolved(steps)
    checked(args.max_examples, "max_examples")
    _check_common(args)
    run = Path(args.run)
    out = Path(args.out) if args.out else (run.parent if run.name == "checkpoint.json" else run) / "analysis"
    check_output_path(out, "out", folder=True)
    try:
        check_output(out, REPORT_FILES + (() if args.no_plots else PLOT_FILES), overwrite=args.overwrite)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if not args.no_plots:

        try:
            check_matplotlib()
        except ImportError as exc:
            raise ConfigError(f"no_plots: {exc}") from exc
    if args.tensorboard is not None:
        check_output_path(Path(args.tensorboard), "tensorboard", folder=True)
        try:
            summary_writer_class()
        except OptionError as exc:
            raise ConfigError(str(exc)) from exc
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, info = load_checkpoint(args.run, device=args.device)
    try:
        readable, reading = as_continuous(model)
        if reference is not None:
            with reference_manifestation(readable, reference):  # an unsupported reference fails here, before the data
                pass
    except ValueError as exc:
        raise ConfigError(f"{info.model_name} run {info.path.parent}: {exc}") from exc
    config = info.train_config()
    if args.data_dir is not None:
        config = config.replace(data_dir=args.data_dir)
    dataset = load_data(config)
    if reading:
        print(f"{info.model_name}: {reading}")

    try:
        report = analyze_manifestations(model, dataset, schemes=schemes, steps=steps, reference=reference,
                                        batch_size=args.batch_size, max_examples=args.max_examples, dtype=args.dtype,
                                        device=args.device, progress=sys.stderr.isatty())
    except MaxStepsExceeded as exc:  # an adaptive reference whose tolerance the model cannot meet
        raise ConfigError(f"reference: {args.reference} could not be computed ({exc}); loosen its tolerance") from exc
    print(f"{info.path.parent}: epoch {info.epoch}, {info.model_name} on {config.data}, "
          f"{report.seconds:.1f} s of analysis")
    print(report.format_table())
    written = report.write(out, overwrite=args.overwrite, plots=not args.no_plots)
    if args.tensorboard is not None:
        written.append(log_manifestation_table(args.tensorboard, [(r.scheme, r.n_steps, 100 * r.accuracy)
                                                                 for r in report.rows], report.format_table()))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _check_reference(reference, dtype: str) -> None:
    """``analyze --reference``: a bounded step count, or a tolerance the analysis dtype can meet."""
    if not reference.adaptive:
        if reference.n_steps is not None:
            check_count(reference.n_steps, "reference n_steps")
        return
    floor = TOLERANCE_FLOOR if dtype == "float32" else 1e-14  # float64: unit round-off 1.1e-16
    if reference.rtol < floor:
        raise ConfigError(f"reference: the tolerance must be >= {floor:g} with --dtype {dtype} (a smaller one cannot "
                          f"be met in that precision), got {reference.rtol:g}")


def _add_export(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a run's model at one manifestation (ONNX, torch.export)",
                       description="Freeze a checkpoint at one manifestation (theta evaluated at the stage times) "
                                   "and export the static graph, with a JSON sidecar next to it.")
    p.add_argument("run", metavar="RUN", help="run directory (or its checkpoint.json)")
    p.add_argument("--out", required=True, help="file to write (.onnx or .pt2); a sidecar <out>.json goes next to it")
    p.add_argument("--format", default="onnx", help="onnx (default) or torch_export (.pt2 via torch.export.save)")
    p.add_argument("--scheme", help="manifest with this scheme (default: the trained one)")
    p.add_argument("--n-steps", type=int, help="steps per block (default: the trained ones)")
    p.add_argument("--batch-size", type=int, default=1, help="batch of the example input (default 1)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to --batch-size (default: dynamic)")
    p.add_argument("--input-shape", type=int, nargs="+", metavar="DIM",
                   help="shape of one input without the batch, e.g. 1 28 28 (default: the dataset's)")
    p.add_argument("--check", action="store_true",
                   help="run the written file on a fresh input; print the max abs difference from torch")
    p.add_argument("--no-data", action="store_true", help="do not read the dataset (sidecar without normalisation)")
    p.add_argument("--data-dir", default=None, help="where the dataset is now (default: the run's data_dir)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out and its sidecar")
    p.add_argument("--threads", type=int, default=None)
    return p


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .export.from_run import CHECK_ATOL, export_run

    if args.threads is not None:
        check_threads(args.threads)
        torch.set_num_threads(args.threads)
    try:
        result = export_run(args.run, args.out, format=args.format, scheme=args.scheme, n_steps=args.n_steps,
                            batch_size=args.batch_size, dynamic_batch=not args.static_batch,
                            input_shape=tuple(args.input_shape) if args.input_shape else None,
                            overwrite=args.overwrite, check=args.check, read_data=not args.no_data,
                            data_dir=args.data_dir)
    except ImportError as exc:  # onnx / onnxscript / onnxruntime not installed
        raise ConfigError(f"format: {exc}") from exc
    steps = ", ".join(f"{m['scheme']} x {m['n_steps']} ({m['units']} weight sets)" for m in result.manifestation)
    print(f"wrote {result.path} ({result.format}, input {list(result.input_shape)}, export {result.export_seconds:.1f} s)"
          + (f"; blocks: {steps}" if steps else ""))
    if result.sidecar is not None:
        print(f"wrote {result.sidecar}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.max_abs_difference is not None:
        ok = result.max_abs_difference <= CHECK_ATOL
        print(f"check: max abs difference from torch {result.max_abs_difference:.3g} "
              f"({'ok' if ok else 'FAILED'}, tolerance {CHECK_ATOL:g})")
        if not ok:
            return 1
    return 0


def _add_experiment(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("experiment", help="run an experiment spec: arms x seeds, resumable, then its report",
                       description="Train every (arm, seed) of SPEC as a run folder under --out, run the "
                                   "after-training steps and write the report. The same command again skips "
                                   "finished runs and resumes interrupted ones.")
    p.add_argument("spec", metavar="SPEC", help="experiment spec (YAML: base, seeds, arms, comparisons)")
    p.add_argument("--out", required=True, help="experiment folder (created; an existing one must hold this spec)")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once, in separate processes (default: 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for the whole suite, shared by the workers (default: the free cores)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--data-dir", default=None, help="folder of the dataset's files, for every run")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="another experiment folder: its finished runs with exactly an arm's config and seed are "
                        "copied instead of trained (repeatable)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interruption: the same clean-up (workers stopped) and the same advice as Ctrl-C."""


def _sigterm_as_interrupt(signum, frame) -> None:
    raise Terminated()


def _cmd_experiment(args: argparse.Namespace) -> int:
    from .experiment import ExperimentSpec, run_experiment
    import signal
    import threading

    spec = ExperimentSpec.from_yaml(args.spec)
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        run_experiment(spec, args.out, workers=args.workers, threads=args.threads, device=args.device,
                       data_dir=args.data_dir, report=not args.no_report, quiet=args.quiet, reuse=args.reuse,
                       command=" ".join(["contdepth", *map(shlex.quote, args.argv)]))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _add_report(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="statistics of an experiment folder: report.md, summary.json, plots",
                       description="Paired comparisons over seeds with 95 %% t-intervals, from the finished runs "
                                   "of an experiment folder (unfinished runs are listed, not counted).")
    p.add_argument("run", metavar="DIR", help="experiment folder (the --out of contdepth experiment)")
    p.add_argument("--out", default=None, help="where to write the report (default: DIR)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument("--quiet", action="store_true", help="do not print the report")
    return p


def _cmd_report(args: argparse.Namespace) -> int:
    from .experiment import write_report
    write_report(args.run, out=args.out, plots=not args.no_plots, quiet=args.quiet)
    return 0


def _add_schemes(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("schemes", help="every integration scheme: cost, order, stability, error constant",
                       description="Every registered scheme with its rate evaluations per step, order, interval of "
                                   "absolute stability [-r, 0] on the negative real axis (z = h lambda), leading "
                                   "error constant, and for the multistep schemes the leading term of the "
                                   "modified equation; the LM-ResNet scheme at --lm-k.")
    p.add_argument("--lm-k", type=float, default=-0.05, metavar="K",
                   help="k of the LM-ResNet row (default -0.05, the middle of its initialisation range)")
    return p


def _cmd_schemes(args: argparse.Namespace) -> int:
    from .solvers.properties import format_scheme_table, scheme_table
    if not math.isfinite(args.lm_k) or args.lm_k <= -1:
        raise ConfigError(f"lm_k: must be a finite number > -1 (at -1 the scheme loses its u' term), got {args.lm_k}")
    print(format_scheme_table(scheme_table(lm_k=args.lm_k)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = CommandParser(prog="contdepth", allow_abbrev=False,  # --imp must not pass for --import
                     description="Continuous-in-depth neural networks: train, evaluate, analyse, compress, export, demo.")
    parser.add_argument("--version", action="version", version=f"contdepth {__version__}")
    parser.add_argument("--import", dest="imports", metavar="MODULE", action="append", default=argparse.SUPPRESS,
                        help="import MODULE first (any number of times, anywhere on the line): a module that "
                             "registers your own models or datasets (contdepth.models.register_model, "
                             "contdepth.data.register_dataset)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    _add_train(sub).set_defaults(func=_cmd_train)
    _add_eval(sub).set_defaults(func=_cmd_eval)
    _add_demo(sub).set_defaults(func=_cmd_demo)
    _add_compress(sub).set_defaults(func=_cmd_compress)
    _add_analyze(sub).set_defaults(func=_cmd_analyze)
    _add_export(sub).set_defaults(func=_cmd_export)
    _add_experiment(sub).set_defaults(func=_cmd_experiment)
    _add_report(sub).set_defaults(func=_cmd_report)
    _add_schemes(sub).set_defaults(func=_cmd_schemes)
    return parser


def _plugin_modules(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(modules, rest)``: the ``--import MODULE`` arguments (anywhere in ``argv``) and the others."""
    modules, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--import" and i + 1 < len(argv):
            modules.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--import="):
            modules.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return modules, rest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``contdepth`` console script; returns the exit status.

    ``--import MODULE`` (any number, anywhere) imports a module that registers models or
    datasets before the rest is read, and installed entry points of the ``contdepth.models``
    and ``contdepth.datasets`` groups are loaded (see `contdepth.plugins`).
    """
    original = list(sys.argv[1:] if argv is None else argv)
    modules, argv = _plugin_modules(original)
    try:
        load_plugins()
        import_modules(modules)
    except ConfigError as exc:
        print(f"contdepth: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while starting up: nothing has begun, so nothing to advise
        print(INTERRUPTED_AT_START, file=sys.stderr)
        return 130
    previous = os.environ.get(IMPORTS_ENV)
    if modules:  # the processes this command starts (experiment workers) import them too; put back after
        os.environ[IMPORTS_ENV] = ",".join(filter(None, [previous or "", *modules]))
    try:
        return _run(argv, original)
    finally:
        if modules:
            if previous is None:
                os.environ.pop(IMPORTS_ENV, None)
            else:
                os.environ[IMPORTS_ENV] = previous


#: What Ctrl-C before a command began prints (``python -m contdepth`` and `main`), instead of a traceback.
INTERRUPTED_AT_START = "\ncontdepth: interrupted while starting; nothing was done"


def _run(argv: list[str], original: list[str]) -> int:
    """Parse ``argv`` and run its command, answering every expected failure in one line."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print(INTERRUPTED_AT_START, file=sys.stderr)
        return 130
    args.argv = original  # the command as given (--import included), for the records that name it
    _expand_user_paths(args)
    try:
        return args.func(args)
    except (ConfigError, *_checkpoint_error()) as exc:
        print(f"contdepth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # a divergence not raised as TrainingDiverged: still one line
        print(f"contdepth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder, a vanished file: name the file, no traceback
        print(f"contdepth {args.command}: error: {os_error_message(exc, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        advice = ""
        if args.command == "experiment":
            advice = ("; finished runs are kept and interrupted ones resume from their last epoch: run "
                      f"the same command again ({' '.join(['contdepth', *map(shlex.quote, args.argv)])})")
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\ncontdepth {args.command}: {what}{advice}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


#: The arguments that are paths, in any command: ``~`` is expanded in them once, here (a shell does
#: not expand it after ``=``, as in ``--out=~/suite``), and every check and write uses that path.
PATH_ARGUMENTS = ("out", "run", "spec", "config", "data_dir", "reuse", "tensorboard")


def _expand_user_paths(args: argparse.Namespace) -> None:
    for name in PATH_ARGUMENTS:
        value = getattr(args, name, None)
        if isinstance(value, str):  # train's --tensorboard is a flag (a bool), analyze's a folder
            setattr(args, name, str(user_path(value)))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            setattr(args, name, [str(user_path(v)) for v in value])


def _checkpoint_error() -> tuple[type[Exception], ...]:
    """``CheckpointError`` once checkpoints are loaded (none can be raised before), without importing them."""
    schema = sys.modules.get("contdepth.train.checkpoint_schema")
    return (schema.CheckpointError,) if schema is not None else ()


def os_error_message(exc: OSError, args: argparse.Namespace) -> str:
    """``PATH: what happened (ERRNO)``, and for a training run what is left on disk.

    Contdepth's own writers name the file they were writing (see
    [`atomic_write_bytes`][contdepth.train.atomic_write_bytes]); an error naming none is shown as is.
    """
    code = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    what = f"{exc.strerror or exc}" + (f" ({code})" if code else "")
    text = f"{exc.filename}: {what}" if exc.filename is not None else what
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text += "; free some space"
    if args.command == "train" and getattr(args, "out", None):
        text += interrupted_advice(args.out)  # what is on disk: atomic writes keep the last checkpoint whole
    return text


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``contdepth`` command: ``train``, ``eval``, ``analyze``, ``compress``, ``export``, ``experiment``,
``report``, ``schemes``, ``demo`` and ``generate``.

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
    contdepth generate runs/text --prompt "Once upon" --tokens 200 --temperature 0.8 --seed 1
    contdepth demo

Every flag of every command is a field of a config class (`contdepth.commands`: ``--refine-at``
for [`TrainConfig`][contdepth.train.TrainConfig]'s ``refine_at``, ``--batch-size`` for
``Runtime.batch_size``); ``train --config FILE`` reads the same keys from YAML and flags override
the file. Options are checked before any work: a bad one exits with status 2 and a message
naming it, having created no folder and loaded no data. ``python -m contdepth`` is the same.
This module is the glue: the parser, plugins, and one-line answers to every expected failure.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
from typing import Sequence

from .cli_parser import CommandParser
from .commands import analyze, compress, demo, evaluate, experiment, export, generate, report, schemes, train
# Names contdepth.cli has always had (tests and users import them from here); they live with their command now.
from .commands.evaluate import TOLERANCE_FLOOR  # noqa: F401
from .commands.evaluate import adaptive_tolerances as _adaptive_tolerances  # noqa: F401
from .commands.experiment import Terminated
from .commands.train import interrupted_advice, train_config_from_args  # noqa: F401
from .common.paths import user_path
from .plugins import IMPORTS_ENV, import_modules, load_plugins
from .train.config import ConfigError

#: The subcommands in ``--help`` order: each module's ``add(sub)`` makes its parser, ``run(args)`` runs it.
COMMANDS = (train, evaluate, demo, compress, analyze, export, experiment, report, schemes, generate)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = CommandParser(prog="contdepth", allow_abbrev=False,  # --imp must not pass for --import
                     description="Continuous-in-depth neural networks: train, evaluate, analyse, compress, export, generate, demo.")
    parser.add_argument("--version", action="version", version=f"contdepth {__version__}")
    parser.add_argument("--import", dest="imports", metavar="MODULE", action="append", default=argparse.SUPPRESS,
                        help="import MODULE first (any number of times, anywhere on the line): a module that "
                             "registers your own models or datasets (contdepth.models.register_model, "
                             "contdepth.data.register_dataset)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    for command in COMMANDS:
        command.add(sub).set_defaults(func=command.run)
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

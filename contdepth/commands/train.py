"""``contdepth train``: one flag per `TrainConfig` field, ``--config FILE`` under them, ``--resume``."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from typing import Any

from ..common.options import add_flags
from ..common.yaml_input import load_yaml_text
from ..train.config import OPTION_GROUPS, ConfigError, TrainConfig, read_yaml
from .options import ModelFlags

CLASSES = (TrainConfig, ModelFlags)
#: The flags written by hand: the file under the flags, and the two ``KEY=VALUE`` mappings.
HAND_WRITTEN = ("config", "model_option", "data_option")


def add(sub: Any) -> argparse.ArgumentParser:
    """Flags override ``--config FILE``, so an unset flag is absent (``SUPPRESS``) and booleans negatable."""
    p = sub.add_parser("train", help="train a model (see contdepth train --help)", argument_default=argparse.SUPPRESS,
                       description="Train a model. Flags override --config FILE; every check runs before any work.")
    p.add_argument("--config", metavar="FILE", help="YAML file with TrainConfig keys (flags override it)")
    groups = {name: p.add_argument_group(name) for name in OPTION_GROUPS}
    add_flags(p, TrainConfig, defaults=False, negatable=True, groups=groups,
              instead={"model_options": _model_flags, "data_options": _data_flags})
    return p


def _model_flags(group: Any) -> None:
    add_flags(group, ModelFlags, defaults=False)
    group.add_argument("--model-option", dest="model_option", action="append", metavar="KEY=VALUE",
                       help="any other model option (value read as YAML: 3, 0.5, true, [1,2,4]); repeatable")


def _data_flags(group: Any) -> None:
    group.add_argument("--data-option", dest="data_option", action="append", metavar="KEY=VALUE",
                       help="dataset loader option, e.g. test_fraction=0.25; repeatable")


def _key_value(text: str, flag: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read by the one YAML reader (bounded aliases, depth and size, plain types)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{flag}: expected KEY=VALUE, got {text!r}")
    value = load_yaml_text(raw, f"{flag} {key.strip()[:60]}") if raw.strip() else None
    return key.strip().replace("-", "_"), value


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of parsed ``train`` arguments (defaults < saved run < file < flags)."""
    from ..train.checkpoint import read_checkpoint
    from ..train.rundir import check_run_dir

    model_flags = {f.name for f in fields(ModelFlags)}
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "func", "argv")}
    overrides: dict[str, Any] = {}
    model_options: dict[str, Any] = {}
    data_options: dict[str, Any] = {}
    for key, value in given.items():
        if key in model_flags:  # --alpha is model_options.alpha; a list of one is its value
            model_options[key] = value[0] if isinstance(value, list) and len(value) == 1 else value
        elif key in ("model_option", "data_option"):
            target = model_options if key == "model_option" else data_options
            for item in value:
                k, v = _key_value(item, "--" + key.replace("_", "-"))
                target[k] = v
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


def run(args: argparse.Namespace) -> int:
    from ..train import train

    config = train_config_from_args(args)
    try:
        train(config)
    except KeyboardInterrupt:
        print(f"\ncontdepth train: interrupted{interrupted_advice(config.out, config)}", file=sys.stderr)
        return 130
    return 0


def interrupted_advice(out: str | None, config: TrainConfig | None = None) -> str:
    """What to do after an interruption, by what is on disk now (so the advice works).

    An interrupted ``--resume --extend`` run is advised to extend again: its checkpoint may
    still hold the old length.
    """
    from ..train.rundir import folder_state

    if out is None:
        return " (nothing was saved: no --out)"
    if folder_state(out) == "run":
        extend = f" --epochs {config.epochs} --extend" if config is not None and config.extend else ""
        return f"; continue with: contdepth train --resume --out {shlex.quote(str(out))}{extend}"
    return f"; nothing was saved in {out} yet: run the same command again to start over"


__all__ = ["CLASSES", "HAND_WRITTEN", "add", "interrupted_advice", "run", "train_config_from_args"]

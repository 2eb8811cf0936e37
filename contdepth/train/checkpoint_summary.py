"""A one-line summary of a checkpoint description: what ``print(info)`` shows.

Why: a ``CheckpointInfo`` holds the whole optimizer state (every parameter's name in every
param group, every momentum tensor) and the run's full config and history; the
dataclass's own repr printed all of it (35 KB for a small ContinuousNet), so ``print(info)``
in a notebook buried the few facts one looks for. The summary names the model and its
options, the epoch, each block's basis layout, and for the optimizer its class, groups
and the *keys* of its state with their tensor counts and sizes, never values.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..common.validate import shorten
from .typed_json import encode

#: Longest text shown for the model's options (a value read from a file may be any size).
OPTIONS_CHARS = 120
#: Blocks listed by their layout before the rest are counted.
LAYOUT_BLOCKS = 4


def _options(options: object) -> str:
    if not isinstance(options, dict) or not options:
        return "no options"
    return shorten(", ".join(f"{k}={v!r}" for k, v in options.items()), OPTIONS_CHARS)


def _layout(layout: object) -> str:
    if not isinstance(layout, list):
        return "?"
    entries = []
    for entry in layout[:LAYOUT_BLOCKS]:
        if isinstance(entry, dict):
            entries.append(f"{entry.get('basis')} x{entry.get('n_basis')} / "
                           f"{entry.get('scheme')} x{entry.get('n_steps')}")
        else:
            entries.append("?")
    more = len(layout) - LAYOUT_BLOCKS
    return "[" + "; ".join(entries) + (f"; ... {more} more" if more > 0 else "") + "]"


def _optimizer(optimizer: Any, tensors: object) -> str:
    """An `OptimizerDescription` (or ``None``) in a few words: class, groups, state keys with counts and sizes."""
    if optimizer is None:
        return "None"
    groups = optimizer.param_groups
    n_params = sum(len(g.get("params", ())) for g in groups)
    counts: Counter[str] = Counter()
    values: Counter[str] = Counter()
    for name, tensor in (tensors.items() if isinstance(tensors, dict) else ()):
        key = str(name).rpartition(".")[2]
        counts[key] += 1
        values[key] += int(getattr(tensor, "numel", lambda: 0)())
    for entry in optimizer.state.values():
        for key in entry.values:
            counts[key] += 1  # a number kept per parameter (a step count)
    keys = ", ".join(f"{key} x{counts[key]}" + (f" ({values[key]:,} values)" if values[key] else "")
                     for key in sorted(counts)) or "empty"
    plural = "s" if len(groups) != 1 else ""
    return f"{optimizer.class_name} ({len(groups)} param group{plural}, {n_params} parameters; state: {keys})"


def _states(info: Any) -> str:
    """The LR schedule, loss scale and early-stopping states that the checkpoint holds, each cut short."""
    parts = []
    for name in ("lr_schedule", "grad_scaler", "early_stopping"):
        state = getattr(info, name)
        if state is not None:
            text = ", ".join(f"{k}={v!r}" for k, v in encode(state).items())
            parts.append(f"{name}={shorten(text, 60) or '{}'}")
    return ", ".join(parts) or "lr_schedule=None"


def summarize(info: Any) -> str:
    """``CheckpointInfo(...)`` on one line, every field summarised.

    It reads the info's attributes only, so that this module needs nothing of
    ``checkpoint.py``, which calls it (see the module's docstring).
    """
    model = f"{info.model_name!r}" + (f" ({info.model_class})" if info.model_class else "")
    config = f"{len(info.config)} keys" if isinstance(info.config, dict) else "None"
    return (f"CheckpointInfo(path='{info.path}', model={model} [{_options(info.model_options)}], "
            f"epoch={info.epoch}, layout={_layout(info.layout)}, history={len(info.history)} entries, "
            f"optimizer={_optimizer(info.optimizer, info.optimizer_tensors)}, {_states(info)}, "
            f"config={config}, version={info.version!r}, format_version={info.format_version})")

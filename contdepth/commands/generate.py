"""``contdepth generate``: text sampled from a text run's model (a byte-level GPT) after a prompt."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from typing import Any

from ..train.config import ConfigError
from . import add_command, options_of, runtime_of
from .options import Generate

CLASSES = (Generate,)
RUNTIME = {"run": {}, "threads": {}, "device": {}}


def add(sub: Any) -> argparse.ArgumentParser:
    return add_command(sub, "generate", classes=CLASSES, runtime=RUNTIME,
                       help="sample text from a text run's model after a prompt",
                       description="Continue --prompt by --tokens bytes sampled from a text run's model (a "
                                   "byte-level GPT), at its trained manifestation or another (--scheme, --n-steps), "
                                   "and print the prompt and the sample.")


#: Control characters a sampled byte may decode to, but a terminal would obey (an escape sequence from a
#: trained model, or from a hostile checkpoint, can move the cursor or retitle the window): shown as
#: ``\xNN`` instead; newlines and tabs stay, they are text.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in "\n\t"}


def printable(text: str) -> str:
    """``text`` with every control character but newline and tab written as ``\\xNN``."""
    return text.translate(_CONTROLS)


def run(args: argparse.Namespace) -> int:
    options = options_of(args, Generate)
    runtime = runtime_of(args, RUNTIME)
    import torch

    from ..models import GPT, available_models, generate, model_kind
    from ..nn import continuous_blocks, manifest
    from ..train import load_checkpoint, read_description
    from ..train.config import CUSTOM_MODEL

    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    name = read_description(runtime.run)["model"]["name"]  # the model's kind, before any tensor is read
    if name == CUSTOM_MODEL:
        raise ConfigError(f"run: {runtime.run} holds a model of your own module ('custom'); generate rebuilds "
                          "registered text models only")
    if name in available_models() and model_kind(name) != "text":
        kind = model_kind(name)
        raise ConfigError(f"run: {runtime.run} holds model {name!r}, {'an' if kind[0] in 'aeiou' else 'a'} {kind} "
                          "model; generate samples from a text model (gpt)")
    model, _ = load_checkpoint(runtime.run, device=runtime.device)
    if not isinstance(model, GPT):
        raise ConfigError(f"run: {runtime.run} holds model {name!r}, which is not a contdepth GPT; generate samples "
                          "from a GPT")
    other = options.scheme is not None or options.n_steps is not None
    if other and not continuous_blocks(model):
        raise ConfigError(f"scheme: model {name!r} of {runtime.run} is discrete (no ContinuousBlock), so it has one "
                          "manifestation only; --scheme and --n-steps need a continuous model")
    prompt = options.prompt_bytes
    try:
        with manifest(model, options.scheme, options.n_steps) if other else nullcontext():
            sample = generate(model, prompt, options.tokens, temperature=options.temperature, top_k=options.top_k,
                              seed=options.seed, cache=not options.no_cache)
    except ConfigError:
        raise
    except ValueError as exc:  # a scheme the model cannot take, a cache the manifestation cannot serve
        raise ConfigError(str(exc)) from exc
    text = printable((prompt + sample).decode("utf-8", errors="replace"))
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    print(text.encode(encoding, errors="replace").decode(encoding))  # a terminal that cannot show a character
    return 0


__all__ = ["CLASSES", "RUNTIME", "add", "run"]

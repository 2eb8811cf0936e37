"""Models by name: ``create(name, **options)`` with options checked against the builder."""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

Builder = Callable[..., nn.Module]
_MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make a builder (keyword-only options) available to :func:`create`."""

    def add(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"name: a model called {name!r} is already registered")
        _MODELS[name] = builder
        return builder

    return add


def available_models() -> list[str]:
    return sorted(_MODELS)


def model_options(name: str) -> dict[str, object]:
    """The options a model accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
    builder = _get(name)
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()}


def _get(name: str) -> Builder:
    if name not in _MODELS:
        raise ValueError(f"model: unknown model {name!r}; choose one of: {', '.join(available_models())}")
    return _MODELS[name]


def create(name: str, **options: object) -> nn.Module:
    """Build model ``name``; unknown options fail with the list of accepted ones.

    The returned module remembers how it was built in ``model.config`` (name and
    options), which is what checkpoints store to rebuild it.
    """
    builder = _get(name)
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"{unknown[0]}: not an option of model {name!r}; accepted: {', '.join(sorted(accepted))}"
        )
    missing = [k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in options]
    if missing:
        raise ValueError(f"{missing[0]}: required by model {name!r}")
    model = builder(**options)
    model.config = {"name": name, "options": dict(options)}  # type: ignore[assignment]
    return model

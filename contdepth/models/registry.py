"""Models by name: ``create(name, **options)`` with options checked against the builder.

The table is `MODELS`, a `contdepth.common.registry.Registry` (the shape every registry of
contdepth has). Torch-free by design: the built-in models are declared from `BUILTIN_MODELS`
with the module whose import registers them, so naming them (``contdepth train --help``, error
messages) loads neither torch nor the builders; a built-in's module is imported when the
model is first used (`create`, `model_options`, `is_graph_model`).
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import TYPE_CHECKING, Callable

from ..common.registry import Registry

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[..., "nn.Module"]

#: What a model takes and a dataset holds: images (``model(x)`` on ``N x C x H x W``, class
#: logits), graphs (``model(features, adjacency)``, node logits) or text (``model(tokens)`` on
#: ``batch x tokens`` bytes, next-byte logits). A model and a dataset of different kinds are
#: refused from their names, before any file is read.
KINDS = ("image", "graph", "text")

#: The models contdepth defines: name -> (the module that registers it, its kind).
#: tests/models/test_models.py checks it against what the modules register.
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    **{name: ("contdepth.models.image", "image") for name in ("continuousnet", "resnet", "lm_resnet", "continuous_mlp")},
    **{name: ("contdepth.models.architectures", "image") for name in ("polynet", "fractalnet", "revnet")},
    **{name: ("contdepth.models.graph", "graph") for name in ("gcn", "gcde", "cgnn")},
    "gpt": ("contdepth.models.gpt", "text"),
}


def _kind_tags(kind: str) -> tuple[str, ...]:
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}; got {kind!r}")
    return () if kind == "image" else (kind,)


#: Every model by name (a `Registry`); a graph or text model carries the tag ``"graph"`` or ``"text"``.
MODELS: Registry[Builder] = Registry("model")
for _name, (_module, _kind) in BUILTIN_MODELS.items():
    MODELS.declare(_name, _module, tags=_kind_tags(_kind))
del _name, _module, _kind


def register_model(name: str, *, graph: bool = False, kind: str | None = None,
                   overwrite: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: make a builder (keyword-only options) available to [`create`][contdepth.models.create].

    ``graph=True`` marks a node-classification model, called as ``model(features,
    adjacency)``: trainers and the command line need to know this before any data is read,
    to refuse an image dataset for it (and a graph dataset for an image model). ``kind``
    names it in general (`KINDS`: ``"image"``, ``"graph"``, ``"text"``; ``graph=True`` is
    ``kind="graph"``). A name that is taken (a built-in included) needs ``overwrite=True``.
    """
    if graph and kind not in (None, "graph"):
        raise ValueError(f"kind: graph=True contradicts kind={kind!r}")
    tags = _kind_tags(kind or ("graph" if graph else "image"))

    def add(builder: Builder) -> Builder:
        if name == "custom":
            raise ValueError("name: 'custom' is reserved for runs of a module given in Python; choose another name")
        return MODELS.register(name, builder, overwrite=overwrite, tags=tags)

    return add


def available_models(*, graph: bool | None = None, kind: str | None = None) -> list[str]:
    """Every model name, sorted (built-in and registered); ``graph``: only graph models (``False``: only
    the others); ``kind``: only models of that kind (`KINDS`).

    Imports nothing: a built-in is named from `BUILTIN_MODELS` before its module is loaded.
    """
    if kind is not None:
        _kind_tags(kind)
    return [n for n in MODELS.names() if (graph is None or ("graph" in MODELS.tags(n)) == graph)
            and (kind is None or _kind_of(n) == kind)]


def _kind_of(name: str) -> str:
    tags = MODELS.tags(name)
    return next((k for k in KINDS if k in tags), "image")


def model_kind(name: str) -> str:
    """``"image"``, ``"graph"`` or ``"text"``: what model ``name`` takes (from its registration; imports nothing)."""
    return _kind_of(name)  # an unknown name: the registry's one-line answer


def is_graph_model(name: str) -> bool:
    """Whether model ``name`` classifies the nodes of a graph (registered with ``graph=True``)."""
    MODELS.get(name)
    return "graph" in MODELS.tags(name)


def model_options(name: str) -> dict[str, object]:
    """The options a model accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
    builder = MODELS.get(name)
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()}


def create(name: str, **options: object) -> nn.Module:
    """Build model ``name``; unknown options fail with the list of accepted ones.

    The returned module remembers how it was built in ``model.config`` (name and
    options), which is what checkpoints store to rebuild it.
    """
    builder = MODELS.get(name)
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"{unknown[0]}: not an option of model {name!r}; accepted: {', '.join(sorted(accepted))}"
        )
    missing = [k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in options]
    if missing:
        raise ValueError(f"{missing[0]}: required by model {name!r}")
    try:
        model = builder(**options)
    except (ValueError, TypeError, RuntimeError) as exc:
        # A builder names the option it rejects; an error from deeper down (a layer given a
        # string for a width) is traced back to the option whose value has the wrong type.
        if not _names_an_option(str(exc), accepted):
            wrong = _wrong_type(builder, options)
            if wrong is not None:
                raise ValueError(wrong) from exc
        raise
    model.config = {"name": name, "options": dict(options)}  # type: ignore[assignment]
    return model


def created_name(model: object) -> str | None:
    """The registered name ``model`` was built under by [`create`][contdepth.models.create], or ``None`` (a module built otherwise)."""
    config = getattr(model, "config", None)
    if isinstance(config, dict) and isinstance(config.get("name"), str) and config["name"] in MODELS \
            and isinstance(config.get("options"), dict):
        return config["name"]
    return None


def _names_an_option(message: str, accepted: dict[str, object]) -> bool:
    """Whether ``message`` starts with an option's name (``"alpha: ..."``, ``"rate_dropout[1]: ..."``)."""
    head = message.split(":", 1)[0].split("[", 1)[0].strip()
    return head in accepted


def _wrong_type(builder: Builder, options: dict[str, object]) -> str | None:
    """``"NAME: must be TYPE, got VALUE"`` for the first option whose value does not fit its annotation."""
    try:
        hints = typing.get_type_hints(builder)
    except Exception:  # an annotation that does not evaluate: nothing to compare against
        return None
    for key, value in options.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            return f"{key}: must be {_describe(hint)}, got {value!r}"
    return None


def _fits(value: object, hint: object) -> bool:
    """Whether ``value`` (as read from YAML or a flag) fits the annotation ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        items = [a for a in args if a is not Ellipsis]
        return not items or all(_fits(v, items[0]) for v in value)
    return True  # an annotation this check does not know: the builder decides


def _describe(hint: object) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]  # type: ignore[index]
    if origin in (list, tuple):
        items = [a for a in args if a is not Ellipsis]
        plural = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(items[0], 'values')}" if items else "a list"  # type: ignore[arg-type]
    return getattr(hint, "__name__", str(hint))

"""Options as dataclass fields, and the command-line flags generated from them.

Why one place: a command's options used to be written twice, as a dataclass (or function
arguments) and again as hand-made argparse flags, and the two drifted (three evaluation batch
sizes, help naming values the checks refused). A config class declares each option once with
`option`; `add_flags` turns its fields into flags and `values_from` reads the parsed values
back, so every command spells an option the same way and a new field gets its flag for free.

This module imports neither torch nor the rest of contdepth: ``contdepth --help`` builds every
parser from these fields.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields
from typing import Any, Callable, Iterable, Mapping

#: What a command may say differently about a field it shares (`add_flags` ``overrides``).
OVERRIDABLE = ("help", "default", "required", "metavar")


def option(default: Any = MISSING, *, help: str, group: str | None = None, default_factory: Any = MISSING,
           metavar: str | tuple[str, ...] | None = None, flag: bool = True, items: tuple[type, Any] | None = None,
           choices: tuple[str, ...] | None = None, listing: Callable[[], str] | None = None,
           positional: bool = False, repeatable: bool = False) -> Any:
    """A config field with its help: the one source of its flag, its ``--help`` line and its default.

    Args:
        help: what the option means (one or two sentences; `add_flags` adds the default).
        group: the ``--help`` section; ``None``: the command's own options.
        metavar: the value's name in ``--help``.
        flag: ``False`` for an option the command line does not offer, or spells differently
            (``model_options`` is ``--model-option KEY=VALUE``; see ``instead`` of `add_flags`).
        items: for a tuple option, ``(item type, nargs)`` on the command line.
        choices: the values ``--help`` lists and the parser accepts.
        listing: names the allowed values from their registry, appended to ``help`` when the
            parser is built, so names registered later (plugins, ``--import``) are listed too;
            it must not import torch (``contdepth --help``).
        positional: an argument without a flag (``contdepth eval RUN``).
        repeatable: a flag given any number of times, each adding one value (``--reuse DIR``);
            the value's type is ``items[0]`` (default ``str``).
    """
    metadata = {"help": help, "group": group, "metavar": metavar, "flag": flag, "items": items, "choices": choices,
                "listing": listing, "positional": positional, "repeatable": repeatable}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def help_of(f: Field) -> str:
    """The help of field ``f`` as ``--help`` shows it, without the default."""
    listing = f.metadata.get("listing")
    return f.metadata["help"] + (f"; {listing()}" if listing is not None else "")


def default_of(f: Field) -> Any:
    """The default of field ``f``; ``MISSING`` for a field that must be given."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


def format_default(value: Any) -> str:
    """A default as ``--help`` writes it: ``none``, ``on``/``off``, ``1 256``, ``0.0005``."""
    if value is None or value == () or value == {} or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def flag_type(annotation: object) -> type:
    """The argparse ``type`` of a field from its annotation, a string (``"int | None"`` -> ``int``, what
    ``from __future__ import annotations`` leaves) or a type (``int``, ``int | None``, a user's class)."""
    args = getattr(annotation, "__args__", None)
    if args and not isinstance(annotation, type):  # int | None, Optional[int]
        annotation = next((a for a in args if a is not type(None)), str)
    name = annotation.__name__ if isinstance(annotation, type) else str(annotation).split("|")[0].strip()
    return {"int": int, "float": float, "str": str}[name]


def add_flags(parser: Any, cls: type, *, names: Iterable[str] | None = None,
              overrides: Mapping[str, Mapping[str, Any]] | None = None, defaults: bool = True,
              negatable: bool = False, groups: Mapping[str, Any] | None = None,
              instead: Mapping[str, Callable[[Any], None]] | None = None) -> dict[str, argparse.Action]:
    """One flag per field of the dataclass ``cls`` (``--refine-at`` for ``refine_at``), from its `option`.

    Args:
        parser: an ``argparse`` parser or argument group.
        names: the fields to add (default: every field): a command takes the ``Runtime``
            options it uses.
        overrides: per field, what this command says differently (`OVERRIDABLE`: ``help``,
            ``default``, ``required``, ``metavar``), e.g. what ``--out`` names here.
        defaults: put each field's default into the parsed values. ``False`` where flags
            override another source (``train --config FILE``): an unset flag is then absent
            (the parser's ``argument_default=SUPPRESS``), so the file's value stays.
        negatable: booleans as ``--x/--no-x`` (a flag can switch off what a file switched
            on) instead of a switch that only turns on.
        groups: the ``--help`` sections by name, made beforehand in the order wanted; a
            section not among them is made when its first field is met.
        instead: for a field with ``flag=False``, a function adding what the command line
            spells instead, called with the field's section (or ``parser``).

    Returns:
        The actions added, by field name.
    """
    known = {f.name for f in fields(cls)}
    chosen = None if names is None else set(names)
    overrides = overrides or {}
    stray = ((chosen or set()) | set(overrides)) - known
    if stray:  # a programming error in a command's table, not a user's
        raise ValueError(f"{cls.__name__} has no field {sorted(stray)[0]!r}")
    sections = dict(groups or {})
    added: dict[str, argparse.Action] = {}
    for f in fields(cls):
        if chosen is not None and f.name not in chosen:
            continue
        section = f.metadata.get("group")
        target = parser
        if section is not None:
            if section not in sections:
                sections[section] = parser.add_argument_group(section)
            target = sections[section]
        if not f.metadata.get("flag", True):
            if instead and f.name in instead:
                instead[f.name](target)
            continue
        words, kwargs = _argument(f, overrides.get(f.name, {}), defaults=defaults, negatable=negatable)
        added[f.name] = target.add_argument(*words, **kwargs)
    return added


def _argument(f: Field, override: Mapping[str, Any], *, defaults: bool,
              negatable: bool) -> tuple[list[str], dict[str, Any]]:
    """The ``add_argument`` words and keywords of field ``f``."""
    meta = f.metadata
    unknown = set(override) - set(OVERRIDABLE)
    if unknown:
        raise ValueError(f"{f.name}: cannot override {sorted(unknown)[0]!r}; only {', '.join(OVERRIDABLE)}")
    default = override.get("default", default_of(f))
    is_bool = f.type is bool or str(f.type) == "bool"  # a real annotation, or the string one a future import leaves
    switch = is_bool and not negatable and default is False  # off unless given: no default to show
    text = override.get("help", help_of(f))
    quiet = switch or meta.get("repeatable")  # a switch is off, a repeatable flag empty, unless given
    if default is not MISSING and default is not None and not quiet:  # "not set" means something per option
        text += f" (default: {format_default(default)})"
    kwargs: dict[str, Any] = {"help": text}
    metavar = override.get("metavar", meta.get("metavar"))
    if metavar is not None:
        kwargs["metavar"] = metavar
    if meta.get("choices") is not None:
        kwargs["choices"] = meta["choices"]
    if defaults and default is not MISSING:
        kwargs["default"] = list(default) if meta.get("repeatable") else default
    if meta.get("positional"):
        kwargs["type"] = flag_type(f.type)
        return [f.name], kwargs
    kwargs["dest"] = f.name
    if override.get("required") or (defaults and default is MISSING):
        kwargs["required"] = True
    if is_bool:
        kwargs["action"] = "store_true" if switch else argparse.BooleanOptionalAction
    elif meta.get("repeatable"):
        kwargs.update(action="append", type=(meta.get("items") or (str,))[0])
    elif meta.get("items") is not None:
        kwargs["type"], kwargs["nargs"] = meta["items"]
    else:
        kwargs["type"] = flag_type(f.type)
    return [f"--{f.name.replace('_', '-')}"], kwargs


def values_from(namespace: argparse.Namespace, cls: type, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The parsed values of ``cls``'s fields that ``namespace`` holds: keyword arguments for ``cls(...)``.

    ``names`` restricts them to the fields a command took (`add_flags` ``names``), so two
    classes with a field of the same name in one command do not read each other's value.
    """
    chosen = None if names is None else set(names)
    return {f.name: getattr(namespace, f.name) for f in fields(cls)
            if (chosen is None or f.name in chosen) and hasattr(namespace, f.name)}


__all__ = ["OVERRIDABLE", "add_flags", "default_of", "flag_type", "format_default", "help_of", "option", "values_from"]

"""Typed JSON records: frozen dataclasses whose fields carry their own checks.

Why: ``checkpoint.json`` was described four times (the writer built it key by key, a schema
checked it key by key, the reader and ``CheckpointInfo`` read it again). Here a record is one
dataclass; each field names its JSON key, its check (a `Spec`) and whether it may be left out,
so `decode` (read, check, build) and `encode` (write) cannot disagree about the layout.
Why not msgspec or pydantic (measured for issue 28, see ``CHANGELOG.md``): both word errors
their own way and without the value (``Expected `int` >= 1 - at `$.epoch```), msgspec cannot
keep *and* check the unknown keys of an open record (metrics rows, param groups), pydantic costs
~120 ms more to import; this checks a 200-epoch description in a few ms, standard library only.

A check raises `Invalid` with the place (``history[0].epoch``) and the problem; the caller adds
the file. Values stay the JSON's own types: records are frozen, their lists and dicts are the file's.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable, Mapping

from ..common.validate import SHOW_CHARS, is_int, is_number, show



class Invalid(ValueError):
    """A value that does not fit its field: ``where`` (``""`` at the top) and ``problem``."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}" if where else problem)


def child(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def is_scalar(value: object) -> bool:
    """``None``, a bool, an integer, a string or a finite float."""
    return value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))


# --- specs: one check each; ``context`` holds fields already read at the top (``epoch``) ----------
class Spec:
    """Checks one value at ``where`` and returns it (as stored)."""

    def check(self, value: Any, where: str, context: dict) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Spec):
    """An integer (not a bool) in ``low..high``; ``high`` may name a context field (``"epoch"``)."""

    low: int = 0
    high: int | str | None = None

    def check(self, value: Any, where: str, context: dict) -> int:
        high = context.get(self.high) if isinstance(self.high, str) else self.high
        if not is_int(value) or value < self.low or (high is not None and value > high):
            allowed = f"in {self.low}..{high}" if high is not None else f">= {self.low}"
            raise Invalid(where, f"must be an integer {allowed}, got {show(value)}")
        return value


@dataclass(frozen=True)
class Number(Spec):
    """A JSON number (not a bool) in the interval; infinities and NaN only where ``finite`` is False."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = True

    def check(self, value: Any, where: str, context: dict) -> float:
        ok = is_number(value) and (not self.finite or math.isfinite(value))
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if ok:
            return value
        low, high = self.low, self.high
        if low is not None and high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            allowed = f"a number in {opening}{float(low)}, {float(high)}{closing}"
        elif low is not None:
            allowed = f"a finite number {'>' if self.low_open else '>='} {float(low)}"
        else:
            allowed = "a finite number" if self.finite else "a number"
        raise Invalid(where, f"must be {allowed}, got {show(value)}")


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, value: Any, where: str, context: dict) -> bool:
        if not isinstance(value, bool):
            raise Invalid(where, f"must be true or false, got {show(value)}")
        return value


@dataclass(frozen=True)
class Text(Spec):
    """A string, matching ``pattern`` (whole) if given; ``words`` says what it must be."""

    words: str = "a string"
    pattern: str | None = None

    def check(self, value: Any, where: str, context: dict) -> str:
        if not isinstance(value, str) or (self.pattern is not None and not re.fullmatch(self.pattern, value)):
            raise Invalid(where, f"must be {self.words}, got {show(value)}")
        return value


@dataclass(frozen=True)
class Flat(Spec):
    """A JSON scalar (finite) or a list of them: all a model option, row entry or hyperparameter needs.

    ``lists`` and ``strings`` False narrow it (an optimizer's per-parameter numbers)."""

    words: str = "a number, string, bool, null or a list of those"
    lists: bool = True
    strings: bool = True

    def check(self, value: Any, where: str, context: dict) -> Any:
        ok = is_scalar(value) or (self.lists and isinstance(value, list) and all(is_scalar(v) for v in value))
        if not ok or (not self.strings and (isinstance(value, str) or isinstance(value, list)
                                            and any(isinstance(v, str) for v in value))):
            raise Invalid(where, f"must be {self.words}, got {show(value)}")
        return value


@dataclass(frozen=True)
class Names(Spec):
    """A list of strings (``distinct`` if asked), refused as a whole: ``must be a list of parameter names``."""

    words: str
    distinct: bool = False

    def check(self, value: Any, where: str, context: dict) -> list:
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)
                and (not self.distinct or len(set(value)) == len(value))):
            raise Invalid(where, f"must be {self.words}, got {show(value)}")
        return value


@dataclass(frozen=True)
class Nullable(Spec):
    """``None``, or what ``inner`` accepts."""

    inner: Spec

    def check(self, value: Any, where: str, context: dict) -> Any:
        return None if value is None else self.inner.check(value, where, context)


@dataclass(frozen=True)
class All(Spec):
    """Each spec in turn, on the value the one before returned."""

    specs: tuple[Spec, ...]

    def check(self, value: Any, where: str, context: dict) -> Any:
        for spec in self.specs:
            value = spec.check(value, where, context)
        return value


@dataclass(frozen=True)
class Call(Spec):
    """A check written as a function ``(value, where, context) -> value`` (agreement between keys)."""

    function: Callable[[Any, str, dict], Any]

    def check(self, value: Any, where: str, context: dict) -> Any:
        return self.function(value, where, context)


@dataclass(frozen=True)
class ListOf(Spec):
    """A list of ``item`` values (``length`` of them if given); ``words`` when it is none; ``nonempty`` if asked."""

    item: Spec
    words: str = "a list"
    nonempty: bool = False
    length: int | None = None

    def check(self, value: Any, where: str, context: dict) -> list:
        if not isinstance(value, list) or (self.length is not None and len(value) != self.length):
            raise Invalid(where, f"must be {self.words}, got {show(value)}")
        if self.nonempty and not value:
            raise Invalid(where, "is empty")
        return [self.item.check(v, f"{where}[{i}]", context) for i, v in enumerate(value)]


@dataclass(frozen=True)
class MapOf(Spec):
    """An object whose values are ``value``; keys shown ``.key`` or, with ``quoted``, ``['key']``."""

    value: Spec
    words: str = "an object"
    quoted: bool = False

    def check(self, data: Any, where: str, context: dict) -> dict:
        if not isinstance(data, dict):
            raise Invalid(where, f"must be {self.words}, got {show(data)}")
        return {key: self.value.check(v, f"{where}[{show(key)}]" if self.quoted else child(where, key), context)
                for key, v in data.items()}


@dataclass(frozen=True)
class Row(Spec):
    """An open object (a metrics row, a param group): ``known`` keys checked, others by ``extra``
    (``None``: not here, as a run's config, which ``TrainConfig.from_dict`` checks)."""

    known: Mapping[str, Spec]
    required: tuple[str, ...] = ()
    extra: Spec | None = Flat()
    words: str = "an object"

    def check(self, data: Any, where: str, context: dict) -> dict:
        if not isinstance(data, dict):
            raise Invalid(where, f"must be {self.words}, got {type(data).__name__}")
        for key in self.required:
            if key not in data:
                raise Invalid(where, f"missing key {show(key)}")
        checks = {key: self.known.get(key, self.extra) for key in data}
        return {key: v if checks[key] is None else checks[key].check(v, child(where, key), context)
                for key, v in data.items()}


# --- records --------------------------------------------------------------------------------------------
def spec(check: Spec, *, key: str | None = None, default: Any = MISSING, absent: Any = MISSING,
         omit_default: bool = False) -> Any:
    """A record field: its ``check``, its JSON ``key`` (default: the field's name) and, if optional,
    its ``default``. ``absent``: a missing key reads as this value and is checked like any other
    (``optimizer.state: must be a dict, got None``). ``omit_default``: `encode` leaves the key
    out while the value is the default (``refine_lr_scale`` 1, no early-stopping state)."""
    metadata = {"spec": check, "key": key, "absent": absent, "omit_default": omit_default}
    return field(default=default, metadata=metadata)


def _key(f: Field) -> str:
    return f.metadata["key"] or f.name


@dataclass(frozen=True)
class Record(Spec):
    """A record class (a dataclass of `spec` fields) read from a JSON object.

    Unknown keys are refused. ``words`` is said when the value is no object; with ``exact``
    it is also said for a missing or unknown key (``must be an object with keys ...``).
    """

    cls: type
    words: str = "an object"
    exact: bool = False

    def check(self, data: Any, where: str, context: dict) -> Any:
        return decode(self.cls, data, where, context, words=self.words, exact=self.exact)


_PLANS: dict[type, tuple] = {}


def _plan(cls: type) -> tuple:
    """``(fields, keys, context names, agree)`` of a record class, worked out once per class."""
    if cls not in _PLANS:
        record_fields = fields(cls)
        _PLANS[cls] = (record_fields, [_key(f) for f in record_fields], getattr(cls, "CONTEXT", ()),
                       hasattr(cls, "agree"))
    return _PLANS[cls]


def decode(cls: type, data: Any, where: str = "", context: dict | None = None, *, words: str = "an object",
           exact: bool = False) -> Any:
    """An instance of record class ``cls`` from JSON ``data``, every field checked; else `Invalid`.

    A field named in the class's ``CONTEXT`` (a tuple of names) is added to ``context`` once
    read, for the checks of later fields that depend on it (``Int(0, "epoch")``). The record's
    ``agree(where, context)``, if it has one, then checks its fields together.
    """
    context = {} if context is None else context
    record_fields, keys, context_names, agrees = _plan(cls)
    if not isinstance(data, dict):
        raise Invalid(where, f"must be {words}, got {type(data).__name__}")
    unknown = [k for k in data if k not in keys]
    if unknown:
        if exact:
            raise Invalid(where, f"must be {words}, got {show(data)}")
        raise Invalid(where, f"unknown key {show(unknown[0])} (the keys are {', '.join(keys)})")
    values = {}
    for f, key in zip(record_fields, keys):
        meta = f.metadata
        if key in data:
            value = data[key]
        elif meta["absent"] is not MISSING:
            value = meta["absent"]
        elif f.default is not MISSING or f.default_factory is not MISSING:
            continue
        elif exact:
            raise Invalid(where, f"must be {words}, got {show(data)}")
        else:
            raise Invalid(where, f"missing key {show(key)}")
        values[f.name] = meta["spec"].check(value, child(where, key), context)
        if f.name in context_names:
            context[f.name] = values[f.name]
    record = cls(**values)
    if agrees:
        record.agree(where, context)
    return record


def encode(value: Any) -> Any:
    """``value`` as JSON types: records become objects (in field order), tuples lists."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    out = {}
    for f, key in zip(*_plan(type(value))[:2]):  # a record
        item = getattr(value, f.name)
        if not (f.metadata["omit_default"] and item == f.default):
            out[key] = encode(item)
    return out

"""One family of validators: each checks one value, names the option, and returns the value.

Every check raises :class:`~contdepth.common.OptionError` with the option's name, so all
layers word the same problem the same way ("must be an integer >= 1, got 0") and a caller
can re-label it (:meth:`OptionError.within`).  ``bool`` is never accepted as a number,
although Python counts it as one: ``n_steps=True`` is a mistake, not 1.
"""

from __future__ import annotations

import math
from typing import Iterable, TypeVar

from .errors import OptionError

T = TypeVar("T")


def _range_words(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None,
              allow_none: bool = False) -> int:
    """A Python integer (not a bool) in ``[low, high]``; ``None`` too with ``allow_none``.

    Numpy integers are refused: they do not survive a JSON or YAML round trip (a caller that
    reads them from an array converts them first, ``int(value)``)."""
    if value is None and allow_none:
        return value  # type: ignore[return-value]
    if low is not None and high is not None:
        words = f"in {low:,}..{high:,}"
    else:
        words = _range_words(low, high, False, False)
    expected = f"an integer {words}".rstrip() + (" or null" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(name, f"must be {expected}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        shown = f"{value:,}" if abs(value) >= 10_000 else str(value)
        raise OptionError(name, f"must be {expected}, got {shown}")
    return value


def check_number(value: object, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False) -> float:
    """A finite real number (int or float, not a bool) within the bounds; returned as ``float``."""
    if value is None and allow_none:
        return value  # type: ignore[return-value]
    words = _range_words(low, high, low_open, high_open)
    expected = f"a finite number {words}".rstrip() + (" or null" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionError(name, f"must be {expected}, got {value!r}")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        raise OptionError(name, f"must be {expected}, got {value!r}")
    return float(value)


def check_choice(value: object, name: str, choices: Iterable[T]) -> T:
    """One of ``choices`` (compared with ``==``); the message lists them."""
    options = list(choices)
    if not isinstance(value, (str, int, float, type(None))) or value not in options:
        raise OptionError(name, f"must be one of {', '.join(map(str, options))}; got {value!r}")
    return value  # type: ignore[return-value]


def check_bool(value: object, name: str) -> bool:
    """``True`` or ``False`` (not 0/1, not "yes")."""
    if not isinstance(value, bool):
        raise OptionError(name, f"must be true or false, got {value!r}")
    return value

"""One family of validators: each checks one value, names the option, and returns the value.

Every check raises `OptionError` with the option's name, so all
layers word the same problem the same way ("must be an integer >= 1, got 0") and a caller
can re-label it (`OptionError.within`).  ``bool`` is never accepted as a number,
although Python counts it as one: ``n_steps=True`` is a mistake, not 1.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, TypeVar

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


def cpu_limit() -> int:
    """The most threads a command may ask for: the machine's CPUs (``os.cpu_count()``), at least
    the CPUs this process may run on (``sched_getaffinity``)."""
    import os

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = 1
    return max(usable, os.cpu_count() or 1)


def check_threads(value: object, name: str = "threads", *, allow_none: bool = True) -> int | None:
    """A thread count in ``1..cpu_limit()`` (``None`` passes with ``allow_none``: the command's default).

    Why bounded by the CPUs: torch starts a thread pool of the size asked for, and a million
    threads end in a segfault or an allocator abort, not an error; more threads than CPUs
    only wait on each other. The machine's count, not the affinity: a process moved to more
    CPUs (taskset, a cgroup change) may use them, and a few threads too many are slow, not wrong.
    """
    if value is None and allow_none:
        return None
    limit = cpu_limit()
    if isinstance(value, int) and not isinstance(value, bool) and value > limit:
        raise OptionError(name, f"must be an integer in 1..{limit} (the CPUs of this machine), got {value:,}")
    return check_int(value, name, low=1, high=limit)


#: Bounds of `check_plain_value`: deeper or larger than any options (the YAML reader's own bounds).
PLAIN_MAX_DEPTH = 64
PLAIN_MAX_NODES = 100_000
_PLAIN_SCALARS = (type(None), bool, int, float, str)


def check_plain_value(value: object, name: str, *, max_depth: int = PLAIN_MAX_DEPTH,
                      max_nodes: int = PLAIN_MAX_NODES) -> object:
    """``value`` made only of JSON-like values: ``None``, booleans, numbers, strings, lists, tuples and
    mappings with such scalar keys, at most ``max_depth`` deep and ``max_nodes`` values (a list
    repeated by reference counts each time, as a writer would repeat it).

    Why: options are stored as JSON and YAML (a run's checkpoint, a suite's record and spec);
    a ``date``, a ``set`` or ``bytes`` given in Python failed only when the first record was
    written, after folders had been made. Walked without recursion, so depth is an error and
    not a ``RecursionError``. The error names the place (``name.data_options.start``).
    """
    stack: list[tuple[object, str, int]] = [(value, name, 0)]
    count = 0
    while stack:
        item, where, depth = stack.pop()
        count += 1
        if count > max_nodes:
            raise OptionError(name, f"holds more than {max_nodes:,} values (repeated references counted each time)")
        if isinstance(item, _PLAIN_SCALARS):
            continue
        if depth >= max_depth:
            raise OptionError(where, f"nested more than {max_depth} levels deep")
        if isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))
        elif isinstance(item, Mapping):
            for key, v in item.items():
                if not isinstance(key, _PLAIN_SCALARS):
                    raise OptionError(where, f"a key of type {type(key).__name__} ({_short(key)}) is not a name any "
                                             "option takes; keys are text or numbers")
                stack.append((v, f"{where}.{key}" if where else str(key), depth + 1))
        else:
            raise OptionError(where, f"a {type(item).__name__} ({_short(item)}) is not a value any option takes; "
                                     "options are numbers, text, true/false, null, lists and mappings")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

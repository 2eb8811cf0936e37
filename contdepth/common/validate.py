"""One family of validators: each checks one value, names the option, and returns the value.

Every check raises `OptionError` with the option's name, so all layers word the same problem
the same way ("must be an integer >= 1, got 0") and a caller can re-label it
(`OptionError.within`). ``bool`` is never accepted as a number, although Python counts it as
one: ``n_steps=True`` is a mistake, not 1. The value a message quotes goes through `show`: a
value read from a file may be any size, and a message is one line.

The family: `check_int` (`check_seed`, `check_threads` are integers with their own bounds),
`check_number`, `check_choice`, `check_bool`, `check_plain_value`; the predicates `is_int` and
`is_number`; `show` and `shorten` for what a message quotes.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, TypeVar

from .errors import OptionError

T = TypeVar("T")

#: The longest quote of a value in a message (`show`).
SHOW_CHARS = 60
#: The largest float32. A hyperparameter that float32 arithmetic uses as a scalar (an optimizer's
#: lr, eps, weight decay) must not exceed it: torch refuses such a scalar mid-step ("value cannot
#: be converted to type float without overflow"), after the work began.
FLOAT32_MAX = 3.4028234663852886e38
#: Seeds are integers in ``0..SEED_LIMIT - 1``: what ``torch.manual_seed`` accepts (2**64 and up overflow inside it).
SEED_LIMIT = 2**63


def shorten(text: str, limit: int = SHOW_CHARS) -> str:
    """``text`` cut to ``limit`` characters, ``...`` marking the cut."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def show(value: object, limit: int = SHOW_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters: how a message quotes a value it was given."""
    return shorten(repr(value), limit)


def is_int(value: object) -> bool:
    """A Python integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object, *, finite: bool = False) -> bool:
    """An int or float, not a bool (with ``finite``: not NaN or infinite either)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not finite or math.isfinite(value)


def _range_words(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def _digits(value: int, grouped: bool) -> str:
    return f"{value:,}" if grouped else str(value)


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None,
              allow_none: bool = False, above: str | None = None, grouped: bool = True,
              subject: str | None = None) -> int:
    """A Python integer (not a bool) in ``[low, high]``; ``None`` too with ``allow_none``.

    Numpy integers are refused: they do not survive a JSON or YAML round trip (a caller that
    reads them from an array converts them first, ``int(value)``).

    Args:
        above: why there is an upper bound, for a bound that guards against typos rather than
            being part of the option's meaning (``"per block (far above any useful value)"``):
            the message is then "must be an integer >= 1" and, past ``high``, "must be at most
            4,096 per block (...)".
        grouped: thousands separators in the bounds and large values (``1..4,096``, ``got
            1,000,000``); ``False`` quotes numbers as a file holds them, so they can be found in it.
        subject: what the value is, said before "must" where the name alone does not tell
            (``t1: the integration time must be ...``).
    """
    must = f"{subject} must" if subject else "must"
    if value is None and allow_none:
        return value  # type: ignore[return-value]
    shown_high = None if above is not None else high
    if low is not None and shown_high is not None:
        words = f"in {_digits(low, grouped)}..{_digits(shown_high, grouped)}"
    else:
        words = _range_words(low, shown_high, False, False)
    expected = f"an integer {words}".rstrip() + (" or null" if allow_none else "")
    if not is_int(value):
        raise OptionError(name, f"{must} be {expected}, got {show(value)}")
    if (low is not None and value < low) or (high is not None and value > high and above is None):
        shown = _digits(value, grouped) if abs(value) >= 10_000 else str(value)
        raise OptionError(name, f"{must} be {expected}, got {shorten(shown)}")
    if high is not None and value > high:
        raise OptionError(name, f"{must} be at most {high:,} {above}, got {shorten(f'{value:,}')}")
    return value


def check_seed(value: object, name: str = "seed") -> int:
    """A seed: an integer in ``0..2**63-1`` (`SEED_LIMIT`), the range ``torch.manual_seed`` takes."""
    if not is_int(value) or not 0 <= value < SEED_LIMIT:
        raise OptionError(name, f"must be an integer in 0..2**63-1, got {show(value)}")
    return value


def check_number(value: object, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False,
                 allow_nan: bool = False, float32: bool = False, range_apart: bool = False,
                 subject: str | None = None) -> float:
    """A finite real number (int or float, not a bool) within the bounds; returned as ``float``.

    Args:
        allow_none, allow_nan: ``None`` / NaN pass as they are (a value that was not measured).
        float32: also at most `FLOAT32_MAX` in size (a scalar of float32 arithmetic).
        range_apart: word the type and the range apart, as the training config always has
            ("must be a finite number, got 'x'"; "must be > 0, got 0"; "must lie in [0, 1), got
            1.0"); by default one message says both ("must be a finite number > 0, got 0").
            Between two bounds a number is finite anyway: "must be a number in [0, 1]".
        subject: what the value is, said before "must" (`check_int`).
    """
    if (value is None and allow_none) or (allow_nan and isinstance(value, float) and math.isnan(value)):
        return value  # type: ignore[return-value]
    words = _range_words(low, high, low_open, high_open)
    kind = "a number" if low is not None and high is not None else "a finite number"
    expected = f"{kind} {words}".rstrip() + (" or null" if allow_none else "")
    must = f"{subject} must" if subject else "must"
    if not is_number(value, finite=True):
        raise OptionError(name, f"{must} be {'a finite number' if range_apart else expected}, got {show(value)}")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        if range_apart:
            expected = f"{'lie' if low is not None and high is not None else 'be'} {words}"
            raise OptionError(name, f"{must} {expected}, got {show(value)}")
        raise OptionError(name, f"{must} be {expected}, got {show(value)}")
    if float32 and abs(value) > FLOAT32_MAX:
        raise OptionError(name, f"{must} be at most {FLOAT32_MAX:.4g}, the largest float32 (the type it is "
                                f"computed in), got {show(value)}")
    return float(value)


def check_choice(value: object, name: str, choices: Iterable[T]) -> T:
    """One of ``choices`` (compared with ``==``); the message lists them."""
    options = list(choices)
    if not isinstance(value, (str, int, float, type(None))) or value not in options:
        raise OptionError(name, f"must be one of {', '.join(map(str, options))}; got {show(value)}")
    return value  # type: ignore[return-value]


def check_bool(value: object, name: str) -> bool:
    """``True`` or ``False`` (not 0/1, not "yes")."""
    if not isinstance(value, bool):
        raise OptionError(name, f"must be true or false, got {show(value)}")
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
    if is_int(value) and value > limit:
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
                    raise OptionError(where, f"a key of type {type(key).__name__} ({show(key, 40)}) is not a name any "
                                             "option takes; keys are text or numbers")
                stack.append((v, f"{where}.{key}" if where else str(key), depth + 1))
        else:
            raise OptionError(where, f"a {type(item).__name__} ({show(item, 40)}) is not a value any option takes; "
                                     "options are numbers, text, true/false, null, lists and mappings")
    return value


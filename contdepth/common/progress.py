"""What long work prints while it runs: a progress bar on a terminal, a line every so often elsewhere.

A bar that redraws itself is right for a terminal and useless in a log file (``nohup``,
CI, ``| tee``): there it would print nothing for minutes, or a carriage-return soup. So
`Progress` draws a ``tqdm`` bar when the stream is a terminal and otherwise prints
one plain line every `LOG_INTERVAL_S` seconds (position, rate, time left and the
caller's numbers), which is what shows life in a log. Training, analysis sweeps and
experiment suites all report through it.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO

LOG_INTERVAL_S = 30.0  # seconds between progress lines when the output is not a terminal


def is_terminal(stream: IO | None = None) -> bool:
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: short and unambiguous in a log."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Progress of ``total`` units of work labelled ``desc``.

    ``update(n, **numbers)`` advances it; ``numbers`` (already formatted strings) are
    shown beside the position. ``enabled=False`` prints nothing. ``terminal`` overrides
    the detection (tests); ``interval`` the seconds between plain lines.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "steps", enabled: bool = True,
                 terminal: bool | None = None, interval: float | None = None, stream: IO | None = None) -> None:
        self.total, self.desc, self.unit, self.enabled = int(total), desc, unit, enabled
        self.stream = sys.stdout if stream is None else stream
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        self.interval = LOG_INTERVAL_S if interval is None else interval
        self.done = 0
        self.start = self.last_line = time.perf_counter()
        self._bar = None
        if enabled and self.terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=f" {unit}", leave=False, dynamic_ncols=True,
                             file=self.stream)

    def update(self, n: int = 1, **numbers: str) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if numbers:
                self._bar.set_postfix(numbers, refresh=False)
            return
        now = time.perf_counter()
        if now - self.last_line >= self.interval and self.done < self.total:
            self.last_line = now
            print(self.line(now, numbers), file=self.stream, flush=True)

    def line(self, now: float, numbers: dict[str, str]) -> str:
        elapsed = now - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else math.inf
        extra = "".join(f", {k} {v}" for k, v in numbers.items())
        return (f"{self.desc}: {self.done}/{self.total} {self.unit}{extra}, {format_seconds(elapsed)} elapsed, "
                f"about {format_seconds(left)} left")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["LOG_INTERVAL_S", "Progress", "format_seconds", "is_terminal"]

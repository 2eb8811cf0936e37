"""What a run prints while it works: a progress bar on a terminal, a line every so often elsewhere.

A bar that redraws itself is right for a terminal and useless in a log file (``nohup``,
CI, ``| tee``): there it would print nothing for minutes, or a carriage-return soup. So
`Progress` draws a ``tqdm`` bar when the stream is a terminal and otherwise prints
one plain line every `LOG_INTERVAL_S` seconds (position, rate, time left and the
caller's numbers), which is what shows life in a log.

`default_threads` chooses the thread count of a run when the user gives none.
"""

from __future__ import annotations

import math
import os
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


def default_threads() -> tuple[int, str]:
    """The thread count for a run that names none, and why (for the start-up line).

    ``OMP_NUM_THREADS`` wins when set. Otherwise: the CPUs this process may run on (its
    affinity, not the machine's count), less those already busy (the 1-minute load
    average, rounded), at least 1. Why not simply every CPU: intra-op threads wait for
    each other at every operation, and on a machine whose cores are taken by another job
    a thread that is not scheduled stalls all the others. Measured on a loaded 2-core
    machine, a digits epoch took 16.4 s with 2 threads and 0.5 s with 1.
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env), "OMP_NUM_THREADS"
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        busy = int(round(os.getloadavg()[0]))
    except (AttributeError, OSError):
        busy = 0
    free = max(1, min(cpus, cpus - busy))
    why = f"{cpus} CPUs" + (f", {min(busy, cpus)} busy" if busy else "")
    return free, why

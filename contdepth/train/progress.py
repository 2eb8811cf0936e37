"""How many threads a run uses when the user names none (`default_threads`).

The progress display is `contdepth.common.progress` (re-exported here for older imports).
"""

from __future__ import annotations

import os

from ..common.progress import LOG_INTERVAL_S, Progress, format_seconds, is_terminal


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


__all__ = ["LOG_INTERVAL_S", "Progress", "default_threads", "format_seconds", "is_terminal"]

"""Start-up time: ``import contdepth`` and ``contdepth --help`` against ``import torch``, side by side.

    python benchmarks/startup.py              # 7 rounds (default)
    python benchmarks/startup.py --rounds 15

Every case is a fresh interpreter (``sys.executable``), timed from the parent, so the
numbers include Python's own start; the cases run interleaved (one of each per round, in
a rotating order) so that a change in the machine's load falls on all of them alike, and
each case is run once untimed first (byte-compiling, warming the file cache). Printed:
the median and spread of each case, its ratio to ``import torch``, and the targets of
issue 26 (``import contdepth`` <= 1.3 x ``import torch``; both ``--help`` <= 1.5 s).

``import contdepth`` loads nothing but the package (its parts load on first use), so the
table also shows ``import contdepth`` followed by the first use of the core
(``contdepth.ContinuousBlock``, which loads torch, the solvers and ``nn``): that is what
a program that builds a model pays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

PY = sys.executable
#: (label, argv, target in seconds or as a ratio to import torch)
CASES: list[tuple[str, list[str], str | None]] = [
    ("import torch", [PY, "-c", "import torch"], None),
    ("import contdepth", [PY, "-c", "import contdepth"], "ratio<=1.3"),
    ("import contdepth; cd.ContinuousBlock", [PY, "-c", "import contdepth as cd; cd.ContinuousBlock"], None),
    ("contdepth --help", [PY, "-m", "contdepth", "--help"], "seconds<=1.5"),
    ("contdepth train --help", [PY, "-m", "contdepth", "train", "--help"], "seconds<=1.5"),
]


def run_once(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed runs of each case (default 7)")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds: must be an integer in 1..100")

    for _, argv, _ in CASES:  # untimed: byte-compile and warm the file cache
        run_once(argv)
    times: dict[str, list[float]] = {label: [] for label, _, _ in CASES}
    for r in range(args.rounds):
        order = CASES[r % len(CASES):] + CASES[:r % len(CASES)]
        for label, argv, _ in order:
            times[label].append(run_once(argv))

    torch_median = statistics.median(times["import torch"])
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"start-up, median of {args.rounds} fresh runs each (interleaved); {os.cpu_count()} CPUs, "
          f"load average {' '.join(f'{x:.2f}' for x in load) if load else 'n/a'}; python {sys.version.split()[0]}")
    print(f"{'case':40} {'median s':>9} {'min s':>7} {'max s':>7} {'x torch':>8}  target")
    failed = False
    for label, _, target in CASES:
        median = statistics.median(times[label])
        ratio = median / torch_median
        verdict = ""
        if target is not None:
            kind, limit = target.split("<=")
            ok = (ratio if kind == "ratio" else median) <= float(limit)
            failed |= not ok
            verdict = f"{'<= ' + limit + ' x torch' if kind == 'ratio' else '<= ' + limit + ' s'}: {'met' if ok else 'NOT met'}"
        print(f"{label:40} {median:9.2f} {min(times[label]):7.2f} {max(times[label]):7.2f} {ratio:8.2f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

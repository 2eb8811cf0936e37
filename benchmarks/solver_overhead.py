#!/usr/bin/env python
"""How much does contdepth's generic solver machinery cost over a hand-written loop?

Run from the repository root (``make bench`` does this after installing the peers)::

    .venv/bin/python benchmarks/solver_overhead.py            # default, ~3-4 minutes on 2 cores
    .venv/bin/python benchmarks/solver_overhead.py --quick    # under a minute, noisier
    .venv/bin/python benchmarks/solver_overhead.py --repeats 21

Everything is measured in one process, with ``torch.set_num_threads(2)``, so the
numbers in a table are comparable with each other (not necessarily with another
machine's).  Three tables:

1. Fixed-step overhead: the same fields and schemes (8 steps on [0, 1]) run by a
   hand-written loop (the limit), ``contdepth.integrate``, torchdiffeq and torchdyn.
2. Memory: ``integrate(..., checkpoint=True)`` against plain backprop (and
   torchdiffeq's adjoint) on the conv field with rk4.
3. ``ContinuousBlock``: depth-varying weights (piecewise linear) against constant
   weights (one piecewise-constant function) against a hand loop with the module
   (and ``integrate`` with the module, which isolates the block's own cost).

Timing method: each contender is warmed up, then timed in rounds; in every round
each contender runs once (one *sample*: ``number`` back-to-back calls, ``number``
chosen so a sample of the hand loop lasts at least ~50 ms), the order rotating from
round to round, so slow drift of the machine hits every contender alike.  The
tables print the median time per call and, for noise, the half inter-quartile
range as a percentage of the median.  Python's garbage collector is off while a
sample runs.

The script re-executes itself once with glibc's ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` set high (unless they are already set), so that
megabyte-sized tensors are served from the heap instead of fresh ``mmap`` calls
(whose page faults made the conv field ~3x slower and much noisier here).
"""

from __future__ import annotations

import argparse
import os
import sys




def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per table cell (default 15; 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and shorter samples: a smoke run, noisier numbers")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.repeats < 1:
        parser.error("--repeats: must be >= 1")
    return args


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import Timing, allocator_note, fmt_time, reexec_with_allocator_env, time_round_robin  # noqa: E402

if __name__ == "__main__":  # before importing torch: an import alone must not re-exec
    _parse_args(sys.argv[1:])  # parse first: --help and bad flags need no re-exec
    reexec_with_allocator_env(__file__)

# Benchmark the checkout this script lives in, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ctypes  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

import contdepth  # noqa: E402
from _memory import peak_allocated_bytes, saved_for_backward_bytes  # noqa: E402

N_STEPS = 8
THREADS = 2
Tensor = torch.Tensor


# --- optional peers --------------------------------------------------------------------
def _import_peer(what: Callable[[], object]) -> tuple[object | None, str]:
    try:
        return what(), ""
    except ImportError as exc:
        return None, f"not installed ({exc.name or exc})"
    except Exception as exc:  # a broken install should not stop the other tables
        return None, f"unavailable ({type(exc).__name__}: {exc})"


def _torchdiffeq():
    import torchdiffeq

    return torchdiffeq


def _torchdyn_odeint():
    from torchdyn.numerics import odeint

    return odeint


TORCHDIFFEQ, TORCHDIFFEQ_WHY = _import_peer(_torchdiffeq)
TORCHDYN_ODEINT, TORCHDYN_WHY = _import_peer(_torchdyn_odeint)


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "?"


# --- timing harness --------------------------------------------------------------------
@dataclass
class Contender:
    """One row of a table."""

    name: str
    note: str = ""  # printed instead of timings when the contender cannot run
    extra: dict[str, object] = field(default_factory=dict)  # more columns (evals, max |diff| ...)


def fmt_cell(t: Timing | None, ref: Timing | None) -> tuple[str, str]:
    if t is None:
        return "", ""
    ratio = f"{t.median / ref.median:5.2f}x" if ref is not None else ""
    return f"{fmt_time(t.median)} ±{100 * t.spread:3.0f}%", ratio


def print_table(title: str, rows: list[Contender], timings: dict[str, dict[str, Timing]], modes: list[str],
                mode_titles: dict[str, str], reference: str, extra_cols: list[str]) -> None:
    name_w = max(len(r.name) for r in rows) + 2
    head = f"  {'':<{name_w}}"
    for mode in modes:
        head += f"{mode_titles[mode]:>17} {'ratio':>6}  "
    for col in extra_cols:
        head += f"{col:>11}"
    print(title)
    print(head)
    for row in rows:
        line = f"  {row.name:<{name_w}}"
        if row.note:
            print(line + row.note)
            continue
        for mode in modes:
            t = timings.get(mode, {}).get(row.name)
            ref = timings.get(mode, {}).get(reference)
            cell, ratio = fmt_cell(t, ref)
            line += f"{cell:>17} {ratio:>6}  "
        for col in extra_cols:
            line += f"{row.extra.get(col, ''):>11}"
        print(line)
    print()


def max_abs_diff(a: Tensor, b: Tensor) -> str:
    return f"{(a - b).abs().max().item():.1e}"


# --- fields and hand loops -------------------------------------------------------------
def conv_field() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))


def mlp_field() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64))


def hand_euler(net: Callable[[Tensor], Tensor], x: Tensor, n: int = N_STEPS) -> Tensor:
    h = 1.0 / n
    for _ in range(n):
        x = x + h * net(x)
    return x


def hand_midpoint(net: Callable[[Tensor], Tensor], x: Tensor, n: int = N_STEPS) -> Tensor:
    h = 1.0 / n
    for _ in range(n):
        k1 = net(x)
        k2 = net(x + h / 2 * k1)
        x = x + h * k2
    return x


def hand_rk4(net: Callable[[Tensor], Tensor], x: Tensor, n: int = N_STEPS) -> Tensor:
    h = 1.0 / n
    for _ in range(n):
        k1 = net(x)
        k2 = net(x + h / 2 * k1)
        k3 = net(x + h / 2 * k2)
        k4 = net(x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


HAND = {"euler": hand_euler, "midpoint": hand_midpoint, "rk4": hand_rk4}
STAGES = {"euler": 1, "midpoint": 2, "rk4": 4, "rk38": 4}
TORCHDIFFEQ_METHOD = {"euler": "euler", "midpoint": "midpoint", "rk4": "rk4"}
TORCHDYN_SOLVER = {"euler": "euler", "midpoint": "midpoint", "rk4": "rk-4"}


class Counter:
    """Wraps a module as ``f(t, x)`` (and ``f(x)``) and counts evaluations."""

    def __init__(self, net: nn.Module) -> None:
        self.net, self.calls = net, 0

    def __call__(self, *args: object) -> Tensor:
        self.calls += 1
        return self.net(args[-1])


class TimeField(nn.Module):
    """``f(t, x) = net(x)`` as a module (torchdiffeq's adjoint wants an nn.Module)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.net(x)


def forward_only(solve: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return solve(x)

    return run


def forward_backward(solve: Callable[[Tensor], Tensor], x: Tensor, params: list[Tensor]) -> Callable[[], object]:
    def run() -> object:
        xi = x.detach().requires_grad_()
        out = solve(xi)
        return torch.autograd.grad(out.sum(), (xi, *params))

    return run


# --- solvers under test ----------------------------------------------------------------
def solver_rows(net: Callable[[Tensor], Tensor], scheme: str) -> list[tuple[str, Callable | None, str]]:
    """``(row name, solve(x0) -> final state or None, note)`` for one field and scheme."""
    f = lambda t, y: net(y)  # noqa: E731  (the f(t, x) every library receives)
    rows: list[tuple[str, Callable | None, str]] = [
        ("hand loop", lambda y: HAND[scheme](net, y), ""),
        ("contdepth", lambda y: contdepth.integrate(f, y, scheme=scheme, n_steps=N_STEPS).state, ""),
    ]
    if scheme == "rk4":
        rows.append(("contdepth rk38 [a]", lambda y: contdepth.integrate(f, y, scheme="rk38", n_steps=N_STEPS).state, ""))
    label = "torchdiffeq [a]" if scheme == "rk4" else "torchdiffeq"
    if TORCHDIFFEQ is None:
        rows.append((label, None, TORCHDIFFEQ_WHY))
    else:
        method, ends, options = torchdiffeq_grid(scheme)
        rows.append((label, lambda y: TORCHDIFFEQ.odeint(f, y, ends, method=method, options=options)[-1], ""))
    if TORCHDYN_ODEINT is None:
        rows.append(("torchdyn [b]", None, TORCHDYN_WHY))
    else:
        span, solver = torch.linspace(0.0, 1.0, N_STEPS + 1), TORCHDYN_SOLVER[scheme]
        # save_at: only the final state, which is all the other contenders return.
        rows.append(("torchdyn [b]",
                     lambda y: TORCHDYN_ODEINT(f, y, t_span=span, solver=solver, save_at=span[-1:])[1][-1], ""))
    return rows


_TORCHDIFFEQ_GRID: dict[str, tuple[str, Tensor, dict, str]] = {}


def torchdiffeq_grid(scheme: str) -> tuple[str, Tensor, dict]:
    """torchdiffeq arguments for exactly N_STEPS fixed steps on [0, 1], checked by counting."""
    if scheme not in _TORCHDIFFEQ_GRID:
        method = TORCHDIFFEQ_METHOD[scheme]
        ends, options = torch.tensor([0.0, 1.0]), {"step_size": 1.0 / N_STEPS}
        probe = Counter(lambda y: -y)
        TORCHDIFFEQ.odeint(probe, torch.ones(1), ends, method=method, options=options)
        steps = probe.calls // STAGES[scheme]
        if steps == N_STEPS:
            how = f"t=[0,1], step_size=1/{N_STEPS} gives {steps} steps (counted)"
        else:
            ends, options = torch.linspace(0.0, 1.0, N_STEPS + 1), {}
            how = f"step_size=1/{N_STEPS} gave {steps} steps; using t=linspace(0,1,{N_STEPS + 1}) instead"
        _TORCHDIFFEQ_GRID[scheme] = (method, ends, options, how)
    return _TORCHDIFFEQ_GRID[scheme][:3]


# --- table 1 ---------------------------------------------------------------------------
def table_fixed_step(args: argparse.Namespace, warmup: int, min_sample_s: float) -> dict[str, float]:
    ratios: dict[str, float] = {}
    print("=" * 100)
    print(f"1. Fixed-step overhead: {N_STEPS} steps on [0, 1]; f(t, x) = net(x)")
    print("   fwd: one integration under torch.no_grad().  fwd+bwd: integration with the graph, then")
    print("   torch.autograd.grad(out.sum(), [x0, *net.parameters()]).  ratio: to the hand loop.")
    print("=" * 100)
    torch.manual_seed(0)
    fields = {
        "conv  Conv2d(16,16,3,p=1)-ReLU-Conv2d(16,16,3,p=1), state (64,16,16,16)":
            ("conv", conv_field(), torch.randn(64, 16, 16, 16)),
        "MLP   Linear(64,64)-Tanh-Linear(64,64), state (256,64)":
            ("mlp", mlp_field(), torch.randn(256, 64)),
    }
    for title, (key, net, x) in fields.items():
        params = list(net.parameters())
        for scheme in ("euler", "midpoint", "rk4"):
            counter = Counter(net)
            counted = solver_rows(counter, scheme)
            rows, fwd, fwb = [], {}, {}
            with torch.no_grad():
                reference = HAND[scheme](net, x)
            for (name, solve, note), (_, counted_solve, _) in zip(solver_rows(net, scheme), counted):
                row = Contender(name, note=note)
                if solve is not None:
                    try:
                        counter.calls = 0
                        with torch.no_grad():
                            counted_solve(x)
                            out = solve(x)
                        row.extra["evals"] = str(counter.calls)
                        row.extra["max|diff|"] = max_abs_diff(out, reference)
                        fwd[name] = forward_only(solve, x)
                        fwb[name] = forward_backward(solve, x, params)
                    except Exception as exc:  # report it in the table, keep going
                        row.note = f"error: {type(exc).__name__}: {exc}"[:90]
                rows.append(row)
            timings = {
                "fwd": time_round_robin(fwd, args.repeats, warmup, min_sample_s, "hand loop"),
                "fwd+bwd": time_round_robin(fwb, args.repeats, warmup, min_sample_s, "hand loop"),
            }
            print_table(f"{title}\n  scheme {scheme}", rows, timings, ["fwd", "fwd+bwd"],
                        {"fwd": "fwd", "fwd+bwd": "fwd+bwd"}, "hand loop", ["evals", "max|diff|"])
            for mode, t in timings.items():
                if "contdepth" in t:
                    ratios[f"{key} {scheme} {mode}"] = t["contdepth"].median / t["hand loop"].median
    print("  [a] torchdiffeq's fixed-grid 'rk4' is Kutta's 3/8 rule (rk4_alt_step_func), not the classic")
    print("      RK4: same 4 evaluations per step, other coefficients, so its max|diff| to the classic hand")
    print("      loop is the difference of two 4th-order methods.  Its ratio is still taken to the classic")
    print("      hand loop; 'contdepth rk38' runs contdepth on the same 3/8 tableau for comparison.")
    print("  [b] torchdyn.numerics.odeint(f, x, t_span=linspace(0,1,9), solver='euler'|'midpoint'|'rk-4',")
    print("      save_at=t_span[-1:]); its rk-4 keeps the tableau as tensors and also multiplies by the")
    print("      tableau's zero entries.")
    for scheme, (*_, how) in _TORCHDIFFEQ_GRID.items():
        print(f"  torchdiffeq grid, {scheme}: {how}")
    print("  evals: field evaluations per call, counted; max|diff|: largest |output - hand loop output|.")
    print()
    return ratios


# --- table 2 ---------------------------------------------------------------------------
def table_memory(args: argparse.Namespace, warmup: int, min_sample_s: float) -> dict[str, float]:
    print("=" * 100)
    print(f"2. Memory: conv field, rk4, {N_STEPS} steps, forward + backward, contdepth.integrate")
    print("=" * 100)
    torch.manual_seed(0)
    net, x = conv_field(), torch.randn(64, 16, 16, 16)
    params = list(net.parameters())
    f = lambda t, y: net(y)  # noqa: E731
    solves: dict[str, Callable[[Tensor], Tensor] | None] = {
        "plain backprop": lambda y: contdepth.integrate(f, y, scheme="rk4", n_steps=N_STEPS).state,
        "checkpoint=True": lambda y: contdepth.integrate(f, y, scheme="rk4", n_steps=N_STEPS, checkpoint=True).state,
    }
    adjoint_note = ""
    if TORCHDIFFEQ is None:
        adjoint_note = TORCHDIFFEQ_WHY
    else:
        module = TimeField(net)
        ends = torch.tensor([0.0, 1.0])
        opts = {"step_size": 1.0 / N_STEPS}
        solves["torchdiffeq adjoint [c]"] = lambda y: TORCHDIFFEQ.odeint_adjoint(
            module, y, ends, method="rk4", options=opts, adjoint_options=dict(opts))[-1]
    rows, fwb = [], {}
    state_mib = x.numel() * x.element_size() / 2**20
    for name, solve in solves.items():
        row = Contender(name)
        try:
            xi = x.detach().requires_grad_()
            row.extra["saved"] = saved_for_backward_bytes(lambda: solve(xi))
            run = forward_backward(solve, x, params)
            run()
            row.extra["peak"] = peak_allocated_bytes(run)
            fwb[name] = run
        except Exception as exc:
            row.note = f"error: {type(exc).__name__}: {exc}"[:90]
        rows.append(row)
    if adjoint_note:
        rows.append(Contender("torchdiffeq adjoint", note=adjoint_note))
    timings = time_round_robin(fwb, args.repeats, warmup, min_sample_s, "plain backprop")
    base = next(r for r in rows if r.name == "plain backprop").extra
    print(f"  {'':<26}{'peak MiB':>10}{'ratio':>7}{'saved MiB':>11}{'ratio':>7}{'fwd+bwd':>17}{'ratio':>7}")
    for row in rows:
        line = f"  {row.name:<26}"
        if row.note:
            print(line + row.note)
            continue
        peak, saved = row.extra.get("peak"), row.extra["saved"]
        if peak is None or base.get("peak") is None:
            line += f"{'n/a':>10}{'':>7}"
        else:
            line += f"{peak / 2**20:10.1f}{peak / base['peak']:6.2f}x"
        line += f"{saved / 2**20:11.1f}{saved / base['saved']:6.2f}x"
        cell, ratio = fmt_cell(timings[row.name], timings["plain backprop"])
        print(line + f"{cell:>17}{ratio:>7}")
    print()
    print("  peak MiB: highest total of live CPU tensor memory during one forward+backward, above what")
    print("    was live before it, from the allocator events of torch.profiler(profile_memory=True): every")
    print("    allocation and free by PyTorch's CPU allocator, summed in time order.  Includes the graph's")
    print(f"    saved activations, stage rates, temporaries and the gradients.  One state is {state_mib:.1f} MiB.")
    print("  saved MiB: total bytes of distinct storages handed to autograd for backward during the")
    print("    forward (torch.autograd.graph.saved_tensors_hooks): the graph's retained activations; with")
    print("    checkpointing, the inputs of the checkpointed steps plus the activations of any step run")
    print("    without it; the rest is recomputed step by step during backward.")
    print("  fwd+bwd: median time per forward+backward, ratio to plain backprop.")
    print("  [c] torchdiffeq.odeint_adjoint, fixed-grid 'rk4' (3/8 rule) with step_size=1/8 both ways: the")
    print("      continuous adjoint (not the exact gradient of the discrete forward), shown for scale.")
    print()
    out = {}
    ck = next(r for r in rows if r.name == "checkpoint=True")
    if not ck.note:
        if ck.extra.get("peak") is not None and base.get("peak") is not None:
            out["checkpoint peak memory"] = ck.extra["peak"] / base["peak"]
        out["checkpoint saved memory"] = ck.extra["saved"] / base["saved"]
        out["checkpoint time"] = timings["checkpoint=True"].median / timings["plain backprop"].median
    return out


# --- table 3 ---------------------------------------------------------------------------
def table_block(args: argparse.Namespace, warmup: int, min_sample_s: float) -> dict[str, float]:
    ratios: dict[str, float] = {}
    print("=" * 100)
    print(f"3. ContinuousBlock, conv template, {N_STEPS} steps: cost of depth-varying weights")
    print("   hand loop: the template module itself in a hand loop, its weights set to the constant block's.")
    print("   integrate: contdepth.integrate(lambda t, x: module(x)) with that module (no ContinuousBlock).")
    print("   constant: basis='piecewise_constant', n_basis=1.  linear: basis='piecewise_linear', n_basis=8.")
    print("   fwd under torch.no_grad(); fwd+bwd: autograd.grad(out.sum(), [x0, *parameters]).")
    print("=" * 100)
    torch.manual_seed(0)
    template = conv_field()
    x = torch.randn(64, 16, 16, 16)
    hand, integ, cons, lin = "hand loop", "integrate(module)", "constant (pc, n=1)", "linear (pl, n=8)"
    for scheme in ("euler", "rk4"):
        const = contdepth.ContinuousBlock(template, basis="piecewise_constant", n_basis=1, scheme=scheme,
                                          n_steps=N_STEPS)
        linear = contdepth.ContinuousBlock(template, basis="piecewise_linear", n_basis=8, scheme=scheme,
                                           n_steps=N_STEPS)
        net = conv_field()
        with torch.no_grad():
            theta = const.theta(0.0)
            for name, p in net.named_parameters():
                p.copy_(theta[name])
        rows = [Contender(hand), Contender(integ), Contender(cons), Contender(lin)]
        f = lambda t, y, net=net: net(y)  # noqa: E731
        solves = {
            hand: (lambda y, net=net, scheme=scheme: HAND[scheme](net, y), list(net.parameters())),
            integ: (lambda y, f=f, scheme=scheme: contdepth.integrate(f, y, scheme=scheme, n_steps=N_STEPS).state,
                    list(net.parameters())),
            cons: (const, list(const.parameters())),
            lin: (linear, list(linear.parameters())),
        }
        fwd, fwb = {}, {}
        with torch.no_grad():
            reference = HAND[scheme](net, x)
        for row in rows:
            solve, params = solves[row.name]
            with torch.no_grad():
                out = solve(x)
            row.extra["params"] = str(sum(p.numel() for p in params))
            row.extra["max|diff|"] = max_abs_diff(out, reference) if row.name != lin else "-"
            fwd[row.name] = forward_only(solve, x)
            fwb[row.name] = forward_backward(solve, x, params)
        timings = {
            "fwd": time_round_robin(fwd, args.repeats, warmup, min_sample_s, hand),
            "fwd+bwd": time_round_robin(fwb, args.repeats, warmup, min_sample_s, hand),
        }
        print_table(f"  scheme {scheme}", rows, timings, ["fwd", "fwd+bwd"], {"fwd": "fwd", "fwd+bwd": "fwd+bwd"},
                    hand, ["params", "max|diff|"])
        for mode, t in timings.items():
            m = {k: v.median for k, v in t.items()}
            print(f"    {mode:8s} linear / constant = {m[lin] / m[cons]:5.2f}x   constant / hand = "
                  f"{m[cons] / m[hand]:5.2f}x   linear / hand = {m[lin] / m[hand]:5.2f}x   "
                  f"constant / integrate = {m[cons] / m[integ]:5.2f}x")
            ratios[f"block {scheme} {mode} linear/constant"] = m[lin] / m[cons]
        print()
    print("  max|diff|: against the hand loop with the same weights (the linear block has other,")
    print("  depth-varying weights).  constant / integrate isolates what the block adds per evaluation")
    print("  (writing the stage's weights into the template's slots) over calling the module directly.")
    print()
    return ratios


# --- header and summary ----------------------------------------------------------------
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _heap_check() -> str:
    """Whether a 64 MiB tensor is served from the heap (mmap threshold in effect), via mallinfo2."""
    try:
        libc = ctypes.CDLL("libc.so.6")

        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in
                        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

        libc.mallinfo2.restype = MallInfo2
        before = libc.mallinfo2().hblkhd
        t = torch.empty(16 * 2**20)  # 64 MiB
        mmapped = libc.mallinfo2().hblkhd - before
        del t
        return "64 MiB tensor came from the heap" if mmapped < 2**20 else "64 MiB tensor was mmapped (not in effect)"
    except Exception:
        return "could not check (no glibc mallinfo2)"


def _checkout() -> str:
    """The commit of the benchmarked checkout, and whether contdepth/ has local changes."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "contdepth"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    if not commit:
        return "not a git checkout"
    return f"{commit}{' + uncommitted changes in contdepth/' if dirty else ''}"


def print_header(args: argparse.Namespace, warmup: int, min_sample_s: float) -> None:
    print("contdepth solver overhead benchmark")
    print(f"  python {platform.python_version()}, torch {torch.__version__}, contdepth {contdepth.__version__}, "
          f"torchdiffeq {_version('torchdiffeq') if TORCHDIFFEQ else TORCHDIFFEQ_WHY}, "
          f"torchdyn {_version('torchdyn') if TORCHDYN_ODEINT else TORCHDYN_WHY}")
    print(f"  contdepth from {os.path.dirname(contdepth.__file__)} at {_checkout()}")
    print(f"  cpu: {_cpu_name()}, {os.cpu_count()} logical cores; torch threads: intra-op "
          f"{torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}")
    print(f"  glibc allocator: {allocator_note()} ({_heap_check()})")
    print(f"  mode: {'quick' if args.quick else 'default'}: {warmup} warm-up + {args.repeats} timed rounds per "
          f"cell, samples >= {min_sample_s * 1e3:.0f} ms; float32, {N_STEPS} steps on [0, 1]")
    print("  times: median per call, ± half the inter-quartile range of the rounds, contenders interleaved")
    print("  round-robin (rotating order); ratio: median over the reference row's median (1.00x).")
    print()


def print_summary(ratios: dict[str, float]) -> None:
    print("=" * 100)
    print("Summary against targets (contdepth; median ratios)")
    print("=" * 100)
    checks: list[tuple[str, float | None, float]] = []
    for key, value in ratios.items():
        if key.startswith("conv ") or key.startswith("mlp "):
            target = 1.05 if key.startswith("conv") else 1.15
            checks.append((f"integrate / hand loop, {key}", value, target))
    if "checkpoint peak memory" in ratios:
        checks.append(("checkpoint / plain, peak memory", ratios["checkpoint peak memory"], 0.40))
    if "checkpoint saved memory" in ratios:
        checks.append(("checkpoint / plain, saved-for-backward memory", ratios["checkpoint saved memory"], 0.40))
    if "checkpoint time" in ratios:
        checks.append(("checkpoint / plain, fwd+bwd time", ratios["checkpoint time"], 1.40))
    for key, value in ratios.items():
        if key.endswith("linear/constant"):
            checks.append((f"ContinuousBlock {key.removeprefix('block ')}", value, 1.10))
    for label, value, target in checks:
        verdict = "ok" if value is not None and value <= target else "OVER"
        print(f"  {label:<58} {value:6.2f}x  (target <= {target:.2f}x)  {verdict}")
    print()


def main() -> None:
    args = _parse_args(sys.argv[1:])
    torch.set_num_threads(THREADS)
    sys.stdout.reconfigure(line_buffering=True)  # show progress when piped to a file
    warmup = 1 if args.quick else 2
    min_sample_s = 0.02 if args.quick else 0.05
    print_header(args, warmup, min_sample_s)
    start = time.perf_counter()
    ratios = {}
    ratios.update(table_fixed_step(args, warmup, min_sample_s))
    ratios.update(table_memory(args, warmup, min_sample_s))
    ratios.update(table_block(args, warmup, min_sample_s))
    print_summary(ratios)
    print(f"total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

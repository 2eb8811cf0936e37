"""Memory modes side by side: backprop, checkpoint, reversible and adjoint (and torchdiffeq's adjoint).

    python benchmarks/memory.py                 # both tables, about 9 minutes on 2 cores
    python benchmarks/memory.py --quick         # fewer repeats (about 5 minutes)

Table 1, a conv field ``dx/dt = conv-ReLU-conv(x)`` (16 channels, batch 64, 16x16) integrated
with ``contdepth.integrate`` at 4, 16 and 64 steps: for each mode the peak of live tensor
memory during one forward+backward (from the profiler's allocator events), the median time
of a forward+backward, and the gradient's relative error against backprop through the same
scheme (float64, batch 4; torchdiffeq's adjoint against backprop through the same 3/8-rule
RK4 on the same grid).

Table 2, one training step (forward, backward, SGD step) of a ContinuousNet (alpha 8, 4 cells, batch
64, 28x28 inputs) manifested with ``reversible_heun`` at 4, 16 and 64 steps per block, in
each gradient mode.

Targets checked at the end (issue "Gradients without stored activations"): reversible peak
memory flat in the steps (64 steps <= 1.2x of 4), <= 0.3x of backprop's memory at 16 steps,
<= 1.6x of backprop's time, gradient error <= 1e-9, and below torchdiffeq's adjoint in both
memory and gradient error.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import allocator_note, fmt_time, reexec_with_allocator_env, time_round_robin  # noqa: E402

if __name__ == "__main__":  # before importing torch: an import alone must not re-exec
    reexec_with_allocator_env(__file__)

import torch  # noqa: E402
from torch import nn  # noqa: E402

import contdepth  # noqa: E402
from _memory import peak_allocated_bytes  # noqa: E402
from contdepth.models import create  # noqa: E402
from contdepth.nn import continuous_blocks  # noqa: E402

STEPS = (4, 16, 64)


def conv_field(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)

    class Field(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))

        def forward(self, t: float, x: torch.Tensor) -> torch.Tensor:
            return self.net(x) * 0.5

    return Field().to(dtype)


# (label, scheme, gradient): the contdepth modes; torchdiffeq's adjoint is added separately.
MODES = [
    ("backprop", "reversible_heun", "backprop"),
    ("checkpoint", "reversible_heun", "checkpoint"),
    ("reversible", "reversible_heun", "reversible"),
    ("reversible (alf)", "alf", "reversible"),
    ("adjoint (rk38)", "rk38", "adjoint"),
]


def _torchdiffeq():
    try:
        import torchdiffeq
        return torchdiffeq
    except ImportError:
        return None


def solve(field: nn.Module, x: torch.Tensor, scheme: str, gradient: str, n_steps: int) -> torch.Tensor:
    if gradient == "torchdiffeq":
        t = torch.tensor([0.0, 1.0], dtype=x.dtype)
        options = {"step_size": 1.0 / n_steps}
        return _torchdiffeq().odeint_adjoint(field, x, t, method="rk4", options=options,
                                             adjoint_options=dict(options))[-1]
    return contdepth.integrate(field, x, scheme=scheme, n_steps=n_steps, gradient=gradient).state


def gradient_error(scheme: str, gradient: str, n_steps: int) -> float:
    """Relative max-norm error of the gradient (input and weights) against backprop through the same scheme."""
    field = conv_field(torch.float64)
    x = torch.randn(4, 16, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(4, 16, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def grads(scheme_: str, gradient_: str) -> list[torch.Tensor]:
        xi = x.clone().requires_grad_()
        out = solve(field, xi, scheme_, gradient_, n_steps)
        return list(torch.autograd.grad((out * weights).sum(), [xi, *field.parameters()]))

    reference = grads("rk38" if gradient == "torchdiffeq" else scheme, "backprop")
    got = grads(scheme, gradient)
    return max(float((g - r).abs().max()) for g, r in zip(got, reference)) / max(float(r.abs().max()) for r in reference)


def table_field(repeats: int) -> dict[str, dict[str, float]]:
    print("=" * 100)
    print("1. Conv field (16 channels, batch 64, 16x16), forward + backward through contdepth.integrate")
    print("=" * 100)
    field = conv_field()
    x = torch.randn(64, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    modes = list(MODES) + ([("torchdiffeq adjoint [a]", "rk4", "torchdiffeq")] if _torchdiffeq() else [])
    results: dict[str, dict[str, float]] = {}
    print(f"  {'mode':<24}{'steps':>6}{'peak MiB':>10}{'/ backprop':>11}{'fwd+bwd':>12}{'/ backprop':>11}"
          f"{'grad err':>11}")
    for n_steps in STEPS:
        runs = {}
        for label, scheme, gradient in modes:
            def run(scheme=scheme, gradient=gradient, n_steps=n_steps) -> None:
                xi = x.detach().requires_grad_()
                out = solve(field, xi, scheme, gradient, n_steps)
                out.square().mean().backward()
                field.zero_grad(set_to_none=True)
            runs[label] = run
        timings = time_round_robin(runs, repeats, 1, 0.2, "backprop")
        for label, scheme, gradient in modes:
            peak = peak_allocated_bytes(runs[label]) or float("nan")
            error = 0.0 if gradient == "backprop" else gradient_error(scheme, gradient, n_steps)
            results[f"{label} {n_steps}"] = {"peak": peak, "time": timings[label].median, "error": error}
        base = results[f"backprop {n_steps}"]
        for label, _, _ in modes:
            r = results[f"{label} {n_steps}"]
            print(f"  {label:<24}{n_steps:>6}{r['peak'] / 2**20:10.1f}{r['peak'] / base['peak']:10.2f}x"
                  f"{fmt_time(r['time']):>12}{r['time'] / base['time']:10.2f}x{r['error']:11.1e}")
        print()
    print("  peak MiB: highest total of live CPU tensor memory during one forward+backward above what was")
    print("    live before (torch.profiler allocator events). One state is "
          f"{x.numel() * x.element_size() / 2**20:.1f} MiB.")
    print("  grad err: max |g - g_backprop| / max |g_backprop| over the input's and weights' gradients, float64,")
    print("    against backprop through the same scheme and grid.")
    print("  backprop, checkpoint and reversible run reversible_heun (2 evaluations per step); alf 1 per step.")
    print("  [a] torchdiffeq.odeint_adjoint, fixed-grid 'rk4' (Kutta's 3/8 rule), step 1/n both ways; its")
    print("      error is against backprop through contdepth's rk38 (the same tableau) on the same grid.")
    print()
    return results


def table_training(repeats: int) -> dict[str, dict[str, float]]:
    print("=" * 100)
    print("2. ContinuousNet training step (alpha 8, 4 cells, batch 64, 28x28), reversible_heun, SGD")
    print("=" * 100)
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1))
    results: dict[str, dict[str, float]] = {}
    print(f"  {'mode':<14}{'steps':>6}{'peak MiB':>10}{'/ backprop':>11}{'step':>12}{'/ backprop':>11}")
    for n_steps in STEPS:
        runs = {}
        for gradient in ("backprop", "checkpoint", "reversible", "adjoint"):
            torch.manual_seed(0)
            model = create("continuousnet", in_channels=1, alpha=8, n_basis=4, scheme="reversible_heun",
                           n_steps=n_steps, gradient=gradient)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

            def run(model=model, optimizer=optimizer) -> None:
                optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
            runs[gradient] = run
        timings = time_round_robin(runs, repeats, 1, 0.2, "backprop")
        for gradient, run in runs.items():
            results[f"{gradient} {n_steps}"] = {"peak": peak_allocated_bytes(run) or float("nan"),
                                                "time": timings[gradient].median}
        base = results[f"backprop {n_steps}"]
        for gradient in runs:
            r = results[f"{gradient} {n_steps}"]
            print(f"  {gradient:<14}{n_steps:>6}{r['peak'] / 2**20:10.1f}{r['peak'] / base['peak']:10.2f}x"
                  f"{fmt_time(r['time']):>12}{r['time'] / base['time']:10.2f}x")
        print()
    print("  One training step of the whole model: stem, stitches and head keep backprop's memory in every")
    print("  mode; the blocks' share is what the modes change.")
    print()
    return results


def check_targets(field: dict[str, dict[str, float]]) -> bool:
    checks = [
        ("reversible peak, 64 steps / 4 steps", field["reversible 64"]["peak"] / field["reversible 4"]["peak"], 1.2),
        ("reversible / backprop peak, 16 steps", field["reversible 16"]["peak"] / field["backprop 16"]["peak"], 0.3),
        ("reversible / backprop time, 16 steps", field["reversible 16"]["time"] / field["backprop 16"]["time"], 1.6),
        ("reversible gradient error (max over steps)", max(field[f"reversible {n}"]["error"] for n in STEPS), 1e-9),
    ]
    if "torchdiffeq adjoint [a] 16" in field:
        peer = field["torchdiffeq adjoint [a] 16"]
        checks.append(("reversible / torchdiffeq adjoint peak, 16 steps", field["reversible 16"]["peak"] / peer["peak"],
                       1.0))
        checks.append(("reversible / torchdiffeq adjoint gradient error, 16 steps",
                       field["reversible 16"]["error"] / max(peer["error"], 1e-300), 1.0))
    print("Targets")
    ok = True
    for name, value, bound in checks:
        passed = value <= bound
        ok &= passed
        print(f"  {name:<58}{value:10.3g}  (target <= {bound:g})  {'ok' if passed else 'MISSED'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing repeats")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CONTDEPTH_BENCH_THREADS", torch.get_num_threads())))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; allocator: {allocator_note()}")
    repeats = 3 if args.quick else 7
    field = table_field(repeats)
    table_training(repeats)
    check_targets(field)


if __name__ == "__main__":
    main()

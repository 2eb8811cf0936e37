"""Time per training step: ContinuousNet (euler, piecewise constant) against its ResNet twin.

With euler and one step per cell a ContinuousNet stage computes exactly the units of a
pre-activation ResNet stage (with the residual scaled by h), so any difference in time
is the cost of the continuous machinery: coefficient views, stage bookkeeping, the
depth-dependent normalisation state.  Both models are timed side by side, interleaved,
on the same batch: forward, backward and an SGD step.

    python benchmarks/train_step.py [--repeats N] [--batch B] [--units U ...]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import allocator_note, fmt_time, reexec_with_allocator_env, time_round_robin  # noqa: E402


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per model (default 15)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--units", type=int, nargs="+", default=[2, 4], help="units per stage to compare")
    parser.add_argument("--norms", nargs="+", default=["batch", "group"], help="normalisations to compare")
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = _parse_args(sys.argv[1:])
    reexec_with_allocator_env(__file__)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from contdepth.models import create  # noqa: E402


def step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    return step


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    print("contdepth train-step benchmark: ContinuousNet (euler, piecewise constant) vs ResNet, same units")
    print(f"  torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch} of 1x28x28, "
          f"alpha 16; allocator {allocator_note()}")
    print(f"  median of {args.repeats} interleaved rounds of forward + backward + SGD step\n")
    print(f"  {'norm':>6} {'units/stage':>11} {'resnet':>12} {'continuousnet':>14} {'ratio':>7}")
    worst = 0.0
    for norm in args.norms:
        for units in args.units:
            resnet = create("resnet", in_channels=1, num_classes=10, n_units=units, norm=norm)
            cnet = create("continuousnet", in_channels=1, num_classes=10, n_basis=units, scheme="euler",
                          basis="piecewise_constant", norm=norm)
            times = time_round_robin({"resnet": step_fn(resnet, x, y), "continuousnet": step_fn(cnet, x, y)},
                                     args.repeats, warmup=2, min_sample_s=0.2, reference="resnet")
            ratio = times["continuousnet"].median / times["resnet"].median
            worst = max(worst, ratio)
            print(f"  {norm:>6} {units:>11} {fmt_time(times['resnet'].median):>12} "
                  f"{fmt_time(times['continuousnet'].median):>14} {ratio:6.3f}x")
    print(f"\n  largest ratio {worst:.3f}x (target <= 1.05x)")


if __name__ == "__main__":
    main(ARGS)

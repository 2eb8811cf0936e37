"""LM-ResNet against ResNet with the same units (and, up to the k_n, the same parameters).

Both models share ContinuousNet's topology (stem, three stitched stages, head); LM-ResNet
replaces each unit's update by the two-step ``u+ = (1-k_n) u + k_n u- + f_n(u)`` with a
learnable ``k_n`` per unit, which adds one parameter per unit.  Same data, epochs, seed and
hyper-parameters; prints test accuracy, parameter count and wall time of each.

    python benchmarks/lm_resnet.py [--epochs 15] [--units 2] [--device cpu|cuda] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import allocator_note, reexec_with_allocator_env  # noqa: E402


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("fashion_mnist", "digits"), default="fashion_mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--units", type=int, default=2, help="units per stage")
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = _parse_args(sys.argv[1:])
    reexec_with_allocator_env(__file__)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import statistics  # noqa: E402

from contdepth import data  # noqa: E402
from contdepth.train import TrainConfig, train  # noqa: E402


def main(args: argparse.Namespace) -> None:
    dataset = data.load(args.data, data_dir=args.data_dir)
    print(f"LM-ResNet vs ResNet on {args.data}: {args.units} units/stage, alpha {args.alpha}, {args.epochs} epochs, "
          f"device {args.device}, seeds {args.seeds}; allocator {allocator_note()}")
    rows = []
    for model in ("resnet", "lm_resnet"):
        accs, times = [], []
        for seed in args.seeds:
            config = TrainConfig(
                model=model, model_options={"alpha": args.alpha, "n_units": args.units, "norm": "batch"},
                data=args.data, data_dir=args.data_dir, epochs=args.epochs, batch_size=128, optimizer="sgd",
                lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine", warmup_epochs=1,
                seed=seed, threads=args.threads, device=args.device, quiet=True,
            )
            result = train(config, dataset=dataset)
            accs.append(100 * result.final_test_accuracy)
            times.append(result.total_time)
            params = result.num_params
        rows.append((model, params, accs, times))
    print(f"\n  {'model':<10} {'params':>9} {'test acc (mean over seeds)':>27} {'per seed':>24} {'time/run':>9}")
    for model, params, accs, times in rows:
        per_seed = " ".join(f"{a:.2f}" for a in accs)
        print(f"  {model:<10} {params:>9,} {statistics.mean(accs):26.2f}% {per_seed:>24} {statistics.mean(times):8.1f}s")


if __name__ == "__main__":
    main(ARGS)

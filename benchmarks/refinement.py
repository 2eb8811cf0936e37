"""Incremental-in-depth training against training the final depth from scratch.

(a) a ContinuousNet with its final basis (``--final-basis`` piecewise-constant cells per
stage, Euler with one step per cell) trained from scratch, and (b) the same model grown
by refinement from one cell per stage (``refine`` doubles basis and steps, theta(t)
unchanged, optimizer state mapped), same epochs, seed, data and hyper-parameters.
Prints both wall times, their ratio and both test accuracies.

Fashion-MNIST when its files are present (``/usr/share/datasets/fashion-mnist`` or
``--data-dir``), otherwise scikit-learn's digits; the output says which.

    python benchmarks/refinement.py [--epochs 16] [--final-basis 8] [--data fashion_mnist|digits] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import allocator_note, reexec_with_allocator_env  # noqa: E402


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("auto", "fashion_mnist", "digits"), default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--final-basis", type=int, default=8, help="cells per stage at the end (a power of 2)")
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (timings then compare GPU runs)")
    args = parser.parse_args(argv)
    doublings = math.log2(args.final_basis)
    if args.final_basis < 2 or doublings != int(doublings):
        parser.error("--final-basis: must be a power of two >= 2")
    if args.epochs < int(doublings) + 1:
        parser.error(f"--epochs: need at least {int(doublings) + 1} to refine {int(doublings)} times")
    return args


if __name__ == "__main__":
    ARGS = _parse_args(sys.argv[1:])
    reexec_with_allocator_env(__file__)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contdepth import data  # noqa: E402
from contdepth.train import TrainConfig, train  # noqa: E402


def refinement_epochs(epochs: int, doublings: int) -> tuple[int, ...]:
    """1-based epochs at whose start to refine: every depth trains for an equal share."""
    phases = doublings + 1
    return tuple(1 + round(epochs * i / phases) for i in range(1, phases))


def pick_data(args: argparse.Namespace):
    if args.data in ("auto", "fashion_mnist"):
        try:
            return data.load("fashion_mnist", data_dir=args.data_dir), "fashion_mnist"
        except FileNotFoundError as exc:
            if args.data == "fashion_mnist":
                raise
            print(f"  Fashion-MNIST not found ({str(exc).splitlines()[0]}); using digits instead")
    return data.load("digits", seed=args.seed), "digits"


def main(args: argparse.Namespace) -> None:
    dataset, name = pick_data(args)
    doublings = int(math.log2(args.final_basis))
    refine_at = refinement_epochs(args.epochs, doublings)
    base = TrainConfig(
        model="continuousnet",
        model_options={"alpha": args.alpha, "basis": "piecewise_constant", "scheme": "euler", "norm": "batch"},
        data=name, data_dir=args.data_dir, epochs=args.epochs, batch_size=128, optimizer="sgd", lr=0.1,
        momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine", warmup_epochs=1, seed=args.seed,
        threads=args.threads, device=args.device, quiet=True,
    )
    print(f"contdepth refinement benchmark on {name} ({dataset.num_train} train / {dataset.num_test} test), "
          f"{args.epochs} epochs, device {args.device}, {args.threads} threads; allocator {allocator_note()}")
    runs = {
        "scratch": base.replace(model_options={**base.model_options, "n_basis": args.final_basis}),
        "refined": base.replace(model_options={**base.model_options, "n_basis": 1}, refine_at=refine_at),
    }
    results = {}
    for label, config in runs.items():
        print(f"  training ({label}) ...", flush=True)
        results[label] = train(config, dataset=dataset)
    a, b = results["scratch"], results["refined"]
    print()
    print(f"  {'run':<46} {'wall time':>10} {'test acc':>9}")
    print(f"  {f'(a) {args.final_basis} cells/stage from scratch':<46} {a.total_time:9.1f}s "
          f"{100 * a.final_test_accuracy:8.2f}%")
    print(f"  {f'(b) 1 -> {args.final_basis} cells, refined at epochs {list(refine_at)}':<46} "
          f"{b.total_time:9.1f}s {100 * b.final_test_accuracy:8.2f}%")
    print()
    print(f"  time ratio (b)/(a): {b.total_time / a.total_time:.3f}x  (target <= 0.6x)")
    print(f"  accuracy difference (b)-(a): {100 * (b.final_test_accuracy - a.final_test_accuracy):+.2f} points "
          "(target within 0.3)")


if __name__ == "__main__":
    main(ARGS)

"""Time per full-batch epoch on Cora: contdepth's graph kernels against torch's plain sparse ops.

One epoch of :mod:`contdepth.train.node` is a training step (forward with dropout,
backward, optimizer step) and one eval-mode forward. Three ways to run the same model
with the settings of ``benchmarks/graph.py``, timed side by side (interleaved rounds):

* ``torch``: dense features (dense dropout on the 2708 x 1433 matrix) and torch's
  ``sparse @ dense`` product, whose backward re-derives the transposed matrix per call
  (this script swaps :func:`contdepth.nn.propagate` for ``adjacency @ x`` to get it);
* ``sparse features``: ``GraphDataset.inputs`` (bag-of-words as sparse COO: dropout draws
  the non-zeros only, the first layer is a sparse product), torch's product;
* ``contdepth``: sparse features and ``propagate`` (cached CSR of the matrix and of its
  transpose, the transpose's product as the backward) -- what training uses.

    python benchmarks/graph_kernels.py [--data-dir ../shared/data/cora] [--repeats 9] [--models gcn gcde cgnn]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import fmt_time, time_round_robin  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from contdepth import data  # noqa: E402
from contdepth.models import create  # noqa: E402
from contdepth.nn import graph as graph_kernels  # noqa: E402
from contdepth.models import graph as graph_models  # noqa: E402
from contdepth.train import TrainConfig  # noqa: E402
from contdepth.train.optim import build_optimizer  # noqa: E402
from graph import SETTINGS  # noqa: E402


@contextlib.contextmanager
def torch_product():
    """Inside: every graph product is torch's own ``adjacency @ x`` (the baseline)."""
    saved = graph_kernels.propagate, graph_models.propagate
    graph_kernels.propagate = graph_models.propagate = lambda adjacency, x: adjacency @ x
    try:
        yield
    finally:
        graph_kernels.propagate, graph_models.propagate = saved


def epoch_fn(name: str, dataset, inputs, plain_product: bool):
    setting = SETTINGS[name]
    options = dict(setting["model"])
    if name == "cgnn":
        options["num_nodes"] = dataset.num_nodes
    torch.manual_seed(0)
    model = create(name, in_features=dataset.num_features, num_classes=dataset.num_classes, **options)
    config = TrainConfig(model=name, data="cora", **{k: v for k, v in setting["train"].items()
                                                     if k not in ("epochs", "patience")})
    optimizer = build_optimizer(model, config)
    mask, labels = dataset.train_mask, dataset.labels[dataset.train_mask]

    def epoch() -> None:
        with torch_product() if plain_product else contextlib.nullcontext():
            model.train()
            loss = F.cross_entropy(model(*inputs)[mask], labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.eval()
            with torch.no_grad():
                model(*inputs)

    return epoch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "cora"))
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (default 9)")
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as benchmarks/graph.py)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = data.load("cora", data_dir=args.data_dir)
    dense = (dataset.features, dataset.adjacency)
    print(f"Cora full-batch epoch (train step + eval forward), torch {torch.__version__}, {args.threads} thread(s); "
          f"features {100 * float((dataset.features != 0).float().mean()):.1f}% non-zero")
    print(f"{'model':<6} {'torch':>10} {'sparse features':>16} {'contdepth':>10} {'speed-up':>9}")
    for name in args.models:
        fns = {"torch": epoch_fn(name, dataset, dense, True),
               "sparse features": epoch_fn(name, dataset, dataset.inputs, True),
               "contdepth": epoch_fn(name, dataset, dataset.inputs, False)}
        t = time_round_robin(fns, repeats=args.repeats, warmup=2, min_sample_s=0.2, reference="contdepth")
        print(f"{name:<6} {fmt_time(t['torch'].median):>10} {fmt_time(t['sparse features'].median):>16} "
              f"{fmt_time(t['contdepth'].median):>10} {t['torch'].median / t['contdepth'].median:>8.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inference latency and throughput of a trained ContinuousNet: eager, torch.compile, ONNX Runtime.

For each manifestation (default: the trained euler x 4 and the cheaper euler x 2 of the same
weights) the script times, side by side in interleaved rounds:

- ``eager``: the live model (ContinuousBlocks evaluating theta at every call), the baseline;
- ``frozen``: the static manifestation (``contdepth.export.freeze``) run eagerly;
- ``compiled``: ``torch.compile`` (inductor, static shapes) of the frozen model;
- ``onnxruntime``: the exported ONNX file in ONNX Runtime (CPU provider, same thread count).

at batch 1 (latency) and batch 256 (throughput), and prints times, images per second and
speed-ups against ``eager``.  Compile (cold: inductor's caches are disabled) and export
times are printed too.

    python benchmarks/inference.py [--run runs/fashion_mnist] [--manifestations euler:4 euler:2]
                                   [--batches 1 256] [--threads 2] [--repeats 15] [--accuracy]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import allocator_note, fmt_time, reexec_with_allocator_env, time_round_robin  # noqa: E402

TARGET = 1.5  # fastest path at batch 1 against eager


def _manifestation(text: str) -> tuple[str, int]:
    scheme, sep, steps = text.partition(":")
    if not sep or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected SCHEME:N_STEPS such as rk4:2, got {text!r}")
    return scheme, int(steps)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/fashion_mnist", help="trained run (default runs/fashion_mnist)")
    parser.add_argument("--manifestations", type=_manifestation, nargs="+", default=[("euler", 4), ("euler", 2)],
                        metavar="SCHEME:N", help="manifestations to compare (default euler:4 euler:2)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256], help="batch sizes (default 1 256)")
    parser.add_argument("--threads", type=int, default=2, help="threads of torch and ONNX Runtime (default 2)")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per path (default 15)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (inductor takes ~1 min a shape)")
    parser.add_argument("--accuracy", action="store_true",
                        help="also print each manifestation's test accuracy, computed by ONNX Runtime")
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = _parse_args(sys.argv[1:])
    reexec_with_allocator_env(__file__)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from contdepth.export import DATASET_INPUT_SHAPES, export_onnx, freeze, onnx_session  # noqa: E402
from contdepth.nn import manifest  # noqa: E402
from contdepth.train import load_checkpoint  # noqa: E402
from contdepth.train.trainer import load_data  # noqa: E402


def _no_grad(fn, x):
    def call() -> None:
        with torch.no_grad():
            fn(x)

    return call


def _accuracy(session, dataset, batch: int = 500) -> float:
    from contdepth.data import normalize

    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, dataset.num_test, batch):
        x = normalize(dataset.test_x[start:start + batch], dataset.mean, dataset.std, dataset.max_value)
        logits = session.run(None, {name: x.numpy()})[0]
        correct += int((np.argmax(logits, axis=1) == dataset.test_y[start:start + batch].numpy()).sum())
    return correct / dataset.num_test


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    # Compile times are cold: inductor's on-disk caches would otherwise make a second run look instant.
    torch._inductor.config.force_disable_caches = True
    warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # the consequence of the line above
    torch.manual_seed(0)
    model, info = load_checkpoint(args.run)
    config = info.train_config()
    shape = DATASET_INPUT_SHAPES.get(config.data)
    if shape is None:  # a dataset outside the built-in table: read its image shape
        probe = load_data(config)
        shape = (probe.channels, *probe.image_size)
    print(f"contdepth inference benchmark: {info.path.parent} ({info.model_name}, epoch {info.epoch}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters), input {list(shape)}")
    import onnxruntime

    print(f"  torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads; "
          f"allocator {allocator_note()}")
    print(f"  median of {args.repeats} interleaved rounds; speed-up = eager time / path time; "
          f"load average at start {os.getloadavg()[0]:.2f} (other processes on the cores distort multi-threaded "
          "torch timings most)\n")
    dataset = load_data(config) if args.accuracy else None
    results = []
    folder = tempfile.mkdtemp(prefix="contdepth-inference-")
    for scheme, n_steps in args.manifestations:
        frozen = freeze(model, scheme, n_steps, trainable=False)
        path = os.path.join(folder, f"{scheme}-{n_steps}.onnx")
        start = time.perf_counter()
        export_onnx(frozen, torch.randn(2, *shape), path)
        export_s = time.perf_counter() - start
        session = onnx_session(path, threads=args.threads)
        label = f"{scheme} x {n_steps}"
        note = f"  {label}: ONNX export {export_s:.1f} s"
        if dataset is not None:
            note += f", test accuracy (ONNX Runtime) {100 * _accuracy(session, dataset):.2f}%"
        for batch in args.batches:
            x = torch.randn(batch, *shape)
            array = x.numpy()
            name = session.get_inputs()[0].name
            paths = {}
            with manifest(model, scheme, n_steps):
                paths["eager"] = _no_grad(model, x)
                paths["frozen"] = _no_grad(frozen, x)
                if not args.no_compile:
                    torch._dynamo.reset()
                    compiled = torch.compile(frozen, backend="inductor", dynamic=False)
                    start = time.perf_counter()
                    with torch.no_grad():
                        got = compiled(x)
                    compile_s = time.perf_counter() - start
                    with torch.no_grad():
                        error = float((got - frozen(x)).abs().max())
                    note += f"; inductor compile at batch {batch} {compile_s:.1f} s (max diff {error:.1e})"
                    paths["compiled"] = _no_grad(compiled, x)
                paths["onnxruntime"] = lambda: session.run(None, {name: array})
                with torch.no_grad():
                    error = float(np.abs(session.run(None, {name: array})[0] - model(x).numpy()).max())
                min_sample = 0.05 if batch == 1 else 0.2
                times = time_round_robin(paths, args.repeats, warmup=3, min_sample_s=min_sample, reference="eager")
            results.append((label, batch, times, error))
        print(note)
    print()
    names = ["eager", "frozen"] + ([] if args.no_compile else ["compiled"]) + ["onnxruntime"]
    header = f"  {'manifestation':<14}{'batch':>6}" + "".join(f"{n:>24}" for n in names)
    print(header)
    print("  " + "-" * (len(header) - 2))
    best_at_1 = []
    for label, batch, times, error in results:
        eager = times["eager"].median
        cells = []
        for n in names:
            t = times[n].median
            cells.append(f"{fmt_time(t).strip():>10} {batch / t:>7.0f}/s {eager / t:4.2f}x")
        print(f"  {label:<14}{batch:>6}" + "".join(f"{c:>24}" for c in cells))
        if batch == 1:
            fastest = min(names, key=lambda n: times[n].median)
            best_at_1.append((label, fastest, eager / times[fastest].median))
    print("\n  cell: median latency, images per second, speed-up over eager; ONNX Runtime's max abs difference "
          f"from eager logits: {max(r[3] for r in results):.1e}")
    print(f"  load average at the end {os.getloadavg()[0]:.2f}")
    for label, fastest, speedup in best_at_1:
        verdict = "met" if speedup >= TARGET else "NOT met"
        print(f"  batch 1, {label}: fastest is {fastest} at {speedup:.2f}x eager (target >= {TARGET}x: {verdict})")


if __name__ == "__main__":
    main(ARGS)

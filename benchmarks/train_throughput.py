"""Training throughput side by side: eager fp32, mixed precision, channels_last and torch.compile.

    python benchmarks/train_throughput.py --device cuda      # on a GPU (what the speed options are for)
    python benchmarks/train_throughput.py                    # CPU: eager fp32 and bf16 only
    python benchmarks/train_throughput.py --accuracy         # also train each variant 2 epochs on digits

Every variant runs the training step the trainer runs (autocast around the forward pass, a
float32 loss, a GradScaler for fp16, channels_last batches, the compiled model) on the model of
``configs/fashion_mnist.yaml`` (ContinuousNet, width 16, 1 cell per stage, euler), on random
28x28 batches held on the device; images per second is the median over interleaved rounds,
the ratio is to eager fp32. The step does not read the loss back to the host as the trainer
does, so it is an upper bound. channels_last and compile are GPU-only (see the README). ``--accuracy`` trains each variant through
``contdepth.train.train`` to check that the speed costs no accuracy (digits, CPU-sized).
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
import torch.nn.functional as F  # noqa: E402

from contdepth.models import create  # noqa: E402
from contdepth.train import TrainConfig, train  # noqa: E402
from contdepth.train.images import AUTOCAST_DTYPES  # noqa: E402
from contdepth.train.runs import to_channels_last  # noqa: E402

MODEL = {"alpha": 16, "n_basis": 1, "basis": "piecewise_constant", "scheme": "euler", "norm": "batch"}


def variants(device: str) -> dict[str, dict]:
    """Name -> TrainConfig speed options. fp16 needs a GPU to pay off; on CPU bf16 is the mixed precision."""
    out = {"eager fp32": {}, "bf16": {"precision": "bf16"}}
    if device.startswith("cuda"):  # channels_last and compile abort on CPU with torch 2.13 (see the README)
        out["channels_last"] = {"channels_last": True}
        out["compile"] = {"compile": True}
        out["fp16"] = {"precision": "fp16"}
        out["bf16 + channels_last + compile"] = {"precision": "bf16", "channels_last": True, "compile": True}
    return out


def make_step(options: dict, device: str, batch: int):
    """One training step of the trainer's kind with ``options``, on a random batch held on ``device``."""
    torch.manual_seed(0)
    model = create("continuousnet", in_channels=1, num_classes=10, **MODEL).to(device)
    if options.get("channels_last"):
        to_channels_last(model)
    net = torch.compile(model) if options.get("compile") else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(batch, 1, 28, 28, device=device)
    if options.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    dtype = AUTOCAST_DTYPES.get(options.get("precision", "fp32"))
    scaler = torch.amp.GradScaler(torch.device(device).type) if options.get("precision") == "fp16" else None
    kind = torch.device(device).type

    def step() -> None:
        with torch.autocast(kind, dtype=dtype, enabled=dtype is not None):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if kind == "cuda":
            torch.cuda.synchronize()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--accuracy", action="store_true", help="also train each variant 2 epochs on digits")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads; "
          f"allocator: {allocator_note()}")
    steps = {}
    for name, options in variants(args.device).items():
        steps[name] = make_step(options, args.device, args.batch)
        for _ in range(3):  # warm-up (and compilation)
            steps[name]()
    timings = time_round_robin(steps, args.repeats, 1, 0.5, "eager fp32")
    base = timings["eager fp32"].median
    print(f"  {'variant':<34}{'step':>12}{'images/s':>12}{'/ eager fp32':>14}")
    for name, timing in timings.items():
        print(f"  {name:<34}{fmt_time(timing.median):>12}{args.batch / timing.median:12.0f}"
              f"{base / timing.median:13.2f}x")
    if args.accuracy:
        print("\n  accuracy after 2 epochs on digits (contdepth.train.train, seed 0):")
        for name, options in variants(args.device).items():
            config = TrainConfig(model="continuousnet", model_options=dict(MODEL), data="digits", epochs=2,
                                 batch_size=64, lr=0.1, quiet=True, device=args.device, **options)
            accuracy = train(config).history[-1]["test_accuracy"]
            print(f"  {name:<34}{100 * accuracy:8.2f}%")


if __name__ == "__main__":
    main()

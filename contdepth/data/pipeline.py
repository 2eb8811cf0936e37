"""Batches of normalised, augmented ``float32`` images, with torch ops only.

Two decisions shape this module:

- **Augmentation happens after normalisation, on the whole batch at once.** A random crop
  with ``padding`` pixels is one indexing operation on the ``unfold`` view of the padded
  batch (per-sample window corners, no Python loop); a horizontal flip is a
  ``torch.where`` on a per-sample mask. Padding is ``"zeros"`` by default: zero *after*
  normalisation, i.e. the dataset mean colour (torchvision's usual
  ``RandomCrop(padding=4)`` before ``Normalize`` pads with black instead; the difference is
  immaterial for training and mean-padding adds no artificial edge). ``"reflect"`` mirrors
  the border instead.
- **Randomness is a function of (seed, epoch, batch index)**, never a running RNG state.
  [`Batches`][contdepth.data.Batches] draws epoch ``e``'s permutation from a generator seeded with
  ``(seed, e)`` and batch ``k``'s crops and flips from one seeded with ``(seed, e, k)``, so
  a run resumed at any (epoch, step) sees exactly the batches an uninterrupted run sees,
  and its checkpoint needs to store two integers, not a generator state.

Random draws are made on the CPU (with a CPU ``torch.Generator``) and only the resulting
indices move to the data's device, so the batches are identical on CPU and CUDA.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

PadMode = Literal["zeros", "reflect"]
PAD_MODES: tuple[str, ...] = ("zeros", "reflect")


@dataclass(frozen=True)
class Augment:
    """Random crop (pad by ``padding``, crop back to the original size) and horizontal flip.

    ``flip`` is the probability of mirroring a sample: 0.5 for natural images, 0 for digits
    and text, whose mirror image is another (or no) class; 1.0 forces it (useful in tests).
    ``padding=0`` disables the crop.
    """

    padding: int = 4
    flip: float = 0.5
    pad_mode: PadMode = "zeros"

    def __post_init__(self) -> None:
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or self.padding < 0:
            raise ValueError(f"padding: expected an int >= 0, got {self.padding!r}")
        if not 0.0 <= float(self.flip) <= 1.0:
            raise ValueError(f"flip: expected a probability in [0, 1], got {self.flip!r}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode: expected one of {', '.join(PAD_MODES)}, got {self.pad_mode!r}")

    @property
    def active(self) -> bool:
        return self.padding > 0 or self.flip > 0.0


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed determined by ``(seed, *keys)``: independent streams without stored state.

    A cryptographic hash (not ``seed + epoch``) so that nearby seeds and epochs give
    unrelated streams, identically on every platform and Python version.
    """
    text = ",".join(str(int(v)) for v in (seed, *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & (2**63 - 1)


def make_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded with [`derive_seed`][contdepth.data.derive_seed] of ``(seed, *keys)``."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(derive_seed(seed, *keys))
    return generator


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    max_value: float = 1.0,
) -> torch.Tensor:
    """``(x / max_value - mean) / std`` per channel of ``N x C x H x W``, as ``float32``.

    ``mean``/``std`` are in units of ``x / max_value`` (as [`Dataset`][contdepth.data.Dataset]
    stores them); without them the result is just ``x / max_value``.
    """
    if x.dim() != 4:
        raise ValueError(f"x: expected N x C x H x W, got shape {tuple(x.shape)}")
    out = x.to(torch.float32)
    if mean is None and std is None:
        return out / max_value if max_value != 1.0 else out
    channels = x.shape[1]
    mean = tuple(float(m) for m in (mean if mean is not None else [0.0] * channels))
    std = tuple(float(s) for s in (std if std is not None else [1.0] * channels))
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std: need {channels} values each (one per channel), got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std: every value must be > 0, got {std}")
    shift = torch.tensor([m * max_value for m in mean], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    scale = torch.tensor([1.0 / (s * max_value) for s in std], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (out - shift) * scale


def augment_batch(x: torch.Tensor, augment: Augment, generator: torch.Generator,
                  shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Randomly crop (with padding) and flip every sample of ``x`` (``N x C x H x W``), vectorised.

    Draws, in this order and only when the option is on: ``N x 2`` crop offsets (row,
    column of the window's corner in the padded image, uniform in ``0..2 * padding``), then
    ``N`` flip coins, from ``generator`` (a CPU generator). Sample ``i`` becomes
    ``pad(x)[i, :, r:r + H, c:c + W]``, mirrored left-right if its coin says so. The crop is
    one indexing operation on the padded batch's ``unfold`` view (no per-sample loop, no
    copy of all the windows); the flip is a ``torch.where`` on a per-sample mask.

    ``shard=(rank, W)``: ``x`` is rows ``rank, rank + W, ...`` of a batch ``W`` times as
    large (a data-parallel process's share, see [`Batches`][contdepth.data.Batches]); the draws are made for
    that whole batch and the shard's rows kept, so every sample is augmented exactly as a
    single process would augment it.
    """
    if x.dim() != 4:
        raise ValueError(f"x: expected N x C x H x W, got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    pad = augment.padding
    if augment.pad_mode == "reflect" and pad > min(h, w) - 1:
        raise ValueError(f"padding: reflect padding needs padding < image size ({h}x{w}), got {pad}")
    if n == 0 or not augment.active:
        return x
    rank, replicas = shard
    rows = slice(rank, None, replicas)
    device = x.device
    out = x
    if pad > 0:
        offsets = torch.randint(0, 2 * pad + 1, (n * replicas, 2), generator=generator)[rows].to(device)
        padded = F.pad(x, (pad, pad, pad, pad), mode="constant" if augment.pad_mode == "zeros" else "reflect")
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # N x C x (2p+1) x (2p+1) x H x W, a view
        out = windows[torch.arange(n, device=device), :, offsets[:, 0], offsets[:, 1]]
    if augment.flip > 0.0:
        flips = (torch.rand(n * replicas, generator=generator)[rows] < augment.flip).to(device)
        out = torch.where(flips[:, None, None, None], out.flip(-1), out)
    return out


def _check_xy(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"x: expected N x C x H x W, got shape {tuple(x.shape)}")
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y: expected {len(x)} labels in a 1-d tensor, got shape {tuple(y.shape)}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")


def _make_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    *,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    max_value: float,
    augment: Augment | None,
    generator: torch.Generator | None,
    device: torch.device | None,
    shard: tuple[int, int] = (0, 1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather (in the stored dtype, cheap), move, normalise, augment."""
    xb, yb = x[index], y[index]
    if device is not None:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
    xb = normalize(xb, mean, std, max_value)
    if augment is not None and augment.active:
        if generator is None:
            raise ValueError("generator: augmentation needs a torch.Generator so that batches are reproducible")
        xb = augment_batch(xb, augment, generator, shard)
    return xb, yb.to(torch.int64)


def iterate(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: Augment | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    max_value: float = 1.0,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``(x, y)`` in ``float32`` / ``int64`` batches.

    All randomness (the permutation, then each batch's crops and flips, in order) comes
    from ``generator``, which is required when ``shuffle`` or ``augment`` is on: the same
    generator state gives the same batches. For training loops that must resume mid-run,
    use [`Batches`][contdepth.data.Batches], which needs no generator state at all.
    """
    _check_xy(x, y, batch_size)
    if (shuffle or (augment is not None and augment.active)) and generator is None:
        raise ValueError("generator: shuffle/augment need a torch.Generator so that batches are reproducible")
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    dev = torch.device(device) if device is not None else None
    for start in range(0, stop, batch_size):
        yield _make_batch(
            x, y, order[start:start + batch_size], mean=mean, std=std, max_value=max_value,
            augment=augment, generator=generator, device=dev,
        )


def _fits_on(device: torch.device, *tensors: torch.Tensor) -> bool:
    """Whether ``tensors`` take at most half of ``device``'s free memory (a CUDA device; any other: yes)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return sum(t.numel() * t.element_size() for t in tensors) <= free // 2


class Batches:
    """A seeded, resumable loader: epoch after epoch of normalised (and augmented) batches.

    ``for xb, yb in batches`` runs the rest of the current epoch and then moves to the next
    one; `epoch` and `step` always name the *next* batch to be produced (a
    batch counts as consumed once handed out). ``state_dict()`` is those two integers and
    the seed; a new ``Batches`` over the same data with ``load_state_dict(state)`` produces
    exactly the batches the original would have produced next, because epoch ``e``'s order
    comes from ``(seed, e)`` and batch ``k``'s augmentation from ``(seed, e, k)``.
    [`epoch_batches`][contdepth.data.Batches.epoch_batches] gives any epoch directly, without touching that state.

    **Sharding for data-parallel training** (``num_replicas > 1``): the loader yields only
    process ``rank``'s part of every epoch. The positions of the epoch's permutation that
    belong to ``rank`` come from torch's `DistributedSampler`
    (unshuffled, over positions): ``rank, rank + W, rank + 2W, ...``. Because the
    permutation itself does not depend on ``W``, batch ``k`` of every process together is
    exactly batch ``k`` of one process with ``W`` times the batch size; so a run's
    trajectory depends on its *global* batch, not on how many processes share it.
    ``even_shards=True`` (training) uses the sampler's ``drop_last``: every process gets
    ``N // W`` samples and the same number of steps (data-parallel steps must match), and
    the ``N mod W`` samples at the end of each epoch's permutation are skipped in that
    epoch; ``False`` (evaluation) gives every sample to exactly one process, so shards may
    differ by one. A shard's augmentation draws for the whole global batch from
    ``(seed, e, k)`` and keeps its own rows, so samples are cropped and flipped as one
    process would ([`augment_batch`][contdepth.data.augment_batch]).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_value: float = 1.0,
        shuffle: bool = True,
        augment: Augment | None = None,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        even_shards: bool = True,
    ) -> None:
        _check_xy(x, y, batch_size)
        self.num_replicas, self.rank, self.even_shards = _check_shard(num_replicas, rank, even_shards)
        self._positions = _shard_positions(len(x), self.num_replicas, self.rank, self.even_shards)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        if augment is not None and not isinstance(augment, Augment):
            raise TypeError(f"augment: expected an Augment or None, got {type(augment).__name__}")
        if drop_last and len(self._positions) < batch_size:
            raise ValueError(
                f"batch_size: {batch_size} exceeds the {len(self._positions)} samples and drop_last=True "
                "leaves no batch"
            )
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.max_value = float(max_value)
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.drop_last = drop_last
        self.device = torch.device(device) if device is not None else None
        if self.device is not None and x.device != self.device and _fits_on(self.device, x, y):
            # the split moves to the device once: each batch is then gathered there, no host copy per batch
            self.x, self.y = x.to(self.device), y.to(self.device)
        self._epoch = 0
        self._step = 0

    def __len__(self) -> int:
        """Batches per epoch (of this process's shard)."""
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples per epoch (of this process's shard)."""
        return len(self._positions)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def step(self) -> int:
        return self._step

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (a permutation when shuffling)."""
        if not self.shuffle:
            return torch.arange(len(self.x))
        return torch.randperm(len(self.x), generator=make_generator(self.seed, epoch))

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start, start + 1, ...`` of ``epoch``; a pure function of (seed, epoch, start)."""
        if epoch < 0 or not 0 <= start <= len(self):
            raise ValueError(f"epoch/start: need epoch >= 0 and 0 <= start <= {len(self)}, got {epoch}, {start}")
        order = self.order(epoch)[self._positions] if self.num_replicas > 1 else self.order(epoch)
        augmenting = self.augment is not None and self.augment.active
        for k in range(start, len(self)):
            yield _make_batch(
                self.x, self.y, order[k * self.batch_size:(k + 1) * self.batch_size].to(self.x.device),
                mean=self.mean, std=self.std, max_value=self.max_value, augment=self.augment,
                generator=make_generator(self.seed, epoch, k) if augmenting else None, device=self.device,
                shard=(self.rank, self.num_replicas),
            )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The rest of the current epoch; afterwards the state points at the next epoch."""
        if self._step >= len(self):
            self._epoch, self._step = self._epoch + 1, 0
        epoch = self._epoch
        for k, batch in enumerate(self.epoch_batches(epoch, self._step), start=self._step):
            self._step = k + 1
            yield batch
        self._epoch, self._step = epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """Where the loader is: enough, with the same data and options, to resume exactly."""
        return {"seed": self.seed, "epoch": self._epoch, "step": self._step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state`` (from [`state_dict`][contdepth.data.Batches.state_dict]); the seed must match."""
        if int(state["seed"]) != self.seed:
            raise ValueError(f"state: saved with seed {state['seed']}, this loader has seed {self.seed}")
        epoch, step = int(state["epoch"]), int(state["step"])
        if epoch < 0 or not 0 <= step <= len(self):
            raise ValueError(f"state: epoch must be >= 0 and step in [0, {len(self)}], got {epoch}, {step}")
        self._epoch, self._step = epoch, step

    def __repr__(self) -> str:
        shard = f", shard={self.rank}/{self.num_replicas}" if self.num_replicas > 1 else ""
        return (
            f"Batches(n={self.num_samples}, batch_size={self.batch_size}, batches={len(self)}, "
            f"shuffle={self.shuffle}, augment={self.augment}, seed={self.seed}, epoch={self._epoch}, "
            f"step={self._step}{shard})"
        )


def _check_shard(num_replicas: object, rank: object, even_shards: object) -> tuple[int, int, bool]:
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas: expected an int >= 1 (the number of processes), got {num_replicas!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise ValueError(f"rank: expected an int in [0, {num_replicas - 1}], got {rank!r}")
    if not isinstance(even_shards, bool):
        raise ValueError(f"even_shards: expected true or false, got {even_shards!r}")
    return num_replicas, rank, even_shards


def _shard_positions(n: int, num_replicas: int, rank: int, even_shards: bool) -> torch.Tensor:
    """The positions of an epoch's sample order that process ``rank`` of ``num_replicas`` takes."""
    if num_replicas == 1:
        return torch.arange(n)
    if not even_shards:
        return torch.arange(rank, n, num_replicas)
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=True)
    return torch.tensor(list(sampler), dtype=torch.int64)

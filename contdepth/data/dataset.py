"""The value every reader returns: a train/test split of images with its statistics.

Images stay in their stored integer form (``uint8``, values ``0..max_value``) so a
dataset costs one byte per pixel in memory; conversion to normalised ``float32`` happens
per batch in `contdepth.data.pipeline`. The per-channel ``mean``/``std`` are computed
once here, on the train split only, so the test split never leaks into normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from .pipeline import Augment, Batches


@dataclass(frozen=True, eq=False)
class Dataset:
    """An image-classification dataset: both splits, shapes and train-split statistics.

    ``train_x``/``test_x`` are ``N x C x H x W`` tensors (``uint8`` for every built-in
    reader; any real dtype is accepted), ``train_y``/``test_y`` are ``int64`` class ids in
    ``[0, num_classes)``. ``mean``/``std`` are per-channel, in units of ``x / max_value``
    (the usual ``[0, 1]`` convention, e.g. CIFAR-10 red mean ~0.491), population std.
    ``augment`` is the augmentation recommended for the train split (no flips for digits).
    """

    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    num_classes: int
    max_value: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    augment: Augment | None = None
    class_names: tuple[str, ...] | None = None
    val_x: torch.Tensor | None = field(default=None, repr=False)
    val_y: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.val_x is None) != (self.val_y is None):
            raise ValueError("val_x/val_y: give both or neither")
        for split in self.splits:
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dim() != 4:
                raise ValueError(f"{split}_x: expected N x C x H x W, got shape {tuple(x.shape)}")
            if y.dim() != 1 or y.dtype != torch.int64:
                raise ValueError(f"{split}_y: expected a 1-d int64 tensor, got {y.dtype} of shape {tuple(y.shape)}")
            if len(x) != len(y):
                raise ValueError(f"{split}: {len(x)} images but {len(y)} labels")
            if x.numel() == 0:  # refused when loading, not after an epoch of training on the other split
                raise ValueError(f"{self.name}: the {split} split is empty (images of shape {tuple(x.shape)})")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(
                    f"{split}_y: labels must lie in [0, {self.num_classes}), got {int(y.min())}..{int(y.max())}"
                )
        for split in self.splits[1:]:
            shape = getattr(self, f"{split}_x").shape[1:]
            if self.train_x.shape[1:] != shape:
                raise ValueError(f"train_x and {split}_x differ in image shape: "
                                 f"{tuple(self.train_x.shape[1:])} vs {tuple(shape)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std: need one value per channel ({self.channels})")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names: need {self.num_classes} names, got {len(self.class_names)}")

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    @property
    def num_test(self) -> int:
        return len(self.test_y)

    @property
    def num_val(self) -> int:
        """Images in the validation split (0 without one: see [`hold_out`][contdepth.data.hold_out])."""
        return 0 if self.val_y is None else len(self.val_y)

    @property
    def splits(self) -> tuple[str, ...]:
        """``("train", "test")``, plus ``"val"`` when a validation split was held out."""
        return ("train", "test") if self.val_x is None else ("train", "val", "test")

    def __repr__(self) -> str:
        h, w = self.image_size
        val = f", val={self.num_val}" if self.num_val else ""
        return (
            f"Dataset({self.name!r}, train={self.num_train}{val}, test={self.num_test}, "
            f"shape={self.channels}x{h}x{w}, classes={self.num_classes}, source={self.source!r})"
        )

    def batches(
        self,
        split: Literal["train", "val", "test"],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool | None = None,
        augment: Augment | bool | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        even_shards: bool = True,
    ) -> Batches:
        """A resumable, seeded loader over one split, normalised with this dataset's statistics.

        Defaults follow the usual practice: the train split is shuffled and augmented with
        ``self.augment``; the validation and test splits are neither. ``augment=True`` means ``self.augment``,
        ``False``/``None`` means none (for test), or pass an [`Augment`][contdepth.data.Augment].
        ``num_replicas``/``rank``/``even_shards`` give one process's shard for data-parallel
        training (see [`Batches`][contdepth.data.Batches]).
        """
        if split not in self.splits:
            if split == "val":
                raise ValueError(f"split: {self.name} has no validation split; hold one out of the train split "
                                 "first (contdepth.data.hold_out, or the validation_size option)")
            raise ValueError(f"split: expected one of {', '.join(self.splits)}, got {split!r}")
        train = split == "train"
        if augment is None:
            augment = train
        if augment is True:
            augment = self.augment
        elif augment is False:
            augment = None
        x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
        return Batches(
            x, y, batch_size,
            mean=self.mean, std=self.std, max_value=self.max_value,
            shuffle=train if shuffle is None else shuffle,
            augment=augment, seed=seed, drop_last=drop_last, device=device,
            num_replicas=num_replicas, rank=rank, even_shards=even_shards,
        )


def channel_stats(x: torch.Tensor, max_value: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of ``x / max_value`` over ``N x C x H x W``.

    For ``uint8`` images this counts the 256 possible values per channel (``bincount``) and
    is therefore exact and needs no float copy of the data; other dtypes are reduced
    in float64, one channel at a time.
    """
    if x.dim() != 4:
        raise ValueError(f"x: expected N x C x H x W, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("x: cannot compute statistics of an empty split")
    means: list[float] = []
    stds: list[float] = []
    for c in range(x.shape[1]):
        channel = x[:, c].reshape(-1)
        if channel.dtype == torch.uint8:
            counts = torch.bincount(channel, minlength=256).to(torch.float64)
            values = torch.arange(256, dtype=torch.float64)
            n = counts.sum()
            mean = (counts * values).sum() / n
            var = (counts * (values - mean) ** 2).sum() / n
        else:
            channel = channel.to(torch.float64)
            mean = channel.mean()
            var = ((channel - mean) ** 2).mean()
        means.append(float(mean) / max_value)
        stds.append(float(var.sqrt()) / max_value)
    if any(s == 0.0 for s in stds):
        raise ValueError("x: a channel is constant on the train split; its std is 0 and cannot normalise")
    return tuple(means), tuple(stds)


def hold_out(dataset: Dataset, validation_size: int, *, seed: int = 0, train_size: int | None = None) -> Dataset:
    """``dataset`` with ``validation_size`` train images held out as a validation split.

    Why: settings (a learning rate, when to refine, which arm of an experiment) must be
    chosen on data the final number is not measured on; the test split is only reported.
    The held-out images are a uniformly random draw from the train split by ``seed`` (a
    run's ``split_seed``, kept apart from its training seed so that every seed of an
    experiment validates on the same images). ``train_size`` then keeps only that many of
    the remaining images for training (a smaller, equally random subset: the same draw
    continued, so a bigger ``train_size`` contains a smaller one). The normalisation
    statistics are recomputed on what is trained on, so neither held-out split leaks into
    them. ``validation_size`` may be 0 (no validation split) to take only a subset.
    """
    for name, value in (("validation_size", validation_size), ("train_size", train_size)):
        if value is None and name == "train_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: must be an integer >= 0, got {value!r}")
    if dataset.val_x is not None:
        raise ValueError(f"validation_size: {dataset.name} already has a validation split ({dataset.num_val} images)")
    remaining = dataset.num_train - validation_size
    if remaining < 1:
        raise ValueError(f"validation_size: {dataset.name} has {dataset.num_train:,} train images; holding out "
                         f"{validation_size:,} leaves none to train on")
    if train_size is not None and not 1 <= train_size <= remaining:
        raise ValueError(f"train_size: must be in 1..{remaining:,} ({dataset.name}'s {dataset.num_train:,} train "
                         f"images less the {validation_size:,} held out), got {train_size:,}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(dataset.num_train, generator=generator)
    val_index = order[:validation_size].sort().values
    train_index = order[validation_size:validation_size + (remaining if train_size is None else train_size)]
    train_index = train_index.sort().values  # the stored order; the loader shuffles per epoch anyway
    train_x = dataset.train_x[train_index]
    mean, std = channel_stats(train_x, dataset.max_value)
    val = {} if validation_size == 0 else {"val_x": dataset.train_x[val_index], "val_y": dataset.train_y[val_index]}
    return Dataset(
        name=dataset.name, train_x=train_x, train_y=dataset.train_y[train_index], test_x=dataset.test_x,
        test_y=dataset.test_y, num_classes=dataset.num_classes, max_value=dataset.max_value, mean=mean, std=std,
        source=dataset.source, augment=dataset.augment, class_names=dataset.class_names, **val,
    )


def make_dataset(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    num_classes: int,
    max_value: float,
    source: str,
    augment: Augment | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """Build a [`Dataset`][contdepth.data.Dataset], computing mean/std on the train split."""
    for split, x in (("train", train_x), ("test", test_x)):
        if x.numel() == 0:
            raise ValueError(f"{name}: the {split} split is empty (images of shape {tuple(x.shape)})")
    mean, std = channel_stats(train_x, max_value)
    return Dataset(
        name=name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=num_classes, max_value=float(max_value), mean=mean, std=std, source=source,
        augment=augment, class_names=class_names,
    )

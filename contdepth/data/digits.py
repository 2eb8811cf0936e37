"""The embedded default: scikit-learn's 8x8 handwritten digits, split train/test by seed.

1,797 grey 8x8 images with values 0..16 (the UCI "optical recognition of handwritten
digits" test set), shipped inside scikit-learn, so it needs no download and no data
directory: the dataset for demos, tests and CI. It has no official split, so one is made
here: stratified (every class keeps its share in both splits) and seeded, so the same
``seed`` always gives the same split and a different seed a different one.
"""

from __future__ import annotations

import numpy as np
import torch

from .dataset import Dataset, make_dataset
from .pipeline import Augment

_INSTALL_HINT = "pip install scikit-learn  (or: pip install 'contdepth[data]')"


def _sklearn():  # noqa: ANN202 - returns two sklearn functions
    """Import scikit-learn only when the digits are asked for: the rest of contdepth does not need it."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError(
            f"the 'digits' dataset is read from scikit-learn, which is not installed: {_INSTALL_HINT}"
        ) from exc
    return load_digits, train_test_split


def load_digits(seed: int = 0, *, test_fraction: float = 0.2) -> Dataset:
    """8x8 digits, ``1 - test_fraction`` / ``test_fraction`` stratified split drawn with ``seed``.

    Images are ``uint8`` in ``0..16`` (``max_value=16``); each split is kept in the original
    file order, so only the *membership* depends on the seed.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float))
            or not 0.0 < test_fraction < 1.0):  # a string compared with a float is a TypeError
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    sk_load_digits, train_test_split = _sklearn()
    bunch = sk_load_digits()
    images = np.asarray(bunch.images)
    targets = np.asarray(bunch.target, dtype=np.int64)
    index = np.arange(len(targets))
    train_idx, test_idx = train_test_split(
        index, test_size=test_fraction, stratify=targets, random_state=int(seed) % 2**32, shuffle=True
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    x = torch.from_numpy(np.rint(images).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(targets)
    return make_dataset(
        "digits", x[torch.from_numpy(train_idx)], y[torch.from_numpy(train_idx)],
        x[torch.from_numpy(test_idx)], y[torch.from_numpy(test_idx)],
        num_classes=10, max_value=16.0,
        source=(
            f"scikit-learn {_version()} load_digits (embedded), "
            f"stratified split seed={int(seed)} test_fraction={test_fraction}"
        ),
        augment=Augment(padding=1, flip=0.0),  # digits are not mirror-symmetric: never flip
        class_names=tuple(str(d) for d in range(10)),
    )


def _version() -> str:
    import sklearn

    return sklearn.__version__

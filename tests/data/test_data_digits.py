"""The embedded default dataset (scikit-learn's 8x8 digits) and the registry around it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from contdepth import data

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is needed for the digits dataset")


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.load("digits", seed=0)


def test_digits_sizes_and_classes(digits):
    assert digits.num_train + digits.num_test == 1797
    assert (digits.num_train, digits.num_test) == (1437, 360)
    assert digits.num_classes == 10 and digits.channels == 1 and digits.image_size == (8, 8)
    assert digits.train_x.dtype == torch.uint8 and digits.train_y.dtype == torch.int64
    assert int(digits.train_x.max()) == 16 and int(digits.train_x.min()) == 0 and digits.max_value == 16
    assert set(digits.train_y.tolist()) == set(range(10)) == set(digits.test_y.tolist())
    assert digits.augment.flip == 0.0, "digits must not be flipped"
    assert "load_digits" in digits.source and "seed=0" in digits.source


def test_digits_are_the_sklearn_images(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ours = torch.cat([digits.train_x, digits.test_x]).reshape(1797, 64).to(torch.int64)
    theirs = torch.from_numpy(bunch.images.reshape(1797, 64).astype(np.int64))
    # the same multiset of (image, label) rows
    key = lambda x, y: sorted(map(tuple, torch.cat([x, y[:, None]], 1).tolist()))  # noqa: E731
    assert key(ours, torch.cat([digits.train_y, digits.test_y])) == key(theirs, torch.from_numpy(bunch.target))


def test_digits_split_is_stratified(digits):
    total = torch.cat([digits.train_y, digits.test_y]).bincount(minlength=10)
    test = digits.test_y.bincount(minlength=10)
    assert torch.all((test.double() - 0.2 * total.double()).abs() <= 1.0), (test, total)


def test_digits_split_depends_only_on_seed(digits):
    again = data.load("digits", seed=0)
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)
    other = data.load("digits", seed=1)
    assert other.num_test == 360
    assert not torch.equal(other.test_x, digits.test_x)


def test_digits_statistics(digits):
    x = digits.train_x.double() / 16
    assert digits.mean[0] == pytest.approx(float(x.mean()), rel=1e-12)
    assert digits.std[0] == pytest.approx(float(x.std(unbiased=False)), rel=1e-12)


def test_digits_test_fraction_option():
    ds = data.load("digits", test_fraction=0.5, seed=3)
    assert ds.num_train + ds.num_test == 1797 and abs(ds.num_test - 898.5) <= 1
    with pytest.raises(ValueError, match="test_fraction"):
        data.load("digits", test_fraction=1.5)


def test_digits_rejects_data_dir_and_unknown_options(tmp_path):
    with pytest.raises(ValueError, match="data_dir"):
        data.load("digits", data_dir=tmp_path)
    with pytest.raises(ValueError, match="test_fraction") as info:
        data.load("digits", test_size=0.3)
    assert "test_size" in str(info.value)
    with pytest.raises(TypeError, match="seed"):
        data.load("digits", seed=1.5)


def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.load("digits")


def test_registry_names_and_unknown_name():
    assert data.available_datasets() == ["cifar10", "cifar100", "cora", "digits", "fashion_mnist", "karate", "mnist", "text"]
    with pytest.raises(ValueError) as info:
        data.load("imagenet")
    for name in data.available_datasets():
        assert name in str(info.value)
    assert "imagenet" in str(info.value)


def test_registry_normalises_names(digits):
    assert data.load("Digits").num_train == digits.num_train


def test_register_dataset(digits):
    data.register_dataset("tiny_digits_for_test", lambda seed=0: digits, overwrite=True)
    try:
        assert data.load("tiny-digits-for-test") is digits
        with pytest.raises(ValueError, match="already registered"):
            data.register_dataset("tiny_digits_for_test", lambda: digits)
    finally:
        data.registry.DATASETS.unregister("tiny_digits_for_test")

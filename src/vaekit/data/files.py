"""User data from a path: .npz / .npy arrays (more formats are added here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaekit.data.core import DataError, Dataset, make_dataset, split_holdout
from vaekit.data.readers import read_npz_arrays

__all__ = ["load_path"]


def load_path(path: Path) -> Dataset:
    """A Dataset from a user file; the format is chosen by the extension."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = read_npz_arrays(path)
        if "train" in arrays and "test" in arrays:
            valid = (arrays["valid"], None) if "valid" in arrays else None
            y = {k: arrays.get(f"y_{k}") for k in ("train", "valid", "test")}
            return make_dataset(
                path.stem,
                (arrays["train"], y["train"]),
                (arrays["test"], y["test"]),
                None if valid is None else (valid[0], y["valid"]),
                source=str(path),
            )
        if "x" in arrays:
            x, y = arrays["x"], arrays.get("y")
            xa, ya, xb, yb = split_holdout(x, y, 0.2, seed=0)
            return make_dataset(path.stem, (xa, ya), (xb, yb), source=str(path))
        raise DataError(f"{path}: an .npz needs an array 'x' (and optional labels 'y'), or arrays 'train' and 'test'; it has {sorted(arrays)}")
    if suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"{path}: not a readable .npy file ({e}); it may be truncated or corrupt") from None
        xa, _, xb, _ = split_holdout(x, None, 0.2, seed=0)
        return make_dataset(path.stem, (xa, None), (xb, None), source=str(path))
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .npz, .npy, IDX, .amat, .csv or a folder of images")

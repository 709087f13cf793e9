"""File readers for user data. Each returns numpy arrays or raises DataError naming the file."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vaekit.data.core import DataError

__all__ = ["read_npz_arrays"]


def read_npz_arrays(path: Path, required: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (never unpickling objects)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e}); it may be truncated or corrupt: download or write it again") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing arrays {missing}; it has {sorted(arrays)}")
    return arrays

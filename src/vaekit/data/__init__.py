"""Datasets: named ones (digits, mnist, fashion-mnist, binarized-mnist, ...) and user files.

Example:
    >>> ds = load_dataset("digits")
    >>> ds.shape, ds.num_classes, len(ds.train) > 1000
    ((1, 8, 8), 10, True)
"""

from __future__ import annotations

import os
from pathlib import Path

from vaekit.data.core import (
    DataError,
    Dataset,
    Split,
    binarize,
    cache_dir,
    data_dir,
    hold_out_validation,
    make_dataset,
)
from vaekit.data.named import NAMED

__all__ = [
    "DataError",
    "Dataset",
    "Split",
    "NAMED",
    "load_dataset",
    "make_dataset",
    "hold_out_validation",
    "data_dir",
    "cache_dir",
]


def load_dataset(
    name_or_path: str,
    *,
    data_dir_: str | os.PathLike[str] | None = None,
    cache_dir_: str | os.PathLike[str] | None = None,
    binarization: str = "none",
    seed: int = 0,
) -> Dataset:
    """Load a named dataset or a user file/folder into memory.

    ``binarization``: ``none``, ``static`` (one fixed Bernoulli draw), ``threshold``, or
    ``dynamic`` (left to the trainer, which redraws every batch).
    """
    ddir = data_dir(data_dir_)
    cdir = cache_dir(cache_dir_)
    if name_or_path in NAMED:
        ds = NAMED[name_or_path](ddir, cdir)
    else:
        from vaekit.data.files import load_path

        path = Path(name_or_path).expanduser()
        if not path.exists():
            import difflib

            hint = difflib.get_close_matches(name_or_path, list(NAMED), n=1)
            extra = f" Did you mean {hint[0]!r}?" if hint else ""
            raise DataError(
                f"unknown dataset {name_or_path!r}: not a named dataset ({', '.join(sorted(NAMED))}) "
                f"and no such file or folder.{extra}"
            )
        ds = load_path(path)
    return binarize(ds, binarization, seed)

"""Datasets: named ones (digits, mnist, fashion-mnist, binarized-mnist, ...) and user files.

Example:
    >>> ds = load_dataset("digits")
    >>> ds.shape, ds.num_classes, len(ds.train) > 1000
    ((1, 8, 8), 10, True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from vaekit.data.core import (
    DataError,
    Dataset,
    Split,
    binarize,
    cache_dir,
    data_dir,
    hold_out_validation,
    limit_split,
    make_dataset,
)
from vaekit.data.fingerprint import data_change, data_fingerprint, recording_reads
from vaekit.data.named import NAMED

if TYPE_CHECKING:
    from vaekit.config import DataConfig

__all__ = [
    "DataError",
    "Dataset",
    "Split",
    "NAMED",
    "load_dataset",
    "training_data",
    "resolve_data_name",
    "data_change",
    "make_dataset",
    "hold_out_validation",
    "limit_split",
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


def resolve_data_name(name: str) -> str:
    """A dataset's name as a run records it: a named dataset as it is, a path made absolute,
    so that the run finds its data from any working directory."""
    if name in NAMED:
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def training_data(
    data: DataConfig,
    seed: int,
    *,
    data_dir_: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """The splits a run trains on, from its config's ``data`` section and ``train.seed``.

    The dataset is loaded and binarized, ``data.valid_fraction`` of its training split held
    out for validation, and ``data.limit`` training examples kept: a seeded random subset,
    stratified by label. The trainer, ``Run.dataset()`` and so evaluation, plots and the
    explorer all come through here, so they see the same examples. ``name`` replaces
    ``data.name`` (data that have moved); ``ds.fingerprint`` records the data as loaded.

    Example:
        >>> from vaekit.config import load_config
        >>> cfg = load_config(None, ["data.limit=100", "data.valid_fraction=0.1"])
        >>> ds = training_data(cfg.data, cfg.train.seed)
        >>> len(ds.train), len(ds.valid), ds.train.y.bincount().tolist()
        (100, 144, [11, 10, 10, 10, 10, 10, 10, 9, 9, 11])
    """
    with recording_reads() as reads:
        ds = load_dataset(name or data.name, data_dir_=data_dir_)
    fingerprint = data_fingerprint(ds, reads)
    ds = binarize(ds, data.binarize, seed)
    # Before the limit, so that the validation split does not depend on data.limit.
    ds = hold_out_validation(ds, data.valid_fraction)
    if data.limit:
        ds.train = limit_split(ds.train, data.limit, seed)
    ds.fingerprint = fingerprint
    return ds

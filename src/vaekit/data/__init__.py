"""Datasets: named ones (digits, mnist, fashion-mnist, binarized-mnist, ...) and user files.

Example:
    >>> ds = load_dataset("digits")
    >>> ds.shape, ds.num_classes, len(ds.train) > 1000
    ((1, 8, 8), 10, True)
"""

from __future__ import annotations

import os
from dataclasses import replace
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
from vaekit.data.stream import PYTHON_DATA, StreamSplit, python_dataset

if TYPE_CHECKING:
    from vaekit.config import DataConfig

__all__ = [
    "DataError",
    "Dataset",
    "Split",
    "NAMED",
    "load_dataset",
    "training_data",
    "python_dataset",
    "StreamSplit",
    "PYTHON_DATA",
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
    source: Dataset | None = None,
) -> Dataset:
    """The splits a run trains on, from its config's ``data`` section and ``train.seed``.

    The dataset is loaded and binarized, ``data.valid_fraction`` of its training split held
    out for validation, and ``data.limit`` training examples kept: a seeded random subset,
    stratified by label. The trainer, ``Run.dataset()`` and so evaluation, plots and the
    explorer all come through here, so they see the same examples. ``name`` replaces
    ``data.name`` (data that have moved); ``source`` is data given in Python (see
    :func:`vaekit.data.stream.python_dataset`), taken instead of loading ``data.name``.
    ``ds.fingerprint`` records the data as loaded.

    Example:
        >>> from vaekit.config import load_config
        >>> cfg = load_config(None, ["data.limit=100", "data.valid_fraction=0.1"])
        >>> ds = training_data(cfg.data, cfg.train.seed)
        >>> len(ds.train), len(ds.valid), ds.train.y.bincount().tolist()
        (100, 144, [11, 10, 10, 10, 10, 10, 10, 9, 9, 11])
    """
    if source is not None and isinstance(source.train, StreamSplit):
        return _stream_training_data(source, data, seed)
    if source is None and (name or data.name) == PYTHON_DATA:
        raise DataError(
            "this run's data were given in Python (vaekit.fit(..., data=...)); pass them again, "
            "e.g. run.dataset(data=x) or evaluate_run(run, dataset=vaekit.data.python_dataset(x))"
        )
    if source is not None:
        ds, reads = source, []
    else:
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


def _stream_training_data(ds: Dataset, data: DataConfig, seed: int) -> Dataset:
    """training_data for a streamed torch Dataset: the same holding out and limit, by index.

    Its examples are never all in memory, so no content hash is taken (the fingerprint
    records the split sizes only) and the limit is a plain seeded subset (labels would need
    a pass over the data to stratify).
    """
    import numpy as np

    from vaekit.data.core import _holdout_indices

    if data.binarize not in ("none", "dynamic"):
        raise DataError(
            f"data.binarize={data.binarize} needs the data in memory; binarize in your "
            "Dataset's __getitem__, or use data.binarize=dynamic"
        )
    train = ds.train
    assert isinstance(train, StreamSplit)
    valid = ds.valid
    if data.valid_fraction > 0 and valid is None:
        if len(train) < 2:
            raise DataError(f"{len(train)} training example(s) cannot give a validation split")
        keep, held = _holdout_indices(len(train), data.valid_fraction, 0)
        train, valid = train.subset(keep), train.subset(held)
    if data.limit and data.limit < len(train):
        rng = np.random.default_rng(seed)
        train = train.subset(np.sort(rng.choice(len(train), data.limit, replace=False)))
    out = replace(ds, train=train, valid=valid)
    counts = {k: len(v) for k, v in (("train", train), ("valid", valid), ("test", ds.test)) if v}
    out.fingerprint = {"sha256": None, "examples": counts, "files": [], "stream": True}
    return out

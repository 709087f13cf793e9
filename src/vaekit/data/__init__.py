"""Datasets: named ones (digits, mnist, fashion-mnist, binarized-mnist, ...), user files,
and a user's own function named by import path (``module:function``).

Example:
    >>> ds = load_dataset("digits")
    >>> ds.shape, ds.num_classes, len(ds.train) > 1000
    ((1, 8, 8), 10, True)
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vaekit.data.core import (
    HIDDEN_LABEL,
    DataError,
    Dataset,
    Split,
    _holdout_indices,
    binarize,
    cache_dir,
    check_resample,
    data_dir,
    hide_labels,
    hold_out_validation,
    limit_split,
    make_dataset,
    model_view,
)
from vaekit.data.files import load_path
from vaekit.data.fingerprint import cached_fingerprint, data_change, recording_reads
from vaekit.data.named import NAMED
from vaekit.data.stream import PYTHON_DATA, StreamSplit, python_dataset
from vaekit.parts import import_object, import_path_problem, is_import_path

if TYPE_CHECKING:
    from vaekit.config import DataConfig

__all__ = [
    "DataError",
    "Dataset",
    "Split",
    "NAMED",
    "load_dataset",
    "user_dataset",
    "training_data",
    "python_dataset",
    "StreamSplit",
    "PYTHON_DATA",
    "resolve_data_name",
    "data_change",
    "make_dataset",
    "hold_out_validation",
    "limit_split",
    "hide_labels",
    "HIDDEN_LABEL",
    "limit_examples",
    "model_view",
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
    options: Mapping[str, Any] | None = None,
) -> Dataset:
    """Load a named dataset, a user file/folder, or a user's ``module:function`` into memory.

    ``binarization``: ``none``, ``static`` (one fixed Bernoulli draw), ``threshold``, or
    ``dynamic`` (left to the trainer, which redraws every batch). ``options`` are the
    keyword arguments of a ``module:function`` dataset (``data.options``).
    """
    ddir = data_dir(data_dir_)
    cdir = cache_dir(cache_dir_)
    path = Path(name_or_path).expanduser()
    user = name_or_path not in NAMED and not path.exists() and is_import_path(name_or_path)
    if options and not user:
        raise DataError(
            f"data.options are the keyword arguments of a module:function dataset; "
            f"{name_or_path!r} takes none (remove data.options)"
        )
    if name_or_path in NAMED:
        ds = NAMED[name_or_path](ddir, cdir)
    elif user:
        ds = user_dataset(name_or_path, options or {})
    else:
        if not path.exists():
            problem = import_path_problem(name_or_path, "function")
            if problem is not None:  # meant as a module:function of the user's
                raise DataError(
                    f"unknown dataset {name_or_path!r}: no such file or folder, and as a "
                    f"module:function of yours, {problem}"
                )
            hint = difflib.get_close_matches(name_or_path, list(NAMED), n=1)
            extra = f" Did you mean {hint[0]!r}?" if hint else ""
            raise DataError(
                f"unknown dataset {name_or_path!r}: not a named dataset ({', '.join(sorted(NAMED))}) "
                f"and no such file or folder (nor a module:function of yours).{extra}"
            )
        ds = load_path(path)
    return binarize(ds, binarization, seed)


_USER_RETURNS = (
    "a vaekit Dataset (vaekit.data.make_dataset), a tuple (train_x, train_y, test_x, "
    "test_y) or a dict of splits {'train': (x, y), 'test': (x, y)[, 'valid': (x, y)]} "
    "(y may be None)"
)


def user_dataset(path: str, options: Mapping[str, Any] | None = None) -> Dataset:
    """The dataset of a user's function named ``module:function``, called with ``options``.

    The function returns a :class:`Dataset`, arrays ``(train_x, train_y, test_x,
    test_y)``, or a dict of splits ``{"train": (x, y), "test": (x, y)}`` with an optional
    ``"valid"`` (a split may be ``x`` alone, a label array may be None); arrays and
    tensors go through :func:`make_dataset`, which checks them and reads off their kind.
    A module that cannot be imported gets the error of a user part: put its folder on
    PYTHONPATH.

    Example:
        >>> user_dataset("vaekit.data:load_dataset", {"name_or_path": "digits"}).shape
        (1, 8, 8)
    """
    options = dict(options or {})
    fn = import_object(path, "dataset")
    if not callable(fn):
        raise DataError(f"{path} is not a function: name one that returns {_USER_RETURNS}")
    try:
        inspect.signature(fn).bind(**options)
    except TypeError as e:
        raise DataError(
            f"the dataset {path} cannot take data.options {options}: {e} "
            "(data.options are its keyword arguments)"
        ) from None
    except ValueError:  # no signature to check against (a builtin): let the call say
        pass
    out = fn(**options)
    if isinstance(out, Dataset):
        return out
    if isinstance(out, (tuple, list)) and len(out) == 4:
        tx, ty, sx, sy = (_array(a) for a in out)
        return make_dataset(path, (tx, ty), (sx, sy), source=path)
    if isinstance(out, Mapping) and {"train", "test"} <= set(out) <= {"train", "valid", "test"}:
        splits = {key: _split(value) for key, value in out.items()}
        return make_dataset(path, splits["train"], splits["test"], splits.get("valid"), source=path)
    raise DataError(f"{path} returned {type(out).__name__}; it must return {_USER_RETURNS}")


def _array(a: Any) -> Any:
    """Tensors as numpy arrays (on the CPU, without gradients); anything else as it is."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        return a.detach().cpu().numpy()
    return a


def _split(value: Any) -> tuple[Any, Any]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return _array(value[0]), _array(value[1])
    return _array(value), None


def resolve_data_name(name: str) -> str:
    """A dataset's name as a run records it: a named dataset or a ``module:function`` as
    it is, a path made absolute, so that the run finds its data from any working directory."""
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

    The dataset is loaded and binarized (or checked to hold the variances that
    ``data.resample`` draws from), ``data.valid_fraction`` of its training split held
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
    asked = name or data.name
    if source is not None:
        ds, reads = source, []
    else:
        with recording_reads() as reads:
            ds = load_dataset(asked, data_dir_=data_dir_, options=data.options)
    # Files read by vaekit's readers are keyed by their stat; a user's function may make
    # data from anything else, so its load is always hashed.
    own_reader = asked in NAMED or Path(asked).expanduser().exists()
    request = {"name": asked, "data_dir": str(data_dir(data_dir_)), "options": data.options}
    fingerprint = cached_fingerprint(ds, reads, request, cache_dir() if own_reader else None)
    ds = binarize(ds, data.binarize, seed)
    ds = check_resample(ds, data.resample)
    # Before the limit, so that the validation split does not depend on data.limit.
    ds = hold_out_validation(ds, data.valid_fraction)
    if data.limit:
        ds.train = limit_split(ds.train, data.limit, seed)
    if data.labels:  # after the limit: the labels kept are among the examples trained on
        ds.train = hide_labels(ds.train, data.labels, ds.num_classes, seed)
    ds.fingerprint = fingerprint
    return ds


def limit_examples(split: Split | StreamSplit, n: int, seed: int) -> Split | StreamSplit:
    """At most ``n`` examples of a split, a seeded subset in the split's order: stratified
    by label for a split in memory (:func:`limit_split`), a plain one for a streamed split
    (labels would need a pass over the data to stratify).

    Example:
        >>> import torch
        >>> s = Split(torch.zeros(10, 1), torch.tensor([0] * 6 + [1] * 4))
        >>> len(limit_examples(s, 5, seed=0)), len(limit_examples(s, 50, seed=0))
        (5, 10)
    """
    if not isinstance(split, StreamSplit):
        return limit_split(split, n, seed)
    if n >= len(split):
        return split
    rng = np.random.default_rng(seed)
    return split.subset(np.sort(rng.choice(len(split), n, replace=False)))


def _stream_training_data(ds: Dataset, data: DataConfig, seed: int) -> Dataset:
    """training_data for a streamed torch Dataset: the same holding out and limit, by index.

    Its examples are never all in memory, so no content hash is taken (the fingerprint
    records the split sizes only) and the limit is a plain seeded subset (labels would need
    a pass over the data to stratify).
    """
    if data.binarize not in ("none", "dynamic"):
        raise DataError(
            f"data.binarize={data.binarize} needs the data in memory; binarize in your "
            "Dataset's __getitem__, or use data.binarize=dynamic"
        )
    if data.resample != "none":
        raise DataError(
            f"data.resample={data.resample} draws from variances held beside the data in "
            "memory; a streamed dataset has none: pass arrays or a vaekit Dataset whose "
            "splits have var, or use data.resample=none"
        )
    if data.labels:
        raise DataError(
            f"data.labels={data.labels} chooses the labels to keep by class, which needs the "
            "data in memory (a streamed dataset's labels are read batch by batch): pass "
            "arrays or a vaekit Dataset, or use data.labels=0"
        )
    train = ds.train
    assert isinstance(train, StreamSplit)
    valid = ds.valid
    if data.valid_fraction > 0 and valid is None:
        if len(train) < 2:
            raise DataError(f"{len(train)} training example(s) cannot give a validation split")
        keep, held = _holdout_indices(len(train), data.valid_fraction, 0)
        train, valid = train.subset(keep), train.subset(held)
    if data.limit:
        train = limit_examples(train, data.limit, seed)
    out = replace(ds, train=train, valid=valid)
    counts = {k: len(v) for k, v in (("train", train), ("valid", valid), ("test", ds.test)) if v}
    out.fingerprint = {"sha256": None, "examples": counts, "files": [], "stream": True}
    return out

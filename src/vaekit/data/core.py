"""Datasets as tensors in memory: splits, checks, scaling and binarization."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.errors import VaekitError

__all__ = [
    "DataError",
    "Split",
    "Dataset",
    "make_dataset",
    "data_dir",
    "cache_dir",
    "split_holdout",
    "hold_out_validation",
    "limit_split",
    "hide_labels",
    "HIDDEN_LABEL",
    "check_finite_rows",
    "attach_factors",
    "attach_variances",
    "check_resample",
    "RESAMPLE_MODES",
]


class DataError(VaekitError, ValueError):
    """A dataset that cannot be used; the message names the file and the fix."""


@dataclass
class Split:
    """One split: ``x`` float32 ``(N, *shape)``, ``y`` int64 ``(N,)`` or None.

    ``factors``: for data generated from known factors of variation (dSprites), int64
    ``(N, K)``, each example's index on each factor's grid (``Dataset.factor_names`` and
    ``factor_sizes`` say which); None for other data.

    ``var``: for codes written with their posterior variances (``vaekit encode RUN --out
    FILE.npz``), float32 like ``x``, each value's variance around ``x`` (the mean);
    ``data.resample: gaussian`` trains on a fresh draw of N(x, var) every batch. None for
    other data.
    """

    x: Tensor
    y: Tensor | None = None
    factors: Tensor | None = None
    var: Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(
            self.x.to(device),
            None if self.y is None else self.y.to(device),
            None if self.factors is None else self.factors.to(device),
            None if self.var is None else self.var.to(device),
        )

    def take(self, n: int) -> Split:
        return Split(
            self.x[:n],
            None if self.y is None else self.y[:n],
            None if self.factors is None else self.factors[:n],
            None if self.var is None else self.var[:n],
        )

    def select(self, idx: Tensor) -> Split:
        """The examples at ``idx``, in that order."""
        return Split(
            self.x[idx],
            None if self.y is None else self.y[idx],
            None if self.factors is None else self.factors[idx],
            None if self.var is None else self.var[idx],
        )


@dataclass
class Dataset:
    """A dataset ready for training: every split already a tensor in memory.

    ``kind`` is ``binary`` (values in {0, 1}), ``grey`` (in [0, 1]) or ``real``;
    ``is_image`` means ``shape`` is ``(C, H, W)``.
    """

    name: str
    train: Split
    test: Split
    valid: Split | None
    shape: tuple[int, ...]
    num_classes: int
    kind: str
    is_image: bool
    class_names: list[str] | None = None
    # A table's column names (CSV header), one per feature; None for other data.
    columns: list[str] | None = None
    # What the data were when a run was trained on them (see data.fingerprint); None
    # until training_data() computes it.
    fingerprint: dict[str, Any] | None = None
    # Data generated from known factors of variation: their names and grid sizes, in the
    # order of each split's ``factors`` columns (see :func:`attach_factors`).
    factor_names: list[str] | None = None
    factor_sizes: list[int] | None = None

    def info(self) -> dict[str, object]:
        """What a run directory records about its data (enough to rebuild the model)."""
        info: dict[str, object] = {
            "name": self.name,
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "kind": self.kind,
            "is_image": self.is_image,
            "class_names": self.class_names,
            "columns": self.columns,
            "sizes": {
                "train": len(self.train),
                "valid": len(self.valid) if self.valid is not None else 0,
                "test": len(self.test),
            },
        }
        if self.fingerprint is not None:
            info["fingerprint"] = self.fingerprint
        if self.factor_names is not None and self.factor_sizes is not None:
            info["factors"] = {"names": self.factor_names, "sizes": self.factor_sizes}
        return info

    def split(self, name: str) -> Split:
        """The split ``train``, ``valid`` or ``test``; a DataError names the splits there are."""
        part = getattr(self, name, None) if name in ("train", "valid", "test") else None
        if isinstance(part, Split):
            return part
        there = [k for k in ("train", "valid", "test") if getattr(self, k) is not None]
        why = (
            " (a validation split is held out of the training data when a run is trained "
            "with data.valid_fraction > 0)"
            if name == "valid"
            else ""
        )
        raise DataError(f"dataset {self.name} has no {name!r} split{why}; use {' or '.join(there)}")


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The data directory: the explicit setting, else ``$VAEKIT_DATA_DIR``, else None."""
    value = explicit or os.environ.get("VAEKIT_DATA_DIR")
    return Path(value).expanduser() if value else None


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where downloads are kept: explicit, ``$VAEKIT_CACHE_DIR``, else ``~/.cache/vaekit``."""
    value = explicit or os.environ.get("VAEKIT_CACHE_DIR")
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vaekit"


def _float32_copy(x: np.ndarray) -> np.ndarray:
    """``x.astype(np.float32)`` in memory torch allocates (the same values).

    numpy asks the kernel for transparent huge pages for large arrays; on the VMs here a
    fresh 2 MiB page could stall on memory compaction, and the 220 MB of binarized MNIST
    took 0.3-0.8 s to convert against 0.16-0.24 s in torch's memory
    (benchmarks/train_overhead.py, the data phase).
    """
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).numpy()


def _as_float(x: np.ndarray, source: str) -> np.ndarray:
    """uint8 images are scaled by 255; floats are kept; NaN/Inf and wrong dtypes are errors."""
    if x.dtype == np.uint8:
        # In place: one 4-byte copy instead of two for 60,000-image datasets. numpy's
        # division (exact, as before: torch's divides by the reciprocal), torch's memory.
        out = _float32_copy(x)
        out /= np.float32(255.0)
        return out
    if x.dtype == np.bool_:
        return _float32_copy(x)
    if np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating):
        out = x.astype(np.float32)
        check_finite_rows(out, source)
        return out
    raise DataError(f"{source}: unsupported array type {x.dtype}; expected numbers")


def check_finite_rows(x: np.ndarray, source: str, what: str = "row") -> None:
    """A DataError naming the first NaN/Inf by its row (counting from 0) and place in the row.

    Call it on the array as the file holds it, before any split shuffles the rows, so
    that the row is the file's.
    """
    if not np.issubdtype(x.dtype, np.floating):
        return  # integers are always finite
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    row, *rest = (int(i) for i in np.argwhere(bad)[0])
    where = f"{what} {row}"
    if len(rest) == 1:
        where += f", column {rest[0]}"
    elif rest:
        where += f", position {tuple(rest)}"
    where += ", counting from 0"
    raise DataError(
        f"{source}: {int(bad.sum())} values are NaN or infinite (first at {where}); "
        "clean or impute them before training"
    )


def _labels(y: np.ndarray | None, n: int, source: str) -> Tensor | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.reshape(-1) if y.size == n else y
    if y.shape != (n,):
        raise DataError(
            f"{source}: {n} examples but labels of shape {y.shape}; there must be one label per example"
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"{source}: labels must be whole numbers (class indices)")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: labels must be integers, got {y.dtype}")
    if y.size and y.min() < 0:
        raise DataError(f"{source}: labels must be >= 0, got {int(y.min())}")
    return torch.from_numpy(y.astype(np.int64))


def _value_kind(raw: np.ndarray, xf: np.ndarray) -> str:
    """``binary`` / ``grey`` / ``real`` for one split. bool and uint8 arrays are classified
    without a pass over the floats, which keeps loading 55M-pixel datasets fast."""
    if raw.dtype == np.bool_:
        return "binary"
    if raw.dtype == np.uint8:
        # uint8 is divided by 255, so it always lands in [0, 1]; binary when only 0 and 255 occur.
        return "grey" if np.any((raw != 0) & (raw != 255)) else "binary"
    if xf.min() < 0 or xf.max() > 1:
        return "real"
    return "binary" if bool(np.all((xf == 0) | (xf == 1))) else "grey"


def split_holdout(
    x: np.ndarray, y: np.ndarray | None, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """A fixed, seeded split of arrays into (x_a, y_a, x_b, y_b) with ``fraction`` in b.

    Both parts keep the original order. Fewer than two examples cannot be split.
    """
    n = len(x)
    if n < 2:
        raise DataError(
            f"{n} example(s) cannot be split into a training and a test part; provide more data"
        )
    if y is not None and len(y) != n:
        raise DataError(f"{n} examples but {len(y)} labels; there must be one label per example")
    a, b = _holdout_indices(n, fraction, seed)
    return x[a], None if y is None else y[a], x[b], None if y is None else y[b]


def _holdout_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices (kept, held out) of a seeded split of ``n >= 2`` examples."""
    perm = np.random.default_rng(seed).permutation(n)
    # At least one example on each side, so both parts are usable splits.
    nb = min(max(int(round(n * fraction)), 1), n - 1)
    return np.sort(perm[nb:]), np.sort(perm[:nb])


def hold_out_validation(ds: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """``ds`` with a seeded ``fraction`` of its training split moved to a validation split.

    A dataset that has a validation split of its own keeps it (``fraction`` is ignored),
    as does ``fraction == 0``. The same dataset, fraction and seed always give the same
    split, so training and a later evaluation of ``--split valid`` see the same examples.

    Example:
        >>> from vaekit.data import load_dataset
        >>> ds = hold_out_validation(load_dataset("digits"), 0.25)
        >>> len(ds.train), len(ds.valid)
        (1078, 360)
    """
    if fraction <= 0 or ds.valid is not None:
        return ds
    if not 0 < fraction < 1:
        raise DataError(f"the validation fraction must be in (0, 1), got {fraction}")
    n = len(ds.train)
    if n < 2:
        raise DataError(
            f"{n} training example(s) cannot give a validation split; provide more data"
        )
    a, b = (torch.from_numpy(i) for i in _holdout_indices(n, fraction, seed))
    return replace(ds, train=ds.train.select(a), valid=ds.train.select(b))


def limit_split(split: Split, n: int, seed: int) -> Split:
    """A seeded random subset of ``n`` examples, stratified by label, in the split's order.

    Each class keeps its share of the split (largest remainders round the counts), so
    the first ``n`` rows of a file sorted by class cannot leave classes out. The same
    split, ``n`` and ``seed`` always give the same subset: a resumed run and a later
    evaluation see the examples that training saw.

    Example:
        >>> s = Split(torch.zeros(10, 1), torch.tensor([0] * 6 + [1] * 4))
        >>> limit_split(s, 5, seed=0).y.tolist()
        [0, 0, 0, 1, 1]
    """
    total = len(split)
    if n >= total:
        return split
    rng = np.random.default_rng(seed)
    if split.y is None:
        keep = rng.choice(total, n, replace=False)
    else:
        labels = split.y.cpu().numpy()
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        # Integer arithmetic keeps the shares exact: floor(n * count / total) each, and
        # the examples left over go to the largest remainders (ties: the lower label).
        quota, remainder = np.divmod(counts * n, total)
        order = np.argsort(-remainder, kind="stable")
        quota[order[: n - int(quota.sum())]] += 1
        keep = np.concatenate(
            [
                rng.choice(np.flatnonzero(inverse == c), int(k), replace=False)
                for c, k in enumerate(quota)
            ]
        )
    return split.select(torch.from_numpy(np.sort(keep)))


# The label of a training example whose label is hidden (data.labels): a semi-supervised
# objective learns from it without one.
HIDDEN_LABEL = -1


def hide_labels(split: Split, n: int, num_classes: int, seed: int) -> Split:
    """The split with the labels of ``n`` examples kept, ``n / num_classes`` from each
    class (a seeded choice), and every other label hidden (:data:`HIDDEN_LABEL`).

    Example:
        >>> s = Split(torch.zeros(8, 1), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
        >>> (hide_labels(s, 4, 2, seed=0).y >= 0).sum().item()
        4
    """
    if split.y is None:
        raise DataError(
            f"data.labels={n} keeps {n} of the training labels, but these data have none: "
            "use a labelled dataset (a folder per class, a label column, y arrays), or "
            "data.labels=0"
        )
    if num_classes < 2:
        raise DataError(f"data.labels needs two classes or more; these data have {num_classes}")
    labels = split.y.cpu().numpy()
    if n % num_classes:
        lower = n - n % num_classes
        options = (
            f"data.labels={lower} or {lower + num_classes}"
            if lower
            else f"data.labels={num_classes}"
        )
        raise DataError(
            f"data.labels={n} keeps the same number of labels from each of the "
            f"{num_classes} classes, so it must be a multiple of {num_classes}: use {options}"
        )
    if n > len(labels):
        raise DataError(
            f"data.labels={n} is more than the {len(labels)} labelled training examples: "
            f"use at most {len(labels) - len(labels) % num_classes} (or data.labels=0 for all)"
        )
    per = n // num_classes
    if int(labels.max(initial=0)) >= num_classes or int(labels.min(initial=0)) < 0:
        raise DataError(
            f"the training labels run from {int(labels.min())} to {int(labels.max())}, "
            f"beyond the {num_classes} classes 0..{num_classes - 1}"
        )
    counts = np.bincount(labels, minlength=num_classes)
    short_ = [c for c in range(num_classes) if counts[c] < per]
    if short_:
        most = int(counts.min()) * num_classes
        raise DataError(
            f"data.labels={n} keeps {per} labels of each class, but class {short_[0]} has "
            f"{int(counts[short_[0]])} training examples: use data.labels={most} or fewer"
        )
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in range(num_classes)]
    )
    y = torch.full_like(split.y, HIDDEN_LABEL)
    idx = torch.from_numpy(np.sort(keep)).to(split.y.device)
    y[idx] = split.y[idx]
    return replace(split, y=y)


def make_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray | None],
    test: tuple[np.ndarray, np.ndarray | None],
    valid: tuple[np.ndarray, np.ndarray | None] | None = None,
    *,
    source: str | None = None,
    is_image: bool | None = None,
    scale: float | None = None,
    class_names: list[str] | None = None,
    columns: list[str] | None = None,
) -> Dataset:
    """Check and convert numpy splits into a :class:`Dataset`.

    Images come as ``(N, H, W)`` or ``(N, C, H, W)`` and are stored as ``(N, C, H, W)``;
    other data as ``(N, D)``. uint8 data is scaled to [0, 1]; ``scale`` divides other
    data explicitly. The kind (binary / grey / real) is read off the values.
    """
    source = source or name
    splits: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"train": train, "test": test}
    if valid is not None:
        splits["valid"] = valid
    out: dict[str, Split] = {}
    shape: tuple[int, ...] | None = None
    kinds: list[str] = []
    for key, (x, y) in splits.items():
        where = f"{source} ({key} split)"
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[0] == 0:
            raise DataError(f"{where}: expected an array of examples (N, ...), got shape {x.shape}")
        if x.size == 0:
            raise DataError(
                f"{where}: examples of shape {x.shape[1:]} hold no values; each needs at least one feature"
            )
        xf = _as_float(x, where)
        if scale is not None:
            xf = xf / np.float32(scale)
        kinds.append(_value_kind(x if scale is None else xf, xf))
        image = is_image if is_image is not None else xf.ndim in (3, 4)
        if image and xf.ndim == 3:
            xf = xf[:, None]
        elif not image and xf.ndim > 2:
            xf = xf.reshape(len(xf), -1)
        if shape is None:
            shape = tuple(xf.shape[1:])
        elif tuple(xf.shape[1:]) != shape:
            raise DataError(
                f"{where}: examples of shape {tuple(xf.shape[1:])}, but the train split has {shape}"
            )
        out[key] = Split(torch.from_numpy(np.ascontiguousarray(xf)), _labels(y, len(xf), where))
    assert shape is not None
    kind = "real" if "real" in kinds else "grey" if "grey" in kinds else "binary"
    labelled = [s.y for s in out.values() if s.y is not None]
    if labelled and len(labelled) != len(out):
        raise DataError(f"{source}: some splits have labels and others do not")
    num_classes = max(int(t.max()) for t in labelled) + 1 if labelled else 0
    if class_names is not None and num_classes and len(class_names) < num_classes:
        class_names = None
    return Dataset(
        name=name,
        train=out["train"],
        test=out["test"],
        valid=out.get("valid"),
        shape=shape,
        num_classes=num_classes,
        kind=kind,
        is_image=len(shape) == 3,
        class_names=class_names,
        columns=columns if columns is not None and len(columns) == int(np.prod(shape)) else None,
    )


def attach_factors(
    ds: Dataset,
    factors: dict[str, np.ndarray],
    names: list[str],
    sizes: list[int],
) -> Dataset:
    """``ds`` with ground-truth factors beside the examples of each split.

    ``factors[split]`` is an integer array ``(N, K)``: for each example, its index on each
    of the K factors' grids (``0 <= f[:, k] < sizes[k]``). Every split of ``ds`` needs one.

    Example:
        >>> ds = make_dataset("toy", (np.zeros((4, 2)), None), (np.zeros((2, 2)), None))
        >>> ds = attach_factors(ds, {"train": np.array([[0], [1], [2], [0]]),
        ...                          "test": np.array([[1], [2]])}, ["size"], [3])
        >>> ds.test.factors.tolist(), ds.info()["factors"]
        ([[1], [2]], {'names': ['size'], 'sizes': [3]})
    """
    if len(names) != len(sizes) or not names:
        raise DataError(f"{ds.name}: give one name per factor size, got {names} and {sizes}")
    out: dict[str, Split] = {}
    for key in ("train", "valid", "test"):
        split = getattr(ds, key)
        if split is None:
            continue
        if key not in factors:
            raise DataError(f"{ds.name}: the {key} split has no factors")
        f = np.asarray(factors[key])
        if f.shape != (len(split), len(names)) or not np.issubdtype(f.dtype, np.integer):
            raise DataError(
                f"{ds.name} ({key} split): factors must be integers of shape "
                f"({len(split)}, {len(names)}), got {f.dtype} {f.shape}"
            )
        if f.size and (f.min() < 0 or np.any(f.max(0) >= np.asarray(sizes))):
            raise DataError(f"{ds.name} ({key} split): factor indices outside 0..size-1 ({sizes})")
        out[key] = replace(split, factors=torch.from_numpy(f.astype(np.int64)))
    return replace(
        ds,
        train=out["train"],
        test=out["test"],
        valid=out.get("valid"),
        factor_names=list(names),
        factor_sizes=[int(n) for n in sizes],
    )


def attach_variances(ds: Dataset, variances: Mapping[str, np.ndarray], source: str) -> Dataset:
    """``ds`` with ``variances[split]``, each value's variance around the split's ``x``
    (codes: the means and variances of q(z|x)), as the splits' ``var``; a split not in
    ``variances`` keeps None.

    Example:
        >>> ds = make_dataset("codes", (np.zeros((4, 2)), None), (np.zeros((2, 2)), None))
        >>> attach_variances(ds, {"train": np.ones((4, 2))}, "codes.npz").train.var.shape
        torch.Size([4, 2])
    """
    out: dict[str, Split | None] = {}
    for key in ("train", "valid", "test"):
        split: Split | None = getattr(ds, key)
        if key not in variances:
            out[key] = split
            continue
        where = f"{source} (var_{key})"
        if split is None:
            raise DataError(f"{where}: variances of a {key} split the file does not have")
        v = np.asarray(variances[key])
        if v.size != split.x.numel() or len(v) != len(split):
            raise DataError(
                f"{where}: variances of shape {v.shape} for {key} examples of shape "
                f"{tuple(split.x.shape)}; there must be one variance per value"
            )
        if not np.issubdtype(v.dtype, np.floating) and not np.issubdtype(v.dtype, np.integer):
            raise DataError(f"{where}: unsupported array type {v.dtype}; expected numbers")
        v = v.astype(np.float32).reshape(split.x.shape)
        check_finite_rows(v, where)
        if v.size and float(v.min()) < 0:
            raise DataError(f"{where}: variances must be >= 0, got {float(v.min())}")
        out[key] = replace(split, var=torch.from_numpy(np.ascontiguousarray(v)))
    train, test = out["train"], out["test"]
    assert train is not None and test is not None
    return replace(ds, train=train, test=test, valid=out["valid"])


# data.resample: none, or gaussian (each training batch a fresh draw of N(x, var)).
RESAMPLE_MODES = ("none", "gaussian")


def check_resample(ds: Dataset, mode: str) -> Dataset:
    """``ds`` ready for ``data.resample``: ``gaussian`` needs the training split's
    variances (codes written by ``vaekit encode RUN --out FILE.npz``), from which the
    trainer draws each training batch afresh, x + sqrt(var) * N(0, 1), as
    ``binarize="dynamic"`` redraws pixels. The validation and test splits are scored at
    their means, ``x``, as Kingma et al.'s M1+M2 scores its test set. ``none`` changes
    nothing."""
    if mode == "none":
        return ds
    if mode not in RESAMPLE_MODES:
        raise DataError(f"data.resample must be one of {', '.join(RESAMPLE_MODES)}, got {mode!r}")
    if ds.train.var is None:
        raise DataError(
            f"{ds.name}: data.resample={mode} draws each training batch from the codes' "
            "means and variances, but these data have no variances (arrays var_train, "
            "var_test in an .npz): re-encode them with `vaekit encode M1RUN --out "
            "codes.npz` (which now writes the variances), or use data.resample=none"
        )
    return ds


def binarize(ds: Dataset, mode: str, seed: int = 0) -> Dataset:
    """``static``: one fixed Bernoulli draw per pixel (the literature's static binarization);
    ``threshold``: x > 0.5; ``dynamic``: the trainer redraws the training set every batch,
    and the validation and test splits get one fixed draw here so evaluations compare."""
    if mode == "none":
        return ds
    if ds.kind == "real":
        raise DataError(
            f"{ds.name}: binarization needs data in [0, 1], but it has values outside it"
        )
    gen = torch.Generator().manual_seed(seed)

    def conv(s: Split) -> Split:
        if mode == "threshold":
            return replace(s, x=(s.x > 0.5).float())
        return replace(s, x=torch.bernoulli(s.x, generator=gen))

    dynamic = mode == "dynamic"
    # Draw order (train, test, valid) fixes which random numbers each split gets.
    train = ds.train if dynamic else conv(ds.train)
    test = conv(ds.test)
    valid = None if ds.valid is None else conv(ds.valid)
    return replace(ds, train=train, test=test, valid=valid, kind=ds.kind if dynamic else "binary")


def model_view(split: Split, binarize: str, seed: int) -> Split:
    """The training ``split`` as the model saw it: with ``binarize`` ``dynamic``, one seeded
    Bernoulli draw (the trainer draws afresh each batch, and the test split holds one draw);
    the split unchanged otherwise (it was binarized on loading, or is not binarized at all).

    Anything fitted on a run's training codes or images (reference features, samplers,
    latent classifiers) goes through here: the grey images of a dynamic run are inputs the
    encoder never saw, and a classifier fitted on them is tested on binary images.
    """
    if binarize != "dynamic":
        return split
    gen = torch.Generator().manual_seed(seed)
    return replace(split, x=torch.bernoulli(split.x, generator=gen))

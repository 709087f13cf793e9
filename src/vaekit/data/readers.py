"""File readers for datasets: IDX, ``.amat`` text, CSV, folders of images, ``.npz`` / ``.npy``.

Each reader returns numpy arrays (writable, native byte order) or raises
:class:`DataError` naming the file and the fix; no other exception escapes for a
bad file. Gzip-compressed files are recognised by their magic bytes.

Example:
    >>> x = read_idx(Path("train-images-idx3-ubyte.gz"))  # doctest: +SKIP
    >>> x.shape, x.dtype                                   # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'))
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import struct
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from vaekit.data.core import DataError
from vaekit.data.fingerprint import note_read

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_COLUMNS",
    "CsvTable",
    "ImageSet",
    "read_bytes",
    "read_idx",
    "read_amat",
    "read_csv",
    "read_images",
    "read_npz_arrays",
    "read_npy",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# A CSV column with one of these names (any case) holds the labels.
LABEL_COLUMNS = ("label", "y")
_AGAIN = "download or copy it again"


def read_bytes(path: Path) -> bytes:
    """The content of a file, decompressed when it is gzip data."""
    note_read(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise DataError(
            f"{path}: cannot be read ({e.strerror or e}); check the path and its permissions"
        ) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e}); {_AGAIN}") from None
    if path.suffix.lower() == ".gz":
        raise DataError(f"{path}: named .gz but not gzip data; {_AGAIN} or rename it")
    return raw


# ---------------------------------------------------------------------------------------
# IDX (the MNIST format): 0x00 0x00, a type code, the number of dimensions, then each
# dimension as a big-endian uint32, then the values in C order, big-endian.

_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``*-idx3-ubyte`` images, ``*-idx1-ubyte`` labels, optionally gzipped).

    The length must match the header exactly: truncated or over-long files are errors.
    """
    raw = read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DataError(
            f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'}; expected 00 00, a type code "
            f"08/09/0b/0c/0d/0e and the number of dimensions); check that this is the right file or {_AGAIN}"
        )
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes); {_AGAIN}")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = start + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "too long (data after the end)"
        raise DataError(
            f"{path}: IDX file {what}: its header declares shape {dims} of {dtype.name} ({expected} bytes) "
            f"but it has {len(raw)} bytes; {_AGAIN}"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=start).reshape(dims)
    return values.astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------------------
# Whitespace-separated text (.amat): one example a line.


def read_amat(path: Path) -> np.ndarray:
    """A text matrix of whitespace-separated numbers, one example a line, as float32 ``(N, D)``.

    Files of single digits (such as the binarized MNIST ``.amat`` files) take a fast path.
    """
    raw = read_bytes(path)
    if not raw.strip():
        raise DataError(
            f"{path}: empty file; it must hold one example a line, numbers separated by spaces"
        )
    fast = _digit_matrix(raw, path)
    if fast is not None:
        return fast
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not a text file (undecodable byte at offset {e.start}); {_AGAIN}"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": checked below
            values = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        raise DataError(f"{path}: {_diagnose_rows(text.splitlines())}") from None
    if values.size == 0:
        raise DataError(f"{path}: no numbers found; it must hold one example a line")
    _check_finite(values, path)
    return values.astype(np.float32)


# 1 for the digits 0-9, 2 for space, tab, CR and LF, 0 for every other byte.
_BYTE_CLASS = np.zeros(256, dtype=np.uint8)
_BYTE_CLASS[np.frombuffer(b"0123456789", dtype=np.uint8)] = 1
_BYTE_CLASS[np.frombuffer(b" \t\r\n", dtype=np.uint8)] = 2


def _digit_matrix(raw: bytes, path: Path) -> np.ndarray | None:
    """Parse a file of single-digit tokens with numpy alone; None when it has other tokens."""
    b = np.frombuffer(raw, dtype=np.uint8)
    byte_class = _BYTE_CLASS[b]  # one table lookup per byte: far faster than np.isin
    if (byte_class == 0).any():
        return None
    digit = byte_class == 1
    if (digit[1:] & digit[:-1]).any():
        return None  # multi-digit numbers: the general parser handles them
    starts = np.concatenate(([0], np.flatnonzero(b == 10) + 1))
    starts = starts[starts < len(b)]
    counts = np.add.reduceat(digit, starts, dtype=np.int64)
    lines = np.flatnonzero(counts)
    width = int(counts[lines[0]])
    bad = lines[counts[lines] != width]
    if bad.size:
        line = int(bad[0])
        raise DataError(
            f"{path}: line {line + 1} has {int(counts[line])} values but line {int(lines[0]) + 1} has {width}; "
            "every line must hold one example with the same number of values"
        )
    return (b[digit] - np.uint8(48)).reshape(-1, width).astype(np.float32)


def _diagnose_rows(lines: Sequence[str]) -> str:
    """Why a whitespace-separated matrix does not parse: the first bad line and the fix."""
    width, first = None, 0
    for i, line in enumerate(lines, 1):
        cells = line.split()
        if not cells:
            continue
        for j, cell in enumerate(cells, 1):
            try:
                float(cell)
            except ValueError:
                return f"line {i}, value {j}: {cell[:40]!r} is not a number; every value must be numeric"
        if width is None:
            width, first = len(cells), i
        elif len(cells) != width:
            return (
                f"line {i} has {len(cells)} values but line {first} has {width}; "
                "every line must hold one example with the same number of values"
            )
    return "cannot be read as a matrix of numbers"


def _check_finite(
    values: np.ndarray,
    path: Path,
    names: Sequence[str] | None = None,
    lines: Sequence[int] | None = None,
) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        line = lines[r] if lines is not None else r + 1
        col = f"column {c + 1}" + (f" ({names[c]!r})" if names else "")
        raise DataError(
            f"{path}: {int(bad.sum())} values are NaN or infinite (first at line {line}, {col}); "
            "clean or impute them before training"
        )


# ---------------------------------------------------------------------------------------
# CSV of numeric columns


@dataclass
class CsvTable:
    """A CSV's numbers: ``x`` float64 ``(N, D)``; ``y`` int64 ``(N,)`` from a label column or None."""

    x: np.ndarray
    y: np.ndarray | None
    columns: list[str]
    class_names: list[str] | None = None


def read_csv(path: Path) -> CsvTable:
    """A CSV of numeric columns with an optional header row.

    A column named ``label`` or ``y`` becomes the labels (numbers, or names that are
    turned into class indices in sorted order). Values are kept as they are, unscaled.
    Delimiter: comma, else semicolon or tab, whichever the first line uses.

    Example:
        >>> t = read_csv(Path("iris.csv"))  # doctest: +SKIP
        >>> t.x.shape, t.class_names        # doctest: +SKIP
        ((150, 4), ['setosa', 'versicolor', 'virginica'])
    """
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (undecodable byte at offset {e.start}); save it as a UTF-8 CSV"
        ) from None
    if "\x00" in text:
        raise DataError(
            f"{path}: contains NUL bytes, so it is not a text CSV; check that this is the right file"
        )
    head = text.split("\n", 1)[0]
    delimiter = (
        "\t" if path.suffix.lower() == ".tsv" else next((d for d in ",;\t" if d in head), ",")
    )
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append([cell.strip() for cell in row])
                lines.append(reader.line_num)
    except csv.Error as e:
        raise DataError(
            f"{path}: malformed CSV at line {reader.line_num} ({e}); fix the quoting there"
        ) from None
    if not rows:
        raise DataError(
            f"{path}: empty CSV; it needs one row per example and one numeric column per feature"
        )
    header = not all(_is_number(c) for c in rows[0])
    width = len(rows[0])
    names = rows[0] if header else [f"x{i}" for i in range(width)]
    for row, line in zip(rows, lines, strict=True):
        if len(row) != width:
            raise DataError(
                f"{path}: line {line} has {len(row)} columns but line {lines[0]} has {width}; "
                "every row needs the same number of columns"
            )
    if header:
        rows, lines = rows[1:], lines[1:]
        if not rows:
            raise DataError(f"{path}: only a header row, no data; add one row per example")
    lowered = [n.lower() for n in names] if header else []
    label_col = next((lowered.index(n) for n in LABEL_COLUMNS if n in lowered), None)
    feature_cols = [j for j in range(width) if j != label_col]
    if not feature_cols:
        raise DataError(f"{path}: no feature columns besides the labels {names[label_col or 0]!r}")
    x = np.empty((len(rows), len(feature_cols)), dtype=np.float64)
    for i, (row, line) in enumerate(zip(rows, lines, strict=True)):
        try:
            x[i] = [float(row[j]) for j in feature_cols]
        except ValueError:
            j = next(j for j in feature_cols if not _is_number(row[j]))
            what = "is empty" if not row[j] else f"holds {row[j][:40]!r}, which is not a number"
            labels = ""
            if label_col is None and row[j]:
                # Text in an unnamed column is most often the class names.
                labels = (
                    f"; if {names[j]!r} holds the class labels, rename the column to "
                    f"{' or '.join(map(repr, LABEL_COLUMNS))} (those names mark the labels)"
                )
            raise DataError(
                f"{path}: line {line}, column {j + 1} ({names[j]!r}) {what}; every feature must be numeric "
                f"(fill in or drop missing values, encode categories as numbers){labels}"
            ) from None
    _check_finite(x, path, [names[j] for j in feature_cols], lines)
    y, class_names = None, None
    if label_col is not None:
        y, class_names = _csv_labels(
            [row[label_col] for row in rows], lines, path, names[label_col]
        )
    return CsvTable(x=x, y=y, columns=[names[j] for j in feature_cols], class_names=class_names)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _csv_labels(
    cells: list[str], lines: list[int], path: Path, name: str
) -> tuple[np.ndarray, list[str] | None]:
    for cell, line in zip(cells, lines, strict=True):
        if not cell:
            raise DataError(
                f"{path}: line {line}: the label column {name!r} is empty; every row needs a label"
            )
    if all(_is_number(c) for c in cells):
        values = np.array([float(c) for c in cells])
        bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{path}: line {lines[i]}: label {cells[i]!r} in column {name!r} is not a class index; "
                "labels must be whole numbers >= 0, or class names"
            )
        return values.astype(np.int64), None
    classes = sorted(set(cells))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[c] for c in cells], dtype=np.int64), classes


# ---------------------------------------------------------------------------------------
# Folders of images


@dataclass
class ImageSet:
    """Images ``x`` uint8 ``(N, C, H, W)`` (C = 1 grey or 3 RGB), labels from class subfolders."""

    x: np.ndarray
    y: np.ndarray | None
    class_names: list[str] | None
    files: list[Path]


def _visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def read_images(folder: Path, classes: Sequence[str] | None = None) -> ImageSet:
    """A folder of PNG/JPEG/... images; one subfolder per class gives labels.

    All images must have the same size; grey images become one channel, colour ones
    three (alpha is dropped), and grey images are repeated to RGB when both occur.
    ``classes`` fixes the class order (used to read train/test folders consistently).
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; check the path")
    entries = _visible(folder)
    subdirs = [p for p in entries if p.is_dir()]
    loose = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if subdirs and loose:
        raise DataError(
            f"{folder}: has both images ({loose[0].name}, ...) and subfolders ({subdirs[0].name}, ...); "
            "put every image into one subfolder per class, or use no subfolders at all"
        )
    files: list[Path] = []
    labels: list[int] | None = None
    names: list[str] | None = None
    if subdirs:
        names = list(classes) if classes is not None else [p.name for p in subdirs]
        unknown = [p.name for p in subdirs if p.name not in names]
        if unknown:
            raise DataError(
                f"{folder}: class folders {unknown} are not among the classes {names}; rename or remove them"
            )
        labels = []
        for sub in subdirs:
            found = _image_files(sub)
            if not found:
                raise DataError(
                    f"{sub}: class folder without images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it"
                )
            files += found
            labels += [names.index(sub.name)] * len(found)
    else:
        files = loose
    if not files:
        raise DataError(
            f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found; put the images in it, "
            "or in one subfolder per class"
        )
    arrays = [_read_image(f) for f in files]
    h, w = arrays[0].shape[:2]
    for f, a in zip(files, arrays, strict=True):
        if a.shape[:2] != (h, w):
            raise DataError(
                f"{f}: {a.shape[1]}x{a.shape[0]} pixels but {files[0]} has {w}x{h}; "
                "every image must have the same size: resize them first"
            )
    colour = any(a.ndim == 3 for a in arrays)
    x = np.empty((len(arrays), 3 if colour else 1, h, w), dtype=np.uint8)
    for i, a in enumerate(arrays):
        x[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]
    y = None if labels is None else np.array(labels, dtype=np.int64)
    note_read(folder, files)
    return ImageSet(x=x, y=y, class_names=names, files=files)


def _read_image(path: Path) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grey) or ``(H, W, 3)``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                raise DataError(
                    f"{path}: {im.mode} images (16-bit or float) are not supported; save it as 8-bit"
                )
            grey = im.mode in ("1", "L", "LA") or (im.mode == "P" and _grey_palette(im))
            return np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8).copy()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure means the same thing: unreadable
        raise DataError(
            f"{path}: unreadable image ({type(e).__name__}: {e}); replace or remove it"
        ) from None


def _grey_palette(im: Image.Image) -> bool:
    palette = im.getpalette()
    if not palette:
        return True
    rgb = np.array(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


# ---------------------------------------------------------------------------------------
# numpy files


def _quiet_numpy_load(path: Path) -> object:
    # Damaged headers can make numpy's header parser warn about odd escapes; the
    # failure is reported as a DataError, so the warning is only noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        return np.load(path, allow_pickle=False)


def _check_npy_header(f: IO[bytes], size: int, path: Path, label: str) -> None:
    """Refuse object arrays and headers that ask for more data than there is, before allocating."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.hasobject:
        raise DataError(f"{path}: {label} holds Python objects; save plain numeric arrays")
    if math.prod(shape) * dtype.itemsize > size - f.tell():
        raise DataError(
            f"{path}: {label} is truncated (its header declares shape {shape}); {_AGAIN}"
        )


def read_npz_arrays(
    path: Path, required: Sequence[str] = (), only: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (never unpickling objects); with ``only``, just those
    (the file may hold other members, even pickled ones, which are not read)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    note_read(path)
    wanted = None if only is None else {f"{k}.npy" for k in only}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if wanted is not None and info.filename not in wanted:
                    continue
                with zf.open(info) as f:
                    _check_npy_header(f, info.file_size, path, f"array {info.filename!r}")
        with _quiet_numpy_load(path) as npz:  # type: ignore[attr-defined]
            keys = [k for k in npz.files if only is None or k in only]
            arrays = {k: npz[k] for k in keys}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile and numpy's parser raise many types for damaged bytes
        raise DataError(
            f"{path}: not a readable .npz file ({type(e).__name__}: {e}); it may be truncated or "
            f"corrupt: {_AGAIN}"
        ) from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing arrays {missing}; it has {sorted(arrays)}")
    return arrays


def read_npy(path: Path) -> np.ndarray:
    """One array from an ``.npy`` file (never unpickling objects)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    note_read(path)
    if zipfile.is_zipfile(path):
        raise DataError(f"{path}: an .npz archive named .npy; rename it to .npz")
    try:
        with open(path, "rb") as f:
            _check_npy_header(f, path.stat().st_size, path, "the array")
        value = _quiet_numpy_load(path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy's header parser raises many types for damaged bytes
        raise DataError(
            f"{path}: not a readable .npy file ({type(e).__name__}: {e}); it may be truncated or "
            f"corrupt: {_AGAIN}"
        ) from None
    assert isinstance(value, np.ndarray)
    return value

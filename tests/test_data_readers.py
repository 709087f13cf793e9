"""File readers: good files round-trip, every bad file gives a DataError naming it, and
random damage (hypothesis) never escapes as any other exception."""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaekit.data import DataError
from vaekit.data.files import load_path
from vaekit.data.readers import (
    read_amat,
    read_csv,
    read_idx,
    read_images,
    read_npy,
    read_npz_arrays,
)

RNG = np.random.default_rng(0)


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file: 00 00, type code, ndim, big-endian dims, big-endian values."""
    code = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}[a.dtype.str[1:]]
    head = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def amat_bytes(a: np.ndarray) -> bytes:
    return "".join(" ".join(str(v) for v in row) + "\n" for row in a.tolist()).encode()


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ good files


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, dtype: str, compress: bool) -> None:
    a = (RNG.random((5, 3, 4)) * 100).astype(dtype)
    data = idx_bytes(a)
    path = write(
        tmp_path,
        "x-idx3-ubyte" + (".gz" if compress else ""),
        gzip.compress(data) if compress else data,
    )
    got = read_idx(path)
    assert got.shape == (5, 3, 4) and got.dtype == a.dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, a)
    assert got.flags.writeable


def test_amat_digits_and_general(tmp_path: Path) -> None:
    bits = (RNG.random((7, 12)) < 0.5).astype(np.uint8)
    np.testing.assert_array_equal(read_amat(write(tmp_path, "b.amat", amat_bytes(bits))), bits)
    # Windows line ends, blank lines and a missing final newline take the same fast path.
    text = amat_bytes(bits).replace(b"\n", b"\r\n")[:-2] + b"\r\n\r\n"
    np.testing.assert_array_equal(read_amat(write(tmp_path, "c.amat", text)), bits)
    real = RNG.normal(size=(4, 3)).round(4)
    got = read_amat(write(tmp_path, "r.amat", amat_bytes(real)))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, real, rtol=1e-6)


def test_csv_header_labels_and_names(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", b"a,b,label\n1.5,-2,0\n3,4e2,2\n\n5,6,1\n")
    t = read_csv(path)
    np.testing.assert_array_equal(t.x, [[1.5, -2], [3, 400], [5, 6]])
    np.testing.assert_array_equal(t.y, [0, 2, 1])
    assert t.columns == ["a", "b"] and t.class_names is None
    named = read_csv(write(tmp_path, "n.csv", b"x1;x2;Y\n1;2;cat\n3;4;dog\n5;6;cat\n"))
    assert named.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(named.y, [0, 1, 0])
    plain = read_csv(write(tmp_path, "p.csv", b"1,2\n3,4\n"))
    assert plain.y is None and plain.x.shape == (2, 2)


def test_images_grey_rgb_and_classes(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, (4, 5), dtype=np.uint8)
    rgb = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    write(tmp_path, "a/cat/1.png", png_bytes(grey))
    write(tmp_path, "a/dog/2.png", png_bytes(rgb))
    write(tmp_path, "a/dog/notes.txt", b"ignored")
    s = read_images(tmp_path / "a")
    assert s.x.shape == (2, 3, 4, 5) and s.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(s.y, [0, 1])
    np.testing.assert_array_equal(s.x[0, 2], grey)  # grey repeated into RGB when mixed
    np.testing.assert_array_equal(s.x[1], rgb.transpose(2, 0, 1))
    write(tmp_path, "b/1.png", png_bytes(grey))
    only_grey = read_images(tmp_path / "b")
    assert only_grey.x.shape == (1, 1, 4, 5) and only_grey.y is None


def test_npz_and_npy(tmp_path: Path) -> None:
    x = RNG.random((3, 2))
    arrays = read_npz_arrays(write(tmp_path, "a.npz", npz_bytes(x=x)), required=("x",))
    np.testing.assert_array_equal(arrays["x"], x)
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_array_equal(read_npy(tmp_path / "a.npy"), x)


# ------------------------------------------------------------------ bad files, each with its message

GOOD_IDX = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
GREY = np.zeros((4, 5), np.uint8)


def _file(name: str, data: bytes) -> Callable[[Path], Path]:
    return lambda tmp: write(tmp, name, data)


def _missing(name: str) -> Callable[[Path], Path]:
    return lambda tmp: tmp / name


def _folder(files: dict[str, bytes]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / "f").mkdir()
        for name, data in files.items():
            write(tmp / "f", name, data)
        return tmp / "f"

    return make


def _png16(tmp: Path) -> Path:
    (tmp / "f").mkdir()
    Image.fromarray(np.zeros((4, 5), np.uint16)).save(tmp / "f" / "a.png")
    return tmp / "f"


def _npz_with_short_member() -> bytes:
    """A zip whose x.npy header declares 1000 values but holds 10 (checked before allocating)."""
    member = io.BytesIO()
    np.lib.format.write_array(member, np.arange(10.0))
    data = member.getvalue().replace(b"(10,)", b"(1000,)", 1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", data)
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _object_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"a": 1}], dtype=object))
    return buf.getvalue()


GOOD_NPZ = npz_bytes(x=np.arange(100.0))
Reader = Callable[[Path], object]
# (reader, what, make the bad input under tmp, a part of the expected message)
BAD: list[tuple[Reader, str, Callable[[Path], Path], str]] = [
    (read_idx, "missing", _missing("x-idx3-ubyte"), "no such file"),
    (read_idx, "wrong magic", _file("x-idx3-ubyte", b"\x12\x34" + GOOD_IDX[2:]), "not an IDX file"),
    (
        read_idx,
        "bad type code",
        _file("x-idx3-ubyte", b"\x00\x00\x07" + GOOD_IDX[3:]),
        "not an IDX file",
    ),
    (read_idx, "truncated header", _file("x-idx3-ubyte", GOOD_IDX[:9]), "truncated IDX header"),
    (read_idx, "truncated data", _file("x-idx3-ubyte", GOOD_IDX[:-1]), "IDX file truncated"),
    (read_idx, "over-long", _file("x-idx3-ubyte", GOOD_IDX + b"\x00"), "too long"),
    (
        read_idx,
        "truncated gzip",
        _file("x.gz", gzip.compress(GOOD_IDX)[:-6]),
        "corrupt or truncated gzip",
    ),
    (
        read_idx,
        "corrupt gzip",
        _file("x.gz", gzip.compress(GOOD_IDX)[:12] + b"\xff" * 30),
        "gzip data",
    ),
    (read_idx, "not gzip", _file("x.gz", GOOD_IDX), "named .gz but not gzip"),
    (read_amat, "missing", _missing("x.amat"), "no such file"),
    (read_amat, "empty", _file("x.amat", b"  \n\n"), "empty file"),
    (
        read_amat,
        "ragged digits",
        _file("x.amat", b"0 1 0\n1 1\n"),
        "line 2 has 2 values but line 1 has 3",
    ),
    (read_amat, "ragged numbers", _file("x.amat", b"0.5 1 0\n1 12\n"), "line 2 has 2 values"),
    (
        read_amat,
        "non-numeric",
        _file("x.amat", b"0 1\n1 x\n"),
        "line 2, value 2: 'x' is not a number",
    ),
    (
        read_amat,
        "nan",
        _file("x.amat", b"0.5 nan\n1 2\n"),
        "NaN or infinite (first at line 1, column 2)",
    ),
    (read_amat, "binary", _file("x.amat", b"\xff\xfe\x00\x01"), "not a text file"),
    (read_csv, "missing", _missing("x.csv"), "no such file"),
    (read_csv, "empty", _file("x.csv", b"\n\n"), "empty CSV"),
    (read_csv, "header only", _file("x.csv", b"a,b\n"), "only a header row"),
    (read_csv, "ragged", _file("x.csv", b"a,b\n1,2\n3\n"), "line 3 has 1 columns but line 1 has 2"),
    (
        read_csv,
        "non-numeric",
        _file("x.csv", b"a,b\n1,2\n3,abc\n"),
        "line 3, column 2 ('b') holds 'abc'",
    ),
    (read_csv, "empty cell", _file("x.csv", b"a,b\n1,\n"), "line 2, column 2 ('b') is empty"),
    (
        read_csv,
        "infinite",
        _file("x.csv", b"a,b\n1,2\n3,inf\n"),
        "NaN or infinite (first at line 3, column 2 ('b'))",
    ),
    (read_csv, "fractional label", _file("x.csv", b"a,label\n1,0\n2,1.5\n"), "line 3: label '1.5'"),
    (read_csv, "negative label", _file("x.csv", b"a,y\n1,-1\n"), "is not a class index"),
    (read_csv, "missing label", _file("x.csv", b"a,y\n1,\n"), "the label column 'y' is empty"),
    (read_csv, "labels only", _file("x.csv", b"label\n1\n"), "no feature columns"),
    (read_csv, "not utf-8", _file("x.csv", b"a,b\n\xff\xfe,1\n"), "not UTF-8"),
    (read_csv, "nul bytes", _file("x.csv", b"a,b\n1,\x002\n"), "NUL bytes"),
    (read_images, "missing", _missing("nope"), "no such folder"),
    (read_images, "empty folder", _folder({}), "no images"),
    (read_images, "only other files", _folder({"notes.txt": b"hi"}), "no images"),
    (
        read_images,
        "different sizes",
        _folder({"a.png": png_bytes(GREY), "b.png": png_bytes(np.zeros((6, 5), np.uint8))}),
        "5x6 pixels but",
    ),
    (
        read_images,
        "truncated png",
        _folder({"a.png": png_bytes(GREY), "b.png": png_bytes(GREY)[:40]}),
        "b.png: unreadable image",
    ),
    (
        read_images,
        "not an image",
        _folder({"a.jpg": b"this is not a jpeg"}),
        "a.jpg: unreadable image",
    ),
    (
        read_images,
        "images beside subfolders",
        _folder({"a.png": png_bytes(GREY), "c/b.png": png_bytes(GREY)}),
        "has both images",
    ),
    (
        read_images,
        "class without images",
        _folder({"c/readme.txt": b"none"}),
        "class folder without images",
    ),
    (read_images, "16-bit", _png16, "16-bit or float"),
    (read_npz_arrays, "missing", _missing("x.npz"), "no such file"),
    (
        read_npz_arrays,
        "truncated",
        _file("x.npz", GOOD_NPZ[: len(GOOD_NPZ) // 2]),
        "not a readable .npz",
    ),
    (read_npz_arrays, "not a zip", _file("x.npz", b"hello world"), "not a readable .npz"),
    (read_npz_arrays, "pickled objects", _file("x.npz", _object_npz()), "holds Python objects"),
    (read_npz_arrays, "lying header", _file("x.npz", _npz_with_short_member()), "is truncated"),
    (read_npy, "missing", _missing("x.npy"), "no such file"),
    (read_npy, "truncated", _file("x.npy", _npy(np.arange(50.0))[:-7]), "the array is truncated"),
    (read_npy, "garbage", _file("x.npy", b"\x93NUMPY garbage"), "not a readable .npy"),
    (read_npy, "npz named npy", _file("x.npy", GOOD_NPZ), "rename it to .npz"),
]


@pytest.mark.parametrize(
    ("read", "make", "message"),
    [pytest.param(r, m, msg, id=f"{r.__name__}-{w}") for r, w, m, msg in BAD],
)
def test_bad_input_names_file_and_problem(
    tmp_path: Path, read: Reader, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        read(path)
    text = str(info.value)
    assert message in text
    assert str(path) in text, f"the message must name the file: {text}"


def test_npz_missing_required_arrays(tmp_path: Path) -> None:
    path = write(tmp_path, "a.npz", GOOD_NPZ)
    with pytest.raises(DataError, match=r"missing arrays \['y'\]; it has \['x'\]"):
        read_npz_arrays(path, required=("x", "y"))


# ------------------------------------------------------------------ random damage


def _samples() -> dict[str, tuple[str, bytes, Callable[[Path], object]]]:
    a = RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    return {
        "idx": ("x-idx3-ubyte", idx_bytes(a), read_idx),
        "idx.gz": ("x-idx3-ubyte.gz", gzip.compress(idx_bytes(a), mtime=0), read_idx),
        "amat": ("x.amat", amat_bytes((a[0] > 127).astype(np.uint8)), read_amat),
        "amat-real": ("y.amat", amat_bytes(RNG.normal(size=(3, 2)).round(3)), read_amat),
        "csv": ("x.csv", b"a,b,label\n1.5,2,0\n3,4,cat\n", read_csv),
        "npz": ("x.npz", npz_bytes(x=a, y=np.arange(3)), read_npz_arrays),
        "npy": ("x.npy", _npy(a), read_npy),
        "png": ("d/x.png", png_bytes(a[0]), lambda p: read_images(p.parent)),
    }


SAMPLES = _samples()


@st.composite
def damaged(draw: st.DrawFn, good: bytes) -> bytes:
    how = draw(st.sampled_from(["truncate", "flip", "random", "append"]))
    if how == "truncate":
        return good[: draw(st.integers(0, max(len(good) - 1, 0)))]
    if how == "flip":
        data = bytearray(good)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "append":
        return good + draw(st.binary(min_size=1, max_size=64))
    return draw(st.binary(max_size=256))


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_damaged_files_raise_only_data_error(kind: str) -> None:
    name, good, read = SAMPLES[kind]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=damaged(good))
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = write(Path(tmp), name, data)
            try:
                read(path)
            except DataError as e:
                assert str(path.parent) in str(e)

    check()


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_damaged_files_through_load_path(kind: str) -> None:
    """The whole path (reader, splits, checks in make_dataset) also raises only DataError."""
    name, good, _ = SAMPLES[kind]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=damaged(good))
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = write(Path(tmp), name, data)
            with contextlib.suppress(DataError):
                load_path(path.parent if kind == "png" else path)

    check()

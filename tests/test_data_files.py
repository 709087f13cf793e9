"""User data through ``load_dataset(path)``: every format, its splits, labels and kind."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.data import DataError, load_dataset

RNG = np.random.default_rng(0)


def idx(a: np.ndarray, compress: bool = True) -> bytes:
    data = (
        bytes([0, 0, 0x08, a.ndim])
        + struct.pack(f">{a.ndim}I", *a.shape)
        + a.astype(np.uint8).tobytes()
    )
    return gzip.compress(data, mtime=0) if compress else data


def png(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def test_npz_x_and_y_holdout(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, (50, 6, 7), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(50) % 3)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.info()["sizes"] == {"train": 40, "valid": 0, "test": 10}
    assert ds.shape == (1, 6, 7) and ds.kind == "grey" and ds.num_classes == 3
    # The holdout is fixed: loading again gives the same test split.
    again = load_dataset(str(tmp_path / "d.npz"))
    assert ds.test.y is not None and again.test.y is not None and ds.test.y.equal(again.test.y)


def test_npz_splits_with_labels(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "s.npz",
        train=RNG.normal(size=(8, 3)),
        valid=RNG.normal(size=(2, 3)),
        test=RNG.normal(size=(4, 3)),
        y_train=np.arange(8) % 2,
        y_valid=np.array([0, 1]),
        y_test=np.array([1, 0, 1, 0]),
    )
    ds = load_dataset(str(tmp_path / "s.npz"))
    assert ds.info()["sizes"] == {"train": 8, "valid": 2, "test": 4}
    assert ds.kind == "real" and ds.shape == (3,) and ds.num_classes == 2


def test_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", (RNG.random((10, 4)) < 0.5))
    ds = load_dataset(str(tmp_path / "a.npy"))
    assert ds.kind == "binary" and len(ds.train) == 8 and len(ds.test) == 2


def test_idx_with_labels_and_t10k_sibling(tmp_path: Path) -> None:
    train = RNG.integers(0, 256, (9, 5, 5))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(idx(train))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx(np.arange(9) % 4, compress=False))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(idx(RNG.integers(0, 256, (3, 5, 5))))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(np.array([3, 2, 1])))
    ds = load_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"))
    assert ds.info()["sizes"] == {"train": 9, "valid": 0, "test": 3}
    assert ds.num_classes == 4 and ds.shape == (1, 5, 5)
    np.testing.assert_allclose(ds.train.x[:, 0].numpy(), train / 255.0, rtol=1e-6)
    # The folder itself works too, and finds the same pairs.
    assert load_dataset(str(tmp_path)).info()["sizes"] == ds.info()["sizes"]


def test_idx_alone_is_split_and_label_mismatch_is_named(tmp_path: Path) -> None:
    (tmp_path / "my-images-idx3-ubyte").write_bytes(
        idx(RNG.integers(0, 256, (10, 4, 4)), compress=False)
    )
    ds = load_dataset(str(tmp_path / "my-images-idx3-ubyte"))
    assert ds.num_classes == 0 and len(ds.train) == 8
    (tmp_path / "my-labels-idx1-ubyte").write_bytes(idx(np.arange(7), compress=False))
    with pytest.raises(
        DataError, match=r"my-labels-idx1-ubyte: labels of shape \(7,\) for 10 examples"
    ):
        load_dataset(str(tmp_path / "my-images-idx3-ubyte"))
    with pytest.raises(DataError, match="a labels file; pass the images file"):
        load_dataset(str(tmp_path / "my-labels-idx1-ubyte"))


def test_amat_train_valid_test_siblings(tmp_path: Path) -> None:
    for split, n in (("train", 6), ("valid", 2), ("test", 3)):
        rows = (RNG.random((n, 5)) < 0.5).astype(int)
        text = "".join(" ".join(map(str, r)) + "\n" for r in rows.tolist())
        (tmp_path / f"bits_{split}.amat").write_text(text)
    ds = load_dataset(str(tmp_path / "bits_train.amat"))
    assert ds.name == "bits" and ds.kind == "binary"
    assert ds.info()["sizes"] == {"train": 6, "valid": 2, "test": 3}
    alone = load_dataset(str(tmp_path / "bits_test.amat"))
    assert alone.info()["sizes"] == {"train": 2, "valid": 0, "test": 1}


def test_csv_real_values_stay_unscaled(tmp_path: Path) -> None:
    x = RNG.normal(loc=50, scale=20, size=(20, 3)).round(3)
    lines = ["a,b,c,label"] + [f"{r[0]},{r[1]},{r[2]},{i % 2}" for i, r in enumerate(x.tolist())]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(str(tmp_path / "t.csv"))
    assert ds.kind == "real" and ds.shape == (3,) and ds.num_classes == 2 and not ds.is_image
    both = np.concatenate([ds.train.x.numpy(), ds.test.x.numpy()])
    assert np.isclose(both.max(), x.max(), rtol=1e-6) and np.isclose(both.min(), x.min(), rtol=1e-6)


def test_csv_named_classes_across_splits(tmp_path: Path) -> None:
    (tmp_path / "iris_train.csv").write_text("a,b,y\n1,2,setosa\n3,4,virginica\n5,6,setosa\n")
    (tmp_path / "iris_test.csv").write_text("a,b,y\n1,2,versicolor\n3,4,virginica\n")
    ds = load_dataset(str(tmp_path / "iris_train.csv"))
    assert ds.class_names == ["setosa", "versicolor", "virginica"]
    assert ds.train.y is not None and ds.train.y.tolist() == [0, 2, 0]
    assert ds.test.y is not None and ds.test.y.tolist() == [1, 2]


def test_image_folder_with_classes(tmp_path: Path) -> None:
    for cls in ("cat", "dog"):
        for i in range(5):
            png(tmp_path / "pets" / cls / f"{i}.png", RNG.integers(0, 256, (6, 8), dtype=np.uint8))
    ds = load_dataset(str(tmp_path / "pets"))
    assert ds.shape == (1, 6, 8) and ds.is_image and ds.kind == "grey"
    assert ds.class_names == ["cat", "dog"] and len(ds.train) + len(ds.test) == 10


def test_image_folder_train_test_rgb(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            cls = "a" if i % 2 else "b"
            png(
                tmp_path / "set" / split / cls / f"{i}.png",
                RNG.integers(0, 256, (5, 5, 3), dtype=np.uint8),
            )
    png(tmp_path / "set" / "test" / "c" / "x.png", RNG.integers(0, 256, (5, 5, 3), dtype=np.uint8))
    ds = load_dataset(str(tmp_path / "set"))
    assert ds.shape == (3, 5, 5) and ds.info()["sizes"] == {"train": 4, "valid": 0, "test": 3}
    assert ds.class_names == ["a", "b", "c"] and ds.num_classes == 3


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"x.parquet": b"PAR1"}, "unsupported file type '.parquet'"),
        ({"x.npz.gz": b"\x1f\x8b"}, "decompress it first"),
        ({"x.csv": b"a,b\n1,2\n"}, "at least 2 are needed"),
    ],
)
def test_bad_user_files(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    path = tmp_path / next(iter(files))
    with pytest.raises(DataError, match=message) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)


def test_missing_path_suggests_a_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a named dataset .* and no such file or folder"):
        load_dataset(str(tmp_path / "nothing.csv"))


def test_splits_of_different_image_sizes(tmp_path: Path) -> None:
    png(tmp_path / "s" / "train" / "0.png", np.zeros((4, 4), np.uint8))
    png(tmp_path / "s" / "test" / "0.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError, match="the splits hold images of different sizes"):
        load_dataset(str(tmp_path / "s"))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"train": np.zeros((4, 3)), "test": np.zeros((2, 5))},
            r"test split\): examples of shape \(5,\)",
        ),
        ({"x": np.zeros((5, 3)), "y": np.zeros(4)}, "there must be one label per example"),
        # Counted in the whole file, before the holdout splits it.
        ({"x": np.full((5, 2), np.nan)}, r"bad.npz: 10 values are NaN or infinite"),
        ({"x": np.zeros((5, 0))}, "hold no values"),
        ({"x": np.arange(5)}, r"expected an array of examples \(N, ...\)"),
        ({"x": np.zeros((5, 2)), "y": np.array([0, 1, -1, 0, 1])}, "labels must be >= 0"),
        (
            {"train": np.zeros((3, 2)), "test": np.zeros((2, 2)), "y_train": np.zeros(3)},
            "some splits have labels",
        ),
        ({"a": np.zeros((3, 2))}, r"needs an array 'x'.*it has \['a'\]"),
    ],
)
def test_bad_npz_content(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)

"""Named datasets: where their files are found, how they are checked, what they hold."""

from __future__ import annotations

import gzip
import hashlib
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from vaekit.data import DataError, load_dataset, named
from vaekit.data.download import RemoteFile, verify

SMALL = {"train": 6, "valid": 2, "test": 3}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing here may reach the network; download paths are tested in test_data_download.py.
    monkeypatch.setenv("VAEKIT_OFFLINE", "1")


def amat(a: np.ndarray) -> bytes:
    return "".join(" ".join(map(str, row)) + "\n" for row in a.tolist()).encode()


def small_binarized(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: (rng.random((n, 784)) < 0.3).astype(np.uint8) for k, n in SMALL.items()}


def test_digits_and_unknown_name() -> None:
    ds = load_dataset("digits")
    assert ds.info()["sizes"] == {"train": 1438, "valid": 0, "test": 359}
    with pytest.raises(DataError, match="Did you mean 'mnist'"):
        load_dataset("mnsit")


def test_binarized_mnist_npz(shared_data_dir: Path) -> None:
    start = time.perf_counter()
    ds = load_dataset("binarized-mnist", data_dir_=shared_data_dir)
    seconds = time.perf_counter() - start
    assert ds.info()["sizes"] == {"train": 50000, "valid": 10000, "test": 10000}
    assert ds.shape == (1, 28, 28) and ds.kind == "binary" and ds.is_image
    assert ds.valid is not None and set(ds.valid.x.unique().tolist()) == {0.0, 1.0}
    # Slow checks made this 2.4 s; the limit is loose because CI machines are shared.
    assert seconds < 5, f"loading took {seconds:.2f} s"


def test_binarized_mnist_amat_matches_npz(
    shared_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original text format gives exactly the arrays of the npz, and is converted once.

    A tenth of each split (the real rows) keeps the suite fast; the parser is the same."""
    sizes = {k: n // 10 for k, n in named._BINARIZED_SIZES.items()}
    monkeypatch.setattr(named, "_BINARIZED_SIZES", sizes)
    with np.load(shared_data_dir / "binarized_mnist.npz") as f:
        arrays = {k: f[k][: sizes[k]] for k in ("train", "valid", "test")}
    data = tmp_path / "data"
    data.mkdir()
    for split, a in arrays.items():
        # Fast text writer: each 0/1 byte becomes "d " with a newline ending each row.
        text = np.full((len(a), 784 * 2), ord(" "), dtype=np.uint8)
        text[:, 0::2] = a + ord("0")
        text[:, -1] = ord("\n")
        (data / f"binarized_mnist_{split}.amat").write_bytes(text.tobytes())
    cache = tmp_path / "cache"
    ds = load_dataset("binarized-mnist", data_dir_=data, cache_dir_=cache)
    for split, a in arrays.items():
        got = getattr(ds, split).x.reshape(len(a), 784).numpy()
        np.testing.assert_array_equal(got, a)
    assert (cache / "binarized-mnist" / "binarized_mnist.npz").is_file()
    for p in data.iterdir():
        p.unlink()
    again = load_dataset("binarized-mnist", data_dir_=data, cache_dir_=cache)
    assert again.info() == ds.info()


def test_binarized_mnist_small_amat_then_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(named, "_BINARIZED_SIZES", SMALL)
    arrays = small_binarized(np.random.default_rng(1))
    for split, a in arrays.items():
        (tmp_path / f"binarized_mnist_{split}.amat").write_bytes(amat(a))
    ds = load_dataset("binarized-mnist", data_dir_=tmp_path, cache_dir_=tmp_path / "cache")
    np.testing.assert_array_equal(ds.test.x.reshape(3, 784).numpy(), arrays["test"])
    assert ds.kind == "binary" and ds.valid is not None and len(ds.valid) == 2
    assert (tmp_path / "cache" / "binarized-mnist" / "binarized_mnist.npz").is_file()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("shape", r"train split has shape \(6, 783\), expected \(6, 784\)"),
        ("values", "train split has values other than 0 and 1"),
        ("missing", r"missing arrays \['valid'\]"),
    ],
)
def test_binarized_mnist_bad_npz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, message: str
) -> None:
    monkeypatch.setattr(named, "_BINARIZED_SIZES", SMALL)
    arrays = small_binarized(np.random.default_rng(2))
    if damage == "shape":
        arrays["train"] = arrays["train"][:, :783]
    elif damage == "values":
        arrays["train"][0, 0] = 2
    else:
        del arrays["valid"]
    np.savez(tmp_path / "binarized_mnist.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message) as info:
        load_dataset("binarized-mnist", data_dir_=tmp_path, cache_dir_=tmp_path / "cache")
    assert "binarized_mnist.npz" in str(info.value)


def test_binarized_mnist_missing_offline(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("binarized-mnist", data_dir_=tmp_path, cache_dir_=tmp_path / "cache")
    text = str(info.value)
    assert (
        "binarized_mnist.npz not found" in text and "binarized_mnist_train.amat not found" in text
    )
    assert "downloads are disabled" in text and "binarized_mnist_train.amat by hand" in text


def test_mnist_10k(shared_data_dir: Path) -> None:
    ds = load_dataset("mnist-10k", data_dir_=shared_data_dir)
    assert ds.info()["sizes"] == {"train": 8000, "valid": 0, "test": 2000} and ds.kind == "grey"


# ------------------------------------------------------------------ Fashion-MNIST

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_debian_fashion_mnist_matches_official_md5() -> None:
    for spec in named.FASHION_MNIST_FILES.values():
        path = DEBIAN / spec.name
        # The Debian copies differ from the official bytes only in their gzip header.
        assert hashlib.md5(path.read_bytes()).hexdigest() != spec.md5
        assert verify(path, spec) is None, spec.name


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_debian_fashion_mnist_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(named.FASHION_MNIST_DIR_ENV, raising=False)
    ds = load_dataset("fashion-mnist", data_dir_=tmp_path, cache_dir_=tmp_path / "cache")
    assert ds.info()["sizes"] == {"train": 60000, "valid": 0, "test": 10000}
    assert ds.shape == (1, 28, 28) and ds.kind == "grey" and ds.num_classes == 10
    assert (
        ds.class_names is not None
        and ds.class_names[0] == "T-shirt/top"
        and ds.class_names[9] == "Ankle boot"
    )
    assert ds.train.y is not None and np.bincount(ds.train.y.numpy()).tolist() == [6000] * 10
    assert not (tmp_path / "cache").exists()  # nothing copied or downloaded


def idx_gz(a: np.ndarray, name: str) -> bytes:
    head = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return gzip.compress(head + a.astype(np.uint8).tobytes(), mtime=0)


def fake_fashion(folder: Path) -> dict[str, RemoteFile]:
    """Four small IDX files in ``folder`` and the specs (checksums) that accept them."""
    rng = np.random.default_rng(3)
    arrays = {
        "train_images": rng.integers(0, 256, (10, 28, 28)),
        "train_labels": np.arange(10),
        "test_images": rng.integers(0, 256, (4, 28, 28)),
        "test_labels": np.arange(4) + 6,
    }
    folder.mkdir(parents=True, exist_ok=True)
    specs = {}
    for key, a in arrays.items():
        name = named.FASHION_MNIST_FILES[key].name
        body = idx_gz(a, name)
        (folder / name).write_bytes(body)
        specs[key] = RemoteFile(name, md5=hashlib.md5(body).hexdigest())
    return specs


def test_fashion_mnist_system_dir_is_overridable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(named, "FASHION_MNIST_FILES", fake_fashion(tmp_path / "system"))
    monkeypatch.setenv(named.FASHION_MNIST_DIR_ENV, str(tmp_path / "system"))
    ds = load_dataset("fashion-mnist", data_dir_=tmp_path / "data", cache_dir_=tmp_path / "cache")
    assert ds.info()["sizes"] == {"train": 10, "valid": 0, "test": 4}
    assert ds.test.y is not None and ds.test.y.tolist() == [6, 7, 8, 9]


def test_fashion_mnist_from_data_dir_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        named, "FASHION_MNIST_FILES", fake_fashion(tmp_path / "data" / "fashion-mnist")
    )
    monkeypatch.setenv(named.FASHION_MNIST_DIR_ENV, str(tmp_path / "nowhere"))
    ds = load_dataset("fashion-mnist", data_dir_=tmp_path / "data", cache_dir_=tmp_path / "cache")
    assert len(ds.train) == 10


def test_fashion_mnist_wrong_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = fake_fashion(tmp_path / "system")
    monkeypatch.setattr(named, "FASHION_MNIST_FILES", specs)
    monkeypatch.setenv(named.FASHION_MNIST_DIR_ENV, str(tmp_path / "system"))
    (tmp_path / "system" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", data_dir_=tmp_path / "data", cache_dir_=tmp_path / "cache")
    text = str(info.value)
    assert str(tmp_path / "system" / "t10k-labels-idx1-ubyte.gz") in text
    assert "not the expected fashion-mnist file (checksum mismatch" in text


def test_fashion_mnist_labels_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "system"
    specs = fake_fashion(folder)
    body = idx_gz(np.array([0, 1, 2, 10]), "t10k-labels-idx1-ubyte.gz")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(body)
    specs["test_labels"] = RemoteFile(
        "t10k-labels-idx1-ubyte.gz", md5=hashlib.md5(body).hexdigest()
    )
    monkeypatch.setattr(named, "FASHION_MNIST_FILES", specs)
    monkeypatch.setenv(named.FASHION_MNIST_DIR_ENV, str(folder))
    with pytest.raises(DataError, match="label 10 is not one of the 10 classes"):
        load_dataset("fashion-mnist", data_dir_=tmp_path / "data", cache_dir_=tmp_path / "cache")

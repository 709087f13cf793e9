"""Verified downloads against a local HTTP server on 127.0.0.1 serving files the tests build,
and the full ``mnist`` loader end to end against it."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from vaekit.data import DataError, load_dataset, named
from vaekit.data.download import RemoteFile, fetch, locate, verify

BODY = b"vaekit test payload " * 500
MD5 = hashlib.md5(BODY).hexdigest()
SHA256 = hashlib.sha256(BODY).hexdigest()


@dataclass
class Server:
    """Routes: path -> (status, body, bytes actually sent or None for all, delay in seconds)."""

    port: int = 0
    routes: dict[str, tuple[int, bytes, int | None, float]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def url(self, folder: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{folder}"

    def add(
        self,
        path: str,
        body: bytes,
        *,
        status: int = 200,
        send: int | None = None,
        delay: float = 0.0,
    ) -> None:
        self.routes[path] = (status, body, send, delay)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            state.hits.append(self.path)
            status, body, send, delay = state.routes.get(self.path, (404, b"not found", None, 0.0))
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # send < len(body): the server hangs up early, as a dropped connection would.
                self.wfile.write(body if send is None else body[:send])
            except OSError:
                pass  # the client gave up (the timeout test); nothing to report

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    # A short poll interval keeps shutdown (and so each test) fast.
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAEKIT_OFFLINE", raising=False)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_success_writes_verified_file(server: Server, tmp_path: Path) -> None:
    server.add("/a/f.bin", BODY)
    path = fetch(
        RemoteFile("f.bin", md5=MD5, sha256=SHA256), [server.url("a/")], tmp_path / "cache"
    )
    assert path == tmp_path / "cache" / "f.bin" and path.read_bytes() == BODY
    assert leftovers(tmp_path / "cache") == ["f.bin"]
    assert verify(path, RemoteFile("f.bin", sha256=SHA256)) is None


def test_mirror_fallback_after_404(server: Server, tmp_path: Path) -> None:
    server.add("/good/f.bin", BODY)
    mirrors = [server.url("gone/"), server.url("good/")]
    path = fetch(RemoteFile("f.bin", md5=MD5), mirrors, tmp_path)
    assert path.read_bytes() == BODY
    assert server.hits == ["/gone/f.bin", "/good/f.bin"]


def test_checksum_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.add("/a/f.bin", BODY + b"tampered")
    with pytest.raises(DataError) as info:
        fetch(RemoteFile("f.bin", md5=MD5), [server.url("a/")], tmp_path)
    text = str(info.value)
    assert "checksum mismatch" in text and MD5 in text and server.url("a/f.bin") in text
    assert f"save it as {tmp_path / 'f.bin'}" in text  # how to place it by hand
    assert leftovers(tmp_path) == []


def test_truncated_body_is_an_error(server: Server, tmp_path: Path) -> None:
    server.add("/a/f.bin", BODY, send=1000)
    with pytest.raises(DataError, match=rf"truncated transfer: received 1000 of {len(BODY)} bytes"):
        fetch(RemoteFile("f.bin", md5=MD5), [server.url("a/")], tmp_path)
    assert leftovers(tmp_path) == []


def test_every_failure_is_listed(server: Server, tmp_path: Path) -> None:
    server.add("/slow/f.bin", BODY, delay=1.0)
    server.add("/bad/f.bin", b"x")
    mirrors = [server.url("none/"), server.url("slow/"), server.url("bad/"), "http://127.0.0.1:9/"]
    with pytest.raises(DataError) as info:
        fetch(RemoteFile("f.bin", md5=MD5), mirrors, tmp_path, timeout=0.3)
    text = str(info.value)
    assert "HTTP error 404" in text and "timed out after 0.3 s" in text
    assert "checksum mismatch" in text and "cannot connect" in text
    assert leftovers(tmp_path) == []


def test_offline_mode_refuses(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add("/a/f.bin", BODY)
    monkeypatch.setenv("VAEKIT_OFFLINE", "1")
    with pytest.raises(DataError, match=r"downloads are disabled \(VAEKIT_OFFLINE=1\).*by hand"):
        fetch(RemoteFile("f.bin", md5=MD5), [server.url("a/")], tmp_path)
    assert server.hits == [] and leftovers(tmp_path) == []


def test_no_checksum_no_download(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without a checksum"):
        fetch(RemoteFile("f.bin"), ["http://127.0.0.1:9/"], tmp_path)


def test_content_check_rejects_download(server: Server, tmp_path: Path) -> None:
    server.add("/a/f.bin", BODY)

    def check(path: Path) -> None:
        raise DataError(f"{path}: wrong shape")

    with pytest.raises(DataError, match="downloaded content is not valid"):
        fetch(RemoteFile("f.bin"), [server.url("a/")], tmp_path, check=check)
    assert leftovers(tmp_path) == []


def test_locate_prefers_search_folders_and_repairs_cache(server: Server, tmp_path: Path) -> None:
    spec = RemoteFile("f.bin", md5=MD5)
    server.add("/a/f.bin", BODY)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.bin").write_bytes(BODY)
    assert (
        locate(spec, [None, tmp_path / "data"], [server.url("a/")], tmp_path / "c", what="t")
        == tmp_path / "data" / "f.bin"
    )
    assert server.hits == []
    # A damaged cached copy is replaced by a fresh download ...
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "f.bin").write_bytes(b"damaged")
    assert locate(spec, [], [server.url("a/")], tmp_path / "c", what="t").read_bytes() == BODY
    # ... but a wrong file of the user's is reported and left alone.
    (tmp_path / "data" / "f.bin").write_bytes(b"wrong")
    with pytest.raises(DataError, match=r"data/f.bin: not the expected t file \(checksum mismatch"):
        locate(spec, [tmp_path / "data"], [server.url("a/")], tmp_path / "c", what="t")
    assert (tmp_path / "data" / "f.bin").read_bytes() == b"wrong"


def test_rewritten_gzip_header_still_verifies(tmp_path: Path) -> None:
    """Debian's packages drop the file name from gzip headers and reset the time stamp."""
    payload = bytes(range(256)) * 40
    official = tmp_path / "official.gz"
    with (
        open(official, "wb") as raw,
        gzip.GzipFile("data-idx1-ubyte", "wb", fileobj=raw, mtime=1504176606) as gz,
    ):
        gz.write(payload)
    body = official.read_bytes()
    assert body[3] & 0x08  # FNAME is set
    start = body.index(b"\x00", 10) + 1
    rewritten = b"\x1f\x8b\x08\x00" + struct.pack("<I", 1591347949) + body[8:10] + body[start:]
    (tmp_path / "data-idx1-ubyte.gz").write_bytes(rewritten)
    assert gzip.decompress(rewritten) == payload
    md5 = hashlib.md5(body).hexdigest()
    assert (
        verify(
            tmp_path / "data-idx1-ubyte.gz",
            RemoteFile("data-idx1-ubyte.gz", md5=md5, gzip_mtime=1504176606),
        )
        is None
    )
    wrong_time = RemoteFile("data-idx1-ubyte.gz", md5=md5, gzip_mtime=1504176607)
    assert "checksum mismatch" in str(verify(tmp_path / "data-idx1-ubyte.gz", wrong_time))
    assert "checksum mismatch" in str(
        verify(tmp_path / "data-idx1-ubyte.gz", RemoteFile("data-idx1-ubyte.gz", md5=md5))
    )


# ------------------------------------------------------------------ mnist end to end


def idx_gz(a: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return gzip.compress(head + a.astype(np.uint8).tobytes(), mtime=0)


def test_mnist_downloads_verifies_and_caches(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (12, 28, 28)),
        "train_labels": np.arange(12) % 10,
        "test_images": rng.integers(0, 256, (5, 28, 28)),
        "test_labels": np.arange(5),
    }
    files = {}
    for key, a in arrays.items():
        spec = named.MNIST_FILES[key]
        body = idx_gz(a)
        server.add(f"/mirror/{spec.name}", body)
        files[key] = RemoteFile(spec.name, md5=hashlib.md5(body).hexdigest())
    monkeypatch.setattr(named, "MNIST_FILES", files)
    monkeypatch.setattr(named, "MNIST_MIRRORS", [server.url("down/"), server.url("mirror/")])
    ds = load_dataset("mnist", data_dir_=tmp_path / "data", cache_dir_=tmp_path / "cache")
    assert ds.info()["sizes"] == {"train": 12, "valid": 0, "test": 5}
    assert ds.shape == (1, 28, 28) and ds.kind == "grey" and ds.num_classes == 10
    np.testing.assert_allclose(ds.train.x[:, 0].numpy(), arrays["train_images"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.test.y.numpy(), arrays["test_labels"])  # type: ignore[union-attr]
    assert leftovers(tmp_path / "cache" / "mnist") == sorted(f.name for f in files.values())
    assert len(server.hits) == 8  # each file: a 404 from the first mirror, then the second
    # The second load reads the cache: no request, even offline.
    monkeypatch.setenv("VAEKIT_OFFLINE", "1")
    again = load_dataset("mnist", data_dir_=tmp_path / "data", cache_dir_=tmp_path / "cache")
    assert len(server.hits) == 8 and len(again.train) == 12


def test_mnist_offline_without_files_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAEKIT_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir_=tmp_path, cache_dir_=tmp_path / "cache")
    text = str(info.value)
    assert "mnist: train-images-idx3-ubyte.gz not found in" in text
    assert "downloads are disabled" in text and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in text
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in text


def test_mnist_mismatched_label_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    bodies = {
        "train_images": idx_gz(np.zeros((4, 28, 28))),
        "train_labels": idx_gz(np.zeros(3)),
        "test_images": idx_gz(np.zeros((2, 28, 28))),
        "test_labels": idx_gz(np.zeros(2)),
    }
    files = {}
    for key, body in bodies.items():
        name = named.MNIST_FILES[key].name
        (data / name).write_bytes(body)
        files[key] = RemoteFile(name, md5=hashlib.md5(body).hexdigest())
    monkeypatch.setattr(named, "MNIST_FILES", files)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: \(3,\) labels for 4 images"):
        load_dataset("mnist", data_dir_=tmp_path / "data", cache_dir_=tmp_path / "cache")


def test_binarized_mnist_downloads_amat_and_converts_once(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = {"train": 6, "valid": 2, "test": 3}
    monkeypatch.setattr(named, "_BINARIZED_SIZES", sizes)
    monkeypatch.setattr(named, "BINARIZED_MNIST_MIRRORS", [server.url("larocheh/")])
    rng = np.random.default_rng(4)
    arrays = {k: (rng.random((n, 784)) < 0.5).astype(np.uint8) for k, n in sizes.items()}
    for split, a in arrays.items():
        text = "".join(" ".join(map(str, r)) + "\n" for r in a.tolist())
        server.add(f"/larocheh/binarized_mnist_{split}.amat", text.encode())
    ds = load_dataset("binarized-mnist", data_dir_=tmp_path / "data", cache_dir_=tmp_path)
    np.testing.assert_array_equal(ds.train.x.reshape(6, 784).numpy(), arrays["train"])
    assert "binarized_mnist.npz" in leftovers(tmp_path / "binarized-mnist")
    assert len(server.hits) == 3
    load_dataset("binarized-mnist", data_dir_=tmp_path / "data", cache_dir_=tmp_path)
    assert len(server.hits) == 3  # the converted npz is used from now on


def test_binarized_mnist_rejects_wrong_download(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No checksum is published for the .amat files, so their content is checked instead.
    monkeypatch.setattr(named, "BINARIZED_MNIST_MIRRORS", [server.url("x/")])
    server.add("/x/binarized_mnist_train.amat", b"0 1 0\n1 1 0\n")
    with pytest.raises(DataError) as info:
        load_dataset("binarized-mnist", data_dir_=tmp_path / "data", cache_dir_=tmp_path)
    text = str(info.value)
    assert "downloaded content is not valid" in text and "expected (50000, 784)" in text
    assert leftovers(tmp_path / "binarized-mnist") == []


def _dsprites_like_npz(n_per: tuple[int, ...] = (1, 3, 2, 2, 2, 2)) -> tuple[bytes, np.ndarray]:
    """An .npz laid out as the official dSprites file (imgs, latents_classes, and a pickled
    metadata dict that must never be unpickled), on a small grid."""
    classes = np.stack(np.meshgrid(*[np.arange(k) for k in n_per], indexing="ij"), -1).reshape(
        -1, len(n_per)
    )
    imgs = np.zeros((len(classes), 64, 64), np.uint8)
    for i, c in enumerate(classes):
        imgs[i, c[4] * 8 : c[4] * 8 + 4 + c[2], c[5] * 8 : c[5] * 8 + 4] = 1
    metadata = np.array({"latents_sizes": np.array(n_per)}, dtype=object)
    buf = io.BytesIO()
    np.savez_compressed(buf, imgs=imgs, latents_classes=classes, metadata=metadata)
    return buf.getvalue(), classes


def test_dsprites_downloads_verifies_and_carries_its_factors(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaekit.data import dsprites

    body, classes = _dsprites_like_npz()
    name = dsprites.DSPRITES_FILE.name
    server.add(f"/dm/{name}", body)
    monkeypatch.setattr(
        dsprites, "DSPRITES_FILE", RemoteFile(name, md5=hashlib.md5(body).hexdigest())
    )
    monkeypatch.setattr(dsprites, "DSPRITES_MIRRORS", [server.url("gone/"), server.url("dm/")])
    ds = load_dataset("dsprites", cache_dir_=tmp_path / "cache")
    assert ds.shape == (1, 64, 64) and ds.kind == "binary"
    assert ds.factor_names == ["shape", "scale", "orientation", "posX", "posY"]
    assert ds.factor_sizes == [3, 2, 2, 2, 2]
    assert len(ds.train) + len(ds.test) == len(classes) and len(ds.test) == 5  # 10% of 48
    # Each image sits where its posX/posY factors put it.
    for split in (ds.train, ds.test):
        assert split.factors is not None
        for x, f in zip(split.x, split.factors, strict=True):
            rows, cols = np.nonzero(x[0].numpy())
            assert rows.min() == 8 * int(f[3]) and cols.min() == 8 * int(f[4])
    assert leftovers(tmp_path / "cache" / "dsprites") == [name]
    # A file that is not the official one is refused and nothing is kept.
    monkeypatch.setattr(dsprites, "DSPRITES_FILE", RemoteFile(name, md5="0" * 32))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("dsprites", cache_dir_=tmp_path / "other")
    assert leftovers(tmp_path / "other" / "dsprites") == []
    # Offline, the message says where to put the file by hand.
    monkeypatch.setenv("VAEKIT_OFFLINE", "1")
    with pytest.raises(DataError, match=f"save it as .*{name}"):
        load_dataset("dsprites", cache_dir_=tmp_path / "third")

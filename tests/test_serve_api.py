"""The explorer's JSON API: a real server on port 0 in a thread, tiny runs trained here on digits.

Every endpoint is exercised for what it returns (checked against the model itself where
possible), and every kind of bad request must get a 4xx with a message, never a 5xx,
and leave the server serving.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import train_tiny
from PIL import Image

import vaekit
from vaekit.serve import LIMITS, Explorer, ExplorerServer, make_server
from vaekit.serve.imaging import tile, to_model_input, to_png

DIGITS_TEST = 359  # the seeded 80/20 split of sklearn's 1797 digits


# -- runs and servers --------------------------------------------------------------------------


def _train(root: Path, name: str, *overrides: str) -> Path:
    return train_tiny(root / name, *overrides)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("serve_runs")
    table = root / "table.npy"
    np.save(table, np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32))
    return {
        "vae": _train(root, "vae"),
        "ae": _train(root, "ae", "model.posterior=point", "objective.name=ae"),
        "cvae": _train(root, "cvae", "model.conditional=true"),
        "vae3": _train(root, "vae3", "model.latent_dim=3"),
        "table": _train(root, "table", f"data.name={table}", "model.likelihood=gaussian"),
    }


class Client:
    """A keep-alive HTTP client for one server (what the page's fetch() does)."""

    def __init__(self, server: ExplorerServer) -> None:
        self.port = server.port

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        ctype = resp.getheader("Content-Type", "") or ""
        out: Any = (
            json.loads(payload) if payload and ctype.startswith("application/json") else payload
        )
        return resp.status, out, resp

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        status, out, _ = self.request("POST", path, body)
        return status, out

    def ok(self, path: str, body: Any = None) -> Any:
        status, out, _ = self.request("GET" if body is None else "POST", path, body)
        assert status == 200, out
        return out


def _start(run_dir: Path) -> Iterator[tuple[ExplorerServer, Client]]:
    server = make_server(str(run_dir), port=0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, Client(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def vae(runs: dict[str, Path]) -> Iterator[tuple[ExplorerServer, Client]]:
    yield from _start(runs["vae"])


@pytest.fixture(scope="module")
def ae(runs: dict[str, Path]) -> Iterator[tuple[ExplorerServer, Client]]:
    yield from _start(runs["ae"])


@pytest.fixture(scope="module")
def cvae(runs: dict[str, Path]) -> Iterator[tuple[ExplorerServer, Client]]:
    yield from _start(runs["cvae"])


@pytest.fixture(scope="module")
def vae3(runs: dict[str, Path]) -> Iterator[tuple[ExplorerServer, Client]]:
    yield from _start(runs["vae3"])


def png_pixels(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    raw = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)))


def data_url(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def digit_picture(size: int = 140, dark_ink: bool = False) -> Image.Image:
    """A thick '7'-like stroke, white on black (or black on white)."""
    a = np.zeros((size, size), np.uint8)
    s = size // 7
    a[2 * s : 3 * s, 2 * s : 5 * s] = 255
    for i in range(3 * s):
        c = 5 * s - i // 2
        a[2 * s + i, c - s // 2 : c + s // 2] = 255
    return Image.fromarray(255 - a if dark_ink else a)


# -- pages and static files ----------------------------------------------------------------------


def test_page_and_static_files(vae: tuple[ExplorerServer, Client]) -> None:
    _, c = vae
    status, body, resp = c.request("GET", "/")
    assert status == 200 and resp.getheader("Content-Type", "").startswith("text/html")
    assert b'<canvas id="map"' in body and b"/explorer.js" in body
    # The page loads nothing from anywhere else, and says so to the browser.
    assert b"http://" not in body and b"https://" not in body
    assert "default-src 'self'" in resp.getheader("Content-Security-Policy", "")
    for path, ctype, needle in [
        ("/explorer.js", "text/javascript", b"/api/decode"),
        ("/explorer.css", "text/css", b".map-wrap"),
        ("/favicon.svg", "image/svg+xml", b"<svg"),
    ]:
        status, body, resp = c.request("GET", path)
        assert status == 200 and resp.getheader("Content-Type", "").startswith(ctype)
        assert needle in body
        assert b"https://" not in body and b"http://" not in body.replace(b"http://www.w3.org", b"")


@pytest.mark.parametrize(
    "path",
    [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/static/../server.py",
        "/server.py",
        "/explorer.py",
        "/static/explorer.js",
        "//etc/passwd",
        "/explorer.js/../../__init__.py",
        "/api/../explorer.py",
        "/C:/Windows/win.ini",
    ],
)
def test_no_request_reads_a_path(vae: tuple[ExplorerServer, Client], path: str) -> None:
    _, c = vae
    # http.client sends the path exactly as given (no normalisation on the way).
    status, body, _ = c.request("GET", path)
    assert status == 404
    assert "no such page" in body["error"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost:8080", "LOCALHOST", "[::1]:9", "[::1]", "127.0.0.5:1"]
)
def test_loopback_host_headers_are_accepted(vae: tuple[ExplorerServer, Client], host: str) -> None:
    _, c = vae
    status, _, _ = c.request("GET", "/api/info", headers={"Host": host})
    assert status == 200


def test_keep_alive_connection_serves_many_requests(vae: tuple[ExplorerServer, Client]) -> None:
    server, _ = vae
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for _ in range(3):
        conn.request(
            "POST",
            "/api/decode",
            body=b'{"z": [0.1, 0.2]}',
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        json.loads(resp.read())
    conn.close()


# -- the endpoints ----------------------------------------------------------------------------------


def test_info_and_points(vae: tuple[ExplorerServer, Client]) -> None:
    server, c = vae
    info = c.ok("/api/info")
    assert info["kind"] == "vae" and info["has_prior"] is True
    assert info["latent_dim"] == 2 and info["data_shape"] == [1, 8, 8] and info["is_image"]
    assert info["num_classes"] == 0 and info["class_names"] == [str(i) for i in range(10)]
    assert info["points"] == DIGITS_TEST and info["dataset"] == "digits"
    assert info["limits"] == LIMITS
    comps = np.array(info["pca"]["components"])
    np.testing.assert_allclose(comps @ comps.T, np.eye(2), atol=1e-3)
    assert all(lo <= -3 and hi >= 3 for lo, hi in info["slider_range"])
    points = c.ok("/api/points")
    z = np.array(points["z"])
    assert z.shape == (DIGITS_TEST, 2) and len(points["labels"]) == DIGITS_TEST
    # The map shows the posterior means of the test set, as vaekit.load computes them.
    run = vaekit.load(server.explorer.run.dir)
    test = run.dataset().test
    np.testing.assert_allclose(z, run.transform(test.x).numpy(), atol=1e-3)
    assert points["labels"] == test.y.tolist()


def test_decode_matches_the_model(vae: tuple[ExplorerServer, Client]) -> None:
    server, c = vae
    zs = [[0.0, 0.0], [1.5, -0.5], [-2.0, 2.0]]
    out = c.ok("/api/decode", {"z": zs})
    assert len(out["images"]) == 3
    run = vaekit.load(server.explorer.run.dir)
    expected = run.generate(torch.tensor(zs)).reshape(3, 8, 8).numpy()
    for img, want in zip(out["images"], expected, strict=True):
        px = png_pixels(img)
        assert px.shape == (8, 8) and px.dtype == np.uint8
        np.testing.assert_allclose(px / 255.0, want, atol=1.0 / 255 + 1e-6)
    single = c.ok("/api/decode", {"z": zs[1]})["images"]
    assert len(single) == 1 and single[0] == out["images"][1]
    assert out["images"][0] != out["images"][2]


def test_grid_tiles_are_the_decoded_grid_points(vae: tuple[ExplorerServer, Client]) -> None:
    _, c = vae
    n, bounds = 4, [-2.0, 2.0, -1.0, 3.0]
    out = c.ok(
        "/api/grid",
        {"plane": {"origin": [0, 0], "axes": [[1, 0], [0, 1]]}, "bounds": bounds, "n": n},
    )
    mosaic = png_pixels(out["image"])
    assert mosaic.shape == (n * 8, n * 8) and out["n"] == n
    # Row 0 is the top of the map (largest v), column 0 its left edge; cells are centred.
    du, dv = (bounds[1] - bounds[0]) / n, (bounds[3] - bounds[2]) / n
    for r, col in [(0, 0), (0, 3), (3, 0), (2, 1)]:
        z = [bounds[0] + (col + 0.5) * du, bounds[3] - (r + 0.5) * dv]
        tile_px = mosaic[r * 8 : (r + 1) * 8, col * 8 : (col + 1) * 8]
        one = png_pixels(c.ok("/api/decode", {"z": z})["images"][0])
        np.testing.assert_array_equal(tile_px, one)


def test_interpolate_between_test_points_and_vectors(vae: tuple[ExplorerServer, Client]) -> None:
    server, c = vae
    codes = server.explorer.codes
    out = c.ok("/api/interpolate", {"a": 3, "b": 40, "steps": 5})
    z = np.array(out["z"])
    assert z.shape == (5, 2) and len(out["images"]) == 5 and len(out["ends"]) == 2
    np.testing.assert_allclose(z[0], codes[3], atol=1e-3)
    np.testing.assert_allclose(z[-1], codes[40], atol=1e-3)
    np.testing.assert_allclose(z[2], (codes[3] + codes[40]) / 2, atol=1e-3)
    # The ends are the test pictures themselves.
    np.testing.assert_allclose(
        png_pixels(out["ends"][0]) / 255.0, server.explorer.x[3, 0].numpy(), atol=1 / 255 + 1e-6
    )
    by_vec = c.ok("/api/interpolate", {"a": [-3, 0], "b": [3, 0], "steps": 7})
    assert len(by_vec["images"]) == 7 and "ends" not in by_vec
    assert np.array(by_vec["z"])[3].tolist() == [0.0, 0.0]


def test_sample_is_seeded(vae: tuple[ExplorerServer, Client]) -> None:
    _, c = vae
    a = c.ok("/api/sample", {"n": 6, "seed": 7})
    b = c.ok("/api/sample", {"n": 6, "seed": 7})
    other = c.ok("/api/sample", {"n": 6, "seed": 8})
    assert a["images"] == b["images"] and a["z"] == b["z"] and a["seed"] == 7
    assert a["z"] != other["z"]
    assert np.array(a["z"]).shape == (6, 2) and len(a["images"]) == 6
    assert isinstance(c.ok("/api/sample", {})["seed"], int)


def test_sample_from_a_fitted_sampler(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from vaekit.samplers import fit_sampler

    run_dir = tmp_path / "ae"
    shutil.copytree(runs["ae"], run_dir)
    fit_sampler(vaekit.load(run_dir), "gmm", {"components": [1, 2]})
    for server, c in _start(run_dir):
        names = [s["name"] for s in c.ok("/api/info")["samplers"]]
        assert names == ["prior", "gmm"]
        a = c.ok("/api/sample", {"n": 5, "seed": 3, "sampler": "gmm"})
        assert a == c.ok("/api/sample", {"n": 5, "seed": 3, "sampler": "gmm"})
        assert a["z"] != c.ok("/api/sample", {"n": 5, "seed": 3})["z"]
        cold = c.ok("/api/sample", {"n": 5, "seed": 3, "sampler": "gmm", "temperature": 0.05})
        gmm = server.explorer.samplers["gmm"]
        assert np.abs(np.array(cold["z"]) - np.array(a["z"])).max() > 0
        assert gmm.info["chosen_components"] in (1, 2)
        status, out = c.post("/api/sample", {"sampler": "flow"})
        assert status == 400 and "prior, gmm" in out["error"]
        status, out = c.post("/api/sample", {"sampler": "gmm", "temperature": 0})
        assert status == 400 and "temperature must be in 0.05..5" in out["error"]


def test_encode_a_drawing_and_an_upload(vae: tuple[ExplorerServer, Client]) -> None:
    server, c = vae
    out = c.ok("/api/encode", {"image": data_url(digit_picture())})
    assert len(out["z"]) == 2 and len(out["std"]) == 2 and all(s > 0 for s in out["std"])
    model_input = png_pixels(out["input"])
    assert model_input.shape == (8, 8) and png_pixels(out["reconstruction"]).shape == (8, 8)
    assert out["inverted"] is False
    # Where it lands is the encoder's mean for the picture the model saw.
    run = vaekit.load(server.explorer.run.dir)
    z = run.transform(torch.from_numpy(model_input / 255.0).float()[None, None])
    np.testing.assert_allclose(out["z"], z[0].numpy(), atol=0.05)
    # A dark pen on white paper (a photo, a JPEG) is inverted to match the digits.
    photo = c.ok(
        "/api/encode", {"image": data_url(digit_picture(dark_ink=True).convert("RGB"), "JPEG")}
    )
    assert photo["inverted"] is True
    assert np.abs(np.array(photo["z"]) - np.array(out["z"])).max() < 0.5
    plain = c.ok("/api/encode", {"image": data_url(digit_picture()), "fit": False, "invert": False})
    assert plain["inverted"] is False and len(plain["z"]) == 2


def test_prior_contours_exact_in_two_dimensions(vae: tuple[ExplorerServer, Client]) -> None:
    _, c = vae
    out = c.ok(
        "/api/prior",
        {"plane": {"origin": [0, 0], "axes": [[1, 0], [0, 1]]}, "bounds": [-3, 3, -3, 3], "n": 21},
    )
    logp = np.array(out["logp"])
    assert logp.shape == (21, 21) and out["method"] == "exact" and out["masses"] == [0.5, 0.9, 0.99]
    assert logp.argmax() == 10 * 21 + 10  # the standard normal peaks at the centre
    np.testing.assert_allclose(logp[10, 10], -np.log(2 * np.pi), atol=1e-3)
    # Enclosing more mass means a lower density level; for N(0, I) the 50% circle has radius
    # sqrt(2 ln 2), so its level is -log(2 pi) - ln 2.
    lv = out["levels"]
    assert lv[0] > lv[1] > lv[2]
    assert abs(lv[0] - (-np.log(2 * np.pi) - np.log(2))) < 0.1


def test_many_clients_at_once(vae: tuple[ExplorerServer, Client]) -> None:
    _, c = vae
    want = c.ok("/api/decode", {"z": [0.5, 0.5]})["images"][0]

    def hit(i: int) -> str:
        return str(c.ok("/api/decode", {"z": [0.5, 0.5]})["images"][0])

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(hit, range(32))) == {want}


# -- other kinds of run --------------------------------------------------------------------------------


def test_autoencoder_has_a_map_but_no_prior(ae: tuple[ExplorerServer, Client]) -> None:
    server, c = ae
    info = c.ok("/api/info")
    assert (
        info["kind"] == "autoencoder"
        and info["posterior"] == "point"
        and info["has_prior"] is False
    )
    # The sliders cover the codes (an AE's codes are wherever training put them) and start at their mean.
    codes = np.array(c.ok("/api/points")["z"])
    assert codes.shape == (DIGITS_TEST, 2)
    assert np.allclose(info["z_default"], codes.mean(0), atol=1e-3)
    for k, (lo, hi) in enumerate(info["slider_range"]):
        assert lo < codes[:, k].min() and hi > codes[:, k].max()
    status, out = c.post(
        "/api/prior",
        {"plane": {"origin": [0, 0], "axes": [[1, 0], [0, 1]]}, "bounds": [-1, 1, -1, 1]},
    )
    assert status == 400 and "autoencoder" in out["error"]
    assert len(c.ok("/api/decode", {"z": [codes[:4].tolist()][0]})["images"]) == 4
    assert len(c.ok("/api/interpolate", {"a": 0, "b": 1, "steps": 4})["images"]) == 4
    assert len(c.ok("/api/sample", {"n": 3})["images"]) == 3
    enc = c.ok("/api/encode", {"image": data_url(digit_picture())})
    assert enc["std"] == [0.0, 0.0]  # a point posterior has no spread


def test_conditional_model_takes_a_class(cvae: tuple[ExplorerServer, Client]) -> None:
    _, c = cvae
    info = c.ok("/api/info")
    assert info["num_classes"] == 10
    three = c.ok("/api/decode", {"z": [0, 0], "label": 3})["images"][0]
    eight = c.ok("/api/decode", {"z": [0, 0], "label": 8})["images"][0]
    assert three != eight
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/api/decode", {"z": [0, 0]}),
        (
            "/api/grid",
            {"plane": {"origin": [0, 0], "axes": [[1, 0], [0, 1]]}, "bounds": [-1, 1, -1, 1]},
        ),
        ("/api/interpolate", {"a": 0, "b": 1}),
        ("/api/sample", {"n": 2}),
        ("/api/encode", {"image": data_url(digit_picture())}),
    ]
    for path, body in requests:
        status, out = c.post(path, body)
        assert status == 400 and "label" in out["error"], (path, out)
        status, out = c.post(path, body | {"label": 10})
        assert status == 400 and "0..9" in out["error"], (path, out)
        assert c.post(path, body | {"label": 4})[0] == 200, path


def test_three_latent_dimensions_use_a_projection(vae3: tuple[ExplorerServer, Client]) -> None:
    _, c = vae3
    info = c.ok("/api/info")
    comps = info["pca"]["components"]
    assert info["latent_dim"] == 3 and np.array(comps).shape == (2, 3)
    plane = {"origin": info["pca"]["mean"], "axes": comps}
    grid = c.ok("/api/grid", {"plane": plane, "bounds": [-2, 2, -2, 2], "n": 3})
    assert png_pixels(grid["image"]).shape == (24, 24)
    prior = c.ok("/api/prior", {"plane": plane, "bounds": [-3, 3, -3, 3], "n": 15})
    logp = np.array(prior["logp"])
    # A projection of N(0, I) is N(0, I) again: the KDE peaks near the plane's centre.
    assert prior["method"] == "kde" and logp.shape == (15, 15)
    r, col = np.unravel_index(logp.argmax(), logp.shape)
    centre = np.array(plane["origin"]) @ np.array(comps).T  # where z = 0 sits in plane coordinates
    assert (
        abs((-3 + (col + 0.5) * 6 / 15) + centre[0]) < 1.3
        and abs((3 - (r + 0.5) * 6 / 15) + centre[1]) < 1.3
    )
    status, out = c.post(
        "/api/prior",
        {"plane": {"origin": [0, 0, 0], "axes": [[1, 0, 0], [2, 0, 0]]}, "bounds": [-1, 1, -1, 1]},
    )
    assert status == 400 and "different directions" in out["error"]


def test_data_that_are_not_images_are_drawn_as_bar_charts(runs: dict[str, Path]) -> None:
    server_iter = _start(runs["table"])
    _, c = next(server_iter)
    try:
        info = c.ok("/api/info")
        assert (
            info["is_image"] is False
            and info["data_shape"] == [6]
            and info["image_size"] == [32, 36]
        )
        bars = png_pixels(c.ok("/api/decode", {"z": [0, 0]})["images"][0])
        assert bars.shape == (32, 36) and set(np.unique(bars)) <= {0, 255}
        # Bars grow from the bottom: every column is dark above and white below.
        assert all((np.diff(bars[:, j].astype(int)) >= 0).all() for j in range(36))
        status, out = c.post("/api/encode", {"image": data_url(digit_picture())})
        assert status == 400 and "not images" in out["error"]
    finally:
        next(server_iter, None)


# -- bad requests -------------------------------------------------------------------------------------

PLANE = {"origin": [0, 0], "axes": [[1, 0], [0, 1]]}

BAD_JSON_REQUESTS = [
    ("/api/decode", {"z": [0.0]}, 400, "length 2"),
    ("/api/decode", {"z": [0, 0, 0]}, 400, "length 2"),
    ("/api/decode", {"z": []}, 400, "non-empty"),
    ("/api/decode", {"z": "0,0"}, 400, "latent vector"),
    ("/api/decode", {"z": [0, "1"]}, 400, "must be a number"),
    ("/api/decode", {"z": [True, 0]}, 400, "must be a number"),
    ("/api/decode", {"z": [None, 0]}, 400, "must be a number"),
    ("/api/decode", {"z": [1e9, 0]}, 400, "beyond"),
    ("/api/decode", {"z": [[0, 0], [0]]}, 400, "z[1] must have length 2"),
    ("/api/decode", {"z": [[0, 0]] * 257}, 413, "at most 256"),
    ("/api/decode", {}, 400, "missing field 'z'"),
    ("/api/decode", {"z": [0, 0], "zz": 1}, 400, "unknown field 'zz'"),
    ("/api/decode", {"z": [0, 0], "label": 1}, 400, "not conditional"),
    ("/api/grid", {"plane": PLANE, "bounds": [-1, 1, -1, 1], "n": 33}, 400, "n must be in 2..32"),
    ("/api/grid", {"plane": PLANE, "bounds": [-1, 1, -1, 1], "n": 1}, 400, "n must be in 2..32"),
    ("/api/grid", {"plane": PLANE, "bounds": [-1, 1, -1, 1], "n": 4.5}, 400, "integer"),
    ("/api/grid", {"plane": PLANE, "bounds": [1, -1, -1, 1]}, 400, "min < max"),
    ("/api/grid", {"plane": PLANE, "bounds": [-1, 1, -1]}, 400, "bounds must be"),
    ("/api/grid", {"plane": PLANE, "bounds": [-1, 1, -1, 1e7]}, 400, "within"),
    (
        "/api/grid",
        {"plane": {"origin": [0, 0]}, "bounds": [-1, 1, -1, 1]},
        400,
        "missing field 'axes'",
    ),
    (
        "/api/grid",
        {"plane": {"origin": [0, 0], "axes": [[0, 0], [0, 0]]}, "bounds": [-1, 1, -1, 1]},
        400,
        "both zero",
    ),
    (
        "/api/grid",
        {"plane": {"origin": [0], "axes": [[1, 0], [0, 1]]}, "bounds": [-1, 1, -1, 1]},
        400,
        "plane.origin",
    ),
    ("/api/grid", {"plane": [0, 0], "bounds": [-1, 1, -1, 1]}, 400, "plane must be"),
    ("/api/interpolate", {"a": 0, "b": DIGITS_TEST}, 400, "test point index"),
    ("/api/interpolate", {"a": -1, "b": 0}, 400, "test point index"),
    ("/api/interpolate", {"a": "0", "b": 1}, 400, "test point index or a latent vector"),
    ("/api/interpolate", {"a": 0, "b": 1, "steps": 1}, 400, "steps must be in 2..32"),
    ("/api/interpolate", {"a": 0, "b": 1, "steps": 1000}, 400, "steps must be in 2..32"),
    ("/api/interpolate", {"a": [0, 0], "b": [0, 0, 1]}, 400, "length 2"),
    ("/api/sample", {"n": 0}, 400, "n must be in 1..64"),
    ("/api/sample", {"n": 65}, 400, "n must be in 1..64"),
    ("/api/sample", {"n": 4, "seed": -1}, 400, "seed must be in"),
    ("/api/sample", {"n": True}, 400, "integer"),
    ("/api/prior", {"plane": PLANE, "bounds": [-1, 1, -1, 1], "n": 500}, 400, "n must be in 8..96"),
    ("/api/encode", {}, 400, "missing field 'image'"),
    ("/api/encode", {"image": "hello"}, 415, "PNG or JPEG"),
    ("/api/encode", {"image": 42}, 400, "data URL"),
    ("/api/encode", {"image": "data:image/gif;base64,R0lGODlhAQABAAAAACw="}, 415, "PNG or JPEG"),
    ("/api/encode", {"image": "data:image/png;base64,@@@notbase64@@@"}, 400, "base64"),
    (
        "/api/encode",
        {
            "image": "data:image/png;base64,"
            + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
        },
        400,
        "could not be decoded",
    ),
    (
        "/api/encode",
        {
            "image": "data:image/png;base64,"
            + base64.b64encode(b"\xff\xd8\xff" + b"\0" * 40).decode()
        },
        415,
        "not a PNG",
    ),
    ("/api/encode", {"image": data_url(Image.new("L", (2100, 10)))}, 400, "at most 2048x2048"),
    ("/api/encode", {"image": data_url(Image.new("L", (40, 40)))}, 400, "blank"),
    (
        "/api/encode",
        {"image": data_url(digit_picture()), "fit": "yes"},
        400,
        "fit must be true or false",
    ),
    ("/api/encode", {"image": data_url(digit_picture()), "invert": "maybe"}, 400, "invert must be"),
    (
        "/api/encode",
        {"image": "data:image/png;base64," + "A" * (3 * 1024 * 1024)},
        400,
        "larger than 2 MB",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"), BAD_JSON_REQUESTS, ids=lambda v: str(v)[:40]
)
def test_bad_requests_get_a_4xx_and_a_message(
    vae: tuple[ExplorerServer, Client], path: str, body: Any, status: int, message: str
) -> None:
    _, c = vae
    got, out = c.post(path, body)
    assert got == status, out
    assert message in out["error"]
    # The server is still fine afterwards.
    assert c.post("/api/decode", {"z": [0, 0]})[0] == 200


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"z": [NaN, 0]}', "finite"),
        (b'{"z": [Infinity, 0]}', "finite"),
        (b'{"z": [0, -Infinity]}', "finite"),
        (b'{"z": [0, 0', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[0, 0]", "JSON object"),
        (b"", "not valid JSON"),
    ],
)
def test_non_finite_and_malformed_bodies(
    vae: tuple[ExplorerServer, Client], raw: bytes, message: str
) -> None:
    _, c = vae
    status, out, _ = c.request(
        "POST", "/api/decode", raw=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and message in out["error"]


@pytest.mark.parametrize(
    ("method", "path", "headers", "raw", "status", "message"),
    [
        (
            "POST",
            "/api/decode",
            {"Content-Type": "text/plain"},
            b'{"z": [0, 0]}',
            415,
            "application/json",
        ),
        ("POST", "/api/decode", {}, b'{"z": [0, 0]}', 415, "application/json"),
        ("GET", "/api/decode", {}, None, 405, "takes POST"),
        ("POST", "/api/info", {"Content-Type": "application/json"}, b"{}", 405, "takes GET"),
        ("PUT", "/api/decode", {"Content-Type": "application/json"}, b"{}", 405, "not allowed"),
        ("DELETE", "/", {}, None, 405, "not allowed"),
        ("HEAD", "/", {}, None, 405, None),
        ("OPTIONS", "/api/decode", {}, None, 405, "not allowed"),
        ("FOO", "/api/decode", {}, None, 405, "not allowed"),
        ("PUT", "/", {"Transfer-Encoding": "chunked"}, None, 411, "chunked"),
        ("GET", "/api/nothing", {}, None, 404, "no such page"),
        ("POST", "/api/nothing", {"Content-Type": "application/json"}, b"{}", 404, "no such page"),
        ("GET", "/api/info", {"Host": "evil.example:80"}, None, 403, "localhost"),
        ("GET", "/api/info", {"Host": "127.evil.example"}, None, 403, "localhost"),
        ("GET", "/api/info", {"Host": "localhost.evil.example:80"}, None, 403, "localhost"),
        ("GET", "/api/info", {"Host": ""}, None, 403, "localhost"),
        (
            "POST",
            "/api/decode",
            {"Host": "attacker.test", "Content-Type": "application/json"},
            b'{"z": [0, 0]}',
            403,
            "localhost",
        ),
    ],
)
def test_bad_methods_routes_and_headers(
    vae: tuple[ExplorerServer, Client],
    method: str,
    path: str,
    headers: dict[str, str],
    raw: bytes | None,
    status: int,
    message: str | None,
) -> None:
    _, c = vae
    got, out, _ = c.request(method, path, raw=raw, headers=headers)
    assert got == status
    if message is not None:
        assert message in out["error"]
    assert c.post("/api/decode", {"z": [0, 0]})[0] == 200


def _raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                part = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not part:
                break
            chunks.append(part)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = [
                    int(h.split(b":")[1])
                    for h in head.split(b"\r\n")
                    if h.lower().startswith(b"content-length")
                ]
                if length and len(body) >= length[0]:
                    break
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("request_head", "status", "message"),
    [
        # Announces 10 MB and sends none of it: refused before reading.
        (
            b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n",
            413,
            b"larger than 4 MB",
        ),
        (
            b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\r\n",
            411,
            b"Content-Length",
        ),
        (
            b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            411,
            b"chunked",
        ),
        (
            b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n",
            400,
            b"Content-Length",
        ),
        # Not HTTP at all: the answer is HTTP/0.9 style, the JSON message without a status line.
        (b"GARBAGE\r\n\r\n", 0, b'{"error": "Bad request syntax'),
        (b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\n\r\n", 414, b"error"),
        (
            b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: -5\r\n\r\n",
            400,
            b"negative",
        ),
    ],
)
def test_bad_bodies_on_the_wire(
    vae: tuple[ExplorerServer, Client], request_head: bytes, status: int, message: bytes
) -> None:
    server, c = vae
    reply = _raw_exchange(server.port, request_head)
    if status:
        assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:100]
    else:
        assert reply.startswith(message), reply[:100]
    assert message in reply
    assert c.post("/api/decode", {"z": [0, 0]})[0] == 200


# -- the pieces without HTTP ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(28, 28), (1, 1), (5, 9, 3), (3, 200)])
def test_png_round_trips_exactly(shape: tuple[int, ...]) -> None:
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    b = np.asarray(Image.open(io.BytesIO(to_png(a))))
    assert b.shape == a.shape and np.array_equal(a, b)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros(4, np.uint8)]
)
def test_png_refuses_what_it_cannot_encode(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8 pixels"):
        to_png(bad)


def test_tile_puts_images_row_by_row() -> None:
    imgs = np.arange(6, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(3, 2)  # 6 images of 2x3
    m = tile(imgs, 3)
    assert m.shape == (4, 9)
    assert m[0, 0] == 0 and m[0, 3] == 1 and m[0, 8] == 2 and m[2, 0] == 3 and m[3, 8] == 5
    padded = tile(imgs[:5], 3)
    assert padded.shape == (4, 9) and padded[3, 8] == 0


def test_uploads_are_centred_like_the_training_digits() -> None:
    # A small stroke in a corner of a big white page, drawn in black.
    page = np.full((300, 300), 255, np.uint8)
    page[20:80, 30:50] = 0
    x, flipped = to_model_input(
        Image.fromarray(page), (1, 28, 28), dark_background=True, ink_fraction=20 / 28
    )
    assert flipped and x.shape == (1, 28, 28) and x.dtype == np.float32
    a = x[0]
    rows, cols = np.nonzero(a > 0.1)
    assert rows.max() - rows.min() + 1 in (19, 20, 21)  # the stroke's long side scaled to 20 of 28
    cy = (a.sum(1) * np.arange(28)).sum() / a.sum()
    cx = (a.sum(0) * np.arange(28)).sum() / a.sum()
    assert abs(cy - 13.5) < 1.0 and abs(cx - 13.5) < 1.0
    assert a[0].max() == 0 and a[:, 0].max() == 0  # background stays background


def test_explorer_never_imports_the_trainer(runs: dict[str, Path]) -> None:
    code = (
        "import sys, json, numpy as np\n"
        "from vaekit.serve import Explorer\n"
        "from vaekit.serve.server import ExplorerAPI\n"
        f"ex = Explorer.from_run_dir({str(runs['vae'])!r})\n"
        "api = ExplorerAPI(ex)\n"
        "api.decode({'z': [0, 0]}); api.sample({'n': 2}); api.interpolate({'a': 0, 'b': 1})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('vaekit.train'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_explorer_without_test_split(runs: dict[str, Path]) -> None:
    ex = Explorer(vaekit.load(runs["vae"]), None)
    assert ex.info()["points"] == 0 and ex.points() == {"z": [], "labels": None}
    assert len(ex.decode(np.zeros((2, 2), np.float32))) == 2


# -- the command line ----------------------------------------------------------------------------------


def _explore(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vaekit", "explore", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _address(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "http://" in line, line + (
        proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
    )
    return line.split("http://", 1)[1].split()[0]


def test_cli_explore_prints_its_address_and_serves(runs: dict[str, Path]) -> None:
    proc = _explore(str(runs["vae"]), "--port", "0")
    try:
        address = _address(proc)
        host, port = address.rstrip("/").rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/api/info")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["latent_dim"] == 2
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_cli_explore_warns_when_not_on_loopback(runs: dict[str, Path]) -> None:
    proc = _explore(str(runs["vae"]), "--host", "0.0.0.0", "--port", "0")
    try:
        _address(proc)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "warning" in err and "not on a loopback address" in err


def test_cli_explore_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vaekit", "explore", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = run(str(tmp_path / "missing"))
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    out = run(str(runs["vae"]), "--port", "70000")
    assert out.returncode == 2 and "--port must be in 0..65535" in out.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        out = run(str(runs["vae"]), "--port", str(busy.getsockname()[1]))
    assert out.returncode == 2 and "cannot serve on" in out.stderr and "Traceback" not in out.stderr


def test_decode_round_trip_is_fast(vae: tuple[ExplorerServer, Client]) -> None:
    # The real measurement (28x28, percentiles) is benchmarks/explorer_latency.py; this only
    # guards against a regression by an order of magnitude (Nagle, per-request reloading).
    server, _ = vae
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    times = []
    for i in range(30):
        t0 = time.perf_counter()
        conn.request(
            "POST",
            "/api/decode",
            body=json.dumps({"z": [i / 10, 0]}),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        times.append(time.perf_counter() - t0)
    conn.close()
    assert float(np.median(times)) < 0.035, times

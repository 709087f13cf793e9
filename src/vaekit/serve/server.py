"""The explorer's web server: the standard library's ThreadingHTTPServer and a small JSON API.

Routes (every POST takes and every API route returns JSON; pictures are base64 PNG)::

    GET  /                  the page (index.html); /explorer.js, /explorer.css
    GET  /api/info          the run: latent size, classes, PCA of the codes, limits
    GET  /api/points        the encoded test set and its labels
    POST /api/decode        {"z": [..] or [[..], ..], "label"?}            -> {"images": [...]}
    POST /api/grid          {"plane", "bounds", "n", "label"?}             -> {"image": mosaic}
    POST /api/interpolate   {"a", "b" (test index or z), "steps", "label"?} -> {"z", "images", "ends"?}
    POST /api/sample        {"n", "label"?, "seed"?, "sampler"?, "temperature"?} -> {"z", "images", "seed"}
    POST /api/encode        {"image": data URL, "label"?, "fit"?, "invert"?} -> {"z", "std", "input", "reconstruction"}
    POST /api/prior         {"plane", "bounds", "n"}                       -> {"logp", "levels", ...}
    POST /api/codes         {"codes": [..] or [[..], ..], "label"?}        -> {"z", "images"}

A discrete posterior's code indices (one per position, ``info.codes``) come with the test
points, samples and encoded pictures, and ``/api/codes`` decodes a code grid as edited.

A plane is ``{"origin": z, "axes": [a1, a2]}`` (``z(u, v) = origin + u a1 + v a2``) and
bounds are ``[u_min, u_max, v_min, v_max]``. Every request is validated before the
model sees it; a bad one gets a 4xx and ``{"error": message}``. Files are served from an
allow-list read out of the package at start-up, so no request can name a path on disk.

Example:
    >>> server = make_server("runs/demo", port=0)        # doctest: +SKIP
    >>> server.url                                       # doctest: +SKIP
    'http://127.0.0.1:40123/'
    >>> server.serve_forever()                           # doctest: +SKIP
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import secrets
import socket
import sys
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from vaekit.errors import UsageError
from vaekit.serve.explorer import LIMITS, Explorer
from vaekit.serve.imaging import ImageError, UnsupportedImageType, decode_data_url

__all__ = [
    "RequestError",
    "ExplorerServer",
    "make_server",
    "is_loopback",
    "STATIC_FILES",
    "MAX_BODY_BYTES",
]

# The largest request body: an uploaded image (2 MB, base64 adds a third) and some JSON.
MAX_BODY_BYTES = 4 * 1024 * 1024
# Latent values beyond this are typing errors, and float32 decoders overflow on them.
MAX_ABS_Z = 1e4

# URL path -> (file in serve/static, content type). Nothing else is ever read.
STATIC_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/explorer.js": ("explorer.js", "text/javascript; charset=utf-8"),
    "/explorer.css": ("explorer.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

# The page loads nothing from elsewhere; say so to the browser as well.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class RequestError(Exception):
    """A request the explorer refuses: an HTTP status (4xx) and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# -- request validation ----------------------------------------------------------------------------


def _check_keys(
    body: dict[str, Any], allowed: set[str], required: frozenset[str] | set[str] = frozenset()
) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(
            400, f"unknown field {unknown[0]!r}; this request accepts: {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(body))
    if missing:
        raise RequestError(400, f"missing field {missing[0]!r}")


def _finite_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"{what} must be a number, got {json.dumps(value)[:40]}")
    f = float(value)
    if not math.isfinite(f):
        raise RequestError(400, f"{what} must be finite")
    return f


def _vector(value: Any, dim: int, what: str) -> np.ndarray:
    """A list of ``dim`` finite numbers within +-MAX_ABS_Z."""
    if not isinstance(value, list):
        raise RequestError(400, f"{what} must be a list of {dim} numbers")
    if len(value) != dim:
        raise RequestError(
            400, f"{what} must have length {dim} (the latent dimension), got {len(value)}"
        )
    out = np.array(
        [_finite_number(v, f"{what}[{i}]") for i, v in enumerate(value)], dtype=np.float64
    )
    if np.abs(out).max(initial=0.0) > MAX_ABS_Z:
        raise RequestError(
            400, f"{what} has a value beyond +-{MAX_ABS_Z:g}; latent codes are small numbers"
        )
    return out


def _int(body: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    if key not in body:
        if default is None:
            raise RequestError(400, f"missing field {key!r} (an integer in {lo}..{hi})")
        return default
    v = body[key]
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise RequestError(
                400, f"{key} must be an integer in {lo}..{hi}, got {json.dumps(v)[:40]}"
            )
    if not lo <= v <= hi:
        raise RequestError(400, f"{key} must be in {lo}..{hi}, got {v}")
    return int(v)


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    v = body.get(key, default)
    if not isinstance(v, bool):
        raise RequestError(400, f"{key} must be true or false")
    return v


def _bounds(value: Any) -> tuple[float, float, float, float]:
    if not isinstance(value, list) or len(value) != 4:
        raise RequestError(400, "bounds must be [u_min, u_max, v_min, v_max]")
    b = [_finite_number(v, f"bounds[{i}]") for i, v in enumerate(value)]
    if not (b[0] < b[1] and b[2] < b[3]):
        raise RequestError(400, "bounds must be [u_min, u_max, v_min, v_max] with min < max")
    if max(abs(v) for v in b) > MAX_ABS_Z:
        raise RequestError(400, f"bounds must lie within +-{MAX_ABS_Z:g}")
    return b[0], b[1], b[2], b[3]


def _plane(value: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(value, dict):
        raise RequestError(400, 'plane must be {"origin": [...], "axes": [[...], [...]]}')
    _check_keys(value, {"origin", "axes"}, {"origin", "axes"})
    origin = _vector(value["origin"], dim, "plane.origin")
    axes = value["axes"]
    if not isinstance(axes, list) or len(axes) != 2:
        raise RequestError(400, "plane.axes must be two latent vectors")
    a = np.stack([_vector(axes[i], dim, f"plane.axes[{i}]") for i in range(2)])
    if np.abs(a).sum() == 0:
        raise RequestError(400, "plane.axes are both zero")
    return origin, a


# -- the API -----------------------------------------------------------------------------------------


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class ExplorerAPI:
    """The JSON routes as plain methods: validated body in, JSON-able dict out."""

    def __init__(self, explorer: Explorer) -> None:
        self.ex = explorer
        self.dim = explorer.latent_dim
        self.routes: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
            ("GET", "/api/info"): lambda _: self.ex.info(),
            ("GET", "/api/points"): lambda _: self.ex.points(),
            ("POST", "/api/decode"): self.decode,
            ("POST", "/api/grid"): self.grid,
            ("POST", "/api/interpolate"): self.interpolate,
            ("POST", "/api/sample"): self.sample,
            ("POST", "/api/encode"): self.encode,
            ("POST", "/api/prior"): self.prior,
            ("POST", "/api/codes"): self.codes,
        }

    def _label(self, body: dict[str, Any]) -> int | None:
        k = self.ex.run.num_classes
        value = body.get("label")
        if not k:
            if value is not None:
                raise RequestError(
                    400, "label is only for a conditional model; this run is not conditional"
                )
            return None
        if value is None:
            raise RequestError(400, f"this is a conditional model: send a label in 0..{k - 1}")
        return _int(body, "label", 0, k - 1)

    def _z_or_index(self, value: Any, what: str) -> tuple[np.ndarray, int | None]:
        """A test point's index (int) or a latent vector (list)."""
        if isinstance(value, int) and not isinstance(value, bool):
            n = len(self.ex.codes)
            if not 0 <= value < n:
                raise RequestError(
                    400, f"{what} must be a test point index in 0..{n - 1}, got {value}"
                )
            return self.ex.codes[value].astype(np.float64), value
        if isinstance(value, list):
            return _vector(value, self.dim, what), None
        raise RequestError(
            400, f"{what} must be a test point index or a latent vector of length {self.dim}"
        )

    def decode(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, {"z", "label"}, {"z"})
        z = body["z"]
        if not isinstance(z, list) or not z:
            raise RequestError(
                400, f"z must be a latent vector of length {self.dim} or a non-empty list of them"
            )
        rows = z if isinstance(z[0], list) else [z]
        if len(rows) > LIMITS["max_decode"]:
            raise RequestError(
                413, f"at most {LIMITS['max_decode']} latent vectors per request, got {len(rows)}"
            )
        zs = np.stack(
            [_vector(r, self.dim, f"z[{i}]" if len(rows) > 1 else "z") for i, r in enumerate(rows)]
        )
        pngs = self.ex.decode(zs, self._label(body))
        return {"images": [_b64(p) for p in pngs]}

    def grid(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, {"plane", "bounds", "n", "label"}, {"plane", "bounds"})
        origin, axes = _plane(body["plane"], self.dim)
        bounds = _bounds(body["bounds"])
        n = _int(body, "n", LIMITS["grid_min"], LIMITS["grid_max"], default=16)
        png = self.ex.grid(origin, axes, bounds, n, self._label(body))
        return {"image": _b64(png), "n": n, "bounds": list(bounds)}

    def interpolate(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, {"a", "b", "steps", "label"}, {"a", "b"})
        za, ia = self._z_or_index(body["a"], "a")
        zb, ib = self._z_or_index(body["b"], "b")
        steps = _int(body, "steps", 2, LIMITS["max_steps"], default=10)
        z, pngs = self.ex.interpolate(za, zb, steps, self._label(body))
        out: dict[str, Any] = {
            "z": np.round(z.astype(np.float64), 4).tolist(),
            "images": [_b64(p) for p in pngs],
        }
        if ia is not None and ib is not None:
            out["ends"] = [_b64(self.ex.test_example(ia)), _b64(self.ex.test_example(ib))]
        return out

    def sample(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, {"n", "label", "seed", "sampler", "temperature"})
        n = _int(body, "n", 1, LIMITS["max_samples"], default=16)
        seed = _int(body, "seed", 0, 2**31 - 1, default=secrets.randbelow(2**31))
        sampler = body.get("sampler", "prior")
        if sampler not in self.ex.samplers:
            raise RequestError(
                400,
                f"sampler must be one this run has: {', '.join(self.ex.samplers)}; got "
                f"{json.dumps(sampler)[:40]}",
            )
        t = _finite_number(body.get("temperature", 1.0), "temperature")
        if not 0.05 <= t <= 5:
            raise RequestError(400, f"temperature must be in 0.05..5, got {t:g}")
        try:
            z, pngs = self.ex.sample(n, self._label(body), seed, sampler, t)
        except UsageError as e:  # a prior with no temperature (the uniform one over codes)
            raise RequestError(400, str(e)) from None
        out = {
            "z": np.round(z.astype(np.float64), 4).tolist(),
            "images": [_b64(p) for p in pngs],
            "seed": seed,
        }
        codes = self.ex.codes_of(z)
        if codes is not None:  # a discrete posterior's code indices per sample
            out["codes"] = codes
        return out

    def codes(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, {"codes", "label"}, {"codes"})
        head = self.ex.code_head
        if head is None:
            raise RequestError(400, "this run's latents are continuous: it has no codes to set")
        p, k = head.space.positions, head.space.codes
        grids = body["codes"]
        if isinstance(grids, list) and grids and not isinstance(grids[0], list):
            grids = [grids]
        if not isinstance(grids, list) or not grids:
            raise RequestError(400, f"codes must be {p} code indices or a list of such rows")
        if len(grids) > LIMITS["max_decode"]:
            raise RequestError(413, f"at most {LIMITS['max_decode']} code grids per request")
        rows = []
        for i, row in enumerate(grids):
            if not isinstance(row, list) or len(row) != p:
                raise RequestError(400, f"codes[{i}] must be {p} code indices (one per position)")
            for j, c in enumerate(row):
                # A digit view of mixed FSQ levels allows fewer codes at some positions.
                kj = head.space.limits[j] if head.space.limits else k
                if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < kj:
                    raise RequestError(
                        400, f"codes[{i}][{j}] must be a code index in 0..{kj - 1}, got {c!r}"[:120]
                    )
            rows.append(row)
        z, pngs = self.ex.decode_codes(np.array(rows, dtype=np.int64), self._label(body))
        return {"z": np.round(z.astype(np.float64), 4).tolist(), "images": [_b64(p) for p in pngs]}

    def encode(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, {"image", "label", "fit", "invert"}, {"image"})
        if not self.ex.is_image:
            raise RequestError(400, "this run's data are not images, so there is nothing to upload")
        invert = body.get("invert", "auto")
        if invert != "auto" and not isinstance(invert, bool):
            raise RequestError(400, 'invert must be "auto", true or false')
        fit = _bool(body, "fit", True)
        label = self._label(body)
        try:
            img = decode_data_url(body["image"])
            out = self.ex.encode_picture(img, label, fit=fit, invert=invert)
        except UnsupportedImageType as e:
            raise RequestError(415, str(e)) from None
        except ImageError as e:
            raise RequestError(400, str(e)) from None
        out["input"] = _b64(out["input"])
        out["reconstruction"] = _b64(out["reconstruction"])
        return out

    def prior(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, {"plane", "bounds", "n"}, {"plane", "bounds"})
        if not self.ex.has_prior:
            raise RequestError(
                400,
                "this run is a plain autoencoder: it was trained without a prior, so there are no contours",
            )
        origin, axes = _plane(body["plane"], self.dim)
        bounds = _bounds(body["bounds"])
        n = _int(body, "n", 8, LIMITS["prior_grid_max"], default=60)
        try:
            return self.ex.prior_density(origin, axes, bounds, n)
        except ValueError as e:
            raise RequestError(400, str(e)) from None


# -- HTTP ----------------------------------------------------------------------------------------------


def _read_static() -> dict[str, bytes]:
    folder = resources.files("vaekit.serve") / "static"
    out = {}
    for name, _ in set(STATIC_FILES.values()):
        out[name] = (folder / name).read_bytes()
    return out


class _Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    # Keep-alive: the page's hover requests reuse one connection.
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes; without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True
    server_version = "vaekit-explorer"
    sys_version = ""

    # -- plumbing --

    def _send(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in _SECURITY_HEADERS.items():
            self.send_header(k, v)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json")

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, "application/json", extra)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Hovering sends dozens of requests a second: log only the refused ones.
        if self.server.verbose or (isinstance(code, int) and code >= 400):
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if not self.server.quiet:
            super().log_message(format, *args)

    def _host_allowed(self) -> bool:
        """On a loopback address, accept only Host headers naming this machine.

        A web page elsewhere can point its own host name at 127.0.0.1 (DNS rebinding);
        its requests then carry that foreign Host, and are refused here.
        """
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):  # [::1] or [::1]:port
            name = host[1 : host.find("]")] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        # Only an IP literal or "localhost": a name like 127.evil.example is someone's DNS.
        return is_loopback(name) and (name == "localhost" or _is_ip(name))

    # -- methods --

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _not_allowed(self) -> None:
        try:
            # Drain any body so that the connection stays usable.
            self._read_body(required=False)
        except RequestError as e:
            self._error(e.status, e.message)
            return
        self._error(
            405, f"method {self.command} is not allowed; use GET or POST", {"Allow": "GET, POST"}
        )

    def __getattr__(self, name: str) -> Any:
        # Every other method (PUT, HEAD, FOO, ...) is a 405, not the base class's 501.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the base class finds while parsing (bad request line, long headers), as JSON."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._error(int(code), message or phrase)

    def _read_body(self, required: bool = True) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError(411, "send the request body with a Content-Length, not chunked")
        text = self.headers.get("Content-Length")
        if text is None:
            if required:
                raise RequestError(411, "a POST request needs a Content-Length header")
            return b""
        try:
            length = int(text)
        except ValueError:
            self.close_connection = True
            raise RequestError(400, "Content-Length must be a number") from None
        if length < 0:
            self.close_connection = True
            raise RequestError(400, "Content-Length must not be negative")
        if length > MAX_BODY_BYTES:
            # Not read: close instead of draining megabytes we will not use.
            self.close_connection = True
            raise RequestError(
                413, f"request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB"
            )
        return self.rfile.read(length)

    def _dispatch(self, method: str) -> None:
        try:
            if not self._host_allowed():
                self.close_connection = True
                raise RequestError(
                    403, "this explorer only answers requests addressed to localhost or 127.0.0.1"
                )
            path = urlsplit(self.path).path
            if method == "GET" and path in STATIC_FILES:
                name, ctype = STATIC_FILES[path]
                self._send(200, self.server.static[name], ctype)
                return
            handler = self.server.api.routes.get((method, path))
            if handler is None:
                if any(p == path for (_, p) in self.server.api.routes):
                    other = "POST" if method == "GET" else "GET"
                    if method == "POST":
                        self._read_body(required=False)
                    self._error(405, f"{path} takes {other}, not {method}", {"Allow": other})
                    return
                if method == "POST":
                    self._read_body(required=False)
                self._error(404, f"no such page or API route: {path[:100]}")
                return
            body: dict[str, Any] = {}
            if method == "POST":
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                raw = self._read_body()
                if ctype != "application/json":
                    raise RequestError(
                        415,
                        f"send JSON with Content-Type: application/json (got {ctype or 'none'})",
                    )
                try:
                    parsed = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise RequestError(400, f"request body is not valid JSON ({e})") from None
                if not isinstance(parsed, dict):
                    raise RequestError(400, "request body must be a JSON object")
                body = parsed
            self._json(200, handler(body))
        except RequestError as e:
            self._error(e.status, e.message)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug, not a bad request: say so and keep serving
            traceback.print_exc(file=sys.stderr)
            self._error(500, f"internal error: {type(e).__name__}: {e}")


class ExplorerServer(ThreadingHTTPServer):
    """The explorer on ``host:port`` (port 0 picks a free one); ``.url`` is its address."""

    daemon_threads = True

    def __init__(
        self,
        explorer: Explorer,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        verbose: bool = False,
        quiet: bool = False,
    ) -> None:
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        self.explorer = explorer
        self.api = ExplorerAPI(explorer)
        self.static = _read_static()
        self.loopback = is_loopback(host)
        self.verbose = verbose
        self.quiet = quiet
        super().__init__((host.strip("[]"), port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = str(self.server_address[0])
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"


def make_server(
    run: str | Explorer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    data_dir: str | None = None,
    device: str = "cpu",
    max_points: int = 2000,
    verbose: bool = False,
    quiet: bool = False,
    data_path: str | None = None,
    allow_changed_data: bool = False,
) -> ExplorerServer:
    """An explorer server for a run directory (or a prepared :class:`Explorer`), not yet serving.

    Call ``serve_forever()`` on it (in a thread for tests) and ``shutdown()`` to stop.
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"port must be in 0..65535 (0 picks a free one), got {port}")
    ex = (
        run
        if isinstance(run, Explorer)
        else Explorer.from_run_dir(
            run,
            data_dir=data_dir,
            device=device,
            max_points=max_points,
            data_path=data_path,
            allow_changed_data=allow_changed_data,
        )
    )
    return ExplorerServer(ex, host, port, verbose=verbose, quiet=quiet)

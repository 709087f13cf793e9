"""Verified downloads into the cache: mirrors in order, checksums, atomic writes.

A file is streamed into a hidden temporary file beside its final name, its
checksum is checked, it is flushed to disk and only then renamed into place, so
an interrupted or corrupt transfer never leaves a file under the final name.
Setting ``VAEKIT_OFFLINE=1`` turns every download into a clear error that says
where to put the file by hand.

Example:
    >>> spec = RemoteFile("t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c")
    >>> path = locate(spec, [], ["https://ossci-datasets.s3.amazonaws.com/mnist/"],
    ...               cache_dir() / "mnist", what="MNIST")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import struct
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from vaekit._version import __version__
from vaekit.data.core import DataError
from vaekit.storage import fsync_dir

__all__ = [
    "OFFLINE_ENV",
    "TIMEOUT",
    "RemoteFile",
    "offline",
    "file_digest",
    "verify",
    "fetch",
    "locate",
]

OFFLINE_ENV = "VAEKIT_OFFLINE"
# Seconds without progress (connect or any read) before a mirror is given up.
TIMEOUT = 60.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file known by name and checksum (md5 and/or sha256, lower-case hex).

    ``gzip_mtime``: the time stamp in the original gzip header. Debian's packages
    rewrite gzip headers for reproducible builds (the file name is dropped and the
    time reset) while keeping the compressed stream; with the original time stamp
    the official header can be rebuilt, so such a copy still verifies against the
    official checksum.
    """

    name: str
    md5: str | None = None
    sha256: str | None = None
    gzip_mtime: int | None = None

    def describe(self) -> str:
        """The expected checksums, for error messages."""
        parts = [
            f"md5 {self.md5}" if self.md5 else "",
            f"sha256 {self.sha256}" if self.sha256 else "",
        ]
        return ", ".join(p for p in parts if p) or "no published checksum"


def offline() -> bool:
    """True when ``$VAEKIT_OFFLINE`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def file_digest(path: Path, algorithm: str = "md5", header: bytes | None = None) -> str:
    """Hex digest of a file; ``header`` replaces the file's own gzip header (see :func:`verify`)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        if header is not None:
            _skip_gzip_header(f)
            h.update(header)
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _skip_gzip_header(f: BinaryIO) -> None:
    """Advance past a gzip member header (RFC 1952) that has no file name or comment."""
    head = f.read(10)
    if len(head) != 10 or head[:3] != b"\x1f\x8b\x08" or head[3] & 0x1E:
        raise ValueError("not a gzip file with a plain header")


def _official_gzip_header(path: Path, name: str, mtime: int) -> bytes | None:
    """The header the official file had, or None when ``path`` is not a rewritten gzip file."""
    with open(path, "rb") as f:
        head = f.read(10)
    # Only a plain header (no name, comment, extra field or header CRC) can have been rewritten.
    if len(head) != 10 or head[:3] != b"\x1f\x8b\x08" or head[3] & 0x1E:
        return None
    inner = name[:-3] if name.endswith(".gz") else name
    return b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + head[8:10] + inner.encode() + b"\x00"


def verify(path: Path, spec: RemoteFile) -> str | None:
    """None when ``path`` has the checksums of ``spec``; else a short reason why not."""
    checks = [(a, v) for a, v in (("md5", spec.md5), ("sha256", spec.sha256)) if v]
    if not checks:
        return None
    got: dict[str, str] = {}
    try:
        header = None
        if spec.gzip_mtime is not None:
            header = _official_gzip_header(path, spec.name, spec.gzip_mtime)
        # A rewritten header never matches as it is, so the rebuilt one is tried first; the
        # file's own bytes come last so that the digest reported on failure is the real one.
        for replacement in ([header] if header is not None else []) + [None]:
            got = {a: file_digest(path, a, replacement) for a, _ in checks}
            if all(got[a] == v.lower() for a, v in checks):
                return None
    except (OSError, ValueError) as e:
        return f"cannot be read ({e})"
    found = ", ".join(f"{a} {got[a]}" for a, _ in checks)
    return f"checksum mismatch: {found}, expected {spec.describe()}"


class _Failed(Exception):
    """One mirror failed; the message says why."""


def _urls(spec: RemoteFile, mirrors: Sequence[str]) -> list[str]:
    return [m if m.endswith(spec.name) else m.rstrip("/") + "/" + spec.name for m in mirrors]


def _by_hand(spec: RemoteFile, urls: Sequence[str], dest: Path) -> str:
    src = urls[0] if urls else spec.name
    return f"download {src} by hand and save it as {dest} ({spec.describe()})"


def fetch(
    spec: RemoteFile,
    mirrors: Sequence[str],
    dest_dir: Path,
    *,
    timeout: float = TIMEOUT,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``spec`` into ``dest_dir``, trying each mirror in order; returns the file.

    A mirror is a folder URL (the file name is appended) or a full URL. The download
    must match the checksum; ``check`` (raising :class:`DataError`) may validate the
    content as well, and is required when the file has no published checksum.
    """
    dest = dest_dir / spec.name
    urls = _urls(spec, mirrors)
    if offline():
        raise DataError(
            f"{spec.name} is needed but downloads are disabled ({OFFLINE_ENV}="
            f"{os.environ.get(OFFLINE_ENV)}): {_by_hand(spec, urls, dest)}, or unset {OFFLINE_ENV}"
        )
    if not urls:
        raise DataError(
            f"{spec.name}: no download mirror is configured; {_by_hand(spec, urls, dest)}"
        )
    if not (spec.md5 or spec.sha256) and check is None:
        raise ValueError(f"refusing to download {spec.name} without a checksum or a content check")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the cache directory {dest_dir} ({e}); set VAEKIT_CACHE_DIR to a writable folder"
        ) from None
    tried = []
    for url in urls:
        try:
            _download(url, dest, spec, timeout, check)
            return dest
        except _Failed as e:
            tried.append(f"{url}: {e}")
    raise DataError(
        f"could not download {spec.name}; tried:\n  "
        + "\n  ".join(tried)
        + f"\nFix: {_by_hand(spec, urls, dest)}"
    )


def _download(
    url: str, dest: Path, spec: RemoteFile, timeout: float, check: Callable[[Path], None] | None
) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        hashers = {a: hashlib.new(a) for a, v in (("md5", spec.md5), ("sha256", spec.sha256)) if v}
        received = 0
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": f"vaekit/{__version__}"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                # disable=None: a progress bar on a terminal only, never in logs.
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=spec.name,
                    disable=None,
                    leave=False,
                ) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        for h in hashers.values():
                            h.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            # http.client returns a short body without complaint when the server closes early.
            if total is not None and received != total:
                raise _Failed(f"truncated transfer: received {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        bad = {
            a: h.hexdigest()
            for a, h in hashers.items()
            if h.hexdigest() != getattr(spec, a).lower()
        }
        if bad and verify(tmp, spec) is not None:
            found = ", ".join(f"{a} {v}" for a, v in bad.items())
            raise _Failed(
                f"checksum mismatch: got {found}, expected {spec.describe()} ({received} bytes received)"
            )
        if check is not None:
            try:
                check(tmp)
            except DataError as e:
                raise _Failed(f"downloaded content is not valid: {e}") from None
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except urllib.error.HTTPError as e:
        raise _Failed(f"HTTP error {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            raise _Failed(f"timed out after {timeout:g} s") from None
        raise _Failed(f"cannot connect ({reason})") from None
    except TimeoutError:
        raise _Failed(f"timed out after {timeout:g} s") from None
    except http.client.HTTPException as e:
        raise _Failed(f"broken HTTP response ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise _Failed(f"{type(e).__name__}: {e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def locate(
    spec: RemoteFile,
    search: Sequence[Path | None],
    mirrors: Sequence[str],
    cache: Path,
    *,
    what: str,
    timeout: float = TIMEOUT,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Find a verified copy of ``spec``: in the ``search`` folders, then ``cache``, else download it.

    A wrong file in a search folder is an error (it is the user's file and is left
    alone); a wrong file in the cache is replaced by a fresh download.
    """
    for folder in search:
        if folder is None:
            continue
        path = folder / spec.name
        if path.is_file():
            reason = verify(path, spec)
            if reason is not None:
                raise DataError(
                    f"{path}: not the expected {what} file ({reason}); replace it with the official "
                    f"{spec.name} or remove it so that it is downloaded into the cache"
                )
            return path
    cached = cache / spec.name
    if cached.is_file() and verify(cached, spec) is None:
        return cached
    looked = [str(f) for f in search if f is not None] + [str(cache)]
    try:
        return fetch(spec, mirrors, cache, timeout=timeout, check=check)
    except DataError as e:
        raise DataError(f"{what}: {spec.name} not found in {', '.join(looked)}, and {e}") from None

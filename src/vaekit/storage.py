"""Files, written so that a crash never leaves half of one: the bottom layer of vaekit's I/O.

Atomic writes (temporary file, fsync, rename, fsync of the folder), strict JSON (no bare
``NaN``), and safetensors weights that record the sha256 of their tensor data
(:data:`WEIGHTS_SHA256`), checked with their values on every load (:func:`read_weights`).
:class:`RunError` is the error of a file or run directory that cannot be read or written.

Nothing here knows the layout of a run directory (that is :mod:`vaekit.rundir`) or imports
another part of vaekit but its errors, so every layer may write its files through here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save
from torch import Tensor

from vaekit.errors import VaekitError

__all__ = [
    "RunError",
    "RunBusyError",
    "atomic_write",
    "file_sha256",
    "fsync_dir",
    "nonfinite_key",
    "finite_or_none",
    "json_text",
    "write_json",
    "WEIGHTS_SHA256",
    "save_weights",
    "write_bytes",
    "read_weights_epoch",
    "read_weights",
    "load_weights",
]


class RunError(VaekitError, RuntimeError):
    """A run directory that cannot be read; the message says what is missing and what to do."""


class RunBusyError(RunError):
    """Another process holds the run directory's lock (it is training it)."""


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A crash at any point leaves either the old file or the new one (plus, at worst, a
    hidden ``.NAME.*.tmp`` file that the trainer removes when it resumes).

    Example:
        >>> with atomic_write(Path("out.json"), "w") as f:    # doctest: +SKIP
        ...     f.write("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _chmod_default(fd)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


_UMASK: int | None = None


def _chmod_default(fd: int) -> None:
    # mkstemp creates 0600 files; give the final file the mode open() would (0666 - umask).
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    with contextlib.suppress(OSError, AttributeError):  # platforms without fchmod
        os.fchmod(fd, 0o666 & ~_UMASK)


def fsync_dir(path: Path) -> None:
    """fsync a folder: a rename or a new file in it survives a crash."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def nonfinite_key(data: Any, where: str = "") -> tuple[str, float] | None:
    """The first place in ``data`` (``"nll"``, ``"classifier.accuracy"``, ``"kl_per_dim[3]"``)
    that holds a float that is NaN or infinite, which JSON cannot hold, with that value;
    None when none does."""
    if isinstance(data, float):
        return None if math.isfinite(data) else (where or "the value", data)
    if isinstance(data, Mapping):
        items: Any = ((f"{where}.{k}" if where else str(k), v) for k, v in data.items())
    elif isinstance(data, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(data))
    else:
        return None
    for key, value in items:
        found = nonfinite_key(value, key)
        if found is not None:
            return found
    return None


def finite_or_none(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None (JSON's null)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {k: finite_or_none(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite_or_none(v) for v in data]
    return data


def json_text(data: Any, *, indent: int | None = 2) -> str:
    """``data`` as strict JSON text: a NaN or infinity, which JSON has no token for (Python
    would write a bare ``NaN`` that other readers refuse), is a RunError naming its key."""
    try:
        return json.dumps(data, indent=indent, allow_nan=False)
    except ValueError:
        found = nonfinite_key(data)
        if found is None:
            raise
        raise RunError(
            f"{found[0]} is {found[1]}, not a finite number, which JSON cannot hold"
        ) from None


def write_json(path: Path, data: Any) -> None:
    """``data`` as strict JSON (:func:`json_text`), written atomically."""
    try:
        text = json_text(data)
    except RunError as e:
        raise RunError(f"cannot write {path}: {e}; nothing was written") from None
    with atomic_write(path, "w") as f:
        f.write(text + "\n")


# The metadata key of a weights file that holds the sha256 of its tensor data (every byte
# after the header): written by save_weights, checked by load_weights when present (files
# written before it have none and load as they did).
def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks: what a checkpoint's
    manifest and the model zoo's manifest record of each file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


WEIGHTS_SHA256 = "data_sha256"


_PLACEHOLDER = "0" * 64  # as long as a sha256 in hex: filling it in moves no offset


def save_weights(
    path: Path, module: torch.nn.Module, metadata: dict[str, str] | None = None
) -> bytes:
    """A module's state dict as safetensors, written atomically (contiguous CPU copies),
    with the sha256 of its tensor data in its metadata (:data:`WEIGHTS_SHA256`). Returns
    the bytes written (a caller writing the same weights elsewhere reuses them)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    # Serialised once: the tensor data do not depend on the metadata, so the digest of
    # the data is written over a placeholder of its own length in the header.
    data = bytearray(save(tensors, metadata={**(metadata or {}), WEIGHTS_SHA256: _PLACEHOLDER}))
    end = _header_end(data)
    digest = hashlib.sha256(memoryview(data)[end:]).hexdigest()
    slot = f'"{WEIGHTS_SHA256}":"{_PLACEHOLDER}"'.encode()
    at = data.find(slot, 8, end)
    if at > 0:
        start = at + len(slot) - 65
        data[start : start + 64] = digest.encode()
        out = bytes(data)
    else:  # a safetensors that spells its header otherwise: serialise again with the hash
        out = save(tensors, metadata={**(metadata or {}), WEIGHTS_SHA256: digest})
    write_bytes(path, out)
    return out


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def _header_end(data: bytes | bytearray) -> int:
    """Where a safetensors file's tensor data begin: 8 bytes of header length, the header."""
    return 8 + int.from_bytes(data[:8], "little")


def read_weights_epoch(path: Path) -> int | None:
    """The epoch recorded in a weights file's metadata (None when it has none)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return int(meta["epoch"]) if "epoch" in meta else None
    except (SafetensorError, OSError, ValueError):
        return None


def read_weights(path: Path, fallback: str = "") -> dict[str, Tensor]:
    """The tensors of a safetensors weights file, checked: a file that is truncated or
    corrupt, whose tensor data do not match the sha256 it records (:data:`WEIGHTS_SHA256`;
    files from before it record none), or that holds NaN or infinite values, is a RunError
    that ends with ``fallback`` (what to load instead)."""
    instead = f"; {fallback}" if fallback else ""
    try:
        raw = Path(path).read_bytes()
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state: dict[str, Tensor] = load_safetensors(raw)
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(
            f"{path}: cannot read weights ({e}); the file is truncated or corrupt{instead}"
        ) from None
    digest = meta.get(WEIGHTS_SHA256)
    if digest is not None and hashlib.sha256(raw[_header_end(raw) :]).hexdigest() != digest:
        raise RunError(
            f"{path}: the weights are corrupt (their sha256 does not match the one the file "
            f"records){instead}"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise RunError(
            f"{path}: {bad[0]} holds NaN or infinite values: the file is damaged (no weights "
            f"that training saves hold any){instead}"
        )
    return state


def load_weights(path: Path, module: torch.nn.Module, fallback: str = "") -> None:
    """Load safetensors weights into ``module``, checked by :func:`read_weights` (whose
    errors end with ``fallback``); weights that do not fit the model are a RunError too."""
    state = read_weights(path, fallback)
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise RunError(
            f"{path}: weights do not fit the model in config.json ({str(e).splitlines()[0]})"
        ) from None

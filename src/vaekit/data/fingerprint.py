"""What a run was trained on: a content hash of the data as loaded, and the files read.

A run directory records it in ``model.json`` (``data.fingerprint``); resuming,
evaluating, plotting, reporting and exploring compare it with the data found now, so
that rows appended to a CSV (which reshuffle every seeded split) are noticed instead
of silently changing the examples each split holds.

The hash covers the examples and labels of every split exactly as the readers return
them (float32 values, int64 labels, class names), not the bytes of the files: data
that were moved, copied or recompressed, or a download converted to the cache, keep
their fingerprint, and every value is covered whatever the file's size. It costs one
SHA-256 pass over the data in memory (0.14 s for 190 MB here, against the seconds
that parsing and scaling take). The files, with their sizes, are kept to say which of
them changed.

Example:
    >>> from vaekit.data import load_dataset
    >>> with recording_reads() as reads:
    ...     ds = load_dataset("digits")
    >>> data_fingerprint(ds, reads)["examples"]
    {'train': 1438, 'test': 359}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from vaekit.data.core import Dataset

__all__ = ["note_read", "recording_reads", "data_fingerprint", "data_change"]

# A read is a file, or a folder with the image files read from it.
Read = tuple[Path, tuple[Path, ...] | None]
_READS: ContextVar[list[Read] | None] = ContextVar("vaekit_data_reads", default=None)


def note_read(path: Path, files: Sequence[Path] | None = None) -> None:
    """Called by the readers: ``path`` was read (a folder: ``files`` were read from it)."""
    reads = _READS.get()
    if reads is not None:
        reads.append((path, None if files is None else tuple(files)))


@contextmanager
def recording_reads() -> Iterator[list[Read]]:
    """Collect every file and folder the readers read inside the ``with`` block."""
    reads: list[Read] = []
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _entries(reads: Sequence[Read]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for path, files in reads:
        path = path.expanduser().resolve()
        if path in seen:  # a file checked, then read
            continue
        seen.add(path)
        if files is None:
            out.append({"path": str(path), "bytes": _size(path)})
        else:
            sizes = [_size(f) or 0 for f in files]
            out.append({"path": str(path), "files": len(files), "bytes": sum(sizes)})
    return out


def data_fingerprint(ds: Dataset, reads: Sequence[Read] = ()) -> dict[str, Any]:
    """``sha256`` of the splits as loaded, their ``examples`` counts, and the ``files`` read."""
    h = hashlib.sha256()
    examples: dict[str, int] = {}
    for name in ("train", "valid", "test"):
        split = getattr(ds, name)
        if split is None:
            continue
        examples[name] = len(split)
        x = split.x.detach().cpu().contiguous()
        h.update(f"{name} {x.dtype} {tuple(x.shape)}\n".encode())
        h.update(x.numpy().data)
        if split.y is not None:
            y = split.y.detach().cpu().contiguous()
            h.update(f"labels {y.dtype}\n".encode())
            h.update(y.numpy().data)
    h.update(json.dumps(ds.class_names).encode())
    return {"sha256": h.hexdigest(), "examples": examples, "files": _entries(reads)}


def _bytes(entry: Mapping[str, Any]) -> str:
    size = entry.get("bytes")
    text = "missing" if size is None else f"{size:,} bytes"
    return f"{entry['files']:,} files, {text}" if "files" in entry else text


def _examples(counts: Mapping[str, int]) -> str:
    parts = " + ".join(f"{k} {v:,}" for k, v in counts.items())
    return f"{sum(counts.values()):,} examples ({parts})"


def data_change(saved: Any, now: Mapping[str, Any]) -> str | None:
    """What differs between a recorded fingerprint and the current one; None when the data
    are the same, or when nothing was recorded (runs from before fingerprints)."""
    if not isinstance(saved, Mapping) or "sha256" not in saved:
        return None
    if saved["sha256"] == now["sha256"] and (
        # A streamed dataset has no content hash: its split sizes are all that is compared.
        saved["sha256"] is not None or dict(saved.get("examples") or {}) == dict(now["examples"])
    ):
        return None
    parts = []
    old_files, new_files = list(saved.get("files") or []), list(now.get("files") or [])
    if len(old_files) == len(new_files):
        # The same reader reads the same files in the same order, wherever they now are.
        pairs = list(zip(old_files, new_files, strict=True))
    else:
        by_path = {f["path"]: f for f in new_files}
        pairs = [(f, by_path.get(f["path"], {"path": f["path"], "bytes": None})) for f in old_files]
    for old, new in pairs:
        if (old.get("bytes"), old.get("files")) != (new.get("bytes"), new.get("files")):
            parts.append(f"{new['path']} has {_bytes(new)} now, {_bytes(old)} when it was trained")
    old_n, new_n = saved.get("examples"), now["examples"]
    if isinstance(old_n, Mapping) and dict(old_n) != dict(new_n):
        parts.append(f"the data hold {_examples(new_n)} now, {_examples(old_n)} then")
    if not parts:
        parts.append("the values differ, with the same number of examples and the same file sizes")
    return "; ".join(parts)

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

That pass is skipped when the same files were loaded before and none of them changed
(:func:`cached_fingerprint`): the fingerprint is kept in the cache folder
(``fingerprints.json``), keyed by what was asked for, each file's path, size, inode,
modification and status-change times (as git's index keys its file hashes), and the
data layer's own source. A write to a file changes its status-change time, which no
program can set back; files changed in the last two seconds are hashed every time, as
their times may not yet tell one write from the next. Deleting the file clears it.

Example:
    >>> from vaekit.data import load_dataset
    >>> with recording_reads() as reads:
    ...     ds = load_dataset("digits")
    >>> data_fingerprint(ds, reads)["examples"]
    {'train': 1438, 'test': 359}
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from vaekit._version import __version__
from vaekit.data.core import Dataset

__all__ = [
    "note_read",
    "recording_reads",
    "data_fingerprint",
    "cached_fingerprint",
    "data_change",
]

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
        if split.var is not None:  # codes' variances (data.resample); other data unchanged
            v = split.var.detach().cpu().contiguous()
            h.update(f"variances {v.dtype}\n".encode())
            h.update(v.numpy().data)
    h.update(json.dumps(ds.class_names).encode())
    return {"sha256": h.hexdigest(), "examples": examples, "files": _entries(reads)}


# Files whose times are this recent are never keyed: a second write within the clock's
# resolution could leave every time as it was (git's "racy" files).
RECENT_SECONDS = 2.0
CACHE_FILE = "fingerprints.json"
_CACHE_ENTRIES = 64  # the most recent loads kept; older keys are dropped


@functools.cache  # the sources do not change while a process runs
def _source_digest() -> str:
    """The data layer's code (and vaekit's version, for an install without sources): a
    reader that changes may load the same files differently."""
    h = hashlib.sha256(__version__.encode())
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _stat_key(request: Mapping[str, Any], reads: Sequence[Read]) -> str | None:
    """A digest of what was asked and every file read, by its stat; None when a file is
    missing or was changed too recently to be told apart from its next change."""
    if not reads:
        return None
    h = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode())
    h.update(_source_digest().encode())
    newest_allowed = time.time_ns() - int(RECENT_SECONDS * 1e9)
    for path, files in reads:
        # The read's own path resolved once; a folder's files are named as read (their
        # inode and device say which file each is), not resolved one by one.
        h.update(f"{path.expanduser().resolve()}\n".encode())
        for f in (path,) if files is None else files:
            try:
                st = os.stat(f)
            except OSError:
                return None
            if max(st.st_mtime_ns, st.st_ctime_ns) > newest_allowed:
                return None
            fields = (st.st_size, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns)
            h.update(f"{f}\0{fields}\n".encode())
    return h.hexdigest()


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, unreadable or torn: the cache is only a shortcut
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, entries: dict[str, Any]) -> None:
    """Atomically (a temporary file, then a rename): processes loading data at once
    (DDP ranks, parallel tests) each leave a whole file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f)
        os.replace(tmp, path)
    except OSError:
        return  # a read-only cache folder costs the hash next time, nothing else


def cached_fingerprint(
    ds: Dataset, reads: Sequence[Read], request: Mapping[str, Any], cache: Path | None
) -> dict[str, Any]:
    """:func:`data_fingerprint`, taken from ``cache/fingerprints.json`` when ``request``
    (what was asked for: the dataset's name and options) read the same unchanged files
    before; otherwise computed and remembered. ``cache`` None: always computed.

    The cached value is used only if it counts the same examples per split as ``ds``.
    """
    key = None if cache is None else _stat_key(request, reads)
    if key is None or cache is None:
        return data_fingerprint(ds, reads)
    path = cache / CACHE_FILE
    entries = _read_cache(path)
    counts = {n: len(s) for n in ("train", "valid", "test") if (s := getattr(ds, n)) is not None}
    known = entries.get(key)
    if isinstance(known, dict) and known.get("examples") == counts and known.get("sha256"):
        return known
    fingerprint = data_fingerprint(ds, reads)
    entries.pop(key, None)
    entries[key] = fingerprint  # dicts keep their order: the newest last
    _write_cache(path, dict(list(entries.items())[-_CACHE_ENTRIES:]))
    return fingerprint


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

"""Where the model zoo is and how a model of it is read: the manifest, the SHA-256 check of
every file, and the model's checked copy in the cache that a ``zoo:NAME`` RUN loads
(:func:`zoo_run`). Below the run directory (:mod:`vaekit.rundir` resolves ``zoo:NAME``
here); adding, re-measuring and the tables are :mod:`vaekit.zoo`'s, above it."""

from __future__ import annotations

import difflib
import gzip
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vaekit.data.core import cache_dir
from vaekit.errors import UsageError
from vaekit.storage import RunError, atomic_write, file_sha256, write_json

ZOO_PREFIX = "zoo:"
ZOO_ENV = "VAEKIT_ZOO"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_EMPTY_MANIFEST: dict[str, Any] = {"format": MANIFEST_FORMAT, "models": []}


class ZooError(RunError):
    """The zoo, or a model in it, that cannot be used as asked; the message says what to do."""


# -- where the zoo is ---------------------------------------------------------------------


def _checkout_zoo() -> tuple[Path, Path]:
    """``zoo/`` beside the checkout this package runs from, and the package's folder."""
    package = Path(__file__).resolve().parent
    return package.parents[1] / "zoo", package


def zoo_dir() -> Path:
    """The zoo's folder: ``$VAEKIT_ZOO``, else ``zoo/`` beside the checkout vaekit runs from
    (``src/vaekit/../../zoo`` of a source or editable install). A ZooError names both places
    when neither holds a ``manifest.json`` (a wheel install carries no zoo)."""
    value = os.environ.get(ZOO_ENV)
    if value:
        path = Path(value).expanduser()
        if not (path / MANIFEST).is_file():
            raise ZooError(
                f"${ZOO_ENV}={value} holds no {MANIFEST}: point it at the zoo/ folder of a "
                "vaekit checkout (or unset it to use the checkout vaekit runs from)"
            )
        return path
    path, package = _checkout_zoo()
    if (path / MANIFEST).is_file():
        return path
    raise ZooError(
        f"no model zoo found: ${ZOO_ENV} is not set and there is no {path / MANIFEST} beside "
        f"this vaekit ({package}; a wheel install does not carry the zoo). Clone the "
        f"repository and set {ZOO_ENV}=CHECKOUT/zoo, or install vaekit from the checkout "
        "(pip install -e CHECKOUT)"
    )


def cache_root() -> Path:
    """Where zoo models are copied to be loaded, and where their outputs go:
    ``$VAEKIT_CACHE_DIR/zoo`` (default ``~/.cache/vaekit/zoo``)."""
    return cache_dir() / "zoo"


# -- the manifest -------------------------------------------------------------------------


def read_manifest(root: Path | None = None) -> dict[str, Any]:
    """``zoo/manifest.json``: ``{"format": 1, "models": [entry, ...]}``.

    An entry: ``name``, ``config`` (the bundled config that trained it), ``description``,
    ``files`` (``path``, ``sha256``, ``bytes``, ``role``: weights, run or result), ``data``
    (``name`` and ``fingerprint`` as model.json records them), ``figure`` (``nll``,
    ``nll_se``, ``elbo``, ``elbo_se``, ``k``, ``split``, ``n``, ``epoch``, ``weights``,
    ``stage``, ``bits_per_dim`` for images), ``quick`` (the figure at :data:`QUICK`),
    ``published`` (the literature's figures and citations for the same model), ``train_command``,
    ``evaluate_command``, ``evaluation`` (``seconds``, ``threads``) and ``packaged``
    (vaekit's version and commit).
    """
    root = zoo_dir() if root is None else root
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ZooError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ZooError(f"{path}: not valid JSON ({e}); restore it from git") from None
    if not (isinstance(data, dict) and isinstance(data.get("models"), list)):
        raise ZooError(f"{path}: expected an object with a list of models; restore it from git")
    for i, entry in enumerate(data["models"]):
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
            raise ZooError(f"{path}: models[{i}] has no name; restore the file from git")
    return data


def _write_manifest(root: Path, data: dict[str, Any]) -> None:
    data["models"] = sorted(data["models"], key=lambda e: e["name"])
    write_json(root / MANIFEST, data)


def find_entry(name: str, manifest: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """The manifest's entry ``name``; an unknown name is a UsageError with the closest ones
    (``root``: the zoo's folder, for the message)."""
    names = [e["name"] for e in manifest["models"]]
    for entry in manifest["models"]:
        if entry["name"] == name:
            return dict(entry)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(f'zoo:{c}' for c in close)}?" if close else ""
    there = ", ".join(names) if names else "none yet"
    raise UsageError(
        f"zoo:{name} is not in the zoo ({(root or zoo_dir()) / MANIFEST}){hint} Its models: {there} "
        "(`vaekit zoo list`)"
    )


# -- loading ------------------------------------------------------------------------------


def _verified(root: Path, name: str, item: dict[str, Any]) -> Path:
    """The zoo's file ``item`` of model ``name``, whose SHA-256 is the manifest's."""
    rel = Path(str(item.get("path", "")))
    if not _NAME.match(name) or rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ZooError(
            f"{root / MANIFEST}: zoo:{name} lists the file {str(rel)!r}, which is not a file of "
            "its folder; restore the manifest from git"
        )
    if not isinstance(item.get("sha256"), str):
        raise ZooError(f"{root / MANIFEST}: {rel} of zoo:{name} has no sha256; restore it from git")
    path = root / name / rel
    restore = (
        f"restore it from git (`git checkout -- {path}`, or `git lfs pull` where the weights "
        "are kept in LFS); vaekit does not load it"
    )
    if not path.is_file():
        raise ZooError(f"zoo:{name}: {path} is missing; {restore}")
    digest = file_sha256(path)
    if digest != item["sha256"]:
        raise ZooError(
            f"zoo:{name}: {path} has SHA-256 {digest[:16]}..., not the {item['sha256'][:16]}... "
            f"that {root / MANIFEST} records: the file was changed or is damaged; {restore}"
        )
    return path


def materialize(
    name: str, root: Path | None = None, owned: Iterable[str] = ()
) -> tuple[Path, dict[str, Any]]:
    """The run directory of zoo model ``name`` in the cache (:func:`cache_root`), and its
    manifest entry.

    Every file of the entry is checked against its SHA-256 first (a ZooError says to
    restore a changed one from git); the run's files are copied when the cache's copy
    differs, and the zoo's evaluation only when the cache has none of that name (the
    cache's own results, from ``vaekit evaluate zoo:NAME``, are never replaced). Files of
    the run that the entry does not list (weights of an older version of the entry) are
    removed, so that the cache holds exactly the zoo's model.
    """
    root = zoo_dir() if root is None else root
    entry = find_entry(name, read_manifest(root), root)
    dest = cache_root() / name
    listed = {(item.get("unpacked") or item)["path"] for item in entry["files"]}
    for item in entry["files"]:
        source = _verified(root, name, item)
        unpacked = item.get("unpacked")
        if unpacked is not None and f"{unpacked.get('path')}.gz" != item["path"]:
            raise ZooError(
                f"{root / MANIFEST}: {item['path']} of zoo:{name} unpacks to "
                f"{unpacked.get('path')!r}, not its own name; restore the manifest from git"
            )
        target = dest / (unpacked or item)["path"]
        if target.is_file() and (
            item.get("role") == "result" or file_sha256(target) == (unpacked or item)["sha256"]
        ):
            continue
        if unpacked is None:
            with atomic_write(target, "wb") as f, open(source, "rb") as s:
                shutil.copyfileobj(s, f)
            continue
        data = gzip.decompress(source.read_bytes())
        if hashlib.sha256(data).hexdigest() != unpacked["sha256"]:
            raise ZooError(
                f"zoo:{name}: {source} unpacks to other bytes than {root / MANIFEST} records; "
                "restore it from git"
            )
        with atomic_write(target, "wb") as f:
            f.write(data)
    if not any(p.startswith("prior/") for p in listed) and (dest / "prior").is_dir():
        shutil.rmtree(dest / "prior")  # an older entry's second stage: not this model's
    for folder in (dest, dest / "prior"):
        for entry_name in owned:
            stale = folder / entry_name
            rel = stale.relative_to(dest).as_posix()
            if stale.is_file() and rel not in listed and entry_name.endswith(".safetensors"):
                stale.unlink()
    return dest, entry


def zoo_run(
    name: str,
    weights: str = "last",
    stage: str = "auto",
    root: Path | None = None,
    owned: Iterable[str] = (),
) -> tuple[Path, str]:
    """Where :func:`vaekit.load` finds ``zoo:NAME`` (its checked copy in the cache) and which
    of its weights to load.

    A zoo model ships one set of weights, those that give its figure: ``weights="last"``
    (the default) loads them whichever they were; ``"best"`` is refused for a model that
    ships its last ones. The first stage of a model with a prior stage ships the weights
    its prior was fitted to (its last). ``root``: the zoo's folder (default :func:`zoo_dir`).
    """
    path, entry = materialize(name, root, owned)
    figure = entry.get("figure") or {}
    shipped = figure.get("weights", "last")
    epoch = figure.get("epoch")
    if figure.get("stage") == "prior" and stage == "model":
        shipped, epoch = "last", entry.get("first_stage_epoch")
    if weights == "best" and shipped != "best":
        raise ZooError(
            f"zoo:{name} ships one set of weights, the last of its run (epoch {epoch}); "
            "drop --weights best (Python: weights='last')"
        )
    if weights not in ("last", "best"):
        raise RunError(f"weights must be 'last' or 'best', got {weights!r}")
    return path, shipped

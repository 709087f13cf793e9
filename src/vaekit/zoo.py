"""The model zoo: trained runs shipped in the repository, loaded by name as ``zoo:NAME``.

Layout::

    zoo/manifest.json          one entry per model (:func:`read_manifest`): its files and
                               their SHA-256, the data fingerprint, the figure and the
                               commands that trained and measured it
    zoo/NAME/                  a run directory without checkpoints: config.json,
                               model.json, metrics.jsonl.gz, the weights that give the figure
                               (model.safetensors or best.safetensors), the evaluation
                               that measured it; RUN/prior/ likewise for a second stage

Where the zoo is (:func:`zoo_dir`): ``$VAEKIT_ZOO``, else ``zoo/`` beside the checkout
this vaekit runs from (a source or editable install). A wheel does not carry it.

``vaekit.load("zoo:NAME")`` and every command that takes a RUN verify the SHA-256 of each
of the entry's files (a changed file is refused), copy them into a run directory in the
cache (``$VAEKIT_CACHE_DIR/zoo/NAME``, default ``~/.cache/vaekit/zoo/NAME``) and load
that: every output a command writes beside the run goes there, never into the zoo, whose
folder is read-only to vaekit (:data:`vaekit.rundir.READ_ONLY_MARK`).

Example:
    >>> run = vaekit.load("zoo:bmnist_vamp")            # doctest: +SKIP
    >>> run.weights, run.weights_epoch                  # doctest: +SKIP
    ('best', 330)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from safetensors import safe_open
from safetensors.torch import save

import vaekit
from vaekit.config import bundled_configs, config_to_dict, load_config
from vaekit.errors import UsageError
from vaekit.evaluate import evaluate_run
from vaekit.report import matching_references
from vaekit.rundir import (
    METRICS_FILE,
    READ_ONLY_MARK,
    WEIGHTS_SHA256,
    ZOO_PREFIX,
    Run,
    atomic_write,
    eval_file_name,
    json_text,
    model_label,
    part_labels,
    read_metrics,
    read_run_config,
    read_weights_epoch,
    saved_evaluation,
    weights_path,
    write_json,
)
from vaekit.stages import STAGE_FILE, has_prior_stage, prior_stage_dir
from vaekit.zoo_store import (
    _EMPTY_MANIFEST,
    _NAME,
    MANIFEST,
    ZOO_ENV,
    ZooError,
    _write_manifest,
    cache_root,
    find_entry,
    materialize,
    read_manifest,
    zoo_dir,
    zoo_run,
)

__all__ = [
    "ZOO_ENV",
    "ZOO_PREFIX",
    "MANIFEST",
    "QUICK",
    "ZooError",
    "zoo_dir",
    "cache_root",
    "read_manifest",
    "find_entry",
    "materialize",
    "zoo_run",
    "add_run",
    "check_models",
    "list_text",
    "table_text",
    "update_tables",
]

# The quick re-measurement `vaekit zoo check --quick` (and CI) makes: a seeded 1,000 test
# examples at k = 100, compared with the quick figure `vaekit zoo add` stored (like for
# like: a k = 100 bound is looser than the k = 5000 one, so it is never compared with it).
QUICK: dict[str, int] = {"k": 100, "limit": 1000, "seed": 0}
# A re-measurement passes within max(3 standard errors, this many nats) of the manifest.
TOLERANCE = 0.05
# The zoo lives in git: `vaekit zoo add` warns when it grows past this many bytes (and a
# test fails). The twelve models of the results tables hold 59.0 MiB (61.9 MB) of float32
# weights by their configs (bmnist_planar_k80 alone 13.7 MiB), hence a little over 60 MB.
SIZE_BUDGET = 64 * 2**20
_MARK_TEXT = (
    "vaekit never writes in this folder: it is the model zoo (zoo/manifest.json). Outputs of "
    "zoo:NAME go to the cache ($VAEKIT_CACHE_DIR/zoo/NAME, default ~/.cache/vaekit/zoo/NAME) "
    "or where --out says; only `vaekit zoo add` adds to it.\n"
)


# -- adding -------------------------------------------------------------------------------


def _commit() -> str | None:
    """The git commit of the checkout vaekit runs from, ``-dirty`` when its package code
    differs from it (None outside a checkout)."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=package, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    return commit + ("-dirty" if git("status", "--porcelain", "--", ".") else "")


def _float32_bytes(path: Path) -> bytes:
    """A weights file's bytes, with every floating tensor stored as float32 (the zoo keeps
    full precision; a file saved in another float type is converted, its metadata kept)."""

    raw = path.read_bytes()
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        names = list(f.keys())
        tensors = {k: f.get_tensor(k) for k in names}
    if all(not t.is_floating_point() or t.dtype == torch.float32 for t in tensors.values()):
        return raw

    converted = {
        k: (t.float() if t.is_floating_point() else t).contiguous() for k, t in tensors.items()
    }
    data = save(converted, metadata={k: v for k, v in meta.items() if k != WEIGHTS_SHA256})
    digest = hashlib.sha256(memoryview(data)[8 + int.from_bytes(data[:8], "little") :])
    return bytes(save(converted, metadata={**meta, WEIGHTS_SHA256: digest.hexdigest()}))


def _figure(result: dict[str, Any], stage: str) -> dict[str, Any]:
    keys = ("nll", "nll_se", "elbo", "elbo_se", "bits_per_dim", "bits_per_dim_se")
    figure = {k: result[k] for k in keys if result.get(k) is not None}
    figure |= {
        "k": result.get("k"),
        "split": result.get("split"),
        "n": result.get("n"),
        "epoch": result.get("epoch"),
        "weights": result.get("weights", "last"),
        "stage": stage,
    }
    if result.get("nll_bound"):
        figure["nll_bound"] = True
    return figure


def _published(config: Any) -> list[dict[str, Any]]:
    """The literature's figures for the same model (vaekit/references.yaml, as ``vaekit
    report`` marks them), the most specific only: those pinning the most settings that
    differ from the defaults (a VampPrior VAE matches "a VAE with a Gaussian posterior"
    too, which pins none). Each value with its source and citation."""

    defaults = config_to_dict(load_config(None, []))

    def lookup(data: Any, dotted: str) -> Any:
        for key in dotted.split("."):
            data = data.get(key) if isinstance(data, dict) else None
        return data

    def pinned(ref: Any) -> int:
        return sum(lookup(defaults, k) != v for k, v in ref.closest.items())

    same = [ref for ref, same in matching_references(config) if same and ref.metric == "nll"]
    most = max((pinned(ref) for ref in same), default=0)
    return [
        {
            "value": ref.value,
            "approx": ref.approx,
            "source": ref.source,
            "model": ref.model,
            "citation": ref.citation,
        }
        for ref in same
        if pinned(ref) == most
    ]


def _train_command(name: str, config_name: str | None, stage_dir: Path | None) -> str:
    base = f"zoo/{name}/config.json"
    command = f"vaekit train --config {base} --out runs/{name}"
    if stage_dir is not None:
        cfg = json.loads((stage_dir / "config.json").read_text())
        prior = cfg.get("model", {}).get("prior") or {}
        if isinstance(prior, str):
            prior = {"name": prior}
        sets = [f"--set model.prior={prior.get('name')}"]
        sets += [
            "--set " + shlex.quote(f"model.prior.{k}={json.dumps(v)}")
            for k, v in prior.items()
            if k != "name"
        ]
        epochs = cfg.get("train", {}).get("epochs")
        command += f" && vaekit train --resume runs/{name} --stage prior --epochs {epochs} " + (
            " ".join(sets)
        )
    return command.strip()


def _evaluation_file(
    figure_dir: Path, weights: str, epoch: int | None, given: str | None
) -> tuple[Path, dict[str, Any]]:
    """The evaluation that gives the figure: ``given``, else the run's most thorough saved
    one of these weights; it must be of the whole test split and of these weights' epoch."""
    if given is not None:
        path = Path(given)
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ZooError(f"--eval {given}: cannot read it as JSON ({e})") from None
    else:
        result = saved_evaluation(figure_dir, weights, epoch) or {}
        if not result:
            raise ZooError(
                f"{figure_dir} has no saved evaluation of its {weights} weights (epoch {epoch}) "
                f"on the whole test split: run `vaekit evaluate {figure_dir} --k 5000 --weights "
                f"{weights}` first, or name one with --eval"
            )
        prefix = "eval-best" if weights == "best" else "eval"
        path = next(
            p
            for p in sorted(figure_dir.glob(prefix + "*.json"))
            if json.loads(p.read_text()) == result
        )
    problems = []
    if not isinstance(result, dict) or result.get("nll") is None:
        problems.append("it holds no NLL")
    else:
        if result.get("split") != "test":
            problems.append(f"it is of the {result.get('split')} split, not test")
        if result.get("subset_of"):
            problems.append(f"it is of {result.get('n')} of the {result['subset_of']} examples")
        if result.get("weights", "last") != weights:
            problems.append(f"it is of the {result.get('weights', 'last')} weights, not {weights}")
        if result.get("epoch") != epoch:
            problems.append(f"it is of epoch {result.get('epoch')}, the weights of epoch {epoch}")
    if problems:
        raise ZooError(
            f"{path} cannot give the zoo's figure: {'; '.join(problems)}. A zoo figure is the "
            "whole test split evaluated with the weights shipped"
        )
    return path, result


def _run_files(run_dir: Path, weights_file: Path, eval_file: Path | None) -> list[Path]:
    files = [run_dir / "config.json", run_dir / "model.json"]
    files += [run_dir / f for f in (METRICS_FILE, "stage.json") if (run_dir / f).is_file()]
    files.append(weights_file)
    if eval_file is not None:
        files.append(eval_file)
    return files


def add_run(
    run_dir: str | os.PathLike[str],
    name: str,
    *,
    weights: str = "best",
    eval_file: str | None = None,
    force: bool = False,
    config_name: str | None = None,
    description: str | None = None,
    threads: int | None = 1,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Package a finished, evaluated run into ``zoo/NAME`` and its manifest entry.

    The figure is the run's saved evaluation of the whole test split with ``weights``
    (``eval_file`` names one; for a run with a prior stage, that stage's, whose first
    stage ships the weights the prior was fitted to). The files are copied (weights as
    float32), the entry is loaded back through its checksums and evaluated at
    :data:`QUICK` to store the quick figure that ``vaekit zoo check --quick`` compares
    with. An existing entry is replaced only with ``force``.
    """

    root = zoo_dir()
    run_dir = Path(run_dir)
    if not _NAME.match(name):
        raise UsageError(
            f"zoo name {name!r}: use lower-case letters, digits, '_', '-' and '.' "
            "(e.g. bmnist_vamp)"
        )
    if weights not in ("last", "best"):
        raise UsageError(f"weights must be last or best, got {weights!r}")
    manifest = read_manifest(root)
    exists = any(e["name"] == name for e in manifest["models"]) or (root / name).exists()
    if exists and not force:
        raise ZooError(
            f"zoo:{name} is in the zoo already ({root / name}); pass --force to replace it"
        )
    config = read_run_config(run_dir)
    staged = has_prior_stage(run_dir)
    figure_dir = prior_stage_dir(run_dir) if staged else run_dir
    wfile = weights_path(figure_dir, weights)
    epoch = read_weights_epoch(wfile)
    eval_path, result = _evaluation_file(figure_dir, weights, epoch, eval_file)
    copies: list[tuple[Path, str, str]] = []  # (source, path in the zoo entry, role)
    first_epoch = None
    if staged:
        stage_info = json.loads((figure_dir / STAGE_FILE).read_text())
        parent_file = run_dir / str(stage_info.get("parent_weights", "model.safetensors"))
        first_epoch = read_weights_epoch(parent_file)
        if first_epoch != stage_info.get("parent_epoch"):
            raise ZooError(
                f"{figure_dir} was fitted to the codes of epoch {stage_info.get('parent_epoch')} "
                f"of {run_dir}, whose {parent_file.name} is of epoch {first_epoch} now: fit the "
                "prior stage again before packaging it"
            )
        for f in _run_files(run_dir, parent_file, None):
            copies.append((f, f.name, "weights" if f.suffix == ".safetensors" else "run"))
    for f in _run_files(figure_dir, wfile, eval_path):
        role = "weights" if f == wfile else "result" if f == eval_path else "run"
        copies.append((f, f"prior/{f.name}" if staged else f.name, role))
    if not staged:
        copies = [c for c in copies if c[0].name != STAGE_FILE]

    target = root / name
    staging = root / f".{name}.adding"
    shutil.rmtree(staging, ignore_errors=True)
    files = []
    for source, rel, role in copies:
        data = _float32_bytes(source) if role == "weights" else source.read_bytes()
        item: dict[str, Any] = {}
        if rel.endswith(METRICS_FILE):
            # A long run's history is hundreds of KB of JSON lines: kept gzipped (the zoo
            # lives in git), unpacked into the cache. mtime=0: the same bytes every time.
            item["unpacked"] = {"path": rel, "sha256": hashlib.sha256(data).hexdigest()}
            data, rel = gzip.compress(data, mtime=0), rel + ".gz"
        with atomic_write(staging / rel, "wb") as out:
            out.write(data)
        files.append(
            {
                "path": rel,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "role": role,
            }
            | item
        )
    info = json.loads((run_dir / "model.json").read_text())
    data_info = info.get("data") or {}
    if config_name is None:
        config_name = name if name in bundled_configs() else None

    seconds = result.get("seconds") or {}
    entry: dict[str, Any] = {
        "name": name,
        "config": config_name,
        "description": description
        or f"{model_label(config)}; {_objective(config)}"
        + ("; a learned prior fitted to its codes" if staged else ""),
        "files": files,
        "data": {"name": data_info.get("name"), "fingerprint": data_info.get("fingerprint")},
        "figure": _figure(result, "prior" if staged else "model"),
        "published": _published(config),
        "train_command": _train_command(name, config_name, figure_dir if staged else None),
        "evaluate_command": (
            f"vaekit evaluate zoo:{name} --k {result.get('k')} --weights {weights}"
            + (f" --threads {result['threads']}" if result.get("threads") else "")
        ),
        "evaluation": {
            "seconds": round(sum(float(v) for v in seconds.values()), 1) if seconds else None,
            "threads": result.get("threads"),
        },
        "packaged": {
            "vaekit": vaekit.__version__,
            "commit": _commit(),
            "from": str(run_dir.resolve()),
        },
    }
    entry["training"] = _training(run_dir)
    if staged:
        entry["first_stage_epoch"] = first_epoch
        entry["training"]["prior_stage"] = _training(figure_dir)
    # Into place, then the entry: the quick figure is measured on the files as the zoo holds them.
    previous = [e for e in manifest["models"] if e["name"] == name]
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    manifest["models"] = [e for e in manifest["models"] if e["name"] != name] + [entry]
    (root / READ_ONLY_MARK).write_text(_MARK_TEXT)
    _write_manifest(root, manifest)
    try:
        quick = _measure(name, QUICK["k"], QUICK["limit"], entry, threads)
    except BaseException:
        # Leave the zoo as it was: the entry (and its folder) are not added.
        manifest["models"] = [e for e in manifest["models"] if e["name"] != name] + previous
        _write_manifest(root, manifest)
        if not previous:
            shutil.rmtree(target, ignore_errors=True)
        raise
    entry["quick"] = {**QUICK} | {
        k: quick[k] for k in ("nll", "nll_se", "elbo", "elbo_se") if quick.get(k) is not None
    }
    entry["quick"]["seconds"] = round(quick["_wall"], 1)
    manifest["models"] = [e for e in manifest["models"] if e["name"] != name] + [entry]
    _write_manifest(root, manifest)
    if log is not None:
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        print(f"added zoo:{name} ({target}); the zoo holds {size / 2**20:.1f} MB", file=log)
        if size > SIZE_BUDGET:
            print(
                f"warning: the zoo is over its budget of {SIZE_BUDGET / 2**20:.0f} MB (it lives "
                "in git)",
                file=log,
            )
    return entry


def _training(run_dir: Path) -> dict[str, Any]:
    """How long a run trained: its epochs, best epoch and hours of epoch time."""

    rows = read_metrics(run_dir, warn=False)
    hours = sum(float(r.get("train_seconds", 0.0)) for r in rows) / 3600
    last = rows[-1] if rows else {}
    return {
        "epochs": last.get("epoch"),
        "best_epoch": last.get("best_epoch"),
        "hours": round(hours, 2),
    }


def _objective(config: Any) -> str:

    return part_labels(config)["objective"]


# -- checking -----------------------------------------------------------------------------


def _measure(
    name: str,
    k: int,
    limit: int,
    entry: dict[str, Any],
    threads: int | None,
) -> dict[str, Any]:
    """Evaluate zoo model ``name`` on the test split with the figure's weights and stage
    (the NLL and ELBO; no latent classifier) and save the result in its cache folder."""

    figure = entry.get("figure") or {}
    run = Run.from_dir(
        ZOO_PREFIX + name,
        weights=figure.get("weights", "last"),
        stage=figure.get("stage", "auto") if figure.get("stage") == "prior" else "model",
    )
    start = time.perf_counter()
    result = evaluate_run(
        run,
        k=k,
        split="test",
        limit=limit,
        seed=QUICK["seed"],
        threads=threads,
        classifier=False,
        progress=False,
    )
    write_json(run.dir / eval_file_name(run, split="test", k=k, limit=limit), result)
    result["_wall"] = time.perf_counter() - start
    return result


def _compare(stored: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, float, float, bool]]:
    """(key, stored, measured, within the allowance) for the NLL and the ELBO."""
    rows = []
    for key in ("nll", "elbo"):
        want, got = stored.get(key), new.get(key)
        if want is None:
            continue
        se = stored.get(f"{key}_se") or 0.0
        allowed = max(3 * float(se), TOLERANCE)
        ok = got is not None and math.isfinite(got) and abs(got - want) <= allowed
        rows.append((key, float(want), float("nan") if got is None else float(got), ok))
    return rows


def check_models(
    names: Sequence[str] = (),
    *,
    quick: bool = False,
    k: int | None = None,
    threads: int | None = 1,
    log: TextIO | None = None,
) -> bool:
    """Re-measure zoo models (all when ``names`` is empty) on the test split and compare
    with the manifest: the figure at its own k, or with ``quick`` the quick figure
    (:data:`QUICK`). Prints both numbers per model; True when every one is within
    max(3 standard errors, :data:`TOLERANCE`). ``k`` other than the stored figure's
    measures without comparing (a bound at another k is another number)."""
    manifest = read_manifest()
    entries = [find_entry(n, manifest) for n in names] if names else list(manifest["models"])
    if not entries:
        raise UsageError(
            f"the zoo ({zoo_dir()}) holds no models yet; add one with `vaekit zoo add`"
        )
    passed = True
    for entry in entries:
        name = entry["name"]
        stored = entry.get("quick") if quick else entry.get("figure")
        if not stored:
            raise ZooError(
                f"zoo:{name} has no {'quick ' if quick else ''}figure in the manifest; add it "
                "again with `vaekit zoo add RUN NAME --force`"
            )
        run_k = k if k is not None else int(stored["k"])
        limit = int(stored.get("limit", 0)) if quick else 0
        result = _measure(name, run_k, limit, entry, threads)
        label = f"k={run_k}" + (f", {limit} test examples" if limit else ", test split")
        if run_k != int(stored["k"]):
            print(
                f"zoo:{name} ({label}, {result['_wall']:.0f} s): NLL {result.get('nll')}; not "
                f"compared: the manifest's figure is at k={stored['k']}",
                file=log,
            )
            continue
        rows = _compare(stored, result)
        ok = all(r[3] for r in rows)
        passed &= ok
        parts = [
            f"{key.upper()} {got:.2f} (manifest {want:.2f}, {got - want:+.2f})"
            for key, want, got, _ in rows
        ]
        print(
            f"{'ok' if ok else 'MISMATCH'} zoo:{name} ({label}, {result['_wall']:.0f} s): "
            + "; ".join(parts),
            file=log,
        )
    return passed


# -- tables -------------------------------------------------------------------------------


def _num(v: Any, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}".replace("-", "−")


def list_text(manifest: dict[str, Any] | None = None) -> str:
    """The zoo's models, one line each: name, data, NLL with its settings."""
    manifest = read_manifest() if manifest is None else manifest
    if not manifest["models"]:
        return f"the zoo ({zoo_dir()}) holds no models yet\n"
    rows = [("name", "data", "NLL (nats)", "k", "weights", "eval time")]
    for e in manifest["models"]:
        f = e.get("figure") or {}
        ev = e.get("evaluation") or {}
        seconds = ev.get("seconds")
        rows.append(
            (
                f"zoo:{e['name']}",
                str((e.get("data") or {}).get("name")),
                f"{_num(f.get('nll'))} ± {_num(f.get('nll_se'))}",
                str(f.get("k")),
                f"{f.get('weights')}@{f.get('epoch')}",
                "—" if seconds is None else f"{seconds:.0f} s / {ev.get('threads')} thr",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows
    )


def table_text(table: str, manifest: dict[str, Any]) -> str:
    """The Markdown table ``table`` of the manifest: ``all``, or the models of one dataset
    (its data name, e.g. ``binarized-mnist``)."""
    entries = [
        e
        for e in manifest["models"]
        if table == "all" or (e.get("data") or {}).get("name") == table
    ]
    if not entries:
        return "(no models of this table in the zoo yet)\n"
    bits = any((e.get("figure") or {}).get("bits_per_dim") is not None for e in entries)
    head = ["model", "load", "published", "NLL (nats)", "ELBO"]
    head += ["bits/dim"] if bits else []
    head += ["k", "weights"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        f = e.get("figure") or {}
        published = "; ".join(
            f"{'~' if p.get('approx') else ''}{p['value']} ({p['source']})"
            for p in e.get("published") or []
        )
        nll = f"{_num(f.get('nll'))} ± {_num(f.get('nll_se'))}"
        if f.get("nll_bound"):
            nll += " (a bound)"
        row = [
            str(e.get("description", "")).replace("|", "\\|"),
            f"`zoo:{e['name']}`",
            published or "—",
            nll,
            _num(f.get("elbo")),
        ]
        if bits:
            row.append(_num(f.get("bits_per_dim"), 3))
        row += [str(f.get("k")), f"{f.get('weights')}, epoch {f.get('epoch')}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


_BLOCK = re.compile(
    r"(<!-- zoo-table:(?P<name>[A-Za-z0-9_.-]+):begin -->\n)(?P<body>.*?)"
    r"(<!-- zoo-table:(?P=name):end -->)",
    re.S,
)


def _markdown_files(root: Path) -> Iterable[Path]:
    if (root / "README.md").is_file():
        yield root / "README.md"
    if (root / "docs").is_dir():
        yield from sorted((root / "docs").rglob("*.md"))


def update_tables(
    root: Path | None = None, *, check: bool = False, manifest: dict[str, Any] | None = None
) -> list[Path]:
    """Fill every ``<!-- zoo-table:NAME:begin -->`` ... ``<!-- zoo-table:NAME:end -->``
    block of README.md and docs/**/*.md under ``root`` (default: the checkout that holds
    the zoo) with :func:`table_text`; returns the files whose blocks were stale (with
    ``check``, nothing is written)."""
    if root is None:
        root = zoo_dir().resolve().parent
    manifest = read_manifest() if manifest is None else manifest
    stale = []
    for path in _markdown_files(root):
        text = path.read_text()
        if "<!-- zoo-table:" not in text:
            continue
        new = _BLOCK.sub(lambda m: m[1] + table_text(m["name"], manifest) + m[4], text)
        if new != text:
            stale.append(path)
            if not check:
                with atomic_write(path, "w") as f:
                    f.write(new)
    return stale


def new_zoo(root: Path) -> None:
    """An empty zoo at ``root`` (its manifest and read-only mark)."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / MANIFEST).exists():
        (root / MANIFEST).write_text(json_text(_EMPTY_MANIFEST) + "\n")
    (root / READ_ONLY_MARK).write_text(_MARK_TEXT)

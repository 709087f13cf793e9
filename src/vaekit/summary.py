"""One table of many runs: what each one trains, how far it got, and its saved evaluation.

``vaekit summary runs/*`` prints it as Markdown (the way to rebuild the results
tables of docs/results/ from your own runs), CSV or JSON. It reads only what training and
``vaekit evaluate`` wrote; it evaluates nothing.

Example:
    >>> rows = summarize(["runs/bmnist_vamp"])                # doctest: +SKIP
    >>> print(format_rows(rows, "markdown"))                  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaekit.errors import UsageError
from vaekit.rundir import (
    RunError,
    finite_or_none,
    model_label,
    objective_abilities,
    part_labels,
    read_metrics,
    read_run_config,
    read_weights_epoch,
    saved_evaluation,
    weights_path,
)

__all__ = ["COLUMNS", "summarize", "summarize_run", "format_rows"]

# The columns of a row, in order.
COLUMNS = (
    "run",
    "dataset",
    "model",
    "objective",
    "epochs",
    "best_epoch",
    "train_hours",
    "test_bound",
    "weights",
    "k",
    "nll",
    "nll_se",
    "elbo",
    "bits_per_dim",
    "active_units",
)


def summarize_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """One row (see :data:`COLUMNS`) for a run directory.

    The evaluation is the most thorough saved one of the best weights when there is one,
    else of the last weights (:func:`vaekit.rundir.saved_evaluation`); ``test_bound``
    is the bound the run trains on the test split at its best epoch when that epoch scored
    the test split (``train.score_test=epoch``), else at its last epoch; None when each
    epoch scored a subset of it (``train.score_limit``).
    """
    path = Path(run_dir)
    cfg = read_run_config(path)
    rows = read_metrics(path)
    last = rows[-1] if rows else {}
    best_epoch = last.get("best_epoch")
    # By epoch, not position: a damaged metrics line is skipped, so positions can shift.
    at = next((r for r in rows if best_epoch and r.get("epoch") == best_epoch), last)
    if "test" not in at:  # train.score_test=end scores the test split on the last epoch only
        at = last
    test = at.get("test")
    saved = None
    for weights in ("best", "last"):
        try:
            epoch = read_weights_epoch(weights_path(path, weights))
        except RunError:  # no weights yet (killed before its first epoch): no evaluation
            continue
        saved = saved_evaluation(path, weights, epoch)
        if saved is not None:
            break
    dataset = cfg.data.name
    row: dict[str, Any] = {
        "run": path.resolve().name,
        # A file's name, not the absolute path that config.json records.
        "dataset": Path(dataset).name if Path(dataset).is_absolute() else dataset,
        "model": model_label(cfg),
        "objective": part_labels(cfg)["objective"],
        "epochs": last.get("epoch", 0),
        "best_epoch": best_epoch,
        "train_hours": sum(float(r.get("train_seconds", 0.0)) for r in rows) / 3600,
        # None when training scored only a subset of the test split (train.score_limit).
        "test_bound": objective_abilities(cfg).score(test)
        if isinstance(test, dict) and "test" not in (at.get("scored") or {})
        else None,
        "weights": None,
        "k": None,
        "nll": None,
        "nll_se": None,
        "elbo": None,
        "bits_per_dim": None,
        "active_units": None,
    }
    if saved is not None:
        row["weights"] = f"{saved.get('weights', 'last')}@{saved.get('epoch')}"
        for key in ("k", "nll", "nll_se", "elbo", "bits_per_dim", "active_units"):
            row[key] = saved.get(key)
    return row


def summarize(run_dirs: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """A row per run directory, in the order given."""
    return [summarize_run(d) for d in run_dirs]


def _cell(key: str, row: dict[str, Any]) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if key == "nll":
        se = row.get("nll_se")
        return f"{v:.2f} ± {se:.2f}" if isinstance(se, float) else f"{v:.2f}"
    if key == "train_hours":
        return f"{v:.2f}"
    if key == "bits_per_dim":
        return f"{v:.3f}"
    if isinstance(v, float):
        return f"{v:.2f}".replace("-", "−")
    return str(v)


def format_rows(rows: Sequence[dict[str, Any]], fmt: str = "markdown") -> str:
    """The rows as a Markdown table (NLL with its standard error), CSV or JSON."""
    if fmt == "json":
        return json.dumps(finite_or_none(list(rows)), indent=2, allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt != "markdown":
        raise UsageError(f"format must be markdown, csv or json, got {fmt!r}")
    shown = [c for c in COLUMNS if c != "nll_se"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_cell(c, r) for c in shown) + " |" for r in rows]
    return "\n".join(lines) + "\n"

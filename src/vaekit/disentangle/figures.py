"""Figures of disentanglement: latent traversals of several runs side by side, and the
metrics of one run or of several models over seeds. Each function returns a matplotlib
Figure (nothing is shown or saved here; :func:`vaekit.plots.save_figures` saves them).

Example:
    >>> fig = metrics_plot({"VAE": [{"mig": 0.1, "sap": 0.02}, {"mig": 0.15, "sap": 0.03}],
    ...                     "beta-TCVAE": [{"mig": 0.3, "sap": 0.06}]})
    >>> len(fig.axes)
    2
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from vaekit.data import Split
from vaekit.disentangle.metrics import SUMMARY
from vaekit.evaluate import kl_per_dim, latent_means
from vaekit.images import image_grid, to_images
from vaekit.rundir import Run

__all__ = [
    "traversals_side_by_side",
    "metrics_plot",
    "run_metrics_figure",
    "metrics_table_html",
    "informative_dims",
]


def informative_dims(
    run: Run, split: Split, top: int | None = None
) -> tuple[list[int], list[float]]:
    """Latent dimensions by their KL to the prior over ``split`` (most informative first)
    and those KLs; without a per-dimension KL (a flow), by the variance of the means."""
    kl, _ = kl_per_dim(run.model, split)
    if kl is not None:
        values = [float(v) for v in kl]
    else:
        labels = split.y if run.model.conditional else None
        values = [float(v) for v in latent_means(run.model, split.x, labels).var(0)]
    order = sorted(range(len(values)), key=lambda d: -values[d])
    order = order[:top] if top else order
    return order, [values[d] for d in order]


def traversals_side_by_side(
    runs: Sequence[Run],
    labels: Sequence[str] | None = None,
    split: Split | None = None,
    *,
    rows: int = 6,
    n: int = 7,
    span: float = 2.0,
    example: int = 0,
) -> Figure:
    """One panel per run: its ``rows`` most informative latent dimensions (by KL over
    ``split``), each varied from ``-span`` to ``span`` around the posterior mean of the
    same example of ``split``, the others held. A disentangled model changes one factor
    of the image per row (position, scale, shape, rotation); an entangled one several.

    ``split`` defaults to the first run's test split (every run must take its examples).
    """
    if not runs:
        raise ValueError("traversals_side_by_side needs at least one run")
    labels = list(labels) if labels is not None else [r.dir.name for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"{len(runs)} runs but {len(labels)} labels")
    for run in runs:
        if not run.info["data"].get("is_image", False):
            raise ValueError(f"{run.dir}: latent traversals need image data")
    if split is None:
        split = runs[0].dataset().test
    pick = split.select(torch.arange(min(len(split), 2000)))
    x = split.x[example : example + 1]
    cols = len(runs)
    fig = Figure(figsize=(cols * (0.55 * n + 0.6) + 0.4, 0.55 * rows + 1.0), layout="constrained")
    axes = fig.subplots(1, cols, squeeze=False)[0]
    values = torch.linspace(-span, span, n)
    for ax, run, label in zip(axes, runs, labels, strict=True):
        dims, kls = informative_dims(run, pick, top=min(rows, run.latent_dim))
        base = run.transform(x)[0].cpu()
        z = base.repeat(len(dims) * n, 1)
        for r, d in enumerate(dims):
            z[r * n : (r + 1) * n, d] = base[d] + values
        imgs = to_images(run.generate(z), run.data_shape)
        grid = image_grid(imgs, ncol=n, pad=1)
        ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        h = imgs.shape[1]
        ax.set_yticks([1 + (h + 1) * i + h / 2 - 0.5 for i in range(len(dims))])
        ax.set_yticklabels(
            [f"z{d} ({k:.1f})" for d, k in zip(dims, kls, strict=True)], fontsize="x-small"
        )
        ax.set_xticks([])
        ax.set_title(label, fontsize="small")
    fig.suptitle(
        f"Latent traversals, {-span:g}..{span:g} around one example's code "
        "(rows: dimensions by KL in nats, most informative first)",
        fontsize="small",
    )
    return fig


def metrics_plot(
    results: Mapping[str, Sequence[Mapping[str, float]]],
    metrics: Sequence[str] | None = None,
    names: Mapping[str, str] | None = None,
) -> Figure:
    """One panel per metric: each model's scores over seeds (points) with their mean and
    one standard deviation (bar). ``results[model]`` is a list of ``{metric: score}``."""
    if not results:
        raise ValueError("metrics_plot needs at least one model")
    keys = list(metrics) if metrics is not None else _metric_keys(results)
    if not keys:
        raise ValueError("metrics_plot: no metric is in the results")
    names = {**SUMMARY, "elbo": "ELBO (nats)", **(names or {})}
    models = list(results)
    ncol = min(len(keys), 3)
    nrow = math.ceil(len(keys) / ncol)
    fig = Figure(figsize=(3.2 * ncol + 0.4, 2.6 * nrow + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax, key in zip(axes, keys, strict=False):
        for i, model in enumerate(models):
            vals = np.array([r[key] for r in results[model] if r.get(key) is not None], float)
            if not len(vals):
                continue
            jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(1)
            ax.plot(i + jitter, vals, "o", color=f"C{i}", alpha=0.6, markersize=4)
            sd = vals.std(ddof=1) if len(vals) > 1 else 0.0
            ax.errorbar(i, vals.mean(), yerr=sd, fmt="_", color="black", markersize=14, capsize=3)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=30, ha="right", fontsize="small")
        ax.set_title(names.get(key, key), fontsize="small")
        if key != "elbo":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(keys) :]:
        fig.delaxes(ax)
    return fig


def _metric_keys(results: Mapping[str, Sequence[Mapping[str, float]]]) -> list[str]:
    seen: list[str] = []
    for rows in results.values():
        for r in rows:
            seen += [k for k in r if k not in seen]
    order = [*SUMMARY, "dci_completeness", "dci_informativeness", "elbo"]
    return [k for k in order if k in seen] + [k for k in seen if k not in order]


def _held_out(r: Mapping[str, Any]) -> str:
    """How many rows trained and tested a metric's predictors (disjoint since they are recorded)."""
    if "test_rows" not in r:
        return ""
    return f"; {r['train_rows']} training / {r['test_rows']} held-out rows"


def _rows(result: Mapping[str, Any]) -> list[tuple[str, float, str]]:
    """(name, score, detail) for each metric of an evaluate_disentanglement result."""
    out = []
    detail = {
        "beta_vae": lambda r: (
            f"train accuracy {r['train_accuracy']:.3f}; chance is 1 / number of factors"
        ),
        "factor_vae": lambda r: (
            f"train accuracy {r['train_accuracy']:.3f}; {r['num_active_dims']} dimensions vote"
        ),
        "mig": lambda r: "per factor " + ", ".join(f"{v:.2f}" for v in r["per_factor"]),
        "sap": lambda r: (
            "per factor " + ", ".join(f"{v:.2f}" for v in r["per_factor"]) + _held_out(r)
        ),
        "dci": lambda r: (
            f"completeness {r['completeness']:.3f}, informativeness (test accuracy) "
            f"{r['informativeness_test']:.3f}" + _held_out(r)
        ),
    }
    for key, name in SUMMARY.items():
        if key in result:
            out.append((name, float(result[key]["score"]), detail[key](result[key])))
    return out


def run_metrics_figure(result: Mapping[str, Any]) -> Figure:
    """One run's scores as horizontal bars on [0, 1], per-factor MIG beside them."""
    rows = _rows(result)
    fig = Figure(figsize=(7.5, 0.45 * len(rows) + 1.0), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    names = [r[0] for r in rows]
    ax.barh(range(len(rows)), [r[1] for r in rows], color=[f"C{i}" for i in range(len(rows))])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(names, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title("Disentanglement scores", fontsize="small")
    for i, r in enumerate(rows):
        ax.text(min(r[1] + 0.02, 0.85), i, f"{r[1]:.2f}", va="center", fontsize="small")
    factors = result.get("factors", {}).get("names") or []
    if "mig" in result and factors:
        per = result["mig"]["per_factor"]
        ax2.bar(range(len(per)), per, color="C2")
        ax2.set_xticks(range(len(per)))
        ax2.set_xticklabels(factors[: len(per)], rotation=30, ha="right", fontsize="small")
        ax2.set_ylim(0, 1)
        ax2.set_title("MIG per factor", fontsize="small")
    else:
        fig.delaxes(ax2)
    return fig


def metrics_table_html(result: Mapping[str, Any]) -> str:
    """An HTML table of one run's scores, with the protocol they were computed with."""
    esc = html.escape
    proto = result.get("protocol", {})
    split = str(result.get("split", "test"))
    where = "every split" if split == "all" else f"the {split} split"
    how = (
        f"{result.get('n', '?')} examples of {esc(where)} "
        f"(posterior means); protocol: {proto.get('beta_vae_train', '?')} / "
        f"{proto.get('beta_vae_eval', '?')} points to train / evaluate each, batches of "
        f"{proto.get('beta_vae_batch', '?')}, {proto.get('bins', '?')} bins, seed {result.get('seed', 0)}"
    )
    body = "".join(
        f"<tr><td>{esc(n)}</td><td>{s:.3f}</td><td class='muted'>{esc(d)}</td></tr>"
        for n, s, d in _rows(result)
    )
    return (
        f"<table><tr><th>metric</th><th>score</th><th>detail</th></tr>{body}</table>"
        f"<p class='muted'>{how}</p>"
    )

"""The figures the trainer logs to its trackers when it ends (``train.trackers``): the
learning curves of its history (also ``vaekit plot --which training_curves``) and a grid
of samples.

A module of its own, below the trainer, so that the trainer draws it without importing
:mod:`vaekit.plots` (which loads runs, samplers and their scores). matplotlib is imported
here at the top: the trainer imports this module only when it has figures to log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from vaekit.errors import UsageError
from vaekit.images import image_grid, to_images

__all__ = ["training_curves", "samples_figure"]


def training_curves(metrics: Sequence[Mapping[str, Any]]) -> Figure:
    """One panel per logged term (loss, recon, kl, ...), one line per split, by epoch.

    ``metrics`` is the list of rows of ``metrics.jsonl`` (``Run.metrics``).
    """
    rows = [r for r in metrics if isinstance(r, Mapping) and "epoch" in r]
    if not rows:
        raise UsageError(
            "training_curves needs at least one metrics row (metrics.jsonl is empty: train the run first)"
        )
    splits = [
        s for s in ("train", "valid", "test") if any(isinstance(r.get(s), Mapping) for r in rows)
    ]
    terms: list[str] = []
    for r in rows:
        for s in splits:
            for key in r.get(s) or {}:
                if key not in terms:
                    terms.append(key)
    ncols = min(len(terms), 4)
    nrows = math.ceil(len(terms) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    styles = {"train": "-", "valid": "--", "test": "-"}
    colours = {"train": "#1f77b4", "valid": "#2ca02c", "test": "#d62728"}
    for ax, term in zip(axes, terms, strict=False):
        for s in splits:
            pts = [
                (r["epoch"], r[s][term])
                for r in rows
                if isinstance(r.get(s), Mapping) and term in r[s] and r[s][term] is not None
            ]
            if pts:
                e, v = zip(*pts, strict=True)
                ax.plot(
                    e,
                    v,
                    styles[s],
                    color=colours[s],
                    label=s,
                    marker="." if len(pts) < 30 else None,
                )
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(terms) :]:
        fig.delaxes(ax)
    return fig


def samples_figure(x: Tensor, shape: tuple[int, ...], ncol: int = 8) -> Figure:
    """Images ``x`` (a batch of the model's samples) as one grid of ``ncol`` columns."""
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.imshow(image_grid(to_images(x, shape), ncol=ncol), cmap="gray")
    ax.set_axis_off()
    return fig

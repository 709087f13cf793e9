"""Every figure of the tutorials: each function takes data (or a Run plus data) and returns a Figure.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through pyplot,
so nothing here touches global state (no backend switch, no open-figure registry):
``fig.savefig("x.png")`` renders with Agg, and figures are freed like any object.

Figures:

- :func:`latent_scatter`: the test set in latent space coloured by label (a PCA plane or
  a chosen pair of dimensions beyond two);
- :func:`latent_histograms`: per-class, per-dimension histograms with the fitted normal
  (tutorial 003);
- :func:`manifold_grid`: decoded 15x15 grid through the inverse normal CDF (tutorial 001);
- :func:`latent_grid`: decoded uniform grid over a chosen range (tutorial 003);
- :func:`reconstructions`, :func:`prior_samples`, :func:`interpolation`;
- :func:`training_curves`: every logged term of ``metrics.jsonl``, train and test;
- :func:`latent_traversal`: one dimension at a time (beta-VAE);
- :func:`class_grid`: classes by samples for a conditional VAE;
- :func:`compare_runs`: the autoencoder-versus-VAE comparison side by side;
- with several stochastic layers or a tempered prior (:mod:`vaekit.hierarchy`): each
  layer's KL over training, samples at temperatures below 1, reconstructions that redraw
  the layers below a chosen one.

:data:`FIGURES` is their catalogue: one :class:`FigureSpec` per figure (name, caption,
how it is drawn, what it needs); :func:`run_figures` builds every figure that applies to
a run (what ``vaekit plot`` and the report use).

Example:
    >>> import vaekit
    >>> run = vaekit.load("runs/demo")                     # doctest: +SKIP
    >>> fig = prior_samples(run, n=64)                     # doctest: +SKIP
    >>> fig.savefig("samples.png")                         # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, hsv_to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from vaekit.data import Dataset, Split
from vaekit.distributions.codes import CodeHead, shown_head
from vaekit.distributions.hierarchical import HierarchicalPrior
from vaekit.errors import UsageError
from vaekit.evaluate import latent_means
from vaekit.hierarchy import layer_sizes
from vaekit.images import image_grid, reconstruction_grid, to_images
from vaekit.latent_samplers import SamplerError, saved_samplers
from vaekit.ood import comparison_figure, saved_comparison
from vaekit.parts import ObjectiveAbilities
from vaekit.quality import saved_scores
from vaekit.rundir import Run, atomic_write, check_not_run_file, part_labels
from vaekit.training_figures import training_curves

__all__ = [
    "FIGURES",
    "FigureSpec",
    "FigureData",
    "LAYER_FIGURES",
    "TEMPERATURES",
    "layer_kl_terms",
    "layer_kl_curves",
    "temperature_samples",
    "layer_resampling",
    "layer_figure_reasons",
    "latent_scatter",
    "latent_histograms",
    "manifold_grid",
    "latent_grid",
    "reconstructions",
    "prior_samples",
    "sampler_samples",
    "interpolation",
    "training_curves",
    "latent_traversal",
    "class_grid",
    "code_grids",
    "compare_runs",
    "compare_curves",
    "curves_split",
    "applicable_figures",
    "figure_list",
    "run_figures",
    "random_subset",
    "save_figures",
    "project_2d",
]


def _np(a: Any) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _cmap_name(num_classes: int) -> str:
    return "tab10" if num_classes <= 10 else "tab20"


def project_2d(z: Any, dims: Sequence[int] | None = None) -> tuple[np.ndarray, list[str]]:
    """Two coordinates for plotting ``z`` ``(N, D)``, with axis labels.

    Two (or fewer) dimensions are used as they are; ``dims`` picks a pair; otherwise the
    plane of the first two principal components (labelled with the variance they explain).
    """
    a = _np(z).astype(np.float64)
    if a.ndim != 2:
        raise UsageError(f"latent codes must have shape (N, D), got {a.shape}")
    d = a.shape[1]
    if dims is not None:
        if len(dims) != 2 or not all(0 <= i < d for i in dims):
            raise UsageError(f"dims must be two latent dimensions in 0..{d - 1}, got {list(dims)}")
        return a[:, list(dims)], [f"z{dims[0]}", f"z{dims[1]}"]
    if d == 1:
        return np.concatenate([a, np.zeros_like(a)], axis=1), ["z0", ""]
    if d == 2:
        return a, ["z0", "z1"]
    centred = a - a.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = s**2 / max(float((s**2).sum()), 1e-300)
    return centred @ vt[:2].T, [f"PC1 ({share[0]:.0%} of variance)", f"PC2 ({share[1]:.0%})"]


def _draw_scatter(
    ax: Axes,
    z: Any,
    labels: Any = None,
    *,
    dims: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    legend: bool = True,
) -> None:
    xy, names = project_2d(z, dims)
    # Larger markers when there are few points (359 digits) than for 10,000 MNIST codes.
    size = float(np.clip(4000 / max(len(xy), 1), 2, 12))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.6, color="#1f77b4", linewidths=0)
    else:
        lab = _np(labels).astype(int)
        classes = np.unique(lab)
        cmap = colormaps[_cmap_name(int(lab.max()) + 1)]
        for c in classes:
            sel = lab == c
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=size,
                alpha=0.7,
                color=cmap(c % cmap.N),
                label=name,
                linewidths=0,
            )
        if legend:
            ax.legend(
                title="class",
                markerscale=max(1.0, 12 / size),
                fontsize="small",
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
                frameon=False,
            )
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    if len(names[1]) and dims is None and xy.shape[1] == 2 and names[0] == "z0":
        ax.set_aspect("equal", adjustable="datalim")


def latent_scatter(
    z: Any,
    labels: Any = None,
    *,
    dims: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Latent codes ``(N, D)`` as points coloured by ``labels``.

    Beyond two dimensions the points are projected on their first two principal
    components, or on the pair ``dims``.

    Example:
        >>> fig = latent_scatter(np.random.randn(100, 2), np.arange(100) % 3)
        >>> len(fig.axes)
        1
    """
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    _draw_scatter(ax, z, labels, dims=dims, class_names=class_names)
    ax.set_title(title or "Latent space")
    return fig


def latent_histograms(
    z: Any,
    labels: Any,
    *,
    dims: Sequence[int] | None = None,
    bins: int = 40,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Per class and per latent dimension, a density histogram of the codes with the
    fitted normal N(mean, std) drawn over it (tutorial 003). All panels of one dimension
    share its x range, so wide and narrow classes can be compared at a glance.

    ``dims`` defaults to the first two dimensions.

    Example:
        >>> fig = latent_histograms(np.random.randn(200, 2), np.arange(200) % 4)
        >>> len(fig.axes)
        8
    """
    a = _np(z).astype(np.float64)
    lab = _np(labels).astype(int)
    if a.ndim != 2 or len(a) != len(lab):
        raise UsageError(
            f"latent_histograms needs codes (N, D) and N labels, got {a.shape} and {lab.shape}"
        )
    dims = list(dims) if dims is not None else list(range(min(a.shape[1], 2)))
    if not dims or not all(0 <= d < a.shape[1] for d in dims):
        raise UsageError(f"dims must be latent dimensions in 0..{a.shape[1] - 1}, got {dims}")
    classes = [int(c) for c in np.unique(lab)]
    nd = len(dims)
    per_row = max(1, 4 // nd)
    nrows = math.ceil(len(classes) / per_row)
    ncols = per_row * nd
    fig = Figure(figsize=(3.2 * ncols, 2.3 * nrows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    colours = ["#2ca02c", "#1f77b4", "#9467bd", "#ff7f0e"]
    ranges = {}
    for d in dims:
        lo, hi = np.percentile(a[:, d], [0.5, 99.5])
        pad = 0.05 * max(hi - lo, 1e-6)
        ranges[d] = (lo - pad, hi + pad)
    used = set()
    for i, c in enumerate(classes):
        r, block = divmod(i, per_row)
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        for j, d in enumerate(dims):
            ax = axes[r, block * nd + j]
            used.add((r, block * nd + j))
            v = a[lab == c, d]
            lo, hi = ranges[d]
            ax.hist(
                v,
                bins=bins,
                range=(lo, hi),
                density=True,
                color=colours[j % len(colours)],
                alpha=0.5,
            )
            mu, sd = float(v.mean()), float(v.std())
            xs = np.linspace(lo, hi, 200)
            if sd > 0:
                ax.plot(
                    xs,
                    np.exp(-0.5 * ((xs - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi)),
                    color="k",
                    lw=1,
                )
            ax.axvline(mu, color="r", lw=1)
            ax.set_xlim(lo, hi)
            ax.set_yticks([])
            ax.set_xlabel(
                f"class {name}, z{d}: N(\u03bc={mu:.2f}, \u03c3={sd:.2f})", fontsize="small"
            )
    for r in range(nrows):
        for col in range(ncols):
            if (r, col) not in used:
                fig.delaxes(axes[r, col])
    return fig


def _tick(v: float) -> str:
    """A short tick label; rounding noise such as -1.4e-16 prints as 0."""
    v = round(float(v), 2)
    return f"{v + 0.0:g}"


def _show_images(
    ax: Axes, images: np.ndarray, ncol: int | None = None, pad: int = 1, pad_value: float = 1.0
) -> np.ndarray:
    return _show_grid(ax, image_grid(images, ncol=ncol, pad=pad, pad_value=pad_value))


def _show_grid(ax: Axes, grid: np.ndarray) -> np.ndarray:
    """An image grid (grey or RGB, values in [0, 1]) in ``ax``, without ticks."""
    if grid.ndim == 2:
        ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return grid


def _require_images(run: Run, what: str) -> None:
    if not run.info["data"].get("is_image", False):
        raise UsageError(
            f"{what} needs image data, but this run's data ({run.info['data'].get('name')}) are not images"
        )


def _class_label(run: Run, y: Any) -> Tensor | None:
    """One label (or None) for decoding a conditional model at a chosen class."""
    if not run.num_classes:
        return None
    return torch.as_tensor(0 if y is None else y)


def _class_title(run: Run, y: Any) -> str:
    """``", class NAME"`` for the class a conditional model decodes (the figure's grid
    shows that class only); empty for an unconditional model."""
    label = _class_label(run, y)
    if label is None:
        return ""
    c = int(label.reshape(-1)[0])
    names = run.info["data"].get("class_names")
    return f", class {names[c] if names and c < len(names) else c}"


def _decoded_grid(
    ax: Axes,
    run: Run,
    gx: np.ndarray,
    gy: np.ndarray,
    dims: Sequence[int],
    base: np.ndarray | None,
    y: Any,
) -> None:
    """Decode a grid: ``gx`` along dimension dims[0] (columns), ``gy`` along dims[1] (rows, top = largest)."""
    d = run.latent_dim
    if d < 2:
        raise UsageError("a latent grid needs at least two latent dimensions")
    if len(dims) != 2 or not all(0 <= i < d for i in dims):
        raise UsageError(f"dims must be two latent dimensions in 0..{d - 1}, got {list(dims)}")
    rows = gy[::-1]
    z = np.tile(
        np.zeros(d) if base is None else np.asarray(base, dtype=np.float64),
        (len(rows) * len(gx), 1),
    )
    zz = np.array(np.meshgrid(gx, rows)).reshape(2, -1).T
    z[:, dims[0]], z[:, dims[1]] = zz[:, 0], zz[:, 1]
    label = _class_label(run, y)
    labels = None if label is None else label.expand(len(z))
    x = run.generate(torch.as_tensor(z, dtype=torch.float32), labels)
    imgs = to_images(x, run.data_shape)
    # A thin grey seam: tiles stay apart (small 8x8 digits blur into each other without
    # one) but the grid still reads as one manifold.
    grid = _show_images(ax, imgs, ncol=len(gx), pad=1, pad_value=0.35)
    h, w = imgs.shape[1:3]
    every = max(1, math.ceil(len(gx) / 8))
    ax.set_xticks([1 + (w + 1) * i + w / 2 - 0.5 for i in range(0, len(gx), every)])
    ax.set_xticklabels([_tick(v) for v in gx[::every]], fontsize="small")
    every = max(1, math.ceil(len(rows) / 8))
    ax.set_yticks([1 + (h + 1) * i + h / 2 - 0.5 for i in range(0, len(rows), every)])
    ax.set_yticklabels([_tick(v) for v in rows[::every]], fontsize="small")
    ax.set_xlabel(f"z{dims[0]}")
    ax.set_ylabel(f"z{dims[1]}")
    ax.set_xlim(-0.5, grid.shape[1] - 0.5)
    ax.set_ylim(grid.shape[0] - 0.5, -0.5)


def manifold_grid(
    run: Run,
    n: int = 15,
    *,
    dims: Sequence[int] = (0, 1),
    y: Any = None,
    quantiles: tuple[float, float] = (0.05, 0.95),
) -> Figure:
    """The 2-D manifold of tutorial 001: decode an ``n`` x ``n`` grid whose coordinates are
    the inverse normal CDF of evenly spaced quantiles, so the grid covers the prior's mass
    evenly. Other latent dimensions stay at 0; a conditional model decodes class ``y`` (0),
    which the title names.
    """
    # scipy costs ~1-3 s of start-up, for this figure only.
    from scipy.stats import norm

    _require_images(run, "manifold_grid")
    if n < 2:
        raise UsageError(f"n must be >= 2, got {n}")
    lo, hi = quantiles
    if not 0 < lo < hi < 1:
        raise UsageError(f"quantiles must satisfy 0 < low < high < 1, got {quantiles}")
    g = norm.ppf(np.linspace(lo, hi, n))
    fig = Figure(figsize=(7, 7), layout="constrained")
    ax = fig.subplots()
    _decoded_grid(ax, run, g, g, dims, None, y)
    ax.set_title(f"Manifold through the inverse normal CDF ({n}x{n}{_class_title(run, y)})")
    return fig


def latent_grid(
    run: Run,
    x_range: tuple[float, float] = (-3.0, 3.0),
    y_range: tuple[float, float] | None = None,
    n: int = 15,
    *,
    dims: Sequence[int] = (0, 1),
    base: Any = None,
    y: Any = None,
) -> Figure:
    """Decode a uniform ``n`` x ``n`` grid over ``x_range`` x ``y_range`` (tutorial 003).

    ``base`` fixes the other latent dimensions (default 0); a conditional model decodes
    class ``y`` (default 0), which the title names.
    """
    _require_images(run, "latent_grid")
    y_range = y_range or x_range
    for name, r in (("x_range", x_range), ("y_range", y_range)):
        if not (len(r) == 2 and math.isfinite(r[0]) and math.isfinite(r[1]) and r[0] < r[1]):
            raise UsageError(f"{name} must be (low, high) with low < high, got {r}")
    if n < 2:
        raise UsageError(f"n must be >= 2, got {n}")
    fig = Figure(figsize=(7, 7), layout="constrained")
    ax = fig.subplots()
    _decoded_grid(
        ax,
        run,
        np.linspace(*x_range, n),
        np.linspace(*y_range, n),
        dims,
        None if base is None else _np(base),
        y,
    )
    ax.set_title(
        f"Decoded uniform grid, z{dims[0]} in [{x_range[0]:.3g}, {x_range[1]:.3g}], z{dims[1]} in [{y_range[0]:.3g}, {y_range[1]:.3g}]"
        + _class_title(run, y)
    )
    return fig


def reconstructions(run: Run, x: Any, y: Any = None, n: int = 16) -> Figure:
    """The first ``n`` examples of ``x`` above their reconstructions, 16 to a row: the
    grid ``vaekit reconstruct`` writes (:func:`vaekit.images.reconstruction_grid`)."""
    _require_images(run, "reconstructions")
    xs = torch.as_tensor(_np(x)[:n], dtype=torch.float32)
    ys = None if (y is None or not run.num_classes) else torch.as_tensor(_np(y)[:n])
    xr = run.reconstruct(xs, ys)
    grid, labels = reconstruction_grid(xs, xr, run.data_shape)
    ncol = min(len(xs), 16)
    fig = Figure(
        figsize=(min(12.0, 0.75 * ncol), 1.6 * math.ceil(len(xs) / ncol) + 0.8),
        layout="constrained",
    )
    ax = fig.subplots()
    _show_grid(ax, grid)
    band = grid.shape[0] / len(labels)
    ax.set_yticks([(i + 0.5) * band for i in range(len(labels))], labels)
    ax.tick_params(axis="y", length=0)
    return fig


def prior_samples(
    run: Run, n: int = 64, *, y: Any = None, seed: int = 0, ncol: int | None = None
) -> Figure:
    """Means of p(x|z) for ``n`` draws z ~ p(z) (a conditional model cycles through classes
    unless ``y`` picks one)."""
    _require_images(run, "prior_samples")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = run.sample(n, y)
    ncol = ncol or (run.num_classes if (run.num_classes and y is None) else math.ceil(math.sqrt(n)))
    fig = Figure(figsize=(6, 6 * math.ceil(n / ncol) / ncol + 0.5), layout="constrained")
    ax = fig.subplots()
    _show_images(ax, to_images(x, run.data_shape), ncol)
    ax.set_title(f"Samples from the prior ({part_labels(run.config)['prior']})")
    return fig


def code_grids(run: Run, x: Any, y: Any = None, n: int = 8) -> Figure:
    """A discrete model's codes: the first ``n`` examples of ``x`` (top), the code grid of
    each (its most probable code at every position, one colour per code with the index
    written in) and the decoding of that grid (bottom)."""
    head = run.model.encoder.head
    if not isinstance(head, CodeHead):
        raise ValueError(
            "code grids need a discrete posterior (model.posterior=vq, rvq, fsq, lfq or gumbel)"
        )
    head = shown_head(head)  # a residual VQ's K ** Q codes: one per quantizer instead
    _require_images(run, "code_grids")
    xs = torch.as_tensor(_np(x)[:n], dtype=torch.float32)
    ys = None if (y is None or not run.num_classes) else torch.as_tensor(_np(y)[:n])
    with torch.no_grad():
        z = run.encode(xs, ys).mode
        codes = head.codes(z).cpu().numpy()
        decoded = run.decode(z, ys).mean
    rows, cols = head.space.grid
    k = head.space.codes
    # Neighbouring indices far apart in hue (golden-angle steps), light enough to read on.
    hues = (np.arange(k) * 0.618033988749895) % 1.0
    colours = hsv_to_rgb(np.stack([hues, np.full(k, 0.45), np.full(k, 0.95)], 1))
    cmap = ListedColormap(colours)
    fig = Figure(figsize=(1.6 * len(xs) + 0.6, 5.2), layout="constrained")
    axes = fig.subplots(3, len(xs), squeeze=False)
    originals, recons = to_images(xs, run.data_shape), to_images(decoded, run.data_shape)
    for i in range(len(xs)):
        _show_images(axes[0, i], originals[i : i + 1])
        grid = codes[i].reshape(rows, cols)
        ax = axes[1, i]
        ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
        if rows * cols <= 100:
            size = max(3.0, min(8.0, 60.0 / max(rows, cols)))
            for (r, c), v in np.ndenumerate(grid):
                ax.text(c, r, str(v), ha="center", va="center", fontsize=size)
        ax.set_xticks([])
        ax.set_yticks([])
        _show_images(axes[2, i], recons[i : i + 1])
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel(f"codes ({rows}x{cols} of {k})")
    axes[2, 0].set_ylabel("decoded codes")
    return fig


def sampler_samples(
    run: Run,
    names: Sequence[str] | None = None,
    n: int = 36,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    scores: Mapping[str, Mapping[str, Any]] | None = None,
) -> Figure:
    """Means of p(x|z) for ``n`` codes from each sampler (:mod:`vaekit.samplers`), one panel
    each, the same seed for all. ``names`` default to the prior and the samplers saved in
    the run; none is fitted here (a missing or stale one shows why). ``scores``: sampler
    name -> {"fid", "precision", "recall"}, written under each panel's title."""
    _require_images(run, "sampler_samples")
    names = list(names) if names is not None else ["prior", *saved_samplers(run.dir)]
    ncol = math.ceil(math.sqrt(n))
    fig = Figure(figsize=(3.2 * len(names), 3.9), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        try:
            sampler = run.sampler(name)
        except SamplerError as e:
            ax.set_axis_off()
            ax.text(0.5, 0.5, str(e), ha="center", va="center", wrap=True, fontsize=7)
            ax.set_title(name)
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = sampler.sample(n, temperature).to(run.device)
            x = run.model.sample(n, z=z)
        _show_images(ax, to_images(x, run.data_shape), ncol)
        title = name if sampler.label == name else f"{name} ({sampler.label})"
        s = (scores or {}).get(name)
        if s:
            title += f"\nFID {s['fid']:.1f}, P {s['precision']:.2f}, R {s['recall']:.2f}"
        ax.set_title(title, fontsize=10)
    if temperature != 1.0:
        fig.suptitle(f"temperature {temperature:g}")
    return fig


def interpolation(
    run: Run, x_a: Any, x_b: Any, y_a: Any = None, y_b: Any = None, steps: int = 10
) -> Figure:
    """Decode straight lines between the posterior means of ``x_a[i]`` and ``x_b[i]``.

    Each pair is one row: original a, ``steps`` decoded points from a to b, original b.
    A conditional model interpolates the one-hot labels too.
    """
    _require_images(run, "interpolation")
    if steps < 2:
        raise UsageError(f"steps must be >= 2, got {steps}")
    a = torch.as_tensor(_np(x_a), dtype=torch.float32).reshape(-1, *run.data_shape)
    b = torch.as_tensor(_np(x_b), dtype=torch.float32).reshape(-1, *run.data_shape)
    if len(a) != len(b):
        raise UsageError(
            f"x_a and x_b must hold the same number of examples, got {len(a)} and {len(b)}"
        )
    ya = yb = None
    if run.num_classes:
        if y_a is None or y_b is None:
            raise UsageError("this is a conditional model: pass y_a and y_b as well")
        ya = torch.nn.functional.one_hot(
            torch.as_tensor(_np(y_a)).long().reshape(-1), run.num_classes
        ).float()
        yb = torch.nn.functional.one_hot(
            torch.as_tensor(_np(y_b)).long().reshape(-1), run.num_classes
        ).float()
    za, zb = run.transform(a, ya), run.transform(b, yb)
    t = torch.linspace(0, 1, steps)
    rows = []
    for i in range(len(a)):
        z = (1 - t)[:, None] * za[i] + t[:, None] * zb[i]
        lab = None if ya is None or yb is None else (1 - t)[:, None] * ya[i] + t[:, None] * yb[i]
        mid = to_images(run.generate(z, lab), run.data_shape)
        rows += [
            to_images(a[i : i + 1], run.data_shape),
            mid,
            to_images(b[i : i + 1], run.data_shape),
        ]
    imgs = np.concatenate(rows)
    fig = Figure(figsize=(0.7 * (steps + 2), 0.75 * len(a) + 0.6), layout="constrained")
    ax = fig.subplots()
    _show_images(ax, imgs, steps + 2)
    ax.set_title("Interpolation in latent space")
    return fig


_CURVE_SPLITS = ("valid", "test", "train")


def _curve_points(
    metrics: Sequence[Mapping[str, Any]], bound: ObjectiveAbilities, split: str
) -> list[tuple[int, float]]:
    return [
        (int(r["epoch"]), bound.score(r[split]))
        for r in metrics
        if isinstance(r, Mapping) and isinstance(r.get(split), Mapping) and bound.bound in r[split]
    ]


def curves_split(
    runs: Mapping[str, tuple[Sequence[Mapping[str, Any]], ObjectiveAbilities]],
) -> str:
    """The split :func:`compare_curves` draws by default: ``valid`` when every run has
    validation scores, else ``test`` (a run without a validation split still scores the
    test split every epoch), else ``train``: one split that every run has, so that the
    curves compare like with like."""
    for split in _CURVE_SPLITS:
        if all(_curve_points(m, b, split) for m, b in runs.values()):
            return split
    raise UsageError(
        "these runs have no split scored in all of them: "
        + "; ".join(
            f"{name}: {', '.join(s for s in _CURVE_SPLITS if _curve_points(m, b, s)) or 'none'}"
            for name, (m, b) in runs.items()
        )
    )


def compare_curves(
    runs: Mapping[str, tuple[Sequence[Mapping[str, Any]], ObjectiveAbilities]],
    split: str | None = None,
) -> Figure:
    """Learning curves of several runs in one panel: minus the bound each run trains (as
    its objective's abilities name it: the IWAE bound, the ELBO, ...; nats, lower is
    better), or the loss of an objective without a bound, on ``split`` by epoch, with each
    run's best epoch marked. It shows where a long run stands and whether it still improves.
    ``split`` None takes the validation split when every run has one, else the test split
    (:func:`curves_split`).

    ``runs`` maps a name to the rows of that run's ``metrics.jsonl`` and its objective's
    abilities (:func:`vaekit.rundir.objective_abilities`). The y-axis starts where the
    curves have come down from their first epochs, so the part that matters is readable.

    Example:
        >>> from vaekit.parts import ObjectiveAbilities
        >>> rows = [{"epoch": e, "valid": {"elbo": -100 + 10 / e}} for e in range(1, 9)]
        >>> fig = compare_curves({"a": (rows, ObjectiveAbilities())})
        >>> float(fig.axes[0].get_lines()[0].get_ydata()[-1])  # -ELBO at the last epoch
        98.75
    """
    if not runs:
        raise UsageError("compare_curves needs at least one run")
    split = split or curves_split(runs)
    fig = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = fig.subplots()
    lows: list[float] = []
    highs: list[float] = []
    shown: dict[str, None] = {}  # the bounds' names, in the order of the runs
    for colour, (name, (metrics, bound)) in zip(_CURVE_COLOURS, runs.items(), strict=False):
        pts = _curve_points(metrics, bound, split)
        if not pts:
            has = [s for s in _CURVE_SPLITS if _curve_points(metrics, bound, s)]
            raise UsageError(
                f"{name} has no {split} scores in its metrics.jsonl; it has "
                f"{', '.join(has) or 'none'}: choose a split that every run has, or leave "
                "--split out to take one"
            )
        epochs = np.array([e for e, _ in pts])
        values = np.array([-v for _, v in pts])
        what = f"-{bound.bound_label}" if bound.sign > 0 else bound.bound_label
        shown[what] = None
        i = int(np.nanargmin(values))
        label = f"{name} ({what}): best {values[i]:.2f} at epoch {epochs[i]} of {epochs[-1]}"
        ax.plot(epochs, values, color=colour, lw=1.2, label=label)
        ax.plot([epochs[i]], [values[i]], "o", color=colour, ms=5)
        lows.append(values[i])
        highs.append(values[min(len(values) - 1, len(values) // 20)])
    low, high = min(lows), max(highs)
    pad = 0.05 * max(high - low, 1e-6)
    ax.set_ylim(low - pad, high + pad)
    ax.set_ylabel(f"{' / '.join(shown)} on {split} (nats)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


_CURVE_COLOURS = [colormaps["tab10"](i) for i in range(10)] * 10


def latent_traversal(
    run: Run,
    x: Any = None,
    y: Any = None,
    *,
    dims: Sequence[int] | None = None,
    n: int = 9,
    span: float = 3.0,
) -> Figure:
    """Vary one latent dimension at a time from ``-span`` to ``span`` (one row each), the
    others held at the posterior mean of the example ``x`` (or at 0). Shows what each
    dimension encodes; with a beta-VAE, ideally one factor of variation per row.

    ``dims`` defaults to the first ten dimensions.
    """
    _require_images(run, "latent_traversal")
    d = run.latent_dim
    dims = list(dims) if dims is not None else list(range(min(d, 10)))
    if not dims or not all(0 <= i < d for i in dims):
        raise UsageError(f"dims must be latent dimensions in 0..{d - 1}, got {dims}")
    if n < 2:
        raise UsageError(f"n must be >= 2, got {n}")
    label = _class_label(run, y)
    if x is not None:
        xs = torch.as_tensor(_np(x), dtype=torch.float32).reshape(-1, *run.data_shape)[:1]
        base = run.transform(xs, None if label is None else label.reshape(1))[0].cpu()
    else:
        base = torch.zeros(d)
    values = torch.linspace(-span, span, n)
    z = base.repeat(len(dims) * n, 1)
    for r, dim in enumerate(dims):
        z[r * n : (r + 1) * n, dim] = values
    labels = None if label is None else label.expand(len(z))
    imgs = to_images(run.generate(z, labels), run.data_shape)
    fig = Figure(figsize=(0.7 * n + 1.0, 0.7 * len(dims) + 0.8), layout="constrained")
    ax = fig.subplots()
    _show_images(ax, imgs, n)
    h, w = imgs.shape[1:3]
    ax.set_yticks([1 + (h + 1) * i + h / 2 - 0.5 for i in range(len(dims))])
    ax.set_yticklabels([f"z{i}" for i in dims], fontsize="small")
    ax.set_xticks([1 + (w + 1) * i + w / 2 - 0.5 for i in range(n)])
    ax.set_xticklabels([_tick(v) for v in values.tolist()], fontsize="small")
    ax.set_title("Latent traversals")
    return fig


def class_grid(run: Run, n: int = 10, *, seed: int = 0) -> Figure:
    """A conditional model's samples: one row per class, ``n`` columns, the same z in each
    column, so a column shows one style across every class. With a prior per class
    (``class-gaussian``, ``class-vamp``) z carries the class too: row c draws its own z from
    p(z|c), as the model generates class c (a z of p(z) decoded under every label would
    show codes the model never pairs with most of them)."""
    _require_images(run, "class_grid")
    c = run.num_classes
    if not c:
        raise UsageError("class_grid needs a conditional model (model.conditional=true)")
    labels = torch.arange(c).repeat_interleave(n)
    per_class = run.model.composition.prior.per_class
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if per_class:
            device = next(run.model.parameters()).device
            with torch.no_grad():
                zz = run.model.prior_given(labels.to(device)).sample().cpu()
        else:
            zz = run.prior.sample((n,)).cpu().repeat(c, 1)
    imgs = to_images(run.generate(zz, labels), run.data_shape)
    fig = Figure(figsize=(0.6 * n + 1.0, 0.6 * c + 0.8), layout="constrained")
    ax = fig.subplots()
    _show_images(ax, imgs, n)
    h = imgs.shape[1]
    names = run.info["data"].get("class_names") or [str(i) for i in range(c)]
    ax.set_yticks([1 + (h + 1) * i + h / 2 - 0.5 for i in range(c)])
    ax.set_yticklabels(names[:c], fontsize="small")
    ax.set_title(
        "Conditional samples (class by row, z from p(z|class))"
        if per_class
        else "Conditional samples (class by row, same z by column)"
    )
    return fig


def _data_range(
    z: np.ndarray, dims: Sequence[int]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """A square-ish range covering 98% of the codes along two dimensions."""
    out = []
    for d in dims:
        lo, hi = np.percentile(z[:, d], [1, 99])
        pad = 0.05 * max(hi - lo, 1e-3)
        out.append((float(lo - pad), float(hi + pad)))
    return out[0], out[1]


def compare_runs(
    run_a: Run,
    run_b: Run,
    x: Any,
    labels: Any = None,
    *,
    names: tuple[str, str] | None = None,
    n: int = 15,
    seed: int = 0,
) -> Figure:
    """Two runs side by side (tutorial 003's autoencoder versus VAE): one column each with
    the latent scatter of ``x`` coloured by ``labels``, a decoded uniform grid over the
    range the codes occupy, and decoded draws from the prior N(0, I). The autoencoder's
    irregular latent space shows as gaps and unreadable prior samples.
    """
    runs = (run_a, run_b)
    names = names or (run_a.dir.name, run_b.dir.name)
    images = all(r.info["data"].get("is_image", False) for r in runs)
    grids = images and all(r.latent_dim >= 2 for r in runs)
    nrows = 1 + (1 if grids else 0) + (1 if images else 0)
    fig = Figure(figsize=(12, 5.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, 2, squeeze=False)
    xs = torch.as_tensor(_np(x), dtype=torch.float32)
    for col, (run, name) in enumerate(zip(runs, names, strict=True)):
        ys = None
        if run.num_classes:
            if labels is None:
                raise UsageError(f"{name} is a conditional model: pass the labels")
            ys = torch.as_tensor(_np(labels))
        z = latent_means(run.model, xs.reshape(len(xs), *run.data_shape), ys).numpy()
        post = run.model.composition.posterior
        # Trained against a prior: random draws, or a density (VQ-VAE's one-hot code).
        kind = f"VAE ({run.objective_label})" if post.stochastic or post.density else "autoencoder"
        ax = axes[0, col]
        _draw_scatter(
            ax, z, labels, class_names=run.info["data"].get("class_names"), legend=col == 1
        )
        ax.set_title(f"{name}: {kind}")
        row = 1
        if grids:
            dims = (0, 1)
            rx, ry = _data_range(z, dims)
            base = z.mean(0) if run.latent_dim > 2 else None
            label = None if ys is None else ys[0]
            _decoded_grid(
                axes[row, col], run, np.linspace(*rx, n), np.linspace(*ry, n), dims, base, label
            )
            axes[row, col].set_title(
                "decoded grid over the codes' range" + _class_title(run, label)
            )
            row += 1
        if images:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                samples = run.sample(64)  # a conditional model cycles through its classes
            _show_images(axes[row, col], to_images(samples, run.data_shape), 8)
            axes[row, col].set_title("decoded draws z ~ N(0, I)")
    return fig


def _samplers_absent(run: Run) -> str | None:
    """Why the samplers figure does not apply (None when it does)."""
    if run.num_classes:
        return "a conditional model samples from its prior only"
    if not saved_samplers(run.dir):
        return f"no post-hoc sampler fitted yet (vaekit fit-sampler {run.dir} --sampler gmm)"
    return None


def _draw_samplers(d: FigureData) -> Figure:
    return sampler_samples(d.run, seed=d.seed, scores=saved_scores(d.run.dir))


def _interpolation_pairs(
    split: Split, count: int = 4
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Pairs of test examples: of different classes where labels exist (more to see)."""
    n = len(split)
    if split.y is None:
        ia = list(range(0, min(n, 2 * count), 2))
        ib = [min(i + 1, n - 1) for i in ia]
    else:
        y = split.y.tolist()
        ia, ib = [], []
        for i in range(n):
            if len(ia) == count:
                break
            j = next(
                (j for j in range(i + 1, n) if y[j] != y[i] and j not in ib and j not in ia), None
            )
            if j is not None and i not in ib:
                ia.append(i)
                ib.append(j)
    a, b = torch.tensor(ia), torch.tensor(ib)
    ya = None if split.y is None else split.y[a]
    yb = None if split.y is None else split.y[b]
    return split.x[a], split.x[b], ya, yb


def random_subset(split: Split, n: int, seed: int = 0) -> Split:
    """At most ``n`` examples of ``split`` in a seeded random order.

    Some test sets are sorted by class (binarized MNIST starts with a run of zeros), so
    the first examples would all look alike.
    """
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(split))[:n])
    return Split(split.x[order], None if split.y is None else split.y[order])


# -- a hierarchy's figures (vaekit.hierarchy holds its numbers) --------------------------------

# The figures of ``vaekit plot`` that apply to hierarchies.
LAYER_FIGURES = ("layer_kl", "temperatures", "layer_resampling")

# Temperatures of the figure of samples (NVAE shows 0.6-1.0; VDVAE samples at 0.1-1.0).
TEMPERATURES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def layer_kl_terms(metrics: Sequence[Mapping[str, Any]]) -> list[str]:
    """The per-layer KL terms (``kl_z1`` ...) that ``metrics.jsonl`` rows hold, in order."""
    found: set[str] = set()
    for r in metrics:
        for s in ("train", "valid", "test"):
            part = r.get(s)
            if isinstance(part, Mapping):
                found |= {k for k in part if k.startswith("kl_z") and k[4:].isdigit()}
    return sorted(found, key=lambda k: int(k[4:]))


def layer_kl_curves(metrics: Sequence[Mapping[str, Any]]) -> Figure:
    """Each layer's KL term by epoch (validation solid where logged, train dashed): which
    layers carry information, and when each switches on during the KL warm-up."""
    terms = layer_kl_terms(metrics)
    if not terms:
        raise ValueError(
            "the metrics hold no per-layer KL terms (kl_z1, ...): one stochastic layer"
        )
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.subplots()
    colours = [f"C{i}" for i in range(len(terms))]
    held_out = next(
        (s for s in ("valid", "test") if any(isinstance(r.get(s), Mapping) for r in metrics)),
        None,
    )
    for term, colour in zip(terms, colours, strict=True):
        for split, style in ((held_out, "-"), ("train", "--")):
            pts = [
                (r["epoch"], r[split][term])
                for r in metrics
                if split and isinstance(r.get(split), Mapping) and r[split].get(term) is not None
            ]
            if pts:
                e, v = zip(*pts, strict=True)
                ax.plot(e, v, style, color=colour, label=f"{term[3:]} ({split})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("KL (nats)")
    ax.set_title("KL of each stochastic layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    return fig


def _grid_rows(
    run: Run, rows: Sequence[Tensor], labels: Sequence[str], title: str, ncol: int
) -> Figure:
    fig = Figure(
        figsize=(min(12.0, 0.75 * ncol) + 1.2, 0.8 * len(rows) + 0.7), layout="constrained"
    )
    axes = np.atleast_1d(fig.subplots(len(rows), 1))
    for ax, x, label in zip(axes, rows, labels, strict=True):
        _show_images(ax, to_images(x, run.data_shape), ncol)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    axes[0].set_title(title)
    return fig


@torch.no_grad()
def temperature_samples(
    run: Run, temperatures: Sequence[float] = TEMPERATURES, n: int = 12, *, seed: int = 0
) -> Figure:
    """One row of ``n`` samples per temperature: the prior's spread (every layer's) scaled
    by t, the same noise seed on each row. Below 1, samples trade variety for sharpness."""
    rows = []
    for t in temperatures:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rows.append(run.sample(n, temperature=t).cpu())
    return _grid_rows(
        run, rows, [f"t = {t:g}" for t in temperatures], "Samples at temperatures t", n
    )


@torch.no_grad()
def layer_resampling(
    run: Run, x: Any, y: Any = None, *, n: int = 8, redraws: int = 2, seed: int = 0
) -> Figure:
    """What each layer encodes: for test images (top row), one posterior draw z, then per
    layer l from the top down, ``redraws`` decodings that keep z_l .. z_L and draw the
    layers below from the prior. Keeping only the top shows what it fixes (class, style);
    keeping z_1 too is a reconstruction."""
    sizes = layer_sizes(run)
    if sizes is None:
        raise ValueError("layer_resampling needs a model with several stochastic layers")
    m = run.model
    xs = torch.as_tensor(np.asarray(x)[:n], dtype=torch.float32, device=run.device)
    ys = None if (y is None or not run.num_classes) else torch.as_tensor(np.asarray(y)[:n])
    rows, labels = [xs.cpu()], ["data"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        q = run.encode(xs, ys)
        z = q.sample()
        prior = m.prior
        assert isinstance(prior, HierarchicalPrior)
        for layer in reversed(range(1, len(sizes) + 1)):
            for r in range(redraws if layer > 1 else 1):
                zl = prior.sample_below(z, layer)
                rows.append(run.decode(zl, ys).mean.cpu())
                kept = f"z{layer}" if layer == len(sizes) else f"z{layer}..z{len(sizes)}"
                labels.append(f"keep {kept}" + (f" #{r + 1}" if layer > 1 else ""))
    return _grid_rows(run, rows, labels, "Each layer's share: redraw the layers below", len(xs))


def layer_figure_reasons(run: Run) -> dict[str, str | None]:
    """For the hierarchy's figures in ``vaekit plot``: None where one applies, else why not."""
    layered = layer_sizes(run) is not None
    # One-layer runs keep their figures; `vaekit sample --temperature` draws them cold too.
    tempered = None if layered else "one stochastic layer (vaekit sample --temperature T)"
    return {
        "layer_kl": None if layer_kl_terms(run.metrics) else "one stochastic layer (no kl_z1, ...)",
        "temperatures": tempered,
        "layer_resampling": None if layered else "one stochastic layer",
    }


@dataclass
class FigureData:
    """What one run's figures are drawn from (:func:`run_figures` prepares it once)."""

    run: Run
    # A seeded random subset of the test split (at most run_figures' max_points).
    test: Split
    # The test labels a conditional model decodes with (None for an unconditional one).
    labels: Tensor | None
    class_names: list[str] | None
    # Posterior means of ``test`` (vaekit.evaluate.latent_means), when a figure needs them.
    codes: np.ndarray | None
    seed: int = 0


@dataclass(frozen=True)
class FigureSpec:
    """One figure that ``vaekit plot`` and the report know: its name, caption, how it is
    drawn, and what it needs. A run that lacks something the figure needs skips it, with
    the reason (:meth:`why_not`)."""

    name: str
    caption: str
    draw: Callable[[FigureData], Figure]
    # What the figure needs: logged epochs, labelled data, a 2-D latent space, a
    # conditional model, image data, the test set's posterior means.
    metrics: bool = False
    labels: bool = False
    latent_2d: bool = False
    conditional: bool = False
    images: bool = False
    codes: bool = False
    # Anything else the figure needs, as a reason it does not apply (None: it applies).
    check: Callable[[Run], str | None] | None = None

    def needs(self) -> list[str]:
        """What it needs, in words (for ``vaekit plot --help``)."""
        words = {
            "metrics": "metrics",
            "labels": "labels",
            "latent_2d": "2-D latent",
            "conditional": "conditional model",
            "images": "images",
        }
        return [w for key, w in words.items() if getattr(self, key)]

    def why_not(self, run: Run, dataset: Dataset) -> str | None:
        """None when the figure applies to the run, else why not."""
        if self.metrics and not run.metrics:
            return "no metrics logged yet"
        if self.labels and dataset.test.y is None:
            return "the data have no labels"
        if self.latent_2d and run.latent_dim != 2:
            return f"the latent space has {run.latent_dim} dimensions, not 2"
        if self.conditional and not run.num_classes:
            return "not a conditional model"
        if self.images and not run.info["data"].get("is_image", False):
            return "the data are not images"
        return self.check(run) if self.check is not None else None


def _codes(d: FigureData) -> np.ndarray:
    assert d.codes is not None  # run_figures computes them for every figure with codes=True
    return d.codes


def _draw_latent_grid(d: FigureData) -> Figure:
    rx, ry = _data_range(_codes(d), (0, 1))
    return latent_grid(d.run, rx, ry, 15)


def _draw_interpolation(d: FigureData) -> Figure:
    a, b, ya, yb = _interpolation_pairs(d.test)
    cond = d.labels is not None
    return interpolation(d.run, a, b, ya if cond else None, yb if cond else None, steps=10)


def _draw_traversal(d: FigureData) -> Figure:
    y0 = int(d.labels[0]) if d.labels is not None else None
    # The ten dimensions the data use most (largest spread of the codes), so a 20-D
    # model shows its active units rather than collapsed ones.
    z = _codes(d)
    dims = sorted(np.argsort(-z.var(0))[: min(d.run.latent_dim, 10)].tolist())
    return latent_traversal(d.run, d.test.x[:1], y0, dims=dims)


def _continuous_only(run: Run) -> str | None:
    if run.model.composition.posterior.discrete:
        return "z is a discrete code: no line runs between codes, nor along one coordinate"
    return None


def _discrete_only(run: Run) -> str | None:
    if not run.model.composition.posterior.discrete:
        return "the latents are continuous (no codes)"
    return None


def _ood_absent(run: Run) -> str | None:

    if saved_comparison(run.dir) is None:
        return "no saved OOD comparison: run `vaekit score RUN IN OUT` first"
    return None


def _draw_ood_scores(d: FigureData) -> Figure:

    summary = saved_comparison(d.run.dir)
    assert summary is not None  # the figure applies only when there is one
    fig: Figure = comparison_figure(summary)
    return fig


# The figures `vaekit plot` and the report know, in the order the report shows them.
FIGURES: dict[str, FigureSpec] = {
    f.name: f
    for f in (
        FigureSpec(
            "training_curves",
            "Every logged term per epoch, train and test.",
            lambda d: training_curves(d.run.metrics),
            metrics=True,
        ),
        FigureSpec(
            "latent_scatter",
            "Posterior means of the test set, coloured by class.",
            lambda d: latent_scatter(
                _codes(d),
                d.test.y,
                class_names=d.class_names,
                title=f"Latent space of the test set ({len(d.test)} points)",
            ),
            codes=True,
        ),
        FigureSpec(
            "manifold",
            "Decoded 15x15 grid through the inverse normal CDF (quantiles 0.05 to 0.95).",
            lambda d: manifold_grid(d.run, 15),
            latent_2d=True,
            images=True,
        ),
        FigureSpec(
            "latent_grid",
            "Decoded uniform grid over the range the test set occupies in latent space.",
            _draw_latent_grid,
            latent_2d=True,
            images=True,
            codes=True,
        ),
        FigureSpec(
            "samples",
            "Decoded draws from the prior p(z).",
            lambda d: prior_samples(d.run, 100 if d.run.num_classes else 64, seed=d.seed),
            images=True,
        ),
        FigureSpec(
            "samplers",
            "Decoded draws from each sampler side by side: the prior p(z) and every post-hoc "
            "sampler fitted to the run's codes (vaekit fit-sampler); with FID, precision and "
            "recall against the test split where `vaekit quality` scored them (domain network).",
            _draw_samplers,
            images=True,
            check=_samplers_absent,
        ),
        FigureSpec(
            "latent_histograms",
            "Per class and latent dimension: histogram of the posterior means, with the "
            "fitted normal.",
            lambda d: latent_histograms(_codes(d), d.test.y, class_names=d.class_names),
            labels=True,
            codes=True,
            check=_continuous_only,
        ),
        FigureSpec(
            "reconstructions",
            "Test images, each row above their reconstructions at the posterior mean.",
            lambda d: reconstructions(
                d.run, d.test.x[:16], None if d.labels is None else d.labels[:16], 16
            ),
            images=True,
        ),
        FigureSpec(
            "codes",
            "Discrete latents: test images (top), their code grids (one colour per code, its "
            "index written in) and the decoding of each grid (bottom).",
            lambda d: code_grids(d.run, d.test.x[:8], None if d.labels is None else d.labels[:8]),
            images=True,
            check=_discrete_only,
        ),
        FigureSpec(
            "interpolation",
            "Linear interpolation in latent space between pairs of test images (originals "
            "at the ends).",
            _draw_interpolation,
            images=True,
            check=_continuous_only,
        ),
        FigureSpec(
            "traversal",
            "Latent traversals: one dimension per row (at most ten, those the test codes "
            "spread over most) from -3 to 3, the others at a test image's code.",
            _draw_traversal,
            images=True,
            codes=True,
            check=_continuous_only,
        ),
        FigureSpec(
            "class_grid",
            "Conditional samples: one class per row, the same latent code down each column.",
            lambda d: class_grid(d.run, 10, seed=d.seed),
            conditional=True,
            images=True,
        ),
        # Several stochastic layers, or a tempered prior (vaekit.hierarchy).
        FigureSpec(
            "layer_kl",
            "KL of each stochastic layer by epoch (held-out solid, train dashed).",
            lambda d: layer_kl_curves(d.run.metrics),
            metrics=True,
            check=lambda run: layer_figure_reasons(run)["layer_kl"],
        ),
        FigureSpec(
            "temperatures",
            "Samples with the prior's spread (every layer's) scaled by a temperature t, the "
            "same noise on each row.",
            lambda d: temperature_samples(d.run, seed=d.seed),
            images=True,
            check=lambda run: layer_figure_reasons(run)["temperatures"],
        ),
        FigureSpec(
            "layer_resampling",
            "Test images, then decodings that keep a posterior draw's layers from z_l up and "
            "redraw those below from the prior.",
            lambda d: layer_resampling(d.run, d.test.x[:8], d.labels, seed=d.seed),
            images=True,
            check=lambda run: layer_figure_reasons(run)["layer_resampling"],
        ),
        # Issue 28: the saved `vaekit score RUN IN OUT` comparison (vaekit.ood).
        FigureSpec(
            "ood_scores",
            "Histograms of every OOD score of the in-distribution and the out-of-distribution "
            "set of the newest `vaekit score RUN IN OUT`, each with its AUROC.",
            _draw_ood_scores,
            check=_ood_absent,
        ),
    )
}


def figure_list() -> str:
    """The figures by name with what each needs, for ``vaekit plot --which``'s help.

    Example:
        >>> figure_list().split("; ")[2]
        'manifold (2-D latent, images)'
    """
    return "; ".join(
        f.name + (f" ({', '.join(f.needs())})" if f.needs() else "") for f in FIGURES.values()
    )


def applicable_figures(run: Run, dataset: Dataset) -> dict[str, str | None]:
    """For each figure of :data:`FIGURES`, None when it applies to this run, else why not."""
    return {name: spec.why_not(run, dataset) for name, spec in FIGURES.items()}


def run_figures(
    run: Run,
    dataset: Dataset | None = None,
    *,
    which: Sequence[str] | None = None,
    data_dir: str | None = None,
    max_points: int = 5000,
    seed: int = 0,
) -> dict[str, Figure]:
    """Every figure of :data:`FIGURES` that applies to the run (or those in ``which``).

    The test split is the data; at most ``max_points`` of it are scattered. Asking for a
    figure that does not apply raises a UsageError saying why.
    """
    ds = dataset if dataset is not None else run.dataset(data_dir)
    reasons = applicable_figures(run, ds)
    if which is not None:
        unknown = [w for w in which if w not in reasons]
        if unknown:
            raise UsageError(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
        for w in which:
            if reasons[w] is not None:
                raise UsageError(f"figure {w!r} does not apply to this run: {reasons[w]}")
    names = [n for n in FIGURES if reasons[n] is None and (which is None or n in which)]
    test = random_subset(ds.test, max_points, seed)
    labels = test.y if run.num_classes else None
    codes: np.ndarray | None = None
    if any(FIGURES[n].codes for n in names):
        codes = latent_means(run.model, test.x, labels).numpy()
    data = FigureData(
        run=run,
        test=test,
        labels=labels,
        class_names=run.info["data"].get("class_names") or ds.class_names,
        codes=codes,
        seed=seed,
    )
    return {name: FIGURES[name].draw(data) for name in names}


def save_figures(figures: Mapping[str, Figure], out_dir: str | Path, dpi: int = 100) -> list[Path]:
    """Write each figure as ``out_dir/NAME.png`` (atomically); returns the paths. A folder
    or file that a run directory owns (``RUN/checkpoints``, ``RUN/model.json``, ...) is
    refused before anything is written, as the command line's ``--out`` is
    (:func:`vaekit.rundir.check_not_run_file`); ``RUN/plots`` is free."""
    out = check_not_run_file(out_dir, "save_figures: out_dir", "plots")
    paths = [out / f"{name}.png" for name in figures]  # no file a run owns ends in .png
    out.mkdir(parents=True, exist_ok=True)
    for path, fig in zip(paths, figures.values(), strict=True):
        with atomic_write(path, "wb") as f:
            fig.savefig(f, dpi=dpi, format="png")
    return paths

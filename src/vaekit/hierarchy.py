"""Per-layer views of a model with several stochastic layers (``model.posterior: hierarchical``).

The model itself keeps the one-latent contract (:mod:`vaekit.distributions.hierarchical`);
this module reads it layer by layer:

- :func:`layer_sizes`: the units of each layer, bottom first (None for one layer);
- :func:`kl_per_layer`: KL(q || p) of each layer over a split, and
  :func:`active_units_per_layer` (what ``vaekit evaluate`` reports for a hierarchy);
- :func:`fill_below`: a top-layer code completed downwards with the prior's conditional
  means (what the explorer decodes when it explores the top layer, see :class:`TopLayer`);
- figures: :func:`layer_kl_curves` (each layer's KL over training),
  :func:`temperature_samples` (samples at temperatures below 1, as NVAE and VDVAE draw
  them; any Gaussian or mixture prior) and :func:`layer_resampling` (reconstructions
  that keep the layers from l up and redraw those below: what each layer encodes).

Example:
    >>> from vaekit.config import load_config
    >>> from vaekit.model import build_model
    >>> cfg = load_config(None, ["model.latent_dim=3", "model.posterior=hierarchical"])
    >>> layer_sizes(build_model(cfg.model, (1, 8, 8)))
    [3, 3]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from vaekit.abilities import LayeredPosterior
from vaekit.distributions.hierarchical import (
    HierarchicalDistribution,
    HierarchicalPrior,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from vaekit.data import Split
    from vaekit.model import VAE
    from vaekit.rundir import Run

__all__ = [
    "layer_sizes",
    "kl_per_layer",
    "active_units_per_layer",
    "fill_below",
    "TopLayer",
    "layer_kl_terms",
    "layer_kl_curves",
    "temperature_samples",
    "layer_resampling",
    "TEMPERATURES",
    "FIGURES",
]

# The figures of ``vaekit plot`` that this module draws (they apply to hierarchies).
FIGURES = ("layer_kl", "temperatures", "layer_resampling")

# Temperatures of the figure of samples (NVAE shows 0.6-1.0; VDVAE samples at 0.1-1.0).
TEMPERATURES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def _model(obj: VAE | Run) -> VAE:
    return obj.model if hasattr(obj, "model") else obj  # type: ignore[return-value]


def layer_sizes(model: VAE | Run) -> list[int] | None:
    """Units of each stochastic layer from the bottom (z_1 first); None for one layer."""
    head = _model(model).encoder.head
    return [int(s) for s in head.sizes] if isinstance(head, LayeredPosterior) else None


@torch.inference_mode()
def kl_per_layer(
    model: VAE | Run, split: Split, *, samples: int = 16, batch_size: int = 500, seed: int = 0
) -> list[float]:
    """KL(q || p) of each layer (bottom first), averaged over ``split``: each lower layer's
    closed form given ``samples`` draws of the layer above, the top layer's closed form or
    (a mixture prior) Monte Carlo. The layers sum to the model's KL term."""
    m = _model(model)
    if layer_sizes(m) is None:
        raise ValueError("kl_per_layer needs a model with several stochastic layers")
    device = next(m.parameters()).device
    total: Tensor | None = None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        prior = m.prior
        for i in range(0, len(split), batch_size):
            x = split.x[i : i + batch_size].to(device)
            y = None
            if m.conditional and split.y is not None:
                y = split.y[i : i + batch_size].to(device)
            q = m.encode(x, y)
            assert isinstance(q, HierarchicalDistribution)
            z = q.rsample((samples,))
            part = q.kl_layers(prior, z, "auto").double().sum(1).cpu()
            total = part if total is None else total + part
    assert total is not None
    return [float(v) / len(split) for v in total]


def active_units_per_layer(
    variances: Sequence[float], sizes: Sequence[int], threshold: float = 0.01
) -> list[int]:
    """Active units (Burda et al. 2016) of each layer from the per-unit variances of the
    posterior means over a data set (``vaekit.evaluate.active_units``'s second output).

    >>> active_units_per_layer([0.5, 0.0, 0.2, 0.3, 0.001], [2, 3])
    [1, 2]
    """
    if sum(sizes) != len(variances):
        raise ValueError(f"{len(variances)} variances for layers of {list(sizes)} units")
    out, start = [], 0
    for s in sizes:
        out.append(int(sum(v > threshold for v in variances[start : start + s])))
        start += s
    return out


def fill_below(prior: HierarchicalPrior, z_top: Tensor) -> Tensor:
    """The whole latent vector for top-layer codes ``(..., s_L)``: each layer below at the
    mean of its conditional prior (deterministic, so the explorer's pictures do not flicker)."""
    return prior.fill_below(z_top)


class TopLayer:
    """A hierarchy seen through its top layer z_L, for the explorer: codes are q(z_L|x)'s
    means, the prior is the top prior, and decoding completes a code with :func:`fill_below`.

    ``TopLayer.of(model)`` is None for a model with one stochastic layer.
    """

    def __init__(self, model: VAE) -> None:
        self.model = model
        sizes = layer_sizes(model)
        assert sizes is not None
        self.sizes = sizes
        self.dim = sizes[-1]

    @classmethod
    def of(cls, model: VAE) -> TopLayer | None:
        return cls(model) if layer_sizes(model) is not None else None

    def describe(self) -> str:
        n = len(self.sizes)
        return (
            f"the top layer z{n} of {n} ({self.dim} units); the layers below are decoded at "
            "the prior's conditional means"
        )

    def posterior(self, q: Distribution) -> Distribution:
        """q(z_L | x) of a hierarchy's posterior."""
        assert isinstance(q, HierarchicalDistribution)
        return q.top

    def prior(self) -> Distribution:
        p = self.model.prior
        assert isinstance(p, HierarchicalPrior)
        return p.top

    def complete(self, z_top: Tensor) -> Tensor:
        p = self.model.prior
        assert isinstance(p, HierarchicalPrior)
        return fill_below(p, z_top)


# -- figures ----------------------------------------------------------------------------------


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
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

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
    from matplotlib.figure import Figure

    from vaekit.images import to_images
    from vaekit.plots import _show_images

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


def figure_reasons(run: Run) -> dict[str, str | None]:
    """For the figures of this module in ``vaekit plot``: None where one applies, else why not."""
    layered = layer_sizes(run) is not None
    # One-layer runs keep their figures; `vaekit sample --temperature` draws them cold too.
    tempered = None if layered else "one stochastic layer (vaekit sample --temperature T)"
    return {
        "layer_kl": None if layer_kl_terms(run.metrics) else "one stochastic layer (no kl_z1, ...)",
        "temperatures": tempered,
        "layer_resampling": None if layered else "one stochastic layer",
    }

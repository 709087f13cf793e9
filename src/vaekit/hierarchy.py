"""Per-layer views of a model with several stochastic layers (``model.posterior: hierarchical``).

The model itself keeps the one-latent contract (:mod:`vaekit.distributions.hierarchical`);
this module reads it layer by layer:

- :func:`layer_sizes`: the units of each layer, bottom first (None for one layer);
- :func:`kl_per_layer`: KL(q || p) of each layer over a split, and
  :func:`active_units_per_layer` (what ``vaekit evaluate`` reports for a hierarchy);
- :func:`fill_below`: a top-layer code completed downwards with the prior's conditional
  means (what the explorer decodes when it explores the top layer, see :class:`TopLayer`);
- its figures are drawn by :mod:`vaekit.plots` (:func:`vaekit.plots.layer_kl_curves`,
  :func:`vaekit.plots.temperature_samples`, :func:`vaekit.plots.layer_resampling`).

Example:
    >>> from vaekit.config import load_config
    >>> from vaekit.model import build_model
    >>> cfg = load_config(None, ["model.latent_dim=3", "model.posterior=hierarchical"])
    >>> layer_sizes(build_model(cfg.model, (1, 8, 8)))
    [3, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaekit.abilities import LayeredPosterior
from vaekit.distributions.hierarchical import (
    HierarchicalDistribution,
    HierarchicalPrior,
)

if TYPE_CHECKING:
    from vaekit.data import Split
    from vaekit.model import VAE
    from vaekit.rundir import Run

__all__ = [
    "layer_sizes",
    "kl_per_layer",
    "active_units_per_layer",
    "fill_below",
    "TopLayer",
]


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

"""Priors p(z): modules whose forward returns a Distribution over the latent vector."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

__all__ = ["StandardNormalPrior"]


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I).

    Example:
        >>> p = StandardNormalPrior(2)()
        >>> p.sample((3,)).shape
        torch.Size([3, 2])
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # Buffers so that .to(device) moves the prior with the model.
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1, validate_args=False)

"""Posterior heads: features from the encoder network to q(z | x) as a Distribution."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from vaekit.distributions.pointmass import PointMass

__all__ = ["LOGVAR_MIN", "LOGVAR_MAX", "GaussianPosterior", "PointPosterior", "diagonal_normal"]

# Log-variances outside this range only ever come from a diverging run; clamping keeps
# exp() finite and the KL term from overflowing (exp(12) ~ 1.6e5, exp(-20) ~ 2e-9).
LOGVAR_MIN = -20.0
LOGVAR_MAX = 12.0


def diagonal_normal(mean: Tensor, logvar: Tensor) -> Independent:
    """A Gaussian with diagonal covariance over the last dimension, from (mean, log-variance)."""
    std = torch.exp(0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))
    return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)


class GaussianPosterior(nn.Module):
    """Diagonal Gaussian q(z|x) = N(mu(x), diag(exp(logvar(x)))), reparameterized.

    Example:
        >>> head = GaussianPosterior(latent_dim=2)
        >>> q = head(torch.zeros(5, head.in_features))
        >>> q.batch_shape, q.event_shape
        (torch.Size([5]), torch.Size([2]))
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.in_features = 2 * latent_dim

    def forward(self, features: Tensor) -> Distribution:
        mean, logvar = features.chunk(2, dim=-1)
        return diagonal_normal(mean, logvar)


class PointPosterior(nn.Module):
    """Deterministic code z = f(x): the plain autoencoder as a member of the family."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.in_features = latent_dim

    def forward(self, features: Tensor) -> Distribution:
        return PointMass(features, event_dims=1)

"""Likelihood heads: decoder outputs to p(x | z) as a Distribution over a whole example.

A head receives the decoder's raw outputs shaped ``(*batch, k, *data_shape)``, where
``k = params_per_element`` (1 for Bernoulli logits, 2 for a Gaussian with learned
scale), and returns a Distribution whose event is the data shape, so ``log_prob(x)``
sums over pixels or columns and has shape ``batch``.

Bernoulli is built from logits: a cross-entropy computed on sigmoid outputs clamps
log(0) at -100 and gives wrong likelihoods near saturated pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import (
    Bernoulli,
    ContinuousBernoulli,
    Distribution,
    Independent,
    Normal,
)

__all__ = [
    "LikelihoodHead",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "ContinuousBernoulliLikelihood",
]

LOGSCALE_MIN = -7.0
LOGSCALE_MAX = 5.0


class LikelihoodHead(nn.Module):
    """Base class: ``params_per_element`` raw outputs per data element."""

    params_per_element: int = 1

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)

    def _independent(self, base: Distribution) -> Distribution:
        return Independent(base, len(self.data_shape), validate_args=False)


class BernoulliLikelihood(LikelihoodHead):
    """Independent Bernoulli per element, from logits (binary or [0, 1] data)."""

    def forward(self, params: Tensor) -> Distribution:
        return self._independent(Bernoulli(logits=params.squeeze(-len(self.data_shape) - 1), validate_args=False))


class ContinuousBernoulliLikelihood(LikelihoodHead):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1]."""

    def forward(self, params: Tensor) -> Distribution:
        logits = params.squeeze(-len(self.data_shape) - 1)
        return self._independent(ContinuousBernoulli(logits=logits, validate_args=False))


class GaussianLikelihood(LikelihoodHead):
    """Independent Gaussian per element with a fixed or a learned standard deviation.

    ``sigma`` a number: fixed (tutorial 002's Gaussian decoder with sigma = 1 is the
    squared error / 2 plus a constant). ``sigma="learned"``: the decoder outputs a
    log-scale per element as well as the mean.
    """

    def __init__(self, data_shape: tuple[int, ...], sigma: float | str = 1.0) -> None:
        super().__init__(data_shape)
        self.learned = sigma == "learned"
        self.params_per_element = 2 if self.learned else 1
        self.log_sigma = 0.0 if self.learned else math.log(float(sigma))

    def forward(self, params: Tensor) -> Distribution:
        axis = -len(self.data_shape) - 1
        if self.learned:
            mean, logscale = params.unbind(axis)
            scale = torch.exp(logscale.clamp(LOGSCALE_MIN, LOGSCALE_MAX))
        else:
            mean = params.squeeze(axis)
            scale = torch.full_like(mean, math.exp(self.log_sigma))
        return self._independent(Normal(mean, scale, validate_args=False))

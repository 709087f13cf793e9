"""Name -> factory tables for the parts of a model, read by the config validator and builder.

Each factory takes the model config and the shapes it needs and returns an nn.Module.
Adding a part is adding one entry here (and its class); nothing else branches on names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from vaekit.distributions import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    GaussianPosterior,
    PointPosterior,
    StandardNormalPrior,
)

__all__ = ["POSTERIORS", "PRIORS", "LIKELIHOODS"]

# posterior(model_cfg) -> head with .in_features
POSTERIORS: dict[str, Callable[[Any], nn.Module]] = {
    "gaussian": lambda m: GaussianPosterior(m.latent_dim),
    "point": lambda m: PointPosterior(m.latent_dim),
}

# prior(model_cfg) -> module whose forward() returns p(z)
PRIORS: dict[str, Callable[[Any], nn.Module]] = {
    "normal": lambda m: StandardNormalPrior(m.latent_dim),
}

# likelihood(model_cfg, data_shape) -> head with .params_per_element
LIKELIHOODS: dict[str, Callable[[Any, tuple[int, ...]], nn.Module]] = {
    "bernoulli": lambda m, shape: BernoulliLikelihood(shape),
    "continuous-bernoulli": lambda m, shape: ContinuousBernoulliLikelihood(shape),
    "gaussian": lambda m, shape: GaussianLikelihood(shape, m.sigma),
}

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
    CategoricalLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    GaussianPosterior,
    ImplicitPosterior,
    LikelihoodHead,
    MixturePrior,
    PointPosterior,
    PosteriorHead,
    StandardNormalPrior,
    StudentTLikelihood,
    VampPrior,
)
from vaekit.distributions.flows import IAF, Flow, FlowPosterior, PlanarFlow

__all__ = ["POSTERIORS", "PRIORS", "LIKELIHOODS", "FLOWS"]

# flow(model_cfg) -> Flow with .context_features; model.flow names one (or "none").
FLOWS: dict[str, Callable[[Any], Flow]] = {
    "planar": lambda m: PlanarFlow(m.latent_dim, m.flow_length),
    "iaf": lambda m: IAF(m.latent_dim, m.flow_length, m.flow_hidden),
}


def _gaussian(m: Any) -> PosteriorHead:
    if m.flow == "none":
        return GaussianPosterior(m.latent_dim)
    return FlowPosterior(m.latent_dim, FLOWS[m.flow](m))


def _implicit(m: Any) -> PosteriorHead:
    # The head reads as many features as the encoder's last hidden layer is wide.
    width = m.encoder.hidden[-1] if m.encoder.hidden else 256
    return ImplicitPosterior(m.latent_dim, width, m.noise_dim or m.latent_dim, m.encoder.activation)


# posterior(model_cfg) -> head with .in_features
POSTERIORS: dict[str, Callable[[Any], PosteriorHead]] = {
    "gaussian": _gaussian,
    "point": lambda m: PointPosterior(m.latent_dim),
    "implicit": _implicit,
}

# prior(model_cfg, data_shape) -> module whose forward(encoder) returns p(z)
PRIORS: dict[str, Callable[[Any, tuple[int, ...]], nn.Module]] = {
    "normal": lambda m, shape: StandardNormalPrior(m.latent_dim),
    "mog": lambda m, shape: MixturePrior(m.latent_dim, m.prior_components),
    "vamp": lambda m, shape: VampPrior(m.latent_dim, m.prior_components, shape),
}

# likelihood(model_cfg, data_shape) -> head with .params_per_element
LIKELIHOODS: dict[str, Callable[[Any, tuple[int, ...]], LikelihoodHead]] = {
    "bernoulli": lambda m, shape: BernoulliLikelihood(shape),
    "continuous-bernoulli": lambda m, shape: ContinuousBernoulliLikelihood(shape),
    "gaussian": lambda m, shape: GaussianLikelihood(shape, m.sigma),
    "student-t": lambda m, shape: StudentTLikelihood(shape, m.sigma, m.df),
    "categorical": lambda m, shape: CategoricalLikelihood(shape, m.levels),
    "discretized-logistic": lambda m, shape: DiscretizedLogisticLikelihood(
        shape, m.levels, m.likelihood_components
    ),
}

"""Posteriors, priors and likelihoods: modules whose forward returns a torch Distribution."""

from vaekit.distributions.likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    LikelihoodHead,
)
from vaekit.distributions.pointmass import PointMass
from vaekit.distributions.posteriors import GaussianPosterior, PointPosterior, diagonal_normal
from vaekit.distributions.priors import StandardNormalPrior

__all__ = [
    "BernoulliLikelihood",
    "ContinuousBernoulliLikelihood",
    "GaussianLikelihood",
    "LikelihoodHead",
    "PointMass",
    "GaussianPosterior",
    "PointPosterior",
    "diagonal_normal",
    "StandardNormalPrior",
]

"""Posteriors, priors, likelihoods and flows: modules whose forward returns a torch Distribution."""

from vaekit.distributions.codes import (
    CategoricalPrior,
    CodeHead,
    CodeSpace,
    GumbelPosterior,
    PixelCNNPrior,
    VQPosterior,
)
from vaekit.distributions.flows import IAF, Flow, FlowDistribution, FlowPosterior, PlanarFlow
from vaekit.distributions.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretizedLogisticLikelihood,
    DiscretizedLogisticMixture,
    GaussianLikelihood,
    LabelLikelihood,
    LikelihoodHead,
    QuantizedCategorical,
    StudentTLikelihood,
)
from vaekit.distributions.pointmass import PointMass
from vaekit.distributions.posteriors import (
    GaussianPosterior,
    ImplicitDistribution,
    ImplicitPosterior,
    PointPosterior,
    PosteriorHead,
    diagonal_normal,
    sample_with_log_prob,
)
from vaekit.distributions.priors import (
    ClassGaussianPrior,
    ClassVampPrior,
    DiagonalGaussianMixture,
    MixturePrior,
    StandardNormalPrior,
    VampPrior,
)
from vaekit.distributions.supervised import Predictor, classifier, fit_predictor, regressor

__all__ = [
    "CategoricalPrior",
    "CodeHead",
    "CodeSpace",
    "GumbelPosterior",
    "PixelCNNPrior",
    "VQPosterior",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "ContinuousBernoulliLikelihood",
    "DiscretizedLogisticLikelihood",
    "DiscretizedLogisticMixture",
    "GaussianLikelihood",
    "LabelLikelihood",
    "LikelihoodHead",
    "QuantizedCategorical",
    "StudentTLikelihood",
    "PointMass",
    "GaussianPosterior",
    "ImplicitDistribution",
    "ImplicitPosterior",
    "PointPosterior",
    "PosteriorHead",
    "diagonal_normal",
    "sample_with_log_prob",
    "ClassGaussianPrior",
    "ClassVampPrior",
    "DiagonalGaussianMixture",
    "MixturePrior",
    "StandardNormalPrior",
    "VampPrior",
    "Flow",
    "FlowDistribution",
    "FlowPosterior",
    "IAF",
    "PlanarFlow",
    "Predictor",
    "classifier",
    "fit_predictor",
    "regressor",
]

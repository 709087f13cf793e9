"""Every built-in part, one line each: the name a config uses and the class that is the part.

A part's class declares its options, abilities, checks and label (see
:mod:`vaekit.parts`); registering it here is all the rest of the library needs, and the
contract test (``tests/test_parts_contract.py``) walks these registries, so a part added
here is checked without being listed anywhere else. Anywhere a name goes, ``module:Class``
names a user's own part.

Example:
    >>> PRIORS.get("vamp").label(PRIORS.get("vamp").options(components=50))
    'vamp50'
    >>> OBJECTIVES.get("iwae").abilities.bound
    'iwae'
"""

from __future__ import annotations

from torch import nn

from vaekit.bounds import CIWAE, MIWAE, PIWAE
from vaekit.disentangle.objectives import DIPVAE, BetaTCVAE, CapacityELBO, FactorVAE
from vaekit.distributions.codes import (
    CategoricalPrior,
    FSQPosterior,
    GumbelPosterior,
    LFQPosterior,
    PixelCNNPrior,
    ResidualVQPosterior,
    VQPosterior,
)
from vaekit.distributions.flows import IAF, Flow, PlanarFlow
from vaekit.distributions.hierarchical import HierarchicalPosterior
from vaekit.distributions.hierarchical_conv import ConvHierarchicalPosterior
from vaekit.distributions.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    StudentTLikelihood,
)
from vaekit.distributions.posteriors import GaussianPosterior, ImplicitPosterior, PointPosterior
from vaekit.distributions.priors import (
    ClassGaussianPrior,
    ClassVampPrior,
    MixturePrior,
    StandardNormalPrior,
    VampPrior,
)
from vaekit.distributions.radial import RadialFlow
from vaekit.divergences import KLDivergence, MMDDivergence
from vaekit.nn import ConvNetwork, MLPNetwork
from vaekit.objectives import AVB, ELBO, IWAE, M2, AutoencoderLoss, Objective, PriorFit
from vaekit.parts import Registry, install_registries

__all__ = [
    "NETWORKS",
    "POSTERIORS",
    "FLOWS",
    "PRIORS",
    "LIKELIHOODS",
    "OBJECTIVES",
    "DIVERGENCES",
    "REGISTRIES",
]

NETWORKS = Registry("network", base=nn.Module)
NETWORKS.add("mlp", MLPNetwork)
NETWORKS.add("conv", ConvNetwork)

POSTERIORS = Registry("posterior", base=nn.Module)
POSTERIORS.add("gaussian", GaussianPosterior)
POSTERIORS.add("point", PointPosterior)
POSTERIORS.add("implicit", ImplicitPosterior)
POSTERIORS.add("hierarchical", HierarchicalPosterior)
POSTERIORS.add("hierarchical-conv", ConvHierarchicalPosterior)
POSTERIORS.add("vq", VQPosterior)
POSTERIORS.add("gumbel", GumbelPosterior)
POSTERIORS.add("rvq", ResidualVQPosterior)
POSTERIORS.add("fsq", FSQPosterior)
POSTERIORS.add("lfq", LFQPosterior)

FLOWS = Registry("flow", base=Flow)
FLOWS.add("planar", PlanarFlow)
FLOWS.add("iaf", IAF)
FLOWS.add("radial", RadialFlow)

PRIORS = Registry("prior", base=nn.Module)
PRIORS.add("normal", StandardNormalPrior)
PRIORS.add("mog", MixturePrior)
PRIORS.add("vamp", VampPrior)
PRIORS.add("class-gaussian", ClassGaussianPrior)
PRIORS.add("class-vamp", ClassVampPrior)
PRIORS.add("categorical", CategoricalPrior)
PRIORS.add("pixelcnn", PixelCNNPrior)

LIKELIHOODS = Registry("likelihood", base=nn.Module)
LIKELIHOODS.add("bernoulli", BernoulliLikelihood)
LIKELIHOODS.add("continuous-bernoulli", ContinuousBernoulliLikelihood)
LIKELIHOODS.add("gaussian", GaussianLikelihood)
LIKELIHOODS.add("student-t", StudentTLikelihood)
LIKELIHOODS.add("categorical", CategoricalLikelihood)
LIKELIHOODS.add("discretized-logistic", DiscretizedLogisticLikelihood)

OBJECTIVES = Registry("objective", base=Objective)
OBJECTIVES.add("elbo", ELBO)
OBJECTIVES.add("iwae", IWAE)
OBJECTIVES.add("avb", AVB)
OBJECTIVES.add("ae", AutoencoderLoss)
OBJECTIVES.add("miwae", MIWAE)
OBJECTIVES.add("piwae", PIWAE)
OBJECTIVES.add("ciwae", CIWAE)
OBJECTIVES.add("tcvae", BetaTCVAE)
OBJECTIVES.add("factorvae", FactorVAE)
OBJECTIVES.add("dipvae", DIPVAE)
OBJECTIVES.add("capacity", CapacityELBO)
OBJECTIVES.add("m2", M2)

# The term an ELBO-style objective weighs by beta (objective.divergence).
DIVERGENCES = Registry("divergence", base=nn.Module)
DIVERGENCES.add("kl", KLDivergence)
DIVERGENCES.add("mmd", MMDDivergence)
OBJECTIVES.add("prior-fit", PriorFit)

# The registry that serves each kind of part.
REGISTRIES = {
    r.kind: r for r in (NETWORKS, POSTERIORS, FLOWS, PRIORS, LIKELIHOODS, OBJECTIVES, DIVERGENCES)
}
# Parts that hold other parts (an objective's divergence) find them here at build time.
install_registries(REGISTRIES)

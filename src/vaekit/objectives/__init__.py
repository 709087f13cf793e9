"""Training objectives: a loss to minimise plus named per-example terms.

Shapes follow one convention everywhere: S Monte Carlo samples of z for a batch of
B examples are ``(S, B, D)``; per-sample log-weights are ``(S, B)``; per-example
terms are ``(B,)``.

- :class:`ELBO`: ``recon + beta * kl``, with KL warm-up and free bits.
- :class:`IWAE`: the importance-weighted bound with k samples (Burda et al. 2016).
- :class:`AVB`: adversarial variational Bayes (Mescheder et al. 2017): a discriminator
  estimates the KL term, so the posterior needs no density; two optimiser groups.
- :class:`AutoencoderLoss`: reconstruction only (the plain autoencoder).
- :class:`M2`: semi-supervised learning with a classifier q(y|x) (Kingma et al. 2014's
  M2): labelled examples add a cross-entropy, unlabelled ones sum over the classes.
- :class:`PriorFit`: a second stage that fits only the prior to the frozen encoder's
  posterior (VQ-VAE's PixelCNN over its codes); the ELBO it reports uses that prior.

A posterior may carry its own training loss and terms (VQ-VAE's commitment loss and
codebook perplexity: ``q.aux_loss`` and ``q.terms``, see :func:`posterior_extras`); every
objective adds them.

Every objective reports ``loss``, ``recon`` and (except the autoencoder) ``kl`` and
``elbo``, so metric lines read the same across objectives.

One module per family: :mod:`~vaekit.objectives.base` (the contract, the KL estimators,
warm-up), :mod:`~vaekit.objectives.elbo`, :mod:`~vaekit.objectives.iwae` (with MIWAE,
PIWAE, CIWAE), :mod:`~vaekit.objectives.avb`, :mod:`~vaekit.objectives.ae`,
:mod:`~vaekit.objectives.prior_fit`, :mod:`~vaekit.objectives.m2`; every name is importable from here. The
disentangling objectives live in :mod:`vaekit.disentangle.objectives`.

Example:
    >>> import torch
    >>> from vaekit.config import ModelConfig
    >>> from vaekit.model import build_model
    >>> model = build_model(ModelConfig(latent_dim=2), (1, 8, 8))
    >>> out = ELBO(samples=4)(model, torch.rand(6, 1, 8, 8).round())
    >>> sorted(out.terms), out.terms["kl"].shape
    (['elbo', 'kl', 'loss', 'recon'], torch.Size([6]))
"""

from vaekit.objectives.ae import AutoencoderLoss
from vaekit.objectives.avb import AVB, Discriminator, DiscriminatorObjective, discriminator_groups
from vaekit.objectives.base import (
    KL_MODES,
    Objective,
    ObjectiveOutput,
    build_objective,
    iwae_bound,
    kl_per_dim,
    kl_per_layer,
    kl_term,
    layer_terms,
    posterior_extras,
    warmup_epochs,
)
from vaekit.objectives.elbo import ELBO, build_divergence
from vaekit.objectives.iwae import (
    CIWAE,
    IWAE,
    MIWAE,
    PIWAE,
    importance_weights,
    log_prob_fixed,
    miwae_bound,
    weight_terms,
)
from vaekit.objectives.m2 import M2, class_bounds
from vaekit.objectives.prior_fit import PriorFit

__all__ = [
    "ObjectiveOutput",
    "Objective",
    "ELBO",
    "IWAE",
    "MIWAE",
    "PIWAE",
    "CIWAE",
    "AVB",
    "AutoencoderLoss",
    "PriorFit",
    "M2",
    "class_bounds",
    "posterior_extras",
    "Discriminator",
    "discriminator_groups",
    "DiscriminatorObjective",
    "kl_term",
    "kl_per_dim",
    "kl_per_layer",
    "layer_terms",
    "log_prob_fixed",
    "importance_weights",
    "weight_terms",
    "iwae_bound",
    "miwae_bound",
    "build_divergence",
    "KL_MODES",
    "build_objective",
    "warmup_epochs",
]

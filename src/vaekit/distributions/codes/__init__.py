"""Discrete latent codes: posteriors and priors whose z is a code.

The code is z, its posterior and prior are Distributions, and the bound is reported in
nats, as for every other model (DESIGN.md). A discrete posterior head writes z and reads
it back through three methods (:class:`CodeHead`): ``codes(z)`` gives the code index at
each of its P positions, ``embed(codes)`` the z of given codes, and ``onehot(z)`` the
one-hot rows of z's codes ``(..., P, K)``. Priors over codes (``categorical``,
``pixelcnn``) are built from the encoder as the VampPrior is, and score z through its
head, so any prior fits any discrete posterior:

- ``gumbel``: N categorical variables of K classes each (Jang et al. 2017; Maddison et
  al. 2017); z is N one-hot rows, relaxed by the Gumbel-softmax while training (with
  temperature annealing, optionally straight-through) and exact one-hot draws in
  evaluation. ``log_prob`` of a one-hot z is the categorical log-probability, so the
  importance-sampled likelihood is the usual estimator; the KL against a categorical
  prior is exact (analytic).
- ``vq``: VQ-VAE (van den Oord et al. 2017): a codebook of K vectors, the nearest code
  at each of P positions, the straight-through gradient and the commitment loss, with
  EMA codebook updates (Razavi et al. 2019) and restarts of dead codes. The posterior
  is a point mass on one code (log q = 0), so KL = -log p(z_q) and the ELBO is
  log p(x | z_q) + log p(z_q).
- ``rvq``: residual VQ (Zeghidour et al. 2021; Lee et al. 2022): Q ``vq`` codebooks in
  a stack, each coding what the ones before left, with quantizer dropout so that any
  prefix decodes; a code is its Q indices.
- ``fsq``: finite scalar quantization (Mentzer et al. 2023): each channel bounded and
  rounded to a few levels; a code is the mixed-radix number of its levels.
- ``lfq``: lookup-free quantization (Yu et al. 2023): each channel's sign is a bit, a
  code the number of its bits, with an entropy penalty that keeps the codes in use.
- ``categorical`` prior: independent positions, uniform or learned.
- ``pixelcnn`` prior: a gated PixelCNN (van den Oord et al. 2016) over the code grid,
  trained jointly or as a second stage (``vaekit train --resume RUN --stage prior``).

A code made of digits (FSQ levels, LFQ bits, residual quantizers' codes) is one index
for the priors while its codes number at most :data:`MAX_CODES` per position; with
``factorised`` (the default above that) a prior models the digits as positions of their
own instead (:class:`DigitView`).

One module per part: :mod:`~vaekit.distributions.codes.base` (what they share),
:mod:`~vaekit.distributions.codes.gumbel`, :mod:`~vaekit.distributions.codes.vq`,
:mod:`~vaekit.distributions.codes.rvq`, :mod:`~vaekit.distributions.codes.fsq`,
:mod:`~vaekit.distributions.codes.lfq`,
:mod:`~vaekit.distributions.codes.categorical`, :mod:`~vaekit.distributions.codes.pixelcnn`;
every name is importable from here.

Example:
    >>> import torch
    >>> from vaekit.config import ModelConfig, part
    >>> from vaekit.model import build_model
    >>> cfg = ModelConfig(latent_dim=20, posterior=part("gumbel", categories=10),
    ...                   prior=part("categorical"))
    >>> model = build_model(cfg, (1, 8, 8))
    >>> z = model.encode(torch.rand(3, 1, 8, 8)).rsample()   # (3, 20): two one-hot rows of 10
    >>> model.prior.log_prob(z).shape                         # log 10**-2 each
    torch.Size([3])
"""

from vaekit.distributions.codes.base import (
    DEAD_SHARE,
    MAX_CODES,
    MAX_ENUMERATE,
    CodeDistribution,
    CodeHead,
    CodeSpace,
    DigitView,
    FactoredHead,
    code_grid,
    code_head,
    code_usage,
    join_digits,
    shown_head,
    split_index,
)
from vaekit.distributions.codes.categorical import CategoricalCodes, CategoricalPrior
from vaekit.distributions.codes.fsq import FSQPosterior
from vaekit.distributions.codes.gumbel import GumbelCodes, GumbelPosterior
from vaekit.distributions.codes.lfq import LFQPosterior
from vaekit.distributions.codes.pixelcnn import GatedPixelCNN, PixelCNNCodes, PixelCNNPrior
from vaekit.distributions.codes.rvq import ResidualVQPosterior
from vaekit.distributions.codes.vq import QuantisedCodes, VQPosterior, kmeans

__all__ = [
    "CodeSpace",
    "code_grid",
    "CodeHead",
    "CodeDistribution",
    "GumbelCodes",
    "GumbelPosterior",
    "QuantisedCodes",
    "VQPosterior",
    "kmeans",
    "ResidualVQPosterior",
    "FSQPosterior",
    "LFQPosterior",
    "FactoredHead",
    "DigitView",
    "join_digits",
    "split_index",
    "MAX_CODES",
    "shown_head",
    "CategoricalCodes",
    "CategoricalPrior",
    "GatedPixelCNN",
    "PixelCNNCodes",
    "PixelCNNPrior",
    "code_head",
    "code_usage",
    "MAX_ENUMERATE",
    "DEAD_SHARE",
]

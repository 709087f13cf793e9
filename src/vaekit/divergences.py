"""Divergences: the term an ELBO-style objective weighs by ``beta`` against the reconstruction.

``objective.divergence`` chooses one (``objective: {name: elbo, divergence: mmd, beta: 10}``):

- :class:`KLDivergence` (``kl``, the default): KL(q(z|x) || p(z)) per example, estimated as
  ``objective.kl`` says (closed form where torch registers one, else Monte Carlo). This is
  the VAE and the beta-VAE.
- :class:`MMDDivergence` (``mmd``): the maximum mean discrepancy between the batch's codes
  z ~ q(z|x) and as many draws of the prior: it matches the *aggregate* posterior q(z) to
  p(z) instead of every q(z|x). With it the ELBO objective trains the MMD-VAE of InfoVAE
  (Zhao et al. 2017, their alpha = 1, lambda = ``beta``) and the WAE-MMD of Tolstikhin et
  al. (2018) with a Gaussian encoder (lambda = ``beta``).

Whatever the divergence, the objective still reports the KL and the ELBO, which stay the
model's bound on log p(x), so runs trained with different divergences compare on it.

A divergence of yours (``divergence: mymodule:MyDivergence``) is built as
``Class(**options)``; ``forward(q, p, z, kl)`` gets the posterior, the prior, the samples
z ``(S, B, D)`` and the objective's KL estimate ``(B,)``, and returns the divergence per
example ``(B,)``. Its ``abilities`` (:class:`vaekit.parts.DivergenceAbilities`) say whether
it is the KL itself and whether it is per example; ``term`` names it in the metrics.

Example:
    >>> from vaekit.distributions import diagonal_normal
    >>> q = diagonal_normal(torch.zeros(64, 2), torch.zeros(64, 2))
    >>> p = diagonal_normal(torch.zeros(2), torch.zeros(2))
    >>> d = MMDDivergence()(q, p, q.sample((1,)), torch.zeros(64))
    >>> d.shape, abs(float(d[0])) < 0.05   # q(z) is p(z) here
    (torch.Size([64]), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.parts import Composition, DivergenceAbilities
from vaekit.validate import check_choice, check_nonneg

__all__ = ["Divergence", "KLDivergence", "MMDDivergence", "mmd", "KERNELS"]

KERNELS = ("imq", "rbf")


class Divergence(nn.Module):
    """Base class: ``forward(q, p, z, kl) -> (B,)``; ``term`` names it in the metrics."""

    abilities = DivergenceAbilities()
    term = "divergence"

    def forward(
        self, q: Distribution, p: Distribution, z: Tensor, kl: Tensor
    ) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class KLDivergence(Divergence):
    """KL(q(z|x) || p(z)) per example: the VAE's own divergence (estimated as ``objective.kl`` says)."""

    abilities = DivergenceAbilities(kl=True, per_example=True)
    term = "kl"

    @staticmethod
    def label(o: object) -> str:
        return "KL"

    def forward(self, q: Distribution, p: Distribution, z: Tensor, kl: Tensor) -> Tensor:
        return kl


def _sq_dist(a: Tensor, b: Tensor) -> Tensor:
    # Expanded, not torch.cdist: cdist's gradient is NaN at distance zero (the diagonal).
    d2 = (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min(0.0)


def _kernel(d2: Tensor, kernel: str, scale: float) -> Tensor:
    if kernel == "imq":
        return scale / (scale + d2)
    return torch.exp(-d2 / scale)


def mmd(a: Tensor, b: Tensor, kernel: str = "imq", scale: float = 0.0) -> Tensor:
    """The unbiased estimate (U-statistic) of MMD^2 between samples ``a`` (n, D) and ``b`` (m, D).

    ``kernel``: ``imq``, C / (C + |x - y|^2) (Tolstikhin et al. 2018), or ``rbf``,
    exp(-|x - y|^2 / C) (Zhao et al. 2017); ``scale`` C, 0 for 2 D (the choice of
    Tolstikhin et al. for a prior of unit variance). Unbiased, so it can be slightly
    negative when the two distributions are the same.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> same = mmd(torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g))
        >>> apart = mmd(torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) + 3)
        >>> abs(float(same)) < 0.01, float(apart) > 0.3
        (True, True)
    """
    n, m = len(a), len(b)
    c = scale if scale > 0 else 2.0 * a.shape[-1]
    kaa = _kernel(_sq_dist(a, a), kernel, c)
    kbb = _kernel(_sq_dist(b, b), kernel, c)
    kab = _kernel(_sq_dist(a, b), kernel, c)
    # The diagonals k(x, x) are left out: with them the estimate is biased upwards.
    within_a = (kaa.sum() - kaa.diagonal().sum()) / max(n * (n - 1), 1)
    within_b = (kbb.sum() - kbb.diagonal().sum()) / max(m * (m - 1), 1)
    return within_a + within_b - 2.0 * kab.mean()


class MMDDivergence(Divergence):
    """MMD^2 between the batch's codes and draws of the prior (InfoVAE's MMD-VAE, WAE-MMD).

    One number for the batch, which each example reports: the codes of all S samples of
    all B examples are compared with S x B draws of p(z). It needs no density of q, only
    samples, and pushes the aggregate posterior q(z) towards p(z) while each q(z|x) stays
    free to be narrow (so the codes keep information about x that a large KL weight
    would remove).
    """

    @dataclass
    class Options:
        # imq: inverse multiquadratic C / (C + |x - y|^2) (WAE) | rbf: exp(-|x - y|^2 / C) (InfoVAE)
        kernel: str = "imq"
        # The kernel's scale C; 0 = 2 x latent_dim, for a prior of unit variance.
        scale: float = 0.0

        def validate(self, where: str) -> None:
            check_choice(f"{where}.kernel", self.kernel, KERNELS)
            check_nonneg(f"{where}.scale", self.scale)

    abilities = DivergenceAbilities(kl=False, per_example=False)
    term = "mmd"

    @staticmethod
    def check(o: MMDDivergence.Options, parts: Composition) -> str | None:
        if parts.prior.learned:
            return (
                f"objective.divergence=mmd compares the codes with draws of the prior, which carry "
                f"no gradient to a learned prior ({parts.names.get('prior', 'this prior')}): use "
                "model.prior=normal, or objective.divergence=kl"
            )
        if parts.posterior.layered:
            return (
                f"objective.divergence=mmd compares the codes with draws of model.prior, but "
                f"{parts.names.get('posterior', 'this posterior')} has several stochastic layers "
                "whose conditional priors that comparison never reaches: use objective.divergence=kl"
            )
        return None

    @staticmethod
    def label(o: MMDDivergence.Options) -> str:
        return f"MMD {o.kernel}" + (f" C={o.scale:g}" if o.scale else "")

    def __init__(self, kernel: str = "imq", scale: float = 0.0) -> None:
        super().__init__()
        self.kernel = kernel
        self.scale = scale

    def forward(self, q: Distribution, p: Distribution, z: Tensor, kl: Tensor) -> Tensor:
        codes = z.reshape(-1, z.shape[-1])
        draws = p.sample(torch.Size([len(codes)])).reshape(len(codes), -1)
        value = mmd(codes, draws, self.kernel, self.scale)
        return value.expand(kl.shape)

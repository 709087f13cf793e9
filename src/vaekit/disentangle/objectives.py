"""Objectives that trade reconstruction for a structured aggregate posterior q(z).

Each is a registered objective part (``objective: {name: tcvae, beta: 6}``); every one
reports ``recon``, ``kl`` and the unweighted ``elbo`` (the bound the best epoch is chosen
by), so runs of different objectives compare on the same bound, plus its own terms:

- :class:`BetaTCVAE` (``tcvae``, Chen et al. 2018): the KL split into index-code mutual
  information, total correlation and dimension-wise KL, each with its own weight; q(z)
  estimated on the minibatch by minibatch-weighted (``mws``) or -stratified (``mss``)
  sampling, which needs the number of training examples (the trainer passes it).
- :class:`FactorVAE` (``factorvae``, Kim & Mnih 2018): the ELBO plus ``gamma`` times the
  total correlation estimated by a discriminator that tells codes from codes whose
  dimensions were shuffled across the batch; the discriminator is a second optimiser.
- :class:`DIPVAE` (``dipvae``, Kumar et al. 2018): the ELBO plus a penalty that moves the
  covariance of q(z) (type ``ii``) or of the posterior means (type ``i``) to the prior's.
- :class:`CapacityELBO` (``capacity``, Burgess et al. 2018): reconstruction plus
  ``gamma |KL - C|`` with a target C that grows linearly from 0 to ``capacity`` nats.

Example:
    >>> from vaekit.config import ModelConfig
    >>> from vaekit.model import build_model
    >>> model = build_model(ModelConfig(latent_dim=3), (1, 8, 8))
    >>> out = BetaTCVAE(beta=6.0)(model, torch.rand(16, 1, 8, 8).round())
    >>> sorted(out.terms)
    ['dwkl', 'elbo', 'kl', 'loss', 'mi', 'recon', 'tc']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent

from vaekit.nn import MLP
from vaekit.objectives import (
    KL_MODES,
    DiscriminatorObjective,
    Objective,
    ObjectiveOutput,
    kl_term,
)
from vaekit.parts import Composition, ObjectiveAbilities
from vaekit.validate import check_choice, check_nonneg, check_positive, check_widths

if TYPE_CHECKING:
    from vaekit.vae import VAE

__all__ = [
    "BetaTCVAE",
    "FactorVAE",
    "DIPVAE",
    "CapacityELBO",
    "TC_ESTIMATORS",
    "kl_decomposition",
    "permute_dims",
]

# How q(z) is estimated on a minibatch (Chen et al. 2018, Section 3.2 and Appendix C).
TC_ESTIMATORS = ("mws", "mss")


def _recon_and_kl(
    model: VAE, x: Tensor, y: Tensor | None, samples: int, kl_mode: str
) -> tuple[Distribution, Distribution, Tensor, Tensor, Tensor]:
    """q(z|x), p(z), z ``(S, B, D)``, -E_q log p(x|z) ``(B,)`` and KL(q || p) ``(B,)``."""
    q = model.encode(x, y)
    prior = model.prior
    z = q.rsample((samples,))
    recon = -model.decode(z, y).log_prob(x).mean(0)
    return q, prior, z, recon, kl_term(q, prior, z, kl_mode)


def _marginals(dist: Distribution, what: str) -> Distribution:
    """The per-dimension distribution under an ``Independent`` over the last dimension."""
    if isinstance(dist, Independent) and dist.reinterpreted_batch_ndims == 1:
        return dist.base_dist
    raise TypeError(
        f"{what} must factorise over latent dimensions (Independent over one dimension), "
        f"got {type(dist).__name__}"
    )


def _factorised_parts(name: str, parts: Composition, *, gaussian: bool = False) -> str | None:
    """Why a posterior or prior does not suit an objective built on per-dimension densities."""
    post = parts.posterior.gaussian if gaussian else parts.posterior.factorised
    if not post:
        kind = "a diagonal Gaussian" if gaussian else "a factorised"
        return (
            f"objective.name={name} needs {kind} posterior (per-dimension densities and moments); "
            f"{parts.names.get('posterior', 'this posterior')}"
            f"{' with a flow' if parts.flow else ''} is not one: use model.posterior=gaussian "
            "and model.flow=none"
        )
    if not parts.prior.factorised:
        return (
            f"objective.name={name} measures q(z) against a prior that factorises over latent "
            f"dimensions; {parts.names.get('prior', 'this prior')} does not: use model.prior=normal"
        )
    return None


def kl_decomposition(
    q: Distribution,
    prior: Distribution,
    z: Tensor,
    dataset_size: int,
    estimator: str = "mws",
) -> dict[str, Tensor]:
    """Chen et al. (2018)'s split of E KL(q(z|x) || p(z)) on a minibatch, per example ``(B,)``.

    ``mi`` = log q(z|x) - log q(z) (index-code mutual information), ``tc`` = log q(z) -
    sum_j log q(z_j) (total correlation), ``dwkl`` = sum_j log q(z_j) - log p(z_j)
    (dimension-wise KL), each averaged over the S samples of z ``(S, B, D)``; the three
    add up to the single-sample KL estimate log q(z|x) - log p(z) whatever the estimator.

    q(z_i) = (1/N) sum_n q(z_i | x_n) over the N training examples is estimated from the
    B examples of the batch. ``mws`` (minibatch weighted sampling, Chen et al. eq. S6 and
    their code): log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(N B); it is biased by a
    constant per term (the terms' sum is not), which moves none of the gradients.
    ``mss`` (minibatch stratified sampling): the example's own posterior weighted 1/N and
    the other B - 1, a uniform draw of the other N - 1 examples, (N - 1) / (N (B - 1))
    each: an unbiased estimate of q(z_i). ``dataset_size`` 0 takes the batch as the data
    set (N = B).
    """
    check_choice("estimator", estimator, TC_ESTIMATORS)
    qd = _marginals(q, "q(z|x)")
    pd = _marginals(prior, "p(z)")
    b = z.shape[-2]
    n = max(dataset_size, b)
    # log q(z_{s,i,d} | x_j): (S, B, B, D), i the sample's own example, j the batch's.
    log_qzd = qd.log_prob(z.unsqueeze(-2))
    log_q_joint = log_qzd.sum(-1)  # (S, B, B)
    if estimator == "mws":
        log_w = torch.full((b, b), -math.log(n * b), device=z.device, dtype=z.dtype)
    else:
        other = math.log(n - 1) - math.log(n * (b - 1)) if b > 1 else -math.inf
        log_w = torch.full((b, b), other, device=z.device, dtype=z.dtype)
        log_w.fill_diagonal_(-math.log(n))
    log_qz = torch.logsumexp(log_q_joint + log_w, dim=-1)  # (S, B)
    log_qz_prod = torch.logsumexp(log_qzd + log_w.unsqueeze(-1), dim=-2).sum(-1)  # (S, B)
    log_q_own = qd.log_prob(z).sum(-1)  # log q(z_i | x_i)
    log_pz = pd.log_prob(z).sum(-1)
    return {
        "mi": (log_q_own - log_qz).mean(0),
        "tc": (log_qz - log_qz_prod).mean(0),
        "dwkl": (log_qz_prod - log_pz).mean(0),
    }


class BetaTCVAE(Objective):
    """beta-TCVAE (Chen et al. 2018): alpha MI + beta TC + gamma dimension-wise KL.

    loss = E_q[-log p(x|z)] + alpha * MI + beta * TC + gamma * DWKL, the KL's three parts
    estimated on the minibatch (:func:`kl_decomposition`); alpha = beta = gamma = 1 is the
    VAE. The ``kl`` and ``elbo`` terms use ``objective.kl``'s estimate of the KL, so the
    bound reported is the model's ELBO. With ``mws`` the ``loss``, ``mi``, ``tc`` and
    ``dwkl`` terms carry the estimator's constant offsets (see :func:`kl_decomposition`):
    compare runs on ``elbo``.
    """

    @dataclass
    class Options:
        # Monte Carlo samples S of z per example.
        samples: int = 1
        # Weight of the total correlation (Chen et al. sweep 1..10 on dSprites).
        beta: float = 6.0
        # Weight of the index-code mutual information.
        alpha: float = 1.0
        # Weight of the dimension-wise KL.
        gamma: float = 1.0
        # q(z) on the minibatch: mws (minibatch weighted) | mss (minibatch stratified).
        estimator: str = "mws"
        # How the reported KL is estimated: auto | analytic | mc.
        kl: str = "auto"

        def validate(self, where: str) -> None:
            check_positive(f"{where}.samples", self.samples)
            for key in ("alpha", "beta", "gamma"):
                check_nonneg(f"{where}.{key}", getattr(self, key))
            check_choice(f"{where}.estimator", self.estimator, TC_ESTIMATORS)
            check_choice(f"{where}.kl", self.kl, KL_MODES)

    abilities = ObjectiveAbilities(bound="elbo", bound_label="ELBO")

    @staticmethod
    def check(o: BetaTCVAE.Options, parts: Composition) -> str | None:
        return _factorised_parts("tcvae", parts)

    @staticmethod
    def label(o: BetaTCVAE.Options) -> str:
        return f"beta-TCVAE (beta={o.beta:g}, {o.estimator})"

    def __init__(
        self,
        samples: int = 1,
        beta: float = 6.0,
        alpha: float = 1.0,
        gamma: float = 1.0,
        estimator: str = "mws",
        kl: str = "auto",
    ) -> None:
        super().__init__()
        self.samples, self.alpha, self.beta, self.gamma = samples, alpha, beta, gamma
        self.estimator = estimator
        self.kl_mode = kl

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        q, prior, z, recon, kl = _recon_and_kl(model, x, y, self.samples, self.kl_mode)
        parts = kl_decomposition(q, prior, z, self.dataset_size, self.estimator)
        reg = self.alpha * parts["mi"] + self.beta * parts["tc"] + self.gamma * parts["dwkl"]
        loss_b = recon + reg
        terms = {"loss": loss_b, "recon": recon, "kl": kl, "elbo": -(recon + kl), **parts}
        return ObjectiveOutput(loss_b.mean(), terms)


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each latent dimension shuffled across the rows on its own: draws from the product
    of q(z)'s marginals, given draws ``(N, D)`` from q(z) (Kim & Mnih 2018, Algorithm 1)."""
    order = torch.rand(z.shape, device=z.device, generator=generator).argsort(dim=0)
    return z.gather(0, order)


class FactorVAE(DiscriminatorObjective):
    """FactorVAE (Kim & Mnih 2018): the ELBO plus gamma times a discriminator's total correlation.

    A discriminator T(z) learns to tell codes z ~ q(z) (a posterior draw for each
    example of the batch) from codes whose dimensions were shuffled across the batch
    (draws of the product of marginals); at its optimum T(z) = log q(z) / prod_j q(z_j),
    so T averaged over the batch estimates the total correlation. Two optimisers, as in
    adversarial VB: the model minimises recon + beta KL + gamma T(z) (T held fixed), the
    discriminator its logistic loss on the two kinds of codes (the shuffled ones detached).
    """

    @dataclass
    class Options:
        # Monte Carlo samples S of z per example.
        samples: int = 1
        # Weight of the total correlation (Kim & Mnih sweep 10..100 on dSprites).
        gamma: float = 10.0
        # Weight of the KL (1 in the paper).
        beta: float = 1.0
        # How the KL is estimated: auto | analytic | mc.
        kl: str = "auto"
        # Hidden widths of the discriminator T(z) (the paper: 6 layers of 1000).
        discriminator: list[int] = field(default_factory=lambda: [1000] * 6)

        def validate(self, where: str) -> None:
            check_positive(f"{where}.samples", self.samples)
            check_nonneg(f"{where}.gamma", self.gamma)
            check_nonneg(f"{where}.beta", self.beta)
            check_choice(f"{where}.kl", self.kl, KL_MODES)
            check_widths(f"{where}.discriminator", self.discriminator)

    abilities = ObjectiveAbilities(
        bound="elbo", bound_label="ELBO", optimizers=("model", "discriminator")
    )

    @staticmethod
    def check(o: FactorVAE.Options, parts: Composition) -> str | None:
        if not parts.prior.factorised:
            # The penalty makes q(z) factorise; against a prior that does not, the KL pulls
            # the other way and the two terms fight.
            return (
                "objective.name=factorvae pushes q(z) to factorise over latent dimensions, "
                f"which {parts.names.get('prior', 'this prior')} does not: use model.prior=normal"
            )
        return None

    @staticmethod
    def label(o: FactorVAE.Options) -> str:
        return f"FactorVAE (gamma={o.gamma:g})"

    def __init__(
        self,
        samples: int = 1,
        gamma: float = 10.0,
        beta: float = 1.0,
        kl: str = "auto",
        discriminator: Sequence[int] = (1000,) * 6,
    ) -> None:
        super().__init__()
        self.samples, self.gamma, self.beta = samples, gamma, beta
        self.kl_mode = kl
        self.hidden = list(discriminator)
        self.discriminator = None

    def build_discriminator(self, model: VAE) -> nn.Module:
        return MLP(model.latent_dim, self.hidden, 1, "leaky_relu")

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        critic = self.critic(model)
        q, prior, z, recon, kl = _recon_and_kl(model, x, y, self.samples, self.kl_mode)
        codes = z.reshape(-1, z.shape[-1])
        t_q = critic(codes).reshape(z.shape[:-1])  # (S, B): log-odds "joint"
        tc = t_q.mean(0)
        t_perm = critic(permute_dims(codes.detach())).reshape(z.shape[:-1])
        # Backpropagated into each group's own parameters only (the trainer passes inputs=).
        disc_b = (F.softplus(-t_q) + F.softplus(t_perm)).mean(0)
        model_b = recon + self.beta * kl + self.gamma * tc
        terms = {
            "loss": model_b,
            "recon": recon,
            "kl": kl,
            "elbo": -(recon + kl),
            "tc": tc,
            "disc": disc_b,
        }
        model_loss = model_b.mean()
        return ObjectiveOutput(
            model_loss, terms, {"model": model_loss, "discriminator": disc_b.mean()}
        )


DIP_TYPES = ("i", "ii")


class DIPVAE(Objective):
    """DIP-VAE (Kumar et al. 2018): the ELBO plus a penalty on the covariance of q(z).

    Type ``i`` penalises the covariance of the posterior means, Cov_x[mu(x)]; type ``ii``
    that of the aggregate posterior, Cov_x[mu(x)] + E_x[diag sigma^2(x)]. Its off-diagonal
    entries are pushed to 0 (weight ``lambda_od``) and its diagonal to the prior's
    variances (weight ``lambda_d``), both over the batch; one number per batch, which
    each example reports as ``dip``.
    """

    @dataclass
    class Options:
        # i: the covariance of the posterior means | ii: that of q(z).
        type: str = "ii"
        # Weight of the off-diagonal entries (Kumar et al.; disentanglement_lib sweeps 1..50).
        lambda_od: float = 10.0
        # Weight of the diagonal; None = 10 x lambda_od for type i, lambda_od for type ii
        # (Kumar et al.'s and disentanglement_lib's choice).
        lambda_d: float | None = None
        # Monte Carlo samples S of z per example.
        samples: int = 1
        # Weight of the KL term.
        beta: float = 1.0
        # How the KL is estimated: auto | analytic | mc.
        kl: str = "auto"

        def validate(self, where: str) -> None:
            check_choice(f"{where}.type", self.type, DIP_TYPES)
            check_nonneg(f"{where}.lambda_od", self.lambda_od)
            if self.lambda_d is not None:
                check_nonneg(f"{where}.lambda_d", self.lambda_d)
            check_positive(f"{where}.samples", self.samples)
            check_nonneg(f"{where}.beta", self.beta)
            check_choice(f"{where}.kl", self.kl, KL_MODES)

    abilities = ObjectiveAbilities(bound="elbo", bound_label="ELBO")

    @staticmethod
    def check(o: DIPVAE.Options, parts: Composition) -> str | None:
        return _factorised_parts("dipvae", parts, gaussian=True)

    @staticmethod
    def label(o: DIPVAE.Options) -> str:
        return f"DIP-VAE-{o.type.upper()} (lambda_od={o.lambda_od:g})"

    def __init__(
        self,
        type: str = "ii",
        lambda_od: float = 10.0,
        lambda_d: float | None = None,
        samples: int = 1,
        beta: float = 1.0,
        kl: str = "auto",
    ) -> None:
        super().__init__()
        self.variant = type  # not self.type: nn.Module.type is a method
        self.lambda_od = lambda_od
        self.lambda_d = (10.0 if type == "i" else 1.0) * lambda_od if lambda_d is None else lambda_d
        self.samples, self.beta, self.kl_mode = samples, beta, kl

    def penalty(self, q: Distribution, prior: Distribution) -> Tensor:
        """The batch's covariance penalty (a scalar)."""
        mu = q.mean
        centred = mu - mu.mean(0)
        cov = centred.T @ centred / max(len(mu), 1)
        if self.variant == "ii":
            cov = cov + torch.diag(_marginals(q, "q(z|x)").variance.mean(0))
        target = _marginals(prior, "p(z)").variance.expand(cov.shape[:1])
        diag = torch.diagonal(cov)
        off = cov - torch.diag(diag)
        return self.lambda_od * off.pow(2).sum() + self.lambda_d * (diag - target).pow(2).sum()

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        q, prior, z, recon, kl = _recon_and_kl(model, x, y, self.samples, self.kl_mode)
        dip = self.penalty(q, prior).expand(kl.shape)
        loss_b = recon + self.beta * kl + dip
        terms = {"loss": loss_b, "recon": recon, "kl": kl, "elbo": -(recon + kl), "dip": dip}
        return ObjectiveOutput(loss_b.mean(), terms)


class CapacityELBO(Objective):
    """Controlled capacity increase (Burgess et al. 2018): recon + gamma |KL - C|.

    The target C grows linearly from 0 to ``capacity`` nats over the first
    ``capacity_epochs`` epochs (counted in training examples seen, so it moves every
    step) and then stays; the KL of the batch is held near it, which lets the code take
    information in gradually. The count is a buffer of the objective, saved in every
    checkpoint, so a resumed run continues the schedule exactly. Used outside the
    trainer (no data set size known), C is ``capacity`` from the start.
    """

    @dataclass
    class Options:
        # The final capacity C_max in nats (Burgess et al.: 25 on dSprites).
        capacity: float = 25.0
        # Epochs over which C grows from 0 to capacity.
        capacity_epochs: float = 10.0
        # Weight of |KL - C| (Burgess et al.: 1000 on dSprites).
        gamma: float = 1000.0
        # Monte Carlo samples S of z per example.
        samples: int = 1
        # How the KL is estimated: auto | analytic | mc.
        kl: str = "auto"

        def validate(self, where: str) -> None:
            check_nonneg(f"{where}.capacity", self.capacity)
            check_nonneg(f"{where}.capacity_epochs", self.capacity_epochs)
            check_nonneg(f"{where}.gamma", self.gamma)
            check_positive(f"{where}.samples", self.samples)
            check_choice(f"{where}.kl", self.kl, KL_MODES)

    abilities = ObjectiveAbilities(bound="elbo", bound_label="ELBO")

    @staticmethod
    def check(o: CapacityELBO.Options, parts: Composition) -> str | None:
        if not parts.posterior.stochastic:
            # A deterministic code's KL is -log p(code): no encoder gradient to steer it
            # towards C, and the posterior's own losses (VQ's commitment) are not this one's.
            return (
                f"objective.name=capacity steers the KL of a stochastic posterior; "
                f"{parts.names.get('posterior', 'this posterior')} is deterministic: use "
                "objective.name=elbo"
            )
        return None

    @staticmethod
    def label(o: CapacityELBO.Options) -> str:
        return f"capacity (C={o.capacity:g} over {o.capacity_epochs:g} epochs, gamma={o.gamma:g})"

    def __init__(
        self,
        capacity: float = 25.0,
        capacity_epochs: float = 10.0,
        gamma: float = 1000.0,
        samples: int = 1,
        kl: str = "auto",
    ) -> None:
        super().__init__()
        self.capacity, self.capacity_epochs, self.gamma = capacity, capacity_epochs, gamma
        self.samples, self.kl_mode = samples, kl
        # Training examples seen so far (float64: exact far beyond any run's length).
        self.seen: Tensor
        self.register_buffer("seen", torch.zeros((), dtype=torch.float64))

    def target(self) -> float:
        """The capacity C of the current step, in nats."""
        span = self.capacity_epochs * self.dataset_size
        if span <= 0:
            return self.capacity
        return self.capacity * min(1.0, float(self.seen) / span)

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        q, prior, z, recon, kl = _recon_and_kl(model, x, y, self.samples, self.kl_mode)
        c = self.target()
        # The batch's mean KL is held near C (Burgess et al. eq. 8; disentanglement_lib's
        # annealed VAE), not each example's.
        loss = recon.mean() + self.gamma * (kl.mean() - c).abs()
        if model.training and torch.is_grad_enabled():
            self.seen += len(x)
        terms = {
            # Per example, for the logs; the loss above holds the batch's mean KL near C.
            "loss": recon + self.gamma * (kl - c).abs(),
            "recon": recon,
            "kl": kl,
            "elbo": -(recon + kl),
            "capacity": torch.full_like(kl, c),
        }
        return ObjectiveOutput(loss, terms)

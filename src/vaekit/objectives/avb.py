"""Objectives that train a discriminator beside the model, and adversarial
variational Bayes (Mescheder et al. 2017), whose discriminator estimates the KL term."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.nn import MLP
from vaekit.objectives.base import (
    Objective,
    ObjectiveOutput,
    _Warmup,
)
from vaekit.parts import Composition, ObjectiveAbilities
from vaekit.vae import _one_hot
from vaekit.validate import check_nonneg, check_positive, check_widths

if TYPE_CHECKING:
    from vaekit.vae import VAE


def discriminator_groups(
    model: nn.Module, discriminator: nn.Module
) -> dict[str, list[nn.Parameter]]:
    """The optimiser groups of an objective that trains a discriminator beside the model
    (AVB, FactorVAE): ``model`` and ``discriminator``, each minimising its own loss."""
    return {"model": list(model.parameters()), "discriminator": list(discriminator.parameters())}


class DiscriminatorObjective(Objective):
    """An objective that trains a discriminator beside the model (AVB, FactorVAE; yours).

    Subclasses set ``self.discriminator = None`` in ``__init__`` and define
    :meth:`build_discriminator`; the discriminator is built on first use, when the model's
    shapes are known, on the model's device, and gets its own optimiser group
    (``optimizers=("model", "discriminator")`` in the abilities). ``forward`` returns both
    losses in ``ObjectiveOutput.losses`` and reads the discriminator with :meth:`critic`.
    """

    discriminator: nn.Module | None

    def build_discriminator(self, model: VAE) -> nn.Module:  # pragma: no cover
        raise NotImplementedError

    def setup(self, model: VAE) -> None:
        super().setup(model)
        if self.discriminator is None:
            device = next(model.parameters()).device
            self.discriminator = self.build_discriminator(model).to(device)

    def critic(self, model: VAE) -> nn.Module:
        """The discriminator, built for ``model`` if it is not yet."""
        self.setup(model)
        assert self.discriminator is not None
        return self.discriminator

    def param_groups(self, model: VAE) -> dict[str, list[nn.Parameter]]:
        return discriminator_groups(model, self.critic(model))


class Discriminator(nn.Module):
    """T(x, z[, y]): an MLP on the flattened data and the latent code, one logit out.

    Trained to tell posterior samples from prior samples, its optimum is
    ``log q(z|x) - log p(z)``.
    """

    def __init__(
        self, data_features: int, latent_dim: int, hidden: list[int], num_classes: int = 0
    ) -> None:
        super().__init__()
        self.net = MLP(data_features + latent_dim, hidden, 1, "leaky_relu", num_classes)

    def forward(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits of shape ``z.shape[:-1]`` for x ``(B, ...)`` and z ``(S, B, D)``."""
        lead = z.shape[:-1]
        xf = x.reshape(x.shape[0], -1).expand(*lead, -1)
        inp = torch.cat([xf, z], dim=-1).reshape(-1, xf.shape[-1] + z.shape[-1])
        ctx = None if y is None else y.expand(*lead, y.shape[-1]).reshape(-1, y.shape[-1])
        out: Tensor = self.net(inp, ctx)
        return out.reshape(lead)


class AVB(_Warmup, DiscriminatorObjective):
    """Adversarial variational Bayes (Mescheder et al. 2017).

    A discriminator T(x, z) learns to tell ``(x, z ~ q(z|x))`` from ``(x, z ~ p(z))``
    with the logistic loss; at its optimum ``T = log q(z|x) - log p(z)``, so
    ``E_q[T]`` estimates the KL term and the posterior needs only ``rsample``
    (``model.posterior=implicit``). Two optimiser groups (:meth:`param_groups`):

    - ``model``: ``recon + beta * T(x, z)`` with z reparameterised (T held fixed);
    - ``discriminator``: ``softplus(-T(x, z_q)) + softplus(T(x, z_p))``.

    Learnable priors (mog) get their own gradient ``-E_q grad log p(z)`` (T carries
    none to them). The reported ``kl`` and ``elbo`` use T's estimate: they are not a
    bound, and no importance-sampled likelihood exists for an implicit posterior.
    """

    @dataclass
    class Options:
        # Monte Carlo samples S of z per example.
        samples: int = 1
        # Weight of the KL term (its discriminator estimate).
        beta: float = 1.0
        # KL warm-up: epoch e weighs the KL by beta * min(1, e / warmup_epochs) (0 = off).
        warmup_epochs: int = 0
        # Hidden widths of the discriminator T(x, z).
        discriminator: list[int] = field(default_factory=lambda: [256, 256])

        def validate(self, where: str) -> None:
            check_positive(f"{where}.samples", self.samples)
            check_nonneg(f"{where}.beta", self.beta)
            check_nonneg(f"{where}.warmup_epochs", self.warmup_epochs)
            check_widths(f"{where}.discriminator", self.discriminator)

    @staticmethod
    def check(o: AVB.Options, parts: Composition) -> str | None:
        if parts.posterior.discrete:
            return (
                f"objective.name=avb's discriminator tells continuous posterior draws from prior "
                f"draws; {parts.names.get('posterior', 'this posterior')} draws discrete codes, "
                "whose KL has a closed form: use objective.name=elbo"
            )
        if parts.prior.per_class:
            return (
                f"objective.name=avb's discriminator compares posterior draws with draws of p(z), "
                f"and takes no p(z|y): {parts.names.get('prior', 'this prior')} is one prior per "
                "class, for objective.name=elbo (or iwae, m2)"
            )
        return None

    # Its "elbo" is the discriminator's estimate, not a bound; it needs no density.
    abilities = ObjectiveAbilities(
        bound="elbo",
        bound_label="ELBO estimate",
        needs_density=False,
        optimizers=("model", "discriminator"),
        warmup=True,
    )

    def __init__(
        self,
        samples: int = 1,
        beta: float = 1.0,
        warmup_epochs: int = 0,
        discriminator: Sequence[int] = (256, 256),
    ) -> None:
        super().__init__(beta, warmup_epochs)
        self.samples = samples
        self.hidden = list(discriminator)
        self.discriminator = None

    def build_discriminator(self, model: VAE) -> nn.Module:
        features = int(math.prod(model.data_shape))
        return Discriminator(features, model.latent_dim, self.hidden, model.num_classes)

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        critic = self.critic(model)
        ctx = _one_hot(y, model.num_classes)
        q = model.encode(x, y)
        prior = model.prior
        z = q.rsample((self.samples,))  # (S, B, D)
        recon = -model.decode(z, y).log_prob(x).mean(0)
        t_q = critic(x, z, ctx)  # (S, B)
        kl = t_q.mean(0)
        # Zero in value; its gradient is the prior's share of dKL (z held fixed).
        log_pz = prior.log_prob(z.detach())
        prior_grad = (log_pz.detach() - log_pz).mean(0)
        model_b = recon + self.current_beta * (kl + prior_grad)
        # Backpropagated into the discriminator only (the trainer passes inputs=), so t_q
        # can be shared with the model loss without a second pass.
        z_p = prior.sample(z.shape[:-1])
        t_p = critic(x, z_p, ctx)
        disc_b = (F.softplus(-t_q) + F.softplus(t_p)).mean(0)
        terms = {
            "loss": recon + self.current_beta * kl,
            "recon": recon,
            "kl": kl,
            "elbo": -(recon + kl),
            "disc": disc_b,
        }
        model_loss = model_b.mean()
        return ObjectiveOutput(
            model_loss, terms, {"model": model_loss, "discriminator": disc_b.mean()}
        )

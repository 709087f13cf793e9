"""Training objectives: a loss to minimise plus named per-example terms.

Shapes follow one convention everywhere: S Monte Carlo samples of z for a batch of
B examples are ``(S, B, D)``; per-sample log-weights are ``(S, B)``; per-example
terms are ``(B,)``.

Example:
    >>> from vaekit.config import ModelConfig
    >>> from vaekit.model import build_model
    >>> model = build_model(ModelConfig(latent_dim=2), (1, 8, 8))
    >>> out = ELBO(samples=4)(model, torch.rand(6, 1, 8, 8).round())
    >>> sorted(out.terms), out.terms["kl"].shape
    (['elbo', 'kl', 'loss', 'recon'], torch.Size([6]))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence

__all__ = ["ObjectiveOutput", "Objective", "ELBO", "AutoencoderLoss", "kl_term", "OBJECTIVES", "build_objective"]


@dataclass
class ObjectiveOutput:
    """What an objective returns for one batch.

    ``loss``: the scalar the optimiser minimises (mean over the batch).
    ``terms``: per-example named terms ``(B,)``, logged and averaged per epoch.
    ``losses``: for objectives with several optimisers (AVB), the loss of each group;
    ``None`` means one group, ``"model"``, minimising ``loss``.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    losses: dict[str, Tensor] | None = field(default=None)


_ANALYTIC: dict[tuple[type, type], bool] = {}


def kl_term(q: Distribution, p: Distribution, z: Tensor | None = None, mode: str = "auto") -> Tensor:
    """KL(q || p) per example, shape ``q.batch_shape``.

    ``analytic`` uses torch's registered closed form; ``mc`` averages
    ``log q(z) - log p(z)`` over the samples ``z`` (S, B, D); ``auto`` takes the closed
    form where one is registered and Monte Carlo otherwise.
    """
    if mode != "mc":
        key = (type(q), type(p))
        known = _ANALYTIC.get(key)
        if known is not False:
            try:
                kl = kl_divergence(q, p)
                _ANALYTIC[key] = True
                return kl
            except NotImplementedError:
                _ANALYTIC[key] = False
                if mode == "analytic":
                    raise
        elif mode == "analytic":
            raise NotImplementedError(f"no analytic KL registered for {type(q).__name__} || {type(p).__name__}")
    if z is None:
        raise ValueError("a Monte Carlo KL needs the samples z")
    return (q.log_prob(z) - p.log_prob(z)).mean(0)


class Objective(nn.Module):
    """Base class. An objective may own parameters (a discriminator, say)."""

    def forward(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch (1-based); schedules such as KL warm-up use it."""

    def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        """Parameters of each optimiser; one group by default."""
        return {"model": list(model.parameters()) + list(self.parameters())}


class ELBO(Objective):
    """Negative evidence lower bound with a weight on the divergence.

    loss = E_q[-log p(x|z)] + beta * KL(q(z|x) || p(z)), averaged over the batch.
    ``beta=1`` is the VAE, ``beta>1`` the beta-VAE. ``samples`` is the number of
    Monte Carlo samples S of z per example. The reported ``elbo`` term is always the
    unweighted bound, so it stays comparable across betas.
    """

    def __init__(self, samples: int = 1, beta: float = 1.0, kl: str = "auto") -> None:
        super().__init__()
        self.samples = samples
        self.beta = beta
        self.kl_mode = kl

    def forward(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        q = model.encode(x, y)
        z = q.rsample((self.samples,))  # (S, B, D)
        recon = -model.decode(z, y).log_prob(x).mean(0)  # (B,)
        kl = kl_term(q, model.prior, z, self.kl_mode)  # (B,)
        loss_b = recon + self.beta * kl
        terms = {"loss": loss_b, "recon": recon, "kl": kl, "elbo": -(recon + kl)}
        return ObjectiveOutput(loss_b.mean(), terms)


class AutoencoderLoss(Objective):
    """Reconstruction loss only: -log p(x | z) at the code z (the plain autoencoder).

    With a point posterior this is the deterministic autoencoder; with a Gaussian
    posterior it is a VAE trained without its divergence (beta = 0).
    """

    def forward(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        q = model.encode(x, y)
        z = q.rsample()
        recon = -model.decode(z, y).log_prob(x)
        return ObjectiveOutput(recon.mean(), {"loss": recon, "recon": recon})


OBJECTIVES: dict[str, Callable[[Any], Objective]] = {
    "elbo": lambda o: ELBO(o.samples, o.beta, o.kl),
    "ae": lambda o: AutoencoderLoss(),
}


def build_objective(cfg: Any) -> Objective:
    """The objective named by an :class:`vaekit.config.ObjectiveConfig`."""
    return OBJECTIVES[cfg.name](cfg)

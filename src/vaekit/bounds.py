"""Tighter bounds that keep the encoder's gradient informative (Rainforth et al. 2018).

The IWAE bound tightens as k grows, but the signal-to-noise ratio of its gradient for
the *encoder* falls like ``1/sqrt(k)`` (Rainforth et al. 2018, "Tighter variational
bounds are not necessarily better"). Their three remedies, each an objective:

- :class:`MIWAE` (``objective.name=miwae``): the mean of M independent IWAE bounds of K
  samples each, ``(1/M) sum_m log (1/K) sum_k w_mk``; M = 1 is IWAE, K = 1 the ELBO of
  M samples.
- :class:`CIWAE` (``ciwae``): ``beta * ELBO + (1 - beta) * IWAE`` of the same K samples.
- :class:`PIWAE` (``piwae``): the decoder and prior climb the IWAE bound of all M * K
  samples while the encoder climbs the MIWAE bound of the same samples, with two
  optimisers (as adversarial VB has).

Each works for one stochastic layer and for a hierarchy (its q and p are one
Distribution each), and reports ``recon``, ``kl``, ``elbo`` and ``iwae`` (of all its
samples) beside its own bound, so metrics compare across objectives.

Example:
    >>> from vaekit.config import ModelConfig
    >>> from vaekit.model import build_model
    >>> model = build_model(ModelConfig(latent_dim=2), (1, 8, 8))
    >>> out = MIWAE(samples=4, groups=3)(model, torch.rand(6, 1, 8, 8).round())
    >>> bool((out.terms["elbo"] <= out.terms["miwae"] + 1e-4).all())
    True
    >>> bool((out.terms["miwae"] <= out.terms["iwae"] + 1e-4).all())
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vaekit.objectives import (
    Objective,
    ObjectiveOutput,
    importance_weights,
    iwae_bound,
    posterior_extras,
    weight_terms,
)
from vaekit.parts import ObjectiveAbilities
from vaekit.validate import check_positive

if TYPE_CHECKING:
    from vaekit.model import VAE
    from vaekit.parts import Composition

__all__ = ["miwae_bound", "MIWAE", "CIWAE", "PIWAE"]


def miwae_bound(log_w: Tensor, groups: int) -> Tensor:
    """The mean over ``groups`` of IWAE bounds: ``(M * K, B)`` log-weights -> ``(B,)``.

    >>> miwae_bound(torch.tensor([[0.0], [2.0], [1.0], [1.0]]), groups=2)
    tensor([1.2169])
    """
    lw = log_w.reshape(groups, -1, *log_w.shape[1:])
    return (torch.logsumexp(lw, dim=1) - math.log(lw.shape[1])).mean(0)


def _stochastic_only(o: object, parts: Composition) -> str | None:
    """Several importance samples of a deterministic posterior are one code k times."""
    if not parts.posterior.stochastic:
        return (
            f"{parts.names.get('posterior', 'this posterior')} is deterministic: its importance "
            "samples would all be the same code, so this bound is the ELBO at many times the "
            "cost; use objective.name=elbo"
        )
    return None


class _Grouped(Objective):
    """M groups of K importance samples, drawn as one batch of M * K."""

    def __init__(self, samples: int, groups: int) -> None:
        super().__init__()
        self.samples = samples
        self.groups = groups

    def _bounds(self, model: VAE, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        """The terms every grouped objective reports, its MIWAE bound among them."""
        n = self.samples * self.groups
        q = model.encode(x, y)
        (log_w, log_px, log_pz, log_q), layers = importance_weights(model, x, y, n, q)
        terms = weight_terms(iwae_bound(log_w), log_px, log_pz, log_q) | layers
        terms |= posterior_extras(q)[1]  # a relaxed code's temperature, say
        terms["miwae"] = miwae_bound(log_w, self.groups)
        return terms


class MIWAE(_Grouped):
    """The multiply importance-weighted bound: the mean of ``groups`` IWAE bounds of
    ``samples`` importance samples each (Rainforth et al. 2018)."""

    @dataclass
    class Options:
        # Importance samples K inside each bound.
        samples: int = 8
        # Independent bounds M averaged (M * K samples per example in all).
        groups: int = 8

        def validate(self, where: str) -> None:
            check_positive(f"{where}.samples", self.samples)
            check_positive(f"{where}.groups", self.groups)

    abilities = ObjectiveAbilities(bound="miwae", bound_label="MIWAE bound")
    check = staticmethod(_stochastic_only)

    @staticmethod
    def label(o: MIWAE.Options) -> str:
        return f"miwae M={o.groups} K={o.samples}"

    def __init__(self, samples: int = 8, groups: int = 8) -> None:
        super().__init__(samples, groups)

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        terms = self._bounds(model, x, y)
        terms["loss"] = -terms["miwae"]
        return ObjectiveOutput(-terms["miwae"].mean(), terms)


class PIWAE(_Grouped):
    """Partially importance-weighted training (Rainforth et al. 2018): the generative
    model (decoder, prior) maximises the IWAE bound of all ``groups * samples`` draws,
    the encoder the MIWAE bound of the same draws, each with its own optimiser."""

    Options = MIWAE.Options
    abilities = ObjectiveAbilities(
        bound="iwae", bound_label="IWAE bound", optimizers=("model", "encoder")
    )
    check = staticmethod(_stochastic_only)

    @staticmethod
    def label(o: MIWAE.Options) -> str:
        return f"piwae M={o.groups} K={o.samples}"

    def __init__(self, samples: int = 8, groups: int = 8) -> None:
        super().__init__(samples, groups)

    def param_groups(self, model: VAE) -> dict[str, list[nn.Parameter]]:
        # The encoder's own weights; the conditional priors a hierarchy's posterior part
        # holds belong to the generative model.
        generative = {id(p) for p in model.prior_parameters()}
        encoder = [p for p in model.encoder.parameters() if id(p) not in generative]
        mine = {id(p) for p in encoder}
        return {
            "model": [p for p in model.parameters() if id(p) not in mine],
            "encoder": encoder,
        }

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        terms = self._bounds(model, x, y)
        model_loss = -terms["iwae"].mean()
        terms["loss"] = -terms["iwae"]
        return ObjectiveOutput(
            model_loss, terms, {"model": model_loss, "encoder": -terms["miwae"].mean()}
        )


class CIWAE(Objective):
    """The combination ``beta * ELBO + (1 - beta) * IWAE`` of the same ``samples`` draws
    (Rainforth et al. 2018): a bound between the two (beta = 1 is the ELBO of k samples,
    beta = 0 the IWAE bound)."""

    @dataclass
    class Options:
        # Importance samples K.
        samples: int = 8
        # Weight of the ELBO, in [0, 1].
        beta: float = 0.5

        def validate(self, where: str) -> None:
            from vaekit.errors import ConfigError

            check_positive(f"{where}.samples", self.samples)
            if not 0.0 <= self.beta <= 1.0:
                raise ConfigError(f"{where}.beta must be in [0, 1], got {self.beta}")

    abilities = ObjectiveAbilities(bound="ciwae", bound_label="CIWAE bound")
    check = staticmethod(_stochastic_only)

    @staticmethod
    def label(o: CIWAE.Options) -> str:
        return f"ciwae beta={o.beta:g} K={o.samples}"

    def __init__(self, samples: int = 8, beta: float = 0.5) -> None:
        super().__init__()
        self.samples = samples
        self.beta = beta

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        q = model.encode(x, y)
        (log_w, log_px, log_pz, log_q), layers = importance_weights(model, x, y, self.samples, q)
        iwae = iwae_bound(log_w)
        terms = weight_terms(iwae, log_px, log_pz, log_q) | layers | posterior_extras(q)[1]
        terms["ciwae"] = self.beta * log_w.mean(0) + (1.0 - self.beta) * iwae
        terms["loss"] = -terms["ciwae"]
        return ObjectiveOutput(-terms["ciwae"].mean(), terms)

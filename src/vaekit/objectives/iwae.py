"""The importance-weighted bound (Burda et al. 2016), what importance-weighted objectives
share, and the tighter bounds that keep the encoder's gradient informative.

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
from torch.distributions import Distribution, Independent, Normal

from vaekit.abilities import FixedLogProb, implements
from vaekit.distributions.posteriors import sample_with_log_prob
from vaekit.errors import ConfigError
from vaekit.objectives.base import (
    Objective,
    ObjectiveOutput,
    iwae_bound,
    kl_per_layer,
    layer_terms,
    posterior_extras,
)
from vaekit.parts import Composition, ObjectiveAbilities
from vaekit.validate import check_choice, check_positive

if TYPE_CHECKING:
    from vaekit.vae import VAE


class IWAE(Objective):
    """The importance-weighted bound (Burda et al. 2016) with ``samples`` = k.

    ``log (1/k) sum_s p(x, z_s) / q(z_s | x)`` with z_1..z_k ~ q(z|x); k = 1 is the
    single-sample ELBO. The loss is minus the bound. ``recon`` and ``kl`` are the
    averages over the k samples of ``-log p(x|z_s)`` and ``log q(z_s|x) - log p(z_s)``
    (so ``elbo = -(recon + kl)`` is the k-sample ELBO, never above ``iwae``).

    Example:
        >>> from vaekit.config import ModelConfig
        >>> from vaekit.model import build_model
        >>> model = build_model(ModelConfig(latent_dim=2), (1, 8, 8))
        >>> out = IWAE(samples=5)(model, torch.rand(6, 1, 8, 8).round())
        >>> bool((out.terms["iwae"] >= out.terms["elbo"] - 1e-4).all())
        True
    """

    @dataclass
    class Options:
        # Importance samples k (k = 1 is the single-sample ELBO).
        samples: int = 1
        # The encoder's gradient estimator: standard, or dreg (doubly reparameterised,
        # Tucker et al. 2019): the same expectation with less variance, which grows with k;
        # with samples = 1 it is "sticking the landing" (Roeder et al. 2017).
        gradient: str = "standard"

        def validate(self, where: str) -> None:
            check_positive(f"{where}.samples", self.samples)
            check_choice(f"{where}.gradient", self.gradient, ["standard", "dreg"])

    abilities = ObjectiveAbilities(bound="iwae", bound_label="IWAE bound")

    @staticmethod
    def label(o: IWAE.Options) -> str:
        return f"iwae k={o.samples}" + (" dreg" if o.gradient == "dreg" else "")

    @staticmethod
    def check(o: IWAE.Options, parts: Composition) -> str | None:
        if not parts.posterior.stochastic and o.samples > 1:
            return (
                f"{parts.names.get('posterior', 'this posterior')} is deterministic: its "
                f"{o.samples} importance samples would all be the same code, so the IWAE bound "
                "is the ELBO at k times the cost; use objective.name=elbo"
            )
        if o.gradient == "dreg" and not (parts.posterior.gaussian or parts.posterior.dreg):
            return (
                "objective.gradient=dreg needs the posterior's log-density with its parameters "
                "held fixed (a diagonal Gaussian, or a hierarchy of them); "
                f"{parts.names.get('posterior', 'this posterior')} with "
                f"{parts.names.get('flow', 'its settings')} has none (use "
                "model.posterior=gaussian or hierarchical without a flow, or "
                "objective.gradient=standard)"
            )
        return None

    def __init__(self, samples: int = 1, gradient: str = "standard") -> None:
        super().__init__()
        self.samples = samples
        self.gradient = gradient

    def log_weights(
        self, model: VAE, x: Tensor, y: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(log w, log p(x|z), log p(z), log q(z|x))``, each ``(k, B)``."""
        return importance_weights(model, x, y, self.samples)[0]

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        if self.gradient == "dreg":
            return self._dreg(model, x, y)
        q = model.encode(x, y)
        (log_w, log_px, log_pz, log_q), layers = importance_weights(model, x, y, self.samples, q)
        iwae = iwae_bound(log_w)
        terms = weight_terms(iwae, log_px, log_pz, log_q) | layers
        loss = -iwae.mean()
        aux, extra = posterior_extras(q)
        if aux is not None:
            terms["loss"] = terms["loss"] + aux
            loss = loss + aux.mean()
        return ObjectiveOutput(loss, terms | extra)

    def _dreg(self, model: VAE, x: Tensor, y: Tensor | None) -> ObjectiveOutput:
        """The bound with the doubly reparameterised gradient (Tucker et al. 2019).

        With normalised weights ``w_s = softmax(log w)``, the encoder's gradient is
        ``sum_s w_s^2 d log w_s / dz_s  dz_s / dphi`` with q's parameters held fixed in
        ``log q(z_s)``; every other parameter (decoder, prior) gets the usual
        ``sum_s w_s grad log w_s``. One backward does both: the surrogate
        ``sum_s w_s log w_s`` gives the second, and a hook on z multiplies the gradient that
        reaches z by ``w_s`` once more. The loss's value is still minus the bound.
        """
        q = model.encode(x, y)
        z = q.rsample((self.samples,))
        log_q = log_prob_fixed(q, z)
        prior = model.prior_given(y)
        log_px = model.decode(z, y).log_prob(x)
        log_pz = prior.log_prob(z)
        log_w = log_px + log_pz - log_q
        iwae = iwae_bound(log_w)
        w = torch.softmax(log_w.detach(), dim=0)
        if z.requires_grad:
            z.register_hook(lambda g: g * w.unsqueeze(-1))
        surrogate = (w * log_w).sum(0)
        # Value: minus the bound; gradient: minus the surrogate's.
        loss = -(iwae.detach() + surrogate - surrogate.detach()).mean()
        terms = weight_terms(iwae, log_px, log_pz, log_q) | _layers_mc(q, prior, z)
        return ObjectiveOutput(loss, terms)


def importance_weights(
    model: VAE, x: Tensor, y: Tensor | None, samples: int, q: Distribution | None = None
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], dict[str, Tensor]]:
    """``(log w, log p(x|z), log p(z), log q(z|x))``, each ``(samples, B)``, of
    reparameterised draws z ~ q(z|x), and the per-layer KL terms of the same draws.
    ``q``: the posterior of x already encoded (the caller needs it for its extras)."""
    if q is None:
        q = model.encode(x, y)
    prior = model.prior_given(y)
    z, log_q = sample_with_log_prob(q, (samples,))
    log_px = model.decode(z, y).log_prob(x)
    log_pz = prior.log_prob(z)
    return (log_px + log_pz - log_q, log_px, log_pz, log_q), _layers_mc(q, prior, z)


def weight_terms(iwae: Tensor, log_px: Tensor, log_pz: Tensor, log_q: Tensor) -> dict[str, Tensor]:
    """The terms an importance-weighted objective reports: ``recon`` and ``kl`` averaged
    over the draws, their ``elbo``, the ``iwae`` bound and minus it as ``loss``."""
    recon = -log_px.mean(0)
    kl = (log_q - log_pz).mean(0)
    return {"loss": -iwae, "recon": recon, "kl": kl, "elbo": -(recon + kl), "iwae": iwae}


def log_prob_fixed(q: Distribution, z: Tensor) -> Tensor:
    """log q(z) with q's parameters held fixed and the gradient flowing through z only:
    the doubly reparameterised estimator's term. A diagonal Gaussian, or a posterior with
    ``log_prob_fixed`` (a hierarchy); anything else is refused."""
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        fixed = Independent(
            Normal(q.base_dist.loc.detach(), q.base_dist.scale.detach(), validate_args=False),
            q.reinterpreted_batch_ndims,
            validate_args=False,
        )
        return fixed.log_prob(z)
    if not implements(q, FixedLogProb):
        raise TypeError(
            "objective.gradient=dreg needs a diagonal Gaussian posterior or one with "
            f"log_prob_fixed, got {type(q).__name__}"
        )
    return q.log_prob_fixed(z)


def _layers_mc(q: Distribution, prior: Distribution, z: Tensor) -> dict[str, Tensor]:
    """Per-layer KL terms of the draws z (Monte Carlo, from the densities already computed)."""
    with torch.no_grad():
        return layer_terms(kl_per_layer(q, prior, z, "mc"))


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

"""The evidence lower bound (ELBO) with a weight on its divergence: the VAE, the
beta-VAE, KL warm-up, free bits, KL balancing and the MMD in the KL's place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.distributions import kl_divergence

from vaekit.divergences import Divergence
from vaekit.errors import ConfigError
from vaekit.objectives.base import (
    KL_MODES,
    ObjectiveOutput,
    _dist_name,
    _Warmup,
    kl_per_dim,
    kl_per_layer,
    kl_term,
    layer_terms,
    posterior_extras,
    sample_mean,
)
from vaekit.parts import Composition, ObjectiveAbilities, PartConfig, lookup, nested_part
from vaekit.stability import kl_balance_weights, spectral_penalty
from vaekit.validate import check_choice, check_nonneg, check_positive

if TYPE_CHECKING:
    from vaekit.vae import VAE


class ELBO(_Warmup):
    """Negative evidence lower bound with a weight on the divergence.

    loss = E_q[-log p(x|z)] + beta * KL(q(z|x) || p(z)), averaged over the batch.
    ``beta=1`` is the VAE, ``beta>1`` the beta-VAE. ``samples`` is the number of
    Monte Carlo samples S of z per example. The reported ``elbo`` term is always the
    unweighted bound, so it stays comparable across betas and warm-up.

    ``warmup_epochs``: beta ramps from 0 (see :meth:`set_epoch`). ``free_bits`` λ
    (Kingma et al. 2016): the loss uses ``sum_j max(λ, mean_batch KL_j)`` over latent
    dimensions j, so dimensions below λ nats are not pushed further toward the prior;
    with several stochastic layers each layer's KL is held above ``λ * s_l`` (its units
    times λ); when q or p does not factorise otherwise (flows, mixture priors) the total
    KL is held above ``λ * D`` instead. Free bits change the gradient only: the ``loss``
    term reports ``recon + beta * kl``.

    With several stochastic layers the terms include each layer's KL (``kl_z1`` ...),
    and ``kl=auto`` takes each layer's closed form given the layer above.

    ``kl="analytic"`` uses the closed form that torch registers for the posterior and
    prior (a diagonal Gaussian against a standard normal, say) and is refused when torch
    has none; ``auto`` falls back to Monte Carlo there.

    ``divergence`` is the term beta weighs (:mod:`vaekit.divergences`): ``kl`` (the
    default), or ``mmd`` between the batch's codes and draws of the prior (InfoVAE's
    MMD-VAE, WAE-MMD); the ``kl`` and ``elbo`` terms are reported whatever it is.
    """

    @dataclass
    class Options:
        # Monte Carlo samples S of z per example.
        samples: int = 1
        # Weight of the KL term (beta-VAE: beta > 1).
        beta: float = 1.0
        # auto (analytic where torch registers a closed form, else Monte Carlo) | analytic | mc
        kl: str = "auto"
        # KL warm-up: epoch e weighs the KL by beta * min(1, e / warmup_epochs) (0 = off).
        warmup_epochs: int = 0
        # Free bits: nats per latent dimension below which the KL is not pushed down
        # (Kingma et al. 2016); 0 = off.
        free_bits: float = 0.0
        # Several stochastic layers: during the warm-up, weigh each layer's KL by its share
        # per unit (NVAE's KL balancing, vaekit.stability); no effect with one layer.
        kl_balance: bool = False
        # Spectral regularisation (NVAE): this weight times the sum of the largest singular
        # value of every weight matrix is added to the loss (0 = off).
        spectral: float = 0.0
        # The term beta weighs: kl | mmd (between the batch's codes and prior draws:
        # InfoVAE's MMD-VAE, WAE-MMD), with its own options ({name: mmd, kernel: rbf}).
        divergence: Any = field(default_factory=lambda: "kl", metadata={"part": "divergence"})

        def __post_init__(self) -> None:
            self.divergence = _divergence_config(self.divergence)

        def validate(self, where: str) -> None:
            check_positive(f"{where}.samples", self.samples)
            check_nonneg(f"{where}.beta", self.beta)
            check_nonneg(f"{where}.spectral", self.spectral)
            check_choice(f"{where}.kl", self.kl, KL_MODES)
            check_nonneg(f"{where}.warmup_epochs", self.warmup_epochs)
            if not self.free_bits >= 0:
                raise ConfigError(
                    f"{where}.free_bits must be >= 0 (nats per latent dimension), got {self.free_bits}"
                )

    abilities = ObjectiveAbilities(bound="elbo", bound_label="ELBO", warmup=True)

    @staticmethod
    def check(o: ELBO.Options, parts: Composition) -> str | None:
        div = lookup("divergence", o.divergence.name)
        if o.free_bits and not div.abilities.kl:
            return (
                f"objective.free_bits floors the KL per latent dimension, but objective.divergence="
                f"{o.divergence.name} is not the KL: set objective.free_bits=0 or objective.divergence=kl"
            )
        return div.check(o.divergence.options, parts)

    @staticmethod
    def ignored(o: ELBO.Options, parts: Composition) -> dict[str, str]:
        """Options set that change nothing with these parts (see :mod:`vaekit.parts`)."""
        out = {}
        posterior = parts.names.get("posterior", "this posterior")
        if o.kl_balance:
            if not parts.posterior.layered:
                out["kl_balance"] = (
                    f"KL balancing weighs the KL terms of several stochastic layers, and {posterior} "
                    "has one; use model.posterior=hierarchical (or hierarchical-conv), or leave "
                    "objective.kl_balance out"
                )
            elif not o.warmup_epochs:
                out["kl_balance"] = (
                    "KL balancing acts during the KL warm-up only, and objective.warmup_epochs=0 "
                    "has none; set objective.warmup_epochs, or leave objective.kl_balance out"
                )
            # (A divergence other than the KL, which KL balancing would not touch, is
            # refused on several layers by its own check.)
        return out

    @staticmethod
    def label(o: ELBO.Options) -> str:
        extra = []
        div = lookup("divergence", o.divergence.name)
        if not div.abilities.kl:
            extra.append(div.label(o.divergence.options))
        if o.beta != 1.0:
            extra.append(f"beta={o.beta:g}")
        if o.warmup_epochs:
            extra.append(f"warm-up {o.warmup_epochs}")
        if o.samples != 1:
            extra.append(f"S={o.samples}")
        if o.free_bits:
            extra.append(f"free bits {o.free_bits:g}")
        if o.kl_balance:
            extra.append("KL balancing")
        if o.spectral:
            extra.append(f"spectral {o.spectral:g}")
        return f"elbo ({', '.join(extra)})" if extra else "elbo"

    def __init__(
        self,
        samples: int = 1,
        beta: float = 1.0,
        kl: str = "auto",
        warmup_epochs: int = 0,
        free_bits: float = 0.0,
        kl_balance: bool = False,
        spectral: float = 0.0,
        divergence: Any = "kl",
    ) -> None:
        super().__init__(beta, warmup_epochs)
        self.samples = samples
        self.kl_mode = kl
        self.free_bits = free_bits
        self.kl_balance = kl_balance
        self.spectral = spectral
        self.divergence = build_divergence(divergence)

    def setup(self, model: VAE) -> None:
        if self.kl_mode != "analytic":
            return
        # Ask torch's registry of closed forms with the model's own distributions.
        param = next(iter(model.parameters()), None)
        head = model.encoder.head
        width = int(getattr(head, "in_features", 0))
        if not width:
            return  # a head that does not say how many features it reads: asked at run time
        features = torch.zeros(1, width, device=None if param is None else param.device)
        with torch.no_grad():
            q, p = head(features), model.prior
            try:
                kl_divergence(q, p)
            except NotImplementedError:
                raise ConfigError(
                    f"objective.kl=analytic: torch has no closed-form KL for this posterior "
                    f"({_dist_name(q)}) and prior ({_dist_name(p)}); use objective.kl=auto, which "
                    "falls back to Monte Carlo"
                ) from None

    def loss_note(self, term: str = "KL") -> str:
        """The KL weight and warm-up, the divergence in the KL's place, and what the
        optimised loss adds to the ``loss`` term (free bits, KL balancing, spectral)."""
        name = getattr(self.divergence, "term", "divergence")
        notes = [super().loss_note("KL" if name == "kl" else name)]
        if name != "kl" and not notes[0]:
            notes = [f"{name} in place of the KL"]
        if self.free_bits:
            notes.append(f"free bits {self.free_bits:g}")
        if self.kl_balance and self.current_beta < self.beta:
            notes.append("KL balancing")
        if self.spectral:
            notes.append(f"spectral penalty x {self.spectral:g}")
        return ", ".join(n for n in notes if n)

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        q = model.encode(x, y)
        prior = model.prior_given(y)  # p(z|y) for a prior per class
        z = q.rsample((self.samples,))  # (S, B, D); flows cache log q of this z for kl_term
        recon = -sample_mean(model.decode(z, y).log_prob(x))  # (B,)
        layers = kl_per_layer(q, prior, z, self.kl_mode)  # (L, B) with several layers
        kl = layers.sum(0) if layers is not None else kl_term(q, prior, z, self.kl_mode)  # (B,)
        div = self.divergence(q, prior, z, kl)  # (B,): kl itself unless another is chosen
        beta = self.current_beta
        # x * 1.0 is x: no pass (and no backward node) for the usual weight of one.
        loss_b = recon + div if beta == 1.0 else recon + beta * div
        div_opt = div
        # KL balancing reweighs the layers' KL terms: with the KL divergence only.
        if self.kl_balance and layers is not None and beta < self.beta and div is kl:
            weights = kl_balance_weights(layers, q.sizes)  # type: ignore[attr-defined]
            div_opt = (weights[:, None] * layers).sum(0)
        if self.free_bits > 0:  # only with the KL divergence (ELBO.check)
            dims = kl_per_dim(q, prior, z, self.kl_mode)
            if dims is not None:
                kl_floor = dims.mean(0).clamp_min(self.free_bits).sum()
            elif layers is not None:
                units = torch.tensor(q.sizes, dtype=kl.dtype, device=kl.device)  # type: ignore[attr-defined]
                kl_floor = torch.maximum(layers.mean(1), self.free_bits * units).sum()
            else:
                kl_floor = kl.mean().clamp_min(self.free_bits * z.shape[-1])
            loss = recon.mean() + beta * kl_floor
        elif div_opt is div:
            loss = loss_b.mean()
        else:
            loss = (recon + beta * div_opt).mean()
        aux, extra = posterior_extras(q)
        if aux is not None:
            loss_b = loss_b + aux
            loss = loss + aux.mean()
        terms = {"loss": loss_b, "recon": recon, "kl": kl, "elbo": -(recon + kl)} | extra
        if self.spectral > 0:
            penalty = spectral_penalty(model)
            loss = loss + self.spectral * penalty
            terms["spectral"] = penalty.detach().expand_as(kl)
        # A user's divergence may leave out ``term``: its values are logged as "divergence".
        name = getattr(self.divergence, "term", "divergence")
        if name not in terms:
            terms[name] = div
        return ObjectiveOutput(loss, terms | layer_terms(layers))


def _divergence_config(value: Any) -> PartConfig:
    """A divergence setting (name, mapping or PartConfig) as a PartConfig with checked options."""
    return nested_part("divergence", value, "objective.divergence")


def build_divergence(value: Any) -> Divergence:
    """The divergence module a setting names (``"kl"``, ``{"name": "mmd", "kernel": "rbf"}``,
    a PartConfig), built through the installed registries (:func:`vaekit.parts.lookup`:
    the registry imports every part, so a part does not import it).

    Example:
        >>> build_divergence("mmd").kernel
        'imq'
    """
    pc = _divergence_config(value)
    module: Divergence = lookup("divergence", pc.name, where="objective.divergence").build(
        pc.options
    )
    return module

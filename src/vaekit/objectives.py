"""Training objectives: a loss to minimise plus named per-example terms.

Shapes follow one convention everywhere: S Monte Carlo samples of z for a batch of
B examples are ``(S, B, D)``; per-sample log-weights are ``(S, B)``; per-example
terms are ``(B,)``.

- :class:`ELBO`: ``recon + beta * kl``, with KL warm-up and free bits.
- :class:`IWAE`: the importance-weighted bound with k samples (Burda et al. 2016).
- :class:`AVB`: adversarial variational Bayes (Mescheder et al. 2017): a discriminator
  estimates the KL term, so the posterior needs no density; two optimiser groups.
- :class:`AutoencoderLoss`: reconstruction only (the plain autoencoder).
- :class:`PriorFit`: a second stage that fits only the prior to the frozen encoder's
  posterior (VQ-VAE's PixelCNN over its codes); the ELBO it reports uses that prior.

A posterior may carry its own training loss and terms (VQ-VAE's commitment loss and
codebook perplexity: ``q.aux_loss`` and ``q.terms``, see :func:`posterior_extras`); every
objective adds them.

Every objective reports ``loss``, ``recon`` and (except the autoencoder) ``kl`` and
``elbo``, so metric lines read the same across objectives.

Example:
    >>> from vaekit.config import ModelConfig
    >>> from vaekit.model import build_model
    >>> model = build_model(ModelConfig(latent_dim=2), (1, 8, 8))
    >>> out = ELBO(samples=4)(model, torch.rand(6, 1, 8, 8).round())
    >>> sorted(out.terms), out.terms["kl"].shape
    (['elbo', 'kl', 'loss', 'recon'], torch.Size([6]))
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from vaekit.distributions import sample_with_log_prob
from vaekit.divergences import Divergence
from vaekit.nn import MLP
from vaekit.parts import Composition, ObjectiveAbilities
from vaekit.validate import check_choice, check_nonneg, check_positive, check_widths

if TYPE_CHECKING:
    from vaekit.model import VAE

__all__ = [
    "ObjectiveOutput",
    "Objective",
    "ELBO",
    "IWAE",
    "AVB",
    "AutoencoderLoss",
    "PriorFit",
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
    "build_divergence",
    "KL_MODES",
    "build_objective",
]

# objective.kl: auto (analytic where torch registers it, else Monte Carlo) | analytic | mc.
KL_MODES = ("auto", "analytic", "mc")


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


# Whether torch has a closed form for a pair of distribution types, learned on first use.
_ANALYTIC: dict[tuple[type, ...], bool] = {}


def _kl_key(q: Distribution, p: Distribution) -> tuple[type, ...]:
    """The types torch's KL registry dispatches on, through Independent wrappers: an
    Independent(Normal) prior has a closed form against the Gaussian posterior, an
    Independent(StudentT) one has none, and one must not stand for the other."""

    def types(d: Distribution) -> tuple[type, ...]:
        out: tuple[type, ...] = (type(d),)
        while isinstance(d, Independent):
            d = d.base_dist
            out += (type(d),)
        return out

    return types(q) + (type(None),) + types(p)


def kl_term(
    q: Distribution, p: Distribution, z: Tensor | None = None, mode: str = "auto"
) -> Tensor:
    """KL(q || p) per example, shape ``q.batch_shape``.

    ``analytic`` uses torch's registered closed form; ``mc`` averages
    ``log q(z) - log p(z)`` over the samples ``z`` (S, B, D); ``auto`` takes the closed
    form where one is registered and Monte Carlo otherwise.
    """
    if mode != "mc":
        key = _kl_key(q, p)
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
            raise NotImplementedError(
                f"no analytic KL registered for {type(q).__name__} || {type(p).__name__}"
            )
    if z is None:
        raise ValueError("a Monte Carlo KL needs the samples z")
    return (q.log_prob(z) - p.log_prob(z)).mean(0)


def kl_per_dim(q: Distribution, p: Distribution, z: Tensor, mode: str = "auto") -> Tensor | None:
    """KL per latent dimension ``(B, D)`` when q and p both factorise over dimensions, else None.

    Both must be ``Independent`` over one dimension (diagonal Gaussian posterior, standard
    normal prior); the closed form is used where torch has one, else Monte Carlo over z.
    """
    if not (isinstance(q, Independent) and isinstance(p, Independent)):
        return None
    if q.reinterpreted_batch_ndims != 1 or p.reinterpreted_batch_ndims != 1:
        return None
    if mode != "mc":
        try:
            return kl_divergence(q.base_dist, p.base_dist)
        except NotImplementedError:
            if mode == "analytic":
                raise
    return (q.base_dist.log_prob(z) - p.base_dist.log_prob(z)).mean(0)


def kl_per_layer(q: Distribution, p: Distribution, z: Tensor, mode: str = "auto") -> Tensor | None:
    """KL per stochastic layer ``(L, B)`` for a posterior with several layers, else None.

    The posterior says how (:meth:`~vaekit.distributions.hierarchical.HierarchicalDistribution.kl_layers`):
    ``mc`` averages ``log q_l - log p_l`` over the draws z ``(S, B, D)``; otherwise each
    layer's closed form given the layer above where there is one. The layers sum to the KL.
    """
    layers = getattr(q, "kl_layers", None)
    if layers is None:
        return None
    out: Tensor = layers(p, z, "mc" if mode == "mc" else "auto")
    return out


def layer_terms(layers: Tensor | None) -> dict[str, Tensor]:
    """Per-layer KL terms for the metrics: ``kl_z1`` (the bottom layer) ... ``kl_zL``."""
    if layers is None:
        return {}
    return {f"kl_z{i + 1}": t for i, t in enumerate(layers)}


def iwae_bound(log_w: Tensor) -> Tensor:
    """``log (1/k) sum_s exp(log_w[s])`` over the first dimension: ``(k, B)`` -> ``(B,)``.

    logsumexp subtracts the largest weight first, so it stays finite for weights of
    any magnitude (log-weights of -1e4 or +1e4 nats are ordinary early in training).

    >>> iwae_bound(torch.tensor([[-1e4], [-1e4]]))
    tensor([-10000.])
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def posterior_extras(q: Distribution) -> tuple[Tensor | None, dict[str, Tensor]]:
    """A posterior's own loss per example (``q.aux_loss``: VQ-VAE's commitment and
    codebook terms), which the objective adds to its loss, and the per-example terms it
    reports (``q.terms``: codebook perplexity, a temperature); ``(None, {})`` for most."""
    return getattr(q, "aux_loss", None), dict(getattr(q, "terms", None) or {})


class Objective(nn.Module):
    """Base class. An objective may own parameters (a discriminator, say).

    An objective of yours (``objective: {name: mymodule:MyObjective}``) is built as
    ``Class(**options)``; ``forward(model, x, y)`` returns an :class:`ObjectiveOutput`,
    and ``abilities`` (:class:`vaekit.parts.ObjectiveAbilities`) names the term that is
    its bound (the best epoch maximises it on the validation split).
    """

    abilities = ObjectiveAbilities()
    # KL warm-up length in epochs: early stopping (train.patience) counts from its end.
    warmup_epochs: int = 0
    # The keyword arguments it was built with (recorded by __init_subclass__ below), so that
    # an objective object handed to vaekit.fit is written to config.json by its options.
    init_options: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording(self: Objective, *args: Any, **kw: Any) -> None:
            if "init_options" not in self.__dict__:  # the outermost class's arguments
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                options = {k: v for k, v in bound.arguments.items() if k != "self"}
                object.__setattr__(self, "init_options", options)
            init(self, *args, **kw)

        cls.__init__ = recording  # type: ignore[method-assign, assignment]

    def forward(
        self, model: VAE, x: Tensor, y: Tensor | None = None
    ) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch (1-based); schedules such as KL warm-up use it.

        Parts of the model (a posterior's temperature, say) may define ``set_epoch`` too;
        the trainer calls it on every module that has one.
        """

    def loss_note(self) -> str:
        """How the training loss (the ``loss`` term) differs from the bound the objective
        reports, or "" when it is the bound. The trainer prints it beside each epoch's
        bound, so that a weighted loss is never read as the bound (``KL x 0.01, warm-up
        epoch 1 of 100``)."""
        return ""

    # The number of training examples (set by the trainer before the first epoch); estimators
    # that weigh a minibatch against the whole data set (total correlation) read it.
    dataset_size: int = 0

    def set_dataset_size(self, n: int) -> None:
        """Called by the trainer with the number of training examples before training."""
        self.dataset_size = n

    def setup(self, model: VAE) -> None:
        """Build parameters whose shapes depend on the model (the AVB discriminator); idempotent."""

    def param_groups(self, model: VAE) -> dict[str, list[nn.Parameter]]:
        """Parameters of each optimiser; one group by default."""
        self.setup(model)
        return {"model": list(model.parameters()) + list(self.parameters())}


class _Warmup(Objective):
    """A KL weight ``beta`` that ramps up linearly over ``warmup_epochs`` epochs.

    Epoch e (1-based) uses ``beta * min(1, e / warmup_epochs)``: the line from 0 reaches
    the full weight at epoch ``warmup_epochs``. The first epoch already has a small weight
    (``beta / warmup_epochs``): with none at all, an unpenalised first epoch can push the
    KL to thousands of nats, which the rest of the warm-up must then undo.
    """

    def __init__(self, beta: float = 1.0, warmup_epochs: int = 0) -> None:
        super().__init__()
        self.beta = beta
        self.warmup_epochs = warmup_epochs
        self.current_beta = beta if warmup_epochs == 0 else beta / warmup_epochs
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.warmup_epochs:
            self.current_beta = self.beta * min(1.0, epoch / self.warmup_epochs)

    def loss_note(self, term: str = "KL") -> str:
        """``KL x beta`` while the weight is not 1, with the warm-up epoch while it ramps."""
        if self.current_beta == 1.0:
            return ""
        note = f"{term} x {self.current_beta:g}"
        if self.warmup_epochs and self.epoch < self.warmup_epochs:
            note += f", warm-up epoch {self.epoch} of {self.warmup_epochs}"
        return note


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
                from vaekit.errors import ConfigError

                raise ConfigError(
                    f"{where}.free_bits must be >= 0 (nats per latent dimension), got {self.free_bits}"
                )

    abilities = ObjectiveAbilities(bound="elbo", bound_label="ELBO")

    @staticmethod
    def check(o: ELBO.Options, parts: Composition) -> str | None:
        from vaekit.registry import DIVERGENCES

        div = DIVERGENCES.get(o.divergence.name)
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
        from vaekit.registry import DIVERGENCES

        extra = []
        div = DIVERGENCES.get(o.divergence.name)
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
                from vaekit.errors import ConfigError

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
        prior = model.prior
        z = q.rsample((self.samples,))  # (S, B, D); flows cache log q of this z for kl_term
        recon = -model.decode(z, y).log_prob(x).mean(0)  # (B,)
        layers = kl_per_layer(q, prior, z, self.kl_mode)  # (L, B) with several layers
        kl = layers.sum(0) if layers is not None else kl_term(q, prior, z, self.kl_mode)  # (B,)
        div = self.divergence(q, prior, z, kl)  # (B,): kl itself unless another is chosen
        beta = self.current_beta
        loss_b = recon + beta * div
        div_opt = div
        # KL balancing reweighs the layers' KL terms: with the KL divergence only.
        if self.kl_balance and layers is not None and beta < self.beta and div is kl:
            from vaekit.stability import kl_balance_weights

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
        else:
            loss = (recon + beta * div_opt).mean()
        aux, extra = posterior_extras(q)
        if aux is not None:
            loss_b = loss_b + aux
            loss = loss + aux.mean()
        terms = {"loss": loss_b, "recon": recon, "kl": kl, "elbo": -(recon + kl)} | extra
        if self.spectral > 0:
            from vaekit.stability import spectral_penalty

            penalty = spectral_penalty(model)
            loss = loss + self.spectral * penalty
            terms["spectral"] = penalty.detach().expand_as(kl)
        # A user's divergence may leave out ``term``: its values are logged as "divergence".
        name = getattr(self.divergence, "term", "divergence")
        if name not in terms:
            terms[name] = div
        return ObjectiveOutput(loss, terms | layer_terms(layers))


def _divergence_config(value: Any) -> Any:
    """A divergence setting (name, mapping or PartConfig) as a PartConfig with checked options."""
    from vaekit.config import PartConfig, parse_part

    if isinstance(value, PartConfig) and value.options is not None:
        return value
    return parse_part("divergence", value, "objective.divergence")


def build_divergence(value: Any) -> Divergence:
    """The divergence module a setting names (``"kl"``, ``{"name": "mmd", "kernel": "rbf"}``).

    Example:
        >>> build_divergence("mmd").kernel
        'imq'
    """
    from vaekit.registry import DIVERGENCES

    pc = _divergence_config(value)
    module: Divergence = DIVERGENCES.get(pc.name, where="objective.divergence").build(pc.options)
    return module


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
        prior = model.prior
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
    prior = model.prior
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
    own = getattr(q, "log_prob_fixed", None)
    if own is None:
        raise TypeError(
            "objective.gradient=dreg needs a diagonal Gaussian posterior or one with "
            f"log_prob_fixed, got {type(q).__name__}"
        )
    out: Tensor = own(z)
    return out


def _layers_mc(q: Distribution, prior: Distribution, z: Tensor) -> dict[str, Tensor]:
    """Per-layer KL terms of the draws z (Monte Carlo, from the densities already computed)."""
    with torch.no_grad():
        return layer_terms(kl_per_layer(q, prior, z, "mc"))


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
        return None

    # Its "elbo" is the discriminator's estimate, not a bound; it needs no density.
    abilities = ObjectiveAbilities(
        bound="elbo",
        bound_label="ELBO estimate",
        needs_density=False,
        optimizers=("model", "discriminator"),
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
        from vaekit.model import _one_hot

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


class AutoencoderLoss(Objective):
    """Reconstruction loss only: -log p(x | z) at the code z (the plain autoencoder).

    With a point posterior this is the deterministic autoencoder; with a Gaussian
    posterior it is a VAE trained without its divergence (beta = 0).
    """

    # No bound: the best epoch has the lowest validation loss.
    abilities = ObjectiveAbilities(
        bound="loss", sign=-1.0, bound_label="loss", needs_density=False, needs_stochastic=False
    )

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        q = model.encode(x, y)
        z = q.rsample()
        recon = -model.decode(z, y).log_prob(x)
        aux, extra = posterior_extras(q)
        loss_b = recon if aux is None else recon + aux
        return ObjectiveOutput(loss_b.mean(), {"loss": loss_b, "recon": recon} | extra)


class PriorFit(Objective):
    """Fit the prior alone to the frozen encoder's posterior: VQ-VAE's second stage.

    The encoder and decoder are frozen (their parameters stop requiring gradients and they
    run in evaluation mode, so a discrete posterior gives its exact codes and a VQ
    codebook stays as it is). The loss is KL(q(z|x) || p(z)), analytic where torch has it
    and else over ``samples`` draws of z: with q fixed that is the cross-entropy
    E_q[-log p(z)] up to a constant, so every step raises the ELBO, which is reported with
    the prior being fitted (``recon`` does not move). ``vaekit train --resume RUN --stage
    prior`` runs it into ``RUN/prior``, a run of its own that starts from RUN's weights.

    Example:
        >>> from vaekit.config import ModelConfig, part
        >>> from vaekit.model import build_model
        >>> model = build_model(ModelConfig(latent_dim=2, prior="mog"), (1, 8, 8))
        >>> fit = PriorFit()
        >>> sorted(fit.param_groups(model)), len(fit.param_groups(model)["model"])
        (['model'], 3)
    """

    @dataclass
    class Options:
        # Draws of z per example where the KL has no closed form.
        samples: int = 1

        def validate(self, where: str) -> None:
            check_positive(f"{where}.samples", self.samples)

    abilities = ObjectiveAbilities(bound="elbo", bound_label="ELBO", fixed=("encoder", "decoder"))

    @staticmethod
    def label(o: PriorFit.Options) -> str:
        return "prior fit" + (f" S={o.samples}" if o.samples != 1 else "")

    @staticmethod
    def check(o: PriorFit.Options, parts: Composition) -> str | None:
        if not parts.prior.learned:
            return (
                f"objective.name=prior-fit fits the prior, but {parts.names.get('prior', 'it')} "
                "has nothing to learn: choose a learned prior (mog, vamp; over codes pixelcnn, "
                "or categorical with learned: true)"
            )
        return None

    def __init__(self, samples: int = 1) -> None:
        super().__init__()
        self.samples = samples

    def loss_note(self) -> str:
        return "the KL alone (the encoder and decoder are fixed)"

    def setup(self, model: VAE) -> None:
        for module in (model.encoder, model.decoder):
            for p in module.parameters():
                p.requires_grad_(False)

    def param_groups(self, model: VAE) -> dict[str, list[nn.Parameter]]:
        self.setup(model)
        params = [p for p in model.prior_module.parameters()]
        if not params:
            from vaekit.errors import ConfigError

            raise ConfigError(
                "objective.name=prior-fit: this prior has no parameters to fit (a uniform "
                "categorical, model.prior.learned=false?); choose a learned prior"
            )
        return {"model": params}

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        modes = model.encoder.training, model.decoder.training
        model.encoder.eval()
        model.decoder.eval()
        try:
            with torch.no_grad():
                q = model.encode(x, y)
                z = q.rsample((self.samples,))
                recon = -model.decode(z, y).log_prob(x).mean(0)
            kl = kl_term(q, model.prior, z, "auto")
        finally:
            model.encoder.train(modes[0])
            model.decoder.train(modes[1])
        terms = {"loss": kl, "recon": recon, "kl": kl, "elbo": -(recon + kl)}
        return ObjectiveOutput(kl.mean(), terms)


def _dist_name(d: Distribution) -> str:
    if isinstance(d, Independent):
        return f"Independent({type(d.base_dist).__name__})"
    return type(d).__name__


def build_objective(cfg: Any) -> Objective:
    """The objective a config's ``objective`` part names, built with its options.

    Example:
        >>> from vaekit.config import load_config
        >>> build_objective(load_config(None, ["objective.name=iwae"]).objective).samples
        1
    """
    from vaekit.registry import OBJECTIVES

    part = OBJECTIVES.get(cfg.name, where="objective.name")
    objective: Objective = part.build(cfg.options)
    return objective

"""The objective's contract and what every objective shares: its output, the KL
estimators, the posterior's own loss terms, and the KL weight's warm-up."""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, kl_divergence

from vaekit.abilities import ExtraTerms, LayeredDistribution, WarmsUp, implements
from vaekit.distributions.posteriors import LogVarNormal
from vaekit.distributions.priors import StandardNormal, kl_standard_normal
from vaekit.parts import ObjectiveAbilities, registry_of

if TYPE_CHECKING:
    from vaekit.vae import VAE


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


def sample_mean(t: Tensor) -> Tensor:
    """The mean over the draws, the first dimension of ``t`` ``(S, ...)``; with one draw,
    the draw itself, a view (the mean of one value is the value: no pass, and no backward
    node, in every step of a one-sample objective).

    Example:
        >>> sample_mean(torch.tensor([[1.0, 2.0]])), sample_mean(torch.tensor([[1.0], [3.0]]))
        (tensor([1., 2.]), tensor([2.]))
    """
    return t.squeeze(0) if t.shape[0] == 1 else t.mean(0)


def _standard_pair(q: Distribution, p: Distribution) -> bool:
    """q a diagonal Gaussian of one event dimension (:func:`diagonal_normal`), p the
    standard normal prior of the same shape: the closed form needs no dispatch."""
    return (
        type(q) is Independent
        and type(p) is Independent
        and type(q.base_dist) is LogVarNormal
        and type(p.base_dist) is StandardNormal
        and q.reinterpreted_batch_ndims == 1
        and p.reinterpreted_batch_ndims == 1
        and q.event_shape == p.event_shape
    )


def kl_term(
    q: Distribution, p: Distribution, z: Tensor | None = None, mode: str = "auto"
) -> Tensor:
    """KL(q || p) per example, shape ``q.batch_shape``.

    ``analytic`` uses torch's registered closed form; ``mc`` averages
    ``log q(z) - log p(z)`` over the samples ``z`` (S, B, D); ``auto`` takes the closed
    form where one is registered and Monte Carlo otherwise.
    """
    if mode != "mc":
        if _standard_pair(q, p):  # the default model's pair, without the registry's dispatch
            return kl_standard_normal(q.base_dist, p.base_dist).sum(-1)  # type: ignore[attr-defined]
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
    return sample_mean(q.log_prob(z) - p.log_prob(z))


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
    return sample_mean(q.base_dist.log_prob(z) - p.base_dist.log_prob(z))


def kl_per_layer(q: Distribution, p: Distribution, z: Tensor, mode: str = "auto") -> Tensor | None:
    """KL per stochastic layer ``(L, B)`` for a posterior with several layers, else None.

    The posterior says how (:meth:`~vaekit.distributions.hierarchical.HierarchicalDistribution.kl_layers`):
    ``mc`` averages ``log q_l - log p_l`` over the draws z ``(S, B, D)``; otherwise each
    layer's closed form given the layer above where there is one. The layers sum to the KL.
    """
    if not implements(q, LayeredDistribution):
        return None
    return q.kl_layers(p, z, "mc" if mode == "mc" else "auto")


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
    if not implements(q, ExtraTerms):
        return None, {}
    return q.aux_loss, dict(q.terms or {})


class Objective(nn.Module):
    """Base class. An objective may own parameters (a discriminator, say).

    An objective of yours (``objective: {name: mymodule:MyObjective}``) is built as
    ``Class(**options)``; ``forward(model, x, y)`` returns an :class:`ObjectiveOutput`,
    and ``abilities`` (:class:`vaekit.parts.ObjectiveAbilities`) names the term that is
    its bound (the best epoch maximises it on the validation split).
    """

    abilities = ObjectiveAbilities()
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

    # How many training examples have a label (set by the trainer; data.labels hides the
    # rest): a semi-supervised objective weighs its labelled term by it.
    labelled_size: int = 0

    def set_labelled_size(self, n: int) -> None:
        """Called by the trainer with the number of labelled training examples."""
        self.labelled_size = n

    def setup(self, model: VAE) -> None:
        """Build parameters whose shapes depend on the model (the AVB discriminator); idempotent."""

    def param_groups(self, model: VAE) -> dict[str, list[nn.Parameter]]:
        """Parameters of each optimiser; one group by default."""
        self.setup(model)
        return {"model": list(model.parameters()) + list(self.parameters())}


def build_objective(cfg: Any) -> Objective:
    """The objective a config's ``objective`` part (a PartConfig) names, built with its
    options through the registry (:func:`vaekit.parts.registry_of`).

    Example:
        >>> from vaekit.config import load_config
        >>> build_objective(load_config(None, ["objective.name=iwae"]).objective).samples
        1
    """
    part = registry_of("objective").get(cfg.name, where="objective.name")
    objective: Objective = part.build(cfg.options)
    return objective


def warmup_epochs(objective: Objective) -> int:
    """The length in epochs of the objective's warm-up (declared by
    ``abilities.warmup``, :class:`vaekit.abilities.WarmsUp`), 0 for none: early stopping
    (``train.patience``) counts from its end.

    Example:
        >>> warmup_epochs(_Warmup(beta=1.0, warmup_epochs=5)), warmup_epochs(Objective())
        (5, 0)
    """
    if not objective.abilities.warmup:
        return 0
    if not isinstance(objective, WarmsUp):
        raise TypeError(
            f"{type(objective).__name__} declares abilities.warmup but has no warmup_epochs "
            "attribute (vaekit.abilities.WarmsUp)"
        )
    return int(objective.warmup_epochs)


class _Warmup(Objective):
    """A KL weight ``beta`` that ramps up linearly over ``warmup_epochs`` epochs.

    Epoch e (1-based) uses ``beta * min(1, e / warmup_epochs)``: the line from 0 reaches
    the full weight at epoch ``warmup_epochs``. The first epoch already has a small weight
    (``beta / warmup_epochs``): with none at all, an unpenalised first epoch can push the
    KL to thousands of nats, which the rest of the warm-up must then undo.
    """

    abilities = ObjectiveAbilities(warmup=True)

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


def _dist_name(d: Distribution) -> str:
    if isinstance(d, Independent):
        return f"Independent({type(d.base_dist).__name__})"
    return type(d).__name__

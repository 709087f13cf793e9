"""The VAE: one class that composes encoder, posterior, prior, decoder and likelihood.

Every model the library offers (VAE, beta-VAE, conditional VAE, plain autoencoder,
flows, richer priors) is this class with different parts; the objective decides how
it is trained. It sits with the parts (it imports parts only, so an objective may name
it); :mod:`vaekit.model` builds it from a config through the registry.

Example:
    >>> from vaekit.config import ModelConfig
    >>> from vaekit.model import build_model
    >>> model = build_model(ModelConfig(latent_dim=2), data_shape=(1, 8, 8))
    >>> q = model.encode(torch.rand(5, 1, 8, 8))
    >>> z = q.rsample((3,))            # (S, B, D) = (3, 5, 2)
    >>> model.decode(z).batch_shape    # p(x|z) for every sample
    torch.Size([3, 5])
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution

from vaekit.abilities import ClassPrior, LayeredPosterior, implements
from vaekit.data.core import DataError
from vaekit.distributions.hierarchical import tempered_sample
from vaekit.distributions.likelihoods import LikelihoodHead
from vaekit.parts import Composition, LikelihoodAbilities, PosteriorAbilities, PriorAbilities

__all__ = [
    "Encoder",
    "Decoder",
    "VAE",
    "network_precision",
    "NOT_CONDITIONAL",
]

# The dtype the encoder and decoder networks compute in (None: their parameters' own).
_NETWORK_DTYPE: ContextVar[torch.dtype | None] = ContextVar("vaekit_network_dtype", default=None)


@contextmanager
def network_precision(dtype: torch.dtype | None) -> Iterator[None]:
    """Run the encoder and decoder *networks* in ``dtype`` (torch.bfloat16) inside the block.

    Only the networks' matrix products and convolutions go to the lower precision (by
    autocast); their outputs come back as float32 before any posterior, prior, flow or
    likelihood sees them, so every log-density is computed in float32. ``None`` is a
    no-op. The trainer uses it for ``train.precision=bf16``; evaluation never does.

    Example:
        >>> from vaekit.config import ModelConfig
        >>> from vaekit.model import build_model
        >>> model = build_model(ModelConfig(latent_dim=2), data_shape=(1, 8, 8))
        >>> with network_precision(torch.bfloat16):
        ...     q = model.encode(torch.rand(5, 1, 8, 8))
        >>> q.mean.dtype
        torch.float32
    """
    token = _NETWORK_DTYPE.set(dtype)
    try:
        yield
    finally:
        _NETWORK_DTYPE.reset(token)


_CONTEXT: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _takes_context(net: nn.Module) -> bool:
    """Whether ``net.forward`` takes a second positional argument (the label context)."""
    known = _CONTEXT.get(net)
    if known is None:
        try:
            params = list(inspect.signature(net.forward).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        known = len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
        _CONTEXT[net] = known
    return known


def _run_net(net: nn.Module, x: Tensor, ctx: Tensor | None) -> Tensor:
    # A network's contract is forward(x, ctx); a module whose forward takes x alone (an
    # nn.Sequential handed to vaekit.compose) is called with x when there is no label.
    args = (x, ctx) if ctx is not None or _takes_context(net) else (x,)
    dtype = _NETWORK_DTYPE.get()
    if dtype is None:
        out: Tensor = net(*args)
        return out
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        out = net(*args)
    return out.float()


NOT_CONDITIONAL = (
    "this model is not conditional (trained with model.conditional=false): "
    "it takes no labels, so drop y (--label)"
)


def _one_hot(y: Tensor | None, num_classes: int) -> Tensor | None:
    """The network's label context: class indices ``(...,)`` or one-hot (or soft) rows
    ``(..., num_classes)`` -> float one-hot rows; None for an unconditional model, which
    ignores labels (the trainer passes a labelled dataset's y to every model)."""
    if num_classes == 0:
        return None
    if y is None:
        raise DataError(
            "this is a conditional model: pass the labels y as well "
            f"(class indices 0..{num_classes - 1} or one-hot rows)"
        )
    y = torch.as_tensor(y)
    if y.dim() >= 2 and y.shape[-1] == num_classes:
        return y.float()  # one-hot (or soft) rows, of any dtype
    if y.dtype.is_floating_point and y.numel() and not bool((y == y.round()).all()):
        raise DataError(
            f"labels must be class indices 0..{num_classes - 1} or one-hot rows of length "
            f"{num_classes}, got non-integer values of shape {tuple(y.shape)}"
        )
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"labels must be integers in 0..{num_classes - 1}, got range {int(y.min())}..{int(y.max())}"
        )
    return F.one_hot(y, num_classes).float()


class Encoder(nn.Module):
    """Network + posterior head: ``forward(x, y=None)`` returns q(z | x[, y])."""

    def __init__(self, net: nn.Module, head: nn.Module, num_classes: int = 0) -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.num_classes = num_classes

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        ctx = _one_hot(y, self.num_classes)
        dist: Distribution = self.head(_run_net(self.net, x, ctx))
        return dist


class Decoder(nn.Module):
    """Network + likelihood head: ``forward(z, y=None)`` returns p(x | z[, y]).

    ``z`` may have any leading dimensions (for example ``(S, B, D)``); the returned
    distribution has those as its batch shape and the data shape as its event.
    """

    def __init__(
        self,
        net: nn.Module,
        head: LikelihoodHead,
        data_shape: Sequence[int],
        num_classes: int = 0,
        reads: int | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        # The first ``reads`` latent units are its input (a hierarchy's z_1, or z_1 and
        # z_2, lead its latent vector); None: all of them.
        self.reads = reads

    def forward(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        batch = z.shape[:-1]
        if self.reads is not None:
            z = z[..., : self.reads]
        ctx = _one_hot(y, self.num_classes)
        if ctx is not None:
            ctx = ctx.expand(*batch, ctx.shape[-1]).reshape(-1, ctx.shape[-1])
        params = _run_net(self.net, z.reshape(-1, z.shape[-1]), ctx)
        # (..., params_per_element, *data_shape): the head's k raw outputs per element.
        dist: Distribution = self.head(params.reshape(*batch, -1, *self.data_shape))
        return dist


class VAE(nn.Module):
    """A latent-variable model p(z) p(x|z) with an amortised posterior q(z|x).

    Attributes:
        encoder: x[, y] -> q(z | x[, y])
        decoder: z[, y] -> p(x | z[, y])
        prior_module: (encoder) -> p(z); the encoder is passed, not stored, because the
            VampPrior builds p(z) from it and weights must be registered once
        classifier: None, or a network x -> class logits ``(B, num_classes)``: q(y|x) of
            a semi-supervised model (M2, Kingma et al. 2014; ``model.classifier``)
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        prior: nn.Module,
        latent_dim: int,
        data_shape: Sequence[int],
        num_classes: int = 0,
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior_module = prior
        self.classifier = classifier
        self.latent_dim = latent_dim
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        # What the parts can do (a density, a factorised prior, ...): build_model fills it
        # in from the registry; for parts given as modules, their classes' ``abilities``.
        self.composition = Composition(
            posterior=getattr(encoder.head, "abilities", PosteriorAbilities()),
            prior=getattr(prior, "abilities", PriorAbilities()),
            likelihood=getattr(decoder.head, "abilities", LikelihoodAbilities()),
            objective=None,
            conditional=num_classes > 0,
            classifier=classifier is not None,
        )
        # The config it was built from (build_model, compose): fit() records it in config.json.
        # (A vaekit.config.ModelConfig: typed Any because the config layer sits above the
        # parts, which name this class.)
        self.config: Any = None

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def prior(self) -> Distribution:
        """p(z) as a Distribution with event shape ``(latent_dim,)``.

        With several stochastic layers (a posterior part with ``joint_prior``) this is
        the joint p(z_L) prod p(z_l | z_{l+1}), and ``prior_module`` (``model.prior``) is
        the top layer's p(z_L), built from the top layer's posterior where it needs one.
        """
        head = self.encoder.head
        if not implements(head, LayeredPosterior):
            dist: Distribution = self.prior_module(self.encoder)
            return dist
        top: Distribution = self.prior_module(self._encode_top)
        return head.joint_prior(top)

    def prior_given(self, y: Tensor | None) -> Distribution:
        """p(z|y) for a prior with one distribution per class (``model.prior=class-gaussian``
        or ``class-vamp``: batch shape ``(B,)`` for B labels, class indices or one-hot (or
        soft) rows); for any other prior, or without labels, p(z) (:attr:`prior`). The
        objectives score z with it.

        Example:
            >>> from vaekit.config import ModelConfig
            >>> from vaekit.model import build_model
            >>> cfg = ModelConfig(latent_dim=2, conditional=True, prior="class-gaussian")
            >>> build_model(cfg, (1, 4, 4), num_classes=3).prior_given(torch.tensor([0, 2])).batch_shape
            torch.Size([2])
        """
        if y is None or not implements(self.prior_module, ClassPrior):
            return self.prior
        labels = _one_hot(y, self.num_classes)
        assert labels is not None  # a prior per class is built for conditional models only
        # (A prior per class is over a single latent layer: config refuses a hierarchy.)
        return self.prior_module.given(labels, self.encoder)

    def classify(self, x: Tensor) -> Categorical:
        """q(y|x), a Categorical over the classes, from the model's classifier."""
        if self.classifier is None:
            raise DataError(
                "this model has no classifier q(y|x): train one with model.classifier "
                "(e.g. model.classifier=mlp) and objective.name=m2"
            )
        x = x.reshape(x.shape[0], *self.data_shape)
        logits = _run_net(self.classifier, x, None)
        return Categorical(logits=logits, validate_args=False)

    def prior_parameters(self) -> list[nn.Parameter]:
        """The prior's parameters: the prior part's and, with several stochastic layers,
        those of the conditional priors p(z_l | z_{l+1}) that the posterior part holds."""
        head = self.encoder.head
        own = list(head.prior_parameters()) if implements(head, LayeredPosterior) else []
        return list(self.prior_module.parameters()) + own

    def _encode_top(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """q(z_L | x): the top layer's posterior of a hierarchy (what a VampPrior mixes)."""
        top: Distribution = self.encoder(x, y).top
        return top

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """q(z | x[, y]): batch shape ``(N,)``, event ``(latent_dim,)``."""
        return self.encoder(x.reshape(x.shape[0], *self.data_shape), y)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x | z[, y]): batch shape ``z.shape[:-1]``, event = the data shape."""
        return self.decoder(z, y)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean of p(x | z) at the posterior mean of z (for discrete codes, at the most
        probable code: the mean of one-hot rows is no code)."""
        return self.decode(self.point(self.encode(x, y)), y).mean

    def point(self, q: Distribution) -> Tensor:
        """The one point of a posterior that vaekit shows and decodes: the mean of z, or for
        discrete codes the most probable code (the mean of one-hot rows is no code).

        Example:
            >>> from vaekit.config import ModelConfig, part
            >>> from vaekit.model import build_model
            >>> m = build_model(ModelConfig(latent_dim=4, posterior=part("gumbel", categories=2)), (1, 4, 4))
            >>> m.point(m.encode(torch.rand(3, 1, 4, 4))).sum(-1)   # two one-hot pairs per row
            tensor([2., 2., 2.])
        """
        return q.mode if self.composition.posterior.discrete else q.mean

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Tensor | int | None = None,
        mean: bool = True,
        temperature: float = 1.0,
        z: Tensor | None = None,
    ) -> Tensor:
        """``n`` draws from the model: z ~ p(z), then the mean of (or a sample from) p(x|z).

        For a conditional model, ``y`` is one class for all draws, one label per draw, or
        None: the draws cycle through the classes (0, 1, ..., C-1, 0, ...). An
        unconditional model refuses a label. ``temperature`` below 1 scales the prior's
        spread (every layer's in a hierarchy; :func:`~vaekit.distributions.hierarchical.tempered_sample`);
        ``z`` given (from a post-hoc sampler, :mod:`vaekit.samplers`) replaces the prior draws.
        """
        if not self.conditional and y is not None:
            raise DataError(NOT_CONDITIONAL)
        device = next(self.parameters()).device
        labels: Tensor | None = None
        if self.conditional:
            if y is None:
                labels = torch.arange(n, device=device) % self.num_classes
            else:
                labels = torch.as_tensor(y, device=device)
                if labels.dim() == 0:
                    labels = labels.expand(n)
        if z is None:
            # A prior per class draws each z from its label's p(z|y).
            p = self.prior_given(labels)
            z = tempered_sample(p, () if p.batch_shape else (n,), temperature)
        px = self.decode(z, labels)
        return px.mean if mean else px.sample()

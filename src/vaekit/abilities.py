"""The optional abilities of a part, as the methods and attributes it must then have.

A part declares what it can do in its ``abilities`` (:mod:`vaekit.parts`); an ability
that needs more than the base contract comes with members, named here as
``typing.Protocol`` s. Code outside a part asks ``isinstance(obj, Protocol)`` instead of
probing with ``getattr`` (the warm-up is read only where ``abilities.warmup`` is
declared: :func:`vaekit.objectives.warmup_epochs`), and the contract test (:func:`vaekit.testing.check_abilities`) holds the two equal for every
registered part: a part that declares an ability has its members, and a part that has
the members declares the ability.

- :class:`LayeredPosterior` (``PosteriorAbilities.layered``): a posterior part of several
  stochastic layers; their conditional priors live in it, and ``model.prior`` is the
  top layer's.
- :class:`LayerFlows` (``layered`` and ``takes_flow``): a layered posterior that takes one
  flow per layer below the top.
- :class:`LayeredDistribution` (its part's ``layered``): q(z|x) of a layered posterior.
- :class:`OwnNetworks` (``PosteriorAbilities.networks``): a posterior part that brings the
  encoder and decoder networks.
- :class:`CodePosterior` (``PosteriorAbilities.discrete``): a posterior part whose z is a
  discrete code; priors over codes read z through it.
- :class:`ExtraTerms` (``PosteriorAbilities.extras``): a distribution with its own loss
  and terms (VQ-VAE's commitment loss, a codebook's perplexity).
- :class:`FixedLogProb` (``PosteriorAbilities.dreg``; a diagonal Gaussian needs no
  method): a distribution whose log-density can be taken with its parameters held fixed.
- :class:`TemperedDistribution` (``PriorAbilities.temperature``; Gaussians and their
  mixtures need no method): a prior's distribution that says what sampling at a
  temperature means.
- :class:`ClassPrior` (``PriorAbilities.per_class``): a prior with one p(z|y) per class.
- :class:`WarmsUp` (``ObjectiveAbilities.warmup``): an objective whose divergence weight
  ramps up over ``warmup_epochs``.

The Protocols import nothing at run time: a part of the user's satisfies them by having
the members, without subclassing anything.

Example:
    >>> from vaekit.distributions.posteriors import GaussianPosterior
    >>> isinstance(GaussianPosterior(2), LayeredPosterior)
    False
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.distributions import Distribution

__all__ = [
    "members",
    "implements",
    "LayeredPosterior",
    "LayerFlows",
    "LayeredDistribution",
    "OwnNetworks",
    "CodePosterior",
    "ExtraTerms",
    "FixedLogProb",
    "TemperedDistribution",
    "ClassPrior",
    "WarmsUp",
]


@runtime_checkable
class LayeredPosterior(Protocol):
    """A posterior part of several stochastic layers (``abilities.layered``).

    z is every layer's units, bottom first (``sizes``); the registered prior is over the
    top layer's ``prior_dim`` units, and the decoder reads the leading ``decoder_dim``.
    """

    sizes: list[int]
    latent_dim: int
    prior_dim: int
    decoder_dim: int

    def joint_prior(self, top: Distribution) -> Distribution:
        """p(z) = p(z_L) prod p(z_l | z_>l) over the top layer's prior ``top``."""
        ...

    def prior_parameters(self) -> list[nn.Parameter]:
        """The parameters of the conditional priors p(z_l | z_>l) that the part holds."""
        ...


@runtime_checkable
class LayerFlows(Protocol):
    """A layered posterior that takes a flow on each layer below the top
    (``abilities.layered`` and ``abilities.takes_flow``)."""

    def attach_flows(self, build: Callable[[int], Any]) -> None:
        """Build one flow per layer below the top with ``build(units)``."""
        ...


@runtime_checkable
class LayeredDistribution(Protocol):
    """q(z|x) of a layered posterior: per-layer KL terms and the top layer's q(z_L|x)."""

    sizes: list[int]
    top: Distribution

    def kl_layers(self, prior: Distribution, value: Tensor, mode: str = "auto") -> Tensor:
        """KL(q || p) of each layer given the layers above ``(L, *batch)``."""
        ...


@runtime_checkable
class OwnNetworks(Protocol):
    """A posterior part that makes the model's encoder and decoder networks itself
    (``abilities.networks``): ``model.encoder`` and ``model.decoder`` are not used."""

    def encoder_network(self) -> nn.Module:
        """The encoder network, x -> the features the part reads."""
        ...

    def decoder_network(self, params_per_element: int) -> nn.Module:
        """The decoder network, z -> ``params_per_element`` outputs per data element."""
        ...


@runtime_checkable
class CodePosterior(Protocol):
    """A posterior part whose z is a discrete code (``abilities.discrete``): ``space``
    (a :class:`vaekit.distributions.codes.CodeSpace`) says how many positions and codes,
    and the part translates between z and code indices."""

    space: Any

    def codes(self, z: Tensor) -> Tensor:
        """Code indices ``(..., P)`` of z ``(..., D)``."""
        ...

    def embed(self, codes: Tensor) -> Tensor:
        """z ``(..., D)`` of code indices ``(..., P)``."""
        ...


@runtime_checkable
class ExtraTerms(Protocol):
    """A distribution that carries its own loss per example (``aux_loss``, None for none),
    which every objective adds, and terms to report (``terms``); declared by its posterior
    part's ``abilities.extras``."""

    aux_loss: Tensor | None
    terms: dict[str, Tensor]


@runtime_checkable
class FixedLogProb(Protocol):
    """A distribution whose log-density can be taken with its parameters held fixed, the
    gradient flowing through the value only (the doubly reparameterised estimator)."""

    def log_prob_fixed(self, value: Tensor) -> Tensor: ...


@runtime_checkable
class TemperedDistribution(Protocol):
    """A prior's distribution that says what sampling it at temperature ``t`` means."""

    def tempered(self, t: float) -> Distribution: ...


@runtime_checkable
class ClassPrior(Protocol):
    """A prior part with one p(z|y) per class: ``given(labels, encoder)`` takes one-hot (or
    soft) rows ``(..., num_classes)`` and returns p(z|y) of batch shape
    ``labels.shape[:-1]``; its ``forward(encoder)`` is p(z), their mixture under the prior
    over classes. The encoder (x, y -> q(z|x, y)) is passed as to ``forward``, for a prior
    built from it (a VampPrior per class); others ignore it."""

    def given(
        self, labels: Tensor, encoder: Callable[..., Distribution] | None = None
    ) -> Distribution: ...


@runtime_checkable
class WarmsUp(Protocol):
    """An objective whose divergence weight ramps up over ``warmup_epochs`` epochs
    (``abilities.warmup``): early stopping counts from the warm-up's end."""

    warmup_epochs: int


def members(protocol: type) -> list[str]:
    """The attributes and methods a Protocol asks for, in the order it declares them.

    Example:
        >>> members(OwnNetworks)
        ['encoder_network', 'decoder_network']
    """
    names = list(getattr(protocol, "__annotations__", {}))
    names += [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    return names


_IMPLEMENTS: dict[tuple[type, type], bool] = {}
_P = TypeVar("_P")


def implements(obj: object, protocol: type[_P]) -> TypeGuard[_P]:
    """``isinstance(obj, protocol)``, remembered per class of ``obj``.

    Python 3.11 re-reads a runtime Protocol's members on every ``isinstance`` (about
    20 us each); the model and the objectives ask a few of them at every training step,
    which added up to more than the step's own bookkeeping. A part's abilities are a
    matter of its class: the first instance of a class decides for all of them.

    Example:
        >>> from vaekit.distributions.posteriors import GaussianPosterior
        >>> implements(GaussianPosterior(2), LayeredPosterior)
        False
    """
    key = (type(obj), protocol)
    known = _IMPLEMENTS.get(key)
    if known is None:
        known = _IMPLEMENTS[key] = isinstance(obj, protocol)
    return known

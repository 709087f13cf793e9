"""A point mass: the 'posterior' of a plain (deterministic) autoencoder."""

from __future__ import annotations

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, constraints
from torch.types import _size

__all__ = ["PointMass"]


class PointMass(Distribution):
    """All mass at ``loc``; the last ``event_dims`` dimensions form the event.

    Sampling returns ``loc`` (with gradients), so a plain autoencoder runs through the
    same code as a VAE. It has no density: asking for ``log_prob`` is an error, which
    is what makes the ELBO of a plain autoencoder undefined.

    Example:
        >>> q = PointMass(torch.zeros(3, 2))
        >>> q.rsample((4,)).shape
        torch.Size([4, 3, 2])
    """

    arg_constraints = {"loc": constraints.real}
    support = constraints.real
    has_rsample = True

    def __init__(
        self, loc: Tensor, event_dims: int = 1, validate_args: bool | None = False
    ) -> None:
        self.loc = loc
        shape = loc.shape
        split = len(shape) - event_dims
        super().__init__(shape[:split], shape[split:], validate_args=validate_args)

    def expand(self, batch_shape: _size, _instance: Distribution | None = None) -> PointMass:
        loc = self.loc.expand(Size(batch_shape) + self.event_shape)
        return PointMass(loc, len(self.event_shape))

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def mode(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        return torch.zeros_like(self.loc)

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        return self.loc.expand(Size(sample_shape) + self.loc.shape)

    def log_prob(self, value: Tensor) -> Tensor:
        raise NotImplementedError(
            "a point-mass posterior (model.posterior=point, the plain autoencoder) has no density: "
            "the ELBO and the importance-sampled likelihood are undefined for it"
        )

    def entropy(self) -> Tensor:
        raise NotImplementedError("a point mass has no differential entropy")

"""The Gumbel-softmax posterior: N categorical variables of K classes (Jang et al. 2017;
Maddison et al. 2017)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Size, Tensor
from torch.distributions import Distribution
from torch.types import _size

from vaekit.distributions.codes.base import (
    CodeDistribution,
    CodeHead,
)
from vaekit.errors import ConfigError
from vaekit.parts import Composition, PosteriorAbilities
from vaekit.validate import check_positive


class GumbelCodes(CodeDistribution):
    """q(z|x): P independent categoricals of K classes, z their one-hot rows ``(P * K,)``.

    ``rsample`` draws by the Gumbel-max trick; while ``relaxed`` (training) it returns the
    Gumbel-softmax relaxation at ``temperature`` instead (``hard``: the one-hot draw with
    the relaxation's gradient, the straight-through variant). ``log_prob`` scores the code
    a z points to (the argmax of each row; a relaxed draw's argmax is an exact categorical
    draw), with the relaxation's gradient: for one-hot z it is the exact categorical
    log-probability.
    """

    has_rsample = True

    def __init__(
        self,
        head: CodeHead,
        logits: Tensor,
        temperature: float = 1.0,
        hard: bool = False,
        relaxed: bool = False,
    ) -> None:
        self.logits = logits  # (..., P, K)
        self.temperature = temperature
        self.hard = hard
        self.relaxed = relaxed
        super().__init__(head, logits.shape[:-2])

    @property
    def log_probs(self) -> Tensor:
        """Per-position log-probabilities ``(..., P, K)``."""
        return torch.log_softmax(self.logits, dim=-1)

    @property
    def probs(self) -> Tensor:
        return torch.softmax(self.logits, dim=-1)

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        shape = Size(sample_shape) + self.logits.shape
        u = torch.rand(shape, device=self.logits.device, dtype=self.logits.dtype)
        tiny = torch.finfo(u.dtype).tiny
        exponential = (-torch.log(u.clamp_min(tiny))).clamp_min(tiny)
        gumbel = -torch.log(exponential)
        noisy = self.logits + gumbel
        soft = torch.softmax(noisy / self.temperature, dim=-1)
        hard = F.one_hot(noisy.argmax(-1), self.logits.shape[-1]).to(soft.dtype)
        # Relaxed: the softmax itself; else the exact draw, carrying the relaxation's gradient.
        y = soft if self.relaxed and not self.hard else hard + (soft - soft.detach())
        return y.flatten(-2)

    def log_prob(self, value: Tensor) -> Tensor:
        return (self.head.onehot(value) * self.log_probs).sum((-2, -1))

    @property
    def mean(self) -> Tensor:
        return self.probs.flatten(-2)

    @property
    def mode(self) -> Tensor:
        return F.one_hot(self.logits.argmax(-1), self.logits.shape[-1]).to(self.logits).flatten(-2)

    @property
    def variance(self) -> Tensor:
        p = self.probs
        return (p * (1 - p)).flatten(-2)

    def entropy(self) -> Tensor:
        return -(self.probs * self.log_probs).sum((-2, -1))

    # No loss of its own (vaekit.abilities.ExtraTerms), only the temperature to report.
    aux_loss: Tensor | None = None

    @property
    def terms(self) -> dict[str, Tensor]:
        """The temperature, reported per epoch beside the ELBO (it anneals)."""
        return {"temperature": self.logits.new_full(self.batch_shape, self.temperature)}


class GumbelPosterior(CodeHead):
    """N categorical latent variables of K classes: ``model.posterior: {name: gumbel,
    categories: K}`` with ``model.latent_dim = N * K`` (Jang et al. 2017 use 20 x 10).

    While training, z is the Gumbel-softmax relaxation at a temperature that anneals per
    epoch, ``max(min_temperature, temperature * exp(-anneal * (epoch - 1)))``;
    ``hard``: straight-through (one-hot draws, the relaxation's gradient). In evaluation
    z is an exact one-hot draw. Use it with ``model.prior=categorical`` (the exact KL) or
    ``pixelcnn``.

    Example:
        >>> head = GumbelPosterior(latent_dim=6, categories=3)
        >>> q = head.eval()(torch.zeros(2, 6))
        >>> z = q.sample()
        >>> z.reshape(2, 2, 3).sum(-1)                     # one-hot rows
        tensor([[1., 1.],
                [1., 1.]])
        >>> round(float(q.log_prob(z)[0]), 4) == round(2 * math.log(1 / 3), 4)
        True
    """

    @dataclass
    class Options:
        # Classes K of each categorical variable; there are model.latent_dim / K variables.
        categories: int = 10
        # Gumbel-softmax temperature at the first epoch.
        temperature: float = 1.0
        # The temperature never anneals below this (Jang et al. 2017: 0.5).
        min_temperature: float = 0.5
        # Annealing rate per epoch: temperature * exp(-anneal * (epoch - 1)); 0 = constant.
        anneal: float = 0.0
        # Straight-through Gumbel-softmax: one-hot draws in the forward pass.
        hard: bool = False

        def validate(self, where: str) -> None:
            if self.categories < 2:
                raise ConfigError(f"{where}.categories must be at least 2, got {self.categories}")
            check_positive(f"{where}.temperature", self.temperature)
            check_positive(f"{where}.min_temperature", self.min_temperature)
            if self.anneal < 0:
                raise ConfigError(f"{where}.anneal must be >= 0 (per epoch), got {self.anneal}")

    abilities = PosteriorAbilities(discrete=True, extras=True)

    @staticmethod
    def label(o: GumbelPosterior.Options) -> str:
        return f"gumbel K={o.categories}" + (" ST" if o.hard else "")

    @staticmethod
    def ignored(o: GumbelPosterior.Options, parts: Composition) -> dict[str, str]:
        """Options set that change nothing beside the others (see :mod:`vaekit.parts`)."""
        if o.temperature < o.min_temperature:
            return {
                "temperature": (
                    f"the temperature never goes below min_temperature={o.min_temperature:g}, "
                    "so training starts there; lower model.posterior.min_temperature as well"
                )
            }
        if not o.anneal and o.min_temperature != GumbelPosterior.Options().min_temperature:
            return {
                "min_temperature": (
                    "the floor of an annealed temperature, and model.posterior.anneal=0 keeps "
                    "it constant; set model.posterior.anneal, or leave min_temperature out"
                )
            }
        return {}

    def __init__(
        self,
        latent_dim: int,
        categories: int = 10,
        temperature: float = 1.0,
        min_temperature: float = 0.5,
        anneal: float = 0.0,
        hard: bool = False,
    ) -> None:
        super().__init__()
        what = f"model.posterior.categories ({categories})"
        holds = "one one-hot row of K classes per categorical variable"
        self._lay_out(latent_dim, categories, categories, what, holds)
        self.start, self.floor, self.rate, self.hard = temperature, min_temperature, anneal, hard
        self.temperature = max(min_temperature, temperature)

    def set_epoch(self, epoch: int) -> None:
        """The annealed temperature of epoch ``epoch`` (1-based); the trainer calls it."""
        self.temperature = max(self.floor, self.start * math.exp(-self.rate * (epoch - 1)))

    def forward(self, features: Tensor) -> Distribution:
        logits = features.reshape(*features.shape[:-1], self.space.positions, self.space.codes)
        return GumbelCodes(self, logits, self.temperature, self.hard, relaxed=self.training)

    def embed_weights(self, weights: Tensor) -> Tensor:
        return weights.flatten(-2)

    def onehot(self, z: Tensor) -> Tensor:
        rows = z.reshape(*z.shape[:-1], self.space.positions, self.space.codes)
        hard = F.one_hot(rows.argmax(-1), self.space.codes).to(rows.dtype)
        # Value: the code a (relaxed) z points to; gradient: z's own (straight-through).
        return hard + (rows - rows.detach())


# -- VQ-VAE posterior ----------------------------------------------------------------------------

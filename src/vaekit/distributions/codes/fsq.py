"""Finite scalar quantization (Mentzer et al. 2023, "FSQ: VQ-VAE Made Simple"): each
channel bounded and rounded to a few levels; no codebook, no commitment loss."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaekit.distributions.codes.base import ChannelMajor, FactoredHead, usage_terms
from vaekit.distributions.codes.vq import QuantisedCodes
from vaekit.errors import ConfigError
from vaekit.parts import PosteriorAbilities


class FSQPosterior(ChannelMajor, FactoredHead):
    """Finite scalar quantization: ``model.posterior: {name: fsq, levels: [8, 5, 5, 5]}``
    with ``model.latent_dim = P * len(levels)`` for P code positions.

    The encoder's output is read as ``len(levels)`` channels by P positions (as ``vq``
    reads it); channel c is bounded by a scaled tanh to ``levels[c]`` values and rounded,
    with the straight-through gradient; z holds the levels scaled into [-1, 1]. The
    implied codebook is the product of the levels (1000 for [8, 5, 5, 5]), each code the
    mixed-radix number of its levels (the first channel fastest), all of them reachable and
    none learned: no codebook loss, no commitment loss, no dead codes to restart. Above
    16384 codes per position the priors model each channel's level instead
    (``model.prior.factorised``).

    Example:
        >>> head = FSQPosterior(latent_dim=8, levels=[3, 5])
        >>> q = head.eval()(torch.randn(2, 8))
        >>> head.space.codes, head.codes(q.sample()).shape
        (15, torch.Size([2, 4]))
    """

    @dataclass
    class Options:
        # Levels of each channel, one channel per entry (Mentzer et al.: [8, 5, 5, 5] for
        # about 2^10 codes); the codes per position are their product.
        levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])

        def validate(self, where: str) -> None:
            if not self.levels or any(int(n) < 2 for n in self.levels):
                raise ConfigError(
                    f"{where}.levels must be a list of levels per channel, each at least 2 "
                    f"(e.g. [8, 5, 5, 5]); got {self.levels}"
                )

    abilities = PosteriorAbilities(stochastic=False, discrete=True, extras=True)

    @staticmethod
    def label(o: FSQPosterior.Options) -> str:
        return "fsq " + "x".join(map(str, o.levels))

    half_l: Tensor
    shift: Tensor
    offset: Tensor
    levels_t: Tensor

    def __init__(self, latent_dim: int, levels: Sequence[int] = (8, 5, 5, 5)) -> None:
        super().__init__()
        levels = [int(n) for n in levels]
        d = len(levels)
        what = f"the number of levels ({d}, model.posterior.levels)"
        holds = "one value per channel per position"
        self._lay_out(latent_dim, d, math.prod(levels), what, holds, factors=tuple(levels))
        self.code_dim = d
        lv = torch.tensor(levels, dtype=torch.float32)
        # Mentzer et al.'s bound: tanh scaled to (L - 1) / 2 (a hair wider, so rounding
        # reaches both ends), shifted by half a step for an even L so that its L integer
        # values are -L/2 .. L/2 - 1.
        half_l = (lv - 1) * (1 + 1e-3) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        self.register_buffer("half_l", half_l, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.register_buffer("shift", torch.atanh(offset / half_l), persistent=False)
        self.register_buffer("levels_t", lv, persistent=False)

    def _width(self) -> Tensor:
        return torch.floor(self.levels_t / 2)  # z = integer level / width, in [-1, 1]

    def digits(self, z: Tensor) -> Tensor:
        w = self._width()
        level = torch.round(self._split(z.detach()) * w) + w
        top = (self.levels_t - 1).to(level)
        return torch.minimum(level.clamp_min(0), top).long()

    def embed_digit_weights(self, weights: Tensor) -> Tensor:
        w = self._width()
        top = weights.shape[-1]
        values = (torch.arange(top, device=weights.device)[None, :] - w[:, None]) / w[:, None]
        return self._join((weights * values.to(weights)).sum(-1))

    def forward(self, features: Tensor) -> Distribution:
        e = self._split(features)
        bounded = torch.tanh(e + self.shift) * self.half_l - self.offset
        rounded = bounded + (torch.round(bounded) - bounded).detach()  # straight through
        z = self._join(rounded / self._width())
        codes = self.codes(z.detach())
        return QuantisedCodes(self, z, codes, None, usage_terms(codes, len(features)))

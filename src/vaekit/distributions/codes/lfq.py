"""Lookup-free quantization (Yu et al. 2023, MAGVIT-v2): each channel's sign is a bit, a
code the number its bits make, kept in use by an entropy penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaekit.distributions.codes.base import ChannelMajor, FactoredHead, usage_terms
from vaekit.distributions.codes.vq import QuantisedCodes
from vaekit.errors import ConfigError
from vaekit.parts import PosteriorAbilities
from vaekit.validate import check_positive


def _bit_entropy(p: Tensor) -> Tensor:
    """Entropy in nats of Bernoulli(p), elementwise."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


class LFQPosterior(ChannelMajor, FactoredHead):
    """Lookup-free quantization: ``model.posterior: {name: lfq, code_dim: d}`` with
    ``model.latent_dim = P * d``: 2^d codes at each of P positions.

    Each of a position's d channels is quantised to its sign (z = +-1, the straight-
    through gradient); the code is the number its bits make (channel c is bit c). There is
    no codebook to learn. The loss gains ``commitment * ||z_e - sg(z)||^2`` and the entropy
    penalty of MAGVIT-v2, with soft bits ``p = sigmoid(4 z_e / temperature)`` (the
    softmax over the 2^d codes of minus their squared distance, which factorises per
    channel): ``sample_entropy`` x the entropy of each example's codes (low: confident
    bits) minus ``batch_entropy`` x the entropy of the batch's mean code distribution
    (high: every code in use). The batch's code distribution is taken as the product of
    its mean bits (an upper bound on its entropy, exact when bits are independent), so the
    penalty costs O(d), not O(2^d). Above 16384 codes per position (d > 14) the priors
    model each bit (``model.prior.factorised``).

    Example:
        >>> head = LFQPosterior(latent_dim=6, code_dim=3)
        >>> q = head.eval()(torch.tensor([[1.0, -1, 1, -1, 1, 1]]))  # channel-major: 3 x 2
        >>> q.sample(), head.codes(q.sample())          # bits (1, 1, 1) and (0, 0, 1)
        (tensor([[ 1., -1.,  1., -1.,  1.,  1.]]), tensor([[7, 4]]))
    """

    @dataclass
    class Options:
        # Bits d per position (channels); 2^d codes per position (MAGVIT-v2: 18).
        code_dim: int = 10
        # Weight of the commitment loss ||z_e - sg(z)||^2.
        commitment: float = 0.25
        # Weight of each example's code entropy in the loss (lower: more confident bits).
        sample_entropy: float = 0.1
        # Weight of the batch's code entropy, subtracted (higher: more codes in use).
        batch_entropy: float = 0.1
        # Temperature of the soft bits the entropies are taken of: sigmoid(4 z_e / t).
        temperature: float = 1.0

        def validate(self, where: str) -> None:
            check_positive(f"{where}.code_dim", self.code_dim)
            check_positive(f"{where}.temperature", self.temperature)
            for name in ("commitment", "sample_entropy", "batch_entropy"):
                if not getattr(self, name) >= 0:
                    raise ConfigError(f"{where}.{name} must be >= 0, got {getattr(self, name)}")

    abilities = PosteriorAbilities(stochastic=False, discrete=True, extras=True)

    @staticmethod
    def label(o: LFQPosterior.Options) -> str:
        return f"lfq {o.code_dim} bits"

    def __init__(
        self,
        latent_dim: int,
        code_dim: int = 10,
        commitment: float = 0.25,
        sample_entropy: float = 0.1,
        batch_entropy: float = 0.1,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        what = f"model.posterior.code_dim ({code_dim})"
        holds = "one bit per channel per position"
        self._lay_out(latent_dim, code_dim, 2**code_dim, what, holds, factors=(2,) * code_dim)
        self.code_dim = code_dim
        self.commitment = commitment
        self.sample_entropy = sample_entropy
        self.batch_entropy = batch_entropy
        self.temperature = temperature

    def digits(self, z: Tensor) -> Tensor:
        return (self._split(z.detach()) > 0).long()

    def embed_digit_weights(self, weights: Tensor) -> Tensor:
        return self._join(weights[..., 1] - weights[..., 0])  # bit 0 -> -1, bit 1 -> +1

    def entropy_penalty(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """Per example ``(B,)``: the entropy of its codes (nats, summed over positions) and
        the entropy that P codes drawn from the batch's mean bits would have."""
        p = torch.sigmoid(4 * e / self.temperature)  # (B, P, d): soft bit = 1
        sample = _bit_entropy(p).sum((-2, -1))
        mean = p.reshape(-1, self.code_dim).mean(0)
        batch = self.space.positions * _bit_entropy(mean).sum()
        return sample, batch.expand(len(e))

    def forward(self, features: Tensor) -> Distribution:
        e = self._split(features)
        bits = torch.where(e > 0, 1.0, -1.0).to(e)
        z_e = self._join(e)
        z = self._join(e + (bits - e).detach())  # value +-1, gradient straight through
        b = len(features)
        sq = (z_e - z.detach()).pow(2).sum(-1)
        sample, batch = self.entropy_penalty(e)
        aux = self.commitment * sq + self.sample_entropy * sample - self.batch_entropy * batch
        codes = self.codes(z.detach())
        terms = usage_terms(codes, b) | {
            "commitment": sq.detach(),
            "code_entropy": sample.detach(),
            "batch_entropy": batch.detach(),
        }
        return QuantisedCodes(self, z, codes, aux, terms)

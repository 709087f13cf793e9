"""Residual VQ (Zeghidour et al. 2021, SoundStream; Lee et al. 2022, RQ-VAE): a stack of
VQ codebooks, each quantising what the ones before it left, with quantizer dropout so
that any prefix of the stack decodes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.distributions.codes.base import FactoredHead
from vaekit.distributions.codes.vq import QuantisedCodes, VQPosterior
from vaekit.errors import ConfigError
from vaekit.parts import PosteriorAbilities
from vaekit.validate import check_positive


class ResidualVQPosterior(FactoredHead):
    """Residual VQ: ``model.posterior: {name: rvq, num_quantizers: Q, codes: K, code_dim:
    d}`` with ``model.latent_dim = Q * P * d`` for P code positions.

    The encoder writes ``P * d`` features (d channels by P positions, as for ``vq``);
    quantizer 1 takes each position's nearest code, quantizer q the nearest code to what
    quantizers 1..q-1 left (the residual). Each quantizer is a ``vq`` codebook (EMA,
    restarts, ``init``, ``cosine`` and the commitment loss on its residual, all as ``vq``
    has them). z is the Q quantised vectors side by side (Q * d channels per position), so
    each code reads back exactly from z; a decoder whose first layer is linear sees their
    sum as a special case. In training steps, ``dropout``: that share of the examples keeps
    only the first n quantizers (n uniform in 1..Q; the rest of z is zero), so that any
    prefix decodes (:meth:`prefix`).

    A code is the Q indices of a position, the number ``sum_q i_q K^(q-1)`` for priors
    over whole codes; with K^Q above 16384 the priors model each quantizer's code
    (``model.prior.factorised``).

    Example:
        >>> head = ResidualVQPosterior(latent_dim=12, num_quantizers=3, codes=4, code_dim=2)
        >>> q = head.eval()(torch.randn(5, 4))          # the encoder writes 2 positions x 2
        >>> q.sample().shape, head.space.codes, head.digits(q.sample()).shape
        (torch.Size([5, 12]), 64, torch.Size([5, 2, 3]))
    """

    @dataclass
    class Options(VQPosterior.Options):
        # Length d of each code vector; there are model.latent_dim / (Q * d) code positions.
        code_dim: int = 64
        # Quantizers Q in the stack; model.latent_dim = Q * positions * code_dim.
        num_quantizers: int = 4
        # Share of training examples that keep only a random prefix of the quantizers.
        dropout: float = 0.5

        def validate(self, where: str) -> None:
            super().validate(where)
            check_positive(f"{where}.num_quantizers", self.num_quantizers)
            if not 0 <= self.dropout <= 1:
                raise ConfigError(f"{where}.dropout must be in [0, 1], got {self.dropout}")

    abilities = PosteriorAbilities(stochastic=False, discrete=True, extras=True)

    @staticmethod
    def label(o: ResidualVQPosterior.Options) -> str:
        return f"rvq {o.num_quantizers}x{o.codes}x{o.code_dim}"

    def __init__(
        self,
        latent_dim: int,
        codes: int = 512,
        code_dim: int = 64,
        commitment: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        restart_dead: bool = True,
        init: str = "auto",
        kmeans_iters: int = 10,
        cosine: bool = False,
        num_quantizers: int = 4,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        q = num_quantizers
        what = f"num_quantizers x code_dim ({q} x {code_dim})"
        holds = "each quantizer's code vector per position"
        self._lay_out(latent_dim, code_dim, codes**q, what, holds, factors=(codes,) * q, stack=q)
        self.dropout = dropout
        self.layers = nn.ModuleList(
            VQPosterior(
                self.in_features,
                codes,
                code_dim,
                commitment,
                ema,
                decay,
                restart_dead,
                init,
                kmeans_iters,
                cosine,
            )
            for _ in range(q)
        )

    def _blocks(self, z: Tensor) -> list[Tensor]:
        return list(z.split(self.in_features, dim=-1))

    def digits(self, z: Tensor) -> Tensor:
        layers: list[VQPosterior] = list(self.layers)  # type: ignore[arg-type]
        return torch.stack([vq.codes(b) for vq, b in zip(layers, self._blocks(z), strict=True)], -1)

    def embed_digit_weights(self, weights: Tensor) -> Tensor:
        layers: list[VQPosterior] = list(self.layers)  # type: ignore[arg-type]
        return torch.cat([vq.embed_weights(weights[..., i, :]) for i, vq in enumerate(layers)], -1)

    def prefix(self, z: Tensor, n: int) -> Tensor:
        """z with only the first ``n`` quantizers' vectors (the rest zero), as quantizer
        dropout trains the decoder to read."""
        keep = torch.arange(len(self.layers), device=z.device) < n
        return (z.unflatten(-1, (len(self.layers), -1)) * keep[:, None].to(z)).flatten(-2)

    def forward(self, features: Tensor) -> Distribution:
        residual = features
        zs: list[Tensor] = []
        aux: list[Tensor] = []
        terms: dict[str, Tensor] = {}
        for i, vq in enumerate(self.layers):
            q = vq(residual)
            assert isinstance(q, QuantisedCodes)
            zs.append(q.z)
            if q.aux_loss is not None:
                aux.append(q.aux_loss)
            # Usage of each codebook, as vq reports it (the first quantizer's unsuffixed).
            terms |= {(k if i == 0 else f"{k}_{i + 1}"): v for k, v in q.terms.items()}
            residual = residual - q.z.detach()
        z = torch.stack(zs, 1)  # (B, Q, P * d)
        b = features.shape[0]
        if self.training and torch.is_grad_enabled() and self.dropout > 0:
            drop = torch.rand(b, device=z.device) < self.dropout
            n = torch.randint(1, len(self.layers) + 1, (b,), device=z.device)
            n = torch.where(drop, n, len(self.layers))
            keep = torch.arange(len(self.layers), device=z.device)[None, :] < n[:, None]
            z = z * keep[..., None].to(z)
        z = z.flatten(1)
        loss = torch.stack(aux).sum(0) if aux else None
        terms["residual"] = residual.pow(2).sum(-1).detach()
        return QuantisedCodes(self, z, self.codes(z.detach()), loss, terms)

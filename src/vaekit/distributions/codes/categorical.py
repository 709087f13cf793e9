"""The categorical prior over codes: independent positions, uniform or learned."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Size, Tensor, nn
from torch.distributions import Categorical, Distribution, register_kl
from torch.types import _size

from vaekit.distributions.codes.base import (
    CodeDistribution,
    CodeHead,
    CodeSpace,
    code_head,
    level_mask,
    prior_space,
)
from vaekit.distributions.codes.gumbel import GumbelCodes
from vaekit.distributions.codes.vq import QuantisedCodes
from vaekit.errors import UsageError
from vaekit.parts import PriorAbilities


class CategoricalCodes(CodeDistribution):
    """p(z): independent categoricals over the codes of each position, ``logits (P, K)``;
    ``uniform``: the logits are fixed at zero (every code equally likely), so a temperature
    has nothing to change and is refused."""

    def __init__(self, head: CodeHead, logits: Tensor, uniform: bool = False) -> None:
        self.logits = logits
        self.uniform = uniform
        super().__init__(head, ())

    @property
    def log_probs(self) -> Tensor:
        return torch.log_softmax(self.logits, dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        return (self.head.onehot(value) * self.log_probs).sum((-2, -1))

    def sample(self, sample_shape: _size = ()) -> Tensor:
        with torch.no_grad():
            return self.head.embed(Categorical(logits=self.logits).sample(Size(sample_shape)))

    @property
    def mean(self) -> Tensor:
        return self.head.embed_weights(torch.softmax(self.logits, dim=-1))

    def tempered(self, t: float) -> CategoricalCodes:
        """Sampling at temperature ``t``: every position's logits divided by ``t`` (below 1
        the frequent codes gain). The uniform prior refuses: it would stay uniform, and a
        temperature that changes nothing is a mistake the user should hear about."""
        if self.uniform:
            raise UsageError(
                f"the uniform categorical prior (model.prior=categorical, learned: false) has "
                f"no temperature: every code stays equally likely, so temperature {t:g} would "
                "change nothing. Sample at temperature 1, or fit a prior to the codes first "
                "(`vaekit train --resume RUN --stage prior --epochs N`), whose temperature works"
            )
        return CategoricalCodes(self.head, self.logits / t)


class CategoricalPrior(nn.Module):
    """A categorical prior over a discrete posterior's codes (``model.prior=categorical``):
    every position independent, uniform (``learned: false``, the default; log p(z) =
    -P log K) or with learned code frequencies per position.

    Example:
        >>> from vaekit.config import ModelConfig, part
        >>> from vaekit.model import build_model
        >>> cfg = ModelConfig(latent_dim=6, posterior=part("vq", codes=4, code_dim=2),
        ...                   prior="categorical")
        >>> model = build_model(cfg, (1, 8, 8))
        >>> round(float(model.prior.log_prob(model.prior.sample((1,)))[0]), 4)  # 3 log(1/4)
        -4.1589
    """

    @dataclass
    class Options:
        # false: uniform over the codes (nothing to learn); true: learned logits per position.
        learned: bool = False
        # Model each code's digits (FSQ levels, LFQ bits, residual quantizers' codes) as
        # positions of their own; unset: only where whole codes exceed 16384 per position.
        factorised: bool | None = None

    abilities = PriorAbilities(discrete=True, learned=True, temperature=True)

    @staticmethod
    def label(o: CategoricalPrior.Options) -> str:
        return ("categorical" if o.learned else "uniform") + (" digits" if o.factorised else "")

    logits: Tensor
    mask: Tensor

    def __init__(
        self,
        latent_dim: int,
        learned: bool = False,
        factorised: bool | None = None,
        *,
        code_space: CodeSpace | None = None,
    ) -> None:
        super().__init__()
        space = prior_space(code_space, "model.prior=categorical", factorised)
        self.factorised = space != code_space
        self.latent_dim = latent_dim
        logits = torch.zeros(space.positions, space.codes)
        if learned:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits, persistent=False)
        self.register_buffer("mask", level_mask(space), persistent=False)

    def forward(self, encoder: Callable[..., Distribution] | None = None) -> Distribution:
        return CategoricalCodes(
            code_head(encoder, "model.prior=categorical", self.factorised),
            self.logits + self.mask,
            uniform=not isinstance(self.logits, nn.Parameter),
        )


@register_kl(GumbelCodes, CategoricalCodes)
def _kl_categorical(q: GumbelCodes, p: CategoricalCodes) -> Tensor:
    """The exact KL of categoricals, summed over the positions."""
    return (q.probs * (q.log_probs - p.log_probs)).sum((-2, -1))


@register_kl(QuantisedCodes, CategoricalCodes)
def _kl_vq_categorical(q: QuantisedCodes, p: CategoricalCodes) -> Tensor:
    return -p.log_prob(q.z)

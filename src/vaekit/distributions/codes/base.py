"""What every discrete code shares: the code space, the posterior head that writes z
and reads it back, the distribution over codes, and the codebook's usage."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Size, Tensor
from torch.distributions import Distribution, constraints
from torch.types import _size

from vaekit.distributions.posteriors import PosteriorHead

# enumerate_support lists every code of every position (K ** P values): only tiny models.
MAX_ENUMERATE = 1 << 16
# A VQ code is dead when its running usage falls below this share of an even split of a
# batch's vectors; a (re)started code gets twice that, so that it has ~70 steps (at decay
# 0.99) to win vectors before it counts as dead again.
DEAD_SHARE = 0.01


@dataclass(frozen=True)
class CodeSpace:
    """What a discrete posterior's z holds: ``positions`` codes, each one of ``codes``,
    drawn as a ``grid`` of rows x columns (the PixelCNN's raster order, and how figures
    and the explorer show the codes).

    >>> CodeSpace(49, 512, (7, 7)).bits
    441.0
    """

    positions: int
    codes: int
    grid: tuple[int, int]

    @property
    def bits(self) -> float:
        """Bits to name one z: positions x log2(codes)."""
        return self.positions * math.log2(self.codes)


def code_grid(positions: int) -> tuple[int, int]:
    """Rows x columns for ``positions`` codes: the most nearly square factorisation
    (49 -> 7 x 7, the map of a 28 x 28 image after two stride-2 stages; 20 -> 4 x 5).

    >>> code_grid(49), code_grid(20), code_grid(7)
    ((7, 7), (4, 5), (1, 7))
    """
    rows = max(r for r in range(1, math.isqrt(positions) + 1) if positions % r == 0)
    return rows, positions // rows


class CodeHead(PosteriorHead):
    """A posterior head whose z is a code: it translates between z and code indices.

    Subclasses set ``space`` and implement :meth:`embed_weights` and :meth:`onehot`.
    """

    space: CodeSpace

    def embed_weights(self, weights: Tensor) -> Tensor:
        """z of per-position weights over the codes ``(..., P, K)`` -> ``(..., D)``;
        linear, so one-hot rows give a code's z and probabilities its mean."""
        raise NotImplementedError

    def onehot(self, z: Tensor) -> Tensor:
        """One-hot rows ``(..., P, K)`` of the codes in z ``(..., D)``."""
        raise NotImplementedError

    def codes(self, z: Tensor) -> Tensor:
        """Code indices ``(..., P)`` of z ``(..., D)``."""
        return self.onehot(z).argmax(-1)

    def embed(self, codes: Tensor) -> Tensor:
        """z ``(..., D)`` of code indices ``(..., P)``."""
        return self.embed_weights(F.one_hot(codes.long(), self.space.codes).float())

    def _device(self) -> torch.device:
        for t in [*self.parameters(), *self.buffers()]:
            return t.device
        return torch.device("cpu")


def code_head(encoder: Callable[..., Distribution] | None, what: str) -> CodeHead:
    """The discrete posterior head of ``encoder``, which priors over codes read z through."""
    head = getattr(encoder, "head", None)
    if not isinstance(head, CodeHead):
        raise ValueError(
            f"{what} is a prior over a discrete posterior's codes: ask the VAE for it "
            "(model.prior), with model.posterior=vq or gumbel"
        )
    return head


class CodeDistribution(Distribution):
    """A distribution over the codes of ``head``, with z as the head writes it.

    Its support is finite (K ** P codes), which ``enumerate_support`` lists for tiny models
    (the contract checks that the probabilities of all codes sum to one).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_enumerate_support = True

    def __init__(self, head: CodeHead, batch_shape: _size) -> None:
        self.head = head
        super().__init__(Size(batch_shape), Size([head.latent_dim]), validate_args=False)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        space = self.head.space
        count = space.codes**space.positions
        if count > MAX_ENUMERATE:
            raise NotImplementedError(
                f"{count} codes ({space.codes} ** {space.positions}) are too many to list"
            )
        axes = [torch.arange(space.codes, device=self.head._device())] * space.positions
        idx = torch.cartesian_prod(*axes).reshape(count, space.positions)
        z = self.head.embed(idx).reshape(count, *([1] * len(self.batch_shape)), -1)
        return z.expand(count, *self.batch_shape, z.shape[-1]) if expand else z


# -- Gumbel-softmax (Concrete) posterior ---------------------------------------------------------


def _require_space(space: CodeSpace | None, what: str) -> CodeSpace:
    if space is None:
        raise ValueError(
            f"{what} is a prior over a discrete posterior's codes: use it with "
            "model.posterior=vq or gumbel"
        )
    return space


@torch.no_grad()
def code_usage(codes: Tensor, space: CodeSpace) -> dict[str, Any]:
    """How a data set uses the codebook, from its codes ``(N, P)``: codes used (of K),
    the perplexity of the code frequencies (pooled over positions; K when all are used
    evenly) and the bits a code grid holds (P log2 K).

    >>> code_usage(torch.tensor([[0, 1], [0, 2]]), CodeSpace(2, 4, (1, 2)))
    {'codes': 4, 'positions': 2, 'grid': [1, 2], 'used': 3, 'perplexity': 2.8284, 'bits': 4.0}
    """
    counts = torch.bincount(codes.reshape(-1).long(), minlength=space.codes).double()
    share = counts / counts.sum().clamp_min(1.0)
    entropy = -(share * torch.log(share.clamp_min(1e-300))).sum()
    return {
        "codes": space.codes,
        "positions": space.positions,
        "grid": list(space.grid),
        "used": int((counts > 0).sum()),
        "perplexity": round(float(torch.exp(entropy)), 4),
        "bits": round(space.bits, 4),
    }


# -- KL divergences in closed form --------------------------------------------------------------

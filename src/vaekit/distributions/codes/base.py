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
from vaekit.errors import ConfigError

# enumerate_support lists every code of every position (K ** P values): only tiny models.
MAX_ENUMERATE = 1 << 16
# One categorical per position over more codes than this is refused (a PixelCNN's one-hot
# input alone is N x P x K floats): a factorised prior, over each code's digits (an FSQ
# channel's level, a residual quantizer's code), models them instead.
MAX_CODES = 1 << 14
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
    # The digits a code is made of, first fastest (mixed radix): an FSQ code's level per
    # channel, an LFQ code's bits, a residual VQ's code per quantizer; () for one digit.
    factors: tuple[int, ...] = ()
    # The codes allowed at each position where they differ (a factored view of mixed
    # FSQ levels); () when every position has all ``codes``.
    limits: tuple[int, ...] = ()

    @property
    def bits(self) -> float:
        """Bits to name one z: positions x log2(codes)."""
        if self.limits:
            return sum(math.log2(n) for n in self.limits)
        return self.positions * math.log2(self.codes)

    def factored(self) -> CodeSpace:
        """The space of the codes' digits: each position's F digits become F positions
        (side by side in the grid, so a PixelCNN sees a position's earlier digits right
        before its next one), of at most max(factors) codes each.

        >>> CodeSpace(4, 40, (2, 2), factors=(8, 5)).factored()
        CodeSpace(positions=8, codes=8, grid=(2, 4), factors=(), limits=(8, 5, 8, 5, 8, 5, 8, 5))
        """
        f = self.factors or (self.codes,)
        if len(f) == 1:
            return self
        rows, cols = self.grid
        limits = f * self.positions if len(set(f)) > 1 else ()
        return CodeSpace(self.positions * len(f), max(f), (rows, cols * len(f)), limits=limits)


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

    def factored(self) -> CodeHead:
        """The head that reads z digit by digit (:meth:`CodeSpace.factored`); itself when
        a code is one digit."""
        return self

    def _device(self) -> torch.device:
        for t in [*self.parameters(), *self.buffers()]:
            return t.device
        return torch.device("cpu")

    def _lay_out(
        self,
        latent_dim: int,
        width: int,
        codes: int,
        what: str,
        holds: str,
        factors: tuple[int, ...] = (),
        stack: int = 1,
    ) -> None:
        """Set ``latent_dim``, ``in_features`` and ``space`` for a z of ``stack`` blocks
        (the encoder writes one) of ``width`` values per code position, each position one
        of ``codes``; a ValueError naming ``what`` (the option that sets the width) and what
        z ``holds`` when ``latent_dim`` does not divide into them."""
        if latent_dim % (stack * width):
            raise ValueError(
                f"model.latent_dim ({latent_dim}) must be a multiple of {what}: z is {holds}"
            )
        self.latent_dim = latent_dim
        self.in_features = latent_dim // stack
        positions = self.in_features // width
        self.space = CodeSpace(positions, codes, code_grid(positions), factors=factors)


class ChannelMajor:
    """A code head mixin for z read as ``code_dim`` channels by P positions, channel-major
    (as a ``(d, H, W)`` map flattens): ``vq``'s code vectors, ``fsq``'s levels, ``lfq``'s bits."""

    code_dim: int
    latent_dim: int
    space: CodeSpace

    def _split(self, features: Tensor) -> Tensor:
        """(..., D) -> (..., P, d)."""
        d, p = self.code_dim, self.space.positions
        return features.reshape(*features.shape[:-1], d, p).transpose(-1, -2)

    def _join(self, values: Tensor) -> Tensor:
        """(..., P, d) -> (..., D): :meth:`_split` undone."""
        return values.transpose(-1, -2).reshape(*values.shape[:-2], self.latent_dim)


def _strides(factors: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor([math.prod(factors[:i]) for i in range(len(factors))], device=device)


def join_digits(digits: Tensor, factors: tuple[int, ...]) -> Tensor:
    """The code index of digits ``(..., F)`` (mixed radix, the first digit fastest).

    >>> join_digits(torch.tensor([[1, 2], [7, 4]]), (8, 5))
    tensor([17, 39])
    """
    return (digits.long() * _strides(factors, digits.device)).sum(-1)


def split_index(codes: Tensor, factors: tuple[int, ...]) -> Tensor:
    """The digits ``(..., F)`` of code indices ``(...)``: :func:`join_digits` undone.

    >>> split_index(torch.tensor([17, 39]), (8, 5))
    tensor([[1, 2],
            [7, 4]])
    """
    f = torch.tensor(factors, device=codes.device)
    return (codes.long()[..., None] // _strides(factors, codes.device)) % f


class FactoredHead(CodeHead):
    """A code head whose code at a position is made of digits (``space.factors``): the
    index is their mixed-radix number, so priors model it as one code, or digit by digit
    through :meth:`factored`.

    Subclasses set ``space`` (with ``factors``) and implement :meth:`digits` and
    :meth:`embed_digit_weights`; every other translation follows from those two.
    """

    def digits(self, z: Tensor) -> Tensor:
        """The digits ``(..., P, F)`` of z's codes."""
        raise NotImplementedError

    def embed_digit_weights(self, weights: Tensor) -> Tensor:
        """z ``(..., D)`` of weights over each digit's values ``(..., P, F, max(factors))``;
        linear, as :meth:`CodeHead.embed_weights` is."""
        raise NotImplementedError

    def embed_digits(self, digits: Tensor) -> Tensor:
        """z ``(..., D)`` of digits ``(..., P, F)``."""
        top = max(self.space.factors)
        return self.embed_digit_weights(F.one_hot(digits.long(), top).float().to(self._device()))

    def codes(self, z: Tensor) -> Tensor:
        return join_digits(self.digits(z), self.space.factors)

    def embed(self, codes: Tensor) -> Tensor:
        return self.embed_digits(split_index(codes, self.space.factors))

    def onehot(self, z: Tensor) -> Tensor:
        return F.one_hot(self.codes(z), self.space.codes).to(z.dtype)

    def embed_weights(self, weights: Tensor) -> Tensor:
        # A digit's part of z depends on that digit only, so z is linear in each digit's
        # marginal weights: sum the code weights over the other digits.
        factors = self.space.factors
        lead = weights.shape[:-1]
        grid = weights.reshape(*lead, *reversed(factors))  # the first digit last (fastest)
        top, n = max(factors), len(factors)
        marginals = []
        for i, f in enumerate(factors):
            axis = len(lead) + n - 1 - i
            others = [len(lead) + j for j in range(n) if len(lead) + j != axis]
            m = grid.sum(others) if others else grid
            marginals.append(F.pad(m, (0, top - f)))
        return self.embed_digit_weights(torch.stack(marginals, -2))

    def factored(self) -> CodeHead:
        return DigitView(self) if len(self.space.factors) > 1 else self


class DigitView(CodeHead):
    """A factored head's codes read digit by digit: P x F positions of at most
    max(factors) codes (:meth:`CodeSpace.factored`), for priors too large over whole codes."""

    def __init__(self, head: FactoredHead) -> None:
        super().__init__()
        self.head = head
        self.latent_dim = head.latent_dim
        self.space = head.space.factored()

    def codes(self, z: Tensor) -> Tensor:
        return self.head.digits(z).flatten(-2)

    def embed(self, codes: Tensor) -> Tensor:
        f = len(self.head.space.factors)
        return self.head.embed_digits(codes.reshape(*codes.shape[:-1], -1, f))

    def onehot(self, z: Tensor) -> Tensor:
        return F.one_hot(self.codes(z), self.space.codes).to(z.dtype)

    def embed_weights(self, weights: Tensor) -> Tensor:
        f = len(self.head.space.factors)
        return self.head.embed_digit_weights(
            weights.reshape(*weights.shape[:-2], -1, f, weights.shape[-1])
        )


def shown_head(head: CodeHead) -> CodeHead:
    """The head that figures and the explorer show codes through: ``head``, or its digit
    view where whole codes are more than :data:`MAX_CODES` (a residual VQ's K ** Q)."""
    return head.factored() if head.space.codes > MAX_CODES else head


def code_head(
    encoder: Callable[..., Distribution] | None, what: str, factorised: bool = False
) -> CodeHead:
    """The discrete posterior head of ``encoder``, which priors over codes read z through
    (``factorised``: its digit view, :meth:`CodeHead.factored`)."""
    head = getattr(encoder, "head", None)
    if not isinstance(head, CodeHead):
        raise ValueError(
            f"{what} is a prior over a discrete posterior's codes: ask the VAE for it "
            "(model.prior), with model.posterior=vq, rvq, fsq, lfq or gumbel"
        )
    return head.factored() if factorised else head


def prior_space(space: CodeSpace | None, what: str, factorised: bool | None) -> CodeSpace:
    """The code space a prior over codes models: the posterior's, or its digits'
    (``factorised``; None: the digits' where whole codes are more than :data:`MAX_CODES`)."""
    space = _require_space(space, what)
    if factorised is None:
        factorised = space.codes > MAX_CODES
    if factorised:
        return space.factored()
    if space.codes > MAX_CODES:
        raise ConfigError(
            f"{what}: the posterior's codes are {space.codes} per position ("
            f"{' x '.join(map(str, space.factors))}), too many for one categorical (at most "
            f"{MAX_CODES}): set model.prior.factorised: true, a prior over each code's digits "
            "(each FSQ channel's level, each LFQ bit, each residual quantizer's code)"
        )
    return space


def level_mask(space: CodeSpace) -> Tensor:
    """Logits to add ``(P, K)``: 0 for a position's allowed codes, -1e9 beyond its limit
    (finite, so that a zero one-hot weight times it stays zero)."""
    mask = torch.zeros(space.positions, space.codes)
    for p, n in enumerate(space.limits):
        mask[p, n:] = -1e9
    return mask


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
        sizes = space.limits or (space.codes,) * space.positions
        count = math.prod(sizes)
        if count > MAX_ENUMERATE:
            raise NotImplementedError(
                f"{count} codes ({space.codes} ** {space.positions}) are too many to list"
            )
        axes = [torch.arange(n, device=self.head._device()) for n in sizes]
        idx = torch.cartesian_prod(*axes).reshape(count, space.positions)
        z = self.head.embed(idx).reshape(count, *([1] * len(self.batch_shape)), -1)
        return z.expand(count, *self.batch_shape, z.shape[-1]) if expand else z


# -- Gumbel-softmax (Concrete) posterior ---------------------------------------------------------


def _require_space(space: CodeSpace | None, what: str) -> CodeSpace:
    if space is None:
        raise ValueError(
            f"{what} is a prior over a discrete posterior's codes: use it with "
            "model.posterior=vq, rvq, fsq, lfq or gumbel"
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
    # Counts of the codes that occur: a residual VQ's K ** Q codes are too many to bin.
    counts = torch.unique(codes.reshape(-1).long(), return_counts=True)[1].double()
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


def usage_terms(codes: Tensor, batch: int) -> dict[str, Tensor]:
    """The perplexity and count of the codes ``(B, P)`` a batch uses, per example (as a
    quantiser's q(z|x) reports them beside the loss)."""
    with torch.no_grad():
        counts = torch.unique(codes.reshape(-1), return_counts=True)[1].float()
        share = counts / counts.sum()
        perplexity = torch.exp(-(share * torch.log(share)).sum())
        return {
            "perplexity": perplexity.expand(batch),
            "codes_used": torch.tensor(float(len(counts)), device=codes.device).expand(batch),
        }

"""Discrete latent codes: posteriors and priors whose z is a code.

The code is z, its posterior and prior are Distributions, and the bound is reported in
nats, as for every other model (DESIGN.md). A discrete posterior head writes z and reads
it back through three methods (:class:`CodeHead`): ``codes(z)`` gives the code index at
each of its P positions, ``embed(codes)`` the z of given codes, and ``onehot(z)`` the
one-hot rows of z's codes ``(..., P, K)``. Priors over codes (``categorical``,
``pixelcnn``) are built from the encoder as the VampPrior is, and score z through its
head, so any prior fits any discrete posterior:

- ``gumbel``: N categorical variables of K classes each (Jang et al. 2017; Maddison et
  al. 2017); z is N one-hot rows, relaxed by the Gumbel-softmax while training (with
  temperature annealing, optionally straight-through) and exact one-hot draws in
  evaluation. ``log_prob`` of a one-hot z is the categorical log-probability, so the
  importance-sampled likelihood is the usual estimator; the KL against a categorical
  prior is exact (analytic).
- ``vq``: VQ-VAE (van den Oord et al. 2017): a codebook of K vectors, the nearest code
  at each of P positions, the straight-through gradient and the commitment loss, with
  EMA codebook updates (Razavi et al. 2019) and restarts of dead codes. The posterior
  is a point mass on one code (log q = 0), so KL = -log p(z_q) and the ELBO is
  log p(x | z_q) + log p(z_q).
- ``categorical`` prior: independent positions, uniform or learned.
- ``pixelcnn`` prior: a gated PixelCNN (van den Oord et al. 2016) over the code grid,
  trained jointly or as a second stage (``vaekit train --resume RUN --stage prior``).

Example:
    >>> from vaekit.config import ModelConfig, part
    >>> from vaekit.model import build_model
    >>> cfg = ModelConfig(latent_dim=20, posterior=part("gumbel", categories=10),
    ...                   prior=part("categorical"))
    >>> model = build_model(cfg, (1, 8, 8))
    >>> z = model.encode(torch.rand(3, 1, 8, 8)).rsample()   # (3, 20): two one-hot rows of 10
    >>> model.prior.log_prob(z).shape                         # log 10**-2 each
    torch.Size([3])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Size, Tensor, nn
from torch.distributions import Categorical, Distribution, constraints, register_kl
from torch.types import _size

from vaekit.distributions.posteriors import PosteriorHead
from vaekit.errors import ConfigError, UsageError
from vaekit.parts import Composition, PosteriorAbilities, PriorAbilities
from vaekit.validate import check_positive

__all__ = [
    "CodeSpace",
    "code_grid",
    "CodeHead",
    "CodeDistribution",
    "GumbelCodes",
    "GumbelPosterior",
    "QuantisedCodes",
    "VQPosterior",
    "CategoricalCodes",
    "CategoricalPrior",
    "GatedPixelCNN",
    "PixelCNNCodes",
    "PixelCNNPrior",
    "code_head",
    "code_usage",
    "MAX_ENUMERATE",
    "DEAD_SHARE",
]

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
        if latent_dim % categories:
            raise ValueError(
                f"model.latent_dim ({latent_dim}) must be a multiple of model.posterior.categories "
                f"({categories}): z is one one-hot row of K classes per categorical variable"
            )
        self.latent_dim = latent_dim
        self.in_features = latent_dim
        variables = latent_dim // categories
        self.space = CodeSpace(variables, categories, code_grid(variables))
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


class QuantisedCodes(CodeDistribution):
    """q(z|x) of VQ-VAE: all mass on the quantised z_q (one code per position).

    ``rsample`` returns z_q with the straight-through gradient to the encoder's output;
    ``log_prob`` is 0 at z_q's codes and -inf elsewhere (a one-hot posterior has zero
    entropy). ``aux_loss`` (per example) is the commitment loss (and the codebook loss
    when the codebook learns by gradient), which the objectives add to their loss;
    ``terms`` reports the squared distance to the codes, the codebook's perplexity and
    the number of codes in use, over the batch.
    """

    has_rsample = True

    def __init__(
        self,
        head: CodeHead,
        z: Tensor,
        codes: Tensor,
        aux_loss: Tensor | None = None,
        terms: dict[str, Tensor] | None = None,
    ) -> None:
        self.z = z  # (B, D), value z_q
        self.indices = codes  # (B, P)
        self.aux_loss = aux_loss
        self.terms = terms or {}
        super().__init__(head, z.shape[:-1])

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        return self.z.expand(Size(sample_shape) + self.z.shape)

    def log_prob(self, value: Tensor) -> Tensor:
        same = (self.head.codes(value) == self.indices).all(-1)
        return torch.where(same, 0.0, -math.inf).to(value.dtype)

    @property
    def mean(self) -> Tensor:
        return self.z

    @property
    def mode(self) -> Tensor:
        return self.z

    @property
    def variance(self) -> Tensor:
        return torch.zeros_like(self.z)

    def entropy(self) -> Tensor:
        return self.z.new_zeros(self.batch_shape)


class VQPosterior(CodeHead):
    """VQ-VAE's quantiser (van den Oord et al. 2017): ``model.posterior: {name: vq, codes:
    K, code_dim: d}`` with ``model.latent_dim = P * d`` for P code positions.

    The encoder's output is read as d channels by P positions (a convolutional map
    ``(d, H, W)`` flattened, so with ``model.encoder.grid: true`` each position is a place
    in the image); each position takes its nearest code. z is the codes' vectors, with
    the straight-through gradient; the loss gains ``commitment * ||z_e - sg(z_q)||^2`` and,
    without EMA, the codebook term ``||sg(z_e) - z_q||^2``.

    In training steps (training mode, gradients on) the codebook learns: by EMA of the
    vectors assigned to each code (Razavi et al. 2019; ``decay``), or by gradient
    (``ema: false``). ``restart_dead``: a code whose running usage falls below 1% of an
    even share of a batch is moved to a random encoder output of the batch, and at the
    first step the whole codebook starts from encoder outputs (without it, from N(0, 1)).

    Example:
        >>> head = VQPosterior(latent_dim=8, codes=4, code_dim=2)
        >>> q = head.eval()(torch.randn(3, 8))
        >>> q.sample().shape, q.log_prob(q.sample())
        (torch.Size([3, 8]), tensor([0., 0., 0.]))
    """

    @dataclass
    class Options:
        # Codebook size K.
        codes: int = 512
        # Length d of each code vector; there are model.latent_dim / d code positions.
        code_dim: int = 64
        # Weight beta of the commitment loss ||z_e - sg(z_q)||^2 (van den Oord et al.: 0.25).
        commitment: float = 0.25
        # Codebook by exponential moving averages (true) or by gradient of ||sg(z_e) - z_q||^2.
        ema: bool = True
        # Decay of the moving averages (EMA codebook and code usage).
        decay: float = 0.99
        # Move codes that fall out of use to encoder outputs (and start the codebook from them).
        restart_dead: bool = True

        def validate(self, where: str) -> None:
            if self.codes < 2:
                raise ConfigError(f"{where}.codes must be at least 2, got {self.codes}")
            check_positive(f"{where}.code_dim", self.code_dim)
            if not self.commitment >= 0:
                raise ConfigError(f"{where}.commitment must be >= 0, got {self.commitment}")
            if not 0 < self.decay < 1:
                raise ConfigError(f"{where}.decay must be in (0, 1), got {self.decay}")

    abilities = PosteriorAbilities(stochastic=False, discrete=True, extras=True)

    @staticmethod
    def label(o: VQPosterior.Options) -> str:
        how = ("ema" if o.ema else "grad") + (" restarts" if o.restart_dead else "")
        return f"vq {o.codes}x{o.code_dim} {how}"

    codebook: Tensor
    usage: Tensor
    ema_sum: Tensor
    started: Tensor

    def __init__(
        self,
        latent_dim: int,
        codes: int = 512,
        code_dim: int = 64,
        commitment: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        restart_dead: bool = True,
    ) -> None:
        super().__init__()
        if latent_dim % code_dim:
            raise ValueError(
                f"model.latent_dim ({latent_dim}) must be a multiple of model.posterior.code_dim "
                f"({code_dim}): z is one code vector per position"
            )
        self.latent_dim = latent_dim
        self.in_features = latent_dim
        positions = latent_dim // code_dim
        self.space = CodeSpace(positions, codes, code_grid(positions))
        self.code_dim = code_dim
        self.commitment = commitment
        self.ema = ema
        self.decay = decay
        self.restart_dead = restart_dead
        init = torch.randn(codes, code_dim)
        if ema:
            self.register_buffer("codebook", init)
            # Each code starts with one pseudo-assignment of itself, so that code = sum / usage
            # holds from the start and an unused code keeps its vector.
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # Running assignments per step of each code (EMA): perplexity, dead codes.
        self.register_buffer("usage", torch.ones(codes))
        self.register_buffer("started", torch.zeros((), dtype=torch.long))

    def _split(self, features: Tensor) -> Tensor:
        """(..., D) -> (..., P, d): channel-major, as a (d, H, W) map flattens."""
        d, p = self.code_dim, self.space.positions
        return features.reshape(*features.shape[:-1], d, p).transpose(-1, -2)

    def _join(self, vectors: Tensor) -> Tensor:
        return vectors.transpose(-1, -2).reshape(*vectors.shape[:-2], self.latent_dim)

    def nearest(self, vectors: Tensor) -> Tensor:
        """Index of the nearest code of each vector ``(..., d)`` -> ``(...)``."""
        with torch.no_grad():
            flat = vectors.reshape(-1, self.code_dim).to(self.codebook.dtype)
            book = self.codebook.detach()
            dist = (
                flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.T + book.pow(2).sum(1)[None, :]
            )
            return dist.argmin(1).reshape(vectors.shape[:-1])

    def embed_weights(self, weights: Tensor) -> Tensor:
        return self._join(weights @ self.codebook)

    def onehot(self, z: Tensor) -> Tensor:
        return F.one_hot(self.nearest(self._split(z)), self.space.codes).to(z.dtype)

    def codes(self, z: Tensor) -> Tensor:
        return self.nearest(self._split(z))

    def forward(self, features: Tensor) -> Distribution:
        z_e = self._split(features)  # (B, P, d)
        flat = z_e.reshape(-1, self.code_dim)
        learning = self.training and torch.is_grad_enabled()
        if learning and self.restart_dead and not bool(self.started):
            self._start_from(flat.detach())
        idx = self.nearest(flat)
        z_q = F.embedding(idx, self.codebook)  # gradient to a learned codebook only
        b = features.shape[0]
        sq = (flat - z_q.detach()).pow(2).reshape(b, -1).sum(-1)
        aux = self.commitment * sq
        if not self.ema:
            aux = aux + (flat.detach() - z_q).pow(2).reshape(b, -1).sum(-1)
        # Value z_q exactly; gradient straight through to the encoder's output.
        z = self._join((z_q.detach() + flat - flat.detach()).reshape(z_e.shape))
        counts = torch.bincount(idx, minlength=self.space.codes).to(flat.dtype)
        share = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(share * torch.log(share.clamp_min(1e-12))).sum())
        terms = {
            "commitment": sq.detach(),
            "perplexity": perplexity.expand(b),
            "codes_used": (counts > 0).sum().to(flat.dtype).expand(b),
        }
        if learning:
            self._learn(flat.detach(), idx, counts)
        return QuantisedCodes(self, z, idx.reshape(b, -1), aux, terms)

    # -- the codebook's own learning (no gradient) ------------------------------------------

    @torch.no_grad()
    def _start_from(self, vectors: Tensor) -> None:
        """Every code from an encoder output of the first batch (a data-dependent start)."""
        k = self.space.codes
        pick = _choice(len(vectors), k, vectors.device)
        fresh = 2 * DEAD_SHARE * len(vectors) / k
        self._set(torch.ones(k, dtype=torch.bool, device=vectors.device), vectors[pick], fresh)
        self.started.fill_(1)
        _broadcast(self.codebook, self.usage, *([self.ema_sum] if self.ema else []))

    @torch.no_grad()
    def _set(self, which: Tensor, vectors: Tensor, usage: float | Tensor) -> None:
        self.codebook.data[which] = vectors.to(self.codebook.dtype)
        self.usage[which] = usage
        if self.ema:
            self.ema_sum[which] = self.codebook[which] * self.usage[which, None]

    @torch.no_grad()
    def _learn(self, vectors: Tensor, idx: Tensor, counts: Tensor) -> None:
        sums = None
        if self.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, vectors.to(self.ema_sum))
        counts, sums = _all_reduce(counts, sums)
        g = self.decay
        self.usage.mul_(g).add_(counts, alpha=1 - g)
        if self.ema:
            assert sums is not None
            self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
            # Unused codes keep their vector (sum and usage decay alike): update the used ones.
            used = counts > 0
            self.codebook[used] = self.ema_sum[used] / self.usage[used, None]
        if self.restart_dead:
            even = float(counts.sum()) / self.space.codes  # of this batch (all processes')
            dead = self.usage < DEAD_SHARE * even
            n = int(dead.sum())
            if n:
                new = vectors[_choice(len(vectors), n, vectors.device)]
                self._set(dead, new, 2 * DEAD_SHARE * even)
                _broadcast(self.codebook, self.usage, *([self.ema_sum] if self.ema else []))


def _choice(n: int, k: int, device: torch.device) -> Tensor:
    """k indices into n items: distinct when n >= k."""
    if n >= k:
        return torch.randperm(n, device=device)[:k]
    return torch.randint(n, (k,), device=device)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(counts: Tensor, sums: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Under DDP every process sees its own batch: the codebook learns from all of them."""
    if _distributed():
        dist.all_reduce(counts)
        if sums is not None:
            dist.all_reduce(sums)
    return counts, sums


def _broadcast(*tensors: Tensor) -> None:
    """Restarts draw at random: every process takes the first one's codebook."""
    if _distributed():
        for t in tensors:
            dist.broadcast(t.data, 0)


# -- priors over codes ----------------------------------------------------------------------------


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

    abilities = PriorAbilities(discrete=True, learned=True, temperature=True)

    @staticmethod
    def label(o: CategoricalPrior.Options) -> str:
        return "categorical" if o.learned else "uniform"

    logits: Tensor

    def __init__(
        self, latent_dim: int, learned: bool = False, *, code_space: CodeSpace | None = None
    ) -> None:
        super().__init__()
        space = _require_space(code_space, "model.prior=categorical")
        self.latent_dim = latent_dim
        logits = torch.zeros(space.positions, space.codes)
        if learned:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits, persistent=False)

    def forward(self, encoder: Callable[..., Distribution] | None = None) -> Distribution:
        return CategoricalCodes(
            code_head(encoder, "model.prior=categorical"),
            self.logits,
            uniform=not isinstance(self.logits, nn.Parameter),
        )


def _require_space(space: CodeSpace | None, what: str) -> CodeSpace:
    if space is None:
        raise ValueError(
            f"{what} is a prior over a discrete posterior's codes: use it with "
            "model.posterior=vq or gumbel"
        )
    return space


class _GatedLayer(nn.Module):
    """One gated layer of a PixelCNN with vertical and horizontal stacks (van den Oord et
    al. 2016), which together see every earlier position of the raster and no later one.

    The vertical stack at row i sees rows <= i and is shifted down one row before it feeds
    the horizontal stack; the horizontal stack sees the row's earlier columns (the first
    layer not the position itself, hence no residual there).
    """

    mask: Tensor

    def __init__(self, channels: int, kernel: int, first: bool, vertical: bool) -> None:
        super().__init__()
        self.pad = kernel // 2
        self.first = first
        c = channels
        self.vert = nn.Conv2d(c, 2 * c, (self.pad + 1, kernel)) if vertical else None
        self.v2h = nn.Conv2d(2 * c, 2 * c, 1) if vertical else None
        self.horiz = nn.Conv2d(c, 2 * c, (1, self.pad + 1))
        self.out = nn.Conv2d(c, c, 1)
        mask = torch.ones_like(self.horiz.weight)
        if first:
            mask[..., -1] = 0.0  # the position itself
        self.register_buffer("mask", mask, persistent=False)

    @staticmethod
    def _gate(x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        p = self.pad
        hh = F.conv2d(F.pad(h, (p, 0, 0, 0)), self.horiz.weight * self.mask, self.horiz.bias)
        if self.vert is not None and self.v2h is not None:
            vv = self.vert(F.pad(v, (p, p, p, 0)))  # row i: rows i-p..i
            v = self._gate(vv)
            hh = hh + self.v2h(F.pad(vv, (0, 0, 1, 0))[:, :, :-1])  # row i: rows < i
        out = self.out(self._gate(hh))
        return v, out if self.first else h + out


class GatedPixelCNN(nn.Module):
    """Logits of each position's code given the codes before it in raster order.

    Input: one-hot (or soft) rows ``(N, H, W, K)``; output: logits ``(N, H, W, K)``, where
    position (i, j) depends only on positions before it. A single position has nothing to
    condition on (learned logits only); a single row needs no vertical stack.

    Example:
        >>> net = GatedPixelCNN(codes=4, hidden=8, layers=2, grid=(2, 3))
        >>> x = F.one_hot(torch.randint(4, (1, 2, 3)), 4).float().requires_grad_()
        >>> net(x)[0, 1, 0].sum().backward()        # position (1, 0) ...
        >>> x.grad[0].abs().sum((-1,)).gt(0).int()  # ... sees row 0 only
        tensor([[1, 1, 1],
                [0, 0, 0]], dtype=torch.int32)
    """

    def __init__(
        self, codes: int, hidden: int, layers: int, grid: tuple[int, int], kernel: int = 3
    ) -> None:
        super().__init__()
        self.codes = codes
        self.grid = grid
        if grid[0] * grid[1] == 1:
            self.bias = nn.Parameter(torch.zeros(codes))
            self.embed = None
            return
        self.embed = nn.Conv2d(codes, hidden, 1, bias=False)
        vertical = grid[0] > 1
        self.layers = nn.ModuleList(
            _GatedLayer(hidden, kernel, first=i == 0, vertical=vertical) for i in range(layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, codes, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.embed is None:
            return self.bias.expand(x.shape)
        v = h = self.embed(x.permute(0, 3, 1, 2))
        for layer in self.layers:
            v, h = layer(v, h)
        logits: Tensor = self.head(h)
        return logits.permute(0, 2, 3, 1)


class PixelCNNCodes(CodeDistribution):
    """p(z) = prod_i p(code_i | codes before i), a PixelCNN over the code grid.

    ``log_prob`` is one pass; ``sample`` one pass per position.
    """

    def __init__(self, head: CodeHead, net: GatedPixelCNN, temperature: float = 1.0) -> None:
        self.net = net
        self.temperature = temperature
        super().__init__(head, ())

    def _logits(self, x: Tensor) -> Tensor:
        logits = self.net(x)
        return logits if self.temperature == 1.0 else logits / self.temperature

    def tempered(self, t: float) -> PixelCNNCodes:
        """The prior at temperature ``t``: each conditional p(code_i | codes before i) with
        its logits divided by ``t``, as autoregressive models are sampled below 1."""
        return PixelCNNCodes(self.head, self.net, self.temperature * t)

    def log_prob(self, value: Tensor) -> Tensor:
        rows, cols = self.head.space.grid
        w = self.head.onehot(value)  # (..., P, K)
        lead = w.shape[:-2]
        x = w.reshape(-1, rows, cols, w.shape[-1])
        logp = torch.log_softmax(self._logits(x), dim=-1)
        return (x * logp).sum((1, 2, 3)).reshape(lead)

    def sample(self, sample_shape: _size = ()) -> Tensor:
        shape = Size(sample_shape)
        n = math.prod(shape)
        space = self.head.space
        rows, cols = space.grid
        device = self.head._device()
        with torch.no_grad():
            x = torch.zeros(n, rows, cols, space.codes, device=device)
            for i in range(rows):
                for j in range(cols):
                    logits = self._logits(x)[:, i, j]
                    code = Categorical(logits=logits).sample()
                    x[:, i, j] = F.one_hot(code, space.codes).to(x.dtype)
            z = self.head.embed_weights(x.reshape(n, space.positions, space.codes))
        return z.reshape(*shape, -1)


class PixelCNNPrior(nn.Module):
    """An autoregressive prior over a discrete posterior's codes (``model.prior=pixelcnn``):
    a gated PixelCNN (van den Oord et al. 2016) over the code grid, as VQ-VAE's second
    stage uses. Fit it jointly (objective elbo) or after the autoencoder, on its frozen
    codes: ``vaekit train --resume RUN --stage prior --epochs N``.

    Example:
        >>> from vaekit.config import ModelConfig, part
        >>> from vaekit.model import build_model
        >>> cfg = ModelConfig(latent_dim=8, posterior=part("vq", codes=4, code_dim=2),
        ...                   prior=part("pixelcnn", hidden=8, layers=2))
        >>> model = build_model(cfg, (1, 8, 8))
        >>> model.prior.sample((3,)).shape
        torch.Size([3, 8])
    """

    @dataclass
    class Options:
        # Channels of the gated layers.
        hidden: int = 64
        # Gated layers (each widens what a position sees by one row and one column).
        layers: int = 8

        def validate(self, where: str) -> None:
            check_positive(f"{where}.hidden", self.hidden)
            check_positive(f"{where}.layers", self.layers)

    abilities = PriorAbilities(discrete=True, learned=True, temperature=True)

    @staticmethod
    def label(o: PixelCNNPrior.Options) -> str:
        return f"pixelcnn {o.layers}x{o.hidden}"

    def __init__(
        self,
        latent_dim: int,
        hidden: int = 64,
        layers: int = 8,
        *,
        code_space: CodeSpace | None = None,
    ) -> None:
        super().__init__()
        space = _require_space(code_space, "model.prior=pixelcnn")
        self.latent_dim = latent_dim
        self.net = GatedPixelCNN(space.codes, hidden, layers, space.grid)

    def forward(self, encoder: Callable[..., Distribution] | None = None) -> Distribution:
        return PixelCNNCodes(code_head(encoder, "model.prior=pixelcnn"), self.net)


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


@register_kl(GumbelCodes, CategoricalCodes)
def _kl_categorical(q: GumbelCodes, p: CategoricalCodes) -> Tensor:
    """The exact KL of categoricals, summed over the positions."""
    return (q.probs * (q.log_probs - p.log_probs)).sum((-2, -1))


@register_kl(QuantisedCodes, CategoricalCodes)
def _kl_vq_categorical(q: QuantisedCodes, p: CategoricalCodes) -> Tensor:
    return -p.log_prob(q.z)


@register_kl(QuantisedCodes, PixelCNNCodes)
def _kl_vq_pixelcnn(q: QuantisedCodes, p: PixelCNNCodes) -> Tensor:
    # A one-hot posterior has zero entropy: KL = -log p(z_q), exactly.
    return -p.log_prob(q.z)

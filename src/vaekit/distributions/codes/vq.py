"""VQ-VAE's posterior (van den Oord et al. 2017): the nearest of a codebook's K vectors
at each position, with EMA updates and restarts of dead codes (Razavi et al. 2019)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Size, Tensor, nn
from torch.distributions import Distribution
from torch.types import _size

from vaekit.distributions.codes.base import (
    DEAD_SHARE,
    ChannelMajor,
    CodeDistribution,
    CodeHead,
)
from vaekit.errors import ConfigError
from vaekit.parts import PosteriorAbilities
from vaekit.validate import check_choice, check_positive


class QuantisedCodes(CodeDistribution):
    """q(z|x) of VQ-VAE: all mass on the quantised z_q (one code per position); the
    other quantizers (``rvq``, ``fsq``, ``lfq``) return it too.

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


class VQPosterior(ChannelMajor, CodeHead):
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
    ``init: kmeans`` starts it from the k-means centroids of the first batch's encoder
    outputs instead; ``cosine: true`` l2-normalises encoder outputs and codes (Yu et al.
    2021), so the codes lie on the unit sphere and the nearest is the most similar.

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
        # The codebook's start: auto (encoder outputs of the first batch with restart_dead,
        # else N(0, 1)) or kmeans (k-means centroids of the first batch's encoder outputs).
        init: str = "auto"
        # Lloyd iterations of the k-means start (init: kmeans).
        kmeans_iters: int = 10
        # Cosine-similarity codes (Yu et al. 2021, ViT-VQGAN): encoder outputs and code
        # vectors l2-normalised, so the nearest code is the most similar in direction.
        cosine: bool = False

        def validate(self, where: str) -> None:
            check_choice(f"{where}.init", self.init, ("auto", "kmeans"))
            check_positive(f"{where}.kmeans_iters", self.kmeans_iters)
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
        how += (" kmeans" if o.init == "kmeans" else "") + (" cosine" if o.cosine else "")
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
        init: str = "auto",
        kmeans_iters: int = 10,
        cosine: bool = False,
    ) -> None:
        super().__init__()
        what = f"model.posterior.code_dim ({code_dim})"
        self._lay_out(latent_dim, code_dim, codes, what, "one code vector per position")
        self.code_dim = code_dim
        self.commitment = commitment
        self.ema = ema
        self.decay = decay
        self.restart_dead = restart_dead
        self.kmeans = init == "kmeans"
        self.kmeans_iters = kmeans_iters
        self.cosine = cosine
        start = torch.randn(codes, code_dim)
        if cosine:
            start = F.normalize(start, dim=-1)
        if ema:
            self.register_buffer("codebook", start)
            # Each code starts with one pseudo-assignment of itself, so that code = sum / usage
            # holds from the start and an unused code keeps its vector.
            self.register_buffer("ema_sum", start.clone())
        else:
            self.codebook = nn.Parameter(start)
        # Running assignments per step of each code (EMA): perplexity, dead codes.
        self.register_buffer("usage", torch.ones(codes))
        self.register_buffer("started", torch.zeros((), dtype=torch.long))

    def book(self) -> Tensor:
        """The code vectors ``(K, d)``: unit length with ``cosine``."""
        return F.normalize(self.codebook, dim=-1) if self.cosine else self.codebook

    def nearest(self, vectors: Tensor) -> Tensor:
        """Index of the nearest code of each vector ``(..., d)`` -> ``(...)``."""
        with torch.no_grad():
            flat = vectors.reshape(-1, self.code_dim).to(self.codebook.dtype)
            if self.cosine:
                flat = F.normalize(flat, dim=-1)
            book = self.book().detach()
            dist = (
                flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.T + book.pow(2).sum(1)[None, :]
            )
            return dist.argmin(1).reshape(vectors.shape[:-1])

    def embed_weights(self, weights: Tensor) -> Tensor:
        return self._join(weights @ self.book())

    def onehot(self, z: Tensor) -> Tensor:
        return F.one_hot(self.nearest(self._split(z)), self.space.codes).to(z.dtype)

    def codes(self, z: Tensor) -> Tensor:
        return self.nearest(self._split(z))

    def forward(self, features: Tensor) -> Distribution:
        z_e = self._split(features)  # (B, P, d)
        if self.cosine:
            z_e = F.normalize(z_e, dim=-1)
        flat = z_e.reshape(-1, self.code_dim)
        learning = self.training and torch.is_grad_enabled()
        if learning and (self.restart_dead or self.kmeans) and not bool(self.started):
            self._start_from(flat.detach())
        idx = self.nearest(flat)
        z_q = F.embedding(idx, self.book())  # gradient to a learned codebook only
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
        """Every code from an encoder output of the first batch (a data-dependent start), or
        from the k-means centroids of those outputs (``init: kmeans``)."""
        k = self.space.codes
        fresh = 2 * DEAD_SHARE * len(vectors) / k
        start = _draw(vectors, k)
        usage: float | Tensor = fresh
        if self.kmeans:
            start, counts = kmeans(vectors, start, self.kmeans_iters, self.cosine)
            usage = counts.to(self.usage).clamp_min(fresh)
        self._set(torch.ones(k, dtype=torch.bool, device=vectors.device), start, usage)
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
                new = _draw(vectors, n)
                self._set(dead, new, 2 * DEAD_SHARE * even)
                _broadcast(self.codebook, self.usage, *([self.ema_sum] if self.ema else []))


@torch.no_grad()
def kmeans(
    vectors: Tensor, start: Tensor, iters: int, cosine: bool = False
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means of ``vectors (N, d)`` from the centroids ``start (K, d)``: the
    centroids and the vectors each has. A centroid that loses every vector keeps its place
    (restarts move it later). ``cosine``: assignments by direction, unit-length centroids.

    >>> x = torch.tensor([[0.0], [0.2], [5.0], [5.2]])
    >>> kmeans(x, torch.tensor([[0.0], [1.0]]), 5)
    (tensor([[0.1000],
            [5.1000]]), tensor([2., 2.]))
    """
    centroids = start.clone()
    counts = torch.zeros(len(start), dtype=vectors.dtype, device=vectors.device)
    for _ in range(iters):
        if cosine:
            idx = (vectors @ centroids.T).argmax(1)
        else:
            idx = torch.cdist(vectors, centroids).argmin(1)
        counts = torch.bincount(idx, minlength=len(centroids)).to(vectors.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, idx, vectors)
        used = counts > 0
        centroids[used] = sums[used] / counts[used, None]
        if cosine:
            centroids = F.normalize(centroids, dim=-1)
    return centroids, counts


def _draw(vectors: Tensor, n: int) -> Tensor:
    """``n`` of the distinct rows of ``vectors`` at random. A residual quantizer's inputs
    repeat (exact zeros wherever the quantizer before it took a vector as a code), and two
    equal codes would make one unreachable; with fewer distinct rows than ``n`` the
    repeats are jittered by 1% of the rows' spread."""
    distinct = torch.unique(vectors, dim=0)
    out = distinct[_choice(len(distinct), n, vectors.device)]
    if len(distinct) < n:
        out = out + 0.01 * vectors.std().clamp_min(1e-3) * torch.randn_like(out)
    return out


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

"""The PixelCNN prior over codes: a gated PixelCNN (van den Oord et al. 2016) over the
code grid, trained jointly or as a second stage."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
from vaekit.distributions.codes.vq import QuantisedCodes
from vaekit.parts import PriorAbilities
from vaekit.validate import check_positive


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

    def __init__(
        self,
        head: CodeHead,
        net: GatedPixelCNN,
        temperature: float = 1.0,
        mask: Tensor | None = None,
    ) -> None:
        self.net = net
        self.temperature = temperature
        # Logits to add (rows, cols, K): the levels beyond a position's count (mixed FSQ levels).
        self.mask = mask
        super().__init__(head, ())

    def _logits(self, x: Tensor) -> Tensor:
        logits = self.net(x)
        if self.mask is not None:
            logits = logits + self.mask
        return logits if self.temperature == 1.0 else logits / self.temperature

    def tempered(self, t: float) -> PixelCNNCodes:
        """The prior at temperature ``t``: each conditional p(code_i | codes before i) with
        its logits divided by ``t``, as autoregressive models are sampled below 1."""
        return PixelCNNCodes(self.head, self.net, self.temperature * t, self.mask)

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
        # Model each code's digits (FSQ levels, LFQ bits, residual quantizers' codes) one
        # after another in raster order; unset: only where whole codes exceed 16384.
        factorised: bool | None = None

        def validate(self, where: str) -> None:
            check_positive(f"{where}.hidden", self.hidden)
            check_positive(f"{where}.layers", self.layers)

    abilities = PriorAbilities(discrete=True, learned=True, temperature=True)

    @staticmethod
    def label(o: PixelCNNPrior.Options) -> str:
        return f"pixelcnn {o.layers}x{o.hidden}" + (" digits" if o.factorised else "")

    mask: Tensor

    def __init__(
        self,
        latent_dim: int,
        hidden: int = 64,
        layers: int = 8,
        factorised: bool | None = None,
        *,
        code_space: CodeSpace | None = None,
    ) -> None:
        super().__init__()
        space = prior_space(code_space, "model.prior=pixelcnn", factorised)
        self.factorised = space != code_space
        self.latent_dim = latent_dim
        self.net = GatedPixelCNN(space.codes, hidden, layers, space.grid)
        mask = level_mask(space).reshape(*space.grid, space.codes)
        self.register_buffer("mask", mask, persistent=False)
        self.masked = bool(space.limits)

    def forward(self, encoder: Callable[..., Distribution] | None = None) -> Distribution:
        head = code_head(encoder, "model.prior=pixelcnn", self.factorised)
        return PixelCNNCodes(head, self.net, mask=self.mask if self.masked else None)


@register_kl(QuantisedCodes, PixelCNNCodes)
def _kl_vq_pixelcnn(q: QuantisedCodes, p: PixelCNNCodes) -> Tensor:
    # A one-hot posterior has zero entropy: KL = -log p(z_q), exactly.
    return -p.log_prob(q.z)

"""A deep top-down hierarchy of convolutional latent maps: ``model.posterior: hierarchical-conv``.

NVAE's layout (Vahdat & Kautz 2020) in the one-latent contract of
:mod:`vaekit.distributions.hierarchical`: each stochastic layer is a map of
``model.latent_dim`` channels at one of several resolutions, flattened into the one
latent vector (bottom layer first, the coarsest last). The part holds every network:

- bottom-up: a stride-2 stem, then per scale residual cells (two 3x3 convolutions) and a
  stride-2 convolution down; the features after each group's cells are what that layer's
  posterior reads of x;
- top-down: a learned map at the coarsest scale, then per layer from the top: the prior
  p(z_l | z_{>l}) from the state (3x3 convolution), the posterior (``residual``: NVAE's
  residual normal, ``N(mu_p + dmu, sigma_p * dsigma)`` from the state and the bottom-up
  features; ``ladder``: the precision-weighted merge), z_l drawn, added back to the state
  (1x1 convolution) and refined by residual cells; between scales a stride-2 transposed
  convolution up;
- the decoder reads the final state (every layer shaped it) and maps it to the
  likelihood's parameters at the data's resolution.

The top layer's posterior is a diagonal Gaussian of the top features, and the top prior
is the registered ``model.prior`` (normal, mog, vamp, ...) over it. ``model.encoder`` and
``model.decoder`` are not used; the model is not conditional on labels.

Example:
    >>> head = ConvHierarchicalPosterior(2, channels=[8, 16], groups=[1, 2], data_shape=(1, 8, 8))
    >>> head.sizes, head.latent_dim   # 2 channels at 4x4 (1 group), then at 2x2 (2 groups)
    ([32, 8, 8], 48)
    >>> q = head(torch.rand(3, 64))
    >>> q.rsample((2,)).shape
    torch.Size([2, 3, 48])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from vaekit.distributions.hierarchical import (
    HierarchyHead,
    Noise,
    Params,
    Walk,
    _draw,
    _memo,
    _randn,
)
from vaekit.distributions.posteriors import clamp_logvar
from vaekit.errors import ConfigError
from vaekit.nn import ACTIVATIONS, ResBlock
from vaekit.parts import Composition, PosteriorAbilities
from vaekit.validate import check_choice, check_nonneg, check_widths

__all__ = ["ConvHierarchyOptions", "ConvHierarchicalPosterior", "ConvTopDownDecoder"]


def _apply(module: nn.Module, x: Tensor, fixed: bool) -> Tensor:
    """``module(x)``; ``fixed`` uses its weights' values without gradient (DReG's log q)."""
    if not fixed:
        out: Tensor = module(x)
        return out
    state = {n: p.detach() for n, p in module.named_parameters()}
    result: Tensor = functional_call(module, state, (x,))
    return result


@dataclass
class ConvHierarchyOptions:
    """Options of the convolutional hierarchy (every network of the model is in it)."""

    # Feature channels of each scale, from the finest (half the data's resolution) down;
    # each further scale halves the resolution again.
    channels: list[int] = field(default_factory=lambda: [32, 64])
    # Stochastic layers (latent groups) at each scale, same order as channels; each is a
    # map of model.latent_dim channels at its scale's resolution. A scale may have none
    # (deterministic cells only); the coarsest needs one, the top layer.
    groups: list[int] = field(default_factory=lambda: [2, 2])
    # Residual cells (two 3x3 convolutions) per group, in each direction.
    cells: int = 1
    # residual (NVAE's residual normal) | ladder (precision-weighted merge)
    style: str = "residual"
    # Nonlinearity of the residual cells (elu, relu, softplus, tanh, gelu, leaky_relu).
    activation: str = "elu"

    def validate(self, where: str) -> None:
        check_widths(f"{where}.channels", self.channels)
        for i, g in enumerate(self.groups):
            check_nonneg(f"{where}.groups[{i}]", g)
        if not self.channels or len(self.groups) != len(self.channels):
            raise ConfigError(
                f"{where}.groups needs one count per scale of {where}.channels "
                f"({len(self.channels)} scales), got {self.groups}"
            )
        if self.groups[-1] < 1:
            raise ConfigError(
                f"{where}.groups must put a stochastic layer at the coarsest scale (the top), "
                f"got {self.groups}"
            )
        if sum(self.groups) < 2:
            raise ConfigError(
                f"{where}.groups gives {sum(self.groups)} stochastic layer; a hierarchy has at least 2"
            )
        check_nonneg(f"{where}.cells", self.cells)
        check_choice(f"{where}.style", self.style, ["residual", "ladder"])
        check_choice(f"{where}.activation", self.activation, sorted(ACTIVATIONS))


def _cells(channels: int, n: int, activation: str) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels, activation) for _ in range(n)])


def _image(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1])
    raise ValueError(
        f"model.posterior=hierarchical-conv needs image data (H, W) or (C, H, W), got {tuple(shape)}"
    )


class ConvHierarchicalPosterior(HierarchyHead):
    """Convolutional latent maps at several resolutions, inferred top-down (NVAE's layout).

    Built as ``ConvHierarchicalPosterior(latent_dim, channels, groups, cells, style,
    activation, data_shape=...)``: ``latent_dim`` channels per latent map. It reads the
    data itself (``in_features`` = the data's size) and makes the decoder network
    (:meth:`decoder_network`), which reads the top-down state.
    """

    Options = ConvHierarchyOptions
    abilities = PosteriorAbilities(gaussian_top=True, dreg=True, networks=True, layered=True)

    @staticmethod
    def label(o: ConvHierarchyOptions) -> str:
        scales = "-".join(f"{c}x{g}" for c, g in zip(o.channels, o.groups, strict=False))
        return f"hierarchical-conv {o.style} ({scales})"

    @staticmethod
    def check(o: ConvHierarchyOptions, parts: Composition) -> str | None:
        if parts.conditional:
            return (
                "model.posterior=hierarchical-conv is not conditional: its prior and decoder share "
                "one top-down path that takes no label (use model.posterior=hierarchical, or "
                "model.conditional=false)"
            )
        return None

    def __init__(
        self,
        latent_dim: int,
        channels: Sequence[int] = (32, 64),
        groups: Sequence[int] = (2, 2),
        cells: int = 1,
        style: str = "residual",
        activation: str = "elu",
        *,
        data_shape: Sequence[int],
    ) -> None:
        super().__init__()
        c, h, w = _image(data_shape)
        self.data_shape = (c, h, w)
        self.channels = [int(v) for v in channels]
        self.groups = [int(v) for v in groups]
        self.style = style
        self.latent_channels = latent_dim
        self.activation = activation
        self.act = ACTIVATIONS[activation]()
        # Resolution of each scale: every one halves the one before (28 -> 14 -> 7 -> 4).
        self.resolutions: list[tuple[int, int]] = []
        rh, rw = h, w
        for _ in self.channels:
            rh, rw = math.ceil(rh / 2), math.ceil(rw / 2)
            self.resolutions.append((rh, rw))
        # Layer l (bottom first) lives at scale_of[l].
        self.scale_of = [s for s, g in enumerate(self.groups) for _ in range(g)]
        self.sizes = [
            latent_dim * self.resolutions[s][0] * self.resolutions[s][1] for s in self.scale_of
        ]
        self.layers = len(self.sizes)
        self.latent_dim = sum(self.sizes)
        self.prior_dim = self.sizes[-1]
        self.decoder_dim = self.latent_dim
        self.in_features = c * h * w
        ch = self.channels
        z = latent_dim
        # -- bottom-up
        self.stem = nn.Conv2d(c, ch[0], 3, stride=2, padding=1)
        self.up_cells = nn.ModuleList([_cells(ch[s], cells, activation) for s in self.scale_of])
        self.down = nn.ModuleList(
            [nn.Conv2d(ch[s], ch[s + 1], 3, stride=2, padding=1) for s in range(len(ch) - 1)]
        )
        self.top_posterior = nn.Conv2d(ch[-1], 2 * z, 1)
        # -- top-down (the generative path; the posterior reads it)
        top_h, top_w = self.resolutions[-1]
        self.start = nn.Parameter(torch.zeros(ch[-1], top_h, top_w))
        self.combine = nn.ModuleList([nn.Conv2d(z, ch[s], 1) for s in self.scale_of])
        self.down_cells = nn.ModuleList([_cells(ch[s], cells, activation) for s in self.scale_of])
        self.upsample = nn.ModuleList(
            [
                nn.ConvTranspose2d(ch[s + 1], ch[s], 4, stride=2, padding=1)
                for s in range(len(ch) - 1)
            ]
        )
        self.priors = nn.ModuleList(
            [nn.Conv2d(ch[s], 2 * z, 3, padding=1) for s in self.scale_of[:-1]]
        )
        if style == "residual":
            self.posteriors = nn.ModuleList(
                [nn.Conv2d(2 * ch[s], 2 * z, 3, padding=1) for s in self.scale_of[:-1]]
            )
        else:
            self.posteriors = nn.ModuleList(
                [nn.Conv2d(ch[s], 2 * z, 3, padding=1) for s in self.scale_of[:-1]]
            )

    # -- shapes -------------------------------------------------------------------------------

    def _map(self, z: Tensor, layer: int) -> tuple[Tensor, tuple[int, ...]]:
        """A layer's flat latent ``(..., s_l)`` as maps ``(N, C, h, w)``, and its lead shape."""
        lead = tuple(z.shape[:-1])
        rh, rw = self.resolutions[self.scale_of[layer]]
        return z.reshape(-1, self.latent_channels, rh, rw), lead

    @staticmethod
    def _flat(maps: Tensor, lead: tuple[int, ...]) -> Tensor:
        return maps.reshape(*lead, -1)

    def _params(self, out: Tensor, lead: tuple[int, ...]) -> Params:
        mu, logvar = out.chunk(2, dim=1)
        return self._flat(mu, lead), self._flat(logvar, lead)

    # -- the bottom-up pass -------------------------------------------------------------------

    def context(self, features: Tensor, fixed: bool = False) -> tuple[Params, list[Tensor]]:
        c, h, w = self.data_shape
        lead = tuple(features.shape[:-1])
        x = self.act(_apply(self.stem, features.reshape(-1, c, h, w), fixed))
        feats: list[Tensor] = []
        scale = 0
        for layer, s in enumerate(self.scale_of):
            while scale < s:  # down through scales without layers too
                x = self.act(_apply(self.down[scale], x, fixed))
                scale += 1
            x = _apply(self.up_cells[layer], x, fixed)
            feats.append(x)
        top = self._params(_apply(self.top_posterior, self.act(feats[-1]), fixed), lead)
        return top, feats[:-1]

    # -- the top-down pass --------------------------------------------------------------------

    def _state(self, lead: tuple[int, ...], fixed: bool) -> Tensor:
        start = self.start.detach() if fixed else self.start
        n = int(math.prod(lead))
        return start.expand(n, *start.shape)

    def _absorb(self, h: Tensor, z: Tensor, layer: int, fixed: bool) -> Tensor:
        """The state after layer ``layer``'s z: added through a 1x1 convolution, refined."""
        zm, _ = self._map(z, layer)
        h = h + _apply(self.combine[layer], zm, fixed)
        return _apply(self.down_cells[layer], h, fixed)

    def _up(self, h: Tensor, to: int, start: int, fixed: bool) -> Tensor:
        """The state at scale ``start`` brought up to the finer scale ``to``."""
        for t in reversed(range(to, start)):
            h = _apply(self.upsample[t], self.act(h), fixed)
            rh, rw = self.resolutions[t]
            h = h[..., :rh, :rw]
        return h

    def _walk(
        self,
        z_top: Tensor,
        values: Sequence[Tensor | None] | None,
        noise: Noise,
        temperature: float,
        ctx: list[Tensor] | None,
        fixed: bool,
    ) -> Walk:
        lead = tuple(z_top.shape[:-1])
        top = self.layers - 1
        h = self._absorb(self._state(lead, fixed), z_top, top, fixed)
        zs: list[Tensor] = [z_top]
        qs: list[Params] = []
        ps: list[Params | None] = []
        for layer in reversed(range(top)):
            h = self._up(h, self.scale_of[layer], self.scale_of[layer + 1], fixed)
            mu_p, lv_p = self._params(_apply(self.priors[layer], self.act(h), fixed), lead)
            lv_p = clamp_logvar(lv_p)
            p = (mu_p, lv_p)
            given = values[layer] if values is not None else None
            if ctx is None:
                z = given if given is not None else _draw(p, noise, temperature)
            else:
                e = ctx[layer]
                e = e.expand(int(math.prod(lead)) // e.shape[0], *e.shape).reshape(-1, *e.shape[1:])
                if self.style == "residual":
                    out = _apply(self.posteriors[layer], self.act(torch.cat([h, e], 1)), fixed)
                    d_mu, d_lv = self._params(out, lead)
                    q = (mu_p + d_mu, lv_p + d_lv)
                else:
                    mu_h, lv_h = self._params(
                        _apply(self.posteriors[layer], self.act(e), fixed), lead
                    )
                    lv_h = clamp_logvar(lv_h)
                    logvar = -torch.logaddexp(-lv_h, -lv_p)
                    mu = mu_h * torch.exp(logvar - lv_h) + mu_p * torch.exp(logvar - lv_p)
                    q = (mu, logvar)
                qs.insert(0, q)
                z = given if given is not None else _draw(q, noise)
            zs.insert(0, z)
            ps.insert(0, p)
            h = self._absorb(h, z, layer, fixed)
        # The decoder reads the finest scale, which may hold no layer of its own.
        h = self._up(h, 0, self.scale_of[0], fixed)
        return Walk(zs, qs, ps, state=h)

    def posterior_walk(
        self,
        ctx: list[Tensor],
        z_top: Tensor,
        values: Sequence[Tensor | None] | None = None,
        noise: Noise = _randn,
        fixed: bool = False,
    ) -> Walk:
        return self._walk(z_top, values, noise, 1.0, ctx, fixed)

    def prior_walk(
        self,
        z_top: Tensor,
        values: Sequence[Tensor | None] | None = None,
        noise: Noise = _randn,
        temperature: float = 1.0,
    ) -> Walk:
        return self._walk(z_top, values, noise, temperature, None, False)

    # -- the model's pieces -------------------------------------------------------------------

    def prior_parameters(self) -> list[nn.Parameter]:
        generative = [self.start, *self.combine.parameters(), *self.down_cells.parameters()]
        generative += [*self.upsample.parameters(), *self.priors.parameters()]
        return generative

    def recalled_rows(self, rows: Tensor) -> Walk | None:
        """The walk of q's latest draw when ``rows`` is that draw reshaped to ``(N, D)``
        (the same storage, unchanged since): the decoder reuses its final state."""
        last = _memo(self).last
        if last is None:
            return None
        z = last[0]
        same = (
            rows.data_ptr() == z.data_ptr()
            and rows.numel() == z.numel()
            and rows.shape[-1] == z.shape[-1]
            and rows.dtype == z.dtype
        )
        # Unchanged since the draw (inference tensors keep no version: nothing here edits
        # them in place).
        if same and not (rows.is_inference() or z.is_inference()):
            same = rows._version == z._version
        return last[1] if same else None

    def final_state(self, rows: Tensor) -> Tensor:
        """The top-down state after every layer of z ``(N, D)``: ``(N, C, H/2, W/2)``."""
        walk = self.recalled_rows(rows)
        if walk is None:
            zs = self.split(rows)
            walk = self.prior_walk(zs[-1], values=zs[:-1])
        state: Tensor = walk.state
        return state.reshape(rows.shape[0], *state.shape[1:])

    def encoder_network(self) -> nn.Module:
        """The encoder network of a model with this part: the data, flattened."""
        return _Flatten()

    def decoder_network(self, params_per_element: int) -> ConvTopDownDecoder:
        return ConvTopDownDecoder(self, params_per_element)


class _Flatten(nn.Module):
    """The data as the part's features (the part's own convolutions read it)."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if context is not None:
            raise ValueError("model.posterior=hierarchical-conv takes no labels")
        return x.reshape(x.shape[0], -1)


class ConvTopDownDecoder(nn.Module):
    """The decoder network of a convolutional hierarchy: the final top-down state (which
    every layer of z shaped) up to the data's resolution, ``params_per_element`` outputs
    per pixel, parameter-major like the other decoders."""

    def __init__(self, head: ConvHierarchicalPosterior, params_per_element: int) -> None:
        super().__init__()
        # The head's weights are registered once, under the encoder (safetensors refuses
        # tensors shared between two module paths); the decoder only calls it.
        self.__dict__["head"] = head
        c, _, _ = head.data_shape
        self.params_per_element = params_per_element
        self.act = ACTIVATIONS[head.activation]()
        self.out = nn.ConvTranspose2d(
            head.channels[0], params_per_element * c, 4, stride=2, padding=1
        )

    def forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        if context is not None:
            raise ValueError("model.posterior=hierarchical-conv takes no labels")
        head: ConvHierarchicalPosterior = self.__dict__["head"]
        c, h, w = head.data_shape
        x = self.out(self.act(head.final_state(z)))[..., :h, :w]
        b = x.shape[0]
        return x.reshape(b, self.params_per_element, c * h * w).reshape(b, -1)

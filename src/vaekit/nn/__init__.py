"""Plain networks (no probability here): MLPs and convolutional stacks.

Every network maps a batch ``(B, *in_shape)`` plus an optional context vector
``(B, C)`` (the one-hot label of a conditional model) to features ``(B, out)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "MLP", "ConvEncoderNet", "ConvDecoderNet", "build_encoder_net", "build_decoder_net"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


class MLP(nn.Module):
    """Fully connected network; the input is flattened and the context concatenated.

    Example:
        >>> net = MLP(784, [512], 4, "relu")
        >>> net(torch.zeros(3, 1, 28, 28)).shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str = "relu",
        context: int = 0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features + context
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        if context is not None:
            x = torch.cat([x, context.to(x.dtype)], dim=-1)
        return self.net(x)


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) for an image-like data shape; (H, W) gets one channel."""
    if len(shape) == 2:
        return (1, shape[0], shape[1])
    if len(shape) == 3:
        return (shape[0], shape[1], shape[2])
    raise ValueError(f"a convolutional network needs image data (H, W) or (C, H, W), got shape {tuple(shape)}")


class ConvEncoderNet(nn.Module):
    """Stride-2 convolutions, then a linear layer to ``out_features``.

    Works for any image size: the spatial size after the convolutions is computed.

    Example:
        >>> net = ConvEncoderNet((1, 28, 28), [32, 64], [256], 10, "relu")
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int],
        hidden: Sequence[int],
        out_features: int,
        activation: str = "relu",
        context: int = 0,
    ) -> None:
        super().__init__()
        c, h, w = _image_shape(in_shape)
        self.in_shape = (c, h, w)
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
            c, h, w = ch, h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(f"too many stride-2 stages ({len(channels)}) for an image of shape {tuple(in_shape)}")
        self.conv = nn.Sequential(*layers)
        self.mlp = MLP(c * h * w, hidden, out_features, activation, context)
        self.out_features = out_features

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = x.reshape(x.shape[0], *self.in_shape)
        return self.mlp(self.conv(x), context)


class ConvDecoderNet(nn.Module):
    """Linear layer to a small feature map, then stride-2 transposed convolutions.

    The output is ``(B, out_channels * H * W)`` for the requested image shape; the
    map is grown to at least that size and cropped, so odd sizes (28, 32, 7) work.

    Example:
        >>> net = ConvDecoderNet(8, (1, 28, 28), [64, 32], [256], 2, "relu")
        >>> net(torch.zeros(2, 8)).shape
        torch.Size([2, 1568])
    """

    def __init__(
        self,
        latent_dim: int,
        out_shape: Sequence[int],
        channels: Sequence[int],
        hidden: Sequence[int],
        params_per_element: int,
        activation: str = "relu",
        context: int = 0,
    ) -> None:
        super().__init__()
        c, h, w = _image_shape(out_shape)
        self.out_shape = (c, h, w)
        n = len(channels)
        self.h0 = max(1, math.ceil(h / 2**n))
        self.w0 = max(1, math.ceil(w / 2**n))
        self.c0 = channels[0] if channels else c * params_per_element
        self.mlp = MLP(latent_dim, hidden, self.c0 * self.h0 * self.w0, activation, context)
        self.act = ACTIVATIONS[activation]()
        layers: list[nn.Module] = []
        cin = self.c0
        outs = list(channels[1:]) + [c * params_per_element]
        for i, cout in enumerate(outs if channels else []):
            layers.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                layers.append(ACTIVATIONS[activation]())
            cin = cout
        self.deconv = nn.Sequential(*layers)
        self.params_per_element = params_per_element

    def forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        b = z.shape[0]
        x = self.act(self.mlp(z, context)).reshape(b, self.c0, self.h0, self.w0)
        x = self.deconv(x)
        c, h, w = self.out_shape
        # Up-sampling may overshoot odd sizes: crop (and pad if a tiny image undershoots).
        if x.shape[-2] < h or x.shape[-1] < w:
            x = nn.functional.interpolate(x, size=(h, w), mode="nearest")
        x = x[..., :h, :w]
        # (B, k*C, H, W) -> (B, k, C, H, W) -> flat, parameter-major like the MLP heads expect.
        return x.reshape(b, self.params_per_element, c * h * w).reshape(b, -1)


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


def build_encoder_net(cfg: object, data_shape: Sequence[int], out_features: int, context: int = 0) -> nn.Module:
    """The encoder network of a :class:`vaekit.config.NetConfig`."""
    net_type = getattr(cfg, "type")
    if net_type == "mlp":
        return MLP(_numel(data_shape), cfg.hidden, out_features, cfg.activation, context)  # type: ignore[attr-defined]
    if net_type == "conv":
        return ConvEncoderNet(data_shape, cfg.channels, cfg.hidden, out_features, cfg.activation, context)  # type: ignore[attr-defined]
    raise ValueError(f"unknown network type {net_type!r}")


def build_decoder_net(
    cfg: object, latent_dim: int, data_shape: Sequence[int], params_per_element: int, context: int = 0
) -> nn.Module:
    """The decoder network: latent (+ context) to ``params_per_element * prod(data_shape)`` outputs."""
    net_type = getattr(cfg, "type")
    if net_type == "mlp":
        return MLP(latent_dim, cfg.hidden, params_per_element * _numel(data_shape), cfg.activation, context)  # type: ignore[attr-defined]
    if net_type == "conv":
        return ConvDecoderNet(
            latent_dim, data_shape, list(reversed(cfg.channels)), cfg.hidden, params_per_element, cfg.activation, context  # type: ignore[attr-defined]
        )
    raise ValueError(f"unknown network type {net_type!r}")

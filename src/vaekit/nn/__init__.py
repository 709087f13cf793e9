"""Plain networks (no probability here): MLPs, convolutional stacks and MADE.

Every network maps a batch ``(B, *in_shape)`` plus an optional context vector
``(B, C)`` (the one-hot label of a conditional model) to features ``(B, out)``.
:class:`MADE` is the masked autoregressive network that the inverse autoregressive
flow (``model.flow=iaf``) is built from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from vaekit.errors import ConfigError
from vaekit.parts import Composition, NetworkAbilities
from vaekit.validate import check_choice, check_nonneg, check_widths

__all__ = [
    "ACTIVATIONS",
    "GATED",
    "MLP_ACTIVATIONS",
    "preactivations",
    "activation_layer",
    "he_init",
    "MLP",
    "ResBlock",
    "ConvEncoderNet",
    "ConvDecoderNet",
    "MaskedLinear",
    "MADE",
    "MLPOptions",
    "MLPNetwork",
    "ConvOptions",
    "ConvNetwork",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}

# Gated units (Dauphin et al. 2017): a hidden layer of width h computes
# (W x + b) * sigmoid(V x + c), Tomczak & Welling's GatedDense. Not pointwise (each unit
# reads two pre-activations), so it is an MLP's activation only, not a convolution's.
GATED = "gated"
# What an MLP's hidden layers may use: the pointwise activations and gated units.
MLP_ACTIVATIONS = (*sorted(ACTIVATIONS), GATED)


def preactivations(activation: str) -> int:
    """Pre-activations per unit: 2 for a gated unit (its value and its gate), else 1."""
    return 2 if activation == GATED else 1


def activation_layer(activation: str) -> nn.Module:
    """The module that turns ``preactivations(activation) * h`` features into ``h`` units.

    Example:
        >>> activation_layer("gated")(torch.tensor([[2.0, 0.0]]))  # 2 * sigmoid(0)
        tensor([[1.]])
    """
    if activation == GATED:
        # GLU: the first half times the sigmoid of the second, (W x + b) * sigmoid(V x + c)
        # when the features are the rows [W; V] x + [b; c] of one linear layer.
        return nn.GLU(dim=-1)
    return ACTIVATIONS[activation]()


@torch.no_grad()
def he_init(module: nn.Module) -> None:
    """Every linear layer's weights in ``module`` drawn from N(0, 2 / fan-in) (He et al.
    2015), biases left as they are: how Tomczak & Welling's code starts its networks.

    Example:
        >>> net = nn.Linear(800, 400)
        >>> he_init(net)
        >>> round(float(net.weight.detach().std()), 2)  # sqrt(2 / 800)
        0.05
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, math.sqrt(2.0 / m.in_features))


class MLP(nn.Module):
    """Fully connected network; the input is flattened and the context concatenated.

    ``activation`` is one of :data:`MLP_ACTIVATIONS`; with ``gated`` every hidden layer is
    a linear layer of twice its width followed by a GLU, ``(W x + b) * sigmoid(V x + c)``.

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
            layers += [
                nn.Linear(width, preactivations(activation) * h),
                activation_layer(activation),
            ]
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
    raise ValueError(
        f"a convolutional network needs image data (H, W) or (C, H, W), got shape {tuple(shape)}"
    )


class ResBlock(nn.Module):
    """``x + conv3x3(act(conv3x3(act(x))))``: extra depth at one resolution, same shape out."""

    def __init__(self, channels: int, activation: str = "relu") -> None:
        super().__init__()
        self.net = nn.Sequential(
            ACTIVATIONS[activation](),
            nn.Conv2d(channels, channels, 3, padding=1),
            ACTIVATIONS[activation](),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


def _grid_channels(features: int, h: int, w: int, what: str) -> int:
    """Channels of a ``features``-long output read as an (h, w) map; it must divide."""
    if features % (h * w):
        raise ValueError(
            f"model.encoder.grid: the latent is the {h}x{w} map of the last stage, so {what} "
            f"({features}) must be a multiple of {h * w}: set model.latent_dim to "
            f"channels x {h * w} (for VQ, code_dim x {h * w})"
        )
    return features // (h * w)


def _with_context(x: Tensor, context: Tensor | None) -> Tensor:
    """A label's one-hot row as constant channels beside a map ``(B, C, H, W)``."""
    if context is None:
        return x
    planes = context.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
    return torch.cat([x, planes], dim=1)


class ConvEncoderNet(nn.Module):
    """Stride-2 convolutions (each followed by ``blocks`` residual blocks), then an MLP.

    Works for any image size: the spatial size after the convolutions is computed
    (each stage maps H to H // 2, so 28 -> 14 -> 7 and 8 -> 4 -> 2). With ``grid`` there
    is no MLP: a 1x1 convolution maps the last stage to ``out_features / (H' W')``
    channels, and the output is that map flattened channel-major, each latent tied to a
    place in the image (VQ-VAE's code grid).

    Example:
        >>> net = ConvEncoderNet((1, 28, 28), [32, 64], [256], 10, "relu")
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> ConvEncoderNet((1, 28, 28), [32, 64], [], 49 * 8, grid=True).map_shape
        (8, 7, 7)
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int],
        hidden: Sequence[int],
        out_features: int,
        activation: str = "relu",
        context: int = 0,
        blocks: int = 0,
        grid: bool = False,
    ) -> None:
        super().__init__()
        c, h, w = _image_shape(in_shape)
        self.in_shape = (c, h, w)
        layers: list[nn.Module] = []
        for ch in channels:
            layers.append(nn.Conv2d(c, ch, 4, stride=2, padding=1))
            layers += [ResBlock(ch, activation) for _ in range(blocks)]
            layers.append(ACTIVATIONS[activation]())
            c, h, w = ch, h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(
                    f"too many stride-2 stages ({len(channels)}) for an image of shape {tuple(in_shape)}: "
                    "use fewer model.encoder.channels"
                )
        self.conv = nn.Sequential(*layers)
        self.out_features = out_features
        self.mlp: MLP | None = None
        self.to_map: nn.Conv2d | None = None
        if grid:
            out = _grid_channels(out_features, h, w, "the encoder's outputs")
            self.to_map = nn.Conv2d(c + context, out, 1)
            self.map_shape = (out, h, w)
        else:
            self.mlp = MLP(c * h * w, hidden, out_features, activation, context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = x.reshape(x.shape[0], *self.in_shape)
        if self.to_map is not None:
            out: Tensor = self.to_map(_with_context(self.conv(x), context))
            return out.flatten(1)
        assert self.mlp is not None
        return self.mlp(self.conv(x), context)


class ConvDecoderNet(nn.Module):
    """MLP to a small feature map, then stride-2 transposed convolutions.

    ``channels`` go from the latent side to the image side (the encoder's, reversed);
    the first map and every stage but the last get ``blocks`` residual blocks. The output is
    ``(B, params_per_element * C * H * W)``, parameter-major, for the requested image
    shape; the map is grown to at least that size and cropped, so odd sizes (28, 7) work.
    With ``grid`` there is no MLP: z is read as a ``(latent_dim / (H0 W0), H0, W0)`` map (as
    a grid encoder writes it) and a 3x3 convolution starts the first stage.

    Example:
        >>> net = ConvDecoderNet(8, (1, 28, 28), [64, 32], [256], 2, "relu")
        >>> net(torch.zeros(2, 8)).shape
        torch.Size([2, 1568])
        >>> ConvDecoderNet(49 * 8, (1, 28, 28), [64, 32], [], 1, grid=True)(torch.zeros(2, 392)).shape
        torch.Size([2, 784])
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
        blocks: int = 0,
        grid: bool = False,
    ) -> None:
        super().__init__()
        c, h, w = _image_shape(out_shape)
        self.out_shape = (c, h, w)
        n = len(channels)
        self.h0 = max(1, math.ceil(h / 2**n))
        self.w0 = max(1, math.ceil(w / 2**n))
        self.c0 = channels[0] if channels else c * params_per_element
        self.mlp: MLP | None = None
        self.from_map: nn.Conv2d | None = None
        if grid:
            self.cz = _grid_channels(latent_dim, self.h0, self.w0, "model.latent_dim")
            self.from_map = nn.Conv2d(self.cz + context, self.c0, 3, padding=1)
        else:
            self.mlp = MLP(latent_dim, hidden, self.c0 * self.h0 * self.w0, activation, context)
        self.act = ACTIVATIONS[activation]()
        layers: list[nn.Module] = (
            [ResBlock(self.c0, activation) for _ in range(blocks)] if channels else []
        )
        cin = self.c0
        outs = list(channels[1:]) + [c * params_per_element]
        for i, cout in enumerate(outs if channels else []):
            layers.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                layers += [ResBlock(cout, activation) for _ in range(blocks)]
                layers.append(ACTIVATIONS[activation]())
            cin = cout
        self.deconv = nn.Sequential(*layers)
        self.params_per_element = params_per_element

    def forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        b = z.shape[0]
        if self.from_map is not None:
            zmap = z.reshape(b, self.cz, self.h0, self.w0)
            x = self.act(self.from_map(_with_context(zmap, context)))
        else:
            assert self.mlp is not None
            x = self.act(self.mlp(z, context)).reshape(b, self.c0, self.h0, self.w0)
        x = self.deconv(x)
        c, h, w = self.out_shape
        # Up-sampling may overshoot odd sizes: crop (and pad if a tiny image undershoots).
        if x.shape[-2] < h or x.shape[-1] < w:
            x = nn.functional.interpolate(x, size=(h, w), mode="nearest")
        x = x[..., :h, :w]
        # (B, k*C, H, W) -> (B, k, C, H, W) -> flat, parameter-major like the MLP heads expect.
        return x.reshape(b, self.params_per_element, c * h * w).reshape(b, -1)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask ``(out, in)``."""

    mask: Tensor

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        # Not persistent: the mask follows from the shapes, so weights files stay the plain layers.
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015), with a context.

    Maps ``x (..., D)`` (and an optional context ``(..., C)``, added to the first hidden
    layer) to ``multiplier`` outputs per input, ``(..., multiplier * D)`` laid out as
    ``multiplier`` chunks of ``D``, where output ``i`` of every chunk depends on
    ``x[..., :i]`` only (never on ``x[..., i:]``). Leading dimensions are free.

    Example:
        >>> made = MADE(3, [16], multiplier=2)
        >>> x = torch.randn(5, 3, requires_grad=True)
        >>> made(x)[:, 0].sum().backward()   # output 0 depends on no input
        >>> bool(x.grad.abs().sum() == 0)
        True
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int],
        multiplier: int = 2,
        context: int = 0,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MADE needs at least one hidden layer")
        self.features = features
        self.multiplier = multiplier
        in_deg = torch.arange(1, features + 1)
        degrees = [in_deg]
        # Hidden degrees cycle through 1..D-1 (1 when D = 1: then outputs see no input).
        top = max(1, features - 1)
        for h in hidden:
            degrees.append(torch.arange(h) % top + 1)
        layers: list[nn.Module] = []
        for d_in, d_out in zip(degrees[:-1], degrees[1:], strict=True):
            layers.append(
                MaskedLinear(len(d_in), len(d_out), (d_out[:, None] >= d_in[None, :]).float())
            )
        out_deg = in_deg.repeat(multiplier)
        self.hidden_layers = nn.ModuleList(layers)
        self.out = MaskedLinear(
            len(degrees[-1]),
            multiplier * features,
            (out_deg[:, None] > degrees[-1][None, :]).float(),
        )
        self.context = nn.Linear(context, hidden[0], bias=False) if context else None
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.hidden_layers[0](x)
        if self.context is not None:
            if context is None:
                raise ValueError("this MADE was built with a context: pass it")
            h = h + self.context(context)
        h = self.act(h)
        for layer in self.hidden_layers[1:]:
            h = self.act(layer(h))
        return self.out(h)


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


# -- the network parts (model.encoder / model.decoder) ----------------------------------------


@dataclass
class MLPOptions:
    """Options of an MLP: hidden widths and their activation."""

    # Widths of the hidden layers, from the data side (a mirrored decoder reverses them).
    hidden: list[int] = field(default_factory=lambda: [512])
    # relu | softplus | tanh | elu | gelu | leaky_relu, or gated: gated units (Dauphin et al.
    # 2017), each hidden layer (W x + b) * sigmoid(V x + c) with twice the weights, as
    # Tomczak & Welling's networks use throughout (GatedDense). A hierarchical posterior's
    # per-layer networks take the encoder's activation, gated units too.
    activation: str = "relu"

    def validate(self, where: str) -> None:
        check_widths(f"{where}.hidden", self.hidden)
        check_choice(f"{where}.activation", self.activation, MLP_ACTIVATIONS)


class MLPNetwork:
    """Fully connected encoder and decoder (``model.encoder: {name: mlp, hidden: [...]}``).

    A network of yours is a class ``Class(data_shape, out_features, context_features,
    **options)`` as an encoder and ``Class(latent_dim, data_shape, out_features,
    context_features, **options)`` as a decoder, whose ``forward(x, ctx)`` returns
    ``(B, out_features)``; this holder gives the two builders of the built-in MLP.
    """

    Options = MLPOptions

    @staticmethod
    def label(o: MLPOptions) -> str:
        return "mlp " + "-".join(str(w) for w in o.hidden)

    @staticmethod
    def mirror(o: MLPOptions) -> MLPOptions:
        return replace(o, hidden=list(reversed(o.hidden)))

    @staticmethod
    def encoder(
        data_shape: Sequence[int],
        out_features: int,
        context_features: int = 0,
        hidden: Sequence[int] = (512,),
        activation: str = "relu",
    ) -> nn.Module:
        return MLP(_numel(data_shape), hidden, out_features, activation, context_features)

    @staticmethod
    def decoder(
        latent_dim: int,
        data_shape: Sequence[int],
        out_features: int,
        context_features: int = 0,
        hidden: Sequence[int] = (512,),
        activation: str = "relu",
    ) -> nn.Module:
        return MLP(latent_dim, hidden, out_features, activation, context_features)


@dataclass
class ConvOptions(MLPOptions):
    """Options of a convolutional network: stride-2 stages, residual blocks, dense widths."""

    # Channels of each stride-2 stage, listed from the image side (a decoder runs them
    # reversed, so give a conv decoder the same list as its encoder).
    channels: list[int] = field(default_factory=lambda: [32, 64])
    # relu | softplus | tanh | elu | gelu | leaky_relu (gated units are the mlp network's).
    activation: str = "relu"
    # Residual blocks (two 3x3 convolutions) after each stage.
    blocks: int = 0
    # Fully convolutional: the latent is the last stage's map (no dense layers, hidden is
    # not used), so model.latent_dim = channels per place x H' x W' (a 28x28 image after two
    # stages: 7x7 places). VQ-VAE's code grid: one code per place.
    grid: bool = False

    def validate(self, where: str) -> None:
        if self.activation == GATED:
            raise ConfigError(
                f"{where}.activation=gated is an option of the mlp network (gated units are "
                "dense layers); a conv network takes one of " + ", ".join(sorted(ACTIVATIONS))
            )
        super().validate(where)
        check_widths(f"{where}.channels", self.channels)
        check_nonneg(f"{where}.blocks", self.blocks)


class ConvNetwork:
    """Convolutional encoder and decoder for images (``model.encoder: {name: conv, ...}``)."""

    Options = ConvOptions
    abilities = NetworkAbilities(images=True)

    @staticmethod
    def label(o: ConvOptions) -> str:
        # Channels of the stride-2 stages, residual blocks per stage, then the dense widths.
        channels = "-".join(str(c) for c in o.channels)
        blocks = f" x{o.blocks} res" if o.blocks else ""
        if o.grid:
            return f"conv {channels}{blocks} grid"
        hidden = "-".join(str(w) for w in o.hidden)
        return f"conv {channels}{blocks}" + (f" + {hidden}" if hidden else "")

    @staticmethod
    def ignored(o: ConvOptions, parts: Composition) -> dict[str, str]:
        """Options set that change nothing beside the others (see :mod:`vaekit.parts`)."""
        if o.grid and o.hidden and o.hidden != ConvOptions().hidden:
            return {
                "hidden": (
                    "with grid=true the latent is the last stage's map, with no dense layers "
                    "for hidden to size; leave hidden out, or set grid=false"
                )
            }
        return {}

    @staticmethod
    def mirror(o: ConvOptions) -> ConvOptions:
        return replace(o, hidden=list(reversed(o.hidden)))

    @staticmethod
    def encoder(
        data_shape: Sequence[int],
        out_features: int,
        context_features: int = 0,
        hidden: Sequence[int] = (512,),
        activation: str = "relu",
        channels: Sequence[int] = (32, 64),
        blocks: int = 0,
        grid: bool = False,
    ) -> nn.Module:
        return ConvEncoderNet(
            data_shape, channels, hidden, out_features, activation, context_features, blocks, grid
        )

    @staticmethod
    def decoder(
        latent_dim: int,
        data_shape: Sequence[int],
        out_features: int,
        context_features: int = 0,
        hidden: Sequence[int] = (512,),
        activation: str = "relu",
        channels: Sequence[int] = (32, 64),
        blocks: int = 0,
        grid: bool = False,
    ) -> nn.Module:
        # ``channels`` in the encoder's order; the decoder runs them reversed.
        return ConvDecoderNet(
            latent_dim,
            data_shape,
            list(reversed(channels)),
            hidden,
            out_features // _numel(data_shape),
            activation,
            context_features,
            blocks,
            grid,
        )

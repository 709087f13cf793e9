"""Several stochastic layers behind one latent vector: ``model.posterior: hierarchical``.

A hierarchy of L layers keeps the contract of a single latent: z is every layer's
latent concatenated, **bottom layer first**, ``z = [z_1, ..., z_L]`` with event shape
``(s_1 + ... + s_L,)``, and

- q(z|x) is one :class:`HierarchicalDistribution` whose ``rsample`` draws
  ``z_L ~ q(z_L|x)`` and then each ``z_l ~ q(z_l | x, z_{l+1})`` down to z_1, and whose
  ``log_prob`` is the sum of those conditionals' log-densities;
- p(z) is one :class:`HierarchicalPrior`, ``p(z_L) prod_l p(z_l | z_{l+1})``, whose top
  ``p(z_L)`` is the registered prior the config names (``model.prior``: normal, mog,
  vamp or a user's) and whose conditionals are Gaussians from small networks;
- p(x|z) is the decoder, which reads ``z_1`` (or the first few layers, as Tomczak &
  Welling's HVAE reads z_1 and z_2), a prefix of z.

So the objectives, the importance-sampled likelihood and any estimator written against
``encode`` / ``prior`` / ``decode`` work unchanged; per-layer views are extras
(:meth:`HierarchicalDistribution.layer_dists`, :meth:`HierarchicalDistribution.kl_layers`).

The part holds both directions' per-layer networks, since the top-down styles share the
prior's path; inference runs in one of three styles (``style``):

- ``bottom-up``: q(z_L|x) q(z_{L-1}|x, z_L) ... q(z_1|x, z_2) with networks of its own
  (Tomczak & Welling 2018's HVAE);
- ``ladder``: the bottom-up pass gives an estimate N(mu_hat_l, sigma_hat_l) per layer,
  merged with the prior's p(z_l|z_{l+1}) by precision weighting (Sønderby et al. 2016);
- ``residual``: q(z_l|x, z_{l+1}) = N(mu_p + dmu, sigma_p * dsigma), relative to the
  prior's conditional (NVAE's residual normal, Vahdat & Kautz 2020).

With ``model.flow`` each layer below the top is its Gaussian pushed through a flow of its
own (:meth:`HierarchicalPosterior.attach_flows`, the IAF-VAE's layout); the top layer
stays a Gaussian.

Example:
    >>> head = HierarchicalPosterior(3, layers=2, hidden=8)
    >>> q = head(torch.randn(5, head.in_features))
    >>> z, log_q = q.rsample_and_log_prob((4,))
    >>> z.shape, log_q.shape   # 2 layers of 3 units
    (torch.Size([4, 5, 6]), torch.Size([4, 5]))
    >>> from vaekit.distributions.priors import StandardNormalPrior
    >>> p = head.joint_prior(StandardNormalPrior(3)())
    >>> p.log_prob(z).shape
    torch.Size([4, 5])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn
from torch.distributions import Distribution, Independent, constraints, kl_divergence
from torch.types import _size

from vaekit.distributions.flows import Flow, FlowDistribution
from vaekit.distributions.posteriors import (
    MonteCarloMoments,
    PosteriorHead,
    clamp_logvar,
    diagonal_normal,
    shared_noise,
)
from vaekit.distributions.priors import tempered
from vaekit.errors import ConfigError
from vaekit.nn import MLP, activation_layer, preactivations
from vaekit.parts import PosteriorAbilities
from vaekit.validate import check_choice, check_positive, check_widths

__all__ = [
    "STYLES",
    "HierarchicalOptions",
    "HierarchyHead",
    "HierarchicalPosterior",
    "HierarchicalDistribution",
    "HierarchicalPrior",
    "tempered_sample",
]

STYLES = ("bottom-up", "ladder", "residual")

Params = tuple[Tensor, Tensor]  # (mean, log-variance) of a diagonal Gaussian
Noise = Callable[[Size, Tensor], Tensor]  # (shape, like) -> standard normal noise


def _randn(shape: Size, like: Tensor) -> Tensor:
    return torch.randn(shape, device=like.device, dtype=like.dtype)


def _normal(params: Params) -> Independent:
    return diagonal_normal(*params)


def _walk_log_q(walk: Walk, params: Sequence[Params]) -> list[Tensor]:
    """log q of each layer of a posterior walk (``params``: every layer's Gaussian, the
    top last): a flowed layer's is its Gaussian's at z0 less the flow's log-determinant."""
    flowed = walk.flowed or []
    out = []
    for i, (p, z) in enumerate(zip(params, walk.z, strict=True)):
        if i < len(flowed):
            out.append(_normal(p).log_prob(flowed[i].z0) - flowed[i].logdet)
        else:
            out.append(_normal(p).log_prob(z))
    return out


def _draw(params: Params, noise: Noise, temperature: float = 1.0) -> Tensor:
    """A reparameterised draw ``mu + t * sigma * eps`` of a diagonal Gaussian."""
    mu, logvar = params
    std = torch.exp(0.5 * clamp_logvar(logvar))
    return mu + temperature * std * noise(mu.shape, mu)


def _layers(net: nn.Module) -> list[nn.Module]:
    """The modules ``net`` applies in order (an MLP's Sequential, or one layer)."""
    if isinstance(net, MLP):
        return list(net.net)
    if isinstance(net, nn.Sequential):
        return list(net)
    return [net]


def _run(layers: Sequence[nn.Module], x: Tensor, fixed: bool) -> Tensor:
    """Linear layers and activations on the rows of ``x (..., F)``; ``fixed`` uses the
    layers' weights as constants (their values without gradient), as the doubly
    reparameterised estimator's log q needs."""
    for layer in layers:
        if fixed and isinstance(layer, nn.Linear):
            bias = None if layer.bias is None else layer.bias.detach()
            x = F.linear(x, layer.weight.detach(), bias)
        else:
            x = layer(x)
    return x


def _call(net: nn.Module, x: Tensor, fixed: bool = False) -> Tensor:
    """``net`` (linear layers and activations) on ``x (..., F)``."""
    return _run(_layers(net), x, fixed)


@dataclass
class HierarchicalOptions:
    """Options of the hierarchical posterior (and of the conditional priors it holds)."""

    # Stochastic layers L (at least 2; one layer is model.posterior=gaussian).
    layers: int = 2
    # Units of each layer from the bottom (z_1 first); [] gives every layer model.latent_dim.
    sizes: list[int] = field(default_factory=list)
    # Width of the hidden layers of every per-layer network (the conditional priors
    # p(z_l | z_{l+1}) and the posterior's own). Their activation is the encoder
    # network's (model.encoder.activation; gated: gated units throughout, as Tomczak &
    # Welling's HVAE).
    hidden: int = 300
    # Hidden layers of each per-layer network.
    depth: int = 2
    # bottom-up (Tomczak & Welling's HVAE) | ladder (precision-weighted merge, the Ladder
    # VAE) | residual (NVAE's residual normal): see vaekit.distributions.hierarchical.
    style: str = "bottom-up"
    # How many layers from the bottom the decoder reads: 1 is p(x|z_1); 2 is
    # p(x|z_1, z_2), Tomczak & Welling's HVAE.
    decoder_reads: int = 1

    def validate(self, where: str) -> None:
        if not self.layers >= 2:
            raise ConfigError(
                f"{where}.layers must be at least 2, got {self.layers}; "
                "for one stochastic layer use model.posterior=gaussian"
            )
        if self.sizes and len(self.sizes) != self.layers:
            raise ConfigError(
                f"{where}.sizes gives {len(self.sizes)} layer sizes for {self.layers} layers: "
                f"give one per layer (bottom first), or [] for model.latent_dim each"
            )
        check_widths(f"{where}.sizes", self.sizes)
        check_positive(f"{where}.hidden", self.hidden)
        check_positive(f"{where}.depth", self.depth)
        check_choice(f"{where}.style", self.style, STYLES)
        if not 1 <= self.decoder_reads <= self.layers:
            raise ConfigError(
                f"{where}.decoder_reads must be between 1 and layers ({self.layers}), "
                f"got {self.decoder_reads}"
            )


class HierarchyHead(PosteriorHead):
    """What every hierarchy's posterior part shares: its latent layout, the two
    distributions, and the memory of q's latest draw.

    A subclass sets ``sizes`` (units per layer, bottom first), ``layers``, ``latent_dim``,
    ``prior_dim`` and ``decoder_dim``, and implements ``context(features, fixed)``,
    ``posterior_walk`` and ``prior_walk`` (see :class:`HierarchicalPosterior`).
    """

    sizes: list[int]
    layers: int
    prior_dim: int
    decoder_dim: int

    def split(self, z: Tensor) -> list[Tensor]:
        """z ``(..., D)`` -> ``[z_1, ..., z_L]``."""
        return list(z.split(self.sizes, dim=-1))

    def forward(self, features: Tensor) -> HierarchicalDistribution:
        return HierarchicalDistribution(self, features)

    def joint_prior(self, top: Distribution) -> HierarchicalPrior:
        """The joint p(z) = p(z_L) prod p(z_l | z_{>l}) over a top prior ``top``."""
        return HierarchicalPrior(self, top)

    def remember(self, z: Tensor, walk: Walk) -> None:
        """Keep the walk of q's latest draw ``z``: the joint prior (and a decoder that reads
        the top-down state) evaluated at that same tensor reuse it instead of walking again."""
        _memo(self).last = (z, walk)

    def recalled(self, z: Tensor) -> Walk | None:
        """The walk of ``z`` when it is q's latest draw (the very tensor), else None."""
        last = _memo(self).last
        return last[1] if last is not None and last[0] is z else None


class HierarchicalPosterior(HierarchyHead):
    """L stochastic layers: q(z|x) and the conditional priors p(z_l | z_{l+1}).

    Built as ``HierarchicalPosterior(latent_dim, layers, sizes, hidden, depth, style,
    decoder_reads)``; ``latent_dim`` is the size of every layer unless ``sizes`` lists
    them. It reads ``in_features`` features of the encoder network per example:

    - ``bottom-up``: the top layer's mean and log-variance, then ``hidden`` features of x
      for each lower layer (``2 s_L + (L - 1) hidden``);
    - ``ladder`` / ``residual``: ``hidden`` features, the first step of a deterministic
      bottom-up path ``d_1 ... d_L`` inside the part.

    With gated units (``encoder_activation="gated"``) each of those ``hidden`` features is
    a pair (value, gate), so they count twice.

    Attributes the model reads: ``latent_dim`` (all layers), ``prior_dim`` (the top
    layer, what ``model.prior`` is over), ``decoder_dim`` (the prefix of z the decoder
    reads), ``sizes``.

    Example:
        >>> head = HierarchicalPosterior(4, layers=3, sizes=[2, 3, 4], hidden=8, style="ladder")
        >>> head.latent_dim, head.prior_dim, head.decoder_dim
        (9, 4, 2)
    """

    Options = HierarchicalOptions
    # Not factorised (lower layers depend on the layers above); the top layer, which the
    # registered prior is over, is a diagonal Gaussian given x (so the VampPrior fits).
    abilities = PosteriorAbilities(
        gaussian=False,
        factorised=False,
        gaussian_top=True,
        dreg=True,
        layered=True,
        takes_flow=True,
    )

    @staticmethod
    def label(o: HierarchicalOptions) -> str:
        sizes = "-".join(str(s) for s in o.sizes) if o.sizes else f"{o.layers} layers"
        return f"hierarchical {o.style} ({sizes})"

    def __init__(
        self,
        latent_dim: int,
        layers: int = 2,
        sizes: Sequence[int] = (),
        hidden: int = 300,
        depth: int = 2,
        style: str = "bottom-up",
        decoder_reads: int = 1,
        *,
        encoder_activation: str = "relu",
    ) -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        s = [int(v) for v in sizes] or [latent_dim] * layers
        if len(s) != layers or layers < 2:
            raise ValueError(f"need at least 2 layers and one size per layer, got {layers}, {s}")
        self.sizes = s
        self.layers = layers
        self.style = style
        self.hidden = hidden
        self.latent_dim = sum(s)
        self.prior_dim = s[-1]
        self.decoder_dim = sum(s[:decoder_reads])
        act = encoder_activation
        # Gated units read two pre-activations each (value and gate): the linear layers that
        # feed self.act are twice as wide.
        wide = preactivations(act) * hidden
        self.act = activation_layer(act)
        # What a bottom-up posterior's layer reads of x (before the activation).
        self._x_width = wide
        body = [hidden] * depth
        # p(z_l | z_{l+1}) for l = 1 .. L-1 (index 0 .. L-2).
        self.prior_nets = nn.ModuleList(
            [MLP(s[i + 1], body, 2 * s[i], act) for i in range(layers - 1)]
        )
        if style == "bottom-up":
            self.in_features = 2 * s[-1] + (layers - 1) * wide
            # z_{l+1}'s share of the first hidden layer of q(z_l | x, z_{l+1}); x's share
            # comes from the encoder network (its bias included).
            self.from_above = nn.ModuleList(
                [nn.Linear(s[i + 1], wide, bias=False) for i in range(layers - 1)]
            )
            self.posterior_nets = nn.ModuleList(
                [MLP(hidden, body[1:], 2 * s[i], act) for i in range(layers - 1)]
            )
        else:
            self.in_features = wide
            # The deterministic bottom-up path d_{l+1} = act(up_l(d_l)).
            self.up = nn.ModuleList([nn.Linear(hidden, wide) for _ in range(layers - 1)])
            if style == "ladder":
                # The bottom-up estimate N(mu_hat_l, sigma_hat_l) of every layer.
                self.estimates = nn.ModuleList([nn.Linear(hidden, 2 * v) for v in s])
            else:
                self.top = nn.Linear(hidden, 2 * s[-1])
                # (dmu, log dsigma^2) from d_l and the prior network's last hidden layer.
                self.residuals = nn.ModuleList(
                    [MLP(2 * hidden, body[1:], 2 * s[i], act) for i in range(layers - 1)]
                )

        # Flows on the layers below the top (model.flow; see attach_flows), none by default.
        self.flows: nn.ModuleList | None = None
        self.flow_context: nn.ModuleList | None = None

    def attach_flows(self, build: Callable[[int], Flow]) -> None:
        """A flow on each layer below the top (``build(units)`` makes one), as the IAF-VAE
        of Kingma et al. (2016) puts one in every layer: q(z_l | x, z_{l+1}) becomes the
        layer's Gaussian pushed through its flow, whose context is a projection of what the
        layer reads (its features of x and z_{l+1}). The top layer stays a diagonal
        Gaussian, so the VampPrior's components, the closed-form top KL and the explorer's
        top layer keep working."""
        s = self.sizes
        flows = [build(s[i]) for i in range(self.layers - 1)]
        # What layer i's posterior reads of x: the ladder's estimate, or features (the
        # bottom-up style's before the activation, twice as many with gated units).
        reads = [
            2 * s[i]
            if self.style == "ladder"
            else self._x_width
            if self.style == "bottom-up"
            else self.hidden
            for i in range(self.layers - 1)
        ]
        self.flows = nn.ModuleList(flows)
        self.flow_context = nn.ModuleList(
            [
                nn.Linear(reads[i] + s[i + 1], max(f.context_features, 1))
                for i, f in enumerate(flows)
            ]
        )

    def _flow_context(self, i: int, ctx: Tensor, above: Tensor) -> Tensor:
        assert self.flows is not None and self.flow_context is not None
        features = self.flows[i].context_features
        lead = above.shape[:-1]
        joint = torch.cat([ctx.expand(*lead, ctx.shape[-1]), above], dim=-1)
        # Linear, as a one-layer flow's context is a slice of the encoder's last (linear)
        # layer: an activation such as ReLU would hand the flow exact zeros.
        return self.flow_context[i](joint)[..., :features]

    # -- the pieces ---------------------------------------------------------------------------

    def prior_layer(self, i: int, above: Tensor, fixed: bool = False) -> tuple[Params, Tensor]:
        """p(z_i | z_{i+1} = above) as (mean, log-variance), and its network's last hidden layer."""
        layers = _layers(self.prior_nets[i])
        h = _run(layers[:-1], above, fixed)
        mu, logvar = _run(layers[-1:], h, fixed).chunk(2, dim=-1)
        return (mu, logvar), h

    def context(self, features: Tensor, fixed: bool = False) -> tuple[Params, list[Tensor]]:
        """From the encoder's features: the top layer's (mean, log-variance) and what each
        lower layer's posterior reads of x (index 0 .. L-2)."""
        s = self.sizes
        if self.style == "bottom-up":
            pieces = features.split([2 * s[-1]] + [self._x_width] * (self.layers - 1), dim=-1)
            mu, logvar = pieces[0].chunk(2, dim=-1)
            return (mu, logvar), list(pieces[1:])
        d = [self.act(features)]
        for up in self.up:
            d.append(self.act(_call(up, d[-1], fixed)))
        if self.style == "ladder":
            hats = [_call(e, di, fixed) for e, di in zip(self.estimates, d, strict=True)]
            mu, logvar = hats[-1].chunk(2, dim=-1)
            return (mu, logvar), hats[:-1]
        mu, logvar = _call(self.top, d[-1], fixed).chunk(2, dim=-1)
        return (mu, logvar), d[:-1]

    def posterior_layer(
        self, i: int, ctx: Tensor, above: Tensor, fixed: bool = False
    ) -> tuple[Params, Params | None]:
        """q(z_i | x, z_{i+1} = above) as (mean, log-variance), and the prior's p(z_i | z_{i+1})
        where the style computes it on the way (the top-down styles)."""
        if self.style == "bottom-up":
            a = self.act(ctx + _call(self.from_above[i], above, fixed))
            mu, logvar = _call(self.posterior_nets[i], a, fixed).chunk(2, dim=-1)
            return (mu, logvar), None
        (mu_p, lv_p), h = self.prior_layer(i, above, fixed)
        lv_p = clamp_logvar(lv_p)
        if self.style == "ladder":
            mu_h, lv_h = ctx.chunk(2, dim=-1)
            lv_h = clamp_logvar(lv_h)
            # Precisions add: 1/var = 1/var_hat + 1/var_p; the mean weighs each by its precision.
            logvar = -torch.logaddexp(-lv_h, -lv_p)
            mu = mu_h * torch.exp(logvar - lv_h) + mu_p * torch.exp(logvar - lv_p)
            return (mu, logvar), (mu_p, lv_p)
        joint = torch.cat([ctx.expand(*h.shape[:-1], ctx.shape[-1]), h], dim=-1)
        d_mu, d_lv = _call(self.residuals[i], joint, fixed).chunk(2, dim=-1)
        return (mu_p + d_mu, lv_p + d_lv), (mu_p, lv_p)

    # -- walking down the layers -------------------------------------------------------------

    def posterior_walk(
        self,
        ctx: list[Tensor],
        z_top: Tensor,
        values: Sequence[Tensor | None] | None = None,
        noise: Noise = _randn,
        fixed: bool = False,
    ) -> Walk:
        """From the top layer's ``z_top`` down: each lower layer's q (and, for the top-down
        styles, p) given the layers above, and its z: ``values[i]`` where given, else a draw."""
        n = self.layers
        zs: list[Tensor] = [z_top]
        q: list[Params] = []
        p: list[Params | None] = []
        flowed: list[_Flowed] = []
        for i in reversed(range(n - 1)):
            q_i, p_i = self.posterior_layer(i, ctx[i], zs[0], fixed)
            given = values[i] if values is not None else None
            if self.flows is None:
                zs.insert(0, given if given is not None else _draw(q_i, noise))
            else:
                # The layer's Gaussian draw z0 goes through its flow; a given z is inverted.
                flow = cast(Flow, self.flows[i])
                c = self._flow_context(i, ctx[i], zs[0])
                if given is None:
                    z0 = _draw(q_i, noise)
                    z, logdet = flow(z0, c)
                else:
                    z = given
                    z0, logdet = flow.inverse(given, c)
                zs.insert(0, z)
                flowed.insert(0, _Flowed(z0, logdet, c))
            q.insert(0, q_i)
            p.insert(0, p_i)
        return Walk(zs, q, p, flowed=flowed or None)

    def prior_walk(
        self,
        z_top: Tensor,
        values: Sequence[Tensor | None] | None = None,
        noise: Noise = _randn,
        temperature: float = 1.0,
    ) -> Walk:
        """From ``z_top`` down through the conditional priors: each lower layer's p given the
        layers above and its z (``values[i]`` where given, else a draw at ``temperature``;
        0 takes the means)."""
        zs: list[Tensor] = [z_top]
        p: list[Params | None] = []
        for i in reversed(range(self.layers - 1)):
            p_i, _ = self.prior_layer(i, zs[0])
            given = values[i] if values is not None else None
            zs.insert(0, given if given is not None else _draw(p_i, noise, temperature))
            p.insert(0, p_i)
        return Walk(zs, [], p)

    def prior_parameters(self) -> list[nn.Parameter]:
        """The generative model's parameters held here (the conditional priors)."""
        return list(self.prior_nets.parameters())


class _Memo:
    """The latest draw's walk, held beside a module's weights but never copied or saved
    with it (a copy of the model starts without one)."""

    def __init__(self) -> None:
        self.last: tuple[Tensor, Walk] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> _Memo:
        return _Memo()

    def __getstate__(self) -> dict[str, Any]:
        return {"last": None}


def _memo(module: nn.Module) -> _Memo:
    memo = module.__dict__.get("_memo")
    if memo is None:
        memo = module.__dict__["_memo"] = _Memo()
    return memo


@dataclass
class Walk:
    """One pass down a hierarchy: every layer's z (bottom first, the top last), the lower
    layers' posterior and prior parameters where computed, and the top-down state a
    decoder may read (None where the decoder reads z itself)."""

    z: list[Tensor]
    q: list[Params]
    p: list[Params | None]
    state: Any = None
    # With flows on the layers below the top: each such layer's Gaussian draw, the flow's
    # log-determinant and its context (bottom first).
    flowed: list[_Flowed] | None = None


@dataclass
class _Flowed:
    """One flowed layer of a walk: the Gaussian draw z0, log |det dz/dz0| and the context."""

    z0: Tensor
    logdet: Tensor
    context: Tensor


@dataclass
class _Draw:
    """What a draw of q computed on the way: z, each layer's log q and the walk."""

    z: Tensor
    log_q: list[Tensor]
    walk: Walk


class HierarchicalDistribution(MonteCarloMoments):
    """q(z|x) of a hierarchy: z = [z_1, ..., z_L], drawn from the top layer down.

    ``log_prob`` of the tensor most recently returned by ``rsample`` comes from the draw
    (as a flow's does); of any other value it is computed layer by layer at that value
    (exact: every conditional is a Gaussian given the layers above). ``top`` is
    q(z_L|x), a diagonal Gaussian. ``mean`` and ``variance`` have no closed form below
    the top: Monte Carlo estimates from fixed noise.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, head: Any, features: Tensor) -> None:
        self.head = head
        self.features = features
        self.top_params, self.ctx = head.context(features)
        self.top = _normal(self.top_params)
        self._cache: _Draw | None = None
        super().__init__(features.shape[:-1], Size([head.latent_dim]), validate_args=False)

    @property
    def sizes(self) -> list[int]:
        return list(self.head.sizes)

    def _ancestral(self, sample_shape: _size, noise: Noise) -> _Draw:
        mu, logvar = self.top_params
        shape = Size(sample_shape)
        top = (mu.expand(*shape, *mu.shape), logvar.expand(*shape, *logvar.shape))
        walk = self.head.posterior_walk(self.ctx, _draw(top, noise), noise=noise)
        params = [*walk.q, top]
        log_q = _walk_log_q(walk, params)
        full = Walk(walk.z, params, walk.p, walk.state, walk.flowed)
        return _Draw(torch.cat(walk.z, dim=-1), log_q, full)

    def rsample_and_log_prob(self, sample_shape: _size = ()) -> tuple[Tensor, Tensor]:
        """A reparameterised draw ``(*sample_shape, *batch, D)`` and its log q."""
        draw = self._ancestral(sample_shape, _randn)
        self._cache = draw
        self.head.remember(draw.z, draw.walk)
        return draw.z, torch.stack(draw.log_q).sum(0)

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def _cached(self, value: Tensor) -> _Draw | None:
        return self._cache if self._cache is not None and value is self._cache.z else None

    def _walk_at(self, value: Tensor, fixed: bool = False) -> Walk:
        """The posterior's walk at ``value``'s layers (every layer's q given those above)."""
        draw = None if fixed else self._cached(value)
        if draw is not None:
            return draw.walk
        head = self.head
        if fixed:
            top, ctx = head.context(self.features.detach(), fixed=True)
        else:
            top, ctx = self.top_params, self.ctx
        zs = head.split(value)
        walk = head.posterior_walk(ctx, zs[-1], values=zs[:-1], fixed=fixed)
        return Walk(walk.z, [*walk.q, top], walk.p, walk.state, walk.flowed)

    def layer_params(self, value: Tensor, fixed: bool = False) -> list[Params]:
        """Each layer's q(z_l | x, z_{>l}) at ``value``'s layers, as (mean, log-variance):
        with flows, those of the Gaussian each lower layer's flow transforms."""
        return self._walk_at(value, fixed).q

    def layer_dists(self, value: Tensor) -> list[Distribution]:
        """q(z_1 | x, z_{>1}), ..., q(z_L | x) at ``value``'s layers: diagonal Gaussians,
        or, with flows, each lower layer's Gaussian pushed through its flow."""
        walk = self._walk_at(value)
        dists: list[Distribution] = [_normal(p) for p in walk.q]
        if walk.flowed is not None:
            flows = self.head.flows
            for i, f in enumerate(walk.flowed):
                dists[i] = FlowDistribution(dists[i], cast(Flow, flows[i]), f.context)
        return dists

    def layer_log_probs(self, value: Tensor, fixed: bool = False) -> list[Tensor]:
        """log q(z_l | x, z_{>l}) of each layer of ``value``, each ``value.shape[:-1]``."""
        draw = None if fixed else self._cached(value)
        if draw is not None:
            return draw.log_q
        walk = self._walk_at(value, fixed)
        return _walk_log_q(walk, walk.q)

    def log_prob(self, value: Tensor) -> Tensor:
        return torch.stack(self.layer_log_probs(value)).sum(0)

    def log_prob_fixed(self, value: Tensor) -> Tensor:
        """log q(value) with q's parameters held fixed (values without gradient), the
        gradient still flowing through ``value``: the doubly reparameterised estimator's
        (Tucker et al. 2019) term, for every style."""
        return torch.stack(self.layer_log_probs(value, fixed=True)).sum(0)

    def kl_layers(self, prior: Distribution, value: Tensor, mode: str = "auto") -> Tensor:
        """KL per layer ``(L, B)`` of q against the joint ``prior``, estimated at the draws
        ``value (S, B, D)``: ``mc`` averages ``log q_l - log p_l``; ``auto`` takes each
        layer's closed form given the layers above (both conditionals are Gaussians), an
        unbiased estimate with less variance, and Monte Carlo for a top prior without one."""
        if not isinstance(prior, HierarchicalPrior):
            raise TypeError(f"the prior of a hierarchy is a HierarchicalPrior, got {type(prior)}")
        zs = self.head.split(value)
        if mode == "mc" or getattr(self.head, "flows", None) is not None:
            lq = self.layer_log_probs(value)
            lp = prior.layer_log_probs(value)
            mc = [self._per_example(a - b) for a, b in zip(lq, lp, strict=True)]
            if mode != "mc":
                # Flowed layers have no closed form (Monte Carlo at the draws, whose log q
                # the draw kept); the top layer is still a Gaussian.
                with contextlib.suppress(NotImplementedError):
                    mc[-1] = self._per_example(kl_divergence(self.top, prior.top))
            return torch.stack(mc)
        q_layers = self.layer_dists(value)
        p_layers = prior.layer_dists(value)
        out = []
        for q_l, p_l, z_l in zip(q_layers, p_layers, zs, strict=True):
            try:
                kl = kl_divergence(q_l, p_l)
            except NotImplementedError:
                kl = q_l.log_prob(z_l) - p_l.log_prob(z_l)
            out.append(self._per_example(kl))
        return torch.stack(out)

    def _per_example(self, t: Tensor) -> Tensor:
        # Lower layers' terms are per draw (S, B); the top's closed form is per example (B,).
        while t.dim() > len(self.batch_shape):
            t = t.mean(0)
        return t

    def _fixed_draw(self, n: int, seed: int) -> _Draw:
        gen = torch.Generator(device=self.features.device).manual_seed(seed)

        def noise(shape: Size, like: Tensor) -> Tensor:
            # Shared by every example, so an example's moments do not depend on the batch
            # it is encoded in, and antithetic in every layer at once: draw j + n/2 is
            # draw j with the whole noise vector negated (see shared_noise).
            return shared_noise(shape, gen, like)

        return self._ancestral((n,), noise)

    def draws(self, n: int, seed: int = 0) -> Tensor:
        return self._fixed_draw(n, seed).z

    def moment_draws(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Each layer's Gaussian q(z_l | x, z_{>l}) at the draws of the layers above: its
        mean and variance (the top's exact); a flowed layer, with no closed form, gives its
        draws and zero. See :meth:`MonteCarloMoments.moment_draws`."""
        walk = self._fixed_draw(n, seed).walk
        flowed = len(walk.flowed or [])
        means, variances = [], []
        for i, ((mu, logvar), z) in enumerate(zip(walk.q, walk.z, strict=True)):
            if i < flowed:
                means.append(z)
                variances.append(torch.zeros_like(z))
            else:
                means.append(mu.expand_as(z))
                variances.append(torch.exp(clamp_logvar(logvar)).expand_as(z))
        return torch.cat(means, dim=-1), torch.cat(variances, dim=-1)


class HierarchicalPrior(MonteCarloMoments):
    """The joint prior p(z) = p(z_L) prod_l p(z_l | z_{>l}) of a hierarchy.

    ``top`` is the registered prior over z_L (any Distribution with event ``(s_L,)``);
    the conditionals are diagonal Gaussians from the part's networks. ``sample`` draws
    from the top down; ``sample(shape, temperature=t)`` scales every layer's standard
    deviation by t (how NVAE and VDVAE sample), see :func:`tempered_sample`.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector

    def __init__(self, head: Any, top: Distribution) -> None:
        self.head = head
        self.top = top
        self._cache: tuple[Tensor, list[Params], list[Tensor]] | None = None
        super().__init__(top.batch_shape, Size([head.latent_dim]), validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return bool(self.top.has_rsample)

    @property
    def sizes(self) -> list[int]:
        return list(self.head.sizes)

    def _params(self, value: Tensor) -> list[Params]:
        walk = self.head.recalled(value)
        if walk is None or any(p is None for p in walk.p):
            zs = self.head.split(value)
            walk = self.head.prior_walk(zs[-1], values=zs[:-1])
        return [p for p in walk.p if p is not None]

    def layer_log_probs(self, value: Tensor) -> list[Tensor]:
        """log p(z_l | z_{>l}) of each lower layer, then log p(z_L), each ``value.shape[:-1]``."""
        if self._cache is not None and self._cache[0] is value:
            return self._cache[2]
        zs = self.head.split(value)
        params = self._params(value)
        out = [_normal(p).log_prob(z) for p, z in zip(params, zs, strict=False)]
        out.append(self.top.log_prob(zs[-1]))
        self._cache = (value, params, out)
        return out

    def layer_dists(self, value: Tensor) -> list[Distribution]:
        """p(z_1 | z_{>1}), ..., p(z_{L-1} | z_L) at ``value``'s layers, then the top prior."""
        if self._cache is not None and self._cache[0] is value:
            params = self._cache[1]
        else:
            params = self._params(value)
        return [*(_normal(p) for p in params), self.top]

    def log_prob(self, value: Tensor) -> Tensor:
        return torch.stack(self.layer_log_probs(value)).sum(0)

    def _ancestral(
        self, sample_shape: _size, noise: Noise, temperature: float = 1.0, top: Tensor | None = None
    ) -> Tensor:
        z_top = tempered_sample(self.top, sample_shape, temperature) if top is None else top
        walk = self.head.prior_walk(z_top, noise=noise, temperature=temperature)
        return torch.cat(walk.z, dim=-1)

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        return self._ancestral(sample_shape, _randn, top=self.top.rsample(sample_shape))

    def sample(self, sample_shape: _size = (), temperature: float = 1.0) -> Tensor:
        with torch.no_grad():
            return self._ancestral(sample_shape, _randn, temperature)

    def sample_below(self, z: Tensor, layer: int, temperature: float = 1.0) -> Tensor:
        """Keep the layers of ``z`` from ``layer`` (1-based) up and draw those below it from
        the prior's conditionals: what each layer encodes, as NVAE's figures show it."""
        head = self.head
        if not 1 <= layer <= head.layers:
            raise ValueError(f"layer must be between 1 and {head.layers}, got {layer}")
        zs = head.split(z)
        values: list[Tensor | None] = [
            None if i < layer - 1 else zs[i] for i in range(head.layers - 1)
        ]
        with torch.no_grad():
            walk = head.prior_walk(zs[-1], values=values, temperature=temperature)
        return torch.cat(walk.z, dim=-1)

    def fill_below(self, z_top: Tensor) -> Tensor:
        """The whole latent vector for top-layer codes ``(..., s_L)``: each layer below at
        the mean of its conditional prior (deterministic)."""
        with torch.no_grad():
            return torch.cat(self.head.prior_walk(z_top, temperature=0.0).z, dim=-1)

    def draws(self, n: int, seed: int = 0) -> Tensor:
        device = next(self.head.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            return self.sample((n,))


def tempered_sample(
    dist: Distribution, sample_shape: _size = (), temperature: float = 1.0
) -> Tensor:
    """Draws of ``dist`` with its spread scaled by ``temperature`` (1: plain ``sample``).

    A diagonal Gaussian's standard deviation is scaled; a mixture of diagonal Gaussians
    (mog, VampPrior) picks components as usual and scales each component's; a hierarchy
    scales every layer's. Other distributions refuse a temperature other than 1.

    Example:
        >>> from vaekit.distributions.priors import StandardNormalPrior
        >>> p = StandardNormalPrior(2)()
        >>> float(tempered_sample(p, (4000,), 0.5).std()) < 0.6
        True
    """
    if temperature == 1.0:
        return dist.sample(sample_shape)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.no_grad():
        if isinstance(dist, HierarchicalPrior):
            return dist.sample(Size(sample_shape), temperature)
        # A Gaussian or a mixture of them (or a prior with its own tempered(t)).
        return tempered(dist, temperature).sample(sample_shape)

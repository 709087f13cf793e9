"""Normalizing flows on top of a Gaussian posterior: planar and inverse autoregressive.

A flow posterior draws ``z0 ~ N(mu(x), sigma(x))`` and pushes it through K invertible
steps conditioned on the encoder's output; the log-density of the result is
``log q(z) = log N(z0) - sum_k log |det dz_k / dz_{k-1}|``, computed in the same pass
as the sample (:meth:`FlowDistribution.rsample_and_log_prob`).

``log_prob(z)`` of a value that the distribution did not draw itself is exact too: it
inverts the flow in float64 (planar: a monotone scalar equation per step, solved by
bisection; IAF: D sequential passes per step). That is slower than the cached path and,
for a flow that contracts strongly (IAF gates sigma near 0), magnifies the float32
rounding of ``z`` itself; so objectives and evaluation draw with
:func:`vaekit.distributions.sample_with_log_prob`, and ``log_prob`` of the tensor most
recently returned by ``rsample`` / ``sample`` is served from a cache, with no inversion.

Example:
    >>> from vaekit.distributions.posteriors import diagonal_normal
    >>> flow = PlanarFlow(latent_dim=2, length=3)
    >>> context = torch.randn(5, flow.context_features)
    >>> base = diagonal_normal(torch.zeros(5, 2), torch.zeros(5, 2))
    >>> q = FlowDistribution(base, flow, context)
    >>> z, log_q = q.rsample_and_log_prob((4,))
    >>> z.shape, log_q.shape
    (torch.Size([4, 5, 2]), torch.Size([4, 5]))
    >>> bool(torch.allclose(q.log_prob(z.clone()), log_q, atol=1e-4))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn
from torch.distributions import Distribution, constraints
from torch.func import functional_call
from torch.types import _size

from vaekit.distributions.posteriors import (
    MOMENT_DRAWS,
    GaussianPosterior,
    MonteCarloMoments,
    PosteriorHead,
    shared_noise,
)
from vaekit.nn import ACTIVATIONS, MADE
from vaekit.parts import FlowAbilities, PosteriorAbilities
from vaekit.validate import check_choice, check_positive

__all__ = [
    "Flow",
    "FlowOptions",
    "PlanarFlow",
    "IAF",
    "FlowDistribution",
    "FlowPosterior",
    "MOMENT_DRAWS",
]

# Bisection steps for inverting a planar step: the bracket has width 2|m| <= a few units,
# and 80 halvings reach float64 resolution.
_BISECT_STEPS = 80
# How far w . u_hat stays above -1 (Rezende & Mohamed's condition for invertibility).
_M_FLOOR = 1e-4


class Flow(nn.Module):
    """A chain of invertible maps of ``z (..., D)``, conditioned on per-example context.

    ``context_features`` encoder outputs per example are passed as ``context (B, C)``.
    ``forward(z0, context)`` returns ``(z, logdet)``; ``inverse(z, context)`` returns
    ``(z0, logdet)`` with the same ``logdet = sum_k log |det dz_k/dz_{k-1}|`` (shape
    ``z.shape[:-1]``), so ``log q(z) = log q0(z0) - logdet`` either way.

    A flow of yours (``model.flow: mymodule:MyFlow``) subclasses this, is built as
    ``Class(latent_dim, **options)`` and sets ``context_features``.
    """

    context_features: int = 0
    abilities = FlowAbilities()

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


@dataclass
class FlowOptions:
    """Options of a flow: its number of steps K."""

    # Number of flow steps K.
    length: int = 4

    def validate(self, where: str) -> None:
        check_positive(f"{where}.length", self.length)


class PlanarFlow(Flow):
    """Planar flow (Rezende & Mohamed 2015): ``z + u_hat * tanh(w . z + b)``, K steps.

    The parameters ``(u, w, b)`` of every step come from the encoder (amortised, as in
    the paper), ``length * (2 * latent_dim + 1)`` features per example. ``u`` is
    replaced by ``u_hat = u + (m(w.u) - w.u) w / |w|^2`` with ``m(a) = -1 + softplus(a)``,
    so ``w . u_hat > -1`` and every step is invertible.
    """

    Options = FlowOptions

    @staticmethod
    def label(o: FlowOptions) -> str:
        return f"planar{o.length}"

    def __init__(self, latent_dim: int, length: int = 4) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.length = length
        self.context_features = length * (2 * latent_dim + 1)

    def _params(self, context: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        d = self.latent_dim
        c = context.unflatten(-1, (self.length, 2 * d + 1))
        u, w, b = c[..., :d], c[..., d : 2 * d], c[..., 2 * d]
        wu = (w * u).sum(-1, keepdim=True)
        # m = w . u_hat > -1. The floor keeps that true in float32 too (softplus(-18) - 1
        # rounds to -1), so det = 1 + m (1 - t^2) >= 1e-4 and every step stays invertible.
        m = (F.softplus(wu) - 1.0).clamp_min(-1.0 + _M_FLOOR)
        ww = (w * w).sum(-1, keepdim=True)
        u_hat = u + (m - wu) * w / ww.clamp_min(1e-12)
        # w = 0 (a context of exact zeros) leaves a translation by u tanh(b), whose w . u_hat
        # and log-determinant are 0, not the m the formula gives.
        m = torch.where(ww > 1e-12, m, torch.zeros_like(m))
        return u_hat, w, b, m.squeeze(-1)

    @staticmethod
    def _log_det(t: Tensor, m: Tensor) -> Tensor:
        # det = 1 + u_hat . w tanh'(a) = 1 + m (1 - t^2) > 0 because m > -1.
        return torch.log1p((1 - t * t) * m)

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        u_hat, w, b, m = self._params(context)
        logdet = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for k in range(self.length):
            t = torch.tanh((w[..., k, :] * z).sum(-1) + b[..., k])
            z = z + u_hat[..., k, :] * t.unsqueeze(-1)
            logdet = logdet + self._log_det(t, m[..., k])
        return z, logdet

    @torch.no_grad()
    def inverse(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        u_hat, w, b, m = (p.double() for p in self._params(context))
        y = z.double()
        logdet = torch.zeros(y.shape[:-1], dtype=y.dtype, device=y.device)
        for k in reversed(range(self.length)):
            wk, uk, bk, mk = w[..., k, :], u_hat[..., k, :], b[..., k], m[..., k]
            # w . y = a + m tanh(a + b) with a = w . z_prev: monotone in a (m > -1), and
            # |a - w . y| <= |m|, so bisection on that bracket converges to the root.
            wy = (wk * y).sum(-1)
            lo, hi = wy - mk.abs(), wy + mk.abs()
            for _ in range(_BISECT_STEPS):
                mid = 0.5 * (lo + hi)
                above = mid + mk * torch.tanh(mid + bk) > wy
                hi = torch.where(above, mid, hi)
                lo = torch.where(above, lo, mid)
            t = torch.tanh(0.5 * (lo + hi) + bk)
            y = y - uk * t.unsqueeze(-1)
            logdet = logdet + self._log_det(t, mk)
        return y.to(z.dtype), logdet.to(z.dtype)


class IAF(Flow):
    """Inverse autoregressive flow (Kingma et al. 2016), K steps of MADE networks.

    Step k: ``[m, s] = MADE_k(z, h)``, ``sigma = sigmoid(s)``,
    ``z <- sigma * z + (1 - sigma) * m`` (the numerically stable form of the paper),
    with ``log det = sum log sigma``. The order of the latent dimensions is reversed
    between steps. ``h`` is a context vector of ``hidden`` features from the encoder.
    """

    @dataclass
    class Options(FlowOptions):
        # Width of each MADE's hidden layers and of the context vector h from the encoder.
        hidden: int = 128
        # Activation of the MADEs' hidden layers.
        activation: str = "elu"

        def validate(self, where: str) -> None:
            super().validate(where)
            check_positive(f"{where}.hidden", self.hidden)
            check_choice(f"{where}.activation", self.activation, sorted(ACTIVATIONS))

    @staticmethod
    def label(o: IAF.Options) -> str:
        return f"iaf{o.length}"

    def __init__(
        self, latent_dim: int, length: int = 4, hidden: int = 128, activation: str = "elu"
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.length = length
        self.context_features = hidden
        mades = [
            MADE(latent_dim, [hidden, hidden], multiplier=2, context=hidden, activation=activation)
            for _ in range(length)
        ]
        for made in mades:
            # Start close to the identity: sigma = sigmoid(s) near 1 (the paper's advice).
            nn.init.constant_(made.out.bias[latent_dim:], 1.5)
            nn.init.normal_(made.out.weight, std=1e-3)
        self.mades = nn.ModuleList(mades)

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        logdet = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for k, made in enumerate(self.mades):
            if k:
                z = z.flip(-1)
            m, s = made(z, context).chunk(2, dim=-1)
            sigma = torch.sigmoid(s)
            z = sigma * z + (1 - sigma) * m
            logdet = logdet + F.logsigmoid(s).sum(-1)
        return z, logdet

    @torch.no_grad()
    def inverse(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        # In float64: dividing by sigma expands float32 rounding where a step contracts.
        y, ctx = z.double(), context.double()
        logdet = torch.zeros(y.shape[:-1], dtype=y.dtype, device=y.device)
        for k in reversed(range(self.length)):
            made = self.mades[k]
            state = {n: t.double() for n, t in [*made.named_parameters(), *made.named_buffers()]}
            # Dimension i of the input depends on inputs < i only: after pass i the first
            # i + 1 entries are exact, so D passes recover the whole input.
            x = torch.zeros_like(y)
            s = torch.zeros_like(y)
            for _ in range(self.latent_dim):
                m, s = functional_call(made, state, (x, ctx)).chunk(2, dim=-1)
                sigma = torch.sigmoid(s)
                x = (y - (1 - sigma) * m) / sigma
            logdet = logdet + F.logsigmoid(s).sum(-1)
            y = x.flip(-1) if k else x
        return y.to(z.dtype), logdet.to(z.dtype)


class FlowDistribution(MonteCarloMoments):
    """``q(z)``: a base distribution pushed through a :class:`Flow`.

    ``rsample_and_log_prob`` returns a reparameterised sample and its exact log-density
    in one pass; ``log_prob`` of the tensor last returned by ``rsample`` / ``sample``
    comes from a cache, and of any other value by inverting the flow (exact, slower).
    ``mean`` and ``variance`` have no closed form: they are Monte Carlo estimates from
    :data:`MOMENT_DRAWS` draws of fixed noise, the same for every example.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, base: Distribution, flow: Flow, context: Tensor) -> None:
        self.base = base
        self.flow = flow
        self.context = context
        self._cache: tuple[Tensor, Tensor] | None = None
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def rsample_and_log_prob(self, sample_shape: _size = ()) -> tuple[Tensor, Tensor]:
        """A reparameterised sample ``(*sample_shape, *batch, D)`` and its log q."""
        z0 = self.base.rsample(sample_shape)
        z, logdet = self.flow(z0, self.context)
        log_q = self.base.log_prob(z0) - logdet
        self._cache = (z, log_q)
        return z, log_q

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, value: Tensor) -> Tensor:
        if self._cache is not None and value is self._cache[0]:
            return self._cache[1]
        z0, logdet = self.flow.inverse(value, self.context)
        lp = self.base.log_prob(z0) - logdet
        # A finite z whose preimage overflowed lies where q is ~0 (far tails of a strongly
        # contracting IAF): its log-density is -inf, not NaN.
        bad = torch.isnan(lp) & torch.isfinite(value).all(-1)
        return lp.masked_fill(bad, float("-inf"))

    def draws(self, n: int, seed: int = 0) -> Tensor:
        base = self.base
        loc, scale = base.mean, base.stddev
        gen = torch.Generator(device=loc.device).manual_seed(seed)
        # Noise shared by every example, so an example's draws do not depend on the batch
        # it is in, and antithetic (see shared_noise).
        eps = shared_noise((n, *loc.shape), gen, loc)
        z, _ = self.flow(loc + scale * eps, self.context)
        return z

    def expand(self, batch_shape: _size, _instance: Distribution | None = None) -> FlowDistribution:
        batch_shape = Size(batch_shape)
        base = self.base.expand(batch_shape)
        context = self.context.expand(*batch_shape, self.context.shape[-1])
        return FlowDistribution(base, self.flow, context)


class FlowPosterior(PosteriorHead):
    """Posterior head: a base posterior (the diagonal Gaussian) pushed through a flow.

    It reads ``base.in_features + flow.context_features`` features: the base head's, then
    the flow's per-example context. ``model.flow`` builds it around any posterior whose
    abilities say ``takes_flow``.

    Example:
        >>> from vaekit.distributions.posteriors import GaussianPosterior
        >>> head = FlowPosterior(GaussianPosterior(2), IAF(2, length=2, hidden=8))
        >>> q = head(torch.randn(5, head.in_features))
        >>> q.rsample((3,)).shape
        torch.Size([3, 5, 2])
    """

    def __init__(self, base: PosteriorHead | int, flow: Flow) -> None:
        super().__init__()
        if isinstance(base, int):  # a latent size: the diagonal Gaussian
            base = GaussianPosterior(base)
        self.latent_dim = base.latent_dim
        # The Gaussian base holds no weights, so a run's weight names (encoder.head.flow.*)
        # are those of earlier releases; a base with weights adds encoder.head.base.*.
        self.base: PosteriorHead = base
        self.flow = flow
        self.in_features = base.in_features + flow.context_features
        self.abilities = PosteriorAbilities(
            density=base.abilities.density, stochastic=base.abilities.stochastic
        )

    def forward(self, features: Tensor) -> Distribution:
        own, context = features.split([self.base.in_features, self.flow.context_features], dim=-1)
        base = self.base(own)
        return FlowDistribution(base, self.flow, context)

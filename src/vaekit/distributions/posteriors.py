"""Posterior heads: features from the encoder network to q(z | x) as a Distribution.

Flow posteriors (Gaussian + planar / IAF) live in :mod:`vaekit.distributions.flows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Size, Tensor, nn
from torch.distributions import Distribution, Independent, Normal, constraints
from torch.types import _size

from vaekit.distributions.pointmass import PointMass
from vaekit.nn import MLP, activation_layer, preactivations
from vaekit.parts import PosteriorAbilities
from vaekit.validate import check_nonneg

__all__ = [
    "LOGVAR_MIN",
    "LOGVAR_MAX",
    "LogVarNormal",
    "lean_normal_init",
    "PosteriorHead",
    "GaussianPosterior",
    "PointPosterior",
    "ImplicitPosterior",
    "ImplicitDistribution",
    "MonteCarloMoments",
    "MOMENT_DRAWS",
    "clamp_logvar",
    "diagonal_normal",
    "sample_with_log_prob",
    "shared_noise",
]

# Log-variances outside this range only ever come from a diverging run; clamping keeps
# exp() finite and the KL term from overflowing (exp(12) ~ 1.6e5, exp(-20) ~ 2e-9).
LOGVAR_MIN = -20.0
LOGVAR_MAX = 12.0
# Draws for the Monte Carlo mean / variance of a posterior without closed-form moments
# (fixed seed, so repeated calls agree: reconstructions and `vaekit encode` are reproducible).
MOMENT_DRAWS = 128


def clamp_logvar(logvar: Tensor) -> Tensor:
    """``logvar`` clamped to [LOGVAR_MIN, LOGVAR_MAX] in value, with the gradient of the
    unclamped log-variance (straight through).

    A plain clamp has zero gradient outside the range: an example whose encoder put its
    log-variance past the bound was never pulled back (in a Fashion-MNIST hierarchy one
    training example sat at a top-layer log-variance of ~490, 2.2 M nats of KL, epoch
    after epoch). Here the KL's gradient at the bound reaches the network and pulls it in, while
    values, and so every saved run's numbers, are the same as the plain clamp's.

    Example:
        >>> lv = torch.tensor([30.0, 0.0], requires_grad=True)
        >>> out = clamp_logvar(lv); out.sum().backward()
        >>> out.detach(), lv.grad
        (tensor([12.,  0.]), tensor([1., 1.]))
    """
    return logvar + (logvar.clamp(LOGVAR_MIN, LOGVAR_MAX) - logvar).detach()


def lean_normal_init(d: Normal, loc: Tensor, scale: Tensor) -> None:
    """``Normal.__init__(d, loc, scale, validate_args=False)`` without its broadcast when
    ``loc`` and ``scale`` already have one shape (a posterior's mean and spread, a prior's
    buffers): the distributions of every training step are made this way."""
    if loc.shape != scale.shape or not (loc.is_floating_point() and scale.is_floating_point()):
        Normal.__init__(d, loc, scale, validate_args=False)
        return
    d.loc, d.scale = loc, scale
    Distribution.__init__(d, loc.shape, validate_args=False)


class LogVarNormal(Normal):
    """A Normal that keeps the log-variance it was made from (``logvar``), so that its KL
    against N(0, 1) (:class:`vaekit.distributions.priors.StandardNormal`) is the textbook
    ``0.5 (exp(logvar) + mean^2 - 1 - logvar)``: torch's Normal-Normal form divides by the
    prior's scale, squares and takes the log of what exp gave, ten element-wise passes
    and their backward against six, in every training step of the default model.

    Example:
        >>> d = LogVarNormal(torch.zeros(2), torch.tensor([0.0, 2.0]))
        >>> d.scale
        tensor([1.0000, 2.7183])
    """

    logvar: Tensor

    def __init__(self, loc: Tensor, logvar: Tensor) -> None:
        self.logvar = logvar
        lean_normal_init(self, loc, torch.exp(0.5 * logvar))

    def expand(self, batch_shape: _size, _instance: Distribution | None = None) -> LogVarNormal:
        shape = Size(batch_shape)
        return LogVarNormal(self.loc.expand(shape), self.logvar.expand(shape))


def diagonal_normal(mean: Tensor, logvar: Tensor) -> Independent:
    """A Gaussian with diagonal covariance over the last dimension, from (mean, log-variance)
    (the log-variance clamped, :func:`clamp_logvar`)."""
    return Independent(LogVarNormal(mean, clamp_logvar(logvar)), 1, validate_args=False)


def shared_noise(shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal noise of ``shape = (n, *batch, D)`` for ``n`` fixed draws: shared by
    every example of the batch (drawn once, expanded) and in antithetic pairs (draw
    ``j + ceil(n / 2)`` is minus draw ``j``).

    Shared, so an example's Monte Carlo moments do not depend on its batch; antithetic, so
    the part of a draw that is odd in the noise cancels from the mean. For the flows and
    hierarchies of binarized-MNIST runs this cut the mean's Monte Carlo variance 60-100
    fold against independent draws.

    Example:
        >>> eps = shared_noise((4, 3, 2), torch.Generator().manual_seed(0), torch.zeros(()))
        >>> eps.shape, bool((eps[2:] == -eps[:2]).all()), bool((eps[:, 0] == eps[:, 2]).all())
        (torch.Size([4, 3, 2]), True, True)
    """
    n = shape[0]
    half = (n + 1) // 2
    eps = torch.randn(
        (half, *(1,) * (len(shape) - 2), shape[-1]),
        generator=generator,
        device=like.device,
        dtype=like.dtype,
    )
    return torch.cat([eps, -eps])[:n].expand(*shape)


class MonteCarloMoments(Distribution):
    """A distribution whose mean and variance have no closed form (a flow, an implicit
    posterior, a hierarchy): both are estimated from :data:`MOMENT_DRAWS` draws of fixed
    noise (:meth:`moment_draws`).

    The noise is the same for every example of the batch, so an example's estimate does
    not depend on which batch it is encoded in (``vaekit encode``, evaluation and the
    explorer give it the same code). Each estimate of the mean is off by about
    ``sqrt(variance / n)``; :func:`vaekit.evaluate.posterior_moments` takes more draws
    with :meth:`draws` and larger ``n``.
    """

    def draws(self, n: int, seed: int = 0) -> Tensor:
        """``n`` draws ``(n, *batch, D)`` from noise of the given seed, shared by every
        example of the batch (no gradient needed); vaekit's own take the noise of
        :func:`shared_noise`, in antithetic pairs."""
        raise NotImplementedError

    def moment_draws(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` draws of a conditional mean ``m`` and variance ``v``, each ``(n, *batch, D)``,
        from the noise of :meth:`draws`, such that ``E[z] = E[m]`` and ``Var[z] = E[v] +
        Var[m]`` (the law of total variance).

        By default ``m`` is the draw itself and ``v`` zero. A posterior that is Gaussian
        given some of its own draws (a hierarchy's layer given the layers above) returns
        that Gaussian's mean and variance: the same moments with less Monte Carlo noise
        (Rao-Blackwellised), so fewer draws reach the same accuracy."""
        z = self.draws(n, seed)
        return z, torch.zeros_like(z)

    @property
    def mean(self) -> Tensor:
        return self.moment_draws(MOMENT_DRAWS)[0].mean(0)

    @property
    def variance(self) -> Tensor:
        m, v = self.moment_draws(MOMENT_DRAWS)
        return v.mean(0) + m.var(0)


class PosteriorHead(nn.Module):
    """Base class: reads ``in_features`` encoder outputs per example, returns q(z | x).

    A posterior of yours (``model.posterior: mymodule:MyPosterior``) is built as
    ``Class(latent_dim, **options)``, sets ``in_features`` (how many encoder outputs it
    reads) and declares what it can do in ``abilities`` (:class:`vaekit.parts.PosteriorAbilities`).
    """

    in_features: int
    latent_dim: int
    abilities = PosteriorAbilities()


class GaussianPosterior(PosteriorHead):
    """Diagonal Gaussian q(z|x) = N(mu(x), diag(exp(logvar(x)))), reparameterized.

    Example:
        >>> head = GaussianPosterior(latent_dim=2)
        >>> q = head(torch.zeros(5, head.in_features))
        >>> q.batch_shape, q.event_shape
        (torch.Size([5]), torch.Size([2]))
    """

    abilities = PosteriorAbilities(gaussian=True, factorised=True, takes_flow=True)

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.in_features = 2 * latent_dim

    def forward(self, features: Tensor) -> Distribution:
        mean, logvar = features.chunk(2, dim=-1)
        return diagonal_normal(mean, logvar)


class PointPosterior(PosteriorHead):
    """Deterministic code z = f(x): the plain autoencoder as a member of the family."""

    abilities = PosteriorAbilities(density=False, stochastic=False, factorised=True)

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.in_features = latent_dim

    def forward(self, features: Tensor) -> Distribution:
        return PointMass(features, event_dims=1)


def sample_with_log_prob(q: Distribution, sample_shape: _size = ()) -> tuple[Tensor, Tensor]:
    """A reparameterised sample of ``q`` and ``q.log_prob`` of it, in one pass where ``q`` can.

    Flow posteriors compute the density of their own samples as they draw them
    (``rsample_and_log_prob``); for every other distribution this is ``rsample`` then
    ``log_prob``. Objectives and evaluation call this rather than the two methods.

    Example:
        >>> q = diagonal_normal(torch.zeros(5, 2), torch.zeros(5, 2))
        >>> z, log_q = sample_with_log_prob(q, (3,))
        >>> z.shape, log_q.shape
        (torch.Size([3, 5, 2]), torch.Size([3, 5]))
    """
    both = getattr(q, "rsample_and_log_prob", None)
    if both is not None:
        z, log_q = both(sample_shape)
        return z, log_q
    z = q.rsample(sample_shape)
    return z, q.log_prob(z)


class ImplicitDistribution(MonteCarloMoments):
    """q(z | x) defined only by a sampler: ``z = g(h(x), eps)``, ``eps ~ N(0, I)``.

    It has ``rsample`` but no density, which is what adversarial variational Bayes
    (``objective.name=avb``) is for: its discriminator estimates log q(z|x) - log p(z).
    ``mean`` and ``variance`` are Monte Carlo estimates from fixed noise.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, features: Tensor, net: nn.Module, noise_dim: int, latent_dim: int) -> None:
        self.features = features
        self.net = net
        self.noise_dim = noise_dim
        super().__init__(features.shape[:-1], Size([latent_dim]), validate_args=False)

    def _push(self, eps: Tensor) -> Tensor:
        h = self.features.expand(*eps.shape[:-1], self.features.shape[-1])
        inp = torch.cat([h, eps], dim=-1)
        z: Tensor = self.net(inp.reshape(-1, inp.shape[-1]))
        return z.reshape(*eps.shape[:-1], -1)

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        f = self.features
        eps = torch.randn(
            (*sample_shape, *self.batch_shape, self.noise_dim), device=f.device, dtype=f.dtype
        )
        return self._push(eps)

    def log_prob(self, value: Tensor) -> Tensor:
        raise NotImplementedError(
            "an implicit posterior (model.posterior=implicit) has no density: train it with "
            "objective.name=avb, whose discriminator estimates the KL term; the ELBO, IWAE and the "
            "importance-sampled likelihood need a posterior with a density (gaussian, or gaussian "
            "with model.flow=planar|iaf)"
        )

    def draws(self, n: int, seed: int = 0) -> Tensor:
        f = self.features
        gen = torch.Generator(device=f.device).manual_seed(seed)
        return self._push(shared_noise((n, *self.batch_shape, self.noise_dim), gen, f))


class ImplicitPosterior(PosteriorHead):
    """Posterior head of adversarial variational Bayes (Mescheder et al. 2017).

    The encoder network computes features ``h(x)`` once; noise ``eps`` of ``noise_dim``
    dimensions is concatenated to them and a one-hidden-layer network maps
    ``[h(x), eps]`` to z. (Injecting the noise after the shared trunk rather than at the
    raw input keeps S draws per example at the cost of S small head passes.)

    ``noise_dim`` 0 means ``latent_dim``. The head reads as many features as the encoder
    network's last hidden layer is wide (``encoder_width``; 256 for a network without one)
    and uses its activation.

    Example:
        >>> head = ImplicitPosterior(latent_dim=2, noise_dim=4, encoder_width=16)
        >>> head(torch.zeros(5, 16)).rsample((3,)).shape
        torch.Size([3, 5, 2])
    """

    @dataclass
    class Options:
        # Dimensions of the noise fed to the encoder (0 = latent_dim).
        noise_dim: int = 0

        def validate(self, where: str) -> None:
            check_nonneg(f"{where}.noise_dim", self.noise_dim)

    abilities = PosteriorAbilities(density=False)

    def __init__(
        self,
        latent_dim: int,
        noise_dim: int = 0,
        *,
        encoder_width: int | None = None,
        encoder_activation: str = "relu",
    ) -> None:
        super().__init__()
        features = encoder_width or 256
        noise_dim = noise_dim or latent_dim
        activation = encoder_activation
        self.latent_dim = latent_dim
        self.noise_dim = noise_dim
        # (Gated units read a value and a gate per feature.)
        self.in_features = preactivations(activation) * features
        # The trunk ends in a linear layer: a nonlinearity first makes [h, eps] -> z deep.
        self.act = activation_layer(activation)
        self.net = MLP(features + noise_dim, [features], latent_dim, activation)

    def forward(self, features: Tensor) -> Distribution:
        return ImplicitDistribution(self.act(features), self.net, self.noise_dim, self.latent_dim)

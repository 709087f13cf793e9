"""Likelihood heads: decoder outputs to p(x | z) as a Distribution over a whole example.

A head receives the decoder's raw outputs shaped ``(*batch, k, *data_shape)``, where
``k = params_per_element`` (1 for Bernoulli logits, 2 for a Gaussian with learned
scale), and returns a Distribution whose event is the data shape, so ``log_prob(x)``
sums over pixels or columns and has shape ``batch``.

Bernoulli is built from logits: a cross-entropy computed on sigmoid outputs clamps
log(0) at -100 and gives wrong likelihoods near saturated pixels.

Discrete heads for 8-bit images (:class:`CategoricalLikelihood`, 256-way softmax, and
:class:`DiscretizedLogisticLikelihood`) read data in [0, 1] in steps of ``1/(levels-1)``
and give the log-probability of the integer level in nats, so ``-log p / (D ln 2)``
is bits per dimension as the literature reports it. Real-valued columns take
:class:`GaussianLikelihood` or the heavy-tailed :class:`StudentTLikelihood`; class
labels take :class:`LabelLikelihood`. The same heads serve regression and
classification outside a VAE (see :mod:`vaekit.distributions.supervised`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn
from torch.distributions import (
    Bernoulli,
    Categorical,
    ContinuousBernoulli,
    Distribution,
    Independent,
    Normal,
    StudentT,
    constraints,
)
from torch.types import _size

__all__ = [
    "LikelihoodHead",
    "BernoulliLikelihood",
    "IndependentBernoulli",
    "GaussianLikelihood",
    "ContinuousBernoulliLikelihood",
    "StudentTLikelihood",
    "CategoricalLikelihood",
    "DiscretizedLogisticLikelihood",
    "LabelLikelihood",
    "QuantizedCategorical",
    "DiscretizedLogisticMixture",
]

LOGSCALE_MIN = -7.0
LOGSCALE_MAX = 5.0


class LikelihoodHead(nn.Module):
    """Base class: ``params_per_element`` raw outputs per data element."""

    params_per_element: int = 1

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)

    def _loc_scale(self, params: Tensor, learned: bool, log_sigma: float) -> tuple[Tensor, Tensor]:
        """Location and scale per element: both from the decoder, or a fixed scale."""
        axis = -len(self.data_shape) - 1
        if learned:
            loc, logscale = params.unbind(axis)
            return loc, torch.exp(logscale.clamp(LOGSCALE_MIN, LOGSCALE_MAX))
        loc = params.squeeze(axis)
        return loc, torch.full_like(loc, math.exp(log_sigma))

    def _independent(self, base: Distribution) -> Distribution:
        return Independent(base, len(self.data_shape), validate_args=False)


class IndependentBernoulli(Independent):
    """Independent Bernoulli elements from logits, with a log-density of two passes.

    ``log p(x) = sum(x * logits) - sum(softplus(logits))``: since
    ``log sigmoid(l) = l - softplus(l)`` and ``log(1 - sigmoid(l)) = -softplus(l)``, this
    is exactly ``x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))`` for any x in [0, 1],
    without torch's broadcast copies and the five elementwise passes of
    ``binary_cross_entropy_with_logits``. It is the hot loop of the k = 5000 likelihood
    (logits of shape (k, B, 784)) and of every training step. Everything else is torch's.

    Example:
        >>> p = IndependentBernoulli(Bernoulli(logits=torch.zeros(3, 4), validate_args=False), 1)
        >>> p.log_prob(torch.ones(4))  # 4 fair coins: 4 log(1/2)
        tensor([-2.7726, -2.7726, -2.7726])
    """

    def __init__(self, base: Bernoulli, event_dims: int) -> None:
        super().__init__(base, event_dims, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        logits = self.base_dist.logits
        dims = tuple(range(-self.reinterpreted_batch_ndims, 0))
        # softplus(l) is taken as l above the threshold; log1p(exp(-20)) = 2e-9 is below
        # float32's resolution there, not float64's: it needs 40.
        threshold = 40.0 if logits.dtype == torch.float64 else 20.0
        return (value * logits).sum(dims) - F.softplus(logits, threshold=threshold).sum(dims)


class BernoulliLikelihood(LikelihoodHead):
    """Independent Bernoulli per element, from logits (binary or [0, 1] data)."""

    def forward(self, params: Tensor) -> Distribution:
        logits = params.squeeze(-len(self.data_shape) - 1)
        return IndependentBernoulli(
            Bernoulli(logits=logits, validate_args=False), len(self.data_shape)
        )


class ContinuousBernoulliLikelihood(LikelihoodHead):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1]."""

    def forward(self, params: Tensor) -> Distribution:
        logits = params.squeeze(-len(self.data_shape) - 1)
        return self._independent(ContinuousBernoulli(logits=logits, validate_args=False))


class GaussianLikelihood(LikelihoodHead):
    """Independent Gaussian per element with a fixed or a learned standard deviation.

    ``sigma`` a number: fixed (tutorial 002's Gaussian decoder with sigma = 1 is the
    squared error / 2 plus a constant). ``sigma="learned"``: the decoder outputs a
    log-scale per element as well as the mean.
    """

    def __init__(self, data_shape: tuple[int, ...], sigma: float | str = 1.0) -> None:
        super().__init__(data_shape)
        self.learned = sigma == "learned"
        self.params_per_element = 2 if self.learned else 1
        self.log_sigma = 0.0 if self.learned else math.log(float(sigma))

    def forward(self, params: Tensor) -> Distribution:
        mean, scale = self._loc_scale(params, self.learned, self.log_sigma)
        return self._independent(Normal(mean, scale, validate_args=False))


class StudentTLikelihood(LikelihoodHead):
    """Independent Student-t per element: Gaussian-like but robust to outlying values.

    The location comes from the decoder; the scale is fixed (``sigma`` a number) or
    from the decoder (``sigma="learned"``); the degrees of freedom are fixed (``df`` a
    number) or one learned value per column (``df="learned"``, kept above 1 so the
    mean exists; it starts at 5).

    Example:
        >>> head = StudentTLikelihood((3,), sigma="learned", df="learned")
        >>> head(torch.zeros(4, 2, 3)).log_prob(torch.zeros(4, 3)).shape
        torch.Size([4])
    """

    df_fixed: Tensor

    def __init__(
        self,
        data_shape: tuple[int, ...],
        sigma: float | str = "learned",
        df: float | str = "learned",
    ) -> None:
        super().__init__(data_shape)
        self.learned_scale = sigma == "learned"
        self.params_per_element = 2 if self.learned_scale else 1
        self.log_sigma = 0.0 if self.learned_scale else math.log(float(sigma))
        self.learned_df = df == "learned"
        if self.learned_df:
            # df = 1 + softplus(raw); softplus(raw) = 4 at the start.
            self.df_raw = nn.Parameter(torch.full(self.data_shape, math.log(math.expm1(4.0))))
        else:
            self.register_buffer(
                "df_fixed", torch.full(self.data_shape, float(df)), persistent=False
            )

    @property
    def df(self) -> Tensor:
        return 1.0 + F.softplus(self.df_raw) if self.learned_df else self.df_fixed

    def forward(self, params: Tensor) -> Distribution:
        loc, scale = self._loc_scale(params, self.learned_scale, self.log_sigma)
        return self._independent(StudentT(self.df.expand_as(loc), loc, scale, validate_args=False))


class _Quantized(Distribution):
    """Base of distributions over ``levels`` evenly spaced values ``0, 1/(L-1), ..., 1``.

    The last ``event_dims`` dimensions form one example. ``log_prob(x)`` rounds
    ``x * (L-1)`` to the level index (values off the grid or outside [0, 1] are
    clamped to the nearest level) and sums the per-element log-probabilities.
    Subclasses give the log-probability of a level index per element.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.unit_interval

    def __init__(self, shape: Size, event_dims: int, levels: int) -> None:
        self.levels = levels
        split = len(shape) - event_dims
        super().__init__(shape[:split], shape[split:], validate_args=False)

    def _level_log_prob(self, idx: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _sum_event(self, t: Tensor) -> Tensor:
        n = len(self.event_shape)
        return t.sum(tuple(range(-n, 0))) if n else t

    def log_prob(self, value: Tensor) -> Tensor:
        idx = torch.round(value * (self.levels - 1)).clamp(0, self.levels - 1).long()
        return self._sum_event(self._level_log_prob(idx))

    def _moments(self) -> tuple[Tensor, Tensor]:
        # One level at a time keeps memory at one element-sized tensor (no L-fold table);
        # level 0 has value 0 and adds nothing.
        top = self.levels - 1
        device = self._device()
        mean = second = torch.zeros((), device=device)
        for j in range(1, top + 1):
            p = self._level_log_prob(torch.tensor(j, device=device)).exp()
            v = j / top
            mean = mean + p * v
            second = second + p * (v * v)
        return mean, (second - mean * mean).clamp_min(0.0)

    def _device(self) -> torch.device:  # pragma: no cover
        raise NotImplementedError

    @property
    def mean(self) -> Tensor:
        return self._moments()[0]

    @property
    def variance(self) -> Tensor:
        return self._moments()[1]


class QuantizedCategorical(_Quantized):
    """A free softmax over the levels of every element (``logits (..., L)``).

    Example:
        >>> d = QuantizedCategorical(torch.zeros(2, 5, 256), event_dims=1)
        >>> d.log_prob(torch.zeros(2, 5))   # uniform: 5 * log(1/256)
        tensor([-27.7259, -27.7259])
    """

    def __init__(self, logits: Tensor, event_dims: int) -> None:
        self.logits = logits
        super().__init__(logits.shape[:-1], event_dims, logits.shape[-1])

    def _device(self) -> torch.device:
        return self.logits.device

    def _level_log_prob(self, idx: Tensor) -> Tensor:
        lse = torch.logsumexp(self.logits, dim=-1)
        shape = torch.broadcast_shapes(idx.shape, lse.shape)
        logits = self.logits.expand(*shape, self.levels)
        picked = logits.gather(-1, idx.expand(shape).unsqueeze(-1)).squeeze(-1)
        return picked - lse

    def _moments(self) -> tuple[Tensor, Tensor]:
        probs = torch.softmax(self.logits, dim=-1)
        values = torch.linspace(0, 1, self.levels, device=probs.device, dtype=probs.dtype)
        mean = probs @ values
        return mean, (probs @ (values * values) - mean * mean).clamp_min(0.0)

    def sample(self, sample_shape: _size = ()) -> Tensor:
        with torch.no_grad():
            idx = Categorical(logits=self.logits, validate_args=False).sample(Size(sample_shape))
            return idx.to(self.logits.dtype) / (self.levels - 1)


class DiscretizedLogisticMixture(_Quantized):
    """A mixture of logistics discretized to the levels (Salimans et al. 2017, PixelCNN++).

    Each element has M components ``(logits, means, log_scales)``, shapes ``(..., M)``,
    on the data rescaled to [-1, 1]; level j gets the logistic mass of its bin, the
    lowest and highest levels the whole tails, so the levels' probabilities sum to one.
    Bin masses use ``log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) +
    log(1 - exp(b - a))``, which stays exact for tiny masses (no threshold fallback).
    Channels are independent given z (no PixelCNN++ channel coupling).
    """

    def __init__(
        self, logits: Tensor, means: Tensor, log_scales: Tensor, event_dims: int, levels: int = 256
    ) -> None:
        self.logits = logits
        self.means = means
        self.log_scales = log_scales.clamp_min(-7.0)
        super().__init__(means.shape[:-1], event_dims, levels)

    def _device(self) -> torch.device:
        return self.means.device

    def _level_log_prob(self, idx: Tensor) -> Tensor:
        top = self.levels - 1
        half = 1.0 / top
        x = (idx.to(self.means.dtype) * (2.0 / top) - 1.0).unsqueeze(-1)
        inv = torch.exp(-self.log_scales)
        centered = x - self.means
        a = inv * (centered + half)
        b = inv * (centered - half)
        interior = F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(-2.0 * half * inv))
        i = idx.unsqueeze(-1)
        comp = torch.where(
            i == 0, F.logsigmoid(a), torch.where(i == top, F.logsigmoid(-b), interior)
        )
        return torch.logsumexp(comp + torch.log_softmax(self.logits, dim=-1), dim=-1)

    def sample(self, sample_shape: _size = ()) -> Tensor:
        with torch.no_grad():
            shape = Size(sample_shape) + self.means.shape[:-1]
            k = (
                Categorical(logits=self.logits, validate_args=False)
                .sample(Size(sample_shape))
                .unsqueeze(-1)
            )
            mu = self.means.expand(*shape, self.means.shape[-1]).gather(-1, k).squeeze(-1)
            log_s = self.log_scales.expand(*shape, self.means.shape[-1]).gather(-1, k).squeeze(-1)
            u = torch.rand(shape, device=mu.device, dtype=mu.dtype).clamp(1e-5, 1 - 1e-5)
            x = mu + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))
            idx = torch.round((x + 1) / 2 * (self.levels - 1)).clamp(0, self.levels - 1)
            return idx / (self.levels - 1)


class CategoricalLikelihood(LikelihoodHead):
    """A 256-way (``levels``-way) softmax per pixel for 8-bit images (van den Oord et al. 2016).

    Needs ``levels`` decoder outputs per element: pair it with a convolutional decoder
    (an MLP's last layer would hold ``hidden * levels * pixels`` weights).

    Example:
        >>> head = CategoricalLikelihood((1, 2, 2), levels=4)
        >>> head(torch.zeros(3, 4, 1, 2, 2)).log_prob(torch.ones(3, 1, 2, 2)).shape
        torch.Size([3])
    """

    def __init__(self, data_shape: tuple[int, ...], levels: int = 256) -> None:
        super().__init__(data_shape)
        self.levels = levels
        self.params_per_element = levels

    def forward(self, params: Tensor) -> Distribution:
        logits = params.movedim(-len(self.data_shape) - 1, -1)
        return QuantizedCategorical(logits, event_dims=len(self.data_shape))


class DiscretizedLogisticLikelihood(LikelihoodHead):
    """Discretized logistic (``components=1``, Kingma et al. 2016) or its mixture per element.

    Decoder outputs per element: mean and log-scale (2), or logits, means and log-scales
    of ``components`` logistics (3 M).

    Example:
        >>> head = DiscretizedLogisticLikelihood((1, 2, 2), components=3)
        >>> head.params_per_element
        9
    """

    def __init__(self, data_shape: tuple[int, ...], levels: int = 256, components: int = 1) -> None:
        super().__init__(data_shape)
        self.levels = levels
        self.components = components
        self.params_per_element = 2 if components == 1 else 3 * components

    def forward(self, params: Tensor) -> Distribution:
        p = params.movedim(-len(self.data_shape) - 1, -1)
        if self.components == 1:
            means, log_scales = p.split(1, dim=-1)
            logits = torch.zeros_like(means)
        else:
            logits, means, log_scales = p.split(self.components, dim=-1)
        return DiscretizedLogisticMixture(
            logits, means, log_scales, len(self.data_shape), self.levels
        )


class LabelLikelihood(LikelihoodHead):
    """p(y | features) over class labels: a softmax over ``num_classes`` (classification).

    Example:
        >>> head = LabelLikelihood(3)
        >>> head(torch.zeros(4, 3)).log_prob(torch.tensor([0, 1, 2, 0])).shape
        torch.Size([4])
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__(())
        self.num_classes = num_classes
        self.params_per_element = num_classes

    def forward(self, params: Tensor) -> Distribution:
        return Categorical(logits=params, validate_args=False)

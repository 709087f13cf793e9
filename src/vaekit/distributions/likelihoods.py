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

Every distribution a head returns takes ``x`` in ``log_prob`` the way users hold data:
a tensor or a numpy array, shaped like one example or flat, or with an image's size-1
channel left out (``(N, 28, 28)`` for ``(1, 28, 28)``); :func:`event_value` views it as
the event shape. A value that does not fit, or 8-bit values given to a head that models
[0, 1], is a :class:`~vaekit.data.DataError` that says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
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

from vaekit.data.core import DataError
from vaekit.errors import ConfigError
from vaekit.parts import LikelihoodAbilities
from vaekit.validate import check_positive, check_positive_or_learned

__all__ = [
    "LikelihoodHead",
    "IndependentData",
    "event_value",
    "check_unit_interval",
    "values_checked",
    "unit_scale_hint",
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


def check_levels(key: str, levels: int) -> None:
    """A discrete likelihood needs at least two levels."""
    if levels < 2:
        raise ConfigError(f"{key} must be at least 2 (256 for 8-bit images), got {levels}")


LOGSCALE_MIN = -7.0
LOGSCALE_MAX = 5.0

# float32 rounding of x / 255 or of a min-max scaling can land a hair above 1.
_UNIT_TOLERANCE = 1e-5


# Set while the caller holds data it has range-checked already (:func:`values_checked`).
_VALUES_CHECKED: ContextVar[bool] = ContextVar("vaekit_values_checked", default=False)


@contextmanager
def values_checked(checked: bool = True) -> Iterator[None]:
    """Within it, ``log_prob`` of a likelihood of [0, 1] data does not range-check its
    value: the trainer holds data whose values were read once when loaded (their kind,
    binary or grey, says they lie in [0, 1]), and the check is a pass over every batch
    and two reads per step. ``checked=False`` changes nothing.

    Example:
        >>> p = IndependentBernoulli(Bernoulli(logits=torch.zeros(4), validate_args=False), 1)
        >>> with values_checked():
        ...     p.log_prob(torch.full((4,), 2.0))  # out of range, and not read: the caller vouched
        tensor(-2.7726)
    """
    token = _VALUES_CHECKED.set(checked or _VALUES_CHECKED.get())
    try:
        yield
    finally:
        _VALUES_CHECKED.reset(token)


def check_unit_interval(value: Tensor, lead: str = "p(x|z) models data in [0, 1]") -> None:
    """Raise a DataError when ``value`` leaves [0, 1], saying the range found and how to
    bring it into [0, 1] (:func:`unit_scale_hint`). One pass over the value (and, on an
    accelerator, one device sync).

    Example:
        >>> check_unit_interval(torch.tensor([0.0, 255.0]))
        Traceback (most recent call last):
        ...
        vaekit.data.core.DataError: p(x|z) models data in [0, 1], got values in [0, 255]: they look like 8-bit levels (0..255); divide them by 255
    """
    if value.numel() == 0:
        return
    lo_t, hi_t = torch.aminmax(value.detach())
    lo, hi = float(lo_t), float(hi_t)
    if not (lo < -_UNIT_TOLERANCE or hi > 1.0 + _UNIT_TOLERANCE):
        return  # in range (or NaN, which is not a question of scale)
    integral = not value.is_floating_point() or bool((value == value.round()).all())
    raise DataError(
        f"{lead}, got values in [{lo:.4g}, {hi:.4g}]: {unit_scale_hint(lo, hi, integral)}"
    )


def unit_scale_hint(lo: float, hi: float, integral: bool) -> str:
    """How to bring values in [lo, hi] (whole numbers when ``integral``) into [0, 1]:
    divide 8-bit levels by 255, other non-negative values by their maximum (the UCI digits'
    0..16 by 16), and rescale values that go below 0.

    Example:
        >>> unit_scale_hint(0, 16, True)
        'they look like levels 0..16; divide them by 16'
        >>> unit_scale_hint(0, 2, False)
        'divide them by 2, their maximum (or by the largest value the data can take)'
    """
    if lo < 0:
        return "scale them to [0, 1], e.g. (x - min) / (max - min) with the data's min and max"
    if integral and 127 < hi <= 255:
        # 8-bit images nearly always reach past half the range; 0..16 or 0..4 do not.
        return "they look like 8-bit levels (0..255); divide them by 255"
    if integral:
        return f"they look like levels 0..{hi:.0f}; divide them by {hi:.0f}"
    return f"divide them by {hi:.4g}, their maximum (or by the largest value the data can take)"


def _squeezed(shape: Size | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


def event_value(value: Tensor, event_shape: Size, batch_shape: Size | None = None) -> Tensor:
    """``value`` viewed so that it ends in ``event_shape``: examples may come flat
    (``(..., D)``), shaped, or shaped with size-1 dimensions left out or added
    (``(N, 28, 28)`` or ``(N, 28, 28, 1)`` for ``(1, 28, 28)``); the leading dimensions
    are kept. A value already ending in the event shape is returned as it is (no copy).
    A value that cannot be one example per leading index, or whose leading dimensions do
    not broadcast with ``batch_shape``, is a DataError naming both shapes.

    Example:
        >>> event_value(torch.zeros(5, 64), Size([1, 8, 8])).shape
        torch.Size([5, 1, 8, 8])
    """
    k = len(event_shape)
    if value.dim() >= k and value.shape[value.dim() - k :] == event_shape:
        lead = value.shape[: value.dim() - k]
    else:
        # The trailing dimensions that hold one example: the fewest whose sizes multiply to D.
        n = event_shape.numel()
        start, size = value.dim(), 1
        while start > 0 and size < n:
            start -= 1
            size *= value.shape[start]
        block = value.shape[start:]
        if size != n or (len(block) != 1 and _squeezed(block) != _squeezed(event_shape)):
            raise DataError(
                f"x of shape {tuple(value.shape)} does not fit: each example has shape "
                f"{tuple(event_shape)} ({n} values); pass (N, {', '.join(map(str, event_shape))}) "
                f"or flat (N, {n})"
            )
        lead = value.shape[:start]
        value = value.reshape(*lead, *event_shape)
    # Pairwise, not torch.broadcast_shapes: that costs 14 us a call, this one 1 us.
    if batch_shape is not None and any(
        a != b and a != 1 and b != 1
        for a, b in zip(reversed(lead), reversed(batch_shape), strict=False)
    ):
        raise DataError(
            f"x of shape {tuple(value.shape)} holds examples {tuple(lead)}, which do not "
            f"match the {tuple(batch_shape)} distributions of p(x|z); pass one example per z"
        )
    return value


def _as_value(value: Any, like: Tensor, unit_interval: bool) -> Tensor:
    """A value for ``log_prob``: a tensor on ``like``'s device (numpy arrays and integer
    data become ``like``'s float dtype), range-checked when it models [0, 1]."""
    if not isinstance(value, Tensor):
        value = torch.as_tensor(np.asarray(value), dtype=like.dtype)
    elif not value.is_floating_point():
        value = value.to(like.dtype)
    # The range check reads the values back, free on the CPU but a device sync on an
    # accelerator, where the training step would pay it every time: values already there
    # are the trainer's, whose data were checked once when loaded. Under torch.compile
    # the branch would break the graph.
    if (
        unit_interval
        and value.device.type == "cpu"
        and not _VALUES_CHECKED.get()
        and not torch.compiler.is_compiling()
    ):
        check_unit_interval(value)
    return value.to(like.device)


class IndependentData(Independent):
    """``Independent`` whose ``log_prob`` takes data as users hold them (see the module).

    ``like`` is a parameter tensor of the base distribution (its device and dtype are
    the value's); ``unit_interval`` says the distribution models values in [0, 1].

    Example:
        >>> p = IndependentData(Normal(torch.zeros(2, 1, 2, 2), 1.0), 3, like=torch.zeros(()))
        >>> p.log_prob(np.zeros((2, 4))).shape     # flat numpy rows, event (1, 2, 2)
        torch.Size([2])
    """

    def __init__(
        self, base: Distribution, event_dims: int, like: Tensor, unit_interval: bool = False
    ) -> None:
        super().__init__(base, event_dims, validate_args=False)
        self.like = like
        self.unit_interval = unit_interval

    def as_event(self, x: Any) -> Tensor:
        """``x`` as a tensor ending in the event shape (a DataError when it does not fit)."""
        return event_value(
            _as_value(x, self.like, self.unit_interval), self.event_shape, self.batch_shape
        )

    def log_prob(self, value: Any) -> Tensor:
        return super().log_prob(self.as_event(value))

    def expand(self, batch_shape: _size, _instance: Any = None) -> IndependentData:
        new = self._get_checked_instance(type(self), _instance)
        new.like, new.unit_interval = self.like, self.unit_interval
        out: IndependentData = super().expand(batch_shape, _instance=new)
        return out


# The kinds of data in [0, 1] (Dataset.kind): binary {0, 1} and grey levels.
UNIT_INTERVAL = frozenset({"binary", "grey"})


class LikelihoodHead(nn.Module):
    """Base class: ``params_per_element`` raw outputs per data element.

    A likelihood of yours (``model.likelihood: mymodule:MyLikelihood``) is built as
    ``Class(data_shape, **options)``, sets ``params_per_element`` and declares in
    ``abilities`` (:class:`vaekit.parts.LikelihoodAbilities`) which data it fits; a head
    whose abilities fit no real-valued data models values in [0, 1] (``unit_interval``):
    its distributions refuse other values.
    """

    params_per_element: int = 1
    abilities = LikelihoodAbilities()

    @property
    def unit_interval(self) -> bool:
        """Whether the head models data in [0, 1] only (its abilities fit no real data)."""
        return "real" not in self.abilities.fits

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

    def _independent(self, base: Distribution, like: Tensor) -> Distribution:
        return IndependentData(base, len(self.data_shape), like, self.unit_interval)

    def nll_caveat(self, data_kind: str) -> str | None:
        """What the NLL (and bits per dimension) of this likelihood on data of ``data_kind``
        (binary / grey / real) is, where it is not a probability of the data; None where it
        is."""
        return None


class IndependentBernoulli(IndependentData):
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
        super().__init__(base, event_dims, base.logits, unit_interval=True)

    def log_prob(self, value: Any) -> Tensor:
        value = self.as_event(value)
        logits = self.base_dist.logits
        dims = tuple(range(-self.reinterpreted_batch_ndims, 0))
        # softplus(l) is taken as l above the threshold; log1p(exp(-20)) = 2e-9 is below
        # float32's resolution there, not float64's: it needs 40.
        threshold = 40.0 if logits.dtype == torch.float64 else 20.0
        return (value * logits).sum(dims) - F.softplus(logits, threshold=threshold).sum(dims)


class BernoulliLikelihood(LikelihoodHead):
    """Independent Bernoulli per element, from logits (binary or [0, 1] data).

    On grey levels its log-probability is a cross-entropy, not a likelihood of the data
    (it is not normalised over [0, 1]): ``abilities.exact`` says binary only.
    """

    abilities = LikelihoodAbilities(fits=UNIT_INTERVAL, exact=frozenset({"binary"}))

    def nll_caveat(self, data_kind: str) -> str | None:
        if data_kind != "grey":
            return None
        return (
            "a cross-entropy, not a likelihood: a Bernoulli likelihood on grey-level data "
            "gives no probability of the data, so this NLL (and bits per dimension) does not "
            "compare with published likelihoods; binarize the data, or use the categorical "
            "or discretized-logistic likelihood for nats of the 8-bit levels"
        )

    def forward(self, params: Tensor) -> Distribution:
        logits = params.squeeze(-len(self.data_shape) - 1)
        return IndependentBernoulli(
            Bernoulli(logits=logits, validate_args=False), len(self.data_shape)
        )


class ContinuousBernoulliLikelihood(LikelihoodHead):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1]."""

    abilities = LikelihoodAbilities(fits=UNIT_INTERVAL, exact=UNIT_INTERVAL)

    def forward(self, params: Tensor) -> Distribution:
        logits = params.squeeze(-len(self.data_shape) - 1)
        return self._independent(ContinuousBernoulli(logits=logits, validate_args=False), logits)

    def nll_caveat(self, data_kind: str) -> str | None:
        return _density_caveat(data_kind)


def _density_caveat(data_kind: str) -> str | None:
    if data_kind not in ("binary", "grey"):
        return None
    return (
        "a density, not a probability: a continuous likelihood on pixel values in [0, 1] "
        "gives nats (and bits per dimension) that do not compare with published likelihoods "
        "of discrete data; use the categorical or discretized-logistic likelihood for those"
    )


class GaussianLikelihood(LikelihoodHead):
    """Independent Gaussian per element with a fixed or a learned standard deviation.

    ``sigma`` a number: fixed (tutorial 002's Gaussian decoder with sigma = 1 is the
    squared error / 2 plus a constant). ``sigma="learned"``: the decoder outputs a
    log-scale per element as well as the mean.
    """

    @dataclass
    class Options:
        # A fixed standard deviation, or "learned" (one per element, from the decoder).
        sigma: float | str = 1.0

        def validate(self, where: str) -> None:
            check_positive_or_learned(f"{where}.sigma", self.sigma)

    # A density: on binary data it is not a likelihood of the {0, 1} values. A fixed unit
    # scale fits real data badly (146 nats against 39.9 with a learned one on a 13-column
    # table), so the advice names the learned scale.
    abilities = LikelihoodAbilities(
        exact=frozenset({"grey", "real"}),
        advice="model.likelihood: {name: gaussian, sigma: learned} "
        "(--set model.likelihood=gaussian --set model.likelihood.sigma=learned)",
    )

    @staticmethod
    def label(o: GaussianLikelihood.Options) -> str:
        return f"gaussian(sigma={o.sigma})"

    def __init__(self, data_shape: tuple[int, ...], sigma: float | str = 1.0) -> None:
        super().__init__(data_shape)
        self.learned = sigma == "learned"
        self.params_per_element = 2 if self.learned else 1
        self.log_sigma = 0.0 if self.learned else math.log(float(sigma))

    def forward(self, params: Tensor) -> Distribution:
        mean, scale = self._loc_scale(params, self.learned, self.log_sigma)
        return self._independent(Normal(mean, scale, validate_args=False), mean)

    def nll_caveat(self, data_kind: str) -> str | None:
        return _density_caveat(data_kind)


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

    @dataclass
    class Options:
        # A fixed scale, or "learned" (one per element, from the decoder).
        sigma: float | str = "learned"
        # Fixed degrees of freedom, or "learned" (one per column, kept above 1).
        df: float | str = "learned"

        def validate(self, where: str) -> None:
            check_positive_or_learned(f"{where}.sigma", self.sigma)
            check_positive_or_learned(f"{where}.df", self.df)

    abilities = LikelihoodAbilities(
        exact=frozenset({"grey", "real"}),
        advice="model.likelihood: student-t (heavy tails, robust to outlying values)",
    )

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
        return self._independent(
            StudentT(self.df.expand_as(loc), loc, scale, validate_args=False), loc
        )

    def nll_caveat(self, data_kind: str) -> str | None:
        return _density_caveat(data_kind)


class _Quantized(Distribution):
    """Base of distributions over ``levels`` evenly spaced values ``0, 1/(L-1), ..., 1``.

    The last ``event_dims`` dimensions form one example. ``log_prob(x)`` rounds
    ``x * (L-1)`` to the level index (values off the grid go to the nearest level;
    values outside [0, 1] are a DataError) and sums the per-element log-probabilities.
    Subclasses give the log-probability of a level index per element.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.unit_interval

    def __init__(self, shape: Size, event_dims: int, levels: int, like: Tensor) -> None:
        self.levels = levels
        # A parameter tensor: the device and dtype of values and of the moments.
        self.like = like
        split = len(shape) - event_dims
        super().__init__(shape[:split], shape[split:], validate_args=False)

    def _level_log_prob(self, idx: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _sum_event(self, t: Tensor) -> Tensor:
        n = len(self.event_shape)
        return t.sum(tuple(range(-n, 0))) if n else t

    def log_prob(self, value: Any) -> Tensor:
        value = event_value(_as_value(value, self.like, True), self.event_shape, self.batch_shape)
        idx = torch.round(value * (self.levels - 1)).clamp(0, self.levels - 1).long()
        return self._sum_event(self._level_log_prob(idx))

    def _moments(self) -> tuple[Tensor, Tensor]:
        # One level at a time keeps memory at one element-sized tensor (no L-fold table);
        # level 0 has value 0 and adds nothing.
        top = self.levels - 1
        device = self.like.device
        mean = second = torch.zeros((), device=device)
        for j in range(1, top + 1):
            p = self._level_log_prob(torch.tensor(j, device=device)).exp()
            v = j / top
            mean = mean + p * v
            second = second + p * (v * v)
        return mean, (second - mean * mean).clamp_min(0.0)

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
        super().__init__(logits.shape[:-1], event_dims, logits.shape[-1], logits)

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


def _log1mexp_neg(width: float, log_scale: Tensor) -> Tensor:
    """``log(1 - exp(-d))`` for ``d = width * exp(-log_scale)``, finite for every log-scale.

    Once ``exp(-log_scale)`` underflows (a log-scale above ~88 in float32: a decoder run
    far off its data) the direct form is ``log(0) = -inf`` and its gradient NaN; for small
    ``d`` the series ``log d - d / 2`` is exact to O(d^2) and stays finite. The direct form
    is kept where ``d`` is not small, its argument floored so that the branch ``torch.where``
    discards still has a finite gradient.

    Example:
        >>> _log1mexp_neg(2 / 255, torch.tensor([0.0, 500.0]))
        tensor([  -4.8520, -504.8481])
    """
    log_d = math.log(width) - log_scale
    d = torch.exp(log_d)
    small = log_d < -8.0
    direct = torch.log(-torch.expm1(-d.clamp_min(math.exp(-8.0))))
    return torch.where(small, log_d - 0.5 * d, direct)


class DiscretizedLogisticMixture(_Quantized):
    """A mixture of logistics discretized to the levels (Salimans et al. 2017, PixelCNN++).

    Each element has M components ``(logits, means, log_scales)``, shapes ``(..., M)``,
    on the data rescaled to [-1, 1]; level j gets the logistic mass of its bin, the
    lowest and highest levels the whole tails, so the levels' probabilities sum to one.
    Bin masses use ``log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) +
    log(1 - exp(b - a))``, which stays exact for tiny masses (no threshold fallback), and
    ``log(1 - exp(-d))`` is taken in log space for wide logistics, so a diverging decoder's
    huge log-scale gives a huge finite loss whose gradient narrows it, never ``-inf``.
    Channels are independent given z (no PixelCNN++ channel coupling).
    """

    def __init__(
        self, logits: Tensor, means: Tensor, log_scales: Tensor, event_dims: int, levels: int = 256
    ) -> None:
        self.logits = logits
        self.means = means
        self.log_scales = log_scales.clamp_min(-7.0)
        super().__init__(means.shape[:-1], event_dims, levels, means)

    def _level_log_prob(self, idx: Tensor) -> Tensor:
        top = self.levels - 1
        half = 1.0 / top
        x = (idx.to(self.means.dtype) * (2.0 / top) - 1.0).unsqueeze(-1)
        inv = torch.exp(-self.log_scales)
        centered = x - self.means
        a = inv * (centered + half)
        b = inv * (centered - half)
        interior = F.logsigmoid(a) + F.logsigmoid(-b) + _log1mexp_neg(2.0 * half, self.log_scales)
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

    @dataclass
    class Options:
        # Levels L of the data: x in {0, 1/(L-1), ..., 1} (256 for 8-bit images).
        levels: int = 256

        def validate(self, where: str) -> None:
            check_levels(f"{where}.levels", self.levels)

    abilities = LikelihoodAbilities(fits=UNIT_INTERVAL, exact=UNIT_INTERVAL, levels=True)

    @staticmethod
    def label(o: CategoricalLikelihood.Options) -> str:
        return f"categorical{o.levels}"

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

    @dataclass
    class Options:
        # Levels L of the data: x in {0, 1/(L-1), ..., 1} (256 for 8-bit images).
        levels: int = 256
        # Logistic mixture components per element (1 = a single logistic).
        components: int = 1

        def validate(self, where: str) -> None:
            check_levels(f"{where}.levels", self.levels)
            check_positive(f"{where}.components", self.components)

    abilities = LikelihoodAbilities(fits=UNIT_INTERVAL, exact=UNIT_INTERVAL, levels=True)

    @staticmethod
    def label(o: DiscretizedLogisticLikelihood.Options) -> str:
        mix = f"x{o.components}" if o.components > 1 else ""
        return f"dlogistic{mix}"

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

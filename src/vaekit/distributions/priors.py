"""Priors p(z): modules whose forward returns a Distribution over the latent vector.

Every prior module is called as ``prior_module(encoder)``: the VAE passes its encoder,
which the VampPrior needs (its components are the posteriors of learned pseudo-inputs)
and the others ignore. The encoder is passed, not stored, so its weights are registered
once (safetensors refuses to save tensors shared between two module paths).

A prior of yours (``model.prior: mymodule:MyPrior``) is built as
``Class(latent_dim, **options)`` (plus ``data_shape=`` when its ``__init__`` asks for it)
and its ``forward(encoder=None)`` returns a Distribution with event shape ``(latent_dim,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    register_kl,
)
from torch.types import _size

from vaekit.abilities import TemperedDistribution
from vaekit.data.core import DataError
from vaekit.distributions.posteriors import LogVarNormal, clamp_logvar, lean_normal_init
from vaekit.errors import ConfigError
from vaekit.parts import PriorAbilities
from vaekit.validate import check_choice, check_positive

__all__ = [
    "DiagonalGaussianMixture",
    "StandardNormal",
    "StandardNormalPrior",
    "MixturePrior",
    "VampPrior",
    "ClassGaussianPrior",
    "ClassVampPrior",
    "tempered",
]


class DiagonalGaussianMixture(MixtureSameFamily):
    """A mixture of K diagonal Gaussians whose ``log_prob`` costs two matrix products.

    torch's ``MixtureSameFamily`` evaluates every component at every point elementwise,
    a ``(N, K, D)`` tensor through a dozen ops forward and back: for the VampPrior
    (K = 500, D = 40, N = 100) that was two thirds of a training step. Expanding the
    quadratic form, ``sum_d (z_d - m_kd)^2 / s_kd^2 = z^2 @ (1/s^2)^T - 2 z @ (m/s^2)^T
    + sum_d m_kd^2 / s_kd^2``, gives the same ``(N, K)`` log-densities from matmuls.
    z and the means are first centred on the mean of the component means, which keeps
    the cancellation error of the expansion small (float32: about 1e-3 nats for the
    VampPrior's components; float64: exact to 1e-10). Sampling, mean and variance are
    torch's.

    ``logits`` may carry batch dimensions, ``(*batch, K)``, over the same K components
    ``(K, D)``: one mixture per row with its own weights (a prior per class weighs the
    classes' components by each example's label), of batch shape ``batch``. The
    components are shared, not copied: their log-densities at every point are still the
    same two matrix products, and the weights of each row are added to them. The weights
    may be given as ``probs=`` instead of logits (as torch's ``Categorical`` takes them).

    Example:
        >>> loc, scale = torch.zeros(3, 2), torch.ones(3, 2)
        >>> p = DiagonalGaussianMixture(torch.zeros(3), loc, scale)
        >>> round(p.log_prob(torch.zeros(2)).item(), 4)  # log N(0; 0, I) in 2-D
        -1.8379
    """

    def __init__(
        self, logits: Tensor | None, loc: Tensor, scale: Tensor, *, probs: Tensor | None = None
    ) -> None:
        # The K shared components (K, D), which log_prob and tempered() read.
        self.component_loc, self.component_scale = loc, scale
        weights = Categorical(logits=logits, probs=probs, validate_args=False)
        comps = Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)
        if len(weights.batch_shape):  # one mixture per row: the components as views, not copies
            comps = comps.expand((*weights.batch_shape, loc.shape[0]))
        super().__init__(weights, comps, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        # Categorical normalised the logits: they are the log-weights, (*batch, K).
        return _logsumexp(self.mixture_distribution.logits + self.component_log_probs(value))

    def component_log_probs(self, value: Tensor) -> Tensor:
        """log N(z; m_k, s_k) of each component, ``(*value.shape[:-1], K)``."""
        loc, scale = self.component_loc, self.component_scale
        d = loc.shape[-1]
        centre = loc.mean(0).detach()
        z = (value - centre).reshape(-1, d)
        m = loc - centre
        prec = scale.pow(-2)  # (K, D)
        quad = (z * z) @ prec.T - 2.0 * (z @ (m * prec).T) + (m * m * prec).sum(-1)
        # Rounding can leave a tiny negative where z sits on a component's mean.
        quad = quad.clamp_min(0.0)
        log_norm = scale.log().sum(-1) + 0.5 * d * math.log(2 * math.pi)  # (K,)
        return (-log_norm - 0.5 * quad).reshape(*value.shape[:-1], -1)


class _OwnClassMixture(DiagonalGaussianMixture):
    """p(z|y) of a VampPrior per class for one-hot labels: row b is the uniform mixture of
    its class's K components among the C K (the others weigh zero). ``log_prob`` takes each
    row's K columns of the components' log-densities, where the weighted sum over all C K
    columns of a soft row passes over all of them (half the time on M2's C B rows)."""

    def __init__(self, classes: Tensor, per_class: int, loc: Tensor, scale: Tensor) -> None:
        self.classes, self.per_class = classes, per_class
        rows = F.one_hot(classes, loc.shape[0] // per_class).to(loc.dtype)
        # Probabilities, not logits: no log of the zeros to take.
        super().__init__(None, loc, scale, probs=rows.repeat_interleave(per_class, dim=-1))

    def log_prob(self, value: Tensor) -> Tensor:
        lp = self.component_log_probs(value).unflatten(-1, (-1, self.per_class))
        shape = torch.broadcast_shapes(lp.shape[:-2], self.classes.shape)
        lp = lp.expand(*shape, *lp.shape[-2:])  # (*shape, C, K)
        lead = (1,) * (len(shape) - self.classes.dim())
        index = self.classes.reshape(*lead, *self.classes.shape, 1, 1)
        own = torch.take_along_dim(lp, index, dim=-2).squeeze(-2)  # (*shape, K)
        return _logsumexp(own) - math.log(self.per_class)

    def tempered(self, t: float) -> Distribution:
        """The same mixture with each component's spread scaled by ``t``."""
        return _OwnClassMixture(
            self.classes, self.per_class, self.component_loc, self.component_scale * t
        )


# exp(-87) = 1.6e-38, float32's smallest normal number is 1.2e-38.
_LOWEST_TERM = -87.0


def _logsumexp(x: Tensor) -> Tensor:
    """``torch.logsumexp(x, -1)``, with each term more than 87 below the largest counted as
    exp(-87) = 1.6e-38 of it (a zero weight's -inf too). The largest term adds 1 to the
    sum, so K such terms change neither its value nor any gradient at float32's or
    float64's precision (for K under 1e20); but exp of arguments below float32's range
    (a mixture's far components, the zero weights of a prior per class) took this CPU's
    torch about 50 times as long as of ordinary ones (2000 x 500 terms: 81 ms against
    1.6 ms), most of a VampPrior's log-density."""
    top = x.detach().amax(-1, keepdim=True)
    return (x - top).clamp_min(_LOWEST_TERM).exp().sum(-1).log() + top.squeeze(-1)


class StandardNormal(Normal):
    """N(0, 1) element-wise (``loc`` zeros, ``scale`` ones, as given): the type that
    tells torch's KL registry the closed form against a :class:`LogVarNormal` posterior."""

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        lean_normal_init(self, loc, scale)

    def expand(self, batch_shape: _size, _instance: Distribution | None = None) -> StandardNormal:
        shape = Size(batch_shape)
        return StandardNormal(self.loc.expand(shape), self.scale.expand(shape))


@register_kl(LogVarNormal, StandardNormal)
def kl_standard_normal(q: LogVarNormal, p: StandardNormal) -> Tensor:
    # KL(N(m, exp(lv)) || N(0, 1)) = 0.5 (exp(lv) + m^2 - 1 - lv), element-wise.
    return 0.5 * (torch.exp(q.logvar) + q.loc.pow(2) - 1.0 - q.logvar)


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I).

    Example:
        >>> p = StandardNormalPrior(2)()
        >>> p.sample((3,)).shape
        torch.Size([3, 2])
    """

    loc: Tensor
    scale: Tensor
    abilities = PriorAbilities(factorised=True, temperature=True)

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # Buffers so that .to(device) moves the prior with the model.
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self, encoder: Callable[..., Distribution] | None = None) -> Distribution:
        return Independent(StandardNormal(self.loc, self.scale), 1, validate_args=False)


class MixturePrior(nn.Module):
    """A learnable mixture of K diagonal Gaussians (``model.prior=mog``).

    Means start as draws from N(0, I), so the components are spread out and the mixture
    is not K copies of one Gaussian; variances start at 1 and weights equal.

    Example:
        >>> p = MixturePrior(latent_dim=2, components=5)()
        >>> p.log_prob(torch.zeros(3, 4, 2)).shape
        torch.Size([3, 4])
    """

    @dataclass
    class Options:
        # Number of Gaussians K.
        components: int = 10

        def validate(self, where: str) -> None:
            check_positive(f"{where}.components", self.components)

    abilities = PriorAbilities(learned=True, temperature=True)

    @staticmethod
    def label(o: MixturePrior.Options) -> str:
        return f"mog{o.components}"

    def __init__(self, latent_dim: int, components: int = 10) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def forward(self, encoder: Callable[..., Distribution] | None = None) -> Distribution:
        std = torch.exp(0.5 * clamp_logvar(self.logvars))
        return DiagonalGaussianMixture(self.logits, self.means, std)


class ClassGaussianPrior(nn.Module):
    """p(z|y): a learned diagonal Gaussian per class (``model.prior=class-gaussian``), for
    a conditional model (``model.conditional=true``, the M2 model of Kingma et al. 2014).

    ``given(labels)`` is p(z|y) for one-hot (or soft: a blend of the classes' parameters)
    label rows; ``forward`` is p(z), the uniform mixture of the class Gaussians, which
    is what sampling without a label and the unconditional views read. Means start as
    draws from N(0, ``spread``^2 I), variances at 1.

    Example:
        >>> p = ClassGaussianPrior(2, num_classes=3)
        >>> p.given(torch.eye(3)[[0, 2]]).batch_shape, p().event_shape
        (torch.Size([2]), torch.Size([2]))
    """

    @dataclass
    class Options:
        # The class means start as draws from N(0, spread^2 I) (0: all at the origin).
        spread: float = 1.0

        def validate(self, where: str) -> None:
            if not self.spread >= 0:
                raise ConfigError(f"{where}.spread must be >= 0, got {self.spread}")

    abilities = PriorAbilities(learned=True, temperature=True, per_class=True)

    def __init__(self, latent_dim: int, num_classes: int = 0, spread: float = 1.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(
                "model.prior=class-gaussian is one Gaussian per class: it needs a conditional "
                "model (model.conditional=true) on labelled data"
            )
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.means = nn.Parameter(spread * torch.randn(num_classes, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(num_classes, latent_dim))

    def given(
        self, labels: Tensor, encoder: Callable[..., Distribution] | None = None
    ) -> Distribution:
        """p(z|y) for label rows ``(..., num_classes)``: batch shape ``labels.shape[:-1]``
        (the encoder is not used)."""
        labels = labels.to(self.means.dtype)
        loc = labels @ self.means
        std = torch.exp(0.5 * clamp_logvar(labels @ self.logvars))
        return Independent(Normal(loc, std, validate_args=False), 1, validate_args=False)

    def forward(self, encoder: Callable[..., Distribution] | None = None) -> Distribution:
        std = torch.exp(0.5 * clamp_logvar(self.logvars))
        return DiagonalGaussianMixture(torch.zeros_like(self.means[:, 0]), self.means, std)


class VampPrior(nn.Module):
    """Variational mixture of posteriors (Tomczak & Welling 2018, ``model.prior=vamp``).

    ``p(z) = 1/K sum_k q(z | u_k)`` with K learned pseudo-inputs ``u_k`` of the data's
    shape, passed through the model's own encoder, which the VAE hands over when it
    asks for the prior. The pseudo-inputs start near 0.05 with spread 0.01 (the paper's
    setting for MNIST; ``init="data"``: K training examples, which the trainer hands to
    :meth:`init_from_data`) and are not clipped unless ``clip``. ``lr_scale`` is a factor
    on the learning rate of the pseudo-inputs (the trainer asks :meth:`lr_scales`). Needs
    a Gaussian posterior (the mixture components are its distributions) and an
    unconditional encoder.

    Example:
        >>> from vaekit.config import ModelConfig
        >>> from vaekit.model import build_model
        >>> prior = {"name": "vamp", "components": 7}
        >>> model = build_model(ModelConfig(latent_dim=2, prior=prior), (1, 8, 8))
        >>> model.prior.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    @dataclass
    class Options:
        # Number of pseudo-inputs K (Tomczak & Welling use 500 on MNIST).
        components: int = 500
        # Where the pseudo-inputs start: noise (0.05 + 0.01 N(0, 1) per element, Tomczak &
        # Welling's MNIST setting) | data (K training examples drawn at random, seeded by
        # train.seed, plus 0.01 N(0, 1): their code's use_training_data_init).
        init: str = "noise"
        # Clip the pseudo-inputs to [0, 1] where the encoder reads them, as Tomczak &
        # Welling's code does (a hardtanh on the learned values: one that leaves [0, 1]
        # stops moving); false reads them as learned.
        clip: bool = False
        # A factor on train.lr for the pseudo-inputs (a parameter group of their own).
        lr_scale: float = 1.0

        def validate(self, where: str) -> None:
            check_positive(f"{where}.components", self.components)
            check_choice(f"{where}.init", self.init, ["noise", "data"])
            check_positive(f"{where}.lr_scale", self.lr_scale)

    # Its components are the encoder's posteriors of the pseudo-inputs, which carry no label.
    abilities = PriorAbilities(
        needs_gaussian_posterior=True, conditional=False, learned=True, temperature=True
    )

    @staticmethod
    def label(o: VampPrior.Options) -> str:
        return f"vamp{o.components}"

    def __init__(
        self,
        latent_dim: int,
        components: int = 500,
        init: str = "noise",
        clip: bool = False,
        lr_scale: float = 1.0,
        *,
        data_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.init = init
        self.clip = clip
        self.lr_scale = lr_scale
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(components, *data_shape))

    @torch.no_grad()
    def init_from_data(
        self, x: Tensor, generator: torch.Generator, labels: Tensor | None = None
    ) -> None:
        """With ``init="data"``: the pseudo-inputs become K of the training examples ``x``
        (drawn without replacement where there are K, with it otherwise) plus 0.01 N(0, 1)
        noise, both from ``generator`` (a CPU one); otherwise nothing changes. The labels
        are not used."""
        if self.init != "data":
            return
        u = self.pseudo_inputs
        k, n = u.shape[0], x.shape[0]
        if n >= k:
            rows = torch.randperm(n, generator=generator)[:k]
        else:
            rows = torch.randint(n, (k,), generator=generator)
        noise = torch.randn(u.shape, generator=generator, dtype=u.dtype)
        u.copy_(x[rows.to(x.device)].reshape(u.shape).to(u.dtype) + 0.01 * noise.to(u.device))

    def lr_scales(self) -> dict[str, float]:
        """Factors on the learning rate of this module's own parameters, by name."""
        return {"pseudo_inputs": self.lr_scale}

    def forward(self, encoder: Callable[..., Distribution] | None = None) -> Distribution:
        if encoder is None:
            raise ValueError(
                "the VampPrior is built from the encoder: ask the VAE for it (model.prior)"
            )
        u = self.pseudo_inputs.clamp(0.0, 1.0) if self.clip else self.pseudo_inputs
        loc, scale = _gaussian_components(encoder(u), "vamp")
        return DiagonalGaussianMixture(torch.zeros_like(loc[:, 0]), loc, scale)


def _gaussian_components(q: Distribution, name: str) -> tuple[Tensor, Tensor]:
    """The means and standard deviations ``(K, D)`` of the encoder's posteriors of K
    pseudo-inputs, the components of a VampPrior's mixture."""
    if not (isinstance(q, Independent) and isinstance(q.base_dist, Normal)):
        raise ConfigError(
            f"model.prior={name} needs a diagonal Gaussian posterior (model.posterior=gaussian, "
            f"model.flow=none); this encoder returns {type(q).__name__}"
        )
    return q.base_dist.loc, q.base_dist.scale


class ClassVampPrior(nn.Module):
    """p(z|y): a VampPrior per class (``model.prior=class-vamp``), for a conditional model
    (``model.conditional=true``, such as M2).

    ``p(z|y) = 1/K sum_k q(z | u_{y,k}, y)``: K learned pseudo-inputs of each class, passed
    through the model's own encoder with their class's label (the VAE hands the encoder
    over, as for the VampPrior). ``given(labels, encoder)`` is p(z|y) for one-hot label
    rows; a soft row weighs the classes' mixtures by its entries, ``sum_c y_c p(z|c)``.
    ``forward`` is p(z), the uniform mixture over the classes, which sampling without a
    label and the unconditional views read. Both are one :class:`DiagonalGaussianMixture`
    over the C K encoded pseudo-inputs with weights y_c / K per row: the log-densities of
    B examples under all C K components are the mixture's two matrix products, of which
    one-hot rows then read their own class's K columns (a soft row weighs them all). The
    encoder passes over the C K pseudo-inputs once per call. The options are the VampPrior's, per
    class: ``init="data"`` starts each class's pseudo-inputs from K labelled training
    examples of that class (the trainer hands them to :meth:`init_from_data`).

    Example:
        >>> from vaekit.config import ModelConfig
        >>> from vaekit.model import build_model
        >>> cfg = ModelConfig(latent_dim=2, conditional=True, prior={"name": "class-vamp", "components": 4})
        >>> model = build_model(cfg, (1, 4, 4), num_classes=3)
        >>> model.prior_given(torch.tensor([0, 2])).log_prob(torch.zeros(2)).shape
        torch.Size([2])
    """

    @dataclass
    class Options(VampPrior.Options):  # clip, lr_scale and the checks: the VampPrior's
        # Pseudo-inputs K of each class (C K in all: 50 of each of 10 classes is the
        # VampPrior's 500 of Tomczak & Welling's MNIST setting).
        components: int = 50
        # Where the pseudo-inputs start: noise (0.05 + 0.01 N(0, 1) per element, as the
        # VampPrior's) | data (K labelled training examples of each class, drawn at random,
        # seeded by train.seed, plus 0.01 N(0, 1); with fewer than K labels of a class,
        # drawn with replacement).
        init: str = "noise"

    abilities = PriorAbilities(
        needs_gaussian_posterior=True, learned=True, temperature=True, per_class=True
    )

    @staticmethod
    def label(o: ClassVampPrior.Options) -> str:
        return f"class-vamp{o.components}"

    def __init__(
        self,
        latent_dim: int,
        components: int = 50,
        init: str = "noise",
        clip: bool = False,
        lr_scale: float = 1.0,
        *,
        num_classes: int = 0,
        data_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(
                "model.prior=class-vamp is one VampPrior per class: it needs a conditional "
                "model (model.conditional=true) on labelled data"
            )
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.components = components
        self.init = init
        self.clip = clip
        self.lr_scale = lr_scale
        # Class-major: the pseudo-inputs of class c are rows c K .. (c + 1) K - 1.
        shape = (num_classes * components, *data_shape)
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(shape))

    @torch.no_grad()
    def init_from_data(
        self, x: Tensor, generator: torch.Generator, labels: Tensor | None = None
    ) -> None:
        """With ``init="data"``: the pseudo-inputs of each class c become K of the training
        examples ``x`` whose label is c (drawn without replacement where there are K, with
        it otherwise; hidden labels, -1, are none) plus 0.01 N(0, 1) noise, all from
        ``generator`` (a CPU one); otherwise nothing changes."""
        if self.init != "data":
            return
        if labels is None:
            raise DataError(
                "model.prior={name: class-vamp, init: data} starts each class's pseudo-inputs "
                "from training examples of that class, but these data have no labels: use "
                "init: noise"
            )
        u, k = self.pseudo_inputs, self.components
        labels = labels.reshape(-1).cpu()
        rows = []
        for c in range(self.num_classes):
            mine = torch.nonzero(labels == c).reshape(-1)
            n = len(mine)
            if n == 0:
                raise DataError(
                    f"model.prior={{name: class-vamp, init: data}} starts the pseudo-inputs of "
                    f"each class from its labelled training examples, but class {c} has none "
                    "among those the trainer reads: keep labels of every class (data.labels) "
                    "or use init: noise"
                )
            pick = (
                torch.randperm(n, generator=generator)[:k]
                if n >= k
                else torch.randint(n, (k,), generator=generator)
            )
            rows.append(mine[pick])
        chosen = torch.cat(rows).to(x.device)
        noise = torch.randn(u.shape, generator=generator, dtype=u.dtype)
        u.copy_(x[chosen].reshape(u.shape).to(u.dtype) + 0.01 * noise.to(u.device))

    def lr_scales(self) -> dict[str, float]:
        """Factors on the learning rate of this module's own parameters, by name."""
        return {"pseudo_inputs": self.lr_scale}

    def _components(self, encoder: Callable[..., Distribution] | None) -> tuple[Tensor, Tensor]:
        """Every class's encoded pseudo-inputs, class-major: means and scales ``(C K, D)``."""
        if encoder is None:
            raise ValueError(
                "the class VampPrior is built from the encoder: ask the VAE for it "
                "(model.prior_given(y), model.prior)"
            )
        u = self.pseudo_inputs.clamp(0.0, 1.0) if self.clip else self.pseudo_inputs
        classes = torch.arange(self.num_classes, device=u.device)
        return _gaussian_components(
            encoder(u, classes.repeat_interleave(self.components)), "class-vamp"
        )

    def given(
        self, labels: Tensor, encoder: Callable[..., Distribution] | None = None
    ) -> Distribution:
        """p(z|y) for label rows ``(..., num_classes)``: batch shape ``labels.shape[:-1]``."""
        if labels.shape[-1:] != (self.num_classes,):
            raise DataError(
                f"label rows must have one entry per class ({self.num_classes}), got shape "
                f"{tuple(labels.shape)}"
            )
        loc, scale = self._components(encoder)
        w = labels.to(loc.dtype)
        # One-hot rows (class indices: the objectives' case) read only their class's
        # components. (On an accelerator the check waits for it once, as the labels'
        # range check of the encoder does.)
        if bool((((w == 0) | (w == 1)).all() & (w.sum(-1) == 1).all()).item()):
            return _OwnClassMixture(w.argmax(-1), self.components, loc, scale)
        # log y_c for each of class c's K components (-inf where y_c = 0; the where keeps
        # the gradient of a soft row finite there).
        log_w = torch.where(w > 0, w.clamp_min(torch.finfo(w.dtype).tiny).log(), -math.inf)
        logits = log_w.repeat_interleave(self.components, dim=-1)
        return DiagonalGaussianMixture(logits, loc, scale)

    def forward(self, encoder: Callable[..., Distribution] | None = None) -> Distribution:
        loc, scale = self._components(encoder)
        return DiagonalGaussianMixture(torch.zeros_like(loc[:, 0]), loc, scale)


def tempered(dist: Distribution, temperature: float) -> Distribution:
    """``dist`` with its spread scaled by ``temperature`` (T): sampling at a temperature.

    A Gaussian's standard deviation is multiplied by T; a mixture of Gaussians keeps its
    weights and means and scales each component's spread, z = mu_k + T (z0 - mu_k) for a
    draw z0 of component k. Another distribution may say what its temperature means by
    a ``tempered(t)`` method; without one, any T but 1 is refused.

    Example:
        >>> p = tempered(StandardNormalPrior(2)(), 0.5)
        >>> p.stddev.tolist()
        [0.5, 0.5]
    """
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ConfigError(f"the temperature must be a positive number, got {temperature!r}")
    if t == 1.0:
        return dist
    if isinstance(dist, TemperedDistribution):
        return dist.tempered(t)
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        base = dist.base_dist
        return Independent(
            Normal(base.loc, base.scale * t, validate_args=False),
            dist.reinterpreted_batch_ndims,
            validate_args=False,
        )
    if isinstance(dist, Normal):
        return Normal(dist.loc, dist.scale * t, validate_args=False)
    if isinstance(dist, MultivariateNormal):
        return MultivariateNormal(dist.loc, scale_tril=dist.scale_tril * t, validate_args=False)
    if isinstance(dist, MixtureSameFamily):
        comps = dist.component_distribution
        if isinstance(dist, DiagonalGaussianMixture):
            return DiagonalGaussianMixture(
                dist.mixture_distribution.logits, dist.component_loc, dist.component_scale * t
            )
        return MixtureSameFamily(dist.mixture_distribution, tempered(comps, t), validate_args=False)
    raise ConfigError(
        f"this prior ({type(dist).__name__}) has no temperature: it is defined for Gaussian "
        "priors and mixtures of Gaussians (or a distribution with a tempered(t) method); "
        "sample at temperature 1, or from a fitted sampler (--sampler gmm)"
    )

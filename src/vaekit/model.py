"""The VAE: one class that composes encoder, posterior, prior, decoder and likelihood.

Every model the library offers (VAE, beta-VAE, conditional VAE, plain autoencoder,
flows, richer priors) is this class with different parts; the objective decides how
it is trained.

Example:
    >>> from vaekit.config import ModelConfig
    >>> model = build_model(ModelConfig(latent_dim=2), data_shape=(1, 8, 8))
    >>> q = model.encode(torch.rand(5, 1, 8, 8))
    >>> z = q.rsample((3,))            # (S, B, D) = (3, 5, 2)
    >>> model.decode(z).batch_shape    # p(x|z) for every sample
    torch.Size([3, 5])
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.config import ModelConfig
from vaekit.data.core import DataError
from vaekit.distributions.likelihoods import LikelihoodHead
from vaekit.errors import ConfigError
from vaekit.parts import Composition, LikelihoodAbilities, PosteriorAbilities, PriorAbilities

__all__ = [
    "Encoder",
    "Decoder",
    "VAE",
    "build_model",
    "compose",
    "network_precision",
    "check_part_shapes",
    "NOT_CONDITIONAL",
]

# The dtype the encoder and decoder networks compute in (None: their parameters' own).
_NETWORK_DTYPE: ContextVar[torch.dtype | None] = ContextVar("vaekit_network_dtype", default=None)


@contextmanager
def network_precision(dtype: torch.dtype | None) -> Iterator[None]:
    """Run the encoder and decoder *networks* in ``dtype`` (torch.bfloat16) inside the block.

    Only the networks' matrix products and convolutions go to the lower precision (by
    autocast); their outputs come back as float32 before any posterior, prior, flow or
    likelihood sees them, so every log-density is computed in float32. ``None`` is a
    no-op. The trainer uses it for ``train.precision=bf16``; evaluation never does.

    Example:
        >>> model = build_model(ModelConfig(latent_dim=2), data_shape=(1, 8, 8))
        >>> with network_precision(torch.bfloat16):
        ...     q = model.encode(torch.rand(5, 1, 8, 8))
        >>> q.mean.dtype
        torch.float32
    """
    token = _NETWORK_DTYPE.set(dtype)
    try:
        yield
    finally:
        _NETWORK_DTYPE.reset(token)


_CONTEXT: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _takes_context(net: nn.Module) -> bool:
    """Whether ``net.forward`` takes a second positional argument (the label context)."""
    known = _CONTEXT.get(net)
    if known is None:
        try:
            params = list(inspect.signature(net.forward).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        known = len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
        _CONTEXT[net] = known
    return known


def _run_net(net: nn.Module, x: Tensor, ctx: Tensor | None) -> Tensor:
    # A network's contract is forward(x, ctx); a module whose forward takes x alone (an
    # nn.Sequential handed to vaekit.compose) is called with x when there is no label.
    args = (x, ctx) if ctx is not None or _takes_context(net) else (x,)
    dtype = _NETWORK_DTYPE.get()
    if dtype is None:
        out: Tensor = net(*args)
        return out
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        out = net(*args)
    return out.float()


NOT_CONDITIONAL = (
    "this model is not conditional (trained with model.conditional=false): "
    "it takes no labels, so drop y (--label)"
)


def _one_hot(y: Tensor | None, num_classes: int) -> Tensor | None:
    """The network's label context: class indices ``(...,)`` or one-hot (or soft) rows
    ``(..., num_classes)`` -> float one-hot rows; None for an unconditional model, which
    ignores labels (the trainer passes a labelled dataset's y to every model)."""
    if num_classes == 0:
        return None
    if y is None:
        raise DataError(
            "this is a conditional model: pass the labels y as well "
            f"(class indices 0..{num_classes - 1} or one-hot rows)"
        )
    y = torch.as_tensor(y)
    if y.dim() >= 2 and y.shape[-1] == num_classes:
        return y.float()  # one-hot (or soft) rows, of any dtype
    if y.dtype.is_floating_point and y.numel() and not bool((y == y.round()).all()):
        raise DataError(
            f"labels must be class indices 0..{num_classes - 1} or one-hot rows of length "
            f"{num_classes}, got non-integer values of shape {tuple(y.shape)}"
        )
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"labels must be integers in 0..{num_classes - 1}, got range {int(y.min())}..{int(y.max())}"
        )
    return F.one_hot(y, num_classes).float()


class Encoder(nn.Module):
    """Network + posterior head: ``forward(x, y=None)`` returns q(z | x[, y])."""

    def __init__(self, net: nn.Module, head: nn.Module, num_classes: int = 0) -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.num_classes = num_classes

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        ctx = _one_hot(y, self.num_classes)
        dist: Distribution = self.head(_run_net(self.net, x, ctx))
        return dist


class Decoder(nn.Module):
    """Network + likelihood head: ``forward(z, y=None)`` returns p(x | z[, y]).

    ``z`` may have any leading dimensions (for example ``(S, B, D)``); the returned
    distribution has those as its batch shape and the data shape as its event.
    """

    def __init__(
        self,
        net: nn.Module,
        head: LikelihoodHead,
        data_shape: Sequence[int],
        num_classes: int = 0,
        reads: int | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        # The first ``reads`` latent units are its input (a hierarchy's z_1, or z_1 and
        # z_2, lead its latent vector); None: all of them.
        self.reads = reads

    def forward(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        batch = z.shape[:-1]
        if self.reads is not None:
            z = z[..., : self.reads]
        ctx = _one_hot(y, self.num_classes)
        if ctx is not None:
            ctx = ctx.expand(*batch, ctx.shape[-1]).reshape(-1, ctx.shape[-1])
        params = _run_net(self.net, z.reshape(-1, z.shape[-1]), ctx)
        # (..., params_per_element, *data_shape): the head's k raw outputs per element.
        dist: Distribution = self.head(params.reshape(*batch, -1, *self.data_shape))
        return dist


class VAE(nn.Module):
    """A latent-variable model p(z) p(x|z) with an amortised posterior q(z|x).

    Attributes:
        encoder: x[, y] -> q(z | x[, y])
        decoder: z[, y] -> p(x | z[, y])
        prior_module: (encoder) -> p(z); the encoder is passed, not stored, because the
            VampPrior builds p(z) from it and weights must be registered once
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        prior: nn.Module,
        latent_dim: int,
        data_shape: Sequence[int],
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior_module = prior
        self.latent_dim = latent_dim
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        # What the parts can do (a density, a factorised prior, ...): build_model fills it
        # in from the registry; for parts given as modules, their classes' ``abilities``.
        self.composition = Composition(
            posterior=getattr(encoder.head, "abilities", PosteriorAbilities()),
            prior=getattr(prior, "abilities", PriorAbilities()),
            likelihood=getattr(decoder.head, "abilities", LikelihoodAbilities()),
            objective=None,
            conditional=num_classes > 0,
        )
        # The config it was built from (build_model, compose): fit() records it in config.json.
        self.config: ModelConfig | None = None

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def prior(self) -> Distribution:
        """p(z) as a Distribution with event shape ``(latent_dim,)``.

        With several stochastic layers (a posterior part with ``joint_prior``) this is
        the joint p(z_L) prod p(z_l | z_{l+1}), and ``prior_module`` (``model.prior``) is
        the top layer's p(z_L), built from the top layer's posterior where it needs one.
        """
        joint = getattr(self.encoder.head, "joint_prior", None)
        if joint is None:
            dist: Distribution = self.prior_module(self.encoder)
            return dist
        top: Distribution = self.prior_module(self._encode_top)
        out: Distribution = joint(top)
        return out

    def prior_parameters(self) -> list[nn.Parameter]:
        """The prior's parameters: the prior part's and, with several stochastic layers,
        those of the conditional priors p(z_l | z_{l+1}) that the posterior part holds."""
        own = getattr(self.encoder.head, "prior_parameters", None)
        return list(self.prior_module.parameters()) + (list(own()) if own is not None else [])

    def _encode_top(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """q(z_L | x): the top layer's posterior of a hierarchy (what a VampPrior mixes)."""
        top: Distribution = self.encoder(x, y).top
        return top

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """q(z | x[, y]): batch shape ``(N,)``, event ``(latent_dim,)``."""
        return self.encoder(x.reshape(x.shape[0], *self.data_shape), y)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x | z[, y]): batch shape ``z.shape[:-1]``, event = the data shape."""
        return self.decoder(z, y)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean of p(x | z) at the posterior mean of z (for discrete codes, at the most
        probable code: the mean of one-hot rows is no code)."""
        return self.decode(self.point(self.encode(x, y)), y).mean

    def point(self, q: Distribution) -> Tensor:
        """The one point of a posterior that vaekit shows and decodes: the mean of z, or for
        discrete codes the most probable code (the mean of one-hot rows is no code).

        Example:
            >>> from vaekit.config import ModelConfig, part
            >>> m = build_model(ModelConfig(latent_dim=4, posterior=part("gumbel", categories=2)), (1, 4, 4))
            >>> m.point(m.encode(torch.rand(3, 1, 4, 4))).sum(-1)   # two one-hot pairs per row
            tensor([2., 2., 2.])
        """
        return q.mode if self.composition.posterior.discrete else q.mean

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Tensor | int | None = None,
        mean: bool = True,
        temperature: float = 1.0,
        z: Tensor | None = None,
    ) -> Tensor:
        """``n`` draws from the model: z ~ p(z), then the mean of (or a sample from) p(x|z).

        For a conditional model, ``y`` is one class for all draws, one label per draw, or
        None: the draws cycle through the classes (0, 1, ..., C-1, 0, ...). An
        unconditional model refuses a label. ``temperature`` below 1 scales the prior's
        spread (every layer's in a hierarchy; :func:`~vaekit.distributions.hierarchical.tempered_sample`);
        ``z`` given (from a post-hoc sampler, :mod:`vaekit.samplers`) replaces the prior draws.
        """
        from vaekit.distributions.hierarchical import tempered_sample

        if not self.conditional and y is not None:
            raise DataError(NOT_CONDITIONAL)
        if z is None:
            z = tempered_sample(self.prior, (n,), temperature)
        labels: Tensor | None = None
        if self.conditional:
            if y is None:
                labels = torch.arange(n, device=z.device) % self.num_classes
            else:
                labels = torch.as_tensor(y, device=z.device)
                if labels.dim() == 0:
                    labels = labels.expand(n)
        px = self.decode(z, labels)
        return px.mean if mean else px.sample()


def build_model(cfg: ModelConfig, data_shape: Sequence[int], num_classes: int = 0) -> VAE:
    """Build a VAE from its config and the shape of one example.

    Every part comes from its registry (:mod:`vaekit.registry`) or, for a
    ``module:Class`` name, from the user's module. ``num_classes`` is used only when
    ``cfg.conditional`` is set. The model keeps its config (``model.config``).
    """
    return _assemble(cfg, data_shape, num_classes, {})


def _assemble(
    cfg: ModelConfig,
    data_shape: Sequence[int],
    num_classes: int,
    given: dict[str, nn.Module],
) -> VAE:
    """The VAE of ``cfg``, with the modules in ``given`` (by field: encoder, decoder,
    posterior, flow, prior, likelihood) in place of the ones the config names."""
    from vaekit.config import composition
    from vaekit.distributions.flows import FlowPosterior
    from vaekit.registry import FLOWS, LIKELIHOODS, NETWORKS, POSTERIORS, PRIORS

    data_shape = tuple(int(s) for s in data_shape)
    classes = (cfg.num_classes or num_classes) if cfg.conditional else 0
    if cfg.conditional and classes < 2:
        raise ConfigError(
            "model.conditional=true needs labels: use a labelled dataset or set model.num_classes"
        )
    latent = cfg.latent_dim
    context = {
        "data_shape": data_shape,
        "num_classes": classes,
        # The encoder network's last hidden width and activation, for heads that read them.
        "encoder_width": (getattr(cfg.encoder.options, "hidden", None) or [None])[-1],
        "encoder_activation": getattr(cfg.encoder.options, "activation", "relu"),
    }
    # (`x if x is not None else ...`, never `x or ...`: a module with a __len__, such as an
    # nn.Sequential, is truthy only when it is not empty.)

    def part(key: str, build: Any) -> Any:
        module = given.get(key)
        return module if module is not None else build()

    head = part(
        "posterior",
        lambda: POSTERIORS.get(cfg.posterior.name).build(cfg.posterior.options, latent, **context),
    )
    if cfg.flow is not None:
        flow_cfg = cfg.flow

        def one_flow(units: int) -> Any:
            return FLOWS.get(flow_cfg.name).build(flow_cfg.options, units, **context)

        if callable(getattr(head, "attach_flows", None)):
            # A hierarchy: one flow of the named kind on each layer below the top.
            if given.get("flow") is not None:
                raise ConfigError(
                    "a hierarchy takes one flow per layer below the top, built from "
                    "model.flow: name the flow class (model.flow: module:Class) instead "
                    "of passing a flow module"
                )
            head.attach_flows(one_flow)
        else:
            head = FlowPosterior(head, part("flow", lambda: one_flow(latent)))
    # Several stochastic layers: z is every layer's units; the prior part is over the top
    # layer and the decoder reads the bottom layer(s), a prefix of z.
    total = int(getattr(head, "latent_dim", latent))
    reads = int(getattr(head, "decoder_dim", total))
    prior_dim = int(getattr(head, "prior_dim", total))
    # A posterior part that brings its own networks (a convolutional hierarchy) makes them.
    own_encoder = getattr(head, "encoder_network", None)
    own_decoder = getattr(head, "decoder_network", None)
    enc_part = NETWORKS.get(cfg.encoder.name)
    enc_net = part(
        "encoder",
        lambda: (
            own_encoder()
            if own_encoder is not None
            else enc_part.build(
                cfg.encoder.options, data_shape, head.in_features, classes, role="encoder"
            )
        ),
    )
    likelihood = part(
        "likelihood",
        lambda: LIKELIHOODS.get(cfg.likelihood.name).build(
            cfg.likelihood.options, data_shape, **context
        ),
    )
    per_element = int(getattr(likelihood, "params_per_element", 1))
    out_features = per_element * int(math.prod(data_shape))
    dec_net = given.get("decoder")
    if dec_net is None and own_decoder is not None:
        dec_net = own_decoder(per_element)
    elif dec_net is None:
        if cfg.decoder is None:
            dec_part, dec_options = enc_part, enc_part.mirror(cfg.encoder.options)
        else:
            dec_part, dec_options = NETWORKS.get(cfg.decoder.name), cfg.decoder.options
        dec_net = dec_part.build(
            dec_options, reads, data_shape, out_features, classes, role="decoder"
        )
    # Priors over a discrete posterior's codes are sized by its positions and codes.
    context["code_space"] = getattr(head, "space", None)
    prior = part(
        "prior", lambda: PRIORS.get(cfg.prior.name).build(cfg.prior.options, prior_dim, **context)
    )
    model = VAE(
        Encoder(enc_net, head, classes),
        Decoder(dec_net, likelihood, data_shape, classes, None if reads == total else reads),
        prior,
        total,
        data_shape,
        classes,
    )
    parts = composition(cfg)
    # Modules given as objects say what they can do themselves (their ``abilities``).
    model.composition = replace(
        parts,
        posterior=model.composition.posterior if "posterior" in given else parts.posterior,
        prior=model.composition.prior if "prior" in given else parts.prior,
        likelihood=model.composition.likelihood if "likelihood" in given else parts.likelihood,
    )
    if cfg.weight_init == "he":
        from vaekit.nn import he_init

        he_init(model)
    model.config = cfg
    return model


def compose(
    encoder: nn.Module | str | dict[str, Any] = "mlp",
    decoder: nn.Module | str | dict[str, Any] | None = None,
    *,
    latent_dim: int,
    data_shape: Sequence[int],
    posterior: nn.Module | str | dict[str, Any] = "gaussian",
    flow: nn.Module | str | dict[str, Any] | None = None,
    prior: nn.Module | str | dict[str, Any] = "normal",
    likelihood: nn.Module | str | dict[str, Any] = "bernoulli",
    conditional: bool = False,
    num_classes: int = 0,
) -> VAE:
    """A VAE from your own modules and vaekit's parts, without a config file.

    Each part is a registered name (``"vamp"``), a name with options
    (``{"name": "vamp", "components": 50}``), or your own ``nn.Module``: an encoder network
    mapping x ``(B, *data_shape)`` to the features the posterior reads (``2 * latent_dim``
    for the Gaussian), a decoder network mapping z ``(B, latent_dim)`` to
    ``params_per_element * prod(data_shape)`` outputs (1 per pixel for the Bernoulli), a
    prior whose ``forward(encoder=None)`` returns p(z), and so on (see the README's
    contracts). Train it with :func:`vaekit.fit`; a run of it is loaded by building the same
    model again and passing it: ``vaekit.load(RUN, model=model)``.

    Example:
        >>> enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> model = compose(enc, {"name": "mlp", "hidden": [32]}, latent_dim=2, data_shape=(1, 8, 8))
        >>> model.encode(torch.rand(3, 1, 8, 8)).rsample().shape
        torch.Size([3, 2])
    """
    from vaekit.config import ConfigError
    from vaekit.parts import PYTHON_PART

    given: dict[str, nn.Module] = {}
    named: dict[str, Any] = {}
    slots = {
        "encoder": encoder,
        "decoder": decoder,
        "posterior": posterior,
        "flow": flow,
        "prior": prior,
        "likelihood": likelihood,
    }
    for key, value in slots.items():
        if isinstance(value, nn.Module):
            given[key] = value
            cls = type(value)
            named[key] = f"{PYTHON_PART}{cls.__module__}.{cls.__qualname__}"
        else:
            named[key] = value
    if "encoder" in given and "decoder" not in given and decoder is None:
        raise ConfigError(
            "compose(): an encoder module of yours needs a decoder too (a module, or a "
            "registered network such as {'name': 'mlp', 'hidden': [512]})"
        )
    cfg = ModelConfig(
        latent_dim=latent_dim, conditional=conditional, num_classes=num_classes, **named
    )
    model = _assemble(cfg, data_shape, num_classes, given)
    _probe(model)
    return model


def check_part_shapes(model: VAE, x: Tensor, y: Tensor | None = None) -> None:
    """The shapes every part's distribution must have, checked on a batch ``x``: q(z|x) of
    batch ``(B,)`` and event ``(latent_dim,)``, p(z) of event ``(latent_dim,)``, p(x|z) of
    the data shape. A part that breaks them is a ConfigError naming it (``model.prior=...``),
    where the objective would fail later on a mismatch that blames the data, or, when the
    batch size happens to broadcast with the latent size, only in training.

    Example:
        >>> from vaekit.config import ModelConfig
        >>> check_part_shapes(build_model(ModelConfig(latent_dim=2), (1, 4, 4)), torch.rand(3, 1, 4, 4))
    """
    from vaekit.config import ConfigError

    cfg = model.config
    b, d = len(x), model.latent_dim

    def named(key: str) -> str:
        pc = getattr(cfg, key, None) if cfg is not None else None
        return f"model.{key}={pc.name}" if pc is not None else f"the {key}"

    with torch.no_grad():
        q = model.encode(x, y)
        if tuple(q.batch_shape) != (b,) or tuple(q.event_shape) != (d,):
            raise ConfigError(
                f"{named('posterior')} gives q(z|x) of batch shape {tuple(q.batch_shape)} and event "
                f"shape {tuple(q.event_shape)} for {b} examples; it must be batch ({b},) and event "
                f"({d},) (latent_dim {d})"
            )
        prior = model.prior
        if tuple(prior.event_shape) != (d,):
            raise ConfigError(
                f"{named('prior')} gives p(z) of event shape {tuple(prior.event_shape)}, but z has "
                f"{d} units (latent_dim): its forward must return a distribution over vectors of "
                f"{d} (e.g. Independent(Normal(loc, scale), 1) with loc of shape ({d},))"
            )
        px = model.decode(q.rsample(), y)  # as the objectives draw z (sample() checks NaN)
        if tuple(px.event_shape) != tuple(model.data_shape):
            raise ConfigError(
                f"{named('likelihood')} gives p(x|z) of event shape {tuple(px.event_shape)}, but "
                f"the data have shape {tuple(model.data_shape)}: its distribution's event must be "
                "one example"
            )


def _probe(model: VAE) -> None:
    """One pass on two zero examples, so that modules that do not fit together fail here
    with both shapes named, not inside training."""
    from vaekit.config import ConfigError

    x = torch.zeros(2, *model.data_shape)
    y = torch.zeros(2, dtype=torch.long) if model.conditional else None
    head = model.encoder.head
    try:
        with torch.no_grad():
            features = _run_net(model.encoder.net, x, _one_hot(y, model.num_classes))
            if features.shape[-1] != head.in_features:
                raise ConfigError(
                    f"the encoder network gives {features.shape[-1]} features per example, but "
                    f"the posterior reads {head.in_features} (for the Gaussian: 2 * latent_dim)"
                )
            z = model.encode(x, y).rsample()
            out = _run_net(model.decoder.net, z, _one_hot(y, model.num_classes))
            per_element = int(getattr(model.decoder.head, "params_per_element", 1))
            want = per_element * int(math.prod(model.data_shape))
            if out[0].numel() != want:
                raise ConfigError(
                    f"the decoder network gives {out[0].numel()} values per example, but the "
                    f"likelihood needs {want} ({per_element} per "
                    f"element of {tuple(model.data_shape)})"
                )
            model.decode(z, y)
            model.prior.log_prob(z)
            check_part_shapes(model, x, y)
    except ConfigError:
        raise
    except (RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(f"compose(): the parts do not fit together: {e}") from None

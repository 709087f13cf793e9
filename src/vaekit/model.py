"""Building the VAE (:mod:`vaekit.vae`) from a config: every part through its registry.

Example:
    >>> import torch
    >>> from vaekit.config import ModelConfig
    >>> model = build_model(ModelConfig(latent_dim=2), data_shape=(1, 8, 8))
    >>> q = model.encode(torch.rand(5, 1, 8, 8))
    >>> z = q.rsample((3,))            # (S, B, D) = (3, 5, 2)
    >>> model.decode(z).batch_shape    # p(x|z) for every sample
    torch.Size([3, 5])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.abilities import CodePosterior, LayeredPosterior, LayerFlows, OwnNetworks
from vaekit.config import ModelConfig, composition
from vaekit.distributions.flows import FlowPosterior
from vaekit.errors import ConfigError
from vaekit.nn import he_init
from vaekit.objectives import build_objective
from vaekit.parts import PYTHON_PART
from vaekit.registry import FLOWS, LIKELIHOODS, NETWORKS, POSTERIORS, PRIORS
from vaekit.vae import (
    NOT_CONDITIONAL,
    VAE,
    Decoder,
    Encoder,
    _one_hot,
    _run_net,
    network_precision,
)

__all__ = [
    "Encoder",
    "Decoder",
    "VAE",
    "build_model",
    "build_objective",
    "compose",
    "network_precision",
    "check_part_shapes",
    "NOT_CONDITIONAL",
]


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
    data_shape = tuple(int(s) for s in data_shape)
    classes = (cfg.num_classes or num_classes) if cfg.conditional else 0
    if cfg.conditional and classes < 2:
        raise ConfigError(
            "model.conditional=true needs labels: use a labelled dataset or set model.num_classes"
        )
    if cfg.classifier is not None and not cfg.conditional:
        raise ConfigError(
            "model.classifier is q(y|x) of a model whose encoder and decoder take the label: "
            "set model.conditional=true as well (or model.classifier=none)"
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

        if isinstance(head, LayerFlows):
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
    if isinstance(head, LayeredPosterior):
        total, reads, prior_dim = head.latent_dim, head.decoder_dim, head.prior_dim
    else:
        total = reads = prior_dim = latent
    # A posterior part that brings its own networks (a convolutional hierarchy) makes them.
    own = head if isinstance(head, OwnNetworks) else None
    enc_part = NETWORKS.get(cfg.encoder.name)
    enc_net = part(
        "encoder",
        lambda: (
            own.encoder_network()
            if own is not None
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
    if dec_net is None and own is not None:
        dec_net = own.decoder_network(per_element)
    elif dec_net is None:
        if cfg.decoder is None:
            dec_part, dec_options = enc_part, enc_part.mirror(cfg.encoder.options)
        else:
            dec_part, dec_options = NETWORKS.get(cfg.decoder.name), cfg.decoder.options
        dec_net = dec_part.build(
            dec_options, reads, data_shape, out_features, classes, role="decoder"
        )
    # Priors over a discrete posterior's codes are sized by its positions and codes.
    context["code_space"] = head.space if isinstance(head, CodePosterior) else None
    prior = part(
        "prior", lambda: PRIORS.get(cfg.prior.name).build(cfg.prior.options, prior_dim, **context)
    )
    classifier = None
    if cfg.classifier is not None:
        # q(y|x) of a semi-supervised model (M2): a network from x to one logit per class.
        cls_cfg = cfg.classifier
        classifier = part(
            "classifier",
            lambda: NETWORKS.get(cls_cfg.name).build(
                cls_cfg.options, data_shape, classes, 0, role="encoder"
            ),
        )
    model = VAE(
        Encoder(enc_net, head, classes),
        Decoder(dec_net, likelihood, data_shape, classes, None if reads == total else reads),
        prior,
        total,
        data_shape,
        classes,
        classifier,
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
    prior whose ``forward(encoder=None)`` returns p(z), and so on (see the
    contracts in docs/guides/parts-of-your-own.md). Train it with :func:`vaekit.fit`; a run of it is loaded by building the same
    model again and passing it: ``vaekit.load(RUN, model=model)``.

    Example:
        >>> enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> model = compose(enc, {"name": "mlp", "hidden": [32]}, latent_dim=2, data_shape=(1, 8, 8))
        >>> model.encode(torch.rand(3, 1, 8, 8)).rsample().shape
        torch.Size([3, 2])
    """
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

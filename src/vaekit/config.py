"""Experiment configuration: dataclasses, YAML/TOML/JSON files, dotted overrides.

A config is four sections, one per stage of the data flow::

    data:      which dataset and how to preprocess it
    model:     the five parts (networks, posterior, prior, likelihood, conditioning)
    objective: the training objective (ELBO with beta, Monte Carlo samples, AE loss)
    train:     optimiser, epochs, batch size, seed, device

Example:
    >>> cfg = load_config(None, overrides=["model.latent_dim=4", "train.epochs=3"])
    >>> cfg.model.latent_dim, cfg.train.epochs
    (4, 3)

Every mistake (unknown key, wrong type, bad value) raises :class:`ConfigError` with
a message that names the key and says what would be accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

__all__ = [
    "ConfigError",
    "NetConfig",
    "DataConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
]


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says how to fix it."""


@dataclass
class NetConfig:
    """A network: ``mlp`` (widths + activation) or ``conv`` (channels)."""

    type: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512])
    activation: str = "relu"
    # Convolutional networks: channels of each stride-2 stage.
    channels: list[int] = field(default_factory=lambda: [32, 64])


@dataclass
class DataConfig:
    """Dataset name or path, and preprocessing."""

    name: str = "digits"
    # none | static (one fixed Bernoulli draw) | threshold (x > 0.5) | dynamic (redrawn every batch)
    binarize: str = "none"
    # Fraction of train held out for validation when the dataset has no validation split.
    valid_fraction: float = 0.0
    # Use at most this many training examples (0 = all); handy for quick runs.
    limit: int = 0


@dataclass
class ModelConfig:
    """The parts of the VAE (see DESIGN.md): encoder + posterior, prior, decoder + likelihood."""

    latent_dim: int = 2
    encoder: NetConfig = field(default_factory=NetConfig)
    # When left empty, the decoder mirrors the encoder's widths.
    decoder: NetConfig | None = None
    # gaussian (diagonal, reparameterized) | point (deterministic code: the plain autoencoder)
    posterior: str = "gaussian"
    # normal (standard normal)
    prior: str = "normal"
    # bernoulli | gaussian | continuous-bernoulli
    likelihood: str = "bernoulli"
    # Gaussian likelihood: a fixed standard deviation, or "learned" (one per output, from the decoder).
    sigma: float | str = 1.0
    # Conditional VAE: feed the one-hot label to encoder and decoder.
    conditional: bool = False
    # Number of classes for a conditional model; 0 means "take it from the dataset".
    num_classes: int = 0


@dataclass
class ObjectiveConfig:
    """The training objective.

    ``elbo``: negative ELBO, ``recon + beta * kl`` with ``samples`` Monte Carlo samples.
    ``ae``: reconstruction loss only (the plain autoencoder; no divergence term).
    """

    name: str = "elbo"
    beta: float = 1.0
    samples: int = 1
    # auto (analytic where torch registers it, else Monte Carlo) | analytic | mc
    kl: str = "auto"


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    epochs: int = 10
    batch_size: int = 100
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    seed: int = 0
    # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    device: str = "auto"
    eval_batch_size: int = 1000
    # 0 leaves torch's default thread count.
    threads: int = 0
    # Write a checkpoint every this many epochs (the last epoch always writes one).
    checkpoint_every: int = 1
    # How many non-finite steps in a row to tolerate (rolling back each one) before stopping.
    max_bad_steps: int = 10


@dataclass
class Config:
    """A whole experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Free text shown in reports.
    description: str = ""

    def validate(self) -> Config:
        """Check values that types alone cannot; returns self so calls can chain."""
        _choice("data.binarize", self.data.binarize, ["none", "static", "dynamic", "threshold"])
        if not 0.0 <= self.data.valid_fraction < 1.0:
            raise ConfigError(
                f"data.valid_fraction must be in [0, 1), got {self.data.valid_fraction}"
            )
        _nonneg("data.limit", self.data.limit)
        m = self.model
        _positive("model.latent_dim", m.latent_dim)
        for name, net in (("model.encoder", m.encoder), ("model.decoder", m.decoder)):
            if net is None:
                continue
            _choice(f"{name}.type", net.type, ["mlp", "conv"])
            _choice(f"{name}.activation", net.activation, ["relu", "softplus", "tanh", "elu", "gelu", "leaky_relu"])
            for i, w in enumerate(net.hidden):
                _positive(f"{name}.hidden[{i}]", w)
            for i, w in enumerate(net.channels):
                _positive(f"{name}.channels[{i}]", w)
        from vaekit.registry import LIKELIHOODS, POSTERIORS, PRIORS

        _choice("model.posterior", m.posterior, sorted(POSTERIORS))
        _choice("model.prior", m.prior, sorted(PRIORS))
        _choice("model.likelihood", m.likelihood, sorted(LIKELIHOODS))
        if isinstance(m.sigma, str):
            if m.sigma != "learned":
                raise ConfigError(
                    f"model.sigma must be a positive number or 'learned', got {m.sigma!r}"
                )
        elif not m.sigma > 0:
            raise ConfigError(f"model.sigma must be a positive number or 'learned', got {m.sigma}")
        _nonneg("model.num_classes", m.num_classes)
        from vaekit.objectives import OBJECTIVES

        o = self.objective
        _choice("objective.name", o.name, sorted(OBJECTIVES))
        _positive("objective.samples", o.samples)
        if not o.beta >= 0:
            raise ConfigError(f"objective.beta must be >= 0, got {o.beta}")
        _choice("objective.kl", o.kl, ["auto", "analytic", "mc"])
        if m.posterior == "point" and o.name == "elbo":
            raise ConfigError(
                "model.posterior=point has no density, so the ELBO is undefined: "
                "use objective.name=ae for a plain autoencoder"
            )
        t = self.train
        _positive("train.epochs", t.epochs)
        _positive("train.batch_size", t.batch_size)
        _positive("train.eval_batch_size", t.eval_batch_size)
        _choice("train.optimizer", t.optimizer, ["adam", "adamw", "rmsprop", "sgd", "adagrad"])
        if not t.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {t.lr}")
        if t.weight_decay < 0 or t.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be >= 0")
        _nonneg("train.threads", t.threads)
        _positive("train.checkpoint_every", t.checkpoint_every)
        _positive("train.max_bad_steps", t.max_bad_steps)
        if not (t.device in ("auto", "cpu", "cuda", "mps") or t.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps; got {t.device!r}")
        return self


def _choice(key: str, value: Any, choices: list[str]) -> None:
    if value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}{extra}")


def _positive(key: str, value: int) -> None:
    if not value > 0:
        raise ConfigError(f"{key} must be a positive number, got {value}")


def _nonneg(key: str, value: int) -> None:
    if value < 0:
        raise ConfigError(f"{key} must be >= 0, got {value}")


# ---------------------------------------------------------------------------
# dict <-> dataclass with checked types


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON-able data."""
    return dataclasses.asdict(cfg)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        # Try the exact Python type first so that 1.0 stays a float for float | str.
        for arg in sorted(args, key=lambda a: 0 if isinstance(value, a if isinstance(a, type) else ()) else 1):
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1] if errors else f"{key}: bad value {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of settings, got {value!r}")
        return _from_dict(tp, value, key)  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return f
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        if isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a string, got the number {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            extra = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"unknown setting {full!r}.{extra} Known settings here: {', '.join(names)}"
            )
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from nested plain data (as read from YAML/TOML/JSON)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    return _from_dict(Config, data).validate()


def _parse_scalar(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` as YAML (numbers, lists, booleans)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to nested plain data (a copy is returned).

    >>> apply_overrides({"train": {"lr": 0.1}}, ["train.lr=0.01", "model.latent_dim=3"])
    {'train': {'lr': 0.01}, 'model': {'latent_dim': 3}}
    """
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (for example train.lr=0.001), got {item!r}")
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {p!r} is a value, not a section")
            node = nxt
        node[parts[-1]] = _parse_scalar(text)
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into plain data."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist (look in configs/ for examples)")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"could not parse config file {str(p)!r}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections (data, model, objective, train)")
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    data = read_config_file(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data)
    except ConfigError as e:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"{e}{where}") from None

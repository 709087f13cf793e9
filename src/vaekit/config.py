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

import copy
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

from vaekit.errors import VaekitError

__all__ = [
    "ConfigError",
    "NetConfig",
    "DataConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "bundled_configs",
    "find_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
]


class ConfigError(VaekitError, ValueError):
    """A configuration file or value that cannot be used; the message says how to fix it."""


@dataclass
class NetConfig:
    """A network: ``mlp`` (widths + activation) or ``conv`` (channels)."""

    type: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512])
    activation: str = "relu"
    # Convolutional networks: channels of each stride-2 stage, listed from the image side
    # (a decoder uses them in reverse, so give a conv decoder the same list as its encoder).
    channels: list[int] = field(default_factory=lambda: [32, 64])
    # Convolutional networks: residual blocks (two 3x3 convolutions) after each stage.
    blocks: int = 0


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
    # | implicit (noise into the encoder, no density: train with objective.name=avb)
    posterior: str = "gaussian"
    # A normalizing flow on top of the gaussian posterior: none | planar | iaf.
    flow: str = "none"
    # Number of flow steps K.
    flow_length: int = 4
    # IAF: width of each MADE's hidden layers and of the context vector h from the encoder.
    flow_hidden: int = 128
    # Implicit posterior: dimensions of the noise fed to the encoder (0 = latent_dim).
    noise_dim: int = 0
    # normal (standard normal) | mog (learned mixture of Gaussians) | vamp (VampPrior)
    prior: str = "normal"
    # mog: number of Gaussians; vamp: number of pseudo-inputs.
    prior_components: int = 10
    # bernoulli | continuous-bernoulli | gaussian | student-t (real values)
    # | categorical | discretized-logistic (images with `levels` grey levels: 8-bit = 256)
    likelihood: str = "bernoulli"
    # Gaussian / Student-t likelihood: a fixed scale, or "learned" (one per output, from the decoder).
    sigma: float | str = 1.0
    # Student-t likelihood: fixed degrees of freedom, or "learned" (one per column, > 1).
    df: float | str = "learned"
    # categorical / discretized-logistic: number of levels of the data (x in {0, 1/(L-1), ..., 1}).
    levels: int = 256
    # discretized-logistic: mixture components per element (1 = a single logistic).
    likelihood_components: int = 1
    # Conditional VAE: feed the one-hot label to encoder and decoder.
    conditional: bool = False
    # Number of classes for a conditional model; 0 means "take it from the dataset".
    num_classes: int = 0


@dataclass
class ObjectiveConfig:
    """The training objective.

    ``elbo``: negative ELBO, ``recon + beta * kl`` with ``samples`` Monte Carlo samples.
    ``iwae``: the importance-weighted bound with ``samples`` = k (Burda et al. 2016).
    ``avb``: adversarial variational Bayes: a discriminator estimates the KL term.
    ``ae``: reconstruction loss only (the plain autoencoder; no divergence term).
    """

    name: str = "elbo"
    beta: float = 1.0
    samples: int = 1
    # auto (analytic where torch registers it, else Monte Carlo) | analytic | mc
    kl: str = "auto"
    # elbo / avb: KL warm-up; epoch e weighs the KL by beta * min(1, e / warmup_epochs) (0 = off).
    warmup_epochs: int = 0
    # elbo: free bits, nats per latent dimension below which the KL is not pushed down
    # (Kingma et al. 2016); 0 = off.
    free_bits: float = 0.0
    # avb: hidden widths of the discriminator T(x, z).
    discriminator: list[int] = field(default_factory=lambda: [256, 256])
    # iwae: the encoder's gradient estimator: standard, or dreg (doubly reparameterised,
    # Tucker et al. 2019): the same expectation with less variance, which grows with k;
    # with samples = 1 it is "sticking the landing" (Roeder et al. 2017). Gaussian posterior.
    gradient: str = "standard"


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
    # fp32 | bf16: the encoder and decoder networks' matrix products in bfloat16 during
    # training steps (autocast); posteriors, priors, flows, likelihoods and every
    # evaluation stay in float32. About 1.4x faster steps on CPUs with AVX-512 BF16.
    precision: str = "fp32"
    # Learning-rate schedule, a factor on lr by epoch: none | cosine | burda (Burda et al. 2016).
    lr_schedule: str = "none"
    # Write a checkpoint every this many epochs (the last epoch always writes one).
    checkpoint_every: int = 1
    # Keep RUN/best.safetensors: the weights of the epoch with the best validation ELBO
    # (early stopping's model, without stopping). Needs a validation split.
    keep_best: bool = True
    # Early stopping: end the run when the validation score has not improved for this many
    # epochs, counted from the end of the objective's KL warm-up (Tomczak & Welling 2018
    # use 50). 0 = off. Needs keep_best and a validation split.
    patience: int = 0
    # What a step with a non-finite loss or gradient does: skip (drop the update) |
    # rollback (restore the state at the start of the epoch, halve the learning rate) |
    # stop (end training with an error). Non-finite weights are always rolled back.
    nan_policy: str = "skip"
    # Stop when more than this many non-finite steps occur in one epoch.
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
        if not self.data.name.strip():
            raise ConfigError(
                "data.name is empty; name a dataset (digits, mnist, binarized-mnist, ...) or a file"
            )
        m = self.model
        _positive("model.latent_dim", m.latent_dim)
        for name, net in (("model.encoder", m.encoder), ("model.decoder", m.decoder)):
            if net is None:
                continue
            _choice(f"{name}.type", net.type, ["mlp", "conv"])
            _choice(
                f"{name}.activation",
                net.activation,
                ["relu", "softplus", "tanh", "elu", "gelu", "leaky_relu"],
            )
            for i, w in enumerate(net.hidden):
                _positive(f"{name}.hidden[{i}]", w)
            for i, w in enumerate(net.channels):
                _positive(f"{name}.channels[{i}]", w)
            _nonneg(f"{name}.blocks", net.blocks)
        from vaekit.registry import LIKELIHOODS, POSTERIORS, PRIORS

        _choice("model.posterior", m.posterior, sorted(POSTERIORS))
        _choice("model.prior", m.prior, sorted(PRIORS))
        _choice("model.likelihood", m.likelihood, sorted(LIKELIHOODS))
        if isinstance(m.sigma, str):
            if m.sigma != "learned":
                raise ConfigError(
                    f"model.sigma must be a positive number or 'learned', got {_short(m.sigma)}"
                )
        elif not m.sigma > 0:
            raise ConfigError(f"model.sigma must be a positive number or 'learned', got {m.sigma}")
        _nonneg("model.num_classes", m.num_classes)
        _check_parts(m)
        from vaekit.objectives import OBJECTIVES

        o = self.objective
        _choice("objective.name", o.name, sorted(OBJECTIVES))
        _positive("objective.samples", o.samples)
        if not o.beta >= 0:
            raise ConfigError(f"objective.beta must be >= 0, got {o.beta}")
        _choice("objective.kl", o.kl, ["auto", "analytic", "mc"])
        _check_objective(m, o)
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
        _nonneg("train.patience", t.patience)
        if t.patience and not t.keep_best:
            raise ConfigError(
                "train.patience stops on the validation score that train.keep_best tracks; "
                "set train.keep_best=true or train.patience=0"
            )
        _positive("train.max_bad_steps", t.max_bad_steps)
        _choice("train.nan_policy", t.nan_policy, ["skip", "rollback", "stop"])
        _choice("train.lr_schedule", t.lr_schedule, ["none", "cosine", "burda"])
        _choice("train.precision", t.precision, ["fp32", "bf16"])
        if not 0 <= t.seed < 2**32:
            raise ConfigError(f"train.seed must be an integer in [0, 2**32), got {t.seed}")
        if t.threads > 4096:
            raise ConfigError(
                f"train.threads must be at most 4096 (0 = torch's default), got {t.threads}"
            )
        if not (
            t.device in ("auto", "cpu", "cuda", "mps")
            or (t.device.startswith("cuda:") and t.device[5:].isdigit())
        ):
            raise ConfigError(
                f"train.device must be auto, cpu, cuda, cuda:N or mps; got {_short(t.device)}"
            )
        return self


def _check_parts(m: ModelConfig) -> None:
    """Settings of the posterior, prior and likelihood parts, and which of them combine."""
    from vaekit.registry import FLOWS

    _choice("model.flow", m.flow, ["none", *sorted(FLOWS)])
    if m.flow != "none" and m.posterior != "gaussian":
        raise ConfigError(
            f"model.flow={m.flow} transforms the gaussian posterior; set model.posterior=gaussian "
            f"(got {m.posterior!r}) or model.flow=none"
        )
    _positive("model.flow_length", m.flow_length)
    _positive("model.flow_hidden", m.flow_hidden)
    _nonneg("model.noise_dim", m.noise_dim)
    _positive("model.prior_components", m.prior_components)
    if m.prior == "vamp":
        if m.posterior != "gaussian" or m.flow != "none":
            raise ConfigError(
                "model.prior=vamp is a mixture of the encoder's gaussian posteriors: it needs "
                "model.posterior=gaussian and model.flow=none (use model.prior=mog with other posteriors)"
            )
        if m.conditional:
            raise ConfigError(
                "model.prior=vamp passes pseudo-inputs through the encoder without labels, so it cannot "
                "be conditional: set model.conditional=false or use model.prior=mog"
            )
    if m.levels < 2:
        raise ConfigError(f"model.levels must be at least 2 (256 for 8-bit images), got {m.levels}")
    _positive("model.likelihood_components", m.likelihood_components)
    if isinstance(m.df, str):
        if m.df != "learned":
            raise ConfigError(
                f"model.df must be a positive number or 'learned', got {_short(m.df)}"
            )
    elif not m.df > 0:
        raise ConfigError(f"model.df must be a positive number or 'learned', got {m.df}")


def _check_objective(m: ModelConfig, o: ObjectiveConfig) -> None:
    """Objective settings, and which posteriors each objective can train."""
    _nonneg("objective.warmup_epochs", o.warmup_epochs)
    if not o.free_bits >= 0:
        raise ConfigError(
            f"objective.free_bits must be >= 0 (nats per latent dimension), got {o.free_bits}"
        )
    for i, w in enumerate(o.discriminator):
        _positive(f"objective.discriminator[{i}]", w)
    if o.name in ("elbo", "iwae", "avb") and m.posterior == "point":
        raise ConfigError(
            f"model.posterior=point has no density, so the {o.name.upper()} objective is undefined: "
            "use objective.name=ae for a plain autoencoder"
        )
    if o.name in ("elbo", "iwae") and m.posterior == "implicit":
        raise ConfigError(
            f"model.posterior=implicit has no density, so the {o.name.upper()} objective is undefined: "
            "use objective.name=avb (its discriminator estimates the KL term)"
        )
    if o.name == "iwae" and (o.beta != 1.0 or o.warmup_epochs or o.free_bits):
        raise ConfigError(
            "objective.beta, warmup_epochs and free_bits weight the ELBO's KL term; the IWAE bound has "
            "no separate KL term: leave them at 1, 0 and 0 (or use objective.name=elbo)"
        )
    _choice("objective.gradient", o.gradient, ["standard", "dreg"])
    if o.gradient == "dreg" and (o.name != "iwae" or m.posterior != "gaussian" or m.flow != "none"):
        raise ConfigError(
            "objective.gradient=dreg is the IWAE bound's estimator for a Gaussian posterior: it "
            "needs objective.name=iwae, model.posterior=gaussian and model.flow=none (use "
            "objective.samples=1 for the single-sample ELBO)"
        )
    if o.free_bits and o.name != "elbo":
        raise ConfigError(
            f"objective.free_bits applies to objective.name=elbo only, not {o.name!r}"
        )
    if o.name == "elbo" and o.kl == "analytic" and (m.flow != "none" or m.prior != "normal"):
        raise ConfigError(
            "objective.kl=analytic needs a closed-form KL (gaussian posterior, normal prior, no flow); "
            "use objective.kl=auto, which falls back to Monte Carlo"
        )


def _choice(key: str, value: Any, choices: list[str]) -> None:
    if value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {_short(value)}{extra}")


def _positive(key: str, value: int) -> None:
    if not value > 0:
        raise ConfigError(f"{key} must be a positive number, got {value}")


def _nonneg(key: str, value: int) -> None:
    if value < 0:
        raise ConfigError(f"{key} must be >= 0, got {value}")


def _short(value: Any) -> str:
    """repr() cut to a readable length, for values pasted into messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
        for arg in sorted(
            args, key=lambda a: 0 if isinstance(value, a if isinstance(a, type) else ()) else 1
        ):
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1] if errors else f"{key}: bad value {_short(value)}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {_short(value)}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of settings, got {_short(value)}")
        return _from_dict(tp, value, key)  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key} must be true or false, got {_short(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key} must be an integer, got {_short(value)}")
        try:
            # int() first keeps big integers exact; 3.0, "3.0" and 1e3 are whole numbers too.
            if isinstance(value, int):
                n = value
            elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                n = int(value)
            else:
                f = float(value)
                if not f.is_integer():
                    raise ValueError
                n = int(f)
        except (ValueError, OverflowError):
            raise ConfigError(f"{key} must be an integer, got {_short(value)}") from None
        if abs(n) >= 2**63:
            raise ConfigError(f"{key} is too large: {_short(value)} (at most 2**63 - 1)")
        return n
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key} must be a number, got {_short(value)}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {_short(value)}") from None
        except OverflowError:  # an integer beyond the float range
            raise ConfigError(f"{key} must be a finite number, got {_short(value)}") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise ConfigError(f"{key} must be a finite number, got {_short(value)}")
        return f
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {_short(value)}")
        if isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a string, got the number {_short(value)}")
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
                f"unknown setting {_short(full)}.{extra} Known settings here: {', '.join(names)}"
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
    except (yaml.YAMLError, ValueError):  # ValueError: an integer of more than 4300 digits
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to nested plain data (a copy is returned).

    >>> apply_overrides({"train": {"lr": 0.1}}, ["train.lr=0.01", "model.latent_dim=3"])
    {'train': {'lr': 0.01}, 'model': {'latent_dim': 3}}
    """
    # deepcopy, not a JSON round trip: YAML may hold dates, sets or aliases, which the
    # type checks then reject with a message instead of json raising deep inside.
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"--set expects key=value (for example train.lr=0.001), got {_short(item)}"
            )
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set expects key=value, got {_short(item)}")
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


BUNDLED_CONFIGS = Path(__file__).resolve().parent / "configs"


def bundled_configs() -> dict[str, Path]:
    """The configs installed with vaekit, by name (``demo``, ``003_vae``, ...).

    Example:
        >>> "demo" in bundled_configs()
        True
    """
    return {p.stem: p for p in sorted(BUNDLED_CONFIGS.glob("*.yaml"))}


def find_config(path: str | Path) -> Path:
    """The config file ``path`` names: the file itself when it exists, else a bundled
    config by name, with or without ``.yaml`` (``demo``, ``003_vae.yaml``).

    A missing ``configs/NAME.yaml`` (the repository's path, as the README writes it) also
    finds the bundled ``NAME``, so its examples work from any directory. An unknown name
    is a :class:`ConfigError` that lists the bundled configs.

    Example:
        >>> find_config("demo").name
        'demo.yaml'
    """
    p = Path(path)
    if p.exists():
        return p
    bundled = bundled_configs()
    name = p.name.removesuffix(".yaml")
    if name in bundled and (len(p.parts) == 1 or p.parent == Path("configs")):
        return bundled[name]
    hint = difflib.get_close_matches(name, list(bundled), n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(
        f"config file {str(p)!r} does not exist, nor is it a bundled config.{extra} "
        f"Bundled configs (vaekit train -c NAME): {', '.join(bundled)}"
    )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file (or a bundled config by name) into plain data."""
    p = find_config(path)
    if p.is_dir():
        raise ConfigError(
            f"config file {str(p)!r} is a directory; give a YAML, TOML or JSON file, "
            "or a bundled config's name (vaekit train -c demo)"
        )
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} is not a regular file")
    try:
        text = p.read_bytes().decode("utf-8")
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(p)!r}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError, ValueError) as e:
        # ValueError covers json's errors and integers of more than 4300 digits.
        raise ConfigError(f"could not parse config file {str(p)!r}: {str(e)[:500]}") from None
    if data is None or not text.strip():
        raise ConfigError(
            f"config file {str(p)!r} is empty; put settings in it (start from a bundled one, "
            f"e.g. {BUNDLED_CONFIGS / 'demo.yaml'}), "
            "or leave out --config to train with the defaults"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(p)!r} must hold a mapping of sections (data, model, objective, train)"
        )
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or the defaults when ``path`` is None) and apply ``--set`` overrides.

    ``path`` is a file, or the name of a bundled config (:func:`find_config`).
    """
    data = read_config_file(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data)
    except ConfigError as e:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"{e}{where}") from None

"""Experiment configuration: dataclasses, YAML/TOML/JSON files, dotted overrides.

A config is four sections, one per stage of the data flow::

    data:      which dataset and how to preprocess it
    model:     the parts (networks, posterior, flow, prior, likelihood) and conditioning
    objective: the training objective, a part with its own options
    train:     optimiser, epochs, batch size, seed, device, trackers

Each part is named, with its own options beside the name: ``model.prior: {name: vamp,
components: 500}`` (or just ``model.prior: vamp`` for its defaults), overridden as
``--set model.prior.components=500``. A part is a registered name (:mod:`vaekit.registry`)
or a class of yours as ``module:Class``. One grammar serves every part, in any order:
``--set model.prior=mog`` (``objective=iwae``) chooses a part and is applied before the
options set on it; options the file held for the part replaced stay where the new part
takes them and are dropped with a note where not (:func:`apply_overrides`).

Example:
    >>> cfg = load_config(None, overrides=["model.latent_dim=4", "model.prior=mog"])
    >>> cfg.model.latent_dim, cfg.model.prior.name, cfg.model.prior.options.components
    (4, 'mog', 10)

Every mistake (unknown key, wrong type, bad value, parts that cannot be combined)
raises :class:`ConfigError` with a message that names the key and says what would be
accepted. Configs written for vaekit 0.1 (flat ``model.prior_components``,
``model.sigma``, ...; every run directory it wrote) are read and converted.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import sys
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from vaekit.errors import ConfigError
from vaekit.parts import Composition, PartConfig, PosteriorAbilities, is_import_path
from vaekit.trackers import TRACKERS
from vaekit.validate import (
    check_choice,
    check_nonneg,
    check_positive,
    short,
)

__all__ = [
    "ConfigError",
    "PartConfig",
    "part",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "bundled_configs",
    "find_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "ignored_settings",
    "unnoted_settings",
    "migrate_legacy",
    "composition",
]


def part(name: str, **options: Any) -> dict[str, Any]:
    """A part as plain data (``{"name": name, **options}``), to pass where a part goes.

    ``ModelConfig(prior=part("vamp", components=50))`` reads as the YAML
    ``prior: {name: vamp, components: 50}``; the options are validated when the
    ModelConfig is built.
    """
    return {"name": name, **options}


@dataclass
class DataConfig:
    """Dataset name or path, and preprocessing."""

    # A named dataset (digits, mnist, binarized-mnist, ...), a file or folder, or a
    # module:function of yours (called with data.options) returning a vaekit Dataset,
    # arrays (train_x, train_y, test_x, test_y) or a dict of splits {train, test[, valid]}.
    name: str = "digits"
    # none | static (one fixed Bernoulli draw) | threshold (x > 0.5) | dynamic (redrawn every batch)
    binarize: str = "none"
    # none | gaussian: codes with their variances (vaekit encode RUN --out FILE.npz) are
    # redrawn every training batch from N(mean, var), as Kingma et al.'s M1+M2 feeds M2;
    # the validation and test splits are scored at the means.
    resample: str = "none"
    # Fraction of train held out for validation when the dataset has no validation split.
    valid_fraction: float = 0.0
    # Use at most this many training examples (0 = all); handy for quick runs.
    limit: int = 0
    # Keep the labels of this many training examples (the same number from each class,
    # seeded by train.seed) and hide the rest, for a semi-supervised objective (m2); 0 = all.
    labels: int = 0
    # Keyword arguments of a module:function dataset.
    options: dict[str, Any] = field(default_factory=dict)


def _part_field(kind: str, default: str | None) -> Any:
    meta = {"part": kind}
    if default is None:
        return field(default=None, metadata=meta)
    return field(default_factory=lambda: default, metadata=meta)


@dataclass
class ModelConfig:
    """The parts of the VAE: encoder + posterior, prior, decoder + likelihood.

    Each part field takes a name (``"vamp"``), a mapping with a name and options
    (``{"name": "vamp", "components": 50}``) or a :class:`PartConfig`; all become a
    PartConfig with validated options.
    """

    # Latent units (a hierarchy: per layer; a code grid: channels x places).
    latent_dim: int = 2
    # The encoder network: mlp (hidden, activation) | conv (channels, blocks, hidden, activation).
    encoder: PartConfig = _part_field("network", "mlp")
    # None: the decoder mirrors the encoder (its hidden widths reversed).
    decoder: PartConfig | None = _part_field("network", None)
    # gaussian (diagonal, reparameterised) | point (deterministic code: the plain autoencoder)
    # | implicit (noise into the encoder, no density: train with objective avb)
    # | hierarchical (several stochastic layers; model.prior is then the top layer's prior)
    # | vq (VQ-VAE's codebook) | gumbel (categorical codes, Gumbel-softmax relaxed)
    posterior: PartConfig = _part_field("posterior", "gaussian")
    # A normalizing flow on the posterior: none, or a flow part (planar, iaf, ...) with its length K.
    flow: PartConfig | None = _part_field("flow", None)
    # normal | mog (learned mixture of Gaussians) | vamp (VampPrior); over a discrete
    # posterior's codes: categorical (uniform or learned) | pixelcnn (autoregressive); one
    # p(z|y) per class of a conditional model: class-gaussian | class-vamp
    prior: PartConfig = _part_field("prior", "normal")
    # bernoulli | continuous-bernoulli | gaussian | student-t | categorical | discretized-logistic
    likelihood: PartConfig = _part_field("likelihood", "bernoulli")
    # Conditional VAE: feed the one-hot label to encoder and decoder.
    conditional: bool = False
    # A classifier q(y|x), a network from x to the class logits (mlp with its hidden widths;
    # none: no classifier): the semi-supervised M2 model (objective m2) with model.conditional.
    classifier: PartConfig | None = _part_field("network", None)
    # Number of classes for a conditional model; 0 means "take it from the dataset".
    num_classes: int = 0
    # How every linear layer of the model starts: default (PyTorch's) | he (weights from
    # N(0, 2 / fan-in), He et al. 2015, biases as PyTorch sets them: how Tomczak & Welling's
    # code starts its networks).
    weight_init: str = "default"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            kind = f.metadata.get("part")
            if kind is not None:
                value = getattr(self, f.name)
                if not (isinstance(value, PartConfig) and value.options is not None):
                    setattr(self, f.name, parse_part(kind, value, f"model.{f.name}", f))


def _default_objective() -> Any:
    return "elbo"


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    # Epochs to train (with --resume: the new total).
    epochs: int = 10
    # Examples per step (per process under torchrun: the effective batch is N times it).
    batch_size: int = 100
    # adam | adamw | sgd | adagrad (torch's fused kernels) | rmsprop | adam-normgrad (Adam on
    # each tensor's gradient divided by its norm, Tomczak & Welling's VampPrior code)
    optimizer: str = "adam"
    # Learning rate (train.lr_schedule scales it by epoch).
    lr: float = 1e-3
    # L2 penalty (adamw: decoupled weight decay).
    weight_decay: float = 0.0
    # Clip the gradient norm to this (0 = off).
    grad_clip: float = 0.0
    # Seeds initialisation, data order and every draw: a run is reproducible from it.
    seed: int = 0
    # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    device: str = "auto"
    # Examples per batch when scoring the validation and test splits.
    eval_batch_size: int = 1000
    # Score each epoch's validation and test splits on a seeded subset of at most this many
    # examples each (stratified by label; 0 = every example). With data.limit a quick run
    # trains on few examples but still scores whole splits (binarized MNIST: 20,000 every
    # epoch); this limits that too. The best weights and early stopping read the subset.
    score_limit: int = 0
    # When the test split is scored (metrics.jsonl): end (after the run's last epoch, the
    # usual practice: the validation split is what each epoch is judged by) | epoch (after
    # every epoch, for the test split's learning curve). Data without a validation split
    # have their test split scored every epoch either way.
    score_test: str = "end"
    # 0 leaves torch's default thread count.
    threads: int = 0
    # fp32 | bf16: the encoder and decoder networks' matrix products in bfloat16 during
    # training steps (autocast); posteriors, priors, flows, likelihoods and every
    # evaluation stay in float32. About 1.4x faster steps on CPUs with AVX-512 BF16.
    precision: str = "fp32"
    # Learning-rate schedule, a factor on lr by epoch: none | cosine | burda (Burda et al. 2016).
    lr_schedule: str = "none"
    # Exponential moving average of the weights, the decay d (0 = off; 0.999 or 0.9999 are
    # usual): after every optimiser step ema = d * ema + (1 - d) * weights, starting from
    # the initial weights. The average is what the validation and test splits score, and
    # what RUN/best.safetensors and RUN/model.safetensors hold, so vaekit evaluate, sample
    # and report use it (VDVAE and NVAE evaluate so); training itself goes on from the raw
    # weights, which checkpoints keep beside the average (resume stays exact).
    ema: float = 0.0
    # Write a checkpoint every this many epochs (the last epoch always writes one).
    checkpoint_every: int = 1
    # Keep RUN/best.safetensors: the weights of the epoch with the best validation score
    # (the bound the objective trains; early stopping's model, without stopping).
    # Needs a validation split.
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
    # Processes that read a streamed dataset (a torch Dataset given to vaekit.fit) for
    # training; 0 reads it in the training process.
    workers: int = 0
    # Gradient-norm skipping (Child 2021, VDVAE): drop the update of a step whose gradient
    # norm (before train.grad_clip) exceeds this; metrics count them as skipped_steps.
    # 0 = off. Non-finite steps follow train.nan_policy whatever this is.
    skip_threshold: float = 0.0
    # Experiment trackers that receive every epoch's metrics beside metrics.jsonl:
    # tensorboard | mlflow (optional extras: pip install "vaekit[tensorboard]" / "[mlflow]").
    trackers: list[str] = field(default_factory=list)
    # Start from the weights of another run (its directory: its last weights; or a
    # .safetensors file): parameters whose names and shapes match are loaded, the others
    # keep their initialisation. A second stage (vaekit train --resume RUN --stage prior)
    # starts from RUN so. A resumed run loads its own checkpoint over them.
    init: str = ""


@dataclass
class Config:
    """A whole experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The training objective: elbo | iwae | avb | ae, or module:Class, with its options.
    objective: PartConfig = _part_field("objective", "elbo")
    train: TrainConfig = field(default_factory=TrainConfig)
    # Free text shown in reports.
    description: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.objective, PartConfig) and self.objective.options is not None):
            f = next(f for f in dataclasses.fields(self) if f.name == "objective")
            self.objective = parse_part("objective", self.objective, "objective", f)

    def validate(self) -> Config:
        """Check values that types alone cannot; returns self so calls can chain."""
        check_choice(
            "data.binarize", self.data.binarize, ["none", "static", "dynamic", "threshold"]
        )
        check_choice("data.resample", self.data.resample, ["none", "gaussian"])
        if self.data.resample != "none" and self.data.binarize != "none":
            raise ConfigError(
                f"data.resample={self.data.resample} draws the codes afresh and "
                f"data.binarize={self.data.binarize} binarizes images: use one of them"
            )
        if not 0.0 <= self.data.valid_fraction < 1.0:
            raise ConfigError(
                f"data.valid_fraction must be in [0, 1), got {self.data.valid_fraction}"
            )
        check_nonneg("data.limit", self.data.limit)
        check_nonneg("data.labels", self.data.labels)
        if not self.data.name.strip():
            raise ConfigError(
                "data.name is empty; name a dataset (digits, mnist, binarized-mnist, ...) or a file"
            )
        m = self.model
        check_positive("model.latent_dim", m.latent_dim)
        check_nonneg("model.num_classes", m.num_classes)
        check_choice("model.weight_init", m.weight_init, ["default", "he"])
        parts = composition(m, self.objective)
        _check_composition(self, parts)
        self._validate_train()
        return self

    def _validate_train(self) -> None:
        # (optim imports torch: see _registry)
        from vaekit.optim import OPTIMIZERS, SCHEDULES

        t = self.train
        check_positive("train.epochs", t.epochs)
        check_positive("train.batch_size", t.batch_size)
        check_positive("train.eval_batch_size", t.eval_batch_size)
        check_nonneg("train.score_limit", t.score_limit)
        check_choice("train.optimizer", t.optimizer, sorted(OPTIMIZERS))
        if not t.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {t.lr}")
        if t.weight_decay < 0 or t.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be >= 0")
        check_nonneg("train.threads", t.threads)
        check_nonneg("train.workers", t.workers)
        check_positive("train.checkpoint_every", t.checkpoint_every)
        check_nonneg("train.patience", t.patience)
        if t.patience and not t.keep_best:
            raise ConfigError(
                "train.patience stops on the validation score that train.keep_best tracks; "
                "set train.keep_best=true or train.patience=0"
            )
        check_positive("train.max_bad_steps", t.max_bad_steps)
        check_nonneg("train.skip_threshold", t.skip_threshold)
        check_choice("train.nan_policy", t.nan_policy, ["skip", "rollback", "stop"])
        check_choice("train.score_test", t.score_test, ["end", "epoch"])
        check_choice("train.lr_schedule", t.lr_schedule, SCHEDULES)
        if not 0.0 <= t.ema < 1.0:
            raise ConfigError(
                f"train.ema is the decay of the weights' moving average and must be in [0, 1) "
                f"(0 = off; 0.999 is usual), got {t.ema}"
            )
        check_choice("train.precision", t.precision, ["fp32", "bf16"])
        for i, name in enumerate(t.trackers):
            check_choice(f"train.trackers[{i}]", name, sorted(TRACKERS))
        if len(set(t.trackers)) != len(t.trackers):
            raise ConfigError(f"train.trackers names a tracker twice: {t.trackers}")
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
                f"train.device must be auto, cpu, cuda, cuda:N or mps; got {short(t.device)}"
            )


# ---------------------------------------------------------------------------
# parts: parsing, composition, checks


def _registry(kind: str) -> Any:
    # The registry imports every part and torch with them: imported on first use, so that
    # reading a config (the command line's parsing and --help) does not pay torch's start-up.
    from vaekit.registry import REGISTRIES

    return REGISTRIES[kind]


def parse_part(kind: str, value: Any, key: str, f: dataclasses.Field[Any] | None = None) -> Any:
    """A part setting (name, mapping or PartConfig) as a PartConfig with validated options.

    ``None`` and ``"none"`` are accepted where the part is optional (the flow, the decoder).
    A mapping without a name keeps the field's default part.
    """
    optional = f is not None and f.default is None
    if isinstance(value, PartConfig):
        value = {"name": value.name, **(_options_dict(value.options) if value.options else {})}
    if value is None or value == "none":
        if optional:
            return None
        raise ConfigError(
            f"{key} cannot be none; name a {kind} ({', '.join(_registry(kind).names())})"
        )
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key} must be a {kind} name or a mapping with a name and its options, got {short(value)}"
        )
    data = dict(value)
    name = data.pop("name", None)
    if name is None:
        default = (
            f.default_factory()
            if f is not None and f.default_factory is not dataclasses.MISSING
            else None
        )
        if default is None:
            raise ConfigError(
                f"{key} needs a name: one of {', '.join(_registry(kind).names())} (or module:Class)"
            )
        name = default
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{key}.name must be a {kind} name, got {short(name)}")
    spec = _registry(kind).get(name, where=key)
    try:
        options = _from_dict(spec.options, data, key, owner=f"{kind} {name!r}")
    except TypeError as e:
        # A user's part whose options lack a required value.
        raise ConfigError(f"{key}: {kind} {name!r} needs options: {e}") from None
    validate = getattr(options, "validate", None)
    if callable(validate):
        validate(key)
    return PartConfig(name, options)


def _options_dict(options: Any) -> dict[str, Any]:
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def composition(model: ModelConfig, objective: PartConfig | None = None) -> Any:
    """The abilities of the parts a model config chooses (:class:`vaekit.parts.Composition`)."""
    POSTERIORS, FLOWS, PRIORS = _registry("posterior"), _registry("flow"), _registry("prior")
    LIKELIHOODS, OBJECTIVES = _registry("likelihood"), _registry("objective")
    base = POSTERIORS.get(model.posterior.name).abilities
    post = base
    if model.flow is not None:
        # A flow keeps the density (its log-determinant) and breaks the Gaussian form; on
        # a hierarchy it goes on the layers below the top, which stays a Gaussian given x.
        post = PosteriorAbilities(
            density=base.density,
            stochastic=base.stochastic,
            gaussian_top=base.layered and base.gaussian_top,
            layered=base.layered,
        )
    names = {
        "posterior": f"model.posterior={model.posterior.name}",
        "prior": f"model.prior={model.prior.name}",
        "likelihood": f"model.likelihood={model.likelihood.name}",
    }
    if model.flow is not None:
        names["flow"] = f"model.flow={model.flow.name}"
        FLOWS.get(model.flow.name)
    if objective is not None:
        names["objective"] = f"objective.name={objective.name}"
    return Composition(
        posterior=post,
        prior=PRIORS.get(model.prior.name).abilities,
        likelihood=LIKELIHOODS.get(model.likelihood.name).abilities,
        objective=None if objective is None else OBJECTIVES.get(objective.name).abilities,
        base_posterior=base,
        flow=model.flow is not None,
        conditional=model.conditional,
        classifier=model.classifier is not None,
        names=names,
    )


def _chosen_parts(cfg: Config) -> list[tuple[str, str, PartConfig]]:
    """Every part a config chooses: its kind, its key and its setting."""
    m = cfg.model
    chosen = [
        ("network", "model.encoder", m.encoder),
        ("network", "model.decoder", m.decoder),
        ("posterior", "model.posterior", m.posterior),
        ("flow", "model.flow", m.flow),
        ("prior", "model.prior", m.prior),
        ("likelihood", "model.likelihood", m.likelihood),
        ("network", "model.classifier", m.classifier),
        ("objective", "objective", cfg.objective),
    ]
    return [(kind, key, pc) for kind, key, pc in chosen if pc is not None]


def _check_composition(cfg: Config, parts: Any) -> None:
    """Rules every part of a kind obeys (by abilities), then each chosen part's own check."""
    NETWORKS, POSTERIORS, PRIORS = _registry("network"), _registry("posterior"), _registry("prior")
    OBJECTIVES = _registry("objective")
    m = cfg.model
    n = parts.names
    encoder = NETWORKS.get(m.encoder.name)
    if m.decoder is None and encoder.encoder is encoder.decoder:
        # One class of the user's: built as an encoder, it cannot mirror itself as a decoder.
        raise ConfigError(
            f"model.encoder={m.encoder.name} is a network class built as an encoder, which "
            "cannot mirror itself as the decoder: name the decoder too (model.decoder: "
            "module:Class, built as Class(latent_dim, data_shape, out_features, "
            "context_features, **options)), or give one class with the staticmethods "
            "encoder(...) and decoder(...)"
        )
    if m.flow is not None and not parts.base_posterior.takes_flow:
        takes = [p.name for p in POSTERIORS if p.abilities.takes_flow]
        raise ConfigError(
            f"{n['flow']} transforms the posterior, but {n['posterior']} takes no flow: set "
            f"model.posterior={' or '.join(takes)}, or model.flow=none"
        )
    if parts.posterior.networks and m.decoder is not None:
        raise ConfigError(
            f"{n['posterior']} brings its own encoder and decoder networks, so model.decoder "
            "is not used: remove it (or set model.decoder=none)"
        )
    if parts.prior.needs_gaussian_posterior and not (
        parts.posterior.gaussian or parts.posterior.gaussian_top
    ):
        others = [p.name for p in PRIORS if not p.abilities.needs_gaussian_posterior]
        raise ConfigError(
            f"{n['prior']} is a mixture of the encoder's diagonal Gaussian posteriors: it needs a "
            "Gaussian posterior without a flow (model.posterior=gaussian, model.flow=none); "
            f"other priors need none: {', '.join('model.prior=' + p for p in others)}"
        )
    if parts.posterior.discrete != parts.prior.discrete:
        fits = [p.name for p in PRIORS if p.abilities.discrete == parts.posterior.discrete]
        what = (
            "a discrete code, which only a prior over codes can score"
            if parts.posterior.discrete
            else "continuous, and this prior is a distribution over a discrete posterior's codes"
        )
        raise ConfigError(
            f"{n['posterior']} makes z {what}: use {' or '.join('model.prior=' + p for p in fits)}"
        )
    if m.classifier is not None and not m.conditional:
        raise ConfigError(
            "model.classifier is q(y|x) of a model whose encoder and decoder take the label: "
            "set model.conditional=true as well (or model.classifier=none)"
        )
    if parts.prior.per_class and not m.conditional:
        raise ConfigError(
            f"{n['prior']} is one prior p(z|y) per class, so the model must take labels: set "
            "model.conditional=true (on labelled data), or use model.prior=normal"
        )
    if parts.prior.per_class and parts.posterior.layered:
        raise ConfigError(
            f"{n['prior']} is one prior per class over a single latent layer; "
            f"{n['posterior']} has several, whose top layer's prior takes no label: use "
            "model.posterior=gaussian, or model.prior=normal"
        )
    if m.conditional and not parts.prior.conditional:
        others = [p.name for p in PRIORS if p.abilities.conditional]
        raise ConfigError(
            f"{n['prior']} passes inputs through the encoder without labels, so it cannot be "
            f"conditional: set model.conditional=false or use "
            f"{' or '.join('model.prior=' + p for p in others)}"
        )
    o = parts.objective
    assert o is not None
    if o.classifier and m.classifier is None:
        raise ConfigError(
            f"{n['objective']} trains a classifier q(y|x) beside the model: set "
            "model.classifier=mlp (and model.conditional=true)"
        )
    if cfg.data.labels and not o.hidden_labels:
        fits = [p.name for p in OBJECTIVES if p.abilities.hidden_labels]
        raise ConfigError(
            f"data.labels={cfg.data.labels} hides the other training labels, which only a "
            f"semi-supervised objective learns from ({', '.join('objective.name=' + f for f in fits)}); "
            "set data.labels=0 to keep every label"
        )
    missing = []
    if o.needs_density and not parts.posterior.density:
        missing.append("no density")
    # A deterministic posterior with a density (a one-hot code: log q = 0) has an ELBO.
    if o.needs_stochastic and not (parts.posterior.stochastic or parts.posterior.density):
        missing.append("no randomness (a point mass)")
    if missing:
        fits = [
            p.name
            for p in OBJECTIVES
            if (parts.posterior.density or not p.abilities.needs_density)
            and (parts.posterior.stochastic or not p.abilities.needs_stochastic)
        ]
        # Objectives that use the posterior's randomness first: they train what it is for.
        fits.sort(key=lambda name: not OBJECTIVES.get(name).abilities.needs_stochastic)
        use = " or ".join(f"objective.name={name}" for name in fits)
        raise ConfigError(
            f"{n['posterior']} has {' and '.join(missing)}, so the {cfg.objective.name} objective "
            f"is undefined for it: use {use}"
        )
    for kind, _, pc in _chosen_parts(cfg):
        problem = _registry(kind).get(pc.name).check(pc.options, parts)
        if problem:
            raise ConfigError(problem)


# ---------------------------------------------------------------------------
# settings of vaekit 0.1 (flat model options, NetConfig.type), read and converted

# Flat model settings of 0.1 -> (the part that owns it, its option name there).
_LEGACY_MODEL = {
    "flow_length": ("flow", "length"),
    "flow_hidden": ("flow", "hidden"),
    "noise_dim": ("posterior", "noise_dim"),
    "prior_components": ("prior", "components"),
    "sigma": ("likelihood", "sigma"),
    "df": ("likelihood", "df"),
    "levels": ("likelihood", "levels"),
    "likelihood_components": ("likelihood", "components"),
}
_LEGACY_OBJECTIVE = (
    "beta",
    "samples",
    "kl",
    "warmup_epochs",
    "free_bits",
    "discriminator",
    "gradient",
)


def migrate_legacy(data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Convert a config of vaekit 0.1 (flat part options) to the part layout.

    Returns the converted copy and whether anything was converted. Every option moves to
    the part that owns it; options the chosen part does not have never had an effect in
    0.1 and are dropped. Data already in the new layout comes back unchanged.

    Example:
        >>> new, changed = migrate_legacy({"model": {"prior": "vamp", "prior_components": 50}})
        >>> new["model"]["prior"], changed
        ({'name': 'vamp', 'components': 50}, True)
    """
    out = copy.deepcopy(data)
    model = out.get("model")
    changed = False
    if isinstance(model, dict):
        flat = {k: model.pop(k) for k in list(model) if k in _LEGACY_MODEL}
        for net in ("encoder", "decoder"):
            spec = model.get(net)
            if isinstance(spec, dict) and "type" in spec:
                spec["name"] = spec.pop("type")
                changed = True
        if flat:
            changed = True
            for key, value in flat.items():
                kind, option = _LEGACY_MODEL[key]
                target = model.get(kind)
                if target is None or target == "none":
                    continue
                if isinstance(target, str):
                    target = model[kind] = {"name": target}
                if isinstance(target, dict):
                    target.setdefault(option, value)
        if changed:
            for net in ("encoder", "decoder"):
                if isinstance(model.get(net), dict):
                    _drop_unknown("network", model[net], "mlp")
            for kind, default in (
                ("posterior", "gaussian"),
                ("flow", None),
                ("prior", "normal"),
                ("likelihood", "bernoulli"),
            ):
                if isinstance(model.get(kind), dict):
                    _drop_unknown(kind, model[kind], default)
    obj = out.get("objective")
    if changed and isinstance(obj, dict):
        _drop_unknown("objective", obj, "elbo")
    return out, changed


def _drop_unknown(kind: str, spec: dict[str, Any], default: str | None) -> None:
    """Remove the options ``spec``'s part does not have (0.1 kept every part's options)."""
    name = spec.get("name", default)
    if not isinstance(name, str) or is_import_path(name):
        return
    registry = _registry(kind)
    if name not in registry:
        return
    known = {f.name for f in dataclasses.fields(registry.get(name).options)}
    for key in list(spec):
        if key != "name" and key not in known:
            del spec[key]


# ---------------------------------------------------------------------------
# dict <-> dataclass with checked types


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON-able data; a part is ``{"name": ..., **options}``.

    >>> config_to_dict(Config())["model"]["prior"]
    {'name': 'normal'}
    """
    out = _plain(cfg)
    assert isinstance(out, dict)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, PartConfig):
        return {"name": value.name, **_plain(_options_dict(value.options))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


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
        raise ConfigError(errors[-1] if errors else f"{key}: bad value {short(value)}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {short(value)}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of settings, got {short(value)}")
        return _from_dict(tp, value, key)  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key} must be true or false, got {short(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key} must be an integer, got {short(value)}")
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
            raise ConfigError(f"{key} must be an integer, got {short(value)}") from None
        if abs(n) >= 2**63:
            raise ConfigError(f"{key} is too large: {short(value)} (at most 2**63 - 1)")
        return n
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key} must be a number, got {short(value)}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {short(value)}") from None
        except OverflowError:  # an integer beyond the float range
            raise ConfigError(f"{key} must be a finite number, got {short(value)}") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise ConfigError(f"{key} must be a finite number, got {short(value)}")
        return f
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {short(value)}")
        if isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a string, got the number {short(value)}")
        return value
    if tp is Any:
        return copy.deepcopy(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {short(value)}")
        return copy.deepcopy(value)
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "", owner: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields)
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), names, n=1)
            extra = f" Did you mean {hint[0]!r}?" if hint else ""
            known = ", ".join(names) if names else "(none)"
            whose = f" Options of the {owner}" if owner else " Known settings here"
            raise ConfigError(f"unknown setting {short(full)}.{extra}{whose}: {known}")
        kind = fields[key].metadata.get("part")
        if kind is not None:
            kwargs[key] = parse_part(kind, value, full, fields[key])
        else:
            kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from nested plain data (as read from YAML/TOML/JSON).

    Data in the layout of vaekit 0.1 is converted first (:func:`migrate_legacy`).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    data, _ = migrate_legacy(data)
    return _from_dict(Config, data).validate()


def _parse_scalar(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` as YAML (numbers, lists, booleans).

    A mapping is written in braces (``{name: mog, components: 5}``); text that YAML would
    read as a mapping without them (``myparts:``, ``a: b``) stays text, so that a
    malformed import path is reported as one.
    """
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except (yaml.YAMLError, ValueError):  # ValueError: an integer of more than 4300 digits
        return text
    if isinstance(value, dict) and not text.lstrip().startswith(("{", "&", "!")):
        return text
    return value


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _chosen_options(kind: str, value: Any, f: dataclasses.Field[Any]) -> Any:
    """The options dataclass of the part that a setting ``value`` chooses (None: unknown)."""
    name = value.get("name", _field_default(f)) if isinstance(value, dict) else value
    if value is None:
        name = _field_default(f)
    if not isinstance(name, str) or name == "none":
        return None
    try:
        return _registry(kind).get(name).options
    except ConfigError:
        return None


def _part_slot(path: list[str], data: dict[str, Any]) -> tuple[str, Any] | None:
    """The kind of part and the field of the part setting that ``path`` names in the plain
    config ``data`` (``["model", "prior"]``, ``["objective"]``), or None where it names a
    section, an option or a plain setting. A part inside a part's options
    (``objective.divergence``) is found through the part that ``data`` chooses."""
    cls: Any = Config
    node: Any = data
    for i, key in enumerate(path):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return None
        f = next((f for f in dataclasses.fields(cls) if f.name == key), None)
        if f is None:
            return None
        value = node.get(key) if isinstance(node, dict) else None
        kind = f.metadata.get("part")
        if kind is not None:
            if i == len(path) - 1:
                return kind, f
            cls = _chosen_options(kind, value, f)
        else:
            tp = typing.get_type_hints(cls).get(key)
            cls = tp if dataclasses.is_dataclass(tp) else None
        node = value
    return None


def _text(value: Any) -> str:
    """A value as it is written in a config or after ``--set``: 500, [300, 300], true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        if set(value) == {"name"}:
            return _text(value["name"])
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def _switch_part(
    old: Any, name: Any, kind: str, f: dataclasses.Field[Any], key: str, later: set[str]
) -> tuple[Any, str | None]:
    """The part setting ``key`` after ``key=name`` chooses a part where ``old`` was, and a
    note on the options it carries over or drops.

    The options already set (by the config file) stay where the new part takes them, and
    are dropped with a note where it does not; choosing the same part again keeps them all.
    A mapping replaces the setting whole, and ``none`` removes an optional part. The note
    leaves out the options in ``later``, which overrides set next.
    """
    if not isinstance(name, str) or name == "none" or not isinstance(old, dict):
        return name, None
    options = {k: v for k, v in old.items() if k != "name"}
    before = old.get("name", _field_default(f))
    if name == before:
        return {"name": name, **options}, None
    if not options:
        return name, None
    try:
        known = {o.name for o in dataclasses.fields(_registry(kind).get(name, where=key).options)}
    except ConfigError:
        return name, None  # an unknown name: parse_part says what would be accepted
    kept = {k: v for k, v in options.items() if k in known}
    dropped = {k: v for k, v in options.items() if k not in known and k not in later}
    said = []
    noted = {k: v for k, v in kept.items() if k not in later}
    if noted:
        listed = ", ".join(f"{k}={_text(v)}" for k, v in noted.items())
        said.append(f"kept {listed} ({name} takes {'it' if len(noted) == 1 else 'them'} too)")
    if dropped:
        listed = ", ".join(f"{k}={_text(v)}" for k, v in dropped.items())
        said.append(f"dropped {listed}, which {name} does not take")
    note = f"{key}={name} replaces {before}: {'; '.join(said)}" if said else None
    return {"name": name, **kept}, note


def _override_path(item: str) -> list[str]:
    """The dotted key of one ``--set key=value``, split (a ConfigError when malformed)."""
    if "=" not in item:
        raise ConfigError(
            f"--set expects key=value (for example train.lr=0.001), got {short(item)}"
        )
    key = item.partition("=")[0]
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set expects key=value, got {short(item)}")
    return path


def apply_overrides(
    data: dict[str, Any], overrides: list[str], notes: list[str] | None = None
) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to nested plain data (a copy is returned).

    One grammar for every part, whatever the order of the overrides: ``model.prior=mog``
    (or ``model.prior.name=mog``, ``objective=iwae``) chooses a part, and its options
    (``model.prior.components=5``) are set on the part chosen, because an override is
    applied after every override of a shorter key. Options the config already held for
    the part replaced are kept where the new part takes them and dropped with a note where
    it does not; a mapping (``model.prior={name: mog}``) replaces the part whole. The notes
    go to ``notes`` when it is given, else to stderr.

    >>> apply_overrides({"train": {"lr": 0.1}}, ["train.lr=0.01", "model.latent_dim=3"])
    {'train': {'lr': 0.01}, 'model': {'latent_dim': 3}}
    >>> apply_overrides({"model": {"prior": "vamp"}}, ["model.prior.components=50"])
    {'model': {'prior': {'name': 'vamp', 'components': 50}}}
    >>> apply_overrides({}, ["objective.samples=5", "objective=iwae"])
    {'objective': {'name': 'iwae', 'samples': 5}}
    """
    # deepcopy, not a JSON round trip: YAML may hold dates, sets or aliases, which the
    # type checks then reject with a message instead of json raising deep inside.
    out = copy.deepcopy(data)
    said: list[str] = []
    items = [(item, _override_path(item)) for item in overrides]

    def depth(entry: tuple[str, list[str]]) -> int:
        # model.prior.name=mog chooses the part as model.prior=mog does: same depth.
        path = entry[1]
        if len(path) > 1 and path[-1] == "name" and _part_slot(path[:-1], out) is not None:
            return len(path) - 1
        return len(path)

    # A stable sort: parents (a section, a part's choice) before their children (the
    # part's options); overrides of one key keep their order, so the last one wins.
    for item, path in sorted(items, key=depth):
        key = ".".join(path)
        value = _parse_scalar(item.partition("=")[2])
        if (
            len(path) > 1
            and path[-1] == "name"
            and isinstance(value, str)
            and _part_slot(path[:-1], out) is not None
        ):
            path = path[:-1]
        node = out
        for i, p in enumerate(path[:-1]):
            nxt = node.setdefault(p, {})
            if isinstance(nxt, str) and _part_slot(path[: i + 1], out) is not None:
                # A part named on its own: its options go beside the name ("none": no part).
                nxt = node[p] = {} if nxt == "none" else {"name": nxt}
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {p!r} is a value, not a section")
            node = nxt
        slot = _part_slot(path, out)
        if slot is not None:
            n = len(path)
            later = {p[n] for _, p in items if len(p) > n and p[:n] == path}
            value, note = _switch_part(node.get(path[-1]), value, *slot, ".".join(path), later)
            if note is not None:
                said.append(note)
        node[path[-1]] = value
    if notes is not None:
        notes.extend(said)
    else:
        _say(said)
    return out


def _say(notes: list[str]) -> None:
    """Print notes about a config to stderr (the command line shows them before training)."""
    for text in notes:
        print(f"note: {text}", file=sys.stderr)


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

    ``path`` is a file, or the name of a bundled config (:func:`find_config`). A setting
    that changes nothing with the parts chosen (:func:`ignored_settings`) is refused when
    an override sets it, and noted on stderr when it comes from the file; so are the
    options of a part an override replaces that the new part does not take
    (:func:`apply_overrides`).
    """
    overrides = list(overrides or [])
    data = read_config_file(path) if path is not None else {}
    notes: list[str] = []
    where = f" in {path}" if path is not None else ""
    try:
        data = apply_overrides(data, overrides, notes)
        cfg = config_from_dict(data)
        typed = [".".join(_override_path(item)) for item in overrides]
        ignored = ignored_settings(cfg)
        for key, why in ignored.items():
            if any(t == key or t.startswith(key + ".") for t in typed):
                raise ConfigError(why)
            notes.append(why)
    except ConfigError as e:
        _say(notes)  # a part replaced may explain the error
        raise ConfigError(f"{e}{where}") from None
    _say(notes)
    # vaekit.fit notes what a config ignores when a run starts; these are said already.
    setattr(cfg, _NOTED, frozenset(ignored))
    return cfg


# The keys of ignored_settings that load_config has noted for the Config it returned (an
# attribute of that object only: a copy made by dataclasses.replace or from a dict is a
# config of its own, noted afresh).
_NOTED = "_vaekit_noted_settings"


def unnoted_settings(cfg: Config, source: object = None) -> dict[str, str]:
    """:func:`ignored_settings` of ``cfg`` that nobody has noted yet: all of them for a
    config built in Python, none of those :func:`load_config` printed for it (or for
    ``source``, the config ``cfg`` was made from). The trainer notes these when a new run
    starts, so that every way of making a config is checked, and each setting is noted once."""
    said: frozenset[str] = getattr(source if source is not None else cfg, _NOTED, frozenset())
    return {k: v for k, v in ignored_settings(cfg).items() if k not in said}


def ignored_settings(cfg: Config) -> dict[str, str]:
    """The settings of ``cfg`` that change nothing with the parts it chooses, by dotted key,
    each with a message that says why and what to do instead.

    Each part declares its own (``ignored`` in :mod:`vaekit.parts`); the rules here hold
    for every part of a kind, by its abilities.

    Example:
        >>> list(ignored_settings(Config(model=ModelConfig(num_classes=10))))
        ['model.num_classes']
    """
    # (data.stream imports torch: see _registry)
    from vaekit.data.stream import PYTHON_DATA

    m = cfg.model
    parts = composition(m, cfg.objective)
    out: dict[str, str] = {}
    if parts.base_posterior.networks and m.encoder != ModelConfig().encoder:
        out["model.encoder"] = (
            f"model.encoder={_text(config_to_dict(m)['encoder'])} changes nothing: "
            f"{parts.names['posterior']} brings its own encoder and decoder networks (its own "
            "options shape them), so model.encoder is not used; leave it out"
        )
    if m.num_classes and not m.conditional:
        out["model.num_classes"] = (
            f"model.num_classes={m.num_classes} changes nothing: only a conditional model "
            "reads labels; set model.conditional=true, or leave model.num_classes out"
        )
    if cfg.train.workers and cfg.data.name != PYTHON_DATA:
        out["train.workers"] = (
            f"train.workers={cfg.train.workers} changes nothing: the workers read a dataset "
            "streamed from a torch Dataset given to vaekit.fit, and data.name="
            f"{cfg.data.name[:80]} is read into memory; leave train.workers at 0"
        )
    samples = getattr(cfg.objective.options, "samples", 1)
    if isinstance(samples, int) and samples > 1 and not parts.posterior.stochastic:
        # Every objective that draws several z per example (IWAE refuses it in its check).
        out["objective.samples"] = (
            f"objective.samples={samples} changes nothing: {parts.names['posterior']} is "
            f"deterministic, so its {samples} samples would all be the same code at that many "
            "times the cost; set objective.samples=1"
        )
    for kind, key, pc in _chosen_parts(cfg):
        if key in out:
            continue
        for option, why in _registry(kind).get(pc.name).ignored(pc.options, parts).items():
            value = _text(getattr(pc.options, option, "?"))
            out.setdefault(f"{key}.{option}", f"{key}.{option}={value} changes nothing: {why}")
    return out

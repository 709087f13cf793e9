"""The contract every part of a VAE keeps, as public checks to run on parts of your own.

As scikit-learn's ``check_estimator`` does for estimators, :func:`check_part` puts one
part (a registered name, a ``module:Class`` path or the class itself) into a small model
with parts that fit it, and checks:

- shapes: q(z|x) has batch ``(B,)`` and event ``(D,)``, samples ``(S, B, D)``, p(x|z)
  batch ``(S, B)``, p(z) event ``(D,)`` (:func:`check_shapes`);
- sampling and densities agree: the log-density of a posterior's own draw matches
  ``log_prob`` of a copy of it, and samples of p(x|z) and p(z) have finite log-densities
  (:func:`check_densities`);
- the objective: a finite scalar loss and per-example terms ``(B,)`` (:func:`check_objective`);
- gradients reach every parameter of the model and of the objective (:func:`check_gradients`);
- KL >= 0 where the posterior has a density, and IWAE with k = 1 equals the single-sample
  ELBO of the same draw (:func:`check_bounds`);
- the abilities each part declares match the members it has (:mod:`vaekit.abilities`:
  a layered posterior, one that brings its networks, a code posterior, a distribution
  with its own loss terms, a prior with a temperature, an objective with a warm-up), in
  both directions (:func:`check_abilities`);
- a short run of optimisation lowers the loss (:func:`check_training`);
- a run stopped after one epoch and resumed ends bit-identical to one that never stopped
  (:func:`check_resume`; config-built parts only).

Each check raises :class:`ContractError` (an AssertionError) that says what failed.
The project's own contract test (``tests/test_parts_contract.py``) runs these checks over
every registered part, so a part added to :mod:`vaekit.registry` is checked with no list
to update.

Example:
    >>> from vaekit.testing import check_part
    >>> report = check_part("prior", "mog", options={"components": 3}, training=False)
    >>> sorted(report)[:3]
    ['abilities', 'bounds', 'densities']
"""

from __future__ import annotations

import copy
import dataclasses
import io
import itertools
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from vaekit.abilities import (
    ClassPrior,
    CodePosterior,
    ExtraTerms,
    FixedLogProb,
    LayeredDistribution,
    LayeredPosterior,
    LayerFlows,
    OwnNetworks,
    TemperedDistribution,
    WarmsUp,
    members,
)
from vaekit.config import Config, ModelConfig, config_from_dict
from vaekit.distributions.posteriors import sample_with_log_prob
from vaekit.distributions.priors import tempered
from vaekit.errors import ConfigError
from vaekit.model import VAE, build_model
from vaekit.objectives import ELBO, IWAE, Objective, build_objective, kl_term
from vaekit.optim import EagerAdam
from vaekit.registry import (
    FLOWS,
    LIKELIHOODS,
    NETWORKS,
    OBJECTIVES,
    POSTERIORS,
    PRIORS,
    REGISTRIES,
)
from vaekit.rundir import read_metrics
from vaekit.train import fit

__all__ = [
    "ContractError",
    "check_shapes",
    "check_densities",
    "check_objective",
    "check_gradients",
    "check_bounds",
    "check_training",
    "start_second_stage",
    "check_resume",
    "check_abilities",
    "check_model",
    "prior_parameter_names",
    "check_part",
    "part_config",
    "check_config",
    "contract_combinations",
]

DATA_SHAPE = (1, 8, 8)


class ContractError(AssertionError):
    """A part that breaks the contract; the message says which check and how."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ContractError(message)


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in t)


def check_shapes(model: VAE, x: Tensor, y: Tensor | None = None, samples: int = 3) -> None:
    """q(z|x): batch (B,), event (D,); z: (S, B, D); p(x|z): batch (S, B); p(z): event (D,)."""
    b, d = len(x), model.latent_dim
    q = model.encode(x, y)
    _require(isinstance(q, Distribution), f"encode must return a Distribution, got {type(q)}")
    _require(
        _shape(q.batch_shape) == (b,) and _shape(q.event_shape) == (d,),
        f"q(z|x) must have batch shape ({b},) and event shape ({d},), got "
        f"{_shape(q.batch_shape)} and {_shape(q.event_shape)}",
    )
    z = q.rsample((samples,))
    _require(
        _shape(z.shape) == (samples, b, d),
        f"q.rsample((S,)) must be (S, B, D) = {(samples, b, d)}, got {_shape(z.shape)}",
    )
    px = model.decode(z, y)
    _require(
        _shape(px.batch_shape) == (samples, b)
        and _shape(px.event_shape) == _shape(model.data_shape),
        f"p(x|z) must have batch shape (S, B) = {(samples, b)} and the data shape as event, "
        f"got {_shape(px.batch_shape)} and {_shape(px.event_shape)}",
    )
    lp = px.log_prob(x)
    _require(_shape(lp.shape) == (samples, b), f"log p(x|z) must be (S, B), got {_shape(lp.shape)}")
    prior = model.prior
    _require(isinstance(prior, Distribution), "the prior must return a Distribution")
    _require(
        _shape(prior.event_shape) == (d,),
        f"p(z) must have event shape ({d},), got {_shape(prior.event_shape)}",
    )
    zp = prior.sample((5,))
    _require(_shape(zp.shape[-1:]) == (d,), f"p(z) samples must end in ({d},)")
    _require(
        _shape(prior.log_prob(z).shape) == (samples, b),
        "log p(z) of (S, B, D) samples must be (S, B)",
    )


def check_densities(model: VAE, x: Tensor, y: Tensor | None = None, samples: int = 3) -> None:
    """Sampling and log-densities agree: finite log p of p(x|z) and p(z) samples; a
    posterior's log q of its own draw matches ``log_prob`` of a copy of the draw."""
    q = model.encode(x, y)
    z = q.rsample((samples,))
    px = model.decode(z, y)
    xs = px.sample()
    _require(
        _shape(xs.shape) == (samples, len(x), *model.data_shape),
        f"p(x|z).sample() must be (S, B, *data_shape), got {_shape(xs.shape)}",
    )
    _require(
        bool(torch.isfinite(px.log_prob(xs)).all()), "log p(x|z) of its own samples is not finite"
    )
    prior = model.prior
    zp = prior.sample((5,))
    _require(
        bool(torch.isfinite(prior.log_prob(zp)).all()), "log p(z) of its own samples is not finite"
    )
    _check_normalised(prior, "p(z)")
    if not model.composition.posterior.density:
        return
    _check_normalised(q, "q(z|x)")
    z2, log_q = sample_with_log_prob(q, (samples,))
    _require(_shape(log_q.shape) == (samples, len(x)), "log q(z|x) must be (S, B)")
    _require(bool(torch.isfinite(log_q).all()), "log q(z|x) of its own draws is not finite")
    again = q.log_prob(z2.detach().clone())
    if not torch.allclose(again, log_q.detach(), atol=2e-3, rtol=1e-4):
        worst = float((again - log_q.detach()).abs().max())
        raise ContractError(
            f"log q(z|x) of a copy of a draw differs from the density the draw came with by "
            f"{worst:.3g} nats: log_prob must give the density rsample draws from"
        )


def _check_normalised(dist: Distribution, what: str, draws: int = 20000) -> None:
    """exp(log_prob) integrates to one: importance sampling from a Gaussian twice as wide
    as ``dist`` (its mean and standard deviation) estimates the normaliser of each batch
    member; a log-density off by a constant, or a wrong log-determinant, shows here. A
    distribution over finitely many values (discrete codes) sums its probabilities over
    ``enumerate_support`` instead, where that list is short enough to make."""
    if dist.has_enumerate_support:
        try:
            support = dist.enumerate_support()
        except NotImplementedError:  # too many values to list
            return
        with torch.no_grad():
            total = torch.logsumexp(dist.log_prob(support).double(), 0)
        worst = float(total.abs().max())
        if worst > 1e-4:
            raise ContractError(
                f"{what} does not sum to one over its {len(support)} values: its log-normaliser "
                f"is {worst:.3g} (log_prob must be a normalised log-probability)"
            )
        return
    with torch.no_grad():
        loc, scale = dist.mean.detach(), 2.0 * dist.stddev.detach().clamp_min(1e-3)
        r = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
        z = r.sample((draws,))
        lw = (dist.log_prob(z) - r.log_prob(z)).double()
        log_z = torch.logsumexp(lw, 0) - math.log(draws)
        w = torch.exp(lw - lw.max(0).values)
        # Relative standard error of the mean weight (delta method for its log).
        se = w.std(0) / (w.mean(0) * math.sqrt(draws))
    worst = float(log_z.abs().max())
    if not bool((log_z.abs() < 0.05 + 6 * se).all()):
        raise ContractError(
            f"{what} does not integrate to one: its log-normaliser is {worst:.3f} nats "
            "(log_prob must be a normalised log-density of what the distribution samples)"
        )


def _backward(
    objective: Objective, model: VAE, x: Tensor, y: Tensor | None
) -> dict[str, list[nn.Parameter]]:
    groups = objective.param_groups(model)
    out = objective(model, x, y)
    if out.losses is None:
        out.loss.backward()
    else:  # as the trainer does: each group's loss into its own parameters only
        for name, params in groups.items():
            out.losses[name].backward(inputs=params, retain_graph=True)
    return groups


def check_objective(model: VAE, objective: Objective, x: Tensor, y: Tensor | None = None) -> None:
    """A finite scalar loss; every term per example ``(B,)`` and finite; the bound the
    objective's abilities name is among its terms."""
    objective.setup(model)
    out = objective(model, x, y)
    _require(
        _shape(out.loss.shape) == (), f"the loss must be a scalar, got {_shape(out.loss.shape)}"
    )
    _require(bool(torch.isfinite(out.loss)), f"the loss is not finite: {float(out.loss.detach())}")
    for name, t in out.terms.items():
        _require(
            _shape(t.shape) == (len(x),),
            f"term {name!r} must be per example (B,), got {_shape(t.shape)}",
        )
        _require(bool(torch.isfinite(t).all()), f"term {name!r} is not finite")
    _require(
        {"loss", "recon"} <= set(out.terms), "an objective reports at least 'loss' and 'recon'"
    )
    bound = objective.abilities.bound
    _require(
        bound in out.terms, f"its abilities name {bound!r} as the bound, but no term has that name"
    )
    groups = objective.param_groups(model)
    _require(
        set(groups) == set(objective.abilities.optimizers),
        f"abilities.optimizers {objective.abilities.optimizers} must name its param_groups {sorted(groups)}",
    )


def check_gradients(
    model: VAE,
    objective: Objective,
    x: Tensor,
    y: Tensor | None = None,
    *,
    unused: Sequence[str] = (),
) -> None:
    """Gradients reach every parameter of the model and of the objective, and are finite.

    ``unused`` lists name prefixes of parameters that the objective leaves alone by design
    (the plain autoencoder's loss does not involve the prior).
    """
    # And the parts the objective leaves untrained by design (a second stage's frozen encoder).
    unused = (*unused, *(f"{m}." for m in objective.abilities.fixed))
    model.zero_grad()
    objective.zero_grad()
    groups = _backward(objective, model, x, y)
    named = dict(model.named_parameters()) | {
        f"objective.{k}": v for k, v in objective.named_parameters()
    }
    named = {k: v for k, v in named.items() if not k.startswith(tuple(unused))}
    dead = [k for k, p in named.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    _require(not dead, f"no gradient reaches {dead}")
    bad = [
        k for k, p in named.items() if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]
    _require(not bad, f"non-finite gradients in {bad}")
    ids = [id(p) for ps in groups.values() for p in ps]
    _require(len(ids) == len(set(ids)), "a parameter is in two optimiser groups")


def check_bounds(model: VAE, x: Tensor, y: Tensor | None = None) -> None:
    """KL(q || p) >= 0 (Monte Carlo, within 4 standard errors) and IWAE(k=1) = ELBO of the
    same draw; both only where the posterior has a density."""
    if not model.composition.posterior.density:
        return
    with torch.no_grad():
        q = model.encode(x, y)
        prior = model.prior
        zz, lq = sample_with_log_prob(q, (4000,))
        ratio = lq - prior.log_prob(zz)
        stderr = ratio.std(0) / math.sqrt(ratio.shape[0])
        _require(
            bool((ratio.mean(0) > -4 * stderr - 1e-4).all()),
            f"KL(q || p) estimate is negative: {ratio.mean(0).min().item():.4f} nats",
        )
        kl = kl_term(q, prior, zz, "auto")
        _require(_shape(kl.shape) == (len(x),), "the KL term must be per example (B,)")
        try:
            closed = torch.distributions.kl_divergence(q, prior)
        except NotImplementedError:
            closed = None
        if closed is not None:
            _require(bool((closed >= -1e-5).all()), "the closed-form KL is negative")
        state = torch.random.get_rng_state()
        iwae = IWAE(samples=1)(model, x, y).terms["iwae"]
        torch.random.set_rng_state(state)
        elbo = ELBO(samples=1, kl="mc")(model, x, y).terms["elbo"]
    if not torch.allclose(iwae, elbo, atol=1e-4, rtol=1e-5):
        raise ContractError(
            f"IWAE with k = 1 must equal the single-sample ELBO of the same draw; they differ by "
            f"{float((iwae - elbo).abs().max()):.3g} nats"
        )


def _mean_term(objective: Objective, model: VAE, x: Tensor, y: Tensor | None, key: str) -> float:
    with torch.no_grad():
        vals = []
        for seed in range(4):
            with _seeded(100 + seed):
                vals.append(float(objective(model, x, y).terms[key].mean()))
    return sum(vals) / len(vals)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_training(
    model: VAE,
    objective: Objective,
    x: Tensor,
    y: Tensor | None = None,
    *,
    steps: int = 25,
    lr: float = 3e-3,
    key: str | None = None,
) -> tuple[float, float]:
    """A few Adam steps on one batch lower the loss (the ``key`` term; for an objective
    whose loss moves with a learned estimate, as adversarial VB's, its ``recon``).

    A second stage (an objective that holds parts fixed, ``abilities.fixed``, as a prior
    fitted to a frozen encoder's codes) is first given something to learn: see
    :func:`start_second_stage`. Returns ``(before, after)``.
    """
    if objective.abilities.fixed:
        start_second_stage(model, objective.abilities.fixed)
    groups = objective.param_groups(model)
    opts = {k: EagerAdam(ps, lr=lr) for k, ps in groups.items()}
    if key is None:
        key = "recon" if len(groups) > 1 else "loss"
    before = _mean_term(objective, model, x, y, key)
    for _ in range(steps):
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        _backward(objective, model, x, y)
        for o in opts.values():
            o.step()
    after = _mean_term(objective, model, x, y, key)
    _require(
        math.isfinite(after) and after < before,
        f"{steps} steps of Adam (lr {lr}) did not lower the {key}: {before:.4f} -> {after:.4f}",
    )
    return before, after


def start_second_stage(model: VAE, fixed: Sequence[str]) -> None:
    """Set a fresh model up as a second stage finds it: the ``fixed`` encoder's codes
    spread (its weights x 3, as a trained encoder's codes are) and every part the stage
    fits moved away from them (unit Gaussian noise on its weights).

    An untrained encoder puts its codes within hundredths of a nat of a fresh prior, so a
    stage that fits the prior alone would have nothing to learn. Uses torch's global RNG.

    Example:
        >>> from vaekit.config import ModelConfig, part
        >>> m = build_model(ModelConfig(latent_dim=2, prior=part("mog")), (1, 4, 4))
        >>> prior = [p.clone() for p in m.prior_module.parameters()]
        >>> decoder = {k: v.clone() for k, v in m.decoder.state_dict().items()}
        >>> start_second_stage(m, ("encoder", "decoder"))
        >>> all(not torch.equal(a, b) for a, b in zip(prior, m.prior_module.parameters()))
        True
        >>> all(torch.equal(v, m.decoder.state_dict()[k]) for k, v in decoder.items())
        True
    """
    with torch.no_grad():
        for name, module in model.named_children():
            if name in fixed:
                if name == "encoder":
                    for p in module.parameters():
                        p.mul_(3.0)
            else:
                for p in module.parameters():
                    p.add_(torch.randn_like(p))


def check_resume(config: Config, *, epochs: int = 2, data_dir: str | None = None) -> None:
    """Training ``epochs`` epochs straight and stopping after one, then resuming, give
    bit-identical weights and metrics (the trainer's exact resume, with your parts)."""
    cfg = copy.deepcopy(config)
    cfg.train.epochs = epochs
    with tempfile.TemporaryDirectory() as d:
        a, b = Path(d) / "straight", Path(d) / "resumed"
        quiet = io.StringIO()
        fit(cfg, a, data_dir=data_dir, progress=False, log=quiet)
        first = copy.deepcopy(cfg)
        first.train.epochs = 1
        fit(first, b, data_dir=data_dir, progress=False, log=quiet)
        fit(None, b, resume=True, epochs=epochs, data_dir=data_dir, progress=False, log=quiet)
        # Tensors, not file bytes: safetensors orders its metadata header differently per write.
        wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
        same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        _require(same, "weights after a resume differ from those of an uninterrupted run")

        def scores(run: Path) -> list[Any]:
            return [
                {k: r.get(k) for k in ("epoch", "train", "valid", "test")}
                for r in read_metrics(run)
            ]

        _require(
            scores(a) == scores(b), "metrics after a resume differ from an uninterrupted run's"
        )


def prior_parameter_names(model: VAE) -> tuple[str, ...]:
    """Names of the prior's parameters (:meth:`VAE.prior_parameters`), which an objective
    that never draws from the posterior (the plain autoencoder's) leaves alone."""
    ids = {id(p) for p in model.prior_parameters()}
    return tuple(n for n, p in model.named_parameters() if id(p) in ids)


def _same(declared: bool, has: bool, what: str, ability: str, protocol: type) -> None:
    """A declared ability and the members that go with it: both or neither."""
    names = ", ".join(members(protocol))
    if declared and not has:
        raise ContractError(
            f"{what} declares abilities.{ability} but lacks the members of "
            f"vaekit.abilities.{protocol.__name__} ({names})"
        )
    if has and not declared:
        raise ContractError(
            f"{what} has the members of vaekit.abilities.{protocol.__name__} ({names}) but "
            f"does not declare abilities.{ability}=True: declare it, so that the library "
            "treats it as one"
        )


def check_abilities(model: VAE, objective: Objective, x: Tensor, y: Tensor | None = None) -> None:
    """Each part's declared abilities against the Protocols of :mod:`vaekit.abilities`
    it satisfies, both ways: a part that declares an ability has its members, and a part
    that has them declares it (the library asks the declaration first, so an undeclared
    ability is never used)."""
    parts = model.composition
    head = model.encoder.head
    base = parts.base_posterior
    _same(
        base.layered,
        isinstance(head, LayeredPosterior),
        "the posterior",
        "layered",
        LayeredPosterior,
    )
    _same(
        base.layered and base.takes_flow,
        isinstance(head, LayerFlows),
        "the posterior",
        "layered and abilities.takes_flow",
        LayerFlows,
    )
    _same(base.networks, isinstance(head, OwnNetworks), "the posterior", "networks", OwnNetworks)
    _same(
        base.discrete, isinstance(head, CodePosterior), "the posterior", "discrete", CodePosterior
    )
    with torch.no_grad():
        q = model.encode(x, y)
        _same(
            base.extras, isinstance(q, ExtraTerms), "the posterior's q(z|x)", "extras", ExtraTerms
        )
        _same(
            base.layered,
            isinstance(q, LayeredDistribution),
            "the posterior's q(z|x)",
            "layered",
            LayeredDistribution,
        )
        if not parts.flow:  # a flow's q keeps no fixed-parameter density
            # (A diagonal Gaussian has one without saying so: dreg is declared by the others.)
            gaussian = isinstance(q, Independent) and isinstance(q.base_dist, Normal)
            fixed = isinstance(q, FixedLogProb)
            _same(base.dreg and not gaussian, fixed, "the posterior's q(z|x)", "dreg", FixedLogProb)
        # The prior part's own p(z) (a hierarchy's top layer). One that declares a
        # temperature can be sampled at one: a distribution that says what its temperature
        # means (it may refuse one for some options, saying why), or one tempered() knows
        # (a Gaussian, a mixture of them, which need not declare it, as with dreg).
        prior = model.prior
        own = getattr(prior, "top", prior) if base.layered else prior
        says = isinstance(own, TemperedDistribution)
        tempers = says
        if not says:
            try:
                tempered(own, 0.5)
                tempers = True
            except ConfigError:
                tempers = False
        declared = parts.prior.temperature
        if says and not declared:
            _same(False, True, "the prior's p(z)", "temperature", TemperedDistribution)
        if declared and not tempers:
            raise ContractError(
                "the prior declares abilities.temperature, but its p(z) cannot be sampled at a "
                "temperature: it is no Gaussian nor mixture of them, and has no tempered(t) "
                "(vaekit.abilities.TemperedDistribution)"
            )
    _same(
        parts.prior.per_class,
        isinstance(model.prior_module, ClassPrior),
        "the prior",
        "per_class",
        ClassPrior,
    )
    if objective.abilities.classifier and model.classifier is None:
        raise ContractError(
            "the objective declares abilities.classifier, but the model has no classifier "
            "q(y|x) (model.classifier)"
        )
    _same(
        objective.abilities.warmup,
        isinstance(objective, WarmsUp),
        "the objective",
        "warmup",
        WarmsUp,
    )


def check_model(
    model: VAE,
    objective: Objective,
    x: Tensor,
    y: Tensor | None = None,
    *,
    samples: int = 3,
    unused: Sequence[str] = (),
) -> dict[str, str]:
    """Every single-batch check on a built model and objective; returns what passed."""
    done: dict[str, str] = {}
    with _seeded(0):
        check_abilities(model, objective, x, y)
        done["abilities"] = "ok"
        check_shapes(model, x, y, samples)
        done["shapes"] = "ok"
        check_densities(model, x, y, samples)
        done["densities"] = "ok"
        check_objective(model, objective, x, y)
        done["objective"] = "ok"
        check_gradients(model, objective, x, y, unused=unused)
        done["gradients"] = "ok"
        check_bounds(model, x, y)
        done["bounds"] = "ok" if model.composition.posterior.density else "n/a (no density)"
    return done


# -- one part in a small model ---------------------------------------------------------------


def part_config(
    kind: str,
    part: str | type,
    options: dict[str, Any] | None = None,
    *,
    others: dict[str, Any] | None = None,
    latent_dim: int = 3,
) -> Config:
    """A small config that holds ``part`` (a name, ``module:Class`` or a class) and parts
    that fit it: a Gaussian posterior unless the part needs another, the objective its
    posterior allows, a likelihood for the data its abilities fit.

    ``others`` sets further settings as dotted overrides (``{"model.prior": "mog"}``).
    """
    name = part if isinstance(part, str) else f"{part.__module__}:{part.__qualname__}"
    spec = REGISTRIES[kind].get(name)
    value: dict[str, Any] = {"name": name, **(options or {})}
    sets: dict[str, Any] = {
        "model.latent_dim": latent_dim,
        "model.encoder": {"name": "mlp", "hidden": [24], "activation": "tanh"},
    }
    field = {
        "network": "model.encoder",
        "posterior": "model.posterior",
        "flow": "model.flow",
        "prior": "model.prior",
        "likelihood": "model.likelihood",
        "objective": "objective",
        # A divergence is checked inside the ELBO, which weighs it by beta.
        "divergence": "objective.divergence",
    }[kind]
    if kind == "divergence":
        sets["objective"] = {"name": "elbo"}
    sets[field] = value
    if kind == "network":
        sets["model.encoder"] = value
    if kind == "posterior":
        ab = spec.abilities
        fits = [
            p
            for p in OBJECTIVES
            if (ab.density or not p.abilities.needs_density)
            and (ab.stochastic or ab.density or not p.abilities.needs_stochastic)
            and not p.abilities.fixed
        ]
        # The plain ELBO first where it fits (the registry lists names alphabetically).
        fits.sort(key=lambda p: (not p.abilities.needs_stochastic, p.name != "elbo"))
        objectives = [{"name": p.name} for p in fits]
        if ab.discrete:  # a prior over its codes
            sets["model.prior"] = next(p.name for p in PRIORS if p.abilities.discrete)
    else:
        objectives = [sets.get("objective", {"name": "elbo"})]
    if kind == "objective" and spec.abilities.fixed and "prior_module" not in spec.abilities.fixed:
        # A second stage fits the prior alone: give it a prior with something to learn.
        sets["model.prior"] = next(
            p.name
            for p in PRIORS
            if p.abilities.learned and not p.abilities.discrete and not p.abilities.per_class
        )
    if kind == "prior" and spec.abilities.discrete:  # a posterior whose codes it scores
        sets["model.posterior"] = next(p.name for p in POSTERIORS if p.abilities.discrete)
    if (kind == "prior" and spec.abilities.per_class) or (
        kind == "objective" and spec.abilities.classifier
    ):
        sets["model.conditional"] = True  # a prior per class, a classifier: labels
    if kind == "objective" and spec.abilities.classifier:
        sets["model.classifier"] = {"name": "mlp", "hidden": [24], "activation": "tanh"}
    # The first objective that takes the posterior (its own checks may refuse it).
    for i, objective in enumerate(objectives):
        # A likelihood that does not fit binary data gets grey or real data (see _data_for).
        data: dict[str, Any] = {}
        for key, v in ({**sets, "objective": objective} | (others or {})).items():
            node = data
            *path, last = key.split(".")
            for p in path:
                node = node.setdefault(p, {})
            node[last] = v
        try:
            return config_from_dict(data)
        except ConfigError:
            if i == len(objectives) - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _data_for(cfg: Config, n: int, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """A batch the config's likelihood fits: binary where it can, else grey levels or reals."""
    ab = LIKELIHOODS.get(cfg.model.likelihood.name).abilities
    g = torch.Generator().manual_seed(seed)
    if "binary" in ab.fits:
        return torch.rand((n, *shape), generator=g).round()
    if "grey" in ab.fits:
        levels = getattr(cfg.model.likelihood.options, "levels", 256)
        return torch.randint(0, levels, (n, *shape), generator=g).float() / (levels - 1)
    return torch.randn((n, *shape), generator=g)


def check_part(
    kind: str,
    part: str | type,
    options: dict[str, Any] | None = None,
    *,
    others: dict[str, Any] | None = None,
    data_shape: tuple[int, ...] = DATA_SHAPE,
    batch: int = 6,
    training: bool = True,
    resume: bool = False,
) -> dict[str, str]:
    """Check one part inside a small model built around it; returns what each check found.

    ``part`` is a registered name, ``"module:Class"`` or a class; ``options`` its options.
    ``training`` adds :func:`check_training`; ``resume`` adds :func:`check_resume` (on
    the UCI digits, a few seconds), which needs the part to be importable by path.

    Example:
        >>> check_part("likelihood", "gaussian", {"sigma": "learned"}, training=False)["shapes"]
        'ok'
    """
    cfg = part_config(kind, part, options, others=others)
    return check_config(cfg, data_shape=data_shape, batch=batch, training=training, resume=resume)


def check_config(
    cfg: Config,
    *,
    data_shape: tuple[int, ...] = DATA_SHAPE,
    batch: int = 6,
    training: bool = True,
    resume: bool = False,
    seed: int = 0,
) -> dict[str, str]:
    """:func:`check_model` (and optionally training and resume) on the model of a config."""
    with _seeded(seed):
        model = build_model(cfg.model, data_shape, num_classes=3 if cfg.model.conditional else 0)
        objective = build_objective(cfg.objective)
    x = _data_for(cfg, batch, data_shape, seed)
    y = torch.arange(batch) % 3 if cfg.model.conditional else None
    # The plain autoencoder's loss leaves the prior alone by design.
    unused = prior_parameter_names(model) if not objective.abilities.needs_stochastic else ()
    done = check_model(model, objective, x, y, unused=unused)
    if training:
        with _seeded(seed + 1):
            model = build_model(
                cfg.model, data_shape, num_classes=3 if cfg.model.conditional else 0
            )
            objective = build_objective(cfg.objective)
        xt = _data_for(cfg, 48, data_shape, seed + 1)
        yt = torch.arange(48) % 3 if cfg.model.conditional else None
        with _seeded(seed + 2):
            before, after = check_training(model, objective, xt, yt)
        done["training"] = f"{before:.3f} -> {after:.3f}"
    if resume:
        small = copy.deepcopy(cfg)
        small.data.name, small.data.limit = "digits", 96
        small.train.batch_size, small.train.eval_batch_size = 32, 512
        check_resume(small)
        done["resume"] = "bit-identical"
    return done


# -- the registry's combinations ---------------------------------------------------------------


def contract_combinations(
    variants: Callable[[str, str], list[dict[str, Any]]] | None = None,
    *,
    cover: bool = False,
) -> list[dict[str, Any]]:
    """Combinations of registered posterior (with each flow, or none), prior, likelihood,
    objective (with each of its nested parts, such as ``objective.divergence``) and network
    that the config validator accepts, as config data.

    ``variants(kind, name)`` gives the option sets to try for a part (tiny flows, few
    mixture components, an estimator's variants); by default each part's defaults.

    ``cover=True`` keeps every combination of the parts that shape the latent side
    (posterior and flow, prior, objective) and takes the data side (likelihood, network)
    in turn instead of crossing it: each posterior meets every likelihood, and both
    networks, at least once. The exhaustive product grows with the product of every
    registry's size (over 1,200 tests for 7 posteriors); the cover grows with the latent
    side only.
    """

    def specs(kind: str, name: str) -> list[dict[str, Any]]:
        out = [{"name": name, **o} for o in (variants(kind, name) if variants else [{}])]
        # A part nested in this one's options (the objective's divergence): each registered one.
        for f in dataclasses.fields(REGISTRIES[kind].get(name).options):
            inner = f.metadata.get("part")
            if inner is not None and not any(f.name in o for o in out):
                out = [
                    o | {f.name: s} for o in out for s in every(inner, REGISTRIES[inner].names())
                ]
        return out

    def every(kind: str, names: list[str]) -> list[dict[str, Any]]:
        return [s for n in names for s in specs(kind, n)]

    def config(
        post: dict[str, Any],
        flow: dict[str, Any] | None,
        prior: dict[str, Any],
        lik: dict[str, Any],
        obj: dict[str, Any],
        net: dict[str, Any],
    ) -> dict[str, Any] | None:
        data = {
            "model": {
                "latent_dim": 3,
                "encoder": net,
                "posterior": post,
                "flow": flow,
                "prior": prior,
                "likelihood": lik,
            },
            "objective": obj,
        }
        # A prior per class or a classifier: a conditional model of 3 classes (and the
        # classifier the network of this combination), checked without flows (a flow meets
        # the labels nowhere: the other combinations check it).
        if PRIORS.get(prior["name"]).abilities.per_class or labelled(obj):
            if flow is not None:
                return None
            data["model"] |= {"conditional": True, "num_classes": 3}
        if labelled(obj):
            data["model"]["classifier"] = net
        try:
            config_from_dict(copy.deepcopy(data))
        except ConfigError:
            return None
        return data

    post_specs = every("posterior", POSTERIORS.names())
    posts: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for post in post_specs:
        posts.append((post, None))
        if POSTERIORS.get(post["name"]).abilities.takes_flow:
            posts += [(post, f) for f in every("flow", FLOWS.names())]
    # The prior an objective that never draws from the posterior is checked with: the
    # default one (the first name may be a prior over discrete codes only).
    default_prior = ModelConfig().prior.name
    first_prior = default_prior if default_prior in PRIORS.names() else PRIORS.names()[0]
    priors = every("prior", PRIORS.names())
    liks = every("likelihood", LIKELIHOODS.names())
    objs = every("objective", OBJECTIVES.names())
    nets = every("network", NETWORKS.names())

    def labelled(obj: dict[str, Any]) -> bool:
        return bool(OBJECTIVES.get(obj["name"]).abilities.classifier)

    def needed(prior: dict[str, Any], obj: dict[str, Any]) -> bool:
        # An objective that never draws from the posterior ignores the prior: one is enough.
        if not (
            OBJECTIVES.get(obj["name"]).abilities.needs_stochastic or prior["name"] == first_prior
        ):
            return False
        # A prior per class meets the default objective and those with a classifier; an
        # objective with a classifier meets the default prior and those per class.
        per_class = PRIORS.get(prior["name"]).abilities.per_class
        if per_class and not labelled(obj):
            return obj["name"] == Config().objective.name
        if labelled(obj) and not per_class:
            return prior["name"] == first_prior
        return True

    out = []
    if not cover:
        for (post, flow), prior, lik, obj, net in itertools.product(
            posts, priors, liks, objs, nets
        ):
            if needed(prior, obj):
                data = config(post, flow, prior, lik, obj, net)
                if data is not None:
                    out.append(data)
        return out
    default_objective = Config().objective.name
    for post in post_specs:
        mine = [pf for pf in posts if pf[0] is post]
        abilities = POSTERIORS.get(post["name"]).abilities
        # A posterior that brings its own networks ignores model.encoder: one is enough.
        nets_here = nets[:1] if abilities.networks else nets
        # A flow on a hierarchy meets every prior (with the ELBO) and every objective (with
        # the default prior): the pairs, not every triple, which the hierarchy without a
        # flow already runs.
        cores = [
            (p, f, prior, obj)
            for (p, f), prior, obj in itertools.product(mine, priors, objs)
            if needed(prior, obj)
            and (
                f is None
                or not abilities.layered
                or prior["name"] == first_prior
                or obj["name"] == default_objective
            )
        ]
        # Likelihood varies fastest and the network alternates: any len(liks) consecutive
        # turns meet every likelihood, and 2 * len(liks) every (likelihood, network) pair.
        turn, done, valid = 0, 0, [True] * len(cores)
        seen: set[str] = set()
        while any(valid) and (done < len(cores) or len(seen) < len(liks)):
            i = done % len(cores)
            done += 1
            if not valid[i]:
                continue
            p, f, prior, obj = cores[i]
            valid[i] = False
            for _ in range(len(liks) * len(nets_here)):
                lik = liks[turn % len(liks)]
                net = nets_here[(turn + turn // len(liks)) % len(nets_here)]
                turn += 1
                data = config(p, f, prior, lik, obj, net)
                if data is not None:
                    out.append(data)
                    seen.add(lik["name"])
                    valid[i] = True
                    break
            if done > 4 * (len(cores) + len(liks)):
                break  # likelihoods this posterior can never take
        # The turns can keep missing a pairing that only some networks allow: any likelihood
        # or network this posterior has not met yet, with the first core that takes it.
        met = {
            (c["model"]["likelihood"]["name"], c["model"]["encoder"]["name"])
            for c in out
            if c["model"]["posterior"] is post
        }
        for lik, net in itertools.product(liks, nets_here):
            if any(m[0] == lik["name"] for m in met) and any(m[1] == net["name"] for m in met):
                continue
            for p, f, prior, obj in cores:
                data = config(p, f, prior, lik, obj, net)
                if data is not None:
                    out.append(data)
                    met.add((lik["name"], net["name"]))
                    break
    return out

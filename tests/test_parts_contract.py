"""One contract for every combination of parts that makes sense.

posterior (gaussian, +planar, +iaf, implicit, point) x prior (normal, mog, vamp) x
likelihood (six heads) x objective (elbo, iwae, iwae with DReG, avb, ae) x network (mlp, conv); the
combinations the config validator accepts are the ones that make sense (a point or
implicit posterior has no density, the VampPrior needs the Gaussian posterior, ...),
so the list below is built by asking it.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Distribution

from vaekit.config import Config, ConfigError, load_config
from vaekit.data import load_dataset
from vaekit.distributions import sample_with_log_prob
from vaekit.model import VAE, build_model
from vaekit.objectives import ELBO, IWAE, Objective, build_objective, kl_term

SHAPE = (1, 8, 8)
LEVELS = 17  # the UCI digits have 17 grey levels: 0, 1/16, ..., 1
POSTERIORS = [
    ("gaussian", "none"),
    ("gaussian", "planar"),
    ("gaussian", "iaf"),
    ("implicit", "none"),
    ("point", "none"),
]
PRIORS = ["normal", "mog", "vamp"]
LIKELIHOODS = [
    "bernoulli",
    "continuous-bernoulli",
    "gaussian",
    "student-t",
    "categorical",
    "discretized-logistic",
]
# iwae-dreg: the IWAE bound with the doubly reparameterised gradient (objective.gradient).
OBJECTIVES = ["elbo", "iwae", "iwae-dreg", "avb", "ae"]
NETS = ["mlp", "conv"]


def _overrides(post: str, flow: str, prior: str, lik: str, obj: str, net: str) -> list[str]:
    return [
        f"model.posterior={post}",
        f"model.flow={flow}",
        f"model.prior={prior}",
        f"model.likelihood={lik}",
        f"objective.name={obj.removesuffix('-dreg')}",
        f"objective.gradient={'dreg' if obj.endswith('-dreg') else 'standard'}",
        f"model.encoder.type={net}",
        "model.latent_dim=3",
        "model.encoder.hidden=[24]",
        "model.encoder.channels=[4, 8]",
        # tanh: no dead units at initialisation, so every parameter gets a gradient.
        "model.encoder.activation=tanh",
        "model.flow_length=2",
        "model.flow_hidden=12",
        "model.prior_components=3",
        f"model.levels={LEVELS}",
        "model.likelihood_components=2",
        "model.sigma=learned",
        "objective.samples=3",
        "objective.discriminator=[24]",
    ]


def _combos() -> list[tuple[str, ...]]:
    out = []
    for (post, flow), prior, lik, obj, net in itertools.product(
        POSTERIORS, PRIORS, LIKELIHOODS, OBJECTIVES, NETS
    ):
        # The plain autoencoder ignores the prior: one prior is enough for it.
        if obj == "ae" and prior != "normal":
            continue
        try:
            load_config(None, _overrides(post, flow, prior, lik, obj, net))
        except ConfigError:
            continue
        out.append((post, flow, prior, lik, obj, net))
    return out


COMBOS = _combos()
IDS = ["-".join(p for p in c if p != "none") for c in COMBOS]


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return load_dataset("digits").train.x[:48]


def _build(combo: tuple[str, ...], seed: int = 0) -> tuple[Config, VAE, Objective]:
    torch.manual_seed(seed)
    cfg = load_config(None, _overrides(*combo))
    model = build_model(cfg.model, SHAPE)
    objective = build_objective(cfg.objective)
    return cfg, model, objective


def _backward(
    objective: Objective, model: VAE, x: torch.Tensor
) -> dict[str, list[torch.nn.Parameter]]:
    groups = objective.param_groups(model)
    out = objective(model, x)
    if out.losses is None:
        out.loss.backward()
    else:  # as the trainer does it: each group's loss into its own parameters only
        for name, params in groups.items():
            out.losses[name].backward(inputs=params, retain_graph=True)
    return groups


def test_the_combinations_cover_every_part() -> None:
    seen = {part for combo in COMBOS for part in combo}
    assert seen >= {p for pf in POSTERIORS for p in pf} | set(PRIORS) | set(LIKELIHOODS) | set(
        OBJECTIVES
    ) | set(NETS)
    assert len(COMBOS) >= 250


@pytest.mark.parametrize("combo", COMBOS, ids=IDS)
def test_contract(combo: tuple[str, ...], batch: torch.Tensor) -> None:
    post, flow, prior_name, lik, obj, net = combo
    cfg, model, objective = _build(combo)
    x = batch[:6]
    s, b, d = 3, 6, cfg.model.latent_dim

    # -- shapes: q(z|x) batch (B,), samples (S, B, D), p(x|z) batch (S, B), p(z) event (D,)
    q = model.encode(x)
    assert isinstance(q, Distribution)
    assert q.batch_shape == (b,) and q.event_shape == (d,)
    z = q.rsample((s,))
    assert z.shape == (s, b, d)
    px = model.decode(z)
    assert px.batch_shape == (s, b) and px.event_shape == SHAPE
    assert px.log_prob(x).shape == (s, b)
    prior = model.prior
    assert isinstance(prior, Distribution) and prior.event_shape == (d,)
    zp = prior.sample((5,))
    assert zp.shape == (5, d)
    assert torch.isfinite(prior.log_prob(zp)).all() and prior.log_prob(z).shape == (s, b)

    # -- sampling and densities agree with each other
    xs = px.sample()
    assert xs.shape == (s, b, *SHAPE)
    assert torch.isfinite(px.log_prob(xs)).all()
    if post == "gaussian":
        z2, log_q = sample_with_log_prob(q, (s,))
        assert log_q.shape == (s, b)
        # log q of a value q did not just draw (a copy) must agree: flows invert exactly.
        torch.testing.assert_close(
            q.log_prob(z2.detach().clone()), log_q.detach(), atol=2e-3, rtol=1e-4
        )

    # -- the objective: finite loss, per-example terms (B,)
    out = objective(model, x)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    for name, t in out.terms.items():
        assert t.shape == (b,), name
        assert torch.isfinite(t).all(), name
    assert {"loss", "recon"} <= set(out.terms)
    if obj != "ae":
        assert {"kl", "elbo"} <= set(out.terms)

    # -- gradients reach every parameter of the model and of the objective
    model.zero_grad()
    groups = _backward(objective, model, x)
    named = dict(model.named_parameters()) | {
        f"objective.{k}": v for k, v in objective.named_parameters()
    }
    if obj == "ae":
        # The autoencoder loss has no prior term: its prior's parameters are unused by design.
        named = {k: v for k, v in named.items() if not k.startswith("prior_module.")}
    dead = [k for k, p in named.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not dead, f"no gradient reaches {dead}"
    assert all(bool(torch.isfinite(p.grad).all()) for p in named.values() if p.grad is not None)
    assert sum(len(v) for v in groups.values()) == len({id(p) for v in groups.values() for p in v})

    # -- KL >= 0 where it is defined (posteriors with a density)
    if post == "gaussian":
        with torch.no_grad():
            q = model.encode(x)
            zz, lq = sample_with_log_prob(q, (4000,))
            ratio = lq - prior.log_prob(zz)  # (S, B)
            stderr = ratio.std(0) / math.sqrt(ratio.shape[0])
            assert (ratio.mean(0) > -4 * stderr - 1e-4).all()
            kl = kl_term(q, prior, zz, "auto")
            assert kl.shape == (b,)
            if flow == "none" and prior_name == "normal":
                assert (kl >= 0).all()  # analytic

    # -- IWAE with k = 1 is the single-sample ELBO of the same draw
    if post == "gaussian":
        with torch.no_grad():
            torch.manual_seed(7)
            iwae = IWAE(samples=1)(model, x).terms["iwae"]
            torch.manual_seed(7)
            elbo = ELBO(samples=1, kl="mc")(model, x).terms["elbo"]
        torch.testing.assert_close(iwae, elbo, atol=1e-4, rtol=1e-5)


def _eval_loss(objective: Objective, model: VAE, x: torch.Tensor, key: str) -> float:
    with torch.no_grad():
        vals = []
        for seed in range(4):
            torch.manual_seed(100 + seed)
            vals.append(float(objective(model, x).terms[key].mean()))
    return sum(vals) / len(vals)


@pytest.mark.parametrize("combo", COMBOS, ids=IDS)
def test_short_training_lowers_the_loss(combo: tuple[str, ...], batch: torch.Tensor) -> None:
    post, flow, prior_name, lik, obj, net = combo
    _, model, objective = _build(combo, seed=1)
    groups = objective.param_groups(model)
    opts = {k: torch.optim.Adam(ps, lr=3e-3) for k, ps in groups.items()}
    # AVB's loss uses the discriminator's moving KL estimate: judge it by the reconstruction.
    key = "recon" if obj == "avb" else "loss"
    before = _eval_loss(objective, model, batch, key)
    for _ in range(25):
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        _backward(objective, model, batch)
        for o in opts.values():
            o.step()
    after = _eval_loss(objective, model, batch, key)
    assert math.isfinite(after) and after < before, (before, after)

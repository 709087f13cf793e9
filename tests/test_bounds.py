"""MIWAE, PIWAE and CIWAE (Rainforth et al. 2018), for one layer and for a hierarchy."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from conftest import train_tiny

from vaekit.bounds import CIWAE, MIWAE, PIWAE, miwae_bound
from vaekit.config import load_config
from vaekit.model import build_model
from vaekit.objectives import iwae_bound

SHAPE = (1, 8, 8)


def _model(*sets: str):
    cfg = load_config(None, ["model.latent_dim=3", "model.encoder.hidden=[16]", *sets])
    torch.manual_seed(0)
    return build_model(cfg.model, SHAPE)


def _x() -> torch.Tensor:
    return torch.rand((5, *SHAPE), generator=torch.Generator().manual_seed(1)).round()


def test_miwae_is_iwae_for_one_group_and_the_elbo_for_one_sample() -> None:
    log_w = torch.randn(12, 4) * 5
    assert torch.allclose(miwae_bound(log_w, 1), iwae_bound(log_w))
    assert torch.allclose(miwae_bound(log_w, 12), log_w.mean(0))
    by_hand = torch.stack([iwae_bound(g) for g in log_w.reshape(3, 4, 4)]).mean(0)
    assert torch.allclose(miwae_bound(log_w, 3), by_hand)


def test_the_bounds_sit_between_the_elbo_and_iwae_of_the_same_draws() -> None:
    for model in (_model(), _model("model.posterior={name: hierarchical, hidden: 8}")):
        x = _x()
        with torch.no_grad():
            t = MIWAE(samples=4, groups=3)(model, x).terms
            assert bool((t["elbo"] <= t["miwae"] + 1e-4).all())
            assert bool((t["miwae"] <= t["iwae"] + 1e-4).all())
            for beta, key in ((1.0, "elbo"), (0.0, "iwae")):
                c = CIWAE(samples=6, beta=beta)(model, x).terms
                assert torch.allclose(c["ciwae"], c[key], atol=1e-4)
            half = CIWAE(samples=6, beta=0.5)(model, x).terms
            assert torch.allclose(half["ciwae"], 0.5 * (half["elbo"] + half["iwae"]), atol=1e-4)


def test_piwae_trains_the_encoder_on_miwae_and_the_rest_on_iwae() -> None:
    model = _model("model.posterior={name: hierarchical, hidden: 8}")
    objective = PIWAE(samples=3, groups=2)
    groups = objective.param_groups(model)
    enc, gen = groups["encoder"], groups["model"]
    ids = [id(p) for p in enc + gen]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    # The conditional priors held by the hierarchy's posterior part are generative.
    held = {id(p) for p in model.encoder.head.prior_parameters()}
    assert held and held <= {id(p) for p in gen}
    torch.manual_seed(0)
    out = objective(model, _x())
    assert out.losses is not None
    assert math.isclose(
        float(out.losses["model"].detach()), -float(out.terms["iwae"].mean().detach()), rel_tol=1e-5
    )
    enc_grad = torch.autograd.grad(out.losses["encoder"], enc, retain_graph=True, allow_unused=True)
    miwae = -out.terms["miwae"].mean()
    expected = torch.autograd.grad(miwae, enc, retain_graph=True, allow_unused=True)
    for a, b in zip(enc_grad, expected, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b)


def test_piwae_runs_in_the_trainer_with_two_optimisers(tmp_path: Path) -> None:
    from vaekit.rundir import read_metrics

    run = train_tiny(tmp_path / "p", "objective={name: piwae, samples: 2, groups: 2}")
    row = read_metrics(run)[-1]
    assert {"iwae", "miwae", "elbo"} <= set(row["test"])
    assert row["test"]["miwae"] <= row["test"]["iwae"] + 1e-6

"""The disentangling objectives and the MMD divergence on cases whose answer is known."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from vaekit.config import ConfigError, config_to_dict, load_config
from vaekit.disentangle.objectives import (
    DIPVAE,
    BetaTCVAE,
    CapacityELBO,
    kl_decomposition,
    permute_dims,
)
from vaekit.distributions import diagonal_normal
from vaekit.divergences import mmd
from vaekit.model import build_model
from vaekit.objectives import ELBO
from vaekit.rundir import read_metrics
from vaekit.testing import check_part


def _normal(loc: torch.Tensor, logvar: torch.Tensor) -> torch.distributions.Distribution:
    return diagonal_normal(loc, logvar)


@pytest.mark.parametrize("n", [64, 10_000])
def test_decomposition_of_a_posterior_equal_to_the_prior(n: int) -> None:
    """q(z|x) = p(z) for every x: nothing to decompose. The stratified estimate's weights
    sum to one, so all three terms are 0; the weighted one's sum to 1/N, so each term is
    off by a constant (log N, (D - 1) log N, -D log N) while their sum stays 0."""
    b, d = 16, 3
    q = _normal(torch.zeros(b, d), torch.zeros(b, d))
    p = _normal(torch.zeros(d), torch.zeros(d))
    z = q.sample((2,))
    mss = kl_decomposition(q, p, z, n, "mss")
    for v in mss.values():
        assert torch.allclose(v, torch.zeros(b), atol=1e-4)
    mws = kl_decomposition(q, p, z, n, "mws")
    assert torch.allclose(mws["mi"], torch.full((b,), math.log(n)), atol=1e-4)
    assert torch.allclose(mws["tc"], torch.full((b,), (d - 1) * math.log(n)), atol=1e-3)
    assert torch.allclose(mws["dwkl"], torch.full((b,), -d * math.log(n)), atol=1e-3)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_terms_add_up_to_the_kl_and_tc_sees_dependence(estimator: str) -> None:
    g = torch.Generator().manual_seed(0)
    b, n = 256, 256
    s = torch.randn(b, 1, generator=g) * 2
    p = _normal(torch.zeros(2), torch.zeros(2))
    # Two copies of one signal (dependent) against two independent signals.
    dependent = _normal(torch.cat([s, s], 1), torch.full((b, 2), -6.0))
    indep = _normal(torch.randn(b, 2, generator=g) * 2, torch.full((b, 2), -6.0))
    out = {}
    for name, q in (("dependent", dependent), ("independent", indep)):
        z = q.sample((1,))
        parts = kl_decomposition(q, p, z, n, estimator)
        kl_mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
        assert torch.allclose(parts["mi"] + parts["tc"] + parts["dwkl"], kl_mc, atol=1e-3)
        out[name] = float(parts["tc"].mean())
    # The dependent codes' q(z) lies on a line: a large total correlation.
    assert out["dependent"] > out["independent"] + 1.0


def test_tcvae_with_unit_weights_is_the_vae() -> None:
    torch.manual_seed(0)
    model = build_model(load_config(None, ["model.latent_dim=3"]).model, (1, 8, 8))
    x = torch.rand(32, 1, 8, 8).round()
    torch.manual_seed(1)
    tc = BetaTCVAE(beta=1.0, estimator="mss", kl="mc")(model, x)
    torch.manual_seed(1)
    elbo = ELBO(kl="mc")(model, x)
    assert torch.allclose(tc.loss, elbo.loss, atol=1e-4)
    assert torch.allclose(tc.terms["elbo"], elbo.terms["elbo"])


def test_permute_dims_keeps_marginals_and_breaks_dependence() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2000, 1, generator=g)
    z = torch.cat([s, s], 1)
    zp = permute_dims(z, g)
    for d in range(2):
        assert torch.equal(zp[:, d].sort().values, z[:, d].sort().values)
    assert abs(float(torch.corrcoef(zp.T)[0, 1])) < 0.1


def test_dip_penalty_is_zero_at_the_prior_covariance() -> None:
    mu = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # Cov = I
    p = _normal(torch.zeros(2), torch.zeros(2))
    q = _normal(mu, torch.full((4, 2), math.log(0.5)))
    assert float(DIPVAE(type="i").penalty(q, p)) == pytest.approx(0.0, abs=1e-6)
    # Type ii adds E[sigma^2] = 0.5 to the diagonal: lambda_d (= lambda_od) * 2 * 0.5^2.
    assert float(DIPVAE(type="ii", lambda_od=3.0).penalty(q, p)) == pytest.approx(1.5)
    assert DIPVAE(type="i", lambda_od=2.0).lambda_d == 20.0  # Kumar et al.'s 10 x lambda_od


def test_elbo_with_the_mmd_divergence() -> None:
    cfg = load_config(None, ["objective.divergence=mmd", "objective.beta=10"])
    assert config_to_dict(cfg)["objective"]["divergence"] == {
        "name": "mmd",
        "kernel": "imq",
        "scale": 0.0,
    }
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 8, 8))
    out = ELBO(beta=10.0, divergence="mmd")(model, torch.rand(32, 1, 8, 8).round())
    assert set(out.terms) == {"loss", "recon", "kl", "elbo", "mmd"}
    assert torch.allclose(out.terms["loss"], out.terms["recon"] + 10 * out.terms["mmd"])
    # One number per batch, which each example reports.
    assert torch.all(out.terms["mmd"] == out.terms["mmd"][0])
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    assert abs(float(mmd(a, b, "rbf"))) < 0.01 < float(mmd(a, b + 2, "rbf"))


def test_old_elbo_configs_keep_the_kl_and_bad_divergences_are_refused() -> None:
    cfg = load_config(None, ["objective.kl=mc", "objective.free_bits=0.5"])
    assert cfg.objective.options.divergence.name == "kl"
    with pytest.raises(ConfigError, match="objective.divergence=mmd.*model.prior=normal"):
        load_config(None, ["objective.divergence=mmd", "model.prior=mog"])
    with pytest.raises(ConfigError, match="free_bits"):
        load_config(None, ["objective.divergence=mmd", "objective.free_bits=1"])
    with pytest.raises(ConfigError, match="did you mean 'mmd'"):
        load_config(None, ["objective.divergence=mdm"])


@pytest.mark.parametrize(
    "objective, fix",
    [("tcvae", "model.flow=none"), ("dipvae", "model.flow=none"), ("factorvae", None)],
)
def test_objectives_refuse_parts_they_cannot_measure(objective: str, fix: str | None) -> None:
    with pytest.raises(ConfigError, match="model.prior=normal"):
        load_config(None, [f"objective.name={objective}", "model.prior=mog"])
    if fix:
        with pytest.raises(ConfigError, match=fix):
            load_config(None, [f"objective.name={objective}", "model.flow=planar"])


def test_capacity_grows_with_the_examples_seen(tmp_path: Path) -> None:
    """C rises with the training examples seen (the trainer gives the data set's size)
    and stays at the capacity after capacity_epochs; resume: the next test."""
    sets = [
        "objective.name=capacity",
        "objective.capacity=6",
        "objective.capacity_epochs=2",
        "objective.gamma=5",
        "train.epochs=3",
    ]
    from vaekit.train import fit

    fit(tiny_config(*sets), tmp_path / "run", progress=False, log=io.StringIO())
    caps = [row["train"]["capacity"] for row in read_metrics(tmp_path / "run")]
    assert caps[0] < caps[1] < caps[2] == pytest.approx(6.0)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["objective"]["capacity_epochs"] == 2.0
    objective = CapacityELBO(capacity=6, capacity_epochs=2)
    assert objective.target() == 6.0  # no data set size: the full capacity


def test_factorvae_and_capacity_resume_exactly() -> None:
    """Two optimisers (FactorVAE) and a schedule kept in a buffer (capacity): a run
    stopped after one epoch and resumed ends bit-identical to one that never stopped."""
    report = check_part(
        "objective", "factorvae", {"discriminator": [16], "gamma": 5.0}, resume=True
    )
    assert report["resume"] == "bit-identical"
    report = check_part("objective", "capacity", {"capacity_epochs": 1.5}, resume=True)
    assert report["resume"] == "bit-identical"


class HalfKL(torch.nn.Module):
    """A user's divergence: half the KL (a beta of 0.5 by another name)."""

    def forward(self, q: object, p: object, z: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
        return 0.5 * kl


class BatchMeanKL(HalfKL):
    """Breaks the contract: one number instead of one per example."""

    def forward(self, q: object, p: object, z: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
        return kl.mean()


def test_divergences_are_checked_like_other_parts() -> None:
    from vaekit.testing import ContractError

    assert check_part("divergence", "mmd", training=False)["objective"] == "ok"
    assert check_part("divergence", HalfKL, training=False)["gradients"] == "ok"
    with pytest.raises(ContractError, match="per example"):
        check_part("divergence", BatchMeanKL, training=False)


def test_stratified_estimate_of_q_z_is_unbiased() -> None:
    """Over random batches holding example 0 and B - 1 others of the N, the mss estimate
    of q(z) averages to the exact (1/N) sum_n q(z | x_n); the mws one, which weighs every
    batch member 1 / (N B), to (q(z|x_0) + (B - 1) mean_other q(z|x_n)) / (N B)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n, b, d = 40, 8, 2
    loc, logvar = torch.randn(n, d, generator=g), torch.full((n, d), -0.5)
    p = _normal(torch.zeros(d), torch.zeros(d))
    z0 = _normal(loc[0], logvar[0]).sample()
    each = _normal(loc, logvar).log_prob(z0).exp()
    exact = math.log(float(each.sum()) / n)
    mws_mean = math.log(float(each[0] + (b - 1) * each[1:].mean()) / (n * b))
    means = {}
    for estimator in ("mss", "mws"):
        total = 0.0
        draws = 600
        for _ in range(draws):
            rest = torch.randperm(n - 1, generator=g)[: b - 1] + 1
            idx = torch.cat([torch.zeros(1, dtype=torch.long), rest])
            q = _normal(loc[idx], logvar[idx])
            z = q.sample((1,))
            z[0, 0] = z0
            mi = kl_decomposition(q, p, z, n, estimator)["mi"][0]
            total += float(torch.exp(q.log_prob(z)[0, 0] - mi))  # q(z0) = q(z0|x0) / e^mi
        means[estimator] = math.log(total / draws)
    assert means["mss"] == pytest.approx(exact, abs=0.1)
    assert means["mws"] == pytest.approx(mws_mean, abs=0.1)

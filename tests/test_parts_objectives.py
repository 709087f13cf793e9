"""Priors (mixture of Gaussians, VampPrior) and objectives (IWAE, warm-up, free bits, AVB)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch.distributions import Independent, Normal, kl_divergence

from vaekit.config import ModelConfig, part
from vaekit.data import load_dataset
from vaekit.distributions import DiagonalGaussianMixture, MixturePrior, StandardNormalPrior
from vaekit.model import VAE, build_model
from vaekit.objectives import AVB, ELBO, IWAE, iwae_bound, kl_per_dim, kl_term
from vaekit.rundir import save_weights

SHAPE = (1, 8, 8)


def _model(**kw: object) -> VAE:
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=3, encoder=part("mlp", hidden=[32], activation="tanh"), **kw)  # type: ignore[arg-type]
    return build_model(cfg, SHAPE)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return load_dataset("digits").train.x[:64]


# -- priors ------------------------------------------------------------------------------


def test_mixture_prior_is_the_weighted_sum_of_its_gaussians() -> None:
    torch.manual_seed(1)
    prior = MixturePrior(2, 4)
    with torch.no_grad():
        prior.logits.copy_(torch.randn(4))
        prior.logvars.copy_(torch.randn(4, 2))
    p = prior()
    z = torch.randn(6, 5, 2)
    comps = Independent(Normal(prior.means, (0.5 * prior.logvars).exp()), 1)
    ref = torch.logsumexp(comps.log_prob(z.unsqueeze(-2)) + torch.log_softmax(prior.logits, 0), -1)
    torch.testing.assert_close(p.log_prob(z), ref)
    assert p.sample((7,)).shape == (7, 2)
    p.log_prob(z).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in prior.parameters())


def test_vamp_prior_is_the_mean_of_the_pseudo_input_posteriors(tmp_path: Path) -> None:
    model = _model(prior=part("vamp", components=5))
    z = torch.randn(4, 3, 3)
    q = model.encoder(model.prior_module.pseudo_inputs)
    ref = torch.logsumexp(q.log_prob(z.unsqueeze(-2)), -1) - math.log(5)
    torch.testing.assert_close(model.prior.log_prob(z), ref)
    assert model.prior.sample((6,)).shape == (6, 3)
    # The encoder is registered once: the weights save (safetensors rejects shared tensors).
    save_weights(tmp_path / "w.safetensors", model)
    names = set(load_file(str(tmp_path / "w.safetensors")))
    assert "prior_module.pseudo_inputs" in names and not any(
        n.startswith("prior_module.encoder") for n in names
    )
    with pytest.raises(ValueError, match="ask the VAE"):
        model.prior_module()


def _elementwise_mixture_log_prob(
    logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    comps = Independent(Normal(loc, scale), 1)
    return torch.logsumexp(comps.log_prob(z.unsqueeze(-2)) + torch.log_softmax(logits, 0), -1)


def test_matmul_mixture_density_matches_the_elementwise_one_in_both_precisions() -> None:
    # VampPrior-like components: 500 narrow Gaussians (sd 0.02-0.3) away from the origin,
    # z drawn from the components themselves, so the dominant terms have z near a mean:
    # the case where the expanded quadratic form cancels most.
    g = torch.Generator().manual_seed(3)
    k, d = 500, 40
    loc = 2.0 + torch.randn(k, d, generator=g, dtype=torch.float64)
    scale = 0.02 + 0.28 * torch.rand(k, d, generator=g, dtype=torch.float64)
    logits = torch.randn(k, generator=g, dtype=torch.float64)
    idx = torch.randint(k, (64,), generator=g)
    z = loc[idx] + scale[idx] * torch.randn(64, d, generator=g, dtype=torch.float64)
    ref = _elementwise_mixture_log_prob(logits, loc, scale, z)
    exact = DiagonalGaussianMixture(logits, loc, scale).log_prob(z)
    torch.testing.assert_close(exact, ref, rtol=0, atol=1e-9)
    single = DiagonalGaussianMixture(logits.float(), loc.float(), scale.float())
    err = (single.log_prob(z.float()).double() - ref).abs().max().item()
    assert err < 5e-3, err  # nats, against log-densities of about +60
    # The gradients are those of the elementwise form too.
    leaves = [t.clone().requires_grad_() for t in (logits, loc, scale, z)]
    DiagonalGaussianMixture(*leaves[:3]).log_prob(leaves[3]).sum().backward()
    grads = [t.grad for t in leaves]
    leaves = [t.clone().requires_grad_() for t in (logits, loc, scale, z)]
    _elementwise_mixture_log_prob(*leaves).sum().backward()
    for got, want in zip(grads, (t.grad for t in leaves), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)


def test_standard_normal_prior_ignores_the_encoder() -> None:
    p = StandardNormalPrior(2)(encoder=None)
    assert float(p.log_prob(torch.zeros(2))) == pytest.approx(-math.log(2 * math.pi))


@given(
    st.lists(st.floats(-30, 30), min_size=4, max_size=4),
    st.lists(st.floats(-15, 10), min_size=4, max_size=4),
)
@settings(max_examples=60, deadline=None)
def test_kl_is_never_negative(mean: list[float], logvar: list[float]) -> None:
    q = Independent(Normal(torch.tensor(mean), torch.tensor(logvar).mul(0.5).exp()), 1)
    assert float(kl_term(q, StandardNormalPrior(4)())) >= 0
    dims = kl_per_dim(q, StandardNormalPrior(4)(), q.rsample((1,)))
    assert dims is not None and (dims >= 0).all()


def test_the_standard_normal_kl_shortcut_is_torchs_closed_form() -> None:
    """diagonal_normal against N(0, I) takes the log-variance form (and, in kl_term, no
    registry dispatch); its values and gradients are torch's Normal-Normal KL, including
    where the log-variance is clamped (and its gradient passed straight through)."""
    from vaekit.distributions import diagonal_normal

    torch.manual_seed(0)
    mean = torch.randn(50, 6, dtype=torch.float64, requires_grad=True)
    logvar = (8 * torch.randn(50, 6, dtype=torch.float64)).requires_grad_()  # some past +-12, -20
    prior = StandardNormalPrior(6).double()()
    q = diagonal_normal(mean, logvar)
    plain_q = Independent(Normal(q.base_dist.loc, q.base_dist.scale), 1)
    plain_p = Independent(
        Normal(torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)), 1
    )
    reference = kl_divergence(plain_q, plain_p)
    for kl in (
        kl_term(q, prior),
        kl_divergence(q, prior),
        kl_per_dim(q, prior, q.rsample((1,))).sum(-1),
    ):  # type: ignore[union-attr]
        torch.testing.assert_close(kl, reference)
        got = torch.autograd.grad(kl.sum(), [mean, logvar], retain_graph=True)
        want = torch.autograd.grad(reference.sum(), [mean, logvar], retain_graph=True)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)
    # An expanded posterior (an objective's draws) keeps its log-variance, and the form.
    wide = q.expand(torch.Size([3, 50]))
    torch.testing.assert_close(kl_term(wide, prior), reference.expand(3, 50))
    # Any other prior, or a learned one, takes torch's dispatch as before.
    other = Independent(
        Normal(torch.zeros(6, dtype=torch.float64), 2 * torch.ones(6, dtype=torch.float64)), 1
    )
    torch.testing.assert_close(kl_term(q, other), kl_divergence(plain_q, other))


def test_one_draw_is_its_own_mean() -> None:
    from vaekit.objectives.base import sample_mean

    t = torch.randn(1, 7, requires_grad=True)
    assert torch.equal(sample_mean(t), t.mean(0))
    assert torch.equal(sample_mean(torch.tensor([[1.0], [2.0]])), torch.tensor([1.5]))


# -- IWAE --------------------------------------------------------------------------------


@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=50),
    st.floats(-1e4, 1e4, allow_nan=False),
)
@settings(max_examples=80, deadline=None)
def test_iwae_bound_is_finite_for_extreme_weights(values: list[float], shift: float) -> None:
    log_w = torch.tensor(values, dtype=torch.float64).unsqueeze(-1)
    bound = iwae_bound(log_w)
    assert torch.isfinite(bound).all()
    # between the mean (Jensen) and the max of the log-weights
    assert float(log_w.mean()) - 1e-6 <= float(bound) <= float(log_w.max()) + 1e-9
    torch.testing.assert_close(iwae_bound(log_w + shift), bound + shift)


@pytest.mark.parametrize("flow", ["none", "planar", "iaf"])
def test_iwae_is_at_least_the_elbo_of_the_same_draws(flow: str, x: torch.Tensor) -> None:
    model = _model(
        flow={"iaf": part("iaf", length=2, hidden=8), "planar": part("planar", length=2)}.get(flow)
    )
    with torch.no_grad():
        out = IWAE(samples=10)(model, x)
    assert (out.terms["iwae"] >= out.terms["elbo"] - 1e-4).all()
    torch.testing.assert_close(out.terms["elbo"], -(out.terms["recon"] + out.terms["kl"]))


def test_iwae_bound_tightens_with_k_on_average(x: torch.Tensor) -> None:
    model = _model()
    torch.manual_seed(3)
    with torch.no_grad():
        bounds = [float(IWAE(samples=k)(model, x).terms["iwae"].mean()) for k in (1, 10, 100)]
    assert bounds[0] < bounds[1] < bounds[2]


# -- warm-up and free bits ---------------------------------------------------------------


def _encoder_grad(model: VAE, objective: IWAE, x: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    model.zero_grad()
    objective(model, x).loss.backward()
    return torch.cat(
        [p.grad.flatten() for n, p in model.named_parameters() if n.startswith("encoder")]
    )


def test_dreg_keeps_the_bound_and_the_decoders_gradient(x: torch.Tensor) -> None:
    model = _model()
    out = {}
    for est in ("standard", "dreg"):
        torch.manual_seed(3)
        model.zero_grad()
        out[est] = IWAE(5, est)(model, x)
        out[est].loss.backward()
        out[est + "_grads"] = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.testing.assert_close(out["dreg"].loss, out["standard"].loss)
    for key in ("iwae", "elbo", "recon", "kl"):
        torch.testing.assert_close(out["dreg"].terms[key], out["standard"].terms[key])
    std, dreg = out["standard_grads"], out["dreg_grads"]
    for name in std:
        if name.startswith("decoder"):
            torch.testing.assert_close(dreg[name], std[name])
    assert not all(torch.allclose(dreg[n], std[n]) for n in std if n.startswith("encoder"))


def test_dreg_has_the_same_expected_gradient_with_far_less_variance(x: torch.Tensor) -> None:
    # The mean over 20,000 copies of 4 images is the expected encoder gradient up to the
    # estimator's noise, measured as the difference between two seeds. The estimator
    # without the second factor of w (the hook) is off by 2.4 x the gradient's norm here.
    torch.set_num_threads(1)
    model = _model()
    for k, copies, quieter in ((4, 5000, 4), (32, 500, 10)):
        xb = x[:4].repeat_interleave(copies, 0)
        g = {
            e: [_encoder_grad(model, IWAE(k, e), xb, s) for s in (1, 2)]
            for e in ("standard", "dreg")
        }
        noise = {e: float((a - b).norm()) for e, (a, b) in g.items()}
        assert noise["dreg"] * quieter < noise["standard"]
        if k == 4:
            mean_std, mean_dreg = sum(g["standard"]) / 2, sum(g["dreg"]) / 2
            diff = float((mean_std - mean_dreg).norm())
            assert float(mean_std.norm()) > 3 * noise["standard"]  # the test has power
            assert diff < noise["standard"] and diff < 0.2 * float(mean_std.norm())


def test_dreg_needs_a_gaussian_iwae(x: torch.Tensor) -> None:
    from vaekit.config import ConfigError, load_config

    ok = ["objective.name=iwae", "objective.samples=3", "objective.gradient=dreg"]
    load_config(None, ok).validate()
    with pytest.raises(ConfigError, match="gradient=dreg"):
        load_config(None, [*ok, "model.flow=planar"]).validate()
    # The gradient is an option of the IWAE objective only.
    with pytest.raises(ConfigError, match="unknown setting 'objective.gradient'"):
        load_config(None, [*ok, "objective.name=elbo"]).validate()
    with pytest.raises(ConfigError, match="objective.gradient must be one of"):
        load_config(None, ["objective.name=iwae", "objective.gradient=dregs"]).validate()


def test_warmup_ramps_beta_from_zero(x: torch.Tensor) -> None:
    obj = ELBO(beta=2.0, warmup_epochs=4)
    betas = []
    for epoch in range(1, 8):
        obj.set_epoch(epoch)
        betas.append(obj.current_beta)
    assert betas == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0]
    model = _model()
    obj.set_epoch(1)
    torch.manual_seed(0)
    out = obj(model, x)
    torch.testing.assert_close(out.loss, (out.terms["recon"] + 0.5 * out.terms["kl"]).mean())
    # the reported bound ignores the weight
    torch.testing.assert_close(out.terms["elbo"], -(out.terms["recon"] + out.terms["kl"]))
    assert ELBO(beta=2.0).current_beta == 2.0


def test_free_bits_floor_each_dimension_and_stop_its_gradient(x: torch.Tensor) -> None:
    model = _model()
    torch.manual_seed(0)
    plain = ELBO()(model, x)
    torch.manual_seed(0)
    out = ELBO(free_bits=50.0)(model, x)  # far above any dimension's KL
    torch.testing.assert_close(out.loss, out.terms["recon"].mean() + 50.0 * 3)
    torch.testing.assert_close(out.terms["loss"], plain.terms["loss"])  # reported terms unchanged
    # With every dimension under the floor, the KL sends no gradient: only recon's is left.
    params = list(model.parameters())
    with_floor = torch.autograd.grad(out.loss, params, retain_graph=True)
    recon_only = torch.autograd.grad(out.terms["recon"].mean(), params, allow_unused=True)
    plain_grads = torch.autograd.grad(plain.loss, params)
    for a, b in zip(with_floor, recon_only, strict=True):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b)
    assert any(not torch.allclose(a, c) for a, c in zip(with_floor, plain_grads, strict=True))
    torch.manual_seed(0)
    q = model.encode(x)
    kl_dims = kl_per_dim(q, model.prior, q.rsample((1,)))
    assert kl_dims is not None and kl_dims.shape == (64, 3)
    torch.testing.assert_close(kl_dims.sum(-1), kl_divergence(q, model.prior))
    # a small floor changes nothing when every dimension is above it
    torch.manual_seed(0)
    low = ELBO(free_bits=1e-6)(model, x)
    assert (kl_dims.mean(0) > 1e-6).all()
    torch.testing.assert_close(low.loss, plain.loss)


def test_free_bits_on_a_flow_floor_the_total_kl(x: torch.Tensor) -> None:
    model = _model(flow=part("planar", length=2))
    q = model.encode(x)
    assert kl_per_dim(q, model.prior, q.rsample((1,))) is None
    torch.manual_seed(0)
    out = ELBO(free_bits=100.0)(model, x)
    torch.testing.assert_close(out.loss, out.terms["recon"].mean() + 300.0)


# -- AVB ---------------------------------------------------------------------------------


def test_avb_declares_two_groups_and_its_discriminator_learns_the_kl(x: torch.Tensor) -> None:
    # A Gaussian posterior has a known density: train only the discriminator against it.
    model = _model()
    last = model.encoder.net.net[-1]
    with torch.no_grad():  # move q away from the prior: a KL of about 2 nats, not 0.1
        last.weight.mul_(4.0)
        last.bias[3:] = -1.5
    for p in model.parameters():
        p.requires_grad_(False)
    avb = AVB(samples=8, discriminator=[64, 64])
    groups = avb.param_groups(model)
    assert set(groups) == {"model", "discriminator"}
    assert {id(p) for p in groups["discriminator"]}.isdisjoint(id(p) for p in groups["model"])
    opt = torch.optim.Adam(groups["discriminator"], lr=3e-3)
    torch.manual_seed(0)
    for _ in range(400):
        out = avb(model, x)
        assert out.losses is not None
        opt.zero_grad()
        out.losses["discriminator"].backward(inputs=groups["discriminator"])
        opt.step()
    assert out.terms["disc"].mean() < 2 * math.log(2) - 0.3  # far better than chance
    with torch.no_grad():
        q = model.encode(x)
        z = q.sample((16,))
        t = avb.discriminator(x, z)
        log_ratio = q.log_prob(z) - model.prior.log_prob(z)
        exact = kl_divergence(q, model.prior)
    # T(x, z) follows log q(z|x) - log p(z) point by point, and E_q[T] estimates the KL.
    assert float(torch.corrcoef(torch.stack([t.flatten(), log_ratio.flatten()]))[0, 1]) > 0.85
    assert abs(float(t.mean() - exact.mean())) < 0.3 * float(exact.mean())


def test_avb_model_loss_reaches_a_learnable_prior(x: torch.Tensor) -> None:
    model = _model(posterior="implicit", prior=part("mog", components=3))
    avb = AVB(discriminator=[16])
    groups = avb.param_groups(model)
    out = avb(model, x)
    assert out.losses is not None
    out.losses["model"].backward(inputs=groups["model"])
    assert (
        model.prior_module.means.grad is not None and model.prior_module.means.grad.abs().sum() > 0
    )
    assert all(p.grad is None for p in groups["discriminator"])
    torch.testing.assert_close(out.loss, out.losses["model"])
    with pytest.raises(NotImplementedError, match="objective.name=avb"):
        model.encode(x).log_prob(torch.zeros(64, 3))


def test_a_discriminator_objective_of_yours_gets_its_own_optimiser_and_learns() -> None:
    import torch.nn.functional as F
    from torch import nn

    from vaekit.objectives import DiscriminatorObjective, ObjectiveOutput
    from vaekit.parts import ObjectiveAbilities
    from vaekit.testing import check_training

    class PriorCritic(DiscriminatorObjective):
        """Reconstruction, and a critic that tells posterior codes from prior codes."""

        abilities = ObjectiveAbilities(optimizers=("model", "discriminator"))

        def __init__(self) -> None:
            super().__init__()
            self.discriminator = None

        def build_discriminator(self, model: VAE) -> nn.Module:
            return nn.Linear(model.latent_dim, 1)

        def forward(self, model: VAE, x: torch.Tensor, y: torch.Tensor | None = None):  # type: ignore[no-untyped-def]
            critic = self.critic(model)
            z = model.encode(x).rsample()
            recon = -model.decode(z).log_prob(x)
            t_q = critic(z.detach()).squeeze(-1)
            t_p = critic(model.prior.sample((len(x),))).squeeze(-1)
            disc = F.softplus(-t_q) + F.softplus(t_p)
            terms = {"loss": recon, "recon": recon, "disc": disc}
            return ObjectiveOutput(
                recon.mean(), terms, {"model": recon.mean(), "discriminator": disc.mean()}
            )

    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2), (1, 4, 4))
    objective = PriorCritic()
    assert objective.discriminator is None  # built on first use, with the model's shapes
    groups = objective.param_groups(model)
    assert set(groups) == {"model", "discriminator"}
    assert {id(p) for p in groups["discriminator"]} == {
        id(p) for p in objective.critic(model).parameters()
    }
    x = torch.rand(32, 1, 4, 4).round()
    check_training(model, objective, x, key="disc", steps=40, lr=3e-2)
    check_training(model, objective, x, key="recon")

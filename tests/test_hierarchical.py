"""Several stochastic layers behind the one-latent contract (model.posterior: hierarchical)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Independent, Normal

from vaekit.config import ConfigError, load_config
from vaekit.distributions.hierarchical import (
    HierarchicalDistribution,
    HierarchicalPrior,
    tempered_sample,
)
from vaekit.distributions.priors import DiagonalGaussianMixture
from vaekit.evaluate import log_likelihood
from vaekit.model import build_model
from vaekit.objectives import ELBO, IWAE, build_objective, kl_per_layer

SHAPE = (1, 8, 8)


def _model(style: str = "bottom-up", *sets: str, layers: int = 2):
    cfg = load_config(
        None,
        [
            "model.latent_dim=3",
            "model.encoder.hidden=[16]",
            "model.encoder.activation=tanh",
            f"model.posterior={{name: hierarchical, layers: {layers}, hidden: 10, style: {style}}}",
            *sets,
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg.model, SHAPE)


def _x(n: int = 5) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(1)).round()


@pytest.mark.parametrize("style", ["bottom-up", "ladder", "residual"])
def test_one_latent_vector_over_every_layer(style: str) -> None:
    model = _model(style, layers=3)
    q = model.encode(_x())
    assert isinstance(q, HierarchicalDistribution) and isinstance(model.prior, HierarchicalPrior)
    assert q.event_shape == (9,) and model.latent_dim == 9
    z = q.rsample((4,))
    # log_prob of a copy (no cached draw) is the sum of the layers' conditionals at it.
    again = q.log_prob(z.clone())
    layers = q.layer_dists(z.clone())
    by_hand = sum(d.log_prob(part) for d, part in zip(layers, z.split([3, 3, 3], -1), strict=True))
    assert torch.allclose(again, by_hand, atol=1e-5)
    assert torch.allclose(q.log_prob(z), again, atol=1e-4)
    # The joint prior: the top prior at z_L plus each conditional at the layer below.
    p = model.prior
    z1, z2, z3 = z.split([3, 3, 3], -1)
    head = model.encoder.head
    (m1, v1), _ = head.prior_layer(0, z2)
    (m2, v2), _ = head.prior_layer(1, z3)
    top = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)

    def gauss(m: torch.Tensor, v: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        return Independent(Normal(m, torch.exp(0.5 * v)), 1).log_prob(at)

    expected = top.log_prob(z3) + gauss(m1, v1, z1) + gauss(m2, v2, z2)
    assert torch.allclose(p.log_prob(z), expected, atol=1e-5)


def test_ladder_merges_by_precision_and_residual_starts_from_the_prior() -> None:
    model = _model("ladder")
    head = model.encoder.head
    q = model.encode(_x())
    z2 = torch.randn(5, 3)
    (mu, logvar), prior = head.posterior_layer(0, q.ctx[0], z2)
    mu_h, lv_h = q.ctx[0].chunk(2, -1)
    mu_p, lv_p = prior
    prec = torch.exp(-lv_h) + torch.exp(-lv_p)
    assert torch.allclose(torch.exp(logvar), 1 / prec, rtol=1e-5)
    assert torch.allclose(mu, (mu_h * torch.exp(-lv_h) + mu_p * torch.exp(-lv_p)) / prec, atol=1e-5)
    # The residual normal is relative to p(z_1 | z_2): zero residuals give q = p there.
    model = _model("residual")
    head = model.encoder.head
    with torch.no_grad():
        head.residuals[0].net[-1].weight.zero_()
        head.residuals[0].net[-1].bias.zero_()
    q = model.encode(_x())
    z = q.rsample((2,))
    kl = kl_per_layer(q, model.prior, z)
    assert kl is not None and kl.shape == (2, 5)
    assert torch.allclose(kl[0], torch.zeros(5), atol=1e-6)


def test_decoder_reads_the_bottom_layers_and_the_vampprior_mixes_top_posteriors() -> None:
    model = _model(
        "bottom-up", "model.posterior.decoder_reads=2", "model.prior.name=vamp", layers=3
    )
    assert model.decoder.reads == 6 and model.decoder.net.net[0].in_features == 6
    z = torch.randn(4, 9)
    other = z.clone()
    other[:, 6:] += 1.0  # z_3 is not the decoder's input
    assert torch.equal(model.decode(z).mean, model.decode(other).mean)
    assert not torch.equal(model.decode(z).mean, model.decode(z + 1).mean)
    top = model.prior.top
    assert isinstance(top, DiagonalGaussianMixture)
    q_top = model.encode(model.prior_module.pseudo_inputs).top
    assert torch.allclose(top.component_distribution.base_dist.loc, q_top.mean)


def test_per_layer_kl_sums_to_the_kl_and_free_bits_hold_each_layer() -> None:
    model = _model("bottom-up", "model.prior.name=mog")
    x = _x()
    torch.manual_seed(3)
    out = ELBO(samples=2)(model, x)
    assert {"kl_z1", "kl_z2"} <= set(out.terms)
    assert torch.allclose(out.terms["kl_z1"] + out.terms["kl_z2"], out.terms["kl"], atol=1e-5)
    # The closed forms given the layer above estimate the same KL as log q - log p.
    q, p = model.encode(x), model.prior
    with torch.no_grad():
        z = q.rsample((4000,))
        auto = kl_per_layer(q, p, z, "auto")
        mc = kl_per_layer(q, p, z, "mc")
    assert auto is not None and mc is not None
    assert torch.allclose(auto.sum(0), mc.sum(0), atol=0.05)
    # Free bits far above every layer's KL: the loss is recon + sum_l lambda * s_l, and no
    # gradient of the KL reaches the conditional priors.
    torch.manual_seed(3)
    out = ELBO(samples=2, free_bits=5.0)(model, x)
    assert torch.allclose(out.loss, out.terms["recon"].mean() + 2 * 5.0 * 3, atol=1e-4)
    model.zero_grad()
    out.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.encoder.head.prior_parameters())


@pytest.mark.parametrize("style", ["bottom-up", "residual"])
def test_dreg_uses_q_with_fixed_parameters(style: str) -> None:
    model = _model(style)
    q = model.encode(_x())
    z = q.rsample((3,))
    fixed = q.log_prob_fixed(z)
    assert torch.allclose(fixed, q.log_prob(z.clone()), atol=1e-5)
    model.zero_grad()
    fixed.sum().backward()
    # Only through z: the encoder's weights get gradient by the reparameterised path, but
    # log q's own dependence on them is cut (check on the top layer's draw alone).
    z_top = q.top.rsample((3,)).detach().requires_grad_()
    full = torch.cat([torch.zeros(3, 5, 3), z_top], -1)
    model.zero_grad()
    q2 = model.encode(_x())
    q2.log_prob_fixed(full).sum().backward()
    assert all(p.grad is None for p in model.parameters())
    assert z_top.grad is not None
    cfg = load_config(None, ["objective={name: iwae, samples: 3, gradient: dreg}"])
    IWAE.check(cfg.objective.options, model.composition)  # allowed: no message
    out = build_objective(cfg.objective)(model, _x())
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize(
    ("style", "flow"), [("bottom-up", "iaf"), ("ladder", "planar"), ("residual", "iaf")]
)
def test_flows_on_the_layers_below_the_top(style: str, flow: str) -> None:
    # The IAF-VAE's layout (Kingma et al. 2016): each lower layer's Gaussian through a flow.
    model = _model(
        style, f"model.flow={{name: {flow}, length: 2}}", "model.prior.name=vamp", layers=3
    )
    head = model.encoder.head
    assert head.flows is not None and len(head.flows) == 2
    q = model.encode(_x())
    z, log_q = q.rsample_and_log_prob((4,))
    # The draw's log q (Gaussian at z0 less the log-determinant) is the exact density: a
    # copy of z (inverted through each flow) gives the same, layer by layer.
    torch.testing.assert_close(q.log_prob(z.clone()), log_q, atol=1e-4, rtol=1e-5)
    dists = q.layer_dists(z)
    assert [type(d).__name__ for d in dists] == ["FlowDistribution"] * 2 + ["Independent"]
    parts = z.split([3, 3, 3], -1)
    by_layer = torch.stack([d.log_prob(v.clone()) for d, v in zip(dists, parts, strict=True)])
    torch.testing.assert_close(by_layer.sum(0), log_q, atol=1e-4, rtol=1e-5)
    # KL per layer: Monte Carlo below the top, the closed form (a VampPrior: MC) on top.
    auto = q.kl_layers(model.prior, z, "auto")
    mc = q.kl_layers(model.prior, z, "mc")
    torch.testing.assert_close(auto, mc)
    # Training moves every flow; the VampPrior still mixes the top layer's Gaussians.
    out = ELBO()(model, _x())
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.flows.parameters())
    assert torch.isfinite(log_likelihood(model, _x(2), k=10)).all()
    # DReG needs log q with its parameters fixed, which a flow's inverse does not give.
    cfg = load_config(None, ["objective={name: iwae, samples: 3, gradient: dreg}"])
    refused = IWAE.check(cfg.objective.options, model.composition)
    assert refused is not None and "held fixed" in refused


def test_moments_average_each_layers_gaussian_over_the_layers_above() -> None:
    # Rao-Blackwellised moments: E[z] = E[m] and Var[z] = E[v] + Var[m], where (m, v) is
    # each layer's Gaussian given the layers drawn above it (the top's exact). They are
    # the moments of the draws themselves, with far less Monte Carlo noise.
    from vaekit.distributions.posteriors import MOMENT_DRAWS
    from vaekit.evaluate import moment_draws_needed, posterior_moments

    model = _model("bottom-up", layers=3)
    x = _x(4)
    with torch.no_grad():
        q = model.encode(x)
        m, v = q.moment_draws(MOMENT_DRAWS)
        assert m.shape == v.shape == (MOMENT_DRAWS, 4, 9) and bool((v > 0).all())
        torch.testing.assert_close(m[..., 6:], q.top.mean.expand(MOMENT_DRAWS, 4, 3))
        torch.testing.assert_close(v[..., 6:], q.top.variance.expand(MOMENT_DRAWS, 4, 3))
        # At the same noise: z_2's Gaussian is the one z_1's draw was taken from, given z_3.
        z = q.draws(MOMENT_DRAWS)
        walk = q.head.posterior_walk(q.ctx, z[..., 6:], values=list(z[..., :6].split(3, -1)))
        torch.testing.assert_close(m[..., 3:6], walk.q[1][0])
        reference = q.draws(400_000)
    rb = posterior_moments(model, x, samples=4 * MOMENT_DRAWS)
    se = (reference.var(0) / 400_000).sqrt() + (reference.var(0) / (4 * MOMENT_DRAWS)).sqrt()
    assert bool(((rb.mean - reference.mean(0)).abs() < 5 * se).all())
    torch.testing.assert_close(rb.variance, reference.var(0), rtol=0.15, atol=0.01)
    # Less noise than averaging the draws: estimates from 16 seeds spread less.
    with torch.no_grad():
        rb_means = torch.stack([q.moment_draws(32, seed=s)[0].mean(0) for s in range(16)])
        plain_means = torch.stack([q.draws(32, seed=s).mean(0) for s in range(16)])
    assert bool((rb_means.std(0)[:, :6] < plain_means.std(0)[:, :6]).all())
    assert float(rb_means.std(0)[:, 6:].max()) == 0.0  # the top layer's mean is exact
    # The draws evaluation takes for active units, and the Monte Carlo error they leave.
    draws, error = moment_draws_needed(model, _x(40)) or (0, 0.0)
    assert draws >= MOMENT_DRAWS and (error <= 5e-4 or draws == 2048)
    capped = moment_draws_needed(model, _x(40), tolerance=1e-12)
    assert capped is not None and capped[0] == 2048 and capped[1] > 1e-12
    plain = build_model(load_config(None, ["model.latent_dim=3"]).model, SHAPE)
    assert moment_draws_needed(plain, _x(40)) is None  # closed-form moments: no draws


def test_the_likelihood_estimate_is_a_bound_above_the_elbo() -> None:
    model = _model("ladder")
    x = _x(3)
    torch.manual_seed(0)
    with torch.no_grad():
        ll = log_likelihood(model, x, k=200)
        elbo = ELBO(samples=200)(model, x).terms["elbo"]
    assert ll.shape == (3,) and bool(torch.isfinite(ll).all())
    assert bool((ll >= elbo.double() - 1e-3).all())


def test_temperature_and_resampling_below_a_layer() -> None:
    model = _model("bottom-up", layers=3)
    p = model.prior
    torch.manual_seed(0)
    cold = tempered_sample(p, (2000,), 0.3)
    warm = p.sample((2000,))
    assert cold.shape == warm.shape == (2000, 9)
    assert float(cold[:, 6:].std()) < 0.4 < float(warm[:, 6:].std())
    z = p.sample((4,))
    kept = p.sample_below(z, 2)
    assert torch.equal(kept[:, 3:], z[:, 3:]) and not torch.equal(kept[:, :3], z[:, :3])
    assert torch.equal(p.sample_below(z, 1), z)
    with pytest.raises(ValueError, match="temperature"):
        tempered_sample(p, (2,), 0.0)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["model.posterior.layers=1"], "at least 2"),
        (["model.posterior.sizes=[3, 4, 5]"], "3 layer sizes for 2 layers"),
        (["model.posterior.decoder_reads=3"], "decoder_reads must be between 1 and layers"),
        (["model.posterior.style=lader"], "did you mean .ladder"),
        (["model.posterior=hierarchical-conv", "model.flow=planar"], "takes no flow"),
    ],
)
def test_bad_hierarchies_are_refused_with_advice(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.posterior=hierarchical", *sets])


@pytest.fixture(scope="module")
def hrun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import train_tiny

    return train_tiny(
        tmp_path_factory.mktemp("h") / "run",
        "model.posterior={name: hierarchical, hidden: 8, sizes: [2, 3]}",
        "objective.name=iwae",
        "objective.samples=2",
    )


def test_trains_and_logs_each_layer(hrun: Path) -> None:
    from vaekit.rundir import load, read_metrics

    row = read_metrics(hrun)[-1]
    assert {"kl_z1", "kl_z2", "iwae"} <= set(row["test"])
    loaded = load(hrun)
    assert loaded.latent_dim == 5 and loaded.prior.event_shape == (5,)
    assert loaded.encode(loaded.dataset().test.x[:3]).event_shape == (5,)
    assert math.isfinite(float(loaded.elbo(loaded.dataset().test.x[:3])["elbo"].mean()))


def test_evaluate_reports_each_layer(hrun: Path) -> None:
    from vaekit.evaluate import evaluate_run
    from vaekit.rundir import load

    result = evaluate_run(load(hrun), k=5, limit=50, classifier=False)
    assert result["layer_sizes"] == [2, 3] and result["latent_dim"] == 5
    assert len(result["kl_per_layer"]) == 2 and all(v >= 0 for v in result["kl_per_layer"])
    # Each layer's closed forms given the layer above add up to the model's KL (1 draw, so
    # within Monte Carlo noise of it).
    assert sum(result["kl_per_layer"]) == pytest.approx(result["kl"], rel=0.2, abs=0.5)
    per_layer = result["active_units_per_layer"]
    assert len(per_layer) == 2 and sum(per_layer) == result["active_units"]
    # The means below the top are Monte Carlo estimates: how many draws, and their error.
    draws, error = result["active_units_draws"], result["active_units_mc_error"]
    assert draws in (128, 256, 512, 1024, 2048) and (error <= 5e-4 or draws == 2048)
    from vaekit.report import render_report

    text = render_report(load(hrun), result, {}, {})
    assert f"z1: KL {result['kl_per_layer'][0]:,.2f}, {per_layer[0]} of 2 active" in text


def test_figures_and_explorer_of_a_hierarchy(hrun: Path, tmp_path: Path) -> None:
    import numpy as np

    from vaekit.cli import main
    from vaekit.plots import run_figures
    from vaekit.rundir import load
    from vaekit.serve.explorer import Explorer

    run = load(hrun)
    ds = run.dataset()
    figs = run_figures(run, ds, which=["layer_kl", "temperatures", "layer_resampling"])
    assert set(figs) == {"layer_kl", "temperatures", "layer_resampling"}
    # Each layer's KL, held-out and train: two lines per layer.
    assert len(figs["layer_kl"].axes[0].lines) == 4
    # The explorer maps the top layer; decoding fills the layers below.
    ex = Explorer(run, ds.test, max_points=40)
    assert ex.latent_dim == 3 and ex.codes.shape == (40, 3)
    assert "top layer z2" in ex.info()["layer"]
    assert len(ex.decode(np.zeros((2, 3), np.float32))) == 2
    z, pngs = ex.sample(2)
    assert z.shape == (2, 3) and len(pngs) == 2
    assert ex.prior_density(np.zeros(3), np.eye(3)[:2], (-2, 2, -2, 2), 4)["method"] == "kde"
    out = tmp_path / "cold.png"
    assert main(["sample", str(hrun), "--temperature", "0.5", "--n", "4", "--out", str(out)]) == 0
    assert out.exists()
    assert main(["sample", str(hrun), "--temperature", "0", "--out", str(out)]) == 2


# -- the convolutional hierarchy ---------------------------------------------------------------


def _conv_model(shape: tuple[int, ...] = (1, 28, 28), *sets: str):
    cfg = load_config(
        None,
        [
            "model.latent_dim=2",
            "model.posterior={name: hierarchical-conv, channels: [8, 8, 8], groups: [1, 1, 1]}",
            *sets,
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg.model, shape)


def test_conv_hierarchy_fits_28x28_and_colour_images() -> None:
    model = _conv_model()
    # Latent maps of 2 channels at 14x14, 7x7 and 4x4, bottom first.
    assert model.encoder.head.sizes == [2 * 14 * 14, 2 * 7 * 7, 2 * 4 * 4]
    x = torch.rand(3, 1, 28, 28).round()
    q = model.encode(x)
    z = q.rsample((2,))
    assert z.shape == (2, 3, model.latent_dim) and model.decode(z).batch_shape == (2, 3)
    torch.manual_seed(0)
    with torch.no_grad():
        assert bool(torch.isfinite(log_likelihood(model, x, k=4)).all())
    colour = _conv_model((3, 32, 32), "model.likelihood={name: discretized-logistic}")
    assert colour.decode(colour.prior.sample((2,))).batch_shape == (2,)


def test_conv_decoder_reads_every_layer_and_reuses_the_draw() -> None:
    model = _conv_model(
        (1, 8, 8), "model.posterior.channels=[4, 8]", "model.posterior.groups=[1, 1]"
    )
    x = torch.rand(4, 1, 8, 8).round()
    q = model.encode(x)
    z = q.rsample((3,))
    cached = model.decode(z).mean  # the draw's final top-down state, not walked again
    fresh = model.decode(z.clone()).mean
    assert torch.allclose(cached, fresh, atol=1e-6)
    top = z.clone()
    top[..., -8:] += 1.0  # the top layer alone changes the picture: the state carries it
    assert not torch.allclose(model.decode(top).mean, fresh)
    # The prior at q's draw reuses the prior parameters the walk computed.
    p = model.prior
    assert torch.allclose(p.log_prob(z), p.log_prob(z.clone()), atol=1e-5)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["model.conditional=true"], "not conditional"),
        (["model.decoder=mlp"], "brings its own encoder and decoder"),
        (["model.posterior.groups=[1]"], "one count per scale"),
        (["model.posterior.groups=[2, 0]"], "coarsest scale"),
    ],
)
def test_conv_hierarchy_refuses_with_advice(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.posterior={name: hierarchical-conv}", *sets])


def test_conv_hierarchy_resumes_bit_identically() -> None:
    from vaekit.testing import check_part

    options = {"channels": [4, 8, 8], "groups": [0, 1, 1]}
    report = check_part("posterior", "hierarchical-conv", options, training=False, resume=True)
    assert report["resume"] == "bit-identical"


def test_a_conditional_hierarchy_takes_labels_in_encoder_and_decoder() -> None:
    cfg = load_config(
        None,
        [
            "model.latent_dim=3",
            "model.encoder.hidden=[16]",
            "model.posterior={name: hierarchical, style: ladder}",
            "model.conditional=true",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, SHAPE, num_classes=3)
    x, y = _x(6), torch.arange(6) % 3
    q = model.encode(x, y)
    assert q.event_shape == (6,)
    z = q.rsample()
    assert not torch.allclose(model.decode(z, y).mean, model.decode(z, (y + 1) % 3).mean)
    assert model.sample(6).shape == (6, *SHAPE)  # the classes in turn
    out = ELBO()(model, x, y)
    assert torch.isfinite(out.loss) and {"kl_z1", "kl_z2"} <= set(out.terms)
    with pytest.raises(ConfigError, match="cannot be conditional"):
        load_config(
            None, ["model.posterior=hierarchical", "model.prior=vamp", "model.conditional=true"]
        )

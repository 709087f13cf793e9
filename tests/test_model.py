"""The composed VAE: shapes, parts and objectives for the core members of the family."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Distribution

from vaekit.config import ModelConfig, part
from vaekit.model import build_model
from vaekit.objectives import ELBO, AutoencoderLoss, kl_term

SHAPE = (1, 8, 8)


def make(**kw: object) -> torch.nn.Module:
    cfg = ModelConfig(latent_dim=3, encoder=part("mlp", hidden=[16]), **kw)  # type: ignore[arg-type]
    return build_model(cfg, SHAPE, num_classes=10)


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli", "gaussian"])
@pytest.mark.parametrize("samples", [1, 4])
def test_shapes_follow_the_convention(likelihood: str, samples: int) -> None:
    model = make(likelihood=likelihood)
    x = torch.rand(5, *SHAPE)
    q = model.encode(x)
    assert isinstance(q, Distribution)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    z = q.rsample((samples,))
    assert z.shape == (samples, 5, 3)
    px = model.decode(z)
    assert px.batch_shape == (samples, 5) and px.event_shape == SHAPE
    assert px.log_prob(x).shape == (samples, 5)
    out = ELBO(samples=samples)(model, x)
    assert out.loss.shape == ()
    for name in ("loss", "recon", "kl", "elbo"):
        assert out.terms[name].shape == (5,)
        assert torch.isfinite(out.terms[name]).all()


def test_bernoulli_log_prob_is_exact_for_saturated_logits() -> None:
    # BCE on sigmoid outputs clamps log(0) at -100; logits give the exact value.
    model = make(likelihood="bernoulli")
    params = torch.full((1, 1, *SHAPE), 40.0)
    px = model.decoder.head(params)
    x = torch.zeros(1, *SHAPE)
    assert torch.allclose(px.log_prob(x), torch.tensor([-40.0 * 64]), rtol=1e-5)


def test_learned_sigma_has_two_outputs_per_pixel() -> None:
    model = make(likelihood=part("gaussian", sigma="learned"))
    assert model.decoder.head.params_per_element == 2
    px = model.decode(torch.zeros(4, 3))
    assert px.base_dist.scale.shape == (4, *SHAPE)
    # The scale comes from the network (it varies per pixel), not a constant.
    assert px.base_dist.scale.std() > 0


def test_fixed_sigma_gaussian_is_half_squared_error_plus_constant() -> None:
    model = make(likelihood=part("gaussian", sigma=1.0))
    z = torch.zeros(2, 3)
    px = model.decode(z)
    x = torch.rand(2, *SHAPE)
    mean = px.mean
    d = x[0].numel()
    expected = -0.5 * ((x - mean) ** 2).flatten(1).sum(1) - 0.5 * d * torch.log(
        torch.tensor(2 * torch.pi)
    )
    assert torch.allclose(px.log_prob(x), expected, atol=1e-4)


def test_analytic_and_monte_carlo_kl_agree() -> None:
    torch.manual_seed(0)
    model = make()
    q = model.encode(torch.rand(3, *SHAPE))
    z = q.rsample((20000,))
    analytic = kl_term(q, model.prior, z, "analytic")
    mc = kl_term(q, model.prior, z, "mc")
    assert (analytic >= 0).all()
    assert torch.allclose(analytic, mc, atol=0.05)


def test_beta_weights_only_the_divergence() -> None:
    torch.manual_seed(0)
    model = make()
    x = torch.rand(4, *SHAPE).round()
    torch.manual_seed(1)
    a = ELBO(beta=1.0)(model, x)
    torch.manual_seed(1)
    b = ELBO(beta=4.0)(model, x)
    assert torch.allclose(a.terms["recon"], b.terms["recon"])
    assert torch.allclose(b.terms["loss"], a.terms["recon"] + 4.0 * a.terms["kl"])
    # The reported ELBO is the unweighted bound whatever beta is.
    assert torch.allclose(a.terms["elbo"], b.terms["elbo"])


def test_autoencoder_is_a_point_posterior_with_no_density() -> None:
    model = make(posterior="point")
    x = torch.rand(4, *SHAPE)
    q = model.encode(x)
    assert torch.equal(q.rsample((2,))[0], q.mean)
    assert (q.variance == 0).all()
    with pytest.raises(NotImplementedError, match="no density"):
        q.log_prob(q.mean)
    out = AutoencoderLoss()(model, x)
    assert set(out.terms) == {"loss", "recon"}


def test_conditional_model_uses_the_label() -> None:
    model = make(conditional=True)
    assert model.num_classes == 10
    z = torch.zeros(2, 3)
    a = model.decode(z, torch.tensor([0, 0])).mean
    b = model.decode(z, torch.tensor([1, 1])).mean
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="labels"):
        model.decode(z)
    # S samples share their example's label.
    px = model.decode(torch.zeros(3, 2, 3), torch.tensor([4, 5]))
    assert px.batch_shape == (3, 2)
    assert model.sample(6, y=7).shape == (6, *SHAPE)


def test_conditional_model_takes_class_indices_or_one_hot_rows_of_any_dtype() -> None:
    import numpy as np

    from vaekit.data import DataError

    model = make(conditional=True)
    x, y = torch.rand(4, *SHAPE), torch.tensor([0, 3, 9, 3])
    expected = model.encode(x, y).mean
    for labels in (
        F.one_hot(y, 10),  # int64 one-hot rows (a shape error before)
        F.one_hot(y, 10).float(),
        np.eye(10)[y.numpy()],  # numpy float64 one-hot, as Keras' to_categorical
        y.float(),  # whole-number float labels
    ):
        torch.testing.assert_close(model.encode(x, torch.as_tensor(labels)).mean, expected)
    with pytest.raises(DataError, match="class indices 0..9 or one-hot rows"):
        model.encode(x, torch.tensor([0.5, 1.0, 2.0, 3.0]))


def test_sample_cycles_through_the_classes_and_refuses_labels_without_them() -> None:
    from vaekit.data import DataError

    cvae = make(conditional=True)
    torch.manual_seed(0)
    cycled = cvae.sample(12)
    torch.manual_seed(0)
    assert torch.equal(cycled, cvae.sample(12, torch.arange(12) % 10))
    with pytest.raises(DataError, match="not conditional"):
        make().sample(4, 3)


def test_gradients_reach_every_parameter() -> None:
    model = make()
    ELBO(samples=2)(model, torch.rand(4, *SHAPE).round()).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_network_precision_runs_only_the_networks_in_bfloat16(net: str) -> None:
    from vaekit.model import network_precision

    torch.manual_seed(0)
    encoder = part(net, hidden=[16], channels=[4, 8]) if net == "conv" else part(net, hidden=[16])
    cfg = ModelConfig(latent_dim=3, encoder=encoder)
    model = build_model(cfg, (1, 8, 8))
    seen: list[torch.dtype] = []
    for layer in model.modules():
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.rand(5, 1, 8, 8).round()
    with network_precision(torch.bfloat16):
        q = model.encode(x)
        px = model.decode(q.rsample((2,)))
        log_px = px.log_prob(x)
    assert seen and set(seen) == {torch.bfloat16}
    assert q.mean.dtype == log_px.dtype == torch.float32
    # The same model in float32 (outside the block) agrees to bfloat16's precision.
    seen.clear()
    with torch.no_grad():
        q32 = model.encode(x)
    assert set(seen) == {torch.float32}
    torch.testing.assert_close(q.mean, q32.mean, atol=0.05, rtol=0.05)
    with network_precision(None):
        assert model.encode(x).mean.dtype == torch.float32


def test_a_prior_without_a_closed_form_does_not_hide_one_that_has_it() -> None:
    # kl_term learns per type pair whether torch has a closed form; an Independent(StudentT)
    # prior without one must not make Independent(Normal) priors fall back or refuse.
    from torch.distributions import Independent, Normal, StudentT

    q = Independent(Normal(torch.zeros(2, 3), torch.ones(2, 3)), 1)
    t = Independent(StudentT(3.0, torch.zeros(3), torch.ones(3)), 1)
    z = q.rsample((10,))
    assert kl_term(q, t, z, "auto").shape == (2,)  # Monte Carlo: no closed form
    n = Independent(Normal(torch.ones(3), torch.ones(3)), 1)
    assert torch.allclose(kl_term(q, n, z, "analytic"), torch.full((2,), 1.5))

"""Likelihood heads: discrete 8-bit heads normalise over levels, real-valued heads match
reference densities, and the same heads do regression and classification."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from vaekit.data import load_dataset
from vaekit.distributions import (
    CategoricalLikelihood,
    DiscretizedLogisticLikelihood,
    DiscretizedLogisticMixture,
    LabelLikelihood,
    QuantizedCategorical,
    StudentTLikelihood,
    classifier,
    fit_predictor,
    regressor,
)


def _all_levels_log_prob(dist: torch.distributions.Distribution, levels: int) -> torch.Tensor:
    """log p of every level for a one-element event: (levels, *batch)."""
    grid = torch.arange(levels, dtype=torch.float32) / (levels - 1)
    shape = (levels,) + (1,) * len(dist.batch_shape) + (1,)
    return dist.log_prob(grid.reshape(shape))


@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("components", [1, 3])
def test_discretized_logistic_sums_to_one_over_levels(levels: int, components: int) -> None:
    torch.manual_seed(0)
    head = DiscretizedLogisticLikelihood((1,), levels=levels, components=components)
    params = 2 * torch.randn(7, head.params_per_element, 1)
    params[:, -components:] -= 2  # include narrow components (log-scale down to about -6)
    lp = _all_levels_log_prob(head(params), levels)
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(7), atol=1e-5, rtol=0)


def test_discretized_logistic_matches_cdf_differences_in_float64() -> None:
    torch.manual_seed(1)
    levels = 256
    mu, log_s = torch.randn(50, 1).double(), (torch.rand(50, 1) * 4 - 5).double()
    x = torch.randint(0, levels, (50,)).double()
    d = DiscretizedLogisticMixture(
        torch.zeros(50, 1), mu.float(), log_s.float(), event_dims=0, levels=levels
    )
    got = d.log_prob((x / (levels - 1)).float()).double()
    xs = x / (levels - 1) * 2 - 1
    cdf = lambda v: torch.sigmoid((v - mu[:, 0]) / log_s[:, 0].exp())  # noqa: E731
    lo = torch.where(x == 0, torch.zeros_like(xs), cdf(xs - 1 / (levels - 1)))
    hi = torch.where(x == levels - 1, torch.ones_like(xs), cdf(xs + 1 / (levels - 1)))
    mass = hi - lo
    ok = mass > 1e-12  # where the naive difference has not underflowed, even in float64
    assert ok.sum() > 25
    torch.testing.assert_close(got[ok], mass[ok].log(), atol=2e-3, rtol=1e-4)
    assert torch.isfinite(got).all() and (got[~ok] < math.log(1e-12) + 1).all()


def test_tiny_bin_masses_stay_finite_and_exact() -> None:
    # A sharp logistic far from a pixel: the naive log(sigmoid(a) - sigmoid(b)) underflows.
    d = DiscretizedLogisticMixture(
        torch.zeros(1, 1), torch.tensor([[0.9]]), torch.tensor([[-6.0]]), event_dims=0
    )
    lp = d.log_prob(torch.tensor([0.5]))
    assert torch.isfinite(lp).all() and float(lp) < -100


@pytest.mark.parametrize("log_scale", [50.0, 120.0, 4370.0])
def test_a_very_wide_logistic_gives_a_finite_loss_whose_gradient_narrows_it(
    log_scale: float,
) -> None:
    # A decoder far off its data (a posterior draw at |z| ~ 1000 in a run's outlier) put
    # out log-scales in the thousands: exp(-s) underflowed, log(1 - exp(-d)) was log(0), and
    # every such batch was skipped as non-finite, so nothing ever taught the model otherwise.
    levels = 256
    log_s = torch.tensor([[log_scale]], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64)
    d = DiscretizedLogisticMixture(
        torch.zeros(3, 1, dtype=torch.float64),
        torch.zeros(3, 1, dtype=torch.float64),
        log_s.expand(3, 1),
        event_dims=0,
        levels=levels,
    )
    lp = d.log_prob(x)
    # Interior bin of width 2/255 under a logistic of scale e^s: log(1/4 * (2/255) e^-s);
    # the end bins hold half the mass each.
    expected = torch.tensor(
        [math.log(0.25 * 2 / (levels - 1)) - log_scale, math.log(0.5), math.log(0.5)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(lp, expected, atol=1e-6, rtol=1e-9)
    (-lp.sum()).backward()
    assert log_s.grad is not None and torch.isfinite(log_s.grad).all()
    torch.testing.assert_close(log_s.grad, torch.tensor([[1.0]], dtype=torch.float64))
    # float32, as training runs it, stays finite too
    d32 = DiscretizedLogisticMixture(
        torch.zeros(3, 1), torch.zeros(3, 1), torch.full((3, 1), log_scale), 0, levels
    )
    assert torch.isfinite(d32.log_prob(x.float())).all()


@pytest.mark.parametrize("levels", [2, 256])
def test_categorical_sums_to_one_and_uniform_is_log2_levels_bits(levels: int) -> None:
    torch.manual_seed(2)
    d = QuantizedCategorical(torch.randn(4, 1, levels), event_dims=1)
    torch.testing.assert_close(
        _all_levels_log_prob(d, levels).exp().sum(0), torch.ones(4), atol=1e-5, rtol=0
    )
    head = CategoricalLikelihood((1, 3, 3), levels=levels)
    uniform = head(torch.zeros(2, levels, 1, 3, 3))
    bits_per_dim = -uniform.log_prob(torch.rand(2, 1, 3, 3)) / (9 * math.log(2))
    torch.testing.assert_close(bits_per_dim, torch.full((2,), math.log2(levels)))


@pytest.mark.parametrize("kind", ["categorical", "logistic"])
def test_discrete_heads_sample_on_the_grid_with_the_stated_mean(kind: str) -> None:
    torch.manual_seed(3)
    levels = 17
    if kind == "categorical":
        d: torch.distributions.Distribution = QuantizedCategorical(
            torch.randn(2, 3, levels), event_dims=1
        )
    else:
        d = DiscretizedLogisticMixture(
            torch.randn(2, 3, 2), torch.randn(2, 3, 2) * 0.5, torch.randn(2, 3, 2) - 1, 1, levels
        )
    s = d.sample((20000,))
    assert s.shape == (20000, 2, 3)
    assert ((s * (levels - 1)).round() == s * (levels - 1)).all() and s.min() >= 0 and s.max() <= 1
    torch.testing.assert_close(s.mean(0), d.mean, atol=0.01, rtol=0)
    torch.testing.assert_close(s.var(0), d.variance, atol=0.01, rtol=0)
    assert torch.isfinite(d.log_prob(s[:5])).all()


def test_student_t_matches_scipy_and_learns_its_degrees_of_freedom() -> None:
    torch.manual_seed(4)
    head = StudentTLikelihood((3,), sigma="learned", df="learned")
    params = torch.randn(5, 2, 3)
    x = torch.randn(5, 3) * 3
    got = head(params).log_prob(x)
    loc, scale = params[:, 0], params[:, 1].exp()
    ref = stats.t.logpdf(
        x.numpy(), df=head.df.detach().numpy(), loc=loc.numpy(), scale=scale.numpy()
    ).sum(-1)
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-5)
    assert torch.allclose(head.df, torch.full((3,), 5.0))
    got.sum().backward()
    assert head.df_raw.grad is not None and (head.df > 1).all()
    fixed = StudentTLikelihood((3,), sigma=0.5, df=3.0)
    assert fixed.params_per_element == 1 and not list(fixed.parameters())
    ref = stats.t.logpdf(x.numpy(), df=3.0, loc=params[:, 0].numpy(), scale=0.5).sum(-1)
    np.testing.assert_allclose(fixed(params[:, :1]).log_prob(x).numpy(), ref, rtol=1e-5)


def test_label_likelihood_is_the_cross_entropy() -> None:
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    nll = -LabelLikelihood(4)(logits).log_prob(y)
    torch.testing.assert_close(nll, F.cross_entropy(logits, y, reduction="none"))


def test_regression_learns_the_noise_level_and_heavy_tails_resist_outliers() -> None:
    torch.manual_seed(5)
    x = torch.linspace(-2, 2, 400).unsqueeze(-1)
    y = torch.sin(2 * x) + 0.1 * torch.randn_like(x)
    y_out = y.clone()
    y_out[::20] += 8.0  # 5% gross outliers
    gauss = regressor(1, [32, 32], likelihood="gaussian")
    losses = fit_predictor(gauss, x, y, epochs=400, lr=1e-2)
    assert losses[-1] < losses[0] - 1.0
    with torch.no_grad():
        assert 0.06 < float(gauss(x).stddev.median()) < 0.16  # the true noise scale is 0.1
    robust, plain = regressor(1, [32, 32], likelihood="student-t"), regressor(1, [32, 32])
    fit_predictor(robust, x, y_out, epochs=400, lr=1e-2)
    fit_predictor(plain, x, y_out, epochs=400, lr=1e-2)
    clean = torch.ones(400, dtype=torch.bool)
    clean[::20] = False
    with torch.no_grad():
        err_t = (robust(x).mean - torch.sin(2 * x))[clean].abs().mean()
        err_g = (plain(x).mean - torch.sin(2 * x))[clean].abs().mean()
    assert err_t < err_g


def test_classification_with_the_label_head() -> None:
    ds = load_dataset("digits")
    x, y = ds.train.x.reshape(len(ds.train), -1), ds.train.y
    xt, yt = ds.test.x.reshape(len(ds.test), -1), ds.test.y
    assert y is not None and yt is not None
    model = classifier(64, [64], num_classes=10)
    fit_predictor(model, x, y, epochs=30, lr=3e-3, batch_size=64)
    with torch.no_grad():
        accuracy = float((model(xt).probs.argmax(-1) == yt).float().mean())
    assert accuracy > 0.9
    with pytest.raises(ValueError, match="at least 2 classes"):
        classifier(64, [8], num_classes=1)
    with pytest.raises(ValueError, match="must model real values: one of gaussian, student-t"):
        regressor(1, [8], likelihood="laplace")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_fast_log_prob_is_torch_bernoulli_for_binary_and_soft_data(
    dtype: torch.dtype,
) -> None:
    from vaekit.distributions import BernoulliLikelihood

    torch.manual_seed(0)
    head = BernoulliLikelihood((1, 4, 4))
    # Logits from saturated to near zero, for samples (S=3) of a batch of 5.
    params = (torch.randn(3, 5, 1, 1, 4, 4, dtype=dtype) * 12).requires_grad_()
    logits = params.squeeze(2)
    ref_dist = torch.distributions.Independent(
        torch.distributions.Bernoulli(logits=logits, validate_args=False), 3
    )
    for x in (
        (torch.rand(5, 1, 4, 4, dtype=dtype) < 0.5).to(dtype),  # binary
        torch.rand(5, 1, 4, 4, dtype=dtype),  # grey levels in [0, 1]
    ):
        got = head(params).log_prob(x)
        ref = ref_dist.log_prob(x)
        assert got.shape == ref.shape == (3, 5)
        tol = 1e-12 if dtype == torch.float64 else 2e-4
        torch.testing.assert_close(got, ref, rtol=0, atol=tol * 16 * 12)
        (g_got,) = torch.autograd.grad(got.sum(), params)
        (g_ref,) = torch.autograd.grad(ref.sum(), params)
        torch.testing.assert_close(g_got, g_ref)


def _registry_head(name: str, shape: tuple[int, ...]) -> torch.nn.Module:
    import dataclasses

    from vaekit.registry import LIKELIHOODS

    part = LIKELIHOODS.get(name)
    fields = {f.name for f in dataclasses.fields(part.options)}
    options = part.options(**({"levels": 16} if "levels" in fields else {}))
    head: torch.nn.Module = part.build(options, shape)
    return head


def _likelihood_names() -> list[str]:
    from vaekit.registry import LIKELIHOODS

    return LIKELIHOODS.names()


@pytest.mark.parametrize("name", _likelihood_names())
def test_every_likelihood_takes_x_flat_shaped_or_numpy_with_the_same_numbers(name: str) -> None:
    # Issue 13: x of shape (N, 28, 28) against a (1, 28, 28) event broadcast across the
    # batch in Bernoulli's sum(x * logits) and gave positive "log-likelihoods".
    shape = (1, 4, 4)
    torch.manual_seed(0)
    head = _registry_head(name, shape)
    p = head(torch.randn(3, 5, head.params_per_element, *shape))  # S=3 samples of N=5
    x = torch.randint(0, 16, (5, *shape)) / 15.0  # on every head's grid, in [0, 1]
    expected = p.log_prob(x)
    assert expected.shape == (3, 5) and bool(torch.isfinite(expected).all())
    for value in (
        x.reshape(5, 16),  # flat, as tables and Keras' Dense inputs hold it
        x.reshape(5, 4, 4),  # the channel left out, as Keras users hold MNIST
        x.reshape(5, 4, 4, 1),  # channels last
        x.numpy(),
        x.reshape(5, 16).numpy().astype(np.float64),  # x / 255.0 in numpy is float64
    ):
        got = p.log_prob(value)
        assert got.dtype == expected.dtype
        torch.testing.assert_close(got, expected)
    # One example, flat, scored under every z.
    torch.testing.assert_close(p.log_prob(x[0].flatten()), p.log_prob(x[:1].expand(5, *shape)))


@pytest.mark.parametrize("name", _likelihood_names())
def test_every_likelihood_names_both_shapes_when_x_does_not_fit(name: str) -> None:
    from vaekit.data import DataError

    shape = (1, 4, 4)
    head = _registry_head(name, shape)
    p = head(torch.zeros(5, head.params_per_element, *shape))
    x = torch.full((5, *shape), 0.5)
    for bad in (x.reshape(5, 16)[:, :15], x.reshape(5, 2, 8), x.reshape(10, 8)):
        with pytest.raises(DataError, match=r"\(1, 4, 4\) \(16 values\)") as e:
            p.log_prob(bad)
        assert str(tuple(bad.shape)) in str(e.value)
    with pytest.raises(DataError, match=r"\(4, 1, 4, 4\).*\(5,\)"):
        p.log_prob(x[:4])  # four examples for five codes


@pytest.mark.parametrize("name", _likelihood_names())
def test_likelihoods_of_0_to_1_data_refuse_8_bit_values(name: str) -> None:
    from vaekit.data import DataError
    from vaekit.distributions.likelihoods import check_unit_interval

    shape = (1, 4, 4)
    head = _registry_head(name, shape)
    p = head(torch.zeros(5, head.params_per_element, *shape))
    x8 = torch.arange(5 * 16).reshape(5, *shape).to(torch.uint8) * 3  # 0..237
    if head.unit_interval:
        for value in (x8, x8.float(), x8.numpy()):
            with pytest.raises(
                DataError, match=r"\[0, 237\]: they look like 8-bit levels.*divide them by 255"
            ):
                p.log_prob(value)
        with pytest.raises(DataError, match=r"\[-1, 0.8588\]: scale them to \[0, 1\]"):
            p.log_prob(x8.float() / 127.5 - 1)
        # Rounding may land a hair above 1: still [0, 1] data.
        assert bool(torch.isfinite(p.log_prob(torch.full((5, *shape), 1 + 1e-7))).all())
        # NaN is not a question of scale: no "scale them to [0, 1]" for it.
        check_unit_interval(torch.tensor([float("nan"), 0.5]))
    else:  # real-valued heads take any value
        assert bool(torch.isfinite(p.log_prob(x8)).all())


def test_values_checked_leaves_out_the_range_check_and_only_within() -> None:
    """The trainer vouches for data it range-checked when loading (values_checked): the
    likelihood then skips its pass over each batch; outside, and with checked=False, 8-bit
    values are refused as before."""
    from vaekit.data import DataError
    from vaekit.distributions.likelihoods import values_checked

    head = _registry_head("bernoulli", (1, 4, 4))
    p = head(torch.zeros(2, head.params_per_element, 1, 4, 4))
    x8 = torch.full((2, 1, 4, 4), 200.0)
    with values_checked():
        assert p.log_prob(x8).shape == (2,)
        with values_checked(False):  # a nested "not checked" keeps the outer word
            assert p.log_prob(x8).shape == (2,)
    for ctx in (values_checked(False), contextlib.nullcontext()):
        with ctx, pytest.raises(DataError, match="8-bit levels"):
            p.log_prob(x8)


@pytest.mark.parametrize("name", _likelihood_names())
def test_every_likelihood_says_when_its_nll_is_no_likelihood_of_the_data(name: str) -> None:
    head = _registry_head(name, (1, 4, 4))
    notes = {kind: head.nll_caveat(kind) for kind in ("binary", "grey", "real")}
    if name in ("categorical", "discretized-logistic"):
        assert set(notes.values()) == {None}  # probabilities of the 8-bit levels
    elif name == "bernoulli":
        assert notes["binary"] is None and "cross-entropy" in str(notes["grey"])
    else:  # continuous densities: nats of a density on pixels do not compare
        assert notes["real"] is None and "a density" in str(notes["binary"])
        assert notes["grey"] == notes["binary"]

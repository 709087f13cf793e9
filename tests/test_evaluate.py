"""Evaluation: the importance-sampled likelihood is proven on probabilistic PCA, where
log p(x) is known in closed form; the rest on tiny runs trained here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import train_tiny
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Size, Tensor, nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

import vaekit
from vaekit.cli import main
from vaekit.config import load_config
from vaekit.data import Split
from vaekit.evaluate import (
    StreamingLogSumExp,
    active_units,
    classifier_accuracy,
    evaluate_run,
    has_density,
    kl_per_dim,
    latent_means,
    log_likelihood,
    log_likelihood_split,
    mean_and_se,
    posterior_moments,
)
from vaekit.model import VAE, build_model
from vaekit.objectives import ELBO

# ---------------------------------------------------------------------------
# probabilistic PCA: z ~ N(0, I), x = W z + b + N(0, sigma^2 I)

D, L, SIGMA = 6, 2, 0.5


def _ppca(
    mean_scale: float = 1.0, var_scale: float = 1.0, n: int = 400
) -> tuple[VAE, Tensor, Tensor]:
    """A VAE built from the library's parts (MLPs without hidden layers, Gaussian likelihood)
    whose decoder is the linear-Gaussian model, with its exact posterior as the encoder.

    W has orthogonal columns, so the exact posterior is diagonal and the library's
    diagonal Gaussian posterior can represent it. ``mean_scale`` / ``var_scale`` distort
    the posterior to make importance sampling work for its answer.
    Returns (model, x, exact log p(x)).
    """
    cfg = load_config(
        None,
        [
            f"model.latent_dim={L}",
            "model.encoder.hidden=[]",
            "model.likelihood=gaussian",
            f"model.likelihood.sigma={SIGMA}",
        ],
    )
    model = build_model(cfg.model, (D,)).double().eval()
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(D, L, generator=g, dtype=torch.float64))
    s = torch.tensor([2.0, 1.0], dtype=torch.float64)
    w, b = u * s, torch.randn(D, generator=g, dtype=torch.float64)
    precision = s**2 + SIGMA**2
    a = w.T / precision[:, None]  # posterior mean = a (x - b)
    post_var = SIGMA**2 / precision
    with torch.no_grad():
        dec, enc = model.decoder.net.net[0], model.encoder.net.net[0]
        dec.weight.copy_(w)
        dec.bias.copy_(b)
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[:L] = a * mean_scale
        enc.bias[:L] = -(a @ b) * mean_scale
        enc.bias[L:] = torch.log(post_var * var_scale)
    marginal = MultivariateNormal(b, w @ w.T + SIGMA**2 * torch.eye(D, dtype=torch.float64))
    x = (
        torch.randn(n, L, generator=g, dtype=torch.float64) @ w.T
        + b
        + SIGMA * torch.randn(n, D, generator=g, dtype=torch.float64)
    )
    return model, x, marginal.log_prob(x)


def test_ppca_exact_posterior_is_exact_for_any_k() -> None:
    model, x, exact = _ppca()
    torch.manual_seed(0)
    for k in (1, 3, 50):
        est = log_likelihood(model, x, k=k)
        assert est.dtype == torch.float64
        assert float((est - exact).abs().max()) < 1e-9


def test_ppca_estimate_converges_to_exact_as_k_grows() -> None:
    # An inflated, shrunk posterior: importance weights with finite variance, visible error.
    model, x, exact = _ppca(mean_scale=0.8, var_scale=3.0)
    errors, biases = [], []
    for k in (1, 10, 100, 1000, 5000):
        torch.manual_seed(1)
        err = log_likelihood(model, x, k=k) - exact
        errors.append(float(err.abs().mean()))
        biases.append(float(err.mean()))
    # Measured: 1.96, 0.29, 0.085, 0.027, 0.012 nats.
    assert all(a > 1.5 * b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 0.5 and errors[-1] < 0.03, errors
    # k=1 is the ELBO: below log p(x) on average (Jensen).
    assert biases[0] < -0.5


def test_k1_equals_single_sample_elbo_for_the_same_draw() -> None:
    model, x, _ = _ppca(mean_scale=0.8, var_scale=3.0, n=50)
    torch.manual_seed(3)
    is1 = log_likelihood(model, x, k=1)
    torch.manual_seed(3)
    elbo = ELBO(samples=1, kl="mc")(model, x).terms["elbo"]
    assert torch.allclose(is1, elbo.double(), atol=1e-10, rtol=0)


class _ReplayPosterior(nn.Module):
    """A custom posterior head whose draws come from a fixed bank of noise, in order,
    however the caller chunks them: chunked and unchunked estimates see the same z."""

    def __init__(self, bank: Tensor) -> None:
        super().__init__()
        self.bank = bank

    def forward(self, features: Tensor) -> Distribution:
        mean, logvar = features.chunk(2, dim=-1)
        return _Replay(Independent(Normal(mean, torch.exp(0.5 * logvar)), 1), self.bank)


class _Replay(Distribution):
    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, base: Independent, bank: Tensor) -> None:
        self.base, self.bank, self.cursor = base, bank, 0
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def rsample(self, sample_shape: Size | tuple[int, ...] = ()) -> Tensor:
        s = int(sample_shape[0])
        eps = self.bank[self.cursor : self.cursor + s]
        self.cursor += s
        return self.base.mean + self.base.stddev * eps

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(value)

    @property
    def mean(self) -> Tensor:
        return self.base.mean


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 60), chunk=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_chunked_estimator_equals_unchunked(k: int, chunk: int, seed: int) -> None:
    model, x, _ = _ppca(mean_scale=0.8, var_scale=3.0, n=7)
    bank = torch.randn(k, 7, L, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    model.encoder.head = _ReplayPosterior(bank)
    whole = log_likelihood(model, x, k=k, chunk=k)
    chunked = log_likelihood(model, x, k=k, chunk=chunk)
    assert torch.allclose(whole, chunked, atol=1e-12, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=40
    ),
    cut=st.integers(1, 40),
)
def test_streaming_logsumexp_is_finite_and_exact_for_extreme_weights(
    values: list[float], cut: int
) -> None:
    a = torch.tensor(values, dtype=torch.float32)[:, None]
    acc = StreamingLogSumExp()
    for i in range(0, len(a), cut):
        acc.update(a[i : i + cut])
    out = acc.result()
    assert out.dtype == torch.float64 and bool(torch.isfinite(out).all())
    expected = torch.logsumexp(a.double(), 0)
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-9)
    # float64 rounding at the magnitude of the largest weight (0.25 at 2**50): the slack.
    top = float(a.max())
    slack = 1e-9 + 4 * abs(top) * 2.0**-52
    assert top - slack <= float(out) <= top + math.log(len(a)) + slack
    assert acc.count == len(a)


def test_streaming_logsumexp_ignores_impossible_samples() -> None:
    acc = StreamingLogSumExp()
    acc.update(torch.tensor([[-math.inf, 0.0]]))
    acc.update(torch.tensor([[-1e4, -math.inf]]))
    out = acc.result()
    assert torch.allclose(out, torch.tensor([-1e4, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="before any update"):
        StreamingLogSumExp().result()


def test_bad_arguments_have_clear_errors() -> None:
    model, x, _ = _ppca(n=3)
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        log_likelihood(model, x, k=0)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        log_likelihood(model, x, k=5, chunk=0)
    with pytest.raises(ValueError, match="at least one value"):
        mean_and_se([])
    with pytest.raises(ValueError, match="shape"):
        active_units(np.zeros(5))


def test_mean_and_se_and_active_units() -> None:
    mean, se = mean_and_se(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and math.isclose(se, np.std([1, 2, 3, 4], ddof=1) / 2)
    codes = np.stack(
        [np.linspace(-1, 1, 100), np.full(100, 0.3), 0.05 * np.sin(np.arange(100))], axis=1
    )
    count, var = active_units(codes)
    assert count == 1 and var[0] > 0.3 and var[1] < 1e-20 and var[2] < 0.01


@pytest.mark.parametrize("posterior", ["flow", "implicit", "hierarchy", "flowed hierarchy"])
def test_monte_carlo_means_do_not_invent_active_units(posterior: str) -> None:
    # Every example is the same image, so every q(z|x) is the same distribution and no unit
    # is active. The Monte Carlo means share their noise across examples, so they agree
    # and add no variance across x (noise drawn per example added about Var_q / draws,
    # near the 0.01 threshold at 128 draws; a hierarchy drew it per example until now).
    from vaekit.config import ModelConfig
    from vaekit.distributions.posteriors import MOMENT_DRAWS

    planar = {"name": "planar", "length": 2}
    kw: dict[str, Any] = {
        "flow": {"flow": planar},
        "implicit": {"posterior": {"name": "implicit", "noise_dim": 4}},
        "hierarchy": {"posterior": {"name": "hierarchical", "hidden": 8}},
        "flowed hierarchy": {"posterior": {"name": "hierarchical", "hidden": 8}, "flow": planar},
    }[posterior]
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, **kw), (1, 4, 4)).eval()
    x = torch.rand(1, 1, 4, 4).round().expand(300, 1, 4, 4)
    few = latent_means(model, x, batch_size=100)
    with torch.no_grad():
        q = model.encode(x[:100])
        assert torch.equal(few[:100], q.mean)  # the default is q.mean
        spread = float(q.variance.mean())
    assert active_units(few)[0] == 0 and float(few.var(0).max()) < 1e-6 * spread
    many = posterior_moments(model, x, batch_size=100, samples=16 * MOMENT_DRAWS + 5)
    assert active_units(many.mean)[0] == 0
    # The chunks are the draws of seeds 0, 1, ... (the last one shorter), merged by the
    # law of total variance (a hierarchy's conditional moments; a flow's are its draws).
    with torch.no_grad():
        chunks = [q.moment_draws(MOMENT_DRAWS, seed=s) for s in range(16)]
        chunks.append(q.moment_draws(5, 16))
    cond_mean = torch.cat([c[0] for c in chunks])
    cond_var = torch.cat([c[1] for c in chunks])
    torch.testing.assert_close(many.mean[:100], cond_mean.mean(0))
    torch.testing.assert_close(many.variance[:100], cond_var.mean(0) + cond_mean.var(0))
    # Alone or in a batch, an example gets the same moments.
    alone = posterior_moments(model, x[7:8])
    torch.testing.assert_close(alone.mean[0], few[7], rtol=1e-5, atol=1e-6)


def test_classifier_accuracy_separates_clusters() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(400) % 4
    z = rng.normal(size=(400, 2)) * 0.1 + np.stack([np.cos(y), np.sin(y)], 1) * 3
    acc = classifier_accuracy(z[:300], y[:300], z[300:], y[300:])
    assert acc["knn"] > 0.95 and acc["logistic_regression"] > 0.9
    with pytest.raises(ValueError, match="two classes"):
        classifier_accuracy(z[:10], np.zeros(10), z[:5], np.zeros(5))


# ---------------------------------------------------------------------------
# tiny trained runs


def _train(tmp: Path, *overrides: str) -> vaekit.Run:
    return vaekit.load(train_tiny(tmp, *overrides))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    torch.set_num_threads(1)
    return _train(tmp_path_factory.mktemp("vae"))


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    torch.set_num_threads(1)
    return _train(tmp_path_factory.mktemp("ae"), "model.posterior=point", "objective.name=ae")


def test_evaluate_run_reports_every_figure(vae_run: vaekit.Run) -> None:
    r = evaluate_run(vae_run, k=50, threads=1, progress=False)
    for key in (
        "nll",
        "nll_se",
        "bits_per_dim",
        "elbo",
        "elbo_se",
        "recon",
        "kl",
        "kl_per_dim",
        "active_units",
        "classifier",
    ):
        assert r[key] is not None, key
    assert r["n"] == 359 and r["k"] == 50 and r["dataset"] == "digits"
    # Bernoulli on grey digits: the number is a cross-entropy, and the JSON says so.
    assert r["nll_note"].startswith("a cross-entropy, not a likelihood")
    assert math.isfinite(r["nll"]) and 0 < r["nll_se"] < 1
    # The 50-sample bound is tighter than the 1-sample ELBO (up to noise).
    assert r["nll"] <= -r["elbo"] + 3 * (r["nll_se"] + r["elbo_se"])
    assert math.isclose(r["bits_per_dim"], r["nll"] / (64 * math.log(2)))
    assert r["kl_per_dim_method"] == "analytic" and len(r["kl_per_dim"]) == 2
    # Analytic KL per dimension sums to the KL term of the ELBO.
    assert math.isclose(sum(r["kl_per_dim"]), r["kl"], rel_tol=1e-4, abs_tol=1e-5)
    assert 0 <= r["active_units"] <= 2 and len(r["latent_variance"]) == 2
    # The classifier learns from the training examples the run used (data.limit=256).
    assert 0 <= r["classifier"]["knn"] <= 1 and r["classifier"]["train_n"] == 256
    json.dumps(r)  # JSON-able


def test_encode_writes_the_means_evaluation_uses_for_a_flow(tmp_path: Path) -> None:
    # One function (posterior_moments) gives the posterior means of `vaekit encode`,
    # evaluation, the plots and the explorer: for a flow, whose means are Monte Carlo
    # estimates, they were four estimates that differed by up to 0.3 on a 2-D model.
    from vaekit.serve.explorer import Explorer

    run = _train(tmp_path / "planar", "model.flow=planar", "model.flow.length=2")
    assert main(["encode", str(run.dir), "--out", str(tmp_path / "z.npy")]) == 0
    test = run.dataset().test
    moments = posterior_moments(run, test.x)
    assert np.array_equal(np.load(tmp_path / "z_mean.npy"), latent_means(run, test.x).numpy())
    assert np.array_equal(np.load(tmp_path / "z_var.npy"), moments.variance.numpy())
    # An example's code does not depend on the batch it is encoded in: alone, or as the
    # explorer encodes its subset of the test split.
    close = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(
        posterior_moments(run, test.x[5:6]).mean[0], moments.mean[5], **close
    )
    part = Split(test.x[50:150], test.y[50:150])
    codes = torch.from_numpy(Explorer(run, part, max_points=1000).codes)
    torch.testing.assert_close(codes, moments.mean[50:150], **close)


def test_log_likelihood_split_is_seeded_and_leaves_global_rng_alone(vae_run: vaekit.Run) -> None:
    split = vae_run.dataset().test.take(20)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = log_likelihood_split(vae_run, split, k=30, seed=5, progress=False)
    after = torch.rand(1)
    b = log_likelihood_split(vae_run, split, k=30, seed=5, batch_size=7, progress=False)
    assert torch.equal(before, after)
    assert a.shape == (20,) and bool(torch.isfinite(a).all())
    # Different batching draws different samples, but the estimates agree closely.
    assert float((a - b).abs().mean()) < 0.5


def test_point_posterior_reports_what_applies(ae_run: vaekit.Run) -> None:
    r = evaluate_run(ae_run, k=10, threads=1, progress=False)
    assert r["nll"] is None and "undefined" in r["nll_note"]
    assert r["kl_per_dim"] is None and "undefined" in r["kl_per_dim_method"]
    assert "elbo" not in r and math.isfinite(r["recon"]) and r["recon_se"] > 0
    assert r["classifier"] is not None and isinstance(r["active_units"], int)
    assert not has_density(ae_run)
    with pytest.raises(ValueError, match="no density"):
        log_likelihood(ae_run, ae_run.dataset().test.x[:2], k=2)


def test_limit_takes_a_random_share_of_every_class_never_the_first_rows(
    vae_run: vaekit.Run,
) -> None:
    # A test split stored in order, as MNIST's is (its first 2,000 images score ~20 nats
    # better than the rest): the first rows of a file are not a sample of it.
    from dataclasses import replace

    ds = vae_run.dataset()
    x = ds.test.x[:200].clone()
    x[:100] = 0.0  # the first half: blank images, far easier than the rest
    y = torch.tensor([0] * 100 + [1] * 100)
    sorted_ds = replace(ds, test=Split(x, y))
    full = evaluate_run(
        vae_run, k=5, threads=1, dataset=sorted_ds, classifier=False, progress=False
    )
    part = evaluate_run(
        vae_run, k=5, threads=1, dataset=sorted_ds, limit=40, classifier=False, progress=False
    )
    first = evaluate_run(
        vae_run,
        k=5,
        threads=1,
        dataset=replace(ds, test=Split(x[:40], y[:40])),
        classifier=False,
        progress=False,
    )
    assert part["n"] == 40 and part["subset_of"] == 200 and "subset_of" not in full
    # Half of each class: the subset's bound is near the whole split's, not the first rows'.
    assert abs(part["elbo"] - full["elbo"]) < abs(first["elbo"] - full["elbo"]) / 3


def test_conditional_model_uses_labels(tmp_path: Path) -> None:
    run = _train(tmp_path / "cvae", "model.conditional=true", "train.epochs=1")
    r = evaluate_run(run, k=20, threads=1, limit=60, progress=False)
    assert r["n"] == 60 and math.isfinite(r["nll"])
    ds = run.dataset()
    with pytest.raises(ValueError, match="labels"):
        log_likelihood_split(run, Split(ds.test.x[:5], None), k=2)


def test_kl_per_dim_monte_carlo_matches_analytic_for_a_mixture_prior(vae_run: vaekit.Run) -> None:
    """A one-component mixture prior has no closed-form KL, but the same density as N(0, I):
    the Monte Carlo per-dimension KL must agree with the analytic one."""
    split = vae_run.dataset().test.take(100)
    analytic, method = kl_per_dim(vae_run, split)
    assert method == "analytic" and analytic is not None

    class OneComponent(nn.Module):
        def forward(self, encoder: object = None) -> Distribution:
            comp = Independent(Normal(torch.zeros(1, 2), torch.ones(1, 2)), 1)
            return MixtureSameFamily(Categorical(logits=torch.zeros(1)), comp)

    original = vae_run.model.prior_module
    vae_run.model.prior_module = OneComponent()
    try:
        mc, method = kl_per_dim(vae_run, split, samples=400)
    finally:
        vae_run.model.prior_module = original
    assert method == "monte carlo" and mc is not None
    assert torch.allclose(mc, analytic, atol=0.05), (mc, analytic)


def test_cli_evaluate_prints_and_writes_json(
    vae_run: vaekit.Run, capsys: pytest.CaptureFixture[str]
) -> None:
    out = vae_run.dir / "eval-cli.json"
    assert (
        main(
            [
                "evaluate",
                str(vae_run.dir),
                "--k",
                "10",
                "--limit",
                "40",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["k"] == 10 and printed["n"] == 40
    assert json.loads(out.read_text())["nll"] == printed["nll"]
    assert main(["evaluate", str(vae_run.dir), "--k", "0", "--limit", "5", "--out", str(out)]) == 2
    assert "must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("net", "likelihood", "conditional", "rows"),
    [
        ("mlp", "bernoulli", False, 2048),  # 784 logits per row: the measured 2048
        ("mlp", "categorical", False, 16),  # 784 x 256 logits per row: the floor
        ("conv", "bernoulli", True, 128),  # 64 x 14 x 14 maps per row
    ],
)
def test_fitted_max_rows_follows_the_widest_decoder_activation(
    net: str, likelihood: str, conditional: bool, rows: int
) -> None:
    from vaekit.config import ModelConfig, part
    from vaekit.evaluate import ROW_FLOATS, fitted_max_rows

    cfg = ModelConfig(
        latent_dim=3,
        encoder=part(net, hidden=[64], channels=[64, 128])
        if net == "conv"
        else part(net, hidden=[64]),
        likelihood=likelihood,
        conditional=conditional,
        num_classes=10 if conditional else 0,
    )
    model = build_model(cfg, (1, 28, 28), 10 if conditional else 0)
    assert fitted_max_rows(model) == rows
    if net == "conv":
        assert rows == ROW_FLOATS // (64 * 14 * 14)
    # The evaluation's passes stay within it: every decoder call sees at most `rows` rows.
    seen: list[int] = []
    model.decoder.register_forward_hook(lambda m, i, o: seen.append(i[0][..., 0].numel()))
    x = torch.rand(5, 1, 28, 28).round()
    y = torch.arange(5) if conditional else None
    log_likelihood_split(model, Split(x, y), k=300)
    assert seen and max(seen) <= rows


def test_threads_hold_the_blas_and_openmp_pools_too_and_restore_them() -> None:
    # scikit-learn's classifiers and DCI's regressors compute in numpy/scipy's BLAS: with
    # its pool left at one thread per core they spin against other processes (a 4x slower
    # latent classifier on a busy 2-core machine).
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    from vaekit.evaluate import num_threads

    np.dot(np.ones((8, 8)), np.ones((8, 8)))  # loads the BLAS

    def pools() -> dict[str, int]:
        return {i["internal_api"]: i["num_threads"] for i in threadpool_info()}

    torch_before = torch.get_num_threads()
    with threadpool_limits(limits=2):
        outside = pools()
        with num_threads(1) as used:
            assert used == 1 and torch.get_num_threads() == 1
            assert set(pools().values()) == {1}, pools()
        assert pools() == outside
    assert torch.get_num_threads() == torch_before


def test_a_dynamically_binarized_run_is_evaluated_on_binary_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test split of a dynamically binarized run holds one binary draw, its training
    # split grey images: the classifier is fitted, and --split train scored, on what the
    # model saw in training (one seeded draw).
    import vaekit.evaluate as ev

    run = vaekit.load(train_tiny(tmp_path / "run", "data.binarize=dynamic", "train.epochs=1"))
    seen: list[Tensor] = []
    means = ev.latent_means

    def spy(model: Any, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        seen.append(x)
        return means(model, x, *args, **kwargs)

    monkeypatch.setattr(ev, "latent_means", spy)
    for split in ("test", "train"):
        result = ev.evaluate_run(run, k=2, split=split, limit=50)
        assert result["classifier"] is not None
        # The binary split's NLL is a likelihood (not the grey data's cross-entropy).
        assert "nll_note" not in result
    assert len(seen) >= 4  # the evaluated split's means and the training split's, twice
    assert all(set(x.unique().tolist()) == {0.0, 1.0} for x in seen)

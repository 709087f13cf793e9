"""Out-of-distribution scores (vaekit.ood, `vaekit score`): metrics against scikit-learn,
Havtorn et al.'s L>k, likelihood regret, and the command end to end on planted outliers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_tiny

import vaekit
from vaekit.cli import main
from vaekit.data import DataError, Split
from vaekit.errors import UsageError
from vaekit.evaluate import log_likelihood
from vaekit.ood import (
    ScoreSettings,
    anomaly_threshold,
    auprc,
    auroc,
    bound_above,
    fpr_at_tpr,
    likelihood_regret,
    ood_metrics,
    png_bits,
    score,
    score_split,
)

# -- metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_metrics_match_scikit_learn(seed: int, ties: bool) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, 300 + seed * 17)
    b = rng.normal(0.7, 1.3, 200 + seed * 11)
    if ties:  # many equal scores, as rounded or discrete scores give
        a, b = np.round(a, 1), np.round(b, 1)
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    s = np.r_[a, b]
    assert auroc(a, b) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auprc(a, b) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    # Havtorn et al.'s FPR80: the FPR at the first ROC point with TPR >= 0.8.
    assert fpr_at_tpr(a, b, 0.8) == pytest.approx(fpr[np.flatnonzero(tpr >= 0.8)[0]], abs=1e-12)


def test_noise_scores_land_at_chance_and_separated_scores_at_one() -> None:
    rng = np.random.default_rng(0)
    same = ood_metrics(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(same["auroc"] - 0.5) < 0.03
    assert abs(same["fpr80"] - 0.8) < 0.05  # flagging 80% of noise flags 80% of noise
    apart = ood_metrics(np.zeros(10), np.ones(10))
    assert apart == {"auroc": 1.0, "auprc": 1.0, "fpr80": 0.0}
    # The orientation: out-of-distribution examples scoring *lower* give an AUROC below 0.5.
    assert ood_metrics(np.ones(10), np.zeros(10))["auroc"] == 0.0


def test_metrics_and_threshold_refuse_what_they_cannot_use() -> None:
    with pytest.raises(UsageError, match="both sets"):
        auroc([], [1.0])
    with pytest.raises(UsageError, match="finite"):
        auroc([0.0, np.nan], [1.0])
    with pytest.raises(UsageError, match="quantile"):
        anomaly_threshold([0.0, 1.0], 1.0)
    scores = np.arange(1001, dtype=float)
    assert anomaly_threshold(scores, 0.99) == pytest.approx(990.0)


def test_png_bits_grow_with_the_images_complexity() -> None:
    flat = np.zeros((1, 1, 28, 28))
    noise = np.random.default_rng(0).random((1, 1, 28, 28))
    assert png_bits(flat, (1, 28, 28))[0] < png_bits(noise, (1, 28, 28))[0] / 4
    with pytest.raises(UsageError, match="image"):
        png_bits(np.zeros((2, 5)), (5,))


# -- runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    return vaekit.load(train_tiny(tmp_path_factory.mktemp("ood") / "flat"))


@pytest.fixture(scope="module")
def hier_run(tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    out = tmp_path_factory.mktemp("ood") / "hier"
    return vaekit.load(
        train_tiny(out, "model.posterior={name: hierarchical, layers: 3, hidden: 10}")
    )


def _digits(n: int = 20) -> torch.Tensor:
    from vaekit.data import load_dataset

    return load_dataset("digits").test.x[:n]


def test_bound_above_with_no_prior_layers_is_the_importance_weighted_bound(
    hier_run: vaekit.Run,
) -> None:
    x = _digits(6)
    m = hier_run.model
    with torch.inference_mode():
        torch.manual_seed(3)
        ours = bound_above(m, x, None, 0, samples=7)
        torch.manual_seed(3)
        theirs = log_likelihood(m, x, None, 7)
    torch.testing.assert_close(ours, theirs.double(), rtol=0, atol=1e-4)


def test_bound_above_converges_to_log_px(hier_run: vaekit.Run) -> None:
    # L>k is importance sampling with the proposal q(z_>k|x) p(z_<=k|z_>k): with many
    # samples it estimates log p(x) itself (wrong weights would not), and with one sample
    # it is a lower bound, below the many-sample value on average.
    x = _digits(4)
    m = hier_run.model
    with torch.inference_mode():
        torch.manual_seed(0)
        exact = log_likelihood(m, x, None, 4000)
        for k in (1, 2):
            many = bound_above(m, x, None, k, samples=4000)
            torch.testing.assert_close(many, exact.double(), rtol=0, atol=0.15)
            one = torch.stack([bound_above(m, x, None, k, samples=1) for _ in range(200)])
            assert bool((one.mean(0) < many).all())


def test_llr_needs_a_hierarchy_and_a_k_below_its_layers(
    flat_run: vaekit.Run, hier_run: vaekit.Run
) -> None:
    x = _digits(4)
    with pytest.raises(UsageError, match="several stochastic layers"):
        score(flat_run, x, scores=["llr"])
    with pytest.raises(UsageError, match="k from 1 to 2"):
        score(hier_run, x, scores=["llr"], llr_k=[3])
    cols = score(hier_run, x, k=10, llr_k=[1, 2], llr_prior_mean=True)
    assert {"log_px", "elbo", "recon", "kl", "png_bits", "complexity"} <= set(cols)
    for k in (1, 2):
        assert cols[f"llr_gt{k}"].shape == (4,) and np.isfinite(cols[f"llr_gt{k}"]).all()


def test_regret_of_a_hierarchy_leaves_no_gradient_on_the_run(hier_run: vaekit.Run) -> None:
    # The conditional priors the posterior part holds are generative: held fixed, and the
    # run's own parameters get no gradient (the prior used to walk the run's networks).
    with torch.inference_mode():
        x = _digits(2).clone()  # an inference tensor, as a caller under inference_mode has
    cols = score(hier_run, x, scores=["regret"], k=10, regret_steps=3)
    assert np.isfinite(cols["regret"]).all()
    assert all(p.grad is None for p in hier_run.model.parameters())


def test_regret_tunes_a_copy_and_leaves_the_run_alone(flat_run: vaekit.Run) -> None:
    before = {k: v.clone() for k, v in flat_run.model.state_dict().items()}
    cols = score(flat_run, _digits(3), scores=["regret"], k=50, regret_steps=30, regret_lr=1e-2)
    after = flat_run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert cols["regret"].shape == (3,)
    np.testing.assert_allclose(cols["regret"], cols["log_px_tuned"] - cols["log_px"])
    # 30 steps on the example itself fit q to it: the estimate moves (either way: both are
    # noisy k=50 estimates of one log p(x)).
    assert np.abs(cols["regret"]).max() > 0


def test_vectorised_regret_equals_one_example_at_a_time(hier_run: vaekit.Run) -> None:
    # Each example tuned with its own stacked copy of the encoder (torch.func.vmap) gives
    # what tuning copies one after another gives, and an example's regret does not depend
    # on the others scored with it (every example gets the same draws).
    m = hier_run.model
    x = hier_run._x(_digits(4))
    before = log_likelihood(m, x, None, 10)
    runs = []
    for vectorized, rows in ((True, slice(None)), (False, slice(None)), (True, slice(1, 3))):
        torch.manual_seed(0)
        runs.append(
            likelihood_regret(
                m, x[rows], steps=4, lr=1e-2, k=10, before=before[rows], vectorized=vectorized
            )[0].numpy()
        )
    together, each, two = runs
    np.testing.assert_allclose(together, each, rtol=0, atol=1e-4)
    np.testing.assert_allclose(two, together[1:3], rtol=0, atol=1e-4)
    assert np.abs(together).max() > 1e-3  # lr 1e-2 for 4 steps moves the bound


def test_regret_of_a_prior_per_class_scores_against_p_z_given_y(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # With a prior per class, a labelled example's bounds (tuning and log p(x) after it)
    # take p(z|y), from the trained model; before, they took p(z), the mixture of the
    # classes. Tuned with lr 0 (the encoder unchanged), log p(x) after tuning is then
    # exactly the importance-sampled log p(x|y) of the same draws, computed here by hand.
    from vaekit.evaluate import StreamingLogSumExp, log_weights

    out = tmp_path_factory.mktemp("ood") / "cls"
    run = vaekit.load(
        train_tiny(
            out,
            "model.conditional=true",
            "model.prior={name: class-gaussian, spread: 20.0}",
            "train.epochs=1",
        )
    )
    m, ds = run.model, run.dataset()
    x, y, k = ds.test.x[:3], ds.test.y[:3], 50
    torch.manual_seed(0)
    _, after = likelihood_regret(m, x, y, steps=1, lr=0.0, k=k, before=torch.zeros(3))
    torch.manual_seed(0)
    seed = int(torch.randint(2**62, ()))  # the draw likelihood_regret takes first
    want = []
    with torch.inference_mode():
        for i in range(3):
            xi, yi = x[i : i + 1], y[i : i + 1]
            torch.manual_seed(seed + 1)
            q = m.encode(xi, yi)
            acc = StreamingLogSumExp()
            acc.update(log_weights(m, q, xi, yi, k, m.prior_given(yi)))
            want.append(float((acc.result() - math.log(k))[0]))
    np.testing.assert_allclose(after.numpy(), want, rtol=0, atol=1e-4)
    assert all(p.grad is None for p in m.parameters())  # the run's own model untouched


def test_run_score_refuses_bad_settings_and_data(flat_run: vaekit.Run) -> None:
    with pytest.raises(UsageError, match="ScoreSettings"):
        score(flat_run, _digits(2), nonsense=1)
    with pytest.raises(UsageError, match="background"):
        score(flat_run, _digits(2), scores=["ratio"])
    with pytest.raises(UsageError, match="unknown score"):
        score(flat_run, _digits(2), scores=["auroc"])
    with pytest.raises(DataError, match="examples of shape"):
        score_split(flat_run, Split(torch.rand(3, 1, 28, 28)), ScoreSettings())


def test_ratio_against_a_background_run(flat_run: vaekit.Run, tmp_path: Path) -> None:
    background = vaekit.load(train_tiny(tmp_path / "bg", "train.seed=7"))
    cols = score(flat_run, _digits(5), scores=["ratio"], background=background, k=10)
    np.testing.assert_allclose(cols["ratio"], cols["log_px"] - cols["bg_log_px"])


# -- the command line ------------------------------------------------------------------------


def _planted_csv(path: Path, n: int, planted: list[int], seed: int) -> None:
    """Rows near a 1-D curve in 4-D, with rows ``planted`` moved far off it."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1, 1, n)
    x = np.c_[t, t**2, np.sin(2 * t), -t] + 0.05 * rng.normal(size=(n, 4))
    for i in planted:
        x[i] = rng.choice([-1, 1], 4) * rng.uniform(3, 4, 4)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "d"])
        w.writerows(x.round(5).tolist())


def test_score_flags_planted_outliers_of_a_csv_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_csv, test_csv = tmp_path / "clean.csv", tmp_path / "incoming.csv"
    _planted_csv(train_csv, 400, [], seed=0)
    planted = [3, 50, 97, 140, 188]
    _planted_csv(test_csv, 200, planted, seed=1)
    run = tmp_path / "run"
    args = ["train", "-c", "tabular_student_t", "--dataset", str(train_csv)]
    sets = ["train.epochs=30", "data.valid_fraction=0.2", "train.batch_size=64"]
    assert main([*args, "--out", str(run), *sum((["--set", s] for s in sets), [])]) == 0
    capsys.readouterr()
    code = main(
        [
            "score",
            str(run),
            str(test_csv),
            "--k",
            "20",
            "--threshold",
            "log_px",
            "--quantile",
            "0.95",
        ]
    )
    assert code == 0
    out = capsys.readouterr()
    assert "flagged" in out.err
    with (run / "scores_incoming.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200  # every row, in the file's order
    log_px = np.array([float(r["log_px"]) for r in rows])
    flags = np.array([float(r["flag_log_px"]) for r in rows])
    rest = np.setdiff1d(np.arange(200), planted)
    assert set(np.argsort(log_px)[:5]) == set(planted)  # the five least likely rows
    assert flags[planted].all() and flags[rest].mean() < 0.15


def test_score_in_against_out_writes_metrics_figure_and_npy(
    flat_run: vaekit.Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "noise.npy", np.random.default_rng(0).random((30, 8, 8), dtype=np.float32))
    prefix = tmp_path / "out" / "s"
    (tmp_path / "out").mkdir()
    args = ["score", str(flat_run.dir), "digits", str(tmp_path / "noise.npy"), "--k", "10"]
    assert main([*args, "--limit", "30", "--format", "npy", "--out", str(prefix)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["metrics"]) == {"log_px", "elbo", "recon", "kl", "complexity"}
    assert 0 <= result["metrics"]["log_px"]["auroc"] <= 1
    table = np.load(tmp_path / "out" / "s_digits.npy")
    assert table.dtype.names is not None and "log_px" in table.dtype.names and len(table) == 30
    assert len(np.load(tmp_path / "out" / "s_noise.npy")) == 30
    assert (tmp_path / "out" / "s_digits_vs_noise.png").stat().st_size > 0


def test_score_errors_are_clear(
    flat_run: vaekit.Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "big.npy", np.zeros((4, 28, 28), dtype=np.float32))
    assert main(["score", str(flat_run.dir), "digits", str(tmp_path / "big.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "shape (28, 28)" in err and "(1, 8, 8)" in err
    bad_out = str(flat_run.dir / "checkpoints" / "x")
    assert main(["score", str(flat_run.dir), "digits", "--out", bad_out]) == 2
    assert "never writes over a run's own files" in capsys.readouterr().err
    assert main(["score", str(flat_run.dir), "digits", "--scores", "llr"]) == 2
    assert "several stochastic layers" in capsys.readouterr().err
    assert main(["score", str(flat_run.dir), "digits", "--threshold", "png_bits"]) == 2
    assert "choose one of log_px, elbo, recon, kl, complexity" in capsys.readouterr().err


def test_vaekit_plot_draws_the_saved_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train_tiny(tmp_path / "run")
    assert main(["plot", str(run), "--which", "ood_scores"]) == 2
    assert "vaekit score RUN IN OUT" in capsys.readouterr().err
    np.save(tmp_path / "noise.npy", np.random.default_rng(1).random((20, 64), dtype=np.float32))
    assert main(["score", str(run), "digits", str(tmp_path / "noise.npy"), "--k", "5"]) == 0
    assert (run / "scores_digits_vs_noise.json").is_file()
    assert main(["plot", str(run), "--which", "ood_scores", "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "ood_scores.png").read_bytes()[:4] == b"\x89PNG"


def test_score_columns_are_those_score_split_gives(hier_run: vaekit.Run) -> None:
    from vaekit.ood import score_columns

    settings = ScoreSettings(scores=("complexity", "recon", "llr"), k=5, llr_k=(1, 2))
    cols, _ = score_split(hier_run, Split(_digits(3)), settings)
    made = [c for c in cols if c != "png_bits"]
    assert score_columns(settings) == made

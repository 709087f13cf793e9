"""Each metric on encoders whose answer is known: the true factors, rotations of them, a constant."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from vaekit.disentangle.metrics import FactorPool, Protocol, disentanglement_metrics

# Small counts and few boosting stages: the same code paths as the full protocol, in seconds.
SMALL = Protocol(
    beta_vae_train=400,
    beta_vae_eval=300,
    factor_vae_train=400,
    factor_vae_eval=300,
    factor_vae_variance=800,
    mig_train=1500,
    sap_train=400,
    sap_test=300,
    dci_train=400,
    dci_test=300,
    dci_trees=10,
)
SIZES = [3, 4, 5, 6]
FACTORS = np.stack(np.meshgrid(*[np.arange(k) for k in SIZES], indexing="ij"), -1).reshape(-1, 4)
STANDARD = (FACTORS - FACTORS.mean(0)) / FACTORS.std(0)
# Every code dimension an equal mix of all four factors.
HADAMARD = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2


def scores(codes: np.ndarray) -> dict[str, float]:
    out = disentanglement_metrics(codes, FACTORS, protocol=SMALL, seed=0)
    return {k: v["score"] for k, v in out.items() if k != "seconds"}


@pytest.fixture(scope="module")
def known() -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    return {
        "true": scores(FACTORS.astype(float)),
        # The true factors permuted, rescaled and beside two dimensions of noise.
        "true+noise": scores(
            np.concatenate([-3 * STANDARD[:, ::-1], rng.normal(size=(len(FACTORS), 2))], 1)
        ),
        "random rotation": scores(STANDARD @ rotation),
        "equal mix": scores(STANDARD @ HADAMARD),
        "constant": scores(np.ones((len(FACTORS), 4))),
    }


def test_the_true_factors_score_near_one(known: dict[str, dict[str, float]]) -> None:
    for case in ("true", "true+noise"):
        s = known[case]
        assert s["beta_vae"] == 1.0 and s["factor_vae"] == 1.0, case
        assert s["mig"] > 0.9 and s["dci"] > 0.9, case
        # disentanglement_lib's SAP treats factors as classes: one dimension's linear SVM
        # cannot name 5 or 6 classes, so its ceiling is well below 1 (0.41 on this grid).
        assert s["sap"] > 0.3, case


def test_rotations_score_lower(known: dict[str, dict[str, float]]) -> None:
    true, rotated, mixed = known["true"], known["random rotation"], known["equal mix"]
    for metric in ("mig", "sap", "dci"):
        assert rotated[metric] < true[metric] - 0.2, metric
    # An equal mix leaves nothing to tell the factors apart by: every metric near its floor
    # (the BetaVAE and FactorVAE scores' floor is chance, 1/4; the others' 0).
    assert mixed["beta_vae"] < 0.45 and mixed["factor_vae"] < 0.4
    assert mixed["mig"] < 0.05 and mixed["sap"] < 0.05 and mixed["dci"] < 0.05


def test_a_constant_scores_zero(known: dict[str, dict[str, float]]) -> None:
    s = known["constant"]
    assert s["factor_vae"] == s["mig"] == s["sap"] == s["dci"] == 0.0
    assert s["beta_vae"] < 0.4  # chance: a classifier of constant features guesses


def test_scores_do_not_depend_on_which_metrics_ran() -> None:
    codes = STANDARD @ np.random.default_rng(1).normal(size=(4, 4))
    alone = disentanglement_metrics(codes, FACTORS, protocol=SMALL, seed=3, metrics=["mig"])
    both = disentanglement_metrics(codes, FACTORS, protocol=SMALL, seed=3, metrics=["sap", "mig"])
    assert alone["mig"] == both["mig"]


def test_pool_draws_share_the_fixed_factor() -> None:
    pool = FactorPool(FACTORS.astype(float), FACTORS)
    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, 1000)
    rows = pool.sample_with(2, values, rng)
    assert np.array_equal(FACTORS[rows, 2], values)
    # The other factors stay uniform on a complete grid.
    counts = np.bincount(FACTORS[rows, 3], minlength=6)
    assert counts.min() > 120
    with pytest.raises(ValueError, match="same N"):
        FactorPool(np.zeros((3, 2)), np.zeros((4, 1), int))
    with pytest.raises(ValueError, match="nothing to score"):
        disentanglement_metrics(np.zeros((5, 2)), np.zeros((5, 2), int), protocol=SMALL)


def chance(factors: np.ndarray) -> float:
    """The majority class's share, averaged over factors: what a predictor that learned
    nothing scores on held-out rows."""
    return float(np.mean([np.bincount(f).max() / len(f) for f in factors.T]))


def test_held_out_scores_of_noise_are_chance() -> None:
    # 300 training and 300 test rows asked of a 600-row pool: drawn with replacement from
    # one pool, 39% of the test rows would be training rows, which 30 stages of boosted
    # trees have learned by heart, and noise would score far above chance.
    rng = np.random.default_rng(0)
    factors = rng.integers(0, [3, 6, 10], size=(600, 3))
    protocol = dataclasses.replace(SMALL, dci_train=300, dci_test=300, dci_trees=30)
    noise = disentanglement_metrics(rng.normal(size=(600, 4)), factors, protocol=protocol)
    # Standard error of one factor's accuracy at p ~ 0.2 on 300 rows: 0.023; of the mean of three: 0.013.
    assert abs(noise["dci"]["informativeness_test"] - chance(factors)) < 0.05
    assert noise["dci"]["informativeness_train"] > chance(factors) + 0.2  # it did memorise
    assert noise["sap"]["score"] < 0.05
    # The BetaVAE and FactorVAE scores train on fresh batches, not on rows: chance (1/3)
    # although their 300 x 64 batches reuse every row many times.
    assert noise["beta_vae"]["score"] < 1 / 3 + 0.08 and noise["factor_vae"]["score"] < 1 / 3 + 0.08
    truth = disentanglement_metrics(
        factors + 0.1 * rng.normal(size=factors.shape), factors, protocol=protocol, metrics=["dci"]
    )
    assert truth["dci"]["informativeness_test"] > 0.97


def test_a_pool_smaller_than_the_counts_uses_each_row_once() -> None:
    # SMALL asks for 400 + 300 rows; the grid has 360: 206 train and 154 test, disjoint.
    out = disentanglement_metrics(FACTORS.astype(float), FACTORS, protocol=SMALL)
    for name in ("sap", "dci"):
        assert (out[name]["train_rows"], out[name]["test_rows"]) == (206, 154), name
    pool = FactorPool(FACTORS.astype(float), FACTORS)
    train, test = pool.split(400, 300, np.random.default_rng(0))
    assert not set(train) & set(test) and len(set(train) | set(test)) == len(FACTORS)
    # A pool with room for both keeps the protocol's counts.
    train, test = pool.split(200, 100, np.random.default_rng(0))
    assert (len(train), len(test), len(set(train) & set(test))) == (200, 100, 0)
    with pytest.raises(ValueError, match="disjoint"):
        FactorPool(np.zeros((1, 1)), np.zeros((1, 1), int)).split(10, 5, np.random.default_rng(0))


def test_the_guides_figure_of_sap_on_the_true_factors_is_the_metric_s() -> None:
    # The disentangling guide quotes SAP of dsprites-synthetic's true factors (its whole 46,080-example
    # grid, the default pool; full protocol, seed 0): the figure is the metric's output,
    # not typed by hand (it once read 0.41, a figure of this file's small grid).
    guide = Path(__file__).resolve().parents[1] / "docs" / "guides" / "disentangling.md"
    quoted = re.search(
        r"true factors of `dsprites-synthetic` score SAP (\d\.\d+)", guide.read_text()
    )
    assert quoted, "the guide no longer quotes SAP of dsprites-synthetic's true factors"
    grid = np.stack(
        np.meshgrid(*[np.arange(k) for k in (3, 6, 10, 16, 16)], indexing="ij"), -1
    ).reshape(-1, 5)
    # The pool's rows in its order (training split, then test split) without drawing the
    # images: dsprites_synthetic's seeded 20% test split of the grid.
    perm = np.random.default_rng(0).permutation(len(grid))
    pool = grid[np.concatenate([np.sort(perm[9216:]), np.sort(perm[:9216])])]
    sap = disentanglement_metrics(pool.astype(float), pool, seed=0, metrics=["sap"])["sap"]
    assert f"{sap['score']:.3f}" == quoted.group(1)

"""Disentanglement metrics with disentanglement_lib's protocol (Locatello et al. 2019).

A representation r(x) (here the posterior mean E_q[z|x], disentanglement_lib's "mean"
representation) is scored against the ground-truth factors of the data that made x:

- :func:`beta_vae_score` (Higgins et al. 2017): pairs of batches that share one factor;
  a logistic regression predicts which factor from the mean absolute difference of
  their codes. Accuracy on held-out points (chance is 1 / number of factors).
- :func:`factor_vae_score` (Kim & Mnih 2018): a batch sharing one factor; the code
  dimension of least variance (normalised by its variance over the data) votes for the
  factor; a majority-vote classifier's held-out accuracy. Dimensions whose standard
  deviation over the data is below ``prune_threshold`` never vote.
- :func:`mig` (Chen et al. 2018): for each factor, the gap between the two largest
  mutual informations with a code dimension (codes discretised into ``bins`` equal-width
  bins), over the factor's entropy; the mean over factors.
- :func:`sap` (Kumar et al. 2018): for each code dimension and factor, the test accuracy
  of a linear SVM (C = 0.01, balanced classes) predicting the factor from that dimension
  alone; the mean over factors of the gap between the two best dimensions.
- :func:`dci` (Eastwood & Williams 2018): gradient boosted trees predict each factor from
  the whole code; their feature importances R (dimensions x factors) give
  disentanglement (1 - entropy of each row, weighted by the row's share) and
  completeness (1 - entropy of each column); informativeness is their accuracy.

The protocol (:class:`Protocol`) has disentanglement_lib's sample counts: 10,000 points
to train and 5,000 to evaluate each, batches of 64 for the BetaVAE and FactorVAE
scores, 10,000 points for the variances, 20 bins for MIG. Ground-truth batches are drawn
from a pool of examples with their factors (:class:`FactorPool`), a split of a data set
generated from its factors: drawing "a batch whose factor k is v" picks, uniformly, pool
examples whose factor k is v, which on a complete factor grid (dSprites) is exactly
disentanglement_lib's sampling, and on a uniform subset of it (a test split) the same
in expectation. Each pool example is encoded once, so the metrics cost no more encoder
passes than the pool has examples.

Example:
    >>> rng = np.random.default_rng(0)
    >>> factors = rng.integers(0, 8, size=(4000, 3))
    >>> codes = factors + rng.normal(0, 0.1, size=factors.shape)   # one dimension per factor
    >>> scores = disentanglement_metrics(codes, factors, metrics=["mig", "factor_vae"])
    >>> round(scores["mig"]["score"], 2), scores["factor_vae"]["score"]
    (0.99, 1.0)
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from vaekit.data import Dataset, Split, limit_split
from vaekit.evaluate import elbo_terms, latent_means, num_threads
from vaekit.rundir import Run, result_file_name, result_header

__all__ = [
    "Protocol",
    "FactorPool",
    "beta_vae_score",
    "factor_vae_score",
    "mig",
    "sap",
    "dci",
    "METRICS",
    "SUMMARY",
    "disentanglement_metrics",
    "evaluate_disentanglement",
    "disentanglement_file_name",
    "scored_pool",
    "POOLS",
]


@dataclass(frozen=True)
class Protocol:
    """Sample counts and settings of each metric; the defaults are disentanglement_lib's
    (``unsupervised_study_v1/metric_configs``)."""

    beta_vae_batch: int = 64
    beta_vae_train: int = 10_000
    beta_vae_eval: int = 5_000
    factor_vae_batch: int = 64
    factor_vae_train: int = 10_000
    factor_vae_eval: int = 5_000
    factor_vae_variance: int = 10_000
    # Code dimensions whose standard deviation over the data is below this never vote.
    prune_threshold: float = 0.05
    mig_train: int = 10_000
    # Equal-width bins per code dimension (histogram discretiser).
    bins: int = 20
    sap_train: int = 10_000
    sap_test: int = 5_000
    dci_train: int = 10_000
    dci_test: int = 5_000
    # Boosting stages of DCI's gradient boosted trees (scikit-learn's default, 100).
    dci_trees: int = 100

    @classmethod
    def quick(cls, fraction: float = 0.1) -> Protocol:
        """Every sample count times ``fraction`` (at least 100): a quick look, not a score to report."""
        counts = {
            f.name: max(100, int(getattr(cls(), f.name) * fraction))
            for f in dataclasses.fields(cls)
            if f.name.endswith(("_train", "_eval", "_test", "_variance"))
        }
        return cls(**counts)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FactorPool:
    """Examples' codes ``(N, D)`` with their factors ``(N, K)``: the ground truth to draw from.

    ``sample(n)`` draws pool rows uniformly; ``sample_with(k, values)`` draws, for each
    value, a row whose factor k has that value.
    """

    def __init__(self, codes: np.ndarray, factors: np.ndarray) -> None:
        codes = np.asarray(codes, dtype=np.float64)
        factors = np.asarray(factors)
        if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or not len(codes):
            raise ValueError(
                f"codes (N, D) and factors (N, K) must have the same N > 0, got {codes.shape} "
                f"and {factors.shape}"
            )
        if not np.issubdtype(factors.dtype, np.integer):
            raise ValueError(f"factors must be integer indices, got {factors.dtype}")
        if not np.isfinite(codes).all():
            raise ValueError("the codes hold NaN or infinite values")
        self.codes = codes
        self.factors = factors.astype(np.int64)
        self.num_factors = factors.shape[1]
        # For each factor, the rows sorted by its value and where each value's run starts.
        self._order: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        for k in range(self.num_factors):
            order = np.argsort(self.factors[:, k], kind="stable")
            values, starts = np.unique(self.factors[order, k], return_index=True)
            self._order.append(order)
            self._values.append(values)
            self._starts.append(np.append(starts, len(order)))

    def __len__(self) -> int:
        return len(self.codes)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` row indices drawn uniformly (with replacement)."""
        return rng.integers(0, len(self), n)

    def split(
        self, n_train: int, n_test: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Disjoint training and test rows for a predictor scored on examples it did not see.

        ``n_train`` and ``n_test`` distinct rows (a random permutation's first rows) when
        the pool holds that many; a smaller pool gives every row once, shared between the
        two in the ratio ``n_train : n_test``, and the caller reports the counts it got.
        (Drawing both with replacement from one pool, as disentanglement_lib does from
        737,280 images, puts two thirds of the test rows of a 9,216-row pool among the
        training rows: the "held-out" accuracy is then a training accuracy.)

        Example:
            >>> pool = FactorPool(np.zeros((10, 1)), np.zeros((10, 1), int))
            >>> train, test = pool.split(40, 20, np.random.default_rng(0))
            >>> len(train), len(test), len(set(train) & set(test))
            (7, 3, 0)
        """
        n = len(self)
        if n < 2:
            raise ValueError(f"a pool of {n} example cannot give disjoint training and test rows")
        if n_train + n_test > n:
            n_train = min(n - 1, max(1, round(n * n_train / (n_train + n_test))))
            n_test = n - n_train
        order = rng.permutation(n)
        return order[:n_train], order[n_train : n_train + n_test]

    def sample_with(self, k: int, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each of ``values``, a row whose factor ``k`` has that value (uniformly among them)."""
        slot = np.searchsorted(self._values[k], values)
        lo, hi = self._starts[k][slot], self._starts[k][slot + 1]
        pick = lo + (rng.random(len(values)) * (hi - lo)).astype(np.int64)
        return self._order[k][pick]

    def varying(self) -> list[int]:
        """The factors that take more than one value in the pool."""
        return [k for k in range(self.num_factors) if len(self._values[k]) > 1]


@contextmanager
def _quiet() -> Iterator[None]:
    # scikit-learn's convergence warnings say the solver stopped at its iteration limit,
    # which is part of the protocol (its defaults), not something a user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def beta_vae_score(
    pool: FactorPool, protocol: Protocol, rng: np.random.Generator
) -> dict[str, float]:
    """Higgins et al. (2017): accuracy of a logistic regression that names the shared factor."""
    factors = pool.varying()

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        b = protocol.beta_vae_batch
        labels = rng.choice(factors, n)
        first = pool.sample(n * b, rng)
        ks = np.repeat(labels, b)
        second = np.empty_like(first)
        for k in factors:
            rows = ks == k
            second[rows] = pool.sample_with(k, pool.factors[first[rows], k], rng)
        diff = np.abs(pool.codes[first] - pool.codes[second]).reshape(n, b, -1)
        return diff.mean(1), labels

    x_train, y_train = points(protocol.beta_vae_train)
    x_eval, y_eval = points(protocol.beta_vae_eval)
    if len(np.unique(y_train)) < 2:
        return {"train_accuracy": 1.0, "eval_accuracy": 1.0, "score": 1.0}
    model = LogisticRegression(random_state=int(rng.integers(2**31)))
    with _quiet():
        model.fit(x_train, y_train)
    train = float(model.score(x_train, y_train))
    test = float(model.score(x_eval, y_eval))
    return {"train_accuracy": train, "eval_accuracy": test, "score": test}


def factor_vae_score(
    pool: FactorPool, protocol: Protocol, rng: np.random.Generator
) -> dict[str, float]:
    """Kim & Mnih (2018): held-out accuracy of the majority vote of least-variance dimensions."""
    variances = pool.codes[pool.sample(protocol.factor_vae_variance, rng)].var(0, ddof=1)
    active = np.sqrt(variances) >= protocol.prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0, "score": 0.0}
    factors = pool.varying()
    d = pool.codes.shape[1]
    dims = np.flatnonzero(active)

    def votes(n: int) -> np.ndarray:
        out = np.zeros((pool.num_factors, d), dtype=np.int64)
        b = protocol.factor_vae_batch
        labels = rng.choice(factors, n)
        values = pool.factors[pool.sample(n, rng), labels]
        for k in factors:
            mine = labels == k
            m = int(mine.sum())
            if not m:
                continue
            rows = pool.sample_with(k, np.repeat(values[mine], b), rng).reshape(m, b)
            local = pool.codes[rows][:, :, dims].var(1, ddof=1)
            best = dims[np.argmin(local / variances[dims], axis=1)]
            np.add.at(out, (k, best), 1)
        return out

    train, test = votes(protocol.factor_vae_train), votes(protocol.factor_vae_eval)
    classifier = train.argmax(0)  # each dimension's factor
    cols = np.arange(d)
    return {
        "train_accuracy": float(train[classifier, cols].sum() / train.sum()),
        "eval_accuracy": float(test[classifier, cols].sum() / test.sum()),
        "num_active_dims": int(active.sum()),
        "score": float(test[classifier, cols].sum() / test.sum()),
    }


def _discretise(codes: np.ndarray, bins: int) -> np.ndarray:
    """Each column into ``bins`` equal-width bins over its range (disentanglement_lib's
    histogram discretiser)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def _mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    return np.array(
        [
            [mutual_info_score(factors[:, k], codes[:, j]) for k in range(factors.shape[1])]
            for j in range(codes.shape[1])
        ]
    )


def _top_two_gap(matrix: np.ndarray) -> np.ndarray:
    """Per column, the largest entry minus the second largest (the largest with one row)."""
    ordered = np.sort(matrix, axis=0)[::-1]
    second = ordered[1] if len(ordered) > 1 else np.zeros(matrix.shape[1])
    return np.asarray(ordered[0] - second)


def mig(pool: FactorPool, protocol: Protocol, rng: np.random.Generator) -> dict[str, Any]:
    """Chen et al. (2018)'s mutual information gap, with disentanglement_lib's discretisation."""
    rows = pool.sample(protocol.mig_train, rng)
    factors = pool.factors[rows][:, pool.varying()]
    m = _mutual_info(_discretise(pool.codes[rows], protocol.bins), factors)
    entropy = np.array([mutual_info_score(f, f) for f in factors.T])
    gaps = _top_two_gap(m) / np.maximum(entropy, 1e-12)
    return {"score": float(gaps.mean()), "per_factor": [float(g) for g in gaps]}


def sap(pool: FactorPool, protocol: Protocol, rng: np.random.Generator) -> dict[str, Any]:
    """Kumar et al. (2018)'s separated attribute predictability, factors as classes."""
    train, test = pool.split(protocol.sap_train, protocol.sap_test, rng)
    ks = pool.varying()
    d = pool.codes.shape[1]
    score = np.zeros((d, len(ks)))
    for i in range(d):
        for c, k in enumerate(ks):
            model = LinearSVC(C=0.01, class_weight="balanced")
            with _quiet():
                model.fit(pool.codes[train, i : i + 1], pool.factors[train, k])
            pred = model.predict(pool.codes[test, i : i + 1])
            score[i, c] = np.mean(pred == pool.factors[test, k])
    gaps = _top_two_gap(score)
    return {
        "score": float(gaps.mean()),
        "per_factor": [float(g) for g in gaps],
        "train_rows": len(train),
        "test_rows": len(test),
    }


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy of each row of non-negative weights (normalised per row), in log ``base``."""
    p = p + 1e-11
    p = p / p.sum(1, keepdims=True)
    return np.asarray(-(p * np.log(p)).sum(1) / np.log(base))


def dci(pool: FactorPool, protocol: Protocol, rng: np.random.Generator) -> dict[str, Any]:
    """Eastwood & Williams (2018) with gradient boosted trees (scikit-learn's defaults)."""
    train, test = pool.split(protocol.dci_train, protocol.dci_test, rng)
    ks = pool.varying()
    d = pool.codes.shape[1]
    importance = np.zeros((d, len(ks)))
    acc_train, acc_test = [], []
    for c, k in enumerate(ks):
        model = GradientBoostingClassifier(
            n_estimators=protocol.dci_trees, random_state=int(rng.integers(2**31))
        )
        model.fit(pool.codes[train], pool.factors[train, k])
        importance[:, c] = np.abs(model.feature_importances_)
        acc_train.append(float(np.mean(model.predict(pool.codes[train]) == pool.factors[train, k])))
        acc_test.append(float(np.mean(model.predict(pool.codes[test]) == pool.factors[test, k])))
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    # Disentanglement: each dimension's importance spread over factors (rows), weighted by
    # its share; completeness: each factor's spread over dimensions (columns).
    per_code = 1.0 - _entropy_rows(importance, len(ks)) if len(ks) > 1 else np.ones(d)
    per_factor = 1.0 - _entropy_rows(importance.T, d) if d > 1 else np.ones(len(ks))
    # Clipped at 0: 1 - entropy of a uniform row is -1e-16 in floating point.
    disentanglement = max(0.0, float((per_code * weights.sum(1) / weights.sum()).sum()))
    completeness = max(0.0, float((per_factor * weights.sum(0) / weights.sum()).sum()))
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness_train": float(np.mean(acc_train)),
        "informativeness_test": float(np.mean(acc_test)),
        "train_rows": len(train),
        "test_rows": len(test),
        "score": disentanglement,
    }


# Name -> metric, in the order they are computed and reported.
METRICS: dict[str, Callable[[FactorPool, Protocol, np.random.Generator], dict[str, Any]]] = {
    "beta_vae": beta_vae_score,
    "factor_vae": factor_vae_score,
    "mig": mig,
    "sap": sap,
    "dci": dci,
}
# Their names in tables and figures.
SUMMARY = {
    "beta_vae": "BetaVAE score",
    "factor_vae": "FactorVAE score",
    "mig": "MIG",
    "sap": "SAP",
    "dci": "DCI disentanglement",
}


def disentanglement_metrics(
    codes: np.ndarray,
    factors: np.ndarray,
    *,
    protocol: Protocol | None = None,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every metric of codes ``(N, D)`` against their examples' factors ``(N, K)``.

    Each metric draws from its own random stream (seeded by ``seed`` and its name), so a
    score does not depend on which others were computed. Returns ``{metric: {...,
    "score": s}}`` plus ``seconds`` per metric.
    """
    protocol = protocol or Protocol()
    pool = FactorPool(codes, factors)
    names = list(metrics) if metrics is not None else list(METRICS)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    if not pool.varying():
        raise ValueError("no factor takes more than one value in these examples: nothing to score")
    out: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in names:
        rng = np.random.default_rng([seed, list(METRICS).index(name)])
        start = time.perf_counter()
        out[name] = METRICS[name](pool, protocol, rng)
        seconds[name] = round(time.perf_counter() - start, 3)
    out["seconds"] = seconds
    return out


# The pool of the published protocol: every split of the data, training examples included
# (the metrics score the encoder, not how the model generalises).
POOLS = ("all", "train", "valid", "test")


def disentanglement_file_name(
    run: Run, split: str = "all", quick: bool = False, limit: int = 0
) -> str:
    """``disentanglement.json`` for the default pool (every split), ``-SPLIT`` for one
    split's examples, ``-best`` for the best weights, ``-nN`` for N examples, ``-quick``
    for :meth:`Protocol.quick`.

    Example:
        >>> class R:
        ...     weights = "best"
        >>> disentanglement_file_name(R()), disentanglement_file_name(R(), "test")
        ('disentanglement-best.json', 'disentanglement-best-test.json')
    """
    # result_file_name leaves the test split unnamed (the NLL's default); here "all" is.
    settings = ([] if split == "all" else [split]) + (["quick"] if quick else [])
    return result_file_name("disentanglement", run, "test", limit, *settings)


def scored_pool(ds: Dataset, split: str = "all") -> tuple[Split, dict[str, int]]:
    """The examples to score: one split, or every split of ``ds`` pooled (``"all"``), with
    the number of examples each split gave."""
    if split not in POOLS:
        raise ValueError(f"the pool must be one of {', '.join(POOLS)}, got {split!r}")
    names = [k for k in ("train", "valid", "test") if getattr(ds, k) is not None]
    parts = {k: ds.split(k) for k in (names if split == "all" else [split])}
    sizes = {k: len(p) for k, p in parts.items()}
    if len(parts) == 1:
        return next(iter(parts.values())), sizes
    values = list(parts.values())
    factors = [p.factors for p in values if p.factors is not None]
    labels = [p.y for p in values if p.y is not None]
    return Split(
        torch.cat([p.x for p in values]),
        torch.cat(labels) if len(labels) == len(values) else None,
        torch.cat(factors) if len(factors) == len(values) else None,
    ), sizes


def evaluate_disentanglement(
    run: Run,
    *,
    split: str = "all",
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    protocol: Protocol | None = None,
    seed: int = 0,
    threads: int | None = None,
    metrics: Sequence[str] | None = None,
    limit: int = 0,
) -> dict[str, Any]:
    """Score a run's representation (posterior means) on its data's factors.

    The pool the protocol draws from is every split of the run's data by default (``split
    = "all"``, disentanglement_lib's protocol, which samples the whole dataset), or one
    split (``"test"``: examples training never saw); a seeded random ``limit`` of it, if
    set. Each example is encoded once. The result holds the pool (``pool``: its splits and
    size), the test split's ELBO (the pool's, when it is one split), the data's factor
    names and sizes, and the protocol, so the JSON says how its numbers were made.
    """
    ds = dataset if dataset is not None else run.dataset(data_dir)
    part, sizes = scored_pool(ds, split)
    if limit < 0:
        raise ValueError(f"limit must be >= 0 (0 = every example), got {limit}")
    if limit:
        # A seeded random subset: a factor dataset stored in grid order would give its
        # first rows one shape only.
        part = limit_split(part, limit, seed)
    if part.factors is None or ds.factor_names is None:
        raise ValueError(
            f"dataset {ds.name} has no ground-truth factors: the disentanglement metrics need data "
            "generated from known factors (dsprites, dsprites-synthetic, or a Dataset made with "
            "vaekit.data.core.attach_factors)"
        )
    protocol = protocol or Protocol()
    elbo_split = "test" if split == "all" else split
    with num_threads(threads) as used:
        start = time.perf_counter()
        labels = part.y if run.model.conditional else None
        codes = latent_means(run.model, part.x, labels).numpy()
        encode_seconds = time.perf_counter() - start
        held_out = part if split != "all" else ds.test
        terms = elbo_terms(run, held_out, samples=1, batch_size=1000, seed=seed)
        scores = disentanglement_metrics(
            codes, part.factors.cpu().numpy(), protocol=protocol, seed=seed, metrics=metrics
        )
    scores["seconds"]["encode"] = round(encode_seconds, 3)
    return result_header(run, ds.name, split, len(part)) | {
        "representation": "mean",
        "pool": {"splits": sizes, "size": len(part), "limit": limit},
        "factors": {"names": ds.factor_names, "sizes": ds.factor_sizes},
        "elbo": terms.get("elbo"),
        "elbo_se": terms.get("elbo_se"),
        "elbo_split": elbo_split,
        "threads": used,
        "protocol": protocol.as_dict(),
        "seed": seed,
        **scores,
    }

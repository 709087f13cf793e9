"""Sample quality: FID and precision / recall between a model's samples and the test split.

- FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to the
  features of real and generated examples, ``|mu_r - mu_g|^2 + tr(S_r + S_g -
  2 (S_r S_g)^(1/2))``; lower is better.
- Precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
  balls around its points reaching their k-th nearest neighbour (k = 3); precision is
  the share of generated examples inside the real manifold (are samples realistic?),
  recall the share of real examples inside the generated one (is the data covered?).

Both depend on the feature network, and scores from different networks are not
comparable, so every result names its network:

- ``domain``: a small classifier that vaekit trains once per dataset on its training
  split and caches (``VAEKIT_CACHE_DIR``/features); its penultimate layer (128 features)
  is the feature space. Works offline, for small grey-level datasets and any labelled data.
- ``inception``: the standard Inception-v3 pool3 features (:mod:`vaekit.inception`),
  when its weights file is there or can be downloaded; the numbers comparable with
  papers' FIDs (on the same data and sample count).

A ``data`` row scores training examples against the test split the same way: what a
model that generates the data distribution itself would get with this many examples.

Example:
    >>> import vaekit
    >>> run = vaekit.load("runs/ae")                                 # doctest: +SKIP
    >>> result = sample_quality(run, ["prior", "gmm"])               # doctest: +SKIP
    >>> result["scores"]["gmm"]["fid"]                               # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from vaekit.data import Dataset, cache_dir, model_view
from vaekit.errors import VaekitError
from vaekit.inception import InceptionFeatures
from vaekit.optim import EagerAdam
from vaekit.rundir import Run, run_data
from vaekit.samplers import load_sampler, sampler_names
from vaekit.storage import save_weights, write_json

__all__ = [
    "FEATURES",
    "QualityError",
    "FeatureNetwork",
    "frechet_distance",
    "gaussian_stats",
    "feature_rank",
    "fid",
    "precision_recall",
    "DomainNet",
    "DomainFeatures",
    "domain_features",
    "reference_data",
    "feature_network",
    "sample_quality",
    "quality_file_name",
    "saved_quality",
    "saved_scores",
    "quality_html",
]

FEATURES = ("domain", "inception")
# The domain network: its version is part of its cache key (a change retrains it).
# v2: a leaky ReLU on the feature layer (v1's ReLU left about half the 128 features 0 on
# every image).
DOMAIN_VERSION = 2
# Training length: at least DOMAIN_STEPS steps of 128 examples (small datasets get more
# epochs), and at least DOMAIN_EPOCHS epochs.
DOMAIN_EPOCHS = 4
DOMAIN_STEPS = 2000
DOMAIN_FEATURES = 128
# Negative slope of the feature layer's activation: a unit whose input is negative on
# every image still varies with it, and still learns.
DOMAIN_SLOPE = 0.2
PR_NEIGHBOURS = 3


class QualityError(VaekitError, ValueError):
    """Sample quality that cannot be computed as asked; the message says why."""


class FeatureNetwork(Protocol):
    """What FID needs of a network: ``features(x) -> (N, F)`` and a ``description``."""

    name: str
    description: dict[str, Any]

    def features(self, x: Tensor) -> Tensor: ...


# -- the statistics -------------------------------------------------------------------------


def gaussian_stats(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features ``(N, F)`` in float64."""
    a = np.asarray(
        features.detach().cpu() if isinstance(features, Tensor) else features, np.float64
    )
    if a.ndim != 2 or len(a) < 2:
        raise QualityError(f"need features of shape (N >= 2, F), got {a.shape}")
    return a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1])


def _nonzero(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a positive semi-definite matrix with its round-off zeroed: those
    below ``len(w) * eps * max|w|`` (LAPACK's own rank tolerance), negatives included."""
    tol = len(w) * np.finfo(w.dtype).eps * float(np.abs(w).max(initial=0.0))
    return np.where(w > tol, w, 0.0)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``tr((S1 S2)^(1/2))`` is computed as the sum of square roots of the eigenvalues of the
    symmetric ``S1^(1/2) S2 S1^(1/2)`` (same eigenvalues as S1 S2), which, unlike a
    general matrix square root, needs no complex arithmetic. For singular covariances
    (fewer examples than features, or dead features) the eigenvalues that are zero come
    out of ``eigh`` as round-off of about ``eps * max``, whose square roots (1e-8 of the
    largest) would add up to a visible error; eigenvalues below ``d * eps * max`` are
    therefore taken as 0, which leaves the distance accurate to round-off (1e-10 relative).

    Example:
        >>> round(frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2)), 6)
        4.0
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    s1, s2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise QualityError(
            f"means {mu1.shape} / {mu2.shape} and covariances {s1.shape} / {s2.shape} do not match"
        )
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(_nonzero(w))) @ v.T
    m = root1 @ s2 @ root1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_root = float(np.sqrt(_nonzero(ev)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_root)


def feature_rank(features: Tensor | np.ndarray) -> int:
    """The rank of the features' covariance (eigenvalues above ``F * eps * max``): the
    number of dimensions FID measures in. Below the number of features, some features
    are constant or combinations of others (dead units, fewer examples than features).

    Example:
        >>> feature_rank(np.c_[np.arange(5.0), np.zeros(5), 2 * np.arange(5.0)])
        1
    """
    return int(np.count_nonzero(_nonzero(np.linalg.eigvalsh(gaussian_stats(features)[1]))))


def fid(real: Tensor | np.ndarray, fake: Tensor | np.ndarray) -> float:
    """FID between two sets of features ``(N, F)``."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


def _kth_distances(x: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Each point's distance to its k-th nearest other point of ``x``."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)
        # The smallest is the point itself (0): the k-th neighbour is at index k.
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _coverage(points: Tensor, centres: Tensor, radii: Tensor, chunk: int = 2048) -> float:
    """Share of ``points`` within ``radii`` of at least one of ``centres``."""
    inside = 0
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i : i + chunk], centres)
        inside += int((d <= radii[None]).any(1).sum())
    return inside / len(points)


def precision_recall(
    real: Tensor | np.ndarray, fake: Tensor | np.ndarray, k: int = PR_NEIGHBOURS
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real``.

    Example:
        >>> real = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
        >>> p, r = precision_recall(real, real[real.norm(dim=1) < 0.5])
        >>> p == 1.0 and r < 0.5            # samples all real, but from the centre only
        True
    """
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    if min(len(r), len(f)) <= k:
        raise QualityError(f"precision and recall need more than k = {k} examples in each set")
    precision = _coverage(f, r, _kth_distances(r, k))
    recall = _coverage(r, f, _kth_distances(f, k))
    return precision, recall


# -- the domain network ---------------------------------------------------------------------


class DomainNet(nn.Module):
    """A small classifier whose penultimate layer is the feature space.

    Images: two 3x3 convolutions (16, 32 channels) with max pooling, an adaptive 4x4
    average pool, then 128 features; other data: an MLP 256-128. The feature layer's
    activation is a leaky ReLU: with a ReLU, units whose input is negative on every image
    (58 of 128 on MNIST-10k) are 0 everywhere and the features' covariance loses rank.
    """

    def __init__(self, data_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        if len(self.data_shape) == 3:
            c = self.data_shape[0]
            self.body: nn.Module = nn.Sequential(
                nn.Conv2d(c, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
                nn.AdaptiveAvgPool2d(4),
                nn.Flatten(),
                nn.Linear(32 * 16, DOMAIN_FEATURES),
                nn.LeakyReLU(DOMAIN_SLOPE),
            )
        else:
            d = int(np.prod(self.data_shape))
            self.body = nn.Sequential(
                nn.Flatten(),
                nn.Linear(d, 256),
                nn.ReLU(),
                nn.Linear(256, DOMAIN_FEATURES),
                nn.LeakyReLU(DOMAIN_SLOPE),
            )
        self.head = nn.Linear(DOMAIN_FEATURES, num_classes)

    def features(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(x.reshape(len(x), *self.data_shape))
        return out

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.features(x))
        return out


class DomainFeatures:
    """The domain network of one dataset, trained (or read from the cache) on creation."""

    name = "domain"

    def __init__(self, net: DomainNet, description: dict[str, Any], batch_size: int = 1000):
        self.net = net.eval()
        self.description = description
        self.batch_size = batch_size

    @torch.inference_mode()
    def features(self, x: Tensor) -> Tensor:
        return torch.cat([self.net.features(b.float()) for b in x.split(self.batch_size)])


def _domain_key(ds: Dataset, binarize: str, seed: int) -> str:
    fp = (ds.fingerprint or {}).get("sha256")
    if fp is None:
        raise QualityError(f"dataset {ds.name} has no fingerprint; load it with training_data()")
    key = f"v{DOMAIN_VERSION} {fp} {binarize} {seed if binarize != 'none' else ''}"
    if binarize == "dynamic":
        key += " drawn"  # earlier networks of dynamically binarized data learned grey images
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def domain_features(
    ds: Dataset,
    *,
    binarize: str = "none",
    seed: int = 0,
    cache: str | os.PathLike[str] | None = None,
    log: TextIO | None = None,
) -> DomainFeatures:
    """The domain network of ``ds`` from the cache, else trained on its training (and
    validation) split, its test accuracy measured, and cached.

    ``binarize`` and ``seed`` are the run's: binarized data get a network of their own.
    """
    if ds.train.y is None or ds.num_classes < 2:
        raise QualityError(
            f"the domain feature network is a classifier, and dataset {ds.name} has no labels; "
            "use the Inception network (--features inception)"
        )
    folder = Path(cache) if cache is not None else cache_dir() / "features"
    stem = f"domain-{Path(ds.name).name}-{_domain_key(ds, binarize, seed)}"
    weights, info_file = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    if weights.is_file() and info_file.is_file():
        try:
            cached = DomainNet(ds.shape, ds.num_classes)
            cached.load_state_dict(load_file(str(weights)))
            return DomainFeatures(cached, json.loads(info_file.read_text()))
        except (OSError, ValueError, RuntimeError):
            pass  # a damaged cache entry is trained again
    if log is not None:
        print(f"training the domain feature network of {ds.name} (once; cached) ...", file=log)
    start = time.perf_counter()
    x, y = ds.train.x, ds.train.y
    if ds.valid is not None and ds.valid.y is not None:
        x, y = torch.cat([x, ds.valid.x]), torch.cat([y, ds.valid.y])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # Initialised under the seed too: built before it, its weights came from whatever
        # state the global generator was in, and every training gave another network (and
        # other FIDs) under the same cache key.
        net = DomainNet(ds.shape, ds.num_classes)
        opt = EagerAdam(net.parameters(), lr=1e-3)
        net.train()
        epochs = max(DOMAIN_EPOCHS, math.ceil(DOMAIN_STEPS / math.ceil(len(x) / 128)))
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(128):
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()
    accuracy = None
    if ds.test.y is not None:
        with torch.inference_mode():
            pred = torch.cat([net(b).argmax(1) for b in ds.test.x.split(1000)])
        accuracy = round(float((pred == ds.test.y).float().mean()), 4)
    description = {
        "name": "domain",
        "network": f"vaekit domain classifier v{DOMAIN_VERSION} of {Path(ds.name).name} "
        f"({DOMAIN_FEATURES} penultimate features; {epochs} epochs on {len(x)} "
        "training examples)",
        "dataset": Path(ds.name).name,
        "key": stem,
        "test_accuracy": accuracy,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    save_weights(weights, net)
    write_json(info_file, description)
    if log is not None:
        print(f"  test accuracy {accuracy}; cached as {weights}", file=log)
    return DomainFeatures(net, description)


def reference_data(
    run: Run, path: str | os.PathLike[str] | None = None, allow_changed: bool = False
) -> Dataset:
    """The run's dataset with its whole training split (no validation holdout, no
    ``data.limit``), so the domain network of a dataset is the same for every run; with
    ``data.binarize: dynamic``, one seeded binary draw of it, as the test split holds."""
    d = dataclasses.replace(run.config.data, valid_fraction=0.0, limit=0)
    cfg = dataclasses.replace(run.config, data=d)
    ds = run_data(run.dir, cfg, run.info.get("data"), path=path, allow_changed=allow_changed)
    # With dynamic binarization the training split is still grey: the domain network would
    # learn grey images and the data row compare grey with binary (FID 11 instead of 1.3 on
    # MNIST-10k). One seeded draw makes them binary like the test split.
    ds.train = model_view(ds.train, d.binarize, run.config.train.seed)
    return ds


def feature_network(
    name: str,
    ds: Dataset,
    run: Run,
    *,
    inception_path: str | os.PathLike[str] | None = None,
    log: TextIO | None = None,
) -> FeatureNetwork:
    """The feature network ``name`` (domain or inception) for the run's data."""
    if name == "domain":
        return domain_features(
            ds, binarize=run.config.data.binarize, seed=run.config.train.seed, log=log
        )
    if name == "inception":
        if len(ds.shape) != 3 or ds.shape[0] not in (1, 3):
            raise QualityError(
                f"the Inception network reads grey or RGB images; {ds.name} has shape {ds.shape}"
            )
        return InceptionFeatures(inception_path, device=run.device)
    raise QualityError(f"--features must be one of {', '.join(FEATURES)}, got {name!r}")


def quality_file_name(features: str, n: int | None = None, temperature: float = 1.0) -> str:
    """``quality-FEATURES[-nN][-tT].json``: one file per setting (scores of one file compare)."""
    name = f"quality-{features}"
    if n is not None:
        name += f"-n{n}"
    if temperature != 1.0:
        name += f"-t{temperature:g}"
    return name + ".json"


def _scores(real: Tensor, fake: Tensor) -> dict[str, Any]:
    p, r = precision_recall(real, fake)
    return {
        "fid": round(fid(real, fake), 3),
        "precision": round(p, 4),
        "recall": round(r, 4),
        # The dimensions the samples' Gaussian has (the test split's: feature_rank).
        "rank": feature_rank(fake),
    }


def sample_quality(
    run: Run,
    samplers: Sequence[str] = ("prior",),
    *,
    features: str = "domain",
    n: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    dataset: Dataset | None = None,
    inception_path: str | os.PathLike[str] | None = None,
    fit: bool | str = "auto",
    log: TextIO | None = None,
) -> dict[str, Any]:
    """FID, precision and recall of ``n`` samples of each sampler against the test split
    (``n`` defaults to its size), in the feature space of ``features``; the ``data`` row
    scores as many training examples the same way."""
    names = sampler_names(samplers)
    ds = dataset if dataset is not None else reference_data(run)
    net = feature_network(features, ds, run, inception_path=inception_path, log=log)
    real = net.features(ds.test.x)
    n = int(n or len(ds.test))
    if n <= PR_NEIGHBOURS:
        raise QualityError(f"--n must be more than {PR_NEIGHBOURS}, got {n}")
    scores: dict[str, dict[str, Any]] = {}
    if len(ds.train) >= n:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(ds.train), generator=g)[:n]
        scores["data"] = {
            "sampler": f"{n} training examples",
            **_scores(real, net.features(ds.train.x[idx])),
        }
    for name in names:
        sampler = load_sampler(run, name, fit=fit, log=log)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = torch.cat(
                [
                    run.model.sample(
                        len(b), z=sampler.sample(len(b), temperature).to(run.device)
                    ).cpu()
                    for b in torch.arange(n).split(2000)
                ]
            )
        fake = net.features(x)
        if not bool(torch.isfinite(fake).all()):
            raise QualityError(f"the {name} sampler's samples give non-finite features")
        scores[name] = {
            "sampler": sampler.label,
            **_scores(real, fake),
            "seconds": round(time.perf_counter() - start, 1),
        }
        if log is not None:
            s = scores[name]
            print(
                f"  {name:10s} FID {s['fid']:9.3f}  precision {s['precision']:.3f}  "
                f"recall {s['recall']:.3f}",
                file=log,
            )
    return {
        "features": net.description,
        "note": "FID, precision and recall depend on the feature network and on the number "
        "of examples: compare only scores of the same network and n",
        "reference": f"test split ({len(ds.test)} examples)",
        # FID compares Gaussians in this many dimensions of the features (all of them
        # when nothing is constant or redundant).
        "feature_dim": int(real.shape[1]),
        "feature_rank": feature_rank(real),
        "n_samples": n,
        "temperature": temperature,
        "seed": seed,
        "weights": run.weights,
        "weights_epoch": run.weights_epoch,
        "scores": scores,
    }


def merge_saved(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the scores of other samplers kept from the same file (same settings)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return result

    def key(r: dict[str, Any]) -> Any:
        f = r.get("features") or {}
        return f.get("key") or f.get("sha256")

    same = key(old) == key(result) and all(
        old.get(k) == result.get(k) for k in ("n_samples", "temperature", "seed", "weights_epoch")
    )
    if not same or not isinstance(old.get("scores"), dict):
        return result
    return {**result, "scores": {**old["scores"], **result["scores"]}}


def format_scores(result: dict[str, Any]) -> str:
    """The scores as an aligned text table, headed by the network they used."""
    lines = [
        f"features: {result['features']['network']}",
        f"{result['n_samples']} samples vs the {result['reference']}, temperature "
        f"{result['temperature']:g}; covariance rank of the reference's features: "
        f"{result.get('feature_rank', '?')} of {result.get('feature_dim', '?')}",
    ]
    scores = result["scores"]
    labels = {name: str(s.get("sampler", "")) for name, s in scores.items()}
    # Columns as wide as their longest entry: a label is never cut ("200 training examples").
    w_name = max([len("sampler"), *map(len, labels)])
    w_label = max([0, *map(len, labels.values())])
    lines.append(
        f"{'sampler':{w_name}s} {'':{w_label}s} {'FID':>9s} {'precision':>9s} {'recall':>7s} {'rank':>5s}"
    )
    for name, s in scores.items():
        lines.append(
            f"{name:{w_name}s} {labels[name]:{w_label}s} {s['fid']:9.3f} "
            f"{s['precision']:9.3f} {s['recall']:7.3f} {s.get('rank', '?'):>5}"
        )
    return "\n".join(lines)


def saved_quality(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every ``quality-*.json`` of a run that can be read, by file name."""
    out = []
    for path in sorted(Path(run_dir).glob("quality-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("scores"), dict):
            out.append((path.name, data))
    return out


def saved_scores(run_dir: Path, features: str = "domain") -> dict[str, dict[str, Any]]:
    """The scores of ``RUN/quality-FEATURES.json`` (the default setting) by sampler."""
    for name, data in saved_quality(run_dir):
        if name == quality_file_name(features):
            return dict(data["scores"])
    return {}


def quality_html(run_dir: Path) -> str:
    """The report's sample-quality tables: one per saved file, headed by its network."""
    esc = html.escape
    parts = []
    for name, data in saved_quality(run_dir):
        net = (data.get("features") or {}).get("network", "unknown network")
        rows = "".join(
            f"<tr><td>{esc(str(k))}</td><td>{esc(str(s.get('sampler', '')))}</td>"
            f"<td>{s.get('fid', float('nan')):.2f}</td><td>{s.get('precision', float('nan')):.3f}</td>"
            f"<td>{s.get('recall', float('nan')):.3f}</td><td>{esc(str(s.get('rank', '?')))}</td></tr>"
            for k, s in data["scores"].items()
            if isinstance(s, dict)
        )
        parts.append(
            f"<h3>{esc(name)}</h3><p class='muted'>Features: {esc(str(net))}. "
            f"{esc(str(data.get('n_samples')))} samples against the {esc(str(data.get('reference')))}, "
            f"temperature {esc(str(data.get('temperature')))}; covariance rank of the "
            f"reference's features {esc(str(data.get('feature_rank', '?')))} of "
            f"{esc(str(data.get('feature_dim', '?')))}. Scores of different networks "
            "are not comparable.</p><table><tr><th>sampler</th><th></th><th>FID</th>"
            f"<th>precision</th><th>recall</th><th>rank</th></tr>{rows}</table>"
        )
    return "<h2>Sample quality</h2>" + "".join(parts) if parts else ""

"""Sample quality: the Fréchet distance against scipy's matrix square root, precision and
recall on point sets with known answers, the cached domain network, FID's Inception-v3
(architecture and verified download against a local server)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import train_tiny
from test_data_download import Server, server  # noqa: F401 - the local HTTP server fixture

from vaekit.data import DataError, load_dataset
from vaekit.data.download import RemoteFile
from vaekit.data.fingerprint import data_fingerprint
from vaekit.quality import (
    QualityError,
    domain_features,
    feature_rank,
    fid,
    format_scores,
    frechet_distance,
    precision_recall,
)


def scipy_frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The textbook formula with scipy.linalg.sqrtm (as pytorch-fid computes it)."""
    root = scipy.linalg.sqrtm(s1 @ s2)
    root = root.real if np.iscomplexobj(root) else root
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


def random_cov(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1) * np.eye(d)


@pytest.mark.parametrize("seed", range(5))
def test_frechet_distance_matches_scipy_sqrtm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 20))
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_cov(rng, d), random_cov(rng, d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        scipy_frechet(mu1, s1, mu2, s2), rel=1e-8, abs=1e-8
    )


def test_frechet_distance_known_values_and_singular_covariances() -> None:
    rng = np.random.default_rng(0)
    # Between N(0, a^2 I) and N(m, b^2 I) in d dimensions: |m|^2 + d (a - b)^2.
    d, m = 6, np.arange(6.0)
    assert frechet_distance(np.zeros(d), np.eye(d), m, 9 * np.eye(d)) == pytest.approx(
        m @ m + d * 4, abs=1e-9
    )
    assert frechet_distance(m, np.eye(d), m, np.eye(d)) == pytest.approx(0, abs=1e-9)
    # Rank-deficient covariances (fewer examples than features) stay real and agree.
    s1, s2 = random_cov(rng, 8, rank=3), random_cov(rng, 8, rank=5)
    assert frechet_distance(m[:1].repeat(8), s1, np.zeros(8), s2) == pytest.approx(
        scipy_frechet(m[:1].repeat(8), s1, np.zeros(8), s2), abs=1e-5
    )
    with pytest.raises(QualityError, match="do not match"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5])
def test_frechet_distance_of_rank_deficient_covariances_is_exact(scale: float) -> None:
    # 128 features of rank 61 (a domain network with dead units): between N(m, S) and
    # N(0, c^2 S) the distance is |m|^2 + (1 - c)^2 tr(S) exactly. The 67 zero eigenvalues
    # come out of eigh as +-1e-14; through the square root they added 3e-6 (c = 1: 0).
    rng = np.random.default_rng(0)
    a = rng.normal(size=(128, 61))
    s, m = a @ a.T / 61, rng.normal(size=128)
    exact = m @ m + (1 - scale) ** 2 * np.trace(s)
    got = frechet_distance(m, s, np.zeros(128), scale**2 * s)
    assert abs(got - exact) < 1e-10 * np.trace(s)


def test_fid_of_samples_from_known_gaussians() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    b = 2 * torch.randn(20000, 4, generator=g, dtype=torch.float64) + 1
    # |1|^2 * 4 + 4 * (1 - 2)^2 = 8, up to sampling error.
    assert fid(a, b) == pytest.approx(8.0, abs=0.15)


def test_precision_and_recall_on_known_sets() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(800, 3, generator=g)
    same = torch.randn(800, 3, generator=g)
    p, r = precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    # Collapsed samples: all realistic, covering little of the data.
    p, r = precision_recall(real, 0.05 * torch.randn(800, 3, generator=g))
    assert p > 0.95 and r < 0.2
    # Samples far from the data: neither.
    assert precision_recall(real, same + 50.0) == (0.0, 0.0)
    with pytest.raises(QualityError, match="more than k = 3"):
        precision_recall(real, same[:3])


def test_domain_network_is_trained_once_then_read_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vaekit.quality as quality

    monkeypatch.setattr(quality, "DOMAIN_STEPS", 30)
    monkeypatch.setattr(quality, "DOMAIN_EPOCHS", 1)
    ds = load_dataset("digits")
    ds.fingerprint = data_fingerprint(ds)
    log = io.StringIO()
    net = domain_features(ds, cache=tmp_path, log=log)
    assert "training the domain feature network of digits" in log.getvalue()
    d = net.description
    assert (
        d["name"] == "domain" and "domain classifier" in d["network"] and "digits" in d["network"]
    )
    assert d["test_accuracy"] > 0.5  # 30 steps on the 8x8 digits already classify
    feats = net.features(ds.test.x[:7])
    assert feats.shape == (7, quality.DOMAIN_FEATURES)
    # Every feature varies over real images, and none is a combination of others: FID
    # measures in all 128 dimensions (a ReLU feature layer left 44 of them 0 here).
    test = net.features(ds.test.x)
    assert bool((test.std(0) > 0).all()) and feature_rank(test) == quality.DOMAIN_FEATURES
    # The second time nothing is trained (its optimiser cannot be built): the same
    # weights come from the cache.
    monkeypatch.setattr(quality, "EagerAdam", None)
    again = domain_features(ds, cache=tmp_path, log=log)
    assert torch.equal(again.features(ds.test.x[:7]), feats)
    assert again.description == d
    # Binarized data get a network of their own.
    with pytest.raises(TypeError):
        domain_features(ds, binarize="static", cache=tmp_path)


def test_domain_network_is_the_same_whatever_the_global_random_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The network is the yardstick of every domain FID under its cache key: two trainings
    # (another machine, an emptied cache) must give the same one, whatever the caller drew
    # from torch's global generator before. Its initial weights used to come from there.
    import vaekit.quality as quality

    monkeypatch.setattr(quality, "DOMAIN_STEPS", 1)
    monkeypatch.setattr(quality, "DOMAIN_EPOCHS", 1)
    ds = load_dataset("digits")
    ds.fingerprint = data_fingerprint(ds)
    nets = []
    for state in (1, 2):
        torch.manual_seed(state)
        nets.append(domain_features(ds, cache=tmp_path / str(state)).net.state_dict())
    assert nets[0].keys() == nets[1].keys()
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])


def test_a_dynamically_binarized_run_is_scored_on_binary_training_images(tmp_path: Path) -> None:
    # Dynamic binarization leaves the training split grey (the trainer draws each batch)
    # while the test split holds one binary draw: the domain network and the data row
    # must see binary training images too, not their grey means.
    import vaekit
    from vaekit.quality import reference_data

    run = vaekit.load(train_tiny(tmp_path / "run", "data.binarize=dynamic", "train.epochs=1"))
    ds = reference_data(run)
    assert set(ds.test.x.unique().tolist()) == {0.0, 1.0}
    assert set(ds.train.x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(reference_data(run).train.x, ds.train.x)  # one seeded draw


def test_domain_network_needs_labels(tmp_path: Path) -> None:
    ds = load_dataset("digits")
    ds.fingerprint = data_fingerprint(ds)
    ds.train.y = None
    with pytest.raises(QualityError, match="no labels; use the Inception network"):
        domain_features(ds, cache=tmp_path)


def test_inception_architecture_is_ffids() -> None:
    """torchvision's Inception-v3 has 27,161,264 parameters; less its auxiliary head
    (3,326,696) and with FID's 1008 classes (+16,392), pytorch-fid's network has 23,850,960."""
    from vaekit.inception import FIDInceptionV3

    net = FIDInceptionV3().eval()
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    # The 2015 weights file predates BatchNorm's num_batches_tracked: it loads without them.
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in state and "fc.weight" in state
    net.load_state_dict(state)
    with torch.no_grad():
        out = net.pool3(torch.rand(1, 1, 28, 28))
    assert out.shape == (1, 2048) and bool((out >= 0).all())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("VAEKIT_OFFLINE", raising=False)
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "cache"


def test_inception_weights_download_is_verified(server: Server, cache: Path) -> None:  # noqa: F811
    from vaekit.inception import inception_weights

    body = b"a small stand-in for the weights file " * 100
    spec = RemoteFile("weights.pth", sha256=hashlib.sha256(body).hexdigest())
    server.add("/fid/weights.pth", b"tampered" + body)
    server.add("/good/weights.pth", body)
    with pytest.raises(DataError, match="checksum mismatch"):
        inception_weights(mirrors=[server.url("fid/")], spec=spec)
    assert not (cache / "inception" / "weights.pth").exists()
    path = inception_weights(mirrors=[server.url("fid/"), server.url("good/")], spec=spec)
    assert path == cache / "inception" / "weights.pth" and path.read_bytes() == body
    # Found in the cache the second time: no request.
    hits = len(server.hits)
    assert inception_weights(mirrors=[server.url("good/")], spec=spec) == path
    assert len(server.hits) == hits
    # A file of the user's is checked, and a wrong one is an error that says so.
    mine = cache.parent / "mine.pth"
    mine.write_bytes(b"not the weights")
    with pytest.raises(DataError, match="not the expected FID Inception-v3 weights file"):
        inception_weights(mine, mirrors=[], spec=spec)


def test_inception_offline_says_where_to_put_the_file(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaekit.inception import WEIGHTS, inception_weights

    monkeypatch.setenv("VAEKIT_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        inception_weights()
    text = str(info.value)
    assert WEIGHTS.name in text and "by hand" in text and str(cache / "inception") in text
    assert WEIGHTS.sha256 is not None and WEIGHTS.sha256 in text


def test_inception_features_refuse_a_file_that_is_not_the_weights(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vaekit.inception as inception
    from vaekit.rundir import RunError

    bad = cache.parent / "bad.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    monkeypatch.setattr(inception, "WEIGHTS", RemoteFile("bad.pth", sha256=digest))
    monkeypatch.setattr(
        inception,
        "inception_weights",
        lambda path=None: inception.locate(inception.WEIGHTS, [bad.parent], [], cache, what="t"),
    )
    with pytest.raises(RunError, match="not loadable as FID Inception-v3 weights"):
        inception.InceptionFeatures()


def test_the_scores_table_cuts_no_label() -> None:
    # The data row's label was cut to 10 characters ("200 traini").
    scores = {
        "data": {"sampler": "200 training examples", "fid": 1.5, "precision": 0.9, "recall": 0.8},
        "two-stage": {"sampler": "two-stage", "fid": 12.25, "precision": 0.5, "recall": 0.4},
    }
    result = {
        "features": {"network": "domain"},
        "n_samples": 200,
        "reference": "test split (359 examples)",
        "temperature": 1.0,
        "scores": scores,
    }
    table = format_scores(result).splitlines()
    assert table[3].split()[:6] == ["data", "200", "training", "examples", "1.500", "0.900"]
    assert "two-stage" in table[4] and table[4].split()[-2] == "0.400"
    # The columns line up: every row's FID ends where the header's does.
    end = table[2].index("FID") + 3
    assert table[3][end - 5 : end] == "1.500" and table[4][end - 6 : end] == "12.250"

"""The new parts through the one trainer and back from the run directory."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

import vaekit
from vaekit.config import load_config
from vaekit.data import load_dataset
from vaekit.distributions import FlowDistribution, ImplicitDistribution
from vaekit.train import fit


def _fit(cfg: object, run: Path, **kw: object) -> list[dict]:
    return fit(cfg, run, progress=False, log=io.StringIO(), **kw)  # type: ignore[arg-type]


def test_avb_trains_two_optimisers_and_resumes(tmp_path: Path) -> None:
    cfg = tiny_config(
        "model.posterior=implicit",
        "model.encoder.hidden=[32]",
        "objective.name=avb",
        "objective.discriminator=[32]",
        "objective.warmup_epochs=1",
    )
    run = tmp_path / "avb"
    rows = _fit(cfg, run)
    assert len(rows) == 2 and {"recon", "kl", "disc", "elbo"} <= set(rows[-1]["train"])
    ckpt = sorted((run / "checkpoints").glob("epoch-*"))[-1]
    assert any(
        k.startswith("discriminator.") for k in load_file(str(ckpt / "objective.safetensors"))
    )
    rows = _fit(None, run, resume=True, epochs=3)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    loaded = vaekit.load(run)
    x = load_dataset("digits").test.x[:5]
    q = loaded.encode(x)
    assert isinstance(q, ImplicitDistribution) and q.rsample((2,)).shape == (2, 5, 2)
    assert loaded.reconstruct(x).shape == x.shape and loaded.sample(4).shape == (4, 1, 8, 8)


def test_flow_and_vamp_prior_round_trip_through_the_run_directory(tmp_path: Path) -> None:
    cfg = tiny_config(
        "model.flow=iaf",
        "model.flow.length=2",
        "model.flow.hidden=16",
        "model.prior=mog",
        "model.prior.components=4",
        "objective.warmup_epochs=2",
        "objective.free_bits=0.05",
    )
    run = tmp_path / "iaf"
    rows = _fit(cfg, run)
    assert all(torch.isfinite(torch.tensor(r["test"]["loss"])) for r in rows)
    loaded = vaekit.load(run)
    x = load_dataset("digits").test.x[:5]
    q = loaded.encode(x)
    assert isinstance(q, FlowDistribution)
    z = q.sample((3,))
    assert torch.isfinite(q.log_prob(z)).all() and torch.isfinite(loaded.prior.log_prob(z)).all()
    assert set(loaded.elbo(x)) >= {"elbo", "recon", "kl"}

    vamp = tiny_config("model.prior=vamp", "model.prior.components=6")
    run = tmp_path / "vamp"
    _fit(vamp, run)
    weights = load_file(str(run / "model.safetensors"))
    assert weights["prior_module.pseudo_inputs"].shape == (6, 1, 8, 8)
    loaded = vaekit.load(run)
    assert loaded.prior.sample((5,)).shape == (5, 2)
    assert loaded.sample(3).shape == (3, 1, 8, 8)


def test_iwae_and_discrete_likelihoods_train_on_conv_nets(tmp_path: Path) -> None:
    for i, extra in enumerate(
        (
            [
                "objective.name=iwae",
                "objective.samples=4",
                "model.flow=planar",
                "model.flow.length=2",
            ],
            ["model.likelihood=categorical", "model.likelihood.levels=17"],
            [
                "model.likelihood=discretized-logistic",
                "model.likelihood.levels=17",
                "model.likelihood.components=3",
            ],
        )
    ):
        cfg = tiny_config(
            "model.encoder.name=conv",
            "model.encoder.channels=[8, 16]",
            "model.encoder.blocks=1",
            *extra,
        )
        run = tmp_path / f"run{i}"
        rows = _fit(cfg, run)
        assert (
            rows[-1]["train"]["loss"] < rows[0]["train"]["loss"]
            or rows[-1]["test"]["loss"] < rows[0]["test"]["loss"]
        )
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        if "objective.name=iwae" in extra:
            assert "iwae" in metrics[-1]["test"]
        recon = vaekit.load(run).reconstruct(load_dataset("digits").test.x[:3])
        assert recon.shape == (3, 1, 8, 8) and recon.min() >= 0 and recon.max() <= 1


@pytest.mark.slow
def test_fashion_mnist_config_runs_one_epoch(tmp_path: Path) -> None:
    try:
        load_dataset("fashion-mnist")
    except Exception as e:  # not installed here (CI installs dataset-fashion-mnist)
        pytest.skip(f"Fashion-MNIST is not available: {e}")
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(
        root / "configs" / "fashion_mnist_dlogistic.yaml",
        [
            "data.limit=300",
            "train.epochs=1",
            "model.encoder.channels=[16, 32]",
            "model.encoder.hidden=[64]",
        ],
    )
    rows = _fit(cfg, tmp_path / "fashion")
    nats = rows[-1]["test"]["loss"]
    # 784 pixels of 256 levels: anything trained beats the uniform 8 bits per dimension.
    assert 0 < nats / (784 * 0.6931471805599453) < 8

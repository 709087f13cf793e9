"""`vaekit evaluate RUN --disentanglement` end to end on a small dSprites-like grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import train_tiny
from test_disentangle_metrics import SMALL

from vaekit.cli import main
from vaekit.data import named
from vaekit.data.dsprites import dsprites_synthetic
from vaekit.disentangle import metrics


@pytest.fixture
def small_sprites(monkeypatch: pytest.MonkeyPatch) -> None:
    # The named set's path with a 1,152-image grid at 16x16 instead of 46,080 at 32x32,
    # and the protocol's small counts for --quick: the same code, in seconds.
    monkeypatch.setitem(
        named.NAMED,
        "dsprites-synthetic",
        lambda d, c: dsprites_synthetic(size=16, orientations=4, positions=4),
    )
    monkeypatch.setattr(metrics.Protocol, "quick", classmethod(lambda cls, fraction=0.1: SMALL))


def test_train_tcvae_and_score_it(
    tmp_path: Path, small_sprites: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "tcvae"
    sets = [
        "data.name=dsprites-synthetic",
        "data.limit=0",
        "model.latent_dim=4",
        "model.encoder.hidden=[32]",
        "objective.name=tcvae",
        "objective.estimator=mss",
        "train.epochs=2",
    ]
    args = ["train", "--out", str(run), "--epochs", "2"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    model_json = json.loads((run / "model.json").read_text())
    assert model_json["data"]["factors"]["sizes"] == [3, 6, 4, 4, 4]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--disentanglement", "--quick"]) == 0
    result = json.loads((run / "disentanglement-quick.json").read_text())
    assert result == json.loads(capsys.readouterr().out)
    assert result["n"] == 230 and result["representation"] == "mean"  # 20% of 1,152
    for metric in ("beta_vae", "factor_vae", "mig", "sap", "dci"):
        assert 0.0 <= result[metric]["score"] <= 1.0, metric
    assert result["elbo"] < 0 and result["protocol"]["dci_trees"] == SMALL.dci_trees


def test_data_without_factors_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train_tiny(tmp_path / "digits")
    assert main(["evaluate", str(run), "--disentanglement"]) == 2
    assert "has no ground-truth factors" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--quick"]) == 2
    assert "--quick goes with --disentanglement" in capsys.readouterr().err

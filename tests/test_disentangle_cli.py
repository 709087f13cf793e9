"""`vaekit evaluate RUN --disentanglement`, the report's section and the figures, end to
end on a small dSprites-like grid."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import train_tiny
from test_disentangle_metrics import SMALL

import vaekit
from vaekit.cli import main
from vaekit.data import named
from vaekit.data.dsprites import dsprites_synthetic
from vaekit.disentangle import metrics
from vaekit.disentangle.figures import metrics_plot, traversals_side_by_side


@pytest.fixture(scope="module")
def sprites_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A beta-TCVAE trained for two epochs. The named set's path serves a 1,152-image grid
    at 16x16 instead of 46,080 at 32x32, and --quick the protocol's small counts: the same
    code, in seconds."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(
            named.NAMED,
            "dsprites-synthetic",
            lambda d, c: dsprites_synthetic(size=16, orientations=4, positions=4),
        )
        mp.setattr(metrics.Protocol, "quick", classmethod(lambda cls, fraction=0.1: SMALL))
        run = tmp_path_factory.mktemp("sprites") / "tcvae"
        args = ["train", "--out", str(run)]
        for s in [
            "data.name=dsprites-synthetic",
            "model.latent_dim=4",
            "model.encoder.hidden=[32]",
            "objective.name=tcvae",
            "objective.estimator=mss",
            "train.epochs=2",
        ]:
            args += ["--set", s]
        assert main(args) == 0
        yield run


def test_evaluate_disentanglement(sprites_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_json = json.loads((sprites_run / "model.json").read_text())
    assert model_json["data"]["factors"]["sizes"] == [3, 6, 4, 4, 4]
    capsys.readouterr()
    assert main(["evaluate", str(sprites_run), "--disentanglement", "--quick"]) == 0
    result = json.loads((sprites_run / "disentanglement-quick.json").read_text())
    assert result == json.loads(capsys.readouterr().out)
    # The default pool is every split (disentanglement_lib's), and the file says so.
    assert result["n"] == 1152 and result["representation"] == "mean"
    assert result["split"] == "all" and result["pool"]["splits"] == {"train": 922, "test": 230}
    assert (result["dci"]["train_rows"], result["dci"]["test_rows"]) == (400, 300)
    for metric in ("beta_vae", "factor_vae", "mig", "sap", "dci"):
        assert 0.0 <= result[metric]["score"] <= 1.0, metric
    assert result["elbo"] < 0 and result["elbo_split"] == "test"
    assert result["protocol"]["dci_trees"] == SMALL.dci_trees
    # The test split alone: 230 examples, fewer than the 700 rows DCI asks for, each used once.
    assert (
        main(["evaluate", str(sprites_run), "--disentanglement", "--quick", "--split", "test"]) == 0
    )
    test = json.loads((sprites_run / "disentanglement-test-quick.json").read_text())
    assert test["n"] == 230 and test["pool"] == {"splits": {"test": 230}, "size": 230, "limit": 0}
    assert (test["dci"]["train_rows"], test["dci"]["test_rows"]) == (131, 99)
    assert (test["sap"]["train_rows"], test["sap"]["test_rows"]) == (131, 99)


def test_report_shows_the_scores(sprites_run: Path) -> None:
    assert main(["report", str(sprites_run), "--k", "5"]) == 0
    text = (sprites_run / "report.html").read_text()
    assert "<h2>Disentanglement</h2>" in text and "FactorVAE score" in text
    assert 'id="disentanglement"' in text  # the plot


def test_traversals_and_metrics_plot(sprites_run: Path) -> None:
    run = vaekit.load(sprites_run)
    fig = traversals_side_by_side([run, run], ["a", "b"], run.dataset().test, rows=3, n=5)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert len(fig.axes[0].get_yticklabels()) == 3
    fig = metrics_plot({"a": [{"mig": 0.2, "elbo": -50.0}, {"mig": 0.3, "elbo": -49.0}]})
    assert [ax.get_title() for ax in fig.axes] == ["MIG", "ELBO (nats)"]


def test_data_without_factors_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train_tiny(tmp_path / "digits")
    assert main(["evaluate", str(run), "--disentanglement"]) == 2
    assert "has no ground-truth factors" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--quick"]) == 2
    assert "--quick goes with --disentanglement" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--split", "all"]) == 2
    assert "--split all goes with --disentanglement" in capsys.readouterr().err


def test_traversals_command(sprites_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.png"
    assert (
        main(["traversals", str(sprites_run), str(sprites_run), "--rows", "2", "--out", str(out)])
        == 0
    )
    assert out.stat().st_size > 1000
    assert main(["traversals", str(sprites_run), "--example", "100000"]) == 2

"""vaekit summary: one table of many runs from what training and evaluation saved."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import train_tiny

from vaekit.cli import main
from vaekit.rundir import read_metrics
from vaekit.summary import COLUMNS, format_rows, summarize


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("summary")
    evaluated = train_tiny(root / "evaluated", "data.valid_fraction=0.25", "train.epochs=3")
    assert main(["evaluate", str(evaluated), "--k", "4", "--weights", "best"]) == 0
    bare = train_tiny(root / "bare", "objective.name=iwae", "objective.samples=3")
    return evaluated, bare


def test_rows_hold_the_saved_evaluation_and_the_training_record(runs: tuple[Path, Path]) -> None:
    evaluated, bare = runs
    one, two = summarize([evaluated, bare])
    saved = json.loads((evaluated / "eval-best-k4.json").read_text())
    metrics = read_metrics(evaluated)
    best = metrics[-1]["best_epoch"]
    assert one["run"] == "evaluated" and one["dataset"] == "digits"
    assert (one["epochs"], one["best_epoch"]) == (3, best)
    assert one["weights"] == f"best@{best}" and one["k"] == 4
    assert one["nll"] == saved["nll"] and one["elbo"] == saved["elbo"]
    assert one["test_bound"] == metrics[best - 1]["test"]["elbo"]
    assert one["train_hours"] == pytest.approx(sum(r["train_seconds"] for r in metrics) / 3600)
    # Never evaluated: the table says so, and shows the bound it trains (IWAE) instead.
    assert two["objective"] == "iwae k=3" and two["nll"] is None and two["weights"] is None
    assert two["test_bound"] == read_metrics(bare)[-1]["test"]["iwae"]


def test_markdown_csv_and_json(runs: tuple[Path, Path]) -> None:
    rows = summarize(list(runs))
    md = format_rows(rows).splitlines()
    assert len(md) == 4 and md[0].startswith("| run | dataset |")
    assert f"{rows[0]['nll']:.2f} ± {rows[0]['nll_se']:.2f}" in md[2]
    assert "| — |" in md[3]  # the run without an evaluation
    parsed = list(csv.DictReader(io.StringIO(format_rows(rows, "csv"))))
    assert list(parsed[0]) == list(COLUMNS) and float(parsed[0]["nll"]) == rows[0]["nll"]
    assert json.loads(format_rows(rows, "json")) == rows
    with pytest.raises(ValueError, match="markdown, csv or json"):
        format_rows(rows, "html")


def test_cli_summary(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["summary", *map(str, runs)]) == 0
    assert capsys.readouterr().out.count("\n") == 4
    out = tmp_path / "table.csv"
    assert main(["summary", str(runs[0]), "--format", "csv", "--out", str(out)]) == 0
    assert out.read_text().startswith("run,dataset,")
    assert main(["summary", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["summary", str(tmp_path / "empty")]) == 2
    assert "not a vaekit run directory: config.json is missing" in capsys.readouterr().err
    # A run killed before its first epoch has a config and nothing else: still a row.
    early = tmp_path / "early"
    early.mkdir()
    (early / "config.json").write_text((runs[1] / "config.json").read_text())
    (row,) = summarize([early])
    assert (row["epochs"], row["nll"], row["test_bound"]) == (0, None, None)


def test_model_column_names_the_network() -> None:
    from vaekit.config import config_from_dict
    from vaekit.rundir import model_label as _model_text

    conv = {
        "latent_dim": 32,
        "encoder": {"name": "conv", "channels": [64, 128], "blocks": 1, "hidden": [512]},
        "posterior": "gaussian",
        "flow": {"name": "iaf", "length": 4},
        "prior": "normal",
        "likelihood": "bernoulli",
    }
    text = _model_text(config_from_dict({"model": conv}))
    assert text.startswith("conv 64-128 x1 res + 512, z=32, gaussian+iaf4,"), text
    mlp = conv | {"encoder": {"name": "mlp", "hidden": [300, 300]}, "flow": "none"}
    assert _model_text(config_from_dict({"model": mlp})).startswith("mlp 300-300, z=32, gaussian,")

"""Every config in configs/ is valid, and each tutorial config trains on real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vaekit.cli import main
from vaekit.config import load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
TUTORIALS = [p for p in CONFIGS if p.name[:3] in ("000", "001", "002", "003")]


def test_there_are_configs_for_all_four_tutorials() -> None:
    assert {p.name[:3] for p in TUTORIALS} == {"000", "001", "002", "003"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_is_valid(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.train.epochs > 0


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_config_trains_on_real_mnist(
    path: Path, tmp_path: Path, shared_data_dir: Path
) -> None:
    """One short epoch on the labelled MNIST subset (or binarized MNIST for 002-Bernoulli)."""
    dataset = "binarized-mnist" if load_config(path).data.name == "binarized-mnist" else "mnist-10k"
    run = tmp_path / path.stem
    args = [
        "train",
        "--config",
        str(path),
        "--dataset",
        dataset,
        "--epochs",
        "1",
        "--out",
        str(run),
    ]
    args += ["--data-dir", str(shared_data_dir), "--set", "data.limit=1000"]
    assert main(args) == 0
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    # Per-pixel Bernoulli cost starts at 784 * log 2 = 543 nats; one short epoch must beat it.
    if load_config(path).model.likelihood == "bernoulli":
        assert row["test"]["recon"] < 543
    assert row["train"]["loss"] == row["train"]["loss"]  # finite, not NaN

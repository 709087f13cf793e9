"""Learning-rate schedules: pure functions of the epoch, applied by the trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import train_tiny

from vaekit.config import ConfigError, load_config
from vaekit.optim import lr_factor
from vaekit.rundir import read_metrics


def test_burda_stages_last_three_to_the_i_epochs() -> None:
    # Stage i covers 3**i epochs: 1 | 2-4 | 5-13 | 14-40 | ... | 1094-3280.
    stages = {1: 0, 2: 1, 4: 1, 5: 2, 13: 2, 14: 3, 40: 3, 1093: 6, 1094: 7, 3280: 7}
    for epoch, stage in stages.items():
        assert lr_factor("burda", epoch, 3280) == pytest.approx(10 ** (-stage / 7)), epoch


def test_cosine_runs_from_one_to_a_hundredth() -> None:
    values = [lr_factor("cosine", e, 10) for e in range(1, 11)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert lr_factor("none", 7, 10) == 1.0


def test_the_trainer_applies_and_logs_the_schedule(tmp_path: Path) -> None:
    run = train_tiny(
        tmp_path / "run", "train.epochs=3", "train.lr=0.01", "train.lr_schedule=cosine"
    )
    lrs = [row["lr"] for row in read_metrics(run)]
    assert lrs == pytest.approx([0.01 * lr_factor("cosine", e, 3) for e in (1, 2, 3)])


def test_unknown_schedule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        load_config(None, ["train.lr_schedule=cosin"])

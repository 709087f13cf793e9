"""Learning-rate schedules: pure functions of the epoch, applied by the trainer."""

from __future__ import annotations

import io
import re
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


def _train_log(tmp_path: Path, *overrides: str) -> tuple[str, list[dict]]:
    from conftest import tiny_config

    from vaekit.train import fit

    log = io.StringIO()
    fit(tiny_config(*overrides), tmp_path / "run", progress=False, log=log)
    return log.getvalue(), read_metrics(tmp_path / "run")


def _epoch_lines(tmp_path: Path, *overrides: str) -> tuple[list[str], list[dict]]:
    text, rows = _train_log(tmp_path, *overrides)
    return [line for line in text.splitlines() if line.startswith("epoch")], rows


def test_the_epoch_line_prints_the_bound_and_says_when_the_loss_is_weighted(
    tmp_path: Path,
) -> None:
    # During a KL warm-up the loss is recon + beta KL with beta < 1: the figure printed as
    # the split's score must be the negative ELBO metrics.jsonl records, not that loss.
    lines, rows = _epoch_lines(tmp_path, "objective.warmup_epochs=10")
    for line, row in zip(lines, rows, strict=True):
        test = float(re.search(r"test -ELBO (\S+)", line).group(1))  # type: ignore[union-attr]
        assert test == pytest.approx(-row["test"]["elbo"], abs=1e-3)
        assert abs(test - row["test"]["loss"]) > 0.01  # the weighted loss differs
        train = re.search(
            r"train -ELBO (\S+) \(.*; trained on loss (\S+): KL x (\S+), warm-up", line
        )
        assert train, line
        assert float(train.group(1)) == pytest.approx(-row["train"]["elbo"], abs=1e-3)
        assert float(train.group(2)) == pytest.approx(row["train"]["loss"], abs=1e-3)
    assert "KL x 0.1, warm-up epoch 1 of 10" in lines[0]
    assert "KL x 0.2, warm-up epoch 2 of 10" in lines[1]


def test_the_epoch_line_names_no_weighted_loss_when_the_loss_is_the_bound(tmp_path: Path) -> None:
    lines, rows = _epoch_lines(tmp_path / "elbo", "train.epochs=1")
    assert "train -ELBO" in lines[0] and "trained on loss" not in lines[0]
    lines, rows = _epoch_lines(tmp_path / "beta", "train.epochs=1", "objective.beta=4")
    assert "trained on loss" in lines[0] and "KL x 4)" in lines[0]
    # An autoencoder has no bound: its loss is the figure.
    lines, rows = _epoch_lines(tmp_path / "ae", "train.epochs=1", "objective=ae")
    loss = float(re.search(r"test loss (\S+)", lines[0]).group(1))  # type: ignore[union-attr]
    assert loss == pytest.approx(rows[0]["test"]["loss"], abs=1e-3)


def test_score_limit_scores_a_seeded_subset_and_the_trainer_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # data.limit cut the training split only: a quick run still scored the whole validation
    # and test splits every epoch. train.score_limit scores a seeded, class-balanced subset.
    from vaekit.data import limit_split, load_dataset
    from vaekit.train import loop

    scored: list[list[int]] = []
    real = loop.evaluate_split

    def recording(model, objective, split, batch_size):  # type: ignore[no-untyped-def]
        scored.append(split.y.tolist())
        return real(model, objective, split, batch_size)

    monkeypatch.setattr(loop, "evaluate_split", recording)
    over = ("data.limit=64", "data.valid_fraction=0.2", "train.epochs=1")
    text, rows = _train_log(tmp_path / "a", *over, "train.score_limit=50")
    assert [len(y) for y in scored] == [50, 50]  # valid, then test
    assert scored[1] == limit_split(load_dataset("digits").test, 50, seed=0).y.tolist()
    assert "test 359 (each epoch scores 50)" in text and "note: every epoch scores" not in text
    assert set(rows[0]["test"]) >= {"elbo", "recon", "kl"}
    # metrics.jsonl says the scores are of a subset; the summary does not pass them off
    # as the test split's bound.
    assert rows[0]["scored"] == {"valid": 50, "test": 50}
    from vaekit.summary import summarize_run

    assert summarize_run(tmp_path / "a" / "run")["test_bound"] is None
    scored.clear()
    text, rows = _train_log(tmp_path / "b", *over)
    assert [len(y) for y in scored] == [288, 359]  # a fifth of the 1,438 training images
    assert "--set train.score_limit=N" in text
    assert "scored" not in rows[0]
    assert summarize_run(tmp_path / "b" / "run")["test_bound"] == pytest.approx(
        rows[0]["test"]["elbo"]
    )

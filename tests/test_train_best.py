"""The best weights by validation ELBO (``train.keep_best``): written, resumed, loaded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, train_tiny
from safetensors.torch import load_file

import vaekit
from vaekit.cli import main
from vaekit.config import ConfigError
from vaekit.rundir import RunError, read_metrics
from vaekit.train import fit
from vaekit.train.checkpoint import TrainState
from vaekit.train.loop import _patience_spent

VALID = "data.valid_fraction=0.25"


def _best_so_far(rows: list[dict]) -> list[int]:
    """The epoch with the highest validation ELBO up to each epoch (ties keep the earlier)."""
    best, out, score = 0, [], float("-inf")
    for row in rows:
        if row["valid"]["elbo"] > score:
            best, score = row["epoch"], row["valid"]["elbo"]
        out.append(best)
    return out


def test_best_weights_are_those_of_the_best_validation_epoch(tmp_path: Path) -> None:
    # A high learning rate makes the validation ELBO go up and down, so the best epoch is
    # usually not the last one; the test holds either way.
    overrides = (VALID, "train.lr=0.05", "train.epochs=6")
    run = train_tiny(tmp_path / "run", *overrides)
    rows = read_metrics(run)
    assert [r["best_epoch"] for r in rows] == _best_so_far(rows)
    best = rows[-1]["best_epoch"]
    loaded = vaekit.load(run, weights="best")
    assert loaded.weights == "best" and loaded.weights_epoch == best
    assert vaekit.load(run).weights_epoch == 6
    # data.valid_fraction held out a quarter of the digits' training split, the same one
    # that a loaded run's dataset gives (for `vaekit evaluate --split valid`), and
    # data.limit=256 kept 256 of the rest, as in training.
    ds = loaded.dataset()
    assert (len(ds.train), len(ds.valid)) == (256, 360)
    # The same run trained for only `best` epochs ends with exactly those weights.
    short = train_tiny(tmp_path / "short", *overrides[:2], f"train.epochs={best}")
    want, got = load_file(short / "model.safetensors"), load_file(run / "best.safetensors")
    assert sorted(want) == sorted(got)
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_no_validation_split_means_no_best_weights_and_a_clear_error(tmp_path: Path) -> None:
    run = train_tiny(tmp_path / "run")
    assert not (run / "best.safetensors").exists()
    assert "best_epoch" not in read_metrics(run)[-1]
    with pytest.raises(RunError, match="valid_fraction"):
        vaekit.load(run, weights="best")
    off = train_tiny(tmp_path / "off", VALID, "train.keep_best=false")
    assert not (off / "best.safetensors").exists()
    with pytest.raises(RunError, match="'last' or 'best'"):
        vaekit.load(off, weights="newest")


def test_evaluate_best_writes_its_own_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train_tiny(tmp_path / "run", VALID, "train.epochs=3")
    assert main(["evaluate", str(run), "--k", "4", "--weights", "best"]) == 0
    result = json.loads((run / "eval-best-k4.json").read_text())
    assert result["weights"] == "best"
    assert result["epoch"] == read_metrics(run)[-1]["best_epoch"]
    assert not (run / "eval-k4.json").exists()
    assert main(["evaluate", str(run), "--k", "4"]) == 0
    assert json.loads((run / "eval-k4.json").read_text())["weights"] == "last"
    capsys.readouterr()
    bare = train_tiny(tmp_path / "bare")
    assert main(["evaluate", str(bare), "--k", "4", "--weights", "best"]) == 2
    assert "best.safetensors" in capsys.readouterr().err


def test_hold_out_validation_is_seeded_disjoint_and_keeps_an_own_split() -> None:
    from vaekit.data import DataError, Split, hold_out_validation, load_dataset

    ds = load_dataset("digits")
    a, b = hold_out_validation(ds, 0.25), hold_out_validation(ds, 0.25)
    assert a.valid is not None and b.valid is not None
    assert torch.equal(a.valid.x, b.valid.x)  # the same split every time
    assert len(a.train) + len(a.valid) == len(ds.train)

    # Together exactly the original training rows (a multiset: digits has duplicates).
    def rows(*splits: Split) -> list[bytes]:
        return sorted(r.numpy().tobytes() for s in splits for r in s.x.reshape(len(s), -1))

    assert rows(a.train, a.valid) == rows(ds.train)
    assert a.valid.y is not None and len(a.valid.y) == len(a.valid)
    assert hold_out_validation(ds, 0.0) is ds
    own = hold_out_validation(a, 0.5)  # a split of its own is kept, the fraction ignored
    assert own is a
    tiny = ds.__class__(**{**ds.__dict__, "train": Split(ds.train.x[:1], ds.train.y[:1])})
    with pytest.raises(DataError, match="cannot give a validation split"):
        hold_out_validation(tiny, 0.5)


def _drop_times(rows: list[dict], drop: tuple[str, ...] = ()) -> list[dict]:
    return [
        {k: v for k, v in r.items() if not k.endswith("seconds") and k not in drop} for r in rows
    ]


def test_the_test_split_is_scored_at_the_end_and_never_changes_training(tmp_path: Path) -> None:
    end = read_metrics(train_tiny(tmp_path / "end", VALID, "train.epochs=3"))
    every = read_metrics(
        train_tiny(tmp_path / "every", VALID, "train.epochs=3", "train.score_test=epoch")
    )
    # train.score_test=end (the default): validation every epoch, the test split once.
    assert [("test" in r, "valid" in r) for r in end] == [(False, True)] * 2 + [(True, True)]
    assert all("test" in r for r in every)
    # The test split's scoring draws from its own stream: the same steps either way.
    assert _drop_times(end, ("test",)) == _drop_times(every, ("test",))
    assert end[-1]["test"] == every[-1]["test"]
    # Without a validation split the test split is what each epoch is scored on.
    bare = read_metrics(train_tiny(tmp_path / "bare", "train.epochs=2"))
    assert all("test" in r for r in bare)
    with pytest.raises(ConfigError, match="train.score_test"):
        tiny_config("train.score_test=sometimes").validate()


def test_patience_stops_where_the_validation_score_stalls_and_changes_nothing_before(
    tmp_path: Path,
) -> None:
    # lr 0.08 on the tiny config: the validation ELBO improves to epoch 8, then not for two
    # epochs (checked below, so that the test cannot pass without stopping early).
    overrides = (VALID, "train.lr=0.08", "train.epochs=12")
    full = read_metrics(train_tiny(tmp_path / "full", *overrides))
    patience = 2
    stop = next(r["epoch"] for r in full if r["epoch"] - r["best_epoch"] >= patience)
    assert stop < 12
    log = io.StringIO()
    fit(tiny_config(*overrides, f"train.patience={patience}"), tmp_path / "early", log=log)
    early = read_metrics(tmp_path / "early")
    assert _drop_times(early, ("test",)) == _drop_times(full[:stop], ("test",))
    # The epoch early stopping ends the run on is its last: it scores the test split.
    assert [r["epoch"] for r in early if "test" in r] == [stop]
    assert f"stopped early after epoch {stop}" in log.getvalue()
    best = load_file(tmp_path / "early" / "best.safetensors")
    assert (
        best.keys()
        and vaekit.load(tmp_path / "early", weights="best").weights_epoch
        == (early[-1]["best_epoch"])
    )
    # Resuming a run that stopped early trains nothing and says how to go on ...
    log = io.StringIO()
    again = fit(None, tmp_path / "early", resume=True, log=log)
    assert _drop_times(again) == _drop_times(early)
    assert "--patience N" in log.getvalue()
    # ... which --patience does, recording the new value for later resumes.
    more = fit(None, tmp_path / "early", resume=True, patience=0, log=io.StringIO())
    assert [r["epoch"] for r in more] == list(range(1, 13))
    config = json.loads((tmp_path / "early" / "config.json").read_text())
    assert config["train"]["patience"] == 0


def test_patience_counts_from_the_end_of_the_kl_warm_up() -> None:
    state = TrainState(epoch=30, best_epoch=5)
    assert _patience_spent(state, 20, warmup=0)
    assert not _patience_spent(state, 20, warmup=20)  # 30 - 20 < 20
    assert _patience_spent(state, 10, warmup=20)
    assert not _patience_spent(state, 0, warmup=0)  # 0 = off


def test_patience_needs_a_validation_score(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep_best"):
        tiny_config(VALID, "train.patience=5", "train.keep_best=false").validate()
    with pytest.raises(ConfigError, match="valid_fraction"):
        train_tiny(tmp_path / "run", "train.patience=5")
    with pytest.raises(ConfigError, match="train.patience"):
        tiny_config("train.patience=-1").validate()


def test_iwae_runs_keep_the_epoch_with_the_best_validation_iwae_bound(tmp_path: Path) -> None:
    run = train_tiny(
        tmp_path / "run",
        VALID,
        "objective.name=iwae",
        "objective.samples=3",
        "train.lr=0.05",
        "train.epochs=6",
    )
    rows = read_metrics(run)
    best, score, want = 0, float("-inf"), []
    for row in rows:
        if row["valid"]["iwae"] > score:
            best, score = row["epoch"], row["valid"]["iwae"]
        want.append(best)
    assert [r["best_epoch"] for r in rows] == want


def test_validation_settings_that_change_nothing_are_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # data.valid_fraction beside the data's own validation split, and train.keep_best
    # without any validation split, changed nothing without a word.
    from conftest import tiny_config

    from vaekit.data import load_dataset

    ds = load_dataset("digits")
    own = {
        "train": (ds.train.x[:200].numpy(), None),
        "valid": (ds.train.x[200:250].numpy(), None),
        "test": (ds.test.x[:50].numpy(), None),
    }
    quiet = {"progress": False, "log": io.StringIO()}
    fit(tiny_config("train.epochs=1", VALID), tmp_path / "own", data=own, **quiet)
    err = capsys.readouterr().err
    assert (
        "data.valid_fraction=0.25 changes nothing: <python> has a validation split of its own"
        in err
    )
    assert "keep_best" not in err
    train_tiny(tmp_path / "none", "train.epochs=1")
    assert (
        "no validation split, so train.keep_best keeps no best weights" in capsys.readouterr().err
    )
    # Held out of train, or turned off: nothing to say.
    train_tiny(tmp_path / "held", "train.epochs=1", VALID)
    train_tiny(tmp_path / "off", "train.epochs=1", "train.keep_best=false")
    assert capsys.readouterr().err == ""

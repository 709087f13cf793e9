"""Trackers: TensorBoard event files and an MLflow store beside metrics.jsonl, read back.

Each tracker is an optional extra; its tests are skipped where it is not installed, and a
run that asks for a missing one is refused with the install command.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_config

from vaekit.config import ConfigError
from vaekit.trackers import MLflowTracker, TensorBoardTracker, Tracker, safely
from vaekit.train import fit


def _fit(run: Path, *overrides: str, **kw: Any) -> list[dict[str, Any]]:
    return fit(tiny_config(*overrides), run, progress=False, log=io.StringIO(), **kw)


def test_tensorboard_events_hold_every_term_by_epoch(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    rows = _fit(run, "train.trackers=[tensorboard]", "train.epochs=2")
    fit(None, run, resume=True, epochs=3, progress=False, log=io.StringIO())
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "test/elbo", "lr"} <= set(tags["scalars"])
    elbo = [(e.step, e.value) for e in events.Scalars("test/elbo")]
    assert [s for s, _ in elbo] == [1, 2, 3]
    assert elbo[0][1] == pytest.approx(rows[0]["test"]["elbo"], rel=1e-6)
    assert "training_curves" in tags["images"] and "samples" in tags["images"]


def test_mlflow_store_holds_params_metrics_and_figures(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    run = tmp_path / "run"
    rows = _fit(run, "train.trackers=[mlflow]", "train.epochs=2")
    fit(None, run, resume=True, epochs=3, progress=False, log=io.StringIO())
    client = mlflow.tracking.MlflowClient(tracking_uri=MLflowTracker.local_uri(run))
    run_id = (run / "mlflow_run_id").read_text().strip()
    history = client.get_metric_history(run_id, "test/elbo")
    # The resumed vaekit run continues the same MLflow run.
    assert [m.step for m in history] == [1, 2, 3]
    assert history[0].value == pytest.approx(rows[0]["test"]["elbo"], rel=1e-6)
    info = client.get_run(run_id)
    assert info.data.params["model.prior.name"] == "normal"
    artifacts = [a.path for a in client.list_artifacts(run_id, "figures")]
    assert any("training_curves" in p for p in artifacts)


def test_a_missing_tracker_is_refused_with_its_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TensorBoardTracker, "available", classmethod(lambda cls: False))
    with pytest.raises(ConfigError, match=r'pip install "vaekit\[tensorboard\]"'):
        _fit(tmp_path / "run", "train.trackers=[tensorboard]")


class _Broken(Tracker):
    name = "broken"

    def log_epoch(self, row: dict[str, Any]) -> None:
        raise OSError("disk full")


def test_a_failing_tracker_is_dropped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = safely([_Broken(tmp_path, {}, False)], "log_epoch", {"epoch": 1})
    assert kept == [] and "tracker broken failed (OSError: disk full)" in capsys.readouterr().err


def test_the_trainer_says_where_each_tracker_writes_and_how_to_view_it(tmp_path: Path) -> None:
    # Current MLflow reads a file store (RUN/mlruns) only with MLFLOW_ALLOW_FILE_STORE=true:
    # the trainer must say so, or the user's `mlflow ui` shows nothing.
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    log = io.StringIO()
    run = tmp_path / "run"
    fit(
        tiny_config("train.trackers=[tensorboard, mlflow]", "train.epochs=1"),
        run,
        progress=False,
        log=log,
    )
    text = log.getvalue()
    assert f"tensorboard --logdir {run}" in text
    uri = MLflowTracker.local_uri(run)
    assert f"mlflow ui --backend-store-uri {uri}" in text
    if uri.startswith("file:"):
        assert "MLFLOW_ALLOW_FILE_STORE=true mlflow ui" in text

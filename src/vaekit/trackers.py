"""Experiment trackers: every epoch's metrics, beside ``metrics.jsonl``, to TensorBoard or MLflow.

``train.trackers: [tensorboard, mlflow]`` turns them on. Each is an optional extra
(``pip install "vaekit[tensorboard]"`` / ``"vaekit[mlflow]"``); a run that asks for one
that is not installed stops before training with the install command.

- ``tensorboard``: event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN``),
  written with ``torch.utils.tensorboard``: one scalar per term and split
  (``valid/elbo``), the learning rate, and figures as images.
- ``mlflow``: a run in a local store unless ``MLFLOW_TRACKING_URI`` names another:
  ``sqlite:///RUN/mlflow.db`` where SQLAlchemy is installed (the full ``mlflow`` package),
  else the file store ``RUN/mlruns`` (``mlflow-skinny``; MLflow keeps that store in
  maintenance mode, so vaekit sets ``MLFLOW_ALLOW_FILE_STORE`` for it; reading it back,
  ``mlflow ui`` and ``MlflowClient`` need ``MLFLOW_ALLOW_FILE_STORE=true`` too). The config's
  settings become parameters, the same metrics are logged by epoch, figures as artifacts;
  a resumed run continues the same MLflow run.

Only rank 0 of a distributed run tracks. A tracker that fails while training prints a
warning and is switched off: it never stops a run.

Example:
    >>> sorted(TRACKERS)
    ['mlflow', 'tensorboard']
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from vaekit.errors import ConfigError

__all__ = ["TRACKERS", "Tracker", "TensorBoardTracker", "MLflowTracker", "open_trackers"]


def _flat(row: dict[str, Any]) -> dict[str, float]:
    """``{"valid": {"elbo": -90.1}, "lr": 0.001}`` -> ``{"valid/elbo": -90.1, "lr": 0.001}``."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in ("epoch", "step"):
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{key}/{sub}"] = float(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


class Tracker:
    """Receives a run's config once, then one metrics row per epoch, then figures."""

    name = "tracker"
    # The pip package that provides it, for the message when it is missing.
    package = ""
    module = ""

    def __init__(self, run_dir: Path, config: dict[str, Any], resume: bool) -> None:
        self.run_dir = Path(run_dir)

    def log_epoch(self, row: dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def log_figure(self, name: str, figure: Any, epoch: int) -> None:
        """A matplotlib Figure (trackers without images ignore it)."""

    def close(self) -> None:
        """Flush and release files."""

    def viewing(self) -> str:
        """Where it writes and the command that shows it, as the trainer prints it."""
        return ""

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None


class TensorBoardTracker(Tracker):
    """Event files in ``RUN/tensorboard`` through ``torch.utils.tensorboard``."""

    name = "tensorboard"
    package = "tensorboard"
    module = "tensorboard"

    def __init__(self, run_dir: Path, config: dict[str, Any], resume: bool) -> None:
        super().__init__(run_dir, config, resume)
        from torch.utils.tensorboard import SummaryWriter  # an optional extra (vaekit[tensorboard])

        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if not resume:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log_epoch(self, row: dict[str, Any]) -> None:
        epoch = int(row["epoch"])
        for key, value in _flat(row).items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def viewing(self) -> str:
        return f"{self.run_dir / 'tensorboard'}; view with `tensorboard --logdir {self.run_dir}`"

    def log_figure(self, name: str, figure: Any, epoch: int) -> None:
        self.writer.add_figure(name, figure, epoch, close=False)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowTracker(Tracker):
    """An MLflow run in a local store (``RUN/mlruns``), resumed with the vaekit run."""

    name = "mlflow"
    package = "mlflow"
    module = "mlflow"

    def __init__(self, run_dir: Path, config: dict[str, Any], resume: bool) -> None:
        super().__init__(run_dir, config, resume)
        import mlflow  # an optional extra (vaekit[mlflow])

        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.local_uri(self.run_dir)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = uri
        self.client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        id_file = self.run_dir / "mlflow_run_id"
        run_id = id_file.read_text().strip() if (resume and id_file.is_file()) else ""
        if not run_id:
            name = "vaekit"
            experiment = self.client.get_experiment_by_name(name)
            exp_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment(name)
            )
            run = self.client.create_run(exp_id, run_name=self.run_dir.name)
            run_id = run.info.run_id
            id_file.write_text(run_id + "\n")
            for key, value in _params(config).items():
                self.client.log_param(run_id, key, value)
        self.run_id = run_id

    @staticmethod
    def local_uri(run_dir: Path) -> str:
        """The run's own store: SQLite where SQLAlchemy is installed, else files."""
        if importlib.util.find_spec("sqlalchemy") is not None:
            return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        return (run_dir / "mlruns").resolve().as_uri()

    def viewing(self) -> str:
        if not self.uri.startswith("file:"):
            return f"{self.uri}; view with `mlflow ui --backend-store-uri {self.uri}`"
        # Current MLflow reads a file store only when told to (vaekit sets it for itself).
        return (
            f"{self.uri}; view with `MLFLOW_ALLOW_FILE_STORE=true mlflow ui "
            f"--backend-store-uri {self.uri}` (MLflow reads a file store only with "
            "MLFLOW_ALLOW_FILE_STORE=true, in Python too)"
        )

    def log_epoch(self, row: dict[str, Any]) -> None:
        epoch = int(row["epoch"])
        for key, value in _flat(row).items():
            # MLflow metric names allow "/"; NaN and inf are stored as they are.
            self.client.log_metric(self.run_id, key, value, step=epoch)

    def log_figure(self, name: str, figure: Any, epoch: int) -> None:
        self.client.log_figure(self.run_id, figure, f"figures/{name}-epoch{epoch:04d}.png")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat ``{"model.prior.name": "vamp"}`` (MLflow params are strings)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _params(value, full + ".")
        else:
            out[full] = json.dumps(value) if not isinstance(value, str) else value
    return out


TRACKERS: dict[str, type[Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "mlflow": MLflowTracker,
}


def open_trackers(
    names: list[str], run_dir: Path, config: dict[str, Any], resume: bool
) -> list[Tracker]:
    """The trackers a run asks for; a missing package is a ConfigError with its install line."""
    out = []
    for name in names:
        cls = TRACKERS[name]
        if not cls.available():
            raise ConfigError(
                f"train.trackers asks for {name}, but the package {cls.package!r} is not "
                f'installed: pip install "vaekit[{name}]" (or drop {name} from train.trackers)'
            )
        out.append(cls(run_dir, config, resume))
    return out


def safely(trackers: list[Tracker], method: str, *args: Any) -> list[Tracker]:
    """Call ``method`` on every tracker; one that raises is warned about and dropped."""
    kept = []
    for tracker in trackers:
        try:
            getattr(tracker, method)(*args)
        except Exception as e:  # noqa: BLE001 - a tracker must never stop training
            print(
                f"warning: tracker {tracker.name} failed ({type(e).__name__}: {e}); "
                "it is switched off for the rest of this run",
                file=sys.stderr,
            )
            continue
        kept.append(tracker)
    return kept

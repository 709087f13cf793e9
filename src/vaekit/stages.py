"""A second stage in the same run directory: a prior fitted to a trained run's frozen codes.

VQ-VAE trains its autoencoder first (with a uniform prior over the codes, whose bound is
then log p(x|z_q) - P log K) and an autoregressive prior over its codes afterwards.
``vaekit train --resume RUN --stage prior --epochs N`` runs that second stage into
``RUN/prior``, a run directory of its own (config.json, weights, metrics, checkpoints,
resumed the same way): RUN's model with a learned prior (``model.prior``; by default a
``pixelcnn`` over a discrete posterior's codes), started from RUN's weights
(``train.init``) and trained with ``objective.name=prior-fit``, which leaves the encoder,
codebook and decoder as they are. From then on ``vaekit.load(RUN)`` loads ``RUN/prior``,
so ``vaekit sample RUN`` draws from the learned prior and ``vaekit evaluate RUN`` reports
the bound with it (written to ``RUN/prior/eval.json``); ``load(RUN, stage="model")`` is
the first stage.

Example:
    >>> train_prior("runs/vq", epochs=20)                  # doctest: +SKIP
    >>> vaekit.load("runs/vq").stage                       # doctest: +SKIP
    'prior'
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaekit.config import (
    ConfigError,
    apply_overrides,
    composition,
    config_from_dict,
    config_to_dict,
)
from vaekit.rundir import (
    PRIOR_STAGE,
    STAGE_FILE,
    STAGES,
    has_prior_stage,
    prior_note,
    prior_stage_dir,
    read_run_config,
    read_weights_epoch,
    run_lock,
    stage_note,
    weights_path,
)
from vaekit.storage import write_json
from vaekit.train import fit

__all__ = [
    "PRIOR_STAGE",
    "STAGES",
    "prior_stage_dir",
    "has_prior_stage",
    "prior_stage_config",
    "train_prior",
    "stage_note",
    "prior_note",
]

# The prior a second stage fits to a discrete posterior's codes when none is named.
DEFAULT_CODE_PRIOR = "pixelcnn"
# What a second stage may set: its prior, its objective's options and its training.
STAGE_SETTINGS = ("model.prior", "objective.", "train.")


def prior_stage_config(
    run_dir: str | os.PathLike[str], overrides: Sequence[str] = (), epochs: int | None = None
) -> Any:
    """The config of RUN's second stage: RUN's, with a learned prior, the ``prior-fit``
    objective, ``train.init`` at RUN and ``epochs`` (default RUN's) epochs.

    ``overrides`` (``key=value``) may set the prior (``model.prior=mog``,
    ``model.prior.layers=12``), the objective's options and ``train.*``; nothing else
    of RUN's model or data changes.
    """
    run_dir = Path(run_dir)
    parent = read_run_config(run_dir)
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not key.startswith(STAGE_SETTINGS):
            raise ConfigError(
                f"--set {key}: the prior stage keeps {run_dir}'s data and model; it sets only "
                "model.prior (and its options), objective.* and train.*"
            )
    data = config_to_dict(parent)
    data["objective"] = {"name": "prior-fit"}
    data["train"]["init"] = str(run_dir.resolve())
    data["train"]["epochs"] = epochs if epochs is not None else parent.train.epochs
    if not any(item.startswith(("model.prior=", "model.prior.name=")) for item in overrides):
        if not composition(parent.model).posterior.discrete:
            raise ConfigError(
                f"{run_dir} has continuous latents: name the prior to fit to them, e.g. "
                "--set model.prior=mog (or vamp)"
            )
        data["model"]["prior"] = {"name": DEFAULT_CODE_PRIOR}
    data = apply_overrides(data, list(overrides))
    return config_from_dict(data)


def train_prior(
    run_dir: str | os.PathLike[str],
    *,
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    data_dir: str | None = None,
    progress: bool | None = None,
    log: Any = None,
    patience: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    allow_changed_data: bool = False,
) -> list[dict[str, Any]]:
    """Train RUN's second stage (a learned prior on its frozen codes) into ``RUN/prior``,
    or continue it; returns its metrics. ``overrides`` apply when the stage starts."""
    run_dir = Path(run_dir)
    stage = prior_stage_dir(run_dir)
    common: dict[str, Any] = {
        "data_dir": data_dir,
        "progress": progress,
        "log": log,
        "patience": patience,
        "threads": threads,
        "device": device,
        "allow_changed_data": allow_changed_data,
    }
    if (stage / "config.json").is_file():
        if overrides:
            raise ConfigError(
                f"{stage} has started: --set applies when a stage starts; continue it with "
                f"--epochs N (or remove {stage} to start the stage again with other settings)"
            )
        return fit(None, stage, resume=True, epochs=epochs, **common)
    # Its weights must be whole and stay put while they are read: no trainer may hold RUN.
    with run_lock(run_dir, "vaekit train --stage prior", create=False):
        source = weights_path(run_dir, "last")
    cfg = prior_stage_config(run_dir, overrides, epochs)
    stage.mkdir(parents=True, exist_ok=True)
    write_json(
        stage / STAGE_FILE,
        {
            "stage": PRIOR_STAGE,
            "parent": "..",
            "parent_weights": source.name,
            "parent_epoch": read_weights_epoch(source),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    return fit(cfg, stage, _within_run=True, **common)  # RUN/prior is RUN's own folder

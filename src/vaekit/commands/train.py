"""``vaekit train``: train a model from a config and flags, resume a run, or fit a prior
stage to a run's codes (:func:`vaekit.train.fit`, :func:`vaekit.stages.train_prior`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# Called as vaekit.train.fit and vaekit.stages.train_prior (module attributes), so that a
# test may stand in for them.
import vaekit.stages
import vaekit.train
from vaekit.commands.args import (
    CommandError,
    add_common,
    add_out,
    add_progress,
    add_run_data,
    add_seed,
    add_threads,
)
from vaekit.config import load_config
from vaekit.data import NAMED
from vaekit.rundir import RunError, check_not_run_file, no_run_dir

DESCRIPTION = "Train a model from a config file and/or flags."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit train`."""
    p.add_argument(
        "--config",
        "-c",
        default=None,
        metavar="FILE_OR_NAME",
        help="a YAML, TOML or JSON config file, or the name of a bundled config (demo, "
        "003_vae, bmnist_iwae_k5, ...; an unknown name lists them) (default: the built-in "
        "defaults)",
    )
    p.add_argument(
        "--resume", default=None, metavar="RUN", help="continue the run in this directory"
    )
    p.add_argument(
        "--stage",
        default="model",
        choices=["model", "prior"],
        help="with --resume: model trains the run itself (default); prior fits a learned prior "
        "to its frozen codes in RUN/prior (model.prior: pixelcnn for discrete codes, or "
        "--set model.prior=NAME), so that `vaekit sample RUN` draws from it",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help=f"a named dataset ({', '.join(NAMED)}), a file or folder, or module:function",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        metavar="N",
        help="epochs to train (train.epochs; default: the config's); with --resume, the new total",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        metavar="N",
        help="early stopping: end after N epochs without a better validation score "
        "(train.patience; 0 = off)",
    )
    add_threads(
        p,
        "torch threads (train.threads; 0 = torch's default); may change on --resume",
        type=int,
        metavar="N",
    )
    add_out(p, "run directory to write", "runs/<config name>", short=True)
    add_seed(p, "random seed (train.seed; default: the config's)", type=int, default=None)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set model.latent_dim=2 (repeatable); a part and its "
        "options in any order: --set objective=iwae --set objective.samples=5",
    )
    add_progress(p)
    add_run_data(p, moved=False)
    add_common(p, "train.device of the config or run; auto: cuda when there is one")


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit train` as parsed into ``a``; the exit status."""
    if a.resume and a.resume.startswith("zoo:"):
        name = a.resume[len("zoo:") :]
        raise CommandError(
            f"{a.resume} is a model of the zoo, which is read-only and ships no checkpoints: "
            f"train it again from its config, `vaekit train --config zoo/{name}/config.json "
            f"--out runs/{name}` (its train_command in zoo/manifest.json)"
        )
    if a.stage == "prior":
        return _train_prior_stage(a)
    if a.resume:
        if a.out is not None:
            raise CommandError(
                f"--resume continues {a.resume} in place; drop --out (to start a new run "
                f"from its settings: vaekit train --config {Path(a.resume) / 'config.json'} --out DIR)"
            )
        if a.config or a.overrides or a.dataset or a.seed is not None:
            raise CommandError(
                "--resume continues a run with its own config; only --epochs, "
                "--patience, --threads and --device may change"
            )
        try:
            vaekit.train.fit(None, a.resume, resume=True, **_resume_settings(a))
        except RunError:
            if not Path(a.resume).is_dir():  # fit() says how to make one in Python
                raise no_run_dir(a.resume) from None
            raise
        return 0
    overrides = list(a.overrides)
    if a.dataset:
        overrides.append(f"data.name={a.dataset}")
    if a.epochs is not None:
        overrides.append(f"train.epochs={a.epochs}")
    if a.patience is not None:
        overrides.append(f"train.patience={a.patience}")
    if a.threads is not None:
        overrides.append(f"train.threads={a.threads}")
    if a.seed is not None:
        overrides.append(f"train.seed={a.seed}")
    if a.device:
        overrides.append(f"train.device={a.device}")
    cfg = load_config(a.config, overrides)
    if a.out:
        check_not_run_file(a.out, "--out", example=None)
    out = Path(a.out) if a.out else default_out(a.config)
    vaekit.train.fit(cfg, out, data_dir=a.data_dir, progress=a.progress)
    return 0


def default_out(config: str | None) -> Path:
    """``runs/<config name>``, or ``runs/<config name>-2``, ... when that holds files."""
    stem = Path(config).stem if config else "default"
    base = Path("runs") / stem
    out, i = base, 1
    while out.exists() and any(out.iterdir()):
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def _train_prior_stage(a: argparse.Namespace) -> int:
    """``train --resume RUN --stage prior``: fit a prior to RUN's codes in RUN/prior."""
    if not a.resume:
        raise CommandError(
            "--stage prior fits a prior to a trained run's codes: "
            "vaekit train --resume RUN --stage prior --epochs N"
        )
    if a.out is not None or a.config or a.dataset or a.seed is not None:
        raise CommandError(
            f"--stage prior trains into {Path(a.resume) / 'prior'} with {a.resume}'s data and "
            "model; drop --out, --config, --dataset and --seed (--set may choose the prior "
            "and train.* settings)"
        )
    vaekit.stages.train_prior(a.resume, overrides=a.overrides, **_resume_settings(a))
    return 0


def _resume_settings(a: argparse.Namespace) -> dict[str, Any]:
    """What ``train --resume`` may change, as keywords of :func:`vaekit.train.fit`."""
    return {
        "epochs": a.epochs,
        "patience": a.patience,
        "threads": a.threads,
        "device": a.device,
        "data_dir": a.data_dir,
        "progress": a.progress,
        "allow_changed_data": a.allow_changed_data,
    }

"""Checkpoints: written crash-safe, read back verified, enough state for an exact resume.

A checkpoint is a folder in ``RUN/checkpoints/``: ``epoch-NNNN`` holds the state after
NNNN epochs, ``epoch-NNNN-batch-BBBBBB`` the state BBBBBB batches into the next epoch
(written when SIGINT/SIGTERM stops training mid-epoch)::

    model.safetensors       the model's weights
    ema.safetensors         their moving average, with train.ema (RUN/model.safetensors
                            and RUN/best.safetensors hold the average then)
    objective.safetensors   the objective's own parameters, when it has any
    trainer_state.pt        counters, optimiser states, every rank's RNG states and the
                            partial sums of an interrupted epoch: tensors and plain
                            containers only, read with ``torch.load(weights_only=True)``
    manifest.json           size and sha256 of each file above, written last

It is written into a hidden temporary folder (each file itself temp + fsync + rename),
which is renamed into place once complete; only then is the oldest checkpoint beyond
:data:`KEEP_CHECKPOINTS` deleted. A crash therefore leaves the previous checkpoint
intact. Reading verifies the manifest and falls back, with a warning, to the previous
checkpoint when the newest is truncated, corrupt or not loadable; nothing in a
checkpoint is ever unpickled as an arbitrary object.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vaekit.rundir import BEST_WEIGHTS, checkpoint_dirs
from vaekit.storage import (
    RunError,
    atomic_write,
    file_sha256,
    fsync_dir,
    load_weights,
    save_weights,
    write_bytes,
    write_json,
)
from vaekit.train.faults import FaultInjector

__all__ = [
    "KEEP_CHECKPOINTS",
    "FORMAT",
    "TrainState",
    "EpochProgress",
    "checkpoint_name",
    "capture_rng",
    "restore_rng",
    "write_checkpoint",
    "read_checkpoint",
    "remove_partial_writes",
]

KEEP_CHECKPOINTS = 2
FORMAT = 2
_FILES = ("model.safetensors", "ema.safetensors", "objective.safetensors", "trainer_state.pt")


@dataclass
class TrainState:
    """Counters shared by all ranks."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of epoch + 1 completed (non-zero only for an interrupted epoch)
    step: int = 0  # optimiser steps taken (skipped non-finite steps are not counted)
    lr_scale: float = 1.0  # halved by each rollback after non-finite weights
    bad_steps_total: int = 0
    best_score: float | None = None  # best validation ELBO so far (train.keep_best)
    best_epoch: int = 0


@dataclass
class EpochProgress:
    """Running totals of the current epoch on one rank (device tensors, no host sync)."""

    sums: dict[str, Tensor] = field(default_factory=dict)
    count: int = 0
    bad_steps: int = 0
    rollbacks: int = 0
    # Finite steps dropped for a gradient norm above train.skip_threshold.
    skipped: int = 0

    def to_saved(self) -> dict[str, Any]:
        return {
            "sums": {k: v.detach().to("cpu") for k, v in self.sums.items()},
            "count": self.count,
            "bad_steps": self.bad_steps,
            "rollbacks": self.rollbacks,
            "skipped": self.skipped,
        }

    @classmethod
    def from_saved(cls, d: dict[str, Any], device: torch.device) -> EpochProgress:
        return cls(
            {str(k): v.to(device) for k, v in d["sums"].items()},
            int(d["count"]),
            int(d["bad_steps"]),
            int(d["rollbacks"]),
            int(d.get("skipped", 0)),  # absent from checkpoints written before the option
        )


def checkpoint_name(epoch: int, batch: int = 0) -> str:
    """``epoch-0003``, or ``epoch-0003-batch-000017`` for 17 batches into epoch 4."""
    return f"epoch-{epoch:04d}" if batch == 0 else f"epoch-{epoch:04d}-batch-{batch:06d}"


# ---------------------------------------------------------------------------------------
# RNG streams as tensors and numbers (so weights_only loading can read them)


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's RNG states: torch CPU, the CUDA device in use, numpy and Python."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pystate, pygauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos),
        "numpy_gauss": [int(has_gauss), float(gauss)],
        "python": torch.tensor(pystate, dtype=torch.int64),
        "python_version": int(version),
        "python_gauss": pygauss,
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng(rng: dict[str, Any], device: torch.device) -> None:
    """Set the RNG states captured by :func:`capture_rng`."""
    torch.set_rng_state(rng["torch"])
    if "numpy_keys" in rng:
        has_gauss, gauss = rng["numpy_gauss"]
        keys = rng["numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, int(rng["numpy_pos"]), int(has_gauss), float(gauss)))
    if "python" in rng:
        state = tuple(int(v) for v in rng["python"].tolist())
        random.setstate((int(rng["python_version"]), state, rng["python_gauss"]))
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)


# ---------------------------------------------------------------------------------------
# writing


def write_checkpoint(
    run_dir: Path,
    model: nn.Module,
    objective: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    state: TrainState,
    ranks: list[dict[str, Any]],
    faults: FaultInjector | None = None,
    *,
    ema: nn.Module | None = None,
) -> Path:
    """Write one checkpoint crash-safely, update ``RUN/model.safetensors``, prune old ones.

    ``ranks`` holds each rank's RNG states and epoch progress (rank 0 calls this after
    gathering them). ``ema``: the weights' moving average (train.ema), kept beside the
    weights and written as ``RUN/model.safetensors`` in their place. Returns the
    checkpoint folder.
    """
    root = run_dir / "checkpoints"
    name = checkpoint_name(state.epoch, state.batch)
    final, tmp = root / name, root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    meta = {"epoch": str(state.epoch), "batch": str(state.batch), "step": str(state.step)}
    weights = save_weights(tmp / "model.safetensors", model, meta)
    if ema is not None:
        save_weights(tmp / "ema.safetensors", ema, meta)
    if any(True for _ in objective.state_dict()):
        save_weights(tmp / "objective.safetensors", objective, meta)
    trainer_state = {
        "format": FORMAT,
        "epoch": state.epoch,
        "batch": state.batch,
        "step": state.step,
        "lr_scale": state.lr_scale,
        "bad_steps_total": state.bad_steps_total,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "world_size": len(ranks),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "ranks": ranks,
    }
    buf = io.BytesIO()
    torch.save(trainer_state, buf)
    data = buf.getvalue()
    with atomic_write(tmp / "trainer_state.pt") as f:
        f.write(data[: len(data) // 2])
        if faults:
            f.flush()
            faults.hit("checkpoint-file")
        f.write(data[len(data) // 2 :])
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(tmp.iterdir())
        if p.name in _FILES
    }
    write_json(tmp / "manifest.json", {"format": FORMAT, "files": files})
    if faults:
        faults.hit("checkpoint-dir")
    if final.exists():
        # Only when redoing an epoch after falling back past a corrupt checkpoint.
        old = root / f".old-{name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(root)
    if faults:
        faults.hit("checkpoint-done")
    # The user-facing weights: the newest checkpoint's (their average with train.ema),
    # written atomically as well.
    if ema is None:  # the same bytes as the checkpoint's weights, not serialised again
        write_bytes(run_dir / "model.safetensors", weights)
    else:
        save_weights(run_dir / "model.safetensors", ema, meta)
    for stale in checkpoint_dirs(run_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


# The files in RUN that only the trainer writes; other commands' files (eval*.json,
# report.html, ...) may be mid-write by a command running beside the trainer.
TRAINER_FILES = ("config.json", "model.json", "model.safetensors", BEST_WEIGHTS, "metrics.jsonl")


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete what a crash of the trainer mid-write leaves: ``.tmp-*``/``.old-*`` checkpoint
    folders and the ``.*.tmp`` files of the trainer's own files (never another command's)."""
    removed = []
    root = run_dir / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".old-")) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    ours = tuple(f".{name}." for name in TRAINER_FILES)
    for folder in [run_dir, *checkpoint_dirs(run_dir)]:
        for p in folder.glob(".*.tmp"):
            if folder != run_dir or p.name.startswith(ours):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------
# reading


def _verify(ckpt: Path) -> None:
    manifest = ckpt / "manifest.json"
    if not manifest.is_file():
        # Checkpoints of format 1 have no manifest; the readers below still check each file.
        return
    try:
        files = json.loads(manifest.read_text())["files"]
        expected = {str(k): (int(v["bytes"]), str(v["sha256"])) for k, v in files.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise RunError(f"{manifest}: unreadable manifest ({type(e).__name__}: {e})") from None
    for fname, (size, digest) in expected.items():
        p = ckpt / fname
        if not p.is_file():
            raise RunError(f"{p} is missing")
        if p.stat().st_size != size:
            raise RunError(
                f"{p} is truncated or overwritten ({p.stat().st_size} bytes, expected {size})"
            )
        if file_sha256(p) != digest:
            raise RunError(f"{p} is corrupt (its sha256 does not match the manifest)")


def _load_trainer_state(path: Path) -> dict[str, Any]:
    try:
        # weights_only: tensors and plain containers only, never arbitrary objects.
        ts = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RunError(
            f"{path}: cannot read trainer state ({type(e).__name__}: {first[:300]})"
        ) from None
    if not isinstance(ts, dict):
        raise RunError(f"{path}: trainer state is a {type(ts).__name__}, not a mapping")
    if "ranks" not in ts:
        # Format 1 (before per-rank states): one RNG state of rank 0, epoch boundaries only.
        ts = dict(ts)
        ts["ranks"] = [
            {
                "rng": {
                    "torch": ts["rng_cpu"],
                    **({"cuda": ts["rng_cuda"][0]} if ts.get("rng_cuda") else {}),
                },
                **EpochProgress().to_saved(),
            }
        ]
        ts["batch"], ts["world_size"] = 0, 1
    return ts


def read_checkpoint(
    run_dir: Path,
    model: nn.Module,
    objective: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    *,
    ema: nn.Module | None = None,
    rank: int,
    world_size: int,
    device: torch.device,
    warn: bool = True,
) -> tuple[TrainState, dict[str, Any] | None, Path] | None:
    """Load the newest usable checkpoint into the model, objective and optimisers (and
    ``ema``, the weights' moving average: the checkpoint's, else the weights themselves).

    Returns ``(state, rank_state, folder)``, where ``rank_state`` holds this rank's RNG
    states and epoch progress (None when the checkpoint was written by fewer ranks), or
    None when the run has no checkpoint yet. A checkpoint that fails verification or
    loading is skipped with a warning; when none is usable, a RunError lists why.
    """
    ckpts = checkpoint_dirs(run_dir)
    if not ckpts:
        return None
    errors: list[str] = []
    for ckpt in reversed(ckpts):
        try:
            _verify(ckpt)
            ts = _load_trainer_state(ckpt / "trainer_state.pt")
            state = TrainState(
                int(ts["epoch"]),
                int(ts["batch"]),
                int(ts["step"]),
                float(ts["lr_scale"]),
                int(ts["bad_steps_total"]),
                # Absent from checkpoints written before train.keep_best existed.
                None if ts.get("best_score") is None else float(ts["best_score"]),
                int(ts.get("best_epoch", 0)),
            )
            saved_world = int(ts["world_size"])
            if state.batch and saved_world != world_size:
                # Shards depend on the number of processes: a half-done epoch cannot continue.
                raise RunError(
                    f"{ckpt} was written mid-epoch by {saved_world} process(es) and cannot continue "
                    f"with {world_size}; resume with {saved_world} to use it"
                )
            load_weights(ckpt / "model.safetensors", model)
            if ema is not None:
                saved_ema = ckpt / "ema.safetensors"
                # A checkpoint without one (written before train.ema was set): the average
                # starts again from the weights.
                load_weights(saved_ema if saved_ema.is_file() else ckpt / "model.safetensors", ema)
            if (ckpt / "objective.safetensors").is_file():
                load_weights(ckpt / "objective.safetensors", objective)
            for k, o in optimizers.items():
                o.load_state_dict(ts["optimizers"][k])
            ranks = ts["ranks"]
            mine = ranks[rank] if saved_world == world_size and rank < len(ranks) else None
            if mine is not None:
                restore_rng(mine["rng"], device)
        except (RunError, KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            msg = (
                str(e)
                if isinstance(e, RunError)
                else f"{ckpt}: malformed checkpoint ({type(e).__name__}: {e})"
            )
            errors.append(msg)
            if warn:
                print(f"warning: {msg}; trying an earlier checkpoint", file=sys.stderr)
            continue
        if errors and warn:
            print(f"warning: resumed from the earlier checkpoint {ckpt.name}", file=sys.stderr)
        return state, mine, ckpt
    raise RunError(
        f"{run_dir}: no usable checkpoint ({'; '.join(errors)}). Delete the run and train it again, "
        "or copy a good checkpoint folder into checkpoints/"
    )

"""Fault injection: `python -m vaekit train` killed with SIGKILL again and again, then resumed.

One run is killed mid-step, mid-checkpoint-write (trainer state half written; folder
complete but not renamed; renamed but the run's weights not updated), between epochs
(metrics line written, no checkpoint), at a random moment, and stopped by SIGTERM
mid-epoch; after each it is resumed with `--resume`. It must end with weights,
optimiser state and metrics bit-identical to an uninterrupted run with the same seed.
The kill points come from the test hook ``VAEKIT_FAULT`` (see vaekit.train.faults);
their counts are drawn at random from a seed printed on failure.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_resume import assert_same_run, digits_npz, quiet_fit, tiny_yaml

from vaekit.config import load_config
from vaekit.rundir import checkpoint_dirs, read_metrics

SEED = int(os.environ.get("VAEKIT_FAULT_SEED", "20240601"))


def _train(
    args: list[str], fault: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("VAEKIT_FAULT", None)
    if fault:
        env["VAEKIT_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "vaekit", "train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _kill_at_random_time(args: list[str], rng: random.Random) -> int:
    """Start training, wait until it is past start-up, SIGKILL it after a random delay."""
    env = {k: v for k, v in os.environ.items() if k != "VAEKIT_FAULT"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaekit", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("vaekit:"):  # the banner: data and model are loaded
            break
    time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return proc.returncode


def _names(run: Path) -> list[str]:
    return [p.name for p in checkpoint_dirs(run)]


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_is_bit_identical(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    # 4 epochs of 8 steps, on digits saved as .npz (so each process starts without sklearn).
    cfg_file = tiny_yaml(tmp_path / "tiny.yaml", str(digits_npz(tmp_path / "digits.npz")))
    quiet_fit(load_config(cfg_file), tmp_path / "straight")
    run = tmp_path / "run"
    resume = ["--resume", str(run)]
    note = f"(VAEKIT_FAULT_SEED={SEED})"
    done: list[str] = []

    # 1. mid-step, somewhere in epochs 1-2: killed after backward, before the update.
    k = rng.randint(2, 15)
    r = _train(["--config", str(cfg_file), "--out", str(run)], f"step@{k}")
    assert r.returncode == -signal.SIGKILL, r.stderr + note
    assert _names(run) == (["epoch-0001"] if k > 8 else []), note
    done.append(f"step@{k}")

    # 2. half-way through writing trainer_state.pt: a temp file in a temp folder remains.
    r = _train(resume, "checkpoint-file@1")
    assert r.returncode == -signal.SIGKILL, r.stderr + note
    tmp_dirs = list((run / "checkpoints").glob(".tmp-epoch-*"))
    assert len(tmp_dirs) == 1 and list(tmp_dirs[0].glob(".trainer_state.pt.*.tmp")), note
    done.append("checkpoint-file@1")

    # 3. checkpoint folder complete (manifest written) but not yet renamed into place.
    last_before = _names(run)
    r = _train(resume, "checkpoint-dir@1")
    assert r.returncode == -signal.SIGKILL, r.stderr + note
    assert _names(run) == last_before and list(
        (run / "checkpoints").glob(".tmp-epoch-*/manifest.json")
    ), note
    done.append("checkpoint-dir@1")

    # 4. between epochs: the metrics line is written, its checkpoint is not.
    r = _train(resume, "epoch@1")
    assert r.returncode == -signal.SIGKILL, r.stderr + note
    newest = int(_names(run)[-1][6:10]) if _names(run) else 0
    assert len(read_metrics(run)) == newest + 1, note
    done.append("epoch@1")

    # 5. SIGTERM mid-epoch: a clean stop with a mid-epoch checkpoint and a resume hint.
    k = rng.randint(1, 7)
    r = _train(resume, f"step@{k}:term")
    assert r.returncode == 130, r.stderr + note
    assert f"vaekit train --resume {run}" in r.stdout and "stopped by SIGTERM" in r.stdout, note
    assert "-batch-" in _names(run)[-1], note
    done.append(f"step@{k}:term")

    # 6. after the rename, before the run's model.safetensors is updated.
    r = _train(resume, "checkpoint-done@1")
    assert r.returncode == -signal.SIGKILL, r.stderr + note
    done.append("checkpoint-done@1")

    # 7. at a random moment.
    code = _kill_at_random_time(resume, rng)
    done.append(f"random time (rc {code})")

    # 8. to the end.
    r = _train(resume)
    assert r.returncode == 0, r.stderr + note
    # The random kill may land after the last checkpoint: then the run is already complete.
    assert "done:" in r.stdout or "already has" in r.stdout, r.stdout + note
    assert not list((run / "checkpoints").glob(".*")), "temporary folders left behind"
    assert_same_run(tmp_path / "straight", run)
    print("kill points resumed bit-identically:", ", ".join(done))

"""One trainer per run directory: RUN/.lock, held with flock while `vaekit train` runs.

A second `train --resume RUN` (or `--out RUN`) used to train beside the first; the two
wrote the same checkpoints and metrics lines (one died in a checkpoint write, epochs
were logged twice). Now the second is refused with the first one's PID, and a lock left
by a killed trainer does not stand in the way of a resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_resume import digits_npz, tiny_yaml

from vaekit.cli import main
from vaekit.rundir import (
    LOCK_FILE,
    RunBusyError,
    RunError,
    checkpoint_dirs,
    read_metrics,
    run_lock,
)


def test_the_lock_names_its_holder_and_goes_with_it(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "run"
    with run_lock(run, "vaekit train") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        # flock locks belong to an open file, so a second open in this process conflicts too.
        busy = rf"vaekit train \(PID {os.getpid()}, since "
        with pytest.raises(RunBusyError, match=busy), run_lock(run):
            pass
        assert path.is_file()  # the refused one leaves the holder's lock alone
    # Still empty: a run that failed to start leaves no folder (nor runs/ made for it).
    assert not path.exists() and not (tmp_path / "runs").exists()
    # A stale lock file (its holder was killed) holds nothing: it is taken over.
    run.mkdir(parents=True)
    (run / LOCK_FILE).write_text('{"pid": 999999999, "command": "vaekit train"}\n')
    with run_lock(run) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert run.is_dir() and not (run / LOCK_FILE).exists()
    with pytest.raises(RunError, match="does not exist"), run_lock(tmp_path / "m", create=False):
        pass


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_a_second_trainer_is_refused_until_the_first_is_killed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 8 steps an epoch and 10^5 epochs: the first trainer is still going when we look.
    data = digits_npz(tmp_path / "digits.npz")
    cfg = tiny_yaml(tmp_path / "tiny.yaml", str(data), epochs=100_000)
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "VAEKIT_FAULT"}
    cmd = [sys.executable, "-m", "vaekit", "train"]
    first = subprocess.Popen(
        [*cmd, "-c", str(cfg), "--out", str(run)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if line.startswith("epoch   2/"):  # epoch 1 is checkpointed
                break
        else:
            pytest.fail(f"the first trainer ended early (exit {first.wait()})")
        # Frozen (still holding the lock), so its files stand still while we compare them.
        first.send_signal(signal.SIGSTOP)
        before = _files(run)

        second = subprocess.run(
            [*cmd, "--resume", str(run)], env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 2, second.stderr
        assert f"PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert _files(run) == before  # no metrics line, checkpoint or lock touched

        # A new run into the same directory: refused the same way, and not told to resume a
        # run that is being trained.
        assert main(["train", "-c", str(cfg), "--out", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"PID {first.pid}" in err and "already holds a run" not in err
        assert _files(run) == before
    finally:
        first.kill()  # SIGKILL: the lock is left behind in RUN/.lock, but no longer held
        first.wait(timeout=60)
    assert (run / LOCK_FILE).is_file()

    done = int(checkpoint_dirs(run)[-1].name.split("-")[1])
    assert main(["train", "--resume", str(run), "--epochs", str(done + 1)]) == 0
    assert [r["epoch"] for r in read_metrics(run)] == list(range(1, done + 2))
    assert not (run / LOCK_FILE).exists()

"""DistributedDataParallel under torchrun: 2 CPU processes (gloo) over loopback.

The ranks must end with identical weights, the test ELBO must match a 1-process run with
the same effective batch (2 x 8 = 16) within Monte Carlo noise, and a run stopped by
SIGTERM mid-epoch must resume under torchrun to exactly the weights of an uninterrupted
2-process run (every rank's RNG state is checkpointed).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_resume import assert_same_run, digits_npz, quiet_fit

import vaekit
from vaekit.config import load_config
from vaekit.rundir import latest_checkpoint, read_metrics
from vaekit.train.distributed import DistInfo, shard
from vaekit.train.faults import weights_digest

# 511 examples: 2 ranks x 255 (one left over each epoch), 32 steps of 8 with a last batch of 7.
CONFIG = """\
data: {name: %s, limit: 511}
model: {latent_dim: 2, encoder: {hidden: [32]}}
train: {epochs: 4, batch_size: 8, threads: 1, eval_batch_size: 512}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(
    args: list[str], env_extra: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VAEKIT_FAULT", "WORLD_SIZE", "RANK", "LOCAL_RANK")
    }
    env |= env_extra
    for _ in range(3):
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}", "-m", "vaekit", "train", *args,
        ]  # fmt: skip
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        # The free port can be taken by another process before torchrun binds it: try another.
        if "address already in use" not in (r.stdout + r.stderr).lower():
            break
    return r


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """One uninterrupted 2-process run: (config file, run dir, digest dir)."""
    base = tmp_path_factory.mktemp("ddp")
    cfg = base / "ddp.yaml"
    cfg.write_text(CONFIG % digits_npz(base / "digits.npz"))
    run, digests = base / "run", base / "digests"
    r = _torchrun(
        ["--config", str(cfg), "--out", str(run)], {"VAEKIT_RANK_DIGEST_DIR": str(digests)}
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "cpu x2 (effective batch 16)" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    # Only rank 0 prints: one line per epoch, not two.
    assert r.stdout.count("epoch   4/4") == 1, r.stdout[-3000:]
    return cfg, run, digests


def test_shards_are_disjoint_equal_and_form_the_one_process_batch() -> None:
    order = torch.randperm(23)
    for world in (1, 2, 3, 5):
        parts = [shard(order, DistInfo(rank=r, world_size=world)) for r in range(world)]
        assert {len(p) for p in parts} == {23 // world}
        used = torch.cat(parts)
        assert len(set(used.tolist())) == len(used)  # disjoint
        b = 2
        for i in range(len(parts[0]) // b):
            together = set(torch.cat([p[i * b : (i + 1) * b] for p in parts]).tolist())
            assert together == set(order[i * b * world : (i + 1) * b * world].tolist())


@pytest.mark.slow
def test_ranks_agree_and_match_one_process(
    ddp_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cfg_file, run, digests = ddp_run
    d0, d1 = ((digests / f"rank-{r}.sha256").read_text() for r in (0, 1))
    assert d0 == d1
    assert d0.strip() == weights_digest(vaekit.load(run).model)
    state = torch.load(latest_checkpoint(run) / "trainer_state.pt", weights_only=True)  # type: ignore[operator]
    assert state["world_size"] == 2
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])
    # 1 process with the same effective batch: the same examples in every step (see
    # `shard`), so the runs differ only by Monte Carlo noise. Across seeds the test loss
    # of this setup spreads by about 0.4 nats; doubling the learning rate or halving the
    # batch (what a wrong gradient average would do) moves it by 1.5 nats.
    one = quiet_fit(load_config(cfg_file, ["train.batch_size=16"]), tmp_path / "one")
    two = read_metrics(run)
    diff = abs(one[-1]["test"]["loss"] - two[-1]["test"]["loss"])
    print(
        f"test loss 1 process {one[-1]['test']['loss']:.3f}, 2 processes {two[-1]['test']['loss']:.3f}"
    )
    assert diff < 0.75


@pytest.mark.slow
def test_sigterm_then_resume_under_torchrun_is_exact(
    ddp_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cfg_file, straight, _ = ddp_run
    run = tmp_path / "run"
    # Both ranks get SIGTERM at their 5th step; they agree to stop at the next sync (batch 16).
    r = _torchrun(["--config", str(cfg_file), "--out", str(run)], {"VAEKIT_FAULT": "step@5:term"})
    assert r.returncode != 0
    assert "stopped by SIGTERM at epoch 1, batch 16/32" in r.stdout
    assert f"torchrun --nproc_per_node=2 -m vaekit train --resume {run}" in r.stdout
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and ckpt.name == "epoch-0000-batch-000016"
    r = _torchrun(["--resume", str(run)], {})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert_same_run(straight, run)


@pytest.mark.slow
def test_early_stopping_under_torchrun_stops_every_rank_together(
    ddp_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    # Every rank holds the same all-reduced validation score, so all of them reach the
    # patience limit at the same epoch and write the last checkpoint together.
    cfg_file, _, _ = ddp_run
    run, digests = tmp_path / "run", tmp_path / "digests"
    args = ["--config", str(cfg_file), "--out", str(run), "--epochs", "12", "--patience", "2"]
    args += ["--set", "data.valid_fraction=0.25", "--set", "train.lr=0.05"]
    r = _torchrun(args, {"VAEKIT_RANK_DIGEST_DIR": str(digests)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = read_metrics(run)
    gaps = [row["epoch"] - row["best_epoch"] for row in rows]
    assert len(rows) < 12 and gaps[-1] == 2 and max(gaps[:-1]) < 2, gaps
    assert r.stdout.count(f"stopped early after epoch {len(rows)}") == 1
    d0, d1 = ((digests / f"rank-{k}.sha256").read_text() for k in (0, 1))
    assert d0 == d1

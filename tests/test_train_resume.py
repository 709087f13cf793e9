"""Exact resume (issue 2) and checkpoint safety (issue 6), in process.

A run stopped and resumed must end bit-identical to one that never stopped: weights,
optimiser state, RNG states and metrics lines. Checkpoints are written atomically, a
corrupt or truncated one falls back to the previous one, and a checkpoint is never
unpickled as arbitrary objects. The helpers here are shared with the other trainer tests.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from vaekit.config import Config
from vaekit.rundir import RunError, atomic_write, checkpoint_dirs, latest_checkpoint, read_metrics
from vaekit.train import TrainingInterrupted, fit
from vaekit.train.checkpoint import remove_partial_writes

TIMING_KEYS = ("seconds", "train_seconds")


# -- helpers shared with test_train_faults / test_train_nan / test_train_ddp ------------------


def metrics_without_timing(run: Path, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The run's metrics lines without the wall-clock fields (they differ between runs)."""
    skip = (*TIMING_KEYS, *drop)
    return [{k: v for k, v in row.items() if k not in skip} for row in read_metrics(run)]


def _assert_tensors_equal(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str
) -> None:
    assert sorted(a) == sorted(b), f"{what}: different tensor names"
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: tensor {k} differs"


def assert_same_run(a: Path, b: Path, metrics_drop: tuple[str, ...] = ()) -> None:
    """Final weights, newest checkpoint (weights, optimiser and RNG states) and metrics
    identical (but for the ``metrics_drop`` keys)."""
    _assert_tensors_equal(
        load_file(a / "model.safetensors"), load_file(b / "model.safetensors"), "model.safetensors"
    )
    ca, cb = latest_checkpoint(a), latest_checkpoint(b)
    assert ca is not None and cb is not None and ca.name == cb.name
    _assert_tensors_equal(
        load_file(ca / "model.safetensors"), load_file(cb / "model.safetensors"), ca.name
    )
    # The weights' moving average (train.ema), kept beside the weights.
    assert (ca / "ema.safetensors").is_file() == (cb / "ema.safetensors").is_file()
    if (ca / "ema.safetensors").is_file():
        _assert_tensors_equal(
            load_file(ca / "ema.safetensors"), load_file(cb / "ema.safetensors"), "average"
        )
    sa = torch.load(ca / "trainer_state.pt", weights_only=True)
    sb = torch.load(cb / "trainer_state.pt", weights_only=True)
    for key in ("epoch", "batch", "step", "lr_scale", "bad_steps_total", "world_size"):
        assert sa[key] == sb[key], key
    for key in ("best_score", "best_epoch"):
        assert sa.get(key) == sb.get(key), key
    assert (a / "best.safetensors").is_file() == (b / "best.safetensors").is_file()
    if (a / "best.safetensors").is_file():
        _assert_tensors_equal(
            load_file(a / "best.safetensors"), load_file(b / "best.safetensors"), "best weights"
        )
    for name, oa in sa["optimizers"].items():
        ob = sb["optimizers"][name]
        assert oa["param_groups"] == ob["param_groups"]
        for pid, st in oa["state"].items():
            for k, v in st.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(ob["state"][pid][k])), (
                    f"optimizer {pid} {k}"
                )
    for ra, rb in zip(sa["ranks"], sb["ranks"], strict=True):
        assert torch.equal(ra["rng"]["torch"], rb["rng"]["torch"]), "torch RNG state differs"
        assert torch.equal(ra["rng"]["numpy_keys"], rb["rng"]["numpy_keys"]), (
            "numpy RNG state differs"
        )
    assert metrics_without_timing(a, metrics_drop) == metrics_without_timing(b, metrics_drop)
    assert json.loads((a / "config.json").read_text()) == json.loads(
        (b / "config.json").read_text()
    )


def digits_npz(path: Path) -> Path:
    """The digits dataset as a user .npz (subprocesses then start without importing sklearn)."""
    import numpy as np

    from vaekit.data import load_dataset

    ds = load_dataset("digits")
    np.savez(path, train=ds.train.x.numpy(), test=ds.test.x.numpy())
    return path


def tiny_yaml(path: Path, data: str = "digits", **train: Any) -> Path:
    """A config file for subprocess runs: 256 examples, 8 steps an epoch, one thread."""
    settings = {"epochs": 4, "batch_size": 32, "threads": 1, "eval_batch_size": 512} | train
    path.write_text(
        f"data: {{name: {json.dumps(data)}, limit: 256}}\n"
        "model: {latent_dim: 2, encoder: {hidden: [16]}}\n"
        f"train: {json.dumps(settings)}\n"
    )
    return path


def quiet_fit(cfg: Config | None, run: Path, **kw: Any) -> list[dict[str, Any]]:
    with open(os.devnull, "w") as devnull:
        return fit(cfg, run, progress=False, log=devnull, **kw)


# -- exact resume --------------------------------------------------------------------------

CONFIGS = {
    # A validation split: the best weights (train.keep_best) must resume exactly too.
    "adam-elbo": ["train.batch_size=32", "data.valid_fraction=0.25"],
    "adamw-burda-schedule": ["train.optimizer=adamw", "train.lr_schedule=burda"],
    "dynamic-rmsprop-mc": [
        "data.binarize=dynamic",
        "train.optimizer=rmsprop",
        "objective.samples=3",
        "train.grad_clip=5",
        "train.batch_size=48",  # 256 = 5 x 48 + 16: a short last batch
    ],
    # Parts with state of their own: a discriminator with its own optimiser (AVB), a flow,
    # learned prior components, a KL warm-up schedule, importance weights.
    "avb": ["model.posterior=implicit", "objective.name=avb", "objective.discriminator=[16]"],
    "iaf-mog-warmup": [
        "model.flow=iaf",
        "model.flow.hidden=16",
        "model.prior=mog",
        "objective.warmup_epochs=3",
        "objective.free_bits=0.1",
    ],
    "vamp-iwae": [
        "model.prior=vamp",
        "model.prior.components=5",
        "objective.name=iwae",
        "objective.samples=4",
    ],
    # Networks in bfloat16 (autocast) and the IWAE bound's doubly reparameterised gradient.
    "bf16-iwae-dreg": [
        "train.precision=bf16",
        "objective.name=iwae",
        "objective.samples=3",
        "objective.gradient=dreg",
        "data.valid_fraction=0.25",
    ],
    # The weights' moving average: what the validation split scores and the best and last
    # weights hold, kept in checkpoints beside the weights (a VampPrior: its pseudo-inputs
    # are averaged too, start from training examples and learn at a rate of their own).
    "ema-vamp": [
        "train.ema=0.9",
        "model.prior=vamp",
        "model.prior.components=5",
        "model.prior.init=data",
        "model.prior.lr_scale=0.1",
        "model.prior.clip=true",
        "train.optimizer=adam-normgrad",  # Tomczak & Welling's optimiser
        "data.valid_fraction=0.25",
    ],
    "conditional-ae-sgd": [
        "model.posterior=point",
        "objective.name=ae",
        "model.conditional=true",
        "train.optimizer=sgd",
        "train.lr=0.01",
        "data.valid_fraction=0.25",  # scored by -loss: an autoencoder has no ELBO
    ],
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_stop_after_2_resume_to_4_is_bit_identical(tmp_path: Path, name: str) -> None:
    cfg = tiny_config(*CONFIGS[name], "train.epochs=4")
    quiet_fit(cfg, tmp_path / "straight")
    quiet_fit(tiny_config(*CONFIGS[name], "train.epochs=2"), tmp_path / "resumed")
    assert len(read_metrics(tmp_path / "resumed")) == 2
    quiet_fit(None, tmp_path / "resumed", resume=True, epochs=4)
    # With a validation split the test split is scored on the last epoch of each call
    # (train.score_test=end): the resumed run's epoch 2 has a test score, and nothing else
    # differs, since that scoring draws from its own random stream.
    assert_same_run(tmp_path / "straight", tmp_path / "resumed", metrics_drop=("test",))
    rows = read_metrics(tmp_path / "resumed")
    assert len(rows) == 4 and rows[-1]["test"] == read_metrics(tmp_path / "straight")[-1]["test"]


def test_checkpoint_every_and_extra_lines_after_the_checkpoint(tmp_path: Path) -> None:
    """With checkpoints every 2 epochs, a run that logged epoch 3 and died resumes from 2."""
    quiet_fit(tiny_config("train.epochs=4", "train.checkpoint_every=2"), tmp_path / "straight")
    run = tmp_path / "run"
    quiet_fit(tiny_config("train.epochs=3", "train.checkpoint_every=2"), run)
    # Pretend the process died after logging epoch 3 but before its checkpoint.
    import shutil

    shutil.rmtree(run / "checkpoints" / "epoch-0003")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "torn')  # and a line cut short
    quiet_fit(None, run, resume=True, epochs=4)
    assert_same_run(tmp_path / "straight", run)


@pytest.mark.parametrize("fault", ["step@6:int", "step@5:term", "epoch@1:int"])
def test_signal_stops_cleanly_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    """SIGINT/SIGTERM mid-epoch or between epochs: a checkpoint, a resume hint, identical result."""
    cfg = tiny_config("train.epochs=3")
    quiet_fit(cfg, tmp_path / "straight")
    run = tmp_path / "run"
    monkeypatch.setenv("VAEKIT_FAULT", fault)
    with pytest.raises(TrainingInterrupted) as info:
        fit(tiny_config("train.epochs=3"), run, progress=False)
    monkeypatch.delenv("VAEKIT_FAULT")
    out = capsys.readouterr().out
    assert f"vaekit train --resume {run}" in out and "stopped by SIG" in out
    ckpt = info.value.checkpoint
    assert ckpt is not None and ckpt == latest_checkpoint(run)
    # 4 steps an epoch (256 / 64): the 6th step is batch 2 of epoch 2, the 5th batch 1.
    expected = {
        "step@6:int": "epoch-0001-batch-000002",
        "step@5:term": "epoch-0001-batch-000001",
        "epoch@1:int": "epoch-0001",
    }
    assert ckpt.name == expected[fault]
    quiet_fit(None, run, resume=True)
    assert_same_run(tmp_path / "straight", run)


def test_resume_without_checkpoint_starts_over(tmp_path: Path) -> None:
    quiet_fit(tiny_config(), tmp_path / "straight")
    run = tmp_path / "run"
    quiet_fit(tiny_config(), run)
    import shutil

    shutil.rmtree(run / "checkpoints")
    (run / "metrics.jsonl").write_text("")
    quiet_fit(None, run, resume=True)
    assert_same_run(tmp_path / "straight", run)


def test_resume_of_a_finished_run_says_how_to_continue(tmp_path: Path) -> None:
    run = tmp_path / "run"
    quiet_fit(tiny_config(), run)
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        rows = fit(None, run, resume=True, log=f, progress=False)
    assert len(rows) == 2 and "--epochs N with N > 2" in log.read_text()


# -- crash safety of the files -------------------------------------------------------------


def test_atomic_write_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    with atomic_write(target, "w") as f:
        f.write("old")
    with pytest.raises(ZeroDivisionError), atomic_write(target, "w") as f:
        f.write("new, half")
        1 / 0  # noqa: B018
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_partial_writes_are_removed_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    quiet_fit(tiny_config(), run)
    junk = [
        run / "checkpoints" / ".tmp-epoch-0003",
        run / ".model.safetensors.abc123.tmp",
        run / "checkpoints" / "epoch-0002" / ".trainer_state.pt.x.tmp",
    ]
    junk[0].mkdir()
    (junk[0] / "model.safetensors").write_bytes(b"half")
    junk[1].write_bytes(b"half")
    junk[2].write_bytes(b"half")
    # An evaluation writing beside the trainer (the lock lets it): its file is not junk.
    other = run / ".eval-k100.json.x1y2.tmp"
    other.write_bytes(b"half")
    assert sorted(remove_partial_writes(run)) == sorted(junk)
    assert not any(p.exists() for p in junk) and other.exists()


def _corrupt_truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])


def _corrupt_flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) - 7] ^= 0xFF
    p.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated-trainer-state": ("trainer_state.pt", _corrupt_truncate, True),
    "flipped-byte-weights": ("model.safetensors", _corrupt_flip, True),
    "missing-weights": ("model.safetensors", lambda p: p.unlink(), True),
    # Without the manifest the readers themselves must notice.
    "truncated-weights-no-manifest": ("model.safetensors", _corrupt_truncate, False),
    "truncated-state-no-manifest": ("trainer_state.pt", _corrupt_truncate, False),
    "garbage-state-no-manifest": (
        "trainer_state.pt",
        lambda p: p.write_bytes(os.urandom(500)),
        False,
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_checkpoint_falls_back_to_previous(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    fname, damage, keep_manifest = CORRUPTIONS[case]
    quiet_fit(tiny_config("train.epochs=4"), tmp_path / "straight")
    run = tmp_path / "run"
    quiet_fit(tiny_config("train.epochs=3"), run)
    newest = run / "checkpoints" / "epoch-0003"
    damage(newest / fname)
    if not keep_manifest:
        (newest / "manifest.json").unlink()
    quiet_fit(None, run, resume=True, epochs=4)
    err = capsys.readouterr().err
    assert (
        "epoch-0003" in err
        and "warning" in err
        and "resumed from the earlier checkpoint epoch-0002" in err
    )
    assert_same_run(tmp_path / "straight", run)


def test_every_checkpoint_corrupt_is_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    quiet_fit(tiny_config(), run)
    for ckpt in checkpoint_dirs(run):
        _corrupt_truncate(ckpt / "trainer_state.pt")
    with pytest.raises(RunError, match="no usable checkpoint.*truncated"):
        quiet_fit(None, run, resume=True, epochs=3)


class _Payload:
    """Unpickling this creates a file: proof that a loader ran arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_malicious_pickle_in_checkpoint_is_not_executed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet_fit(tiny_config("train.epochs=4"), tmp_path / "straight")
    run = tmp_path / "run"
    quiet_fit(tiny_config("train.epochs=3"), run)
    marker = tmp_path / "pwned"
    state_file = run / "checkpoints" / "epoch-0003" / "trainer_state.pt"
    torch.save({"epoch": 3, "evil": _Payload(marker)}, state_file)
    # The payload is live: an unsafe load would run it.
    torch.load(state_file, weights_only=False)
    assert marker.exists()
    marker.unlink()
    # Make the manifest agree, so that only weights_only loading stands in the way.
    import hashlib

    manifest_path = state_file.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["trainer_state.pt"] = {
        "bytes": state_file.stat().st_size,
        "sha256": hashlib.sha256(state_file.read_bytes()).hexdigest(),
    }
    manifest_path.write_text(json.dumps(manifest))
    quiet_fit(None, run, resume=True, epochs=4)
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "cannot read trainer state" in err and "epoch-0003" in err
    assert_same_run(tmp_path / "straight", run)


def test_format_1_checkpoint_still_resumes(tmp_path: Path) -> None:
    """Runs written before per-rank states (one rank-0 RNG state, no manifest) resume exactly."""
    quiet_fit(tiny_config("train.epochs=3"), tmp_path / "straight")
    run = tmp_path / "run"
    quiet_fit(tiny_config(), run)
    ckpt = run / "checkpoints" / "epoch-0002"
    new = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    old = {k: new[k] for k in ("epoch", "step", "lr_scale", "bad_steps_total", "optimizers")}
    old |= {"rng_cpu": new["ranks"][0]["rng"]["torch"], "rng_cuda": [], "metrics": "{}"}
    torch.save(old, ckpt / "trainer_state.pt")
    (ckpt / "manifest.json").unlink()
    quiet_fit(None, run, resume=True, epochs=3)
    a, b = (
        load_file(tmp_path / "straight" / "model.safetensors"),
        load_file(run / "model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- the history in metrics.jsonl ----------------------------------------------------------


def test_a_damaged_line_keeps_every_later_epoch_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One damaged line in the middle: every intact line survives a resume, with a warning
    naming the file and the line; the damaged line stays as it was (the weights do not
    contradict it)."""
    run = tmp_path / "run"
    quiet_fit(tiny_config("train.epochs=4"), run)
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:50]  # epoch 2's line, cut short
    path.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert [r["epoch"] for r in read_metrics(run)] == [1, 3, 4]
    err = capsys.readouterr().err
    assert f"{path} line 2 (epoch 2) is damaged" in err and "the other lines are read" in err
    quiet_fit(None, run, resume=True, epochs=5)
    err = capsys.readouterr().err
    assert f"{path} line 2 (epoch 2) is damaged" in err and "says epoch 2 finished" in err
    assert [r["epoch"] for r in read_metrics(run, warn=False)] == [1, 3, 4, 5]
    assert path.read_text().splitlines()[:4] == lines


def test_a_cut_last_line_is_not_lost_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last line cut short: the checkpoint says its epoch finished, the warning says so,
    and the next epoch's line starts on a line of its own."""
    run = tmp_path / "run"
    quiet_fit(tiny_config("train.epochs=3"), run)
    path = run / "metrics.jsonl"
    text = path.read_text()
    path.write_text(text[: text.rindex('{"epoch": 3') + 30])  # no newline at the end
    capsys.readouterr()
    quiet_fit(None, run, resume=True, epochs=4)
    err = capsys.readouterr().err
    assert f"{path} line 3 (epoch 3) is damaged" in err
    assert "epoch-0003 says epoch 3 finished" in err
    assert [r["epoch"] for r in read_metrics(run, warn=False)] == [1, 2, 4]
    # A cut line of an epoch after the checkpoint: that epoch is trained again.
    shutil.rmtree(run / "checkpoints" / "epoch-0004")
    text = path.read_text()
    path.write_text(text[: text.rindex('{"epoch": 4') + 20])
    capsys.readouterr()
    quiet_fit(None, run, resume=True, epochs=4)
    err = capsys.readouterr().err
    assert "line 4 (epoch 4) is damaged" in err and "epoch 4 came after the checkpoint" in err
    assert [r["epoch"] for r in read_metrics(run, warn=False)] == [1, 2, 4]

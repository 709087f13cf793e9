"""The command line end to end on the digits dataset (no network, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import vaekit
from vaekit.cli import main

TINY = [
    "--set",
    "data.limit=256",
    "--set",
    "model.encoder.hidden=[16]",
    "--set",
    "train.batch_size=64",
]


def write_config(tmp_path: Path, **sections: object) -> Path:
    cfg = {"data": {"name": "digits"}, "model": {"latent_dim": 2}, "train": {"epochs": 2}}
    cfg.update(sections)  # type: ignore[arg-type]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_then_every_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--config", str(write_config(tmp_path)), "--out", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    # Per-epoch line with train and test loss split into recon and KL, like tutorial 002.
    assert "epoch   2/2" in out and "recon" in out and "kl" in out and "test" in out
    for name in ("config.json", "model.json", "model.safetensors", "metrics.jsonl"):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"recon", "kl", "loss"} <= set(rows[0]["train"]) and {"recon", "kl"} <= set(
        rows[0]["test"]
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["encoder"]["hidden"] == [16]  # the resolved config, overrides applied

    assert main(["evaluate", str(run), "--k", "50"]) == 0
    result = json.loads((run / "eval-k50.json").read_text())
    assert result["n"] == 359 and np.isclose(result["elbo"], -(result["recon"] + result["kl"]))

    assert main(["sample", str(run), "--n", "16"]) == 0
    assert (run / "samples.png").stat().st_size > 100
    assert main(["reconstruct", str(run), "--n", "8"]) == 0
    assert (run / "reconstructions.png").stat().st_size > 100

    assert main(["encode", str(run)]) == 0
    mean = np.load(run / "latents_test_mean.npy")
    var = np.load(run / "latents_test_var.npy")
    labels = np.load(run / "latents_test_labels.npy")
    assert mean.shape == var.shape == (359, 2) and labels.shape == (359,) and (var > 0).all()
    assert main(["encode", str(run), "--format", "csv", "--out", str(tmp_path / "z")]) == 0
    header = (tmp_path / "z.csv").read_text().splitlines()[0]
    assert header == "mean_0,mean_1,var_0,var_1,label"


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = write_config(tmp_path)
    assert main(["train", "--config", str(cfg), "--out", str(run), *TINY]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # A second training into the same directory is refused instead of overwriting it.
    assert main(["train", "--config", str(cfg), "--out", str(run)]) == 2


def test_patience_threads_and_device_flags_for_new_and_resumed_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    cfg = write_config(tmp_path, data={"name": "digits", "valid_fraction": 0.2})
    assert main(["train", "-c", str(cfg), "--out", str(run), "--patience", "7", *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["patience"] == 7
    resume = ["train", "--resume", str(run), "--epochs", "3", "--patience", "0", "--threads", "1"]
    assert main(resume) == 0
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["patience"], train["threads"]) == (0, 1)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    # --device may change too (a CPU run continued on a GPU); one this machine lacks is a
    # clear error that leaves the run as it was.
    assert main(["train", "--resume", str(run), "--out", str(tmp_path / "elsewhere")]) == 2
    assert "drop --out" in capsys.readouterr().err and not (tmp_path / "elsewhere").exists()
    assert main(["train", "--resume", str(run), "--epochs", "4", "--device", "cpu"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["device"] == "cpu"
    if not torch.cuda.is_available():
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        assert main(["train", "--resume", str(run), "--epochs", "5", "--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # Without a validation split there is nothing to stop on: a clear error, exit 2.
    other = write_config(tmp_path)
    assert main(["train", "-c", str(other), "--out", str(tmp_path / "b"), "--patience", "3"]) == 2


def test_python_api_of_a_conditional_run(tmp_path: Path) -> None:
    run = tmp_path / "cvae"
    cfg = write_config(tmp_path, model={"latent_dim": 2, "conditional": True})
    assert main(["train", "--config", str(cfg), "--out", str(run), *TINY]) == 0
    r = vaekit.load(run)
    x = torch.rand(5, 64)  # flat input is reshaped to the data shape
    y = torch.arange(5)
    q = r.encode(x, y)
    assert q.batch_shape == (5,) and q.event_shape == (2,)
    px = r.decode(q.mean, y)
    assert px.batch_shape == (5,) and px.log_prob(x.reshape(5, 1, 8, 8)).shape == (5,)
    assert r.prior.event_shape == (2,)
    assert r.sample(4, 3).shape == (4, 1, 8, 8)
    assert r.reconstruct(x, y).shape == (5, 1, 8, 8)
    terms = r.elbo(x.round(), y)
    assert terms["elbo"].shape == (5,)
    with pytest.raises(ValueError, match="labels"):
        r.encode(x)
    assert main(["sample", str(run), "--label", "7", "--n", "8"]) == 0


def test_autoencoder_run(tmp_path: Path) -> None:
    run = tmp_path / "ae"
    cfg = write_config(
        tmp_path, model={"latent_dim": 2, "posterior": "point"}, objective={"name": "ae"}
    )
    assert main(["train", "--config", str(cfg), "--out", str(run), *TINY]) == 0
    r = vaekit.load(run)
    q = r.encode(torch.rand(3, 1, 8, 8))
    assert torch.equal(q.variance, torch.zeros(3, 2))
    assert main(["evaluate", str(run), "--k", "50"]) == 0
    assert "recon" in json.loads((run / "eval-k50.json").read_text())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "model.latnet_dim=3"], "Did you mean 'latent_dim'"),
        (["--set", "train.epochs=-1"], "train.epochs must be a positive number"),
        (["--set", "model.likelihood=bernouli"], "did you mean 'bernoulli'"),
        (["--set", "train.lr=abc"], "train.lr must be a"),
        (["--dataset", "no-such-data"], "unknown dataset 'no-such-data'"),
        (["--config", "missing.yaml"], "does not exist"),
        (["--set", "model.conditional=true", "--dataset", "{npy}"], "needs labels"),
    ],
)
def test_bad_input_gives_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    npy = tmp_path / "unlabelled.npy"
    np.save(npy, np.random.default_rng(0).random((50, 6)).astype(np.float32))
    args = [a.replace("{npy}", str(npy)) for a in args]
    code = main(["train", "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    # Nothing was written for a rejected run.
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_loading_something_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["sample", str(tmp_path / "empty")]) == 2
    assert "config.json is missing" in capsys.readouterr().err

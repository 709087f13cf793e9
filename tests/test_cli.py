"""The command line end to end on the digits dataset (no network, seconds)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import train_tiny

import vaekit
from vaekit.cli import main
from vaekit.data import DataError
from vaekit.samplers import load_sampler

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
    # A Bernoulli likelihood on grey digits: the NLL is a cross-entropy, said beside it.
    assert "cross-entropy, not a likelihood" in result["nll_note"]
    assert "cross-entropy, not a likelihood" in capsys.readouterr().err

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
    # One-hot rows of any dtype are labels too (int64 ones raised a shape error).
    torch.testing.assert_close(r.encode(x, np.eye(10, dtype=np.int64)[y.numpy()]).mean, q.mean)
    with pytest.raises(DataError, match=r"got 3 labels \(shape \(3,\)\) for 5 examples"):
        r.encode(x, y[:3])
    # Without a label the draws cycle through the classes, as `vaekit sample` does.
    torch.manual_seed(0)
    cycled = r.sample(12)
    torch.manual_seed(0)
    assert torch.equal(cycled, r.sample(12, torch.arange(12) % 10))
    assert "conditional on 10 classes" in repr(r)


def test_python_api_takes_data_as_users_hold_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train_tiny(tmp_path / "vae", "train.epochs=1")
    r = vaekit.load(run)
    x = r.dataset().test.x[:100]  # (100, 1, 8, 8) grey digits in [0, 1]
    px = r.decode(r.transform(x))
    expected = px.log_prob(x)
    assert bool((expected < 0).all())
    # Issue 13: (N, 8, 8) broadcast across the batch and gave positive numbers; flat and
    # numpy input raised.
    for value in (x[:, 0], x.reshape(100, 64), x.numpy(), x[:, 0].numpy()):
        torch.testing.assert_close(px.log_prob(value), expected)
    torch.testing.assert_close(r.transform(x[:, 0].numpy()), r.transform(x))
    with pytest.raises(DataError, match=r"\(100, 63\) does not fit.*\(1, 8, 8\) \(64 values\)"):
        px.log_prob(x.reshape(100, 64)[:, :63])
    with pytest.raises(DataError, match="divide them by 255"):
        px.log_prob(x * 255)
    with pytest.raises(DataError, match=r"trained on data in \[0, 1\].*divide them by 255"):
        r.transform(x * 255)
    # Labels given to an unconditional model are refused, not ignored.
    with pytest.raises(DataError, match="not conditional"):
        r.encode(x, np.zeros(100))
    with pytest.raises(DataError, match="not conditional"):
        r.sample(4, 3)
    assert main(["sample", str(run), "--label", "3"]) == 2
    assert "not conditional" in capsys.readouterr().err
    # print(run) says what it is, not where it lives in memory.
    text = repr(r)
    for part in (
        repr(str(run)),
        "mlp 16, z=2",
        "bernoulli",
        "last weights, epoch 1",
        "digits (1, 8, 8) grey",
    ):
        assert part in text, part


def test_every_run_method_refuses_bad_arguments_with_a_clear_error(tmp_path: Path) -> None:
    # Issue 25: sample(0) and sample(-1) raised raw RuntimeErrors, one-hot rows of the wrong
    # width "Tensors must have same number of dimensions", and NaN input gave NaN silently.
    from vaekit.errors import UsageError, VaekitError

    r = vaekit.load(train_tiny(tmp_path / "c", "model.conditional=true", "train.epochs=1"))
    x = r.dataset().test.x[:5]
    y = r.dataset().test.y[:5]
    for n in (0, -1, 2.5, "3", True):
        with pytest.raises(UsageError, match="n must be"):
            r.sample(n)
    for t in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="temperature must be a positive number"):
            r.sample(4, temperature=t)
    classes = "conditional on 10 classes: pass class indices 0..9"
    wide = torch.nn.functional.one_hot(y, 12)
    for call in (r.encode, r.transform, r.reconstruct, r.elbo):
        for labels in (wide, y[:, None, None], y + 10, y - 10, y + 0.5, ["a"] * 5):
            with pytest.raises(DataError, match=classes if labels is not wide else "(5, 12)"):
                call(x, labels)
    with pytest.raises(DataError, match=classes):
        r.sample(3, 10)
    with pytest.raises(DataError, match="one-hot rows of length 10"):
        r.decode(torch.zeros(5, 2), wide)
    with pytest.raises(DataError, match="holds no examples"):
        r.encode(x[:0], y[:0])
    with pytest.raises(DataError, match="x must be numbers"):
        r.encode("not an array", y)
    with pytest.raises(UsageError, match="samples must be >= 1"):
        r.elbo(x, y, samples=0)
    # NaN or infinite input is refused as the trainer and the CLI refuse it, naming where.
    bad = x.clone()
    bad[3, 0, 2, 2] = float("nan")
    for call in (r.encode, r.transform, r.reconstruct, r.elbo):
        with pytest.raises(DataError, match="1 NaN or infinite values .first in example 3"):
            call(bad, y)
    z = torch.zeros(4, 2)
    z[1, 0] = float("inf")
    for call in (r.decode, r.generate):
        with pytest.raises(DataError, match="z holds 1 NaN"):
            call(z, 0)
    with pytest.raises(UsageError, match="fit must be True, False or 'auto'"):
        load_sampler(r, "gmm", fit="maybe")
    # A device this machine lacks: torch raised a RuntimeError (an AssertionError for cuda).
    for device in ("bogus", "cuda:7", "mps" if not torch.backends.mps.is_available() else "xla"):
        with pytest.raises(UsageError, match="device"):
            vaekit.load(r.dir, device=device)
    # Every refusal above is one of vaekit's errors, which the CLI prints without a traceback.
    assert issubclass(DataError, VaekitError) and issubclass(UsageError, VaekitError)
    assert main(["sample", str(r.dir), "--device", "bogus"]) == 2


def test_out_of_range_input_gets_advice_that_fits_its_range(tmp_path: Path) -> None:
    # Issue 25: [0, 2] and the UCI digits' native 0..16 were told they "look 8-bit";
    # float images in 0..255 given to fit() were told to use a Gaussian likelihood.
    r = vaekit.load(train_tiny(tmp_path / "vae", "train.epochs=1"))
    x = r.dataset().test.x[:20]  # levels k/16
    with pytest.raises(DataError, match=r"\[0, 2\]: divide them by 2, their maximum") as e:
        r.elbo(x * 2)
    assert "8-bit" not in str(e.value)
    with pytest.raises(
        DataError, match=r"\[0, 16\]: they look like levels 0..16; divide them by 16"
    ):
        r.encode(x * 16)
    with pytest.raises(
        DataError, match=r"\[0, 255\]: they look like 8-bit levels.*divide them by 255"
    ):
        r.encode(torch.round(x * 255))
    with pytest.raises(DataError, match=r"\[-1, 1\]: scale them to \[0, 1\]"):
        r.encode(x * 2 - 1)
    images = np.round(x.numpy() * 255)
    with pytest.raises(
        vaekit.ConfigError,
        match=r"\[0, 255\], but model.likelihood=bernoulli models data in \[0, 1\]: they look like 8-bit levels \(0..255\); divide them by 255",
    ):
        vaekit.fit(
            vaekit.load_config("demo", ["train.epochs=1"]),
            tmp_path / "f",
            data=images,
            log=io.StringIO(),
            progress=False,
        )


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
        # Real-valued columns: a learned Gaussian scale, not sigma=1 (146.0 against 39.9
        # nats in issue 13); continuous-bernoulli models [0, 1] too.
        (
            ["--dataset", "{real}"],
            "--set model.likelihood=gaussian --set model.likelihood.sigma=learned",
        ),
        (
            ["--dataset", "{real}", "--set", "model.likelihood=continuous-bernoulli"],
            "sigma=learned",
        ),
    ],
)
def test_bad_input_gives_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    npy = tmp_path / "unlabelled.npy"
    np.save(npy, np.random.default_rng(0).random((50, 6)).astype(np.float32))
    real = tmp_path / "real.npy"
    np.save(real, np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32))
    args = [a.replace("{npy}", str(npy)).replace("{real}", str(real)) for a in args]
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


def test_encode_train_of_a_dynamically_binarized_run_encodes_what_the_model_saw(
    tmp_path: Path,
) -> None:
    # The training split of a dynamic run stays grey (the trainer draws each batch): its
    # codes are of one seeded binary draw, as the samplers and the latent classifiers fit.
    from vaekit.data import model_view
    from vaekit.evaluate import latent_means

    run_dir = train_tiny(tmp_path / "run", "data.binarize=dynamic", "train.epochs=1")
    assert main(["encode", str(run_dir), "--split", "train", "--out", str(tmp_path / "z")]) == 0
    run = vaekit.load(run_dir)
    seen = model_view(run.dataset().train, "dynamic", run.config.train.seed)
    expected = latent_means(run, seen.x).numpy()
    assert np.allclose(np.load(tmp_path / "z_mean.npy"), expected, atol=1e-6)


def test_the_program_freezes_the_collector_before_it_exits_and_a_library_call_does_not(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The interpreter's shutdown collects torch's ~170,000 objects (~0.5 s of CPU per
    # command) unless they are frozen; a call from Python must not freeze its caller's.
    import gc

    gc.unfreeze()
    try:
        assert main(["--version"]) == 0
        assert gc.get_freeze_count() == 0
        monkeypatch.setattr("sys.argv", ["vaekit", "--version"])
        assert main() == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert capsys.readouterr().out.strip().splitlines() == [vaekit.__version__] * 2


def test_the_program_imports_its_command_without_collecting_and_leaves_the_collector_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Torch's import makes ~170,000 long-lived objects that full collections would walk
    # again and again: the program loads a command's modules with the collector off and
    # freezes what they made; a call from Python leaves its caller's collector alone.
    import gc

    from vaekit import cli

    seen: list[bool] = []
    real = cli.command_module
    monkeypatch.setattr(cli, "command_module", lambda n: seen.append(gc.isenabled()) or real(n))
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit):
            main(["sample", "--help"])
        assert seen == [True] and gc.get_freeze_count() == 0
        monkeypatch.setattr("sys.argv", ["vaekit", "sample", "--help"])
        with pytest.raises(SystemExit):
            main()
        assert seen == [True, False] and gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert capsys.readouterr().out.count("usage: vaekit sample") == 2

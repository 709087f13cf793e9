"""The Python API without config files: vaekit.compose your own modules, vaekit.fit them on
arrays, tensors or a torch Dataset, and vaekit.load(RUN, model=...) the result."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import vaekit
from vaekit.config import ConfigError
from vaekit.data import load_dataset, python_dataset
from vaekit.evaluate import evaluate_run
from vaekit.objectives import IWAE, build_objective


def _digits() -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("digits")
    return ds.train.x[:400].numpy()[:, 0], ds.train.y[:400].numpy()  # (N, 8, 8) as users hold them


def _encoder() -> nn.Module:
    # The user's own module: x (B, 1, 8, 8) -> the Gaussian posterior's 2 * latent_dim features.
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 2 * 3))


def _model() -> vaekit.VAE:
    torch.manual_seed(0)
    return vaekit.compose(
        _encoder(), {"name": "mlp", "hidden": [32]}, latent_dim=3, data_shape=(1, 8, 8)
    )


def _quiet(**kw: object) -> dict[str, object]:
    return {"log": io.StringIO(), "progress": False, **kw}


def test_a_users_encoder_trains_on_numpy_reloads_and_evaluates(tmp_path: Path) -> None:
    x, _ = _digits()
    rows = vaekit.fit(_model(), tmp_path / "run", data=x, epochs=3, batch_size=50, **_quiet())
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["test"]["elbo"] > rows[0]["test"]["elbo"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["name"] == "<python>"
    assert saved["model"]["encoder"]["name"].startswith("python:")
    assert saved["train"]["batch_size"] == 50
    # Without the model: a clear message; with one built the same way: its weights.
    with pytest.raises(ConfigError, match="pass it"):
        vaekit.load(tmp_path / "run")
    run = vaekit.load(tmp_path / "run", model=_model())
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert torch.equal(
        run.model.state_dict()["encoder.net.1.weight"], weights["encoder.net.1.weight"]
    )
    result = evaluate_run(run, k=20, dataset=run.dataset(data=x), classifier=False)
    assert (
        result["n"] == 40 and np.isfinite(result["nll"]) and result["nll"] <= -result["elbo"] + 1e-6
    )


def test_resume_of_python_data_is_bit_identical(tmp_path: Path) -> None:
    x, y = _digits()
    vaekit.fit(_model(), tmp_path / "a", data=(x, y), epochs=3, batch_size=64, **_quiet())
    vaekit.fit(_model(), tmp_path / "b", data=(x, y), epochs=1, batch_size=64, **_quiet())
    vaekit.fit(_model(), tmp_path / "b", data=(x, y), resume=True, epochs=3, **_quiet())
    wa, wb = (load_file(tmp_path / r / "model.safetensors") for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # Other data are refused on resume, as files that changed are.
    with pytest.raises(vaekit.RunError.__mro__[1], match="changed since it was trained"):
        vaekit.fit(
            _model(), tmp_path / "b", data=(x[:300], y[:300]), resume=True, epochs=4, **_quiet()
        )


class _Digits(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A torch Dataset of (x, y) items, as users hold image data that do not fit in memory."""

    def __init__(self) -> None:
        self.x, self.y = _digits()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.x[i]), int(self.y[i])


def test_a_torch_dataset_streams_and_resumes_exactly(tmp_path: Path) -> None:
    data = _Digits()
    kw = _quiet(batch_size=64, valid_fraction=0.1)
    rows = vaekit.fit(_model(), tmp_path / "a", data=data, epochs=2, **kw)
    assert "valid" in rows[-1] and rows[-1]["best_epoch"] >= 1
    vaekit.fit(_model(), tmp_path / "b", data=data, epochs=1, **kw)
    vaekit.fit(_model(), tmp_path / "b", data=data, resume=True, epochs=2, **_quiet())
    wa, wb = (load_file(tmp_path / r / "model.safetensors") for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ds = python_dataset(data)
    assert (ds.shape, ds.kind, ds.num_classes, len(ds.train), len(ds.test)) == (
        (1, 8, 8),
        "grey",
        10,
        360,
        40,
    )


def test_the_trainer_range_checks_data_in_memory_once_and_streamed_batches_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrays are read whole when loaded (their kind says [0, 1]), so the likelihood's
    per-batch range check is left out of training; a torch Dataset is read batch by batch
    and keeps it."""
    from vaekit.distributions import likelihoods

    calls = []
    real = likelihoods.check_unit_interval
    monkeypatch.setattr(
        likelihoods, "check_unit_interval", lambda v, *a: calls.append(1) or real(v, *a)
    )
    x, _ = _digits()
    vaekit.fit(_model(), tmp_path / "arrays", data=x[:200], epochs=1, **_quiet(batch_size=50))
    assert len(calls) == 1  # the probe of one batch before training, not the 4 steps
    vaekit.fit(_model(), tmp_path / "stream", data=_Digits(), epochs=1, **_quiet(batch_size=100))
    assert len(calls) >= 4  # the training batches at least


def test_a_config_model_on_python_data_with_an_objective_object(tmp_path: Path) -> None:
    x, _ = _digits()
    cfg = vaekit.load_config(
        None, ["model.encoder.hidden=[16]", "train.epochs=2", "train.batch_size=100"]
    )
    rows = vaekit.fit(cfg, tmp_path / "run", data=x, objective=IWAE(samples=3), **_quiet())
    assert "iwae" in rows[-1]["test"]
    # A registered objective object is recorded by name and options: the run loads alone.
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["objective"] == {"name": "iwae", "samples": 3, "gradient": "standard"}
    assert vaekit.load(tmp_path / "run").config.objective.options.samples == 3


def test_an_objective_with_a_nested_part_is_recorded_by_its_settings(tmp_path: Path) -> None:
    # The divergence inside the ELBO's options is built by the ELBO through the registry;
    # the objective keeps the setting it was given, so config.json names it, not a module.
    x, _ = _digits()
    cfg = vaekit.load_config(
        None, ["model.encoder.hidden=[16]", "train.epochs=1", "train.batch_size=200"]
    )
    objective = build_objective(
        vaekit.load_config(None, ["objective.divergence={name: mmd, kernel: rbf}"]).objective
    )
    vaekit.fit(cfg, tmp_path / "run", data=x, objective=objective, **_quiet())
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["objective"]["name"] == "elbo"
    assert saved["objective"]["divergence"] == {"name": "mmd", "kernel": "rbf", "scale": 0.0}


def test_compose_names_both_shapes_when_modules_do_not_fit() -> None:
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(
        ConfigError, match="gives 5 features per example, but the posterior reads 6"
    ):
        vaekit.compose(wrong, "mlp", latent_dim=3, data_shape=(1, 8, 8))
    decoder = nn.Linear(3, 10)
    with pytest.raises(
        ConfigError, match="gives 10 values per example, but the likelihood needs 64"
    ):
        vaekit.compose(_encoder(), decoder, latent_dim=3, data_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="needs a decoder too"):
        vaekit.compose(_encoder(), latent_dim=3, data_shape=(1, 8, 8))


def test_fit_refuses_data_of_another_shape(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"built for examples of shape \(1, 8, 8\)"):
        vaekit.fit(_model(), tmp_path / "run", data=np.zeros((20, 5)), epochs=1, **_quiet())
    assert not (tmp_path / "run").exists()


def test_fit_reads_its_epochs_patience_threads_and_device_as_a_config_does(
    tmp_path: Path,
) -> None:
    # Issue 25 (the same class as item 7): epochs=1.5 was written into config.json and
    # threads=1.5 raised torch's RuntimeError; settings by keyword were already checked.
    x, _ = _digits()
    for bad, message in (
        ({"epochs": 1.5}, "train.epochs must be an integer"),
        ({"threads": 1.5}, "train.threads must be an integer"),
        ({"device": 5}, "train.device must be a string"),
        ({"patience": -1}, "train.patience must be >= 0"),
    ):
        with pytest.raises(ConfigError, match=message):
            vaekit.fit(_model(), tmp_path / "run", data=x, **bad, **_quiet())  # type: ignore[arg-type]
        assert not (tmp_path / "run").exists()


def test_the_hint_to_train_further_works_for_how_the_run_was_made(tmp_path: Path) -> None:
    # Issue 25: a run of data given in Python was told to continue with
    # `vaekit train --resume RUN`, which fails ("data were given in Python").
    from conftest import tiny_config

    x, _ = _digits()
    run, log = tmp_path / "mine", io.StringIO()
    vaekit.fit(_model(), run, data=x, epochs=1, batch_size=100, log=log, progress=False)
    hint = f"`vaekit.fit(model, {str(run)!r}, data=x, resume=True, epochs=N)`"
    assert hint in log.getvalue() and "vaekit train --resume" not in log.getvalue()
    # fit() again on the folder: resume=True, not the command line.
    with pytest.raises(
        vaekit.RunError, match=r"already holds a run; continue it with `vaekit\.fit"
    ):
        vaekit.fit(_model(), run, data=x, epochs=1, **_quiet())
    log = io.StringIO()
    vaekit.fit(_model(), run, data=x, resume=True, log=log, progress=False)
    assert "pass epochs=N with N > 1" in log.getvalue()
    # The hint itself works.
    assert len(vaekit.fit(_model(), run, data=x, resume=True, epochs=2, **_quiet())) == 2
    # A config's model on Python data needs only the data again: fit(None, ...).
    cfg, other, log = tiny_config("train.epochs=1"), tmp_path / "cfg", io.StringIO()
    vaekit.fit(cfg, other, data=x, log=log, progress=False)
    assert f"`vaekit.fit(None, {str(other)!r}, data=x, resume=True, epochs=N)`" in log.getvalue()
    assert len(vaekit.fit(None, other, data=x, resume=True, epochs=2, **_quiet())) == 2
    # Named data and registered parts: the command line continues it, so that is the hint.
    named, log = tmp_path / "named", io.StringIO()
    vaekit.fit(cfg, named, log=log, progress=False)
    assert f"`vaekit train --resume {named} --epochs N`" in log.getvalue()

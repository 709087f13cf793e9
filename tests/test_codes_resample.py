"""Codes with their variances (issue 28, M1+M2 as Kingma et al.'s code feeds M2): `vaekit
encode RUN --out FILE.npz` writes q(z|x)'s variances beside the means, `--min-sd` keeps the
units whose means vary, and `data.resample: gaussian` trains on a fresh draw of N(mean, var)
every batch, seeded and exact under resume, while the test split is scored at the means."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_config
from test_train_resume import assert_same_run, quiet_fit

import vaekit
from vaekit.cli import main
from vaekit.config import load_config
from vaekit.data import DataError, load_dataset
from vaekit.errors import ConfigError
from vaekit.train import loop

MEAN = np.array([1.0, -2.0, 3.0], dtype=np.float32)
VAR = np.array([0.25, 1.0, 4.0], dtype=np.float32)


def _codes(path: Path, n: int = 256, var: bool = True, labels: bool = False) -> Path:
    """Codes of three units: every example's mean MEAN, variances VAR (a seeded jitter on
    the means, so that examples differ)."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, m in (("train", n), ("test", 64)):
        arrays[split] = (MEAN + 0.01 * rng.standard_normal((m, 3))).astype(np.float32)
        if var:
            arrays[f"var_{split}"] = np.tile(VAR, (m, 1))
        if labels:
            arrays[f"y_{split}"] = np.arange(m) % 2
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _on_codes(codes: Path, *sets: str) -> list[str]:
    return [
        f"data.name={codes}",
        "model.latent_dim=2",
        "model.encoder={name: mlp, hidden: [8]}",
        "model.likelihood=gaussian",
        "train.batch_size=64",
        "train.eval_batch_size=512",
        *sets,
    ]


def test_encode_writes_the_variances_and_keeps_the_units_that_vary(tmp_path: Path) -> None:
    m1 = tmp_path / "m1"
    quiet_fit(tiny_config("model.latent_dim=4", "train.epochs=1"), m1)
    out = tmp_path / "codes.npz"
    assert main(["encode", str(m1), "--out", str(out)]) == 0
    run = vaekit.load(m1)
    want = {s: run.encode_split(s) for s in ("train", "test")}
    with np.load(out) as f:
        for s in ("train", "test"):
            np.testing.assert_allclose(f[s], want[s]["mean"], rtol=1e-6)
            np.testing.assert_allclose(f[f"var_{s}"], want[s]["var"], rtol=1e-6)
        assert f["units"].tolist() == [0, 1, 2, 3]
    # The file loads as a dataset with each split's variances beside its means.
    ds = load_dataset(str(out))
    np.testing.assert_allclose(ds.train.var.numpy(), want["train"]["var"], rtol=1e-6)
    # --min-sd keeps the units whose means vary over the training split by more than it.
    sd = want["train"]["mean"].std(axis=0)
    cut = float(np.sort(sd)[1] + np.sort(sd)[2]) / 2  # between the 2nd and 3rd smallest
    kept = np.flatnonzero(sd > cut)
    few = tmp_path / "few.npz"
    assert main(["encode", str(m1), "--out", str(few), "--min-sd", str(cut)]) == 0
    with np.load(few) as f:
        assert f["units"].tolist() == kept.tolist() and len(kept) == 2
        np.testing.assert_allclose(f["test"], want["test"]["mean"][:, kept], rtol=1e-6)
        np.testing.assert_allclose(f["var_train"], want["train"]["var"][:, kept], rtol=1e-6)
    # A threshold that keeps nothing, or --min-sd without a dataset of codes: what to do.
    assert main(["encode", str(m1), "--out", str(few), "--min-sd", "1e6"]) == 2
    assert main(["encode", str(m1), "--min-sd", "0.1"]) == 2


def test_codes_without_variances_asked_to_resample_say_to_re_encode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _codes(tmp_path / "old.npz", var=False)
    # A file written before the variances loads and trains as it did.
    assert load_dataset(str(old)).train.var is None
    sets = _on_codes(old, "train.epochs=1")
    assert main(["train", "--out", str(tmp_path / "a"), "--no-progress", *_sets(sets)]) == 0
    capsys.readouterr()
    resample = [*sets, "data.resample=gaussian"]
    assert main(["train", "--out", str(tmp_path / "b"), "--no-progress", *_sets(resample)]) == 2
    err = capsys.readouterr().err
    assert "no variances" in err and "re-encode" in err and "vaekit encode" in err


def _sets(sets: list[str]) -> list[str]:
    return [f"--set={s}" for s in sets]


def test_each_training_batch_is_a_fresh_draw_and_the_test_split_the_means(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.Tensor] = []
    step = loop.train_step

    def recording(s: Any, data: Any, parts: Any, prog: Any, x: torch.Tensor, *rest: Any) -> Any:
        seen.append(x.clone())
        return step(s, data, parts, prog, x, *rest)

    monkeypatch.setattr(loop, "train_step", recording)
    codes = _codes(tmp_path / "codes.npz", n=2048)
    cfg = load_config(None, _on_codes(codes, "train.epochs=2", "data.resample=gaussian"))
    quiet_fit(cfg, tmp_path / "run")
    x = torch.cat(seen)  # 2 epochs of 2,048 draws
    assert len(x) == 4096
    torch.testing.assert_close(x.mean(0), torch.from_numpy(MEAN), atol=0.15, rtol=0)
    torch.testing.assert_close(x.var(0), torch.from_numpy(VAR), atol=0, rtol=0.1)
    # Each epoch draws afresh: the same examples, other values.
    first, second = torch.cat(seen[:32]), torch.cat(seen[32:])
    assert torch.sort(first[:, 0]).values.ne(torch.sort(second[:, 0]).values).all()
    # The test split is scored at the means, as the file holds them.
    run = vaekit.load(tmp_path / "run")
    with np.load(codes) as f:
        assert torch.equal(run.dataset().test.x, torch.from_numpy(f["test"]))


def test_resampled_training_resumes_bit_identically(tmp_path: Path) -> None:
    codes = _codes(tmp_path / "codes.npz")
    sets = _on_codes(codes, "data.resample=gaussian")
    quiet_fit(load_config(None, [*sets, "train.epochs=4"]), tmp_path / "straight")
    quiet_fit(load_config(None, [*sets, "train.epochs=2"]), tmp_path / "resumed")
    quiet_fit(None, tmp_path / "resumed", resume=True, epochs=4)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    # The draws are seeded by train.seed: another seed trains on other draws.
    quiet_fit(load_config(None, [*sets, "train.epochs=1", "train.seed=1"]), tmp_path / "s1")
    quiet_fit(load_config(None, [*sets, "train.epochs=1"]), tmp_path / "s0")
    a = vaekit.load(tmp_path / "s0").model.state_dict()
    b = vaekit.load(tmp_path / "s1").model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("var", "message"),
    [
        (np.ones((256, 2)), "one variance per value"),
        (-np.ones((256, 3)), "must be >= 0"),
        (np.full((256, 3), np.nan), "NaN or infinite"),
    ],
)
def test_bad_variances_are_refused(tmp_path: Path, var: np.ndarray, message: str) -> None:
    path = _codes(tmp_path / "codes.npz")
    with np.load(path) as f:
        arrays = dict(f)
    np.savez(path, **{**arrays, "var_train": var})  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_resample_beside_binarize_is_refused() -> None:
    with pytest.raises(ConfigError, match="use one of them"):
        load_config(None, ["data.resample=gaussian", "data.binarize=dynamic"]).validate()
    with pytest.raises(ConfigError, match="resample"):
        load_config(None, ["data.resample=uniform"]).validate()

"""Every bundled config trains: one epoch of a few hundred examples of its own data (or the
offline stand-in named below), through the trainer a user runs, to finite numbers.

Building a config's model is tested in ``test_parts_config``; this runs the rest (data,
objective, optimiser, schedules, scoring, checkpoints) for each one, so a config that
names an option the code no longer takes, or a combination that fails in training, is
caught here rather than by a user.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from vaekit.config import bundled_configs, load_config
from vaekit.train import fit

# Offline stand-ins: the official MNIST files are a download (the labelled 10k subset has
# the same images' shape and classes); the wine table is made by the config's header, and
# the codes of an M1 run (M1+M2) as `vaekit encode RUN --out codes.npz` writes them.
STAND_INS = {"mnist": "mnist-10k"}


def _wine(folder: Path) -> Path:
    from sklearn.datasets import load_wine

    d = load_wine()
    x = (d.data - d.data.mean(0)) / d.data.std(0)
    path = folder / "wine.csv"
    header = ",".join([f"x{i}" for i in range(13)] + ["label"])
    np.savetxt(path, np.c_[x, d.target], delimiter=",", header=header, comments="")
    return path


def _codes(folder: Path) -> Path:
    """Codes as `vaekit encode RUN --out codes.npz` writes them (M1+M2's input): 50-d means
    and their variances (data.resample draws from them), with the labels of 10 classes."""
    rng = np.random.default_rng(0)
    path = folder / "codes.npz"
    y_train, y_test = np.arange(300) % 10, np.arange(100) % 10
    train = rng.normal(size=(300, 50)).astype(np.float32) + y_train[:, None]
    test = rng.normal(size=(100, 50)).astype(np.float32) + y_test[:, None]
    var = {
        f"var_{k}": np.full((n, 50), 0.1, np.float32) for k, n in (("train", 300), ("test", 100))
    }
    np.savez(path, train=train, test=test, y_train=y_train, y_test=y_test, **var)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("name", sorted(bundled_configs()))
def test_bundled_config_trains_one_epoch(
    name: str, tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(name)
    data = STAND_INS.get(cfg.data.name, cfg.data.name)
    if data.endswith(".csv"):
        data = str(_wine(tmp_path))
    if data.endswith(".npz"):  # the codes of an M1 run (mnist10k_m1m2)
        data = str(_codes(tmp_path))
    if data == "fashion-mnist":
        from vaekit.data.named import FASHION_MNIST_SYSTEM_DIR

        if not Path(FASHION_MNIST_SYSTEM_DIR).is_dir():
            pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    cfg = load_config(
        name,
        [
            f"data.name={data}",
            "data.limit=200",
            "train.epochs=1",
            "train.batch_size=50",
            "train.score_limit=50",
            "train.threads=1",
        ],
    )
    run = tmp_path / "run"
    fit(cfg, run, data_dir=str(shared_data_dir))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["epoch"] == 1
    numbers = [v for v in rows[-1]["train"].values() if isinstance(v, int | float)]
    assert numbers and all(math.isfinite(v) for v in numbers), rows[-1]["train"]
    assert (run / "model.safetensors").is_file()

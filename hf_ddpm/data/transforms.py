"""Single images: 8-bit conversion, resize, crop and flip with PIL and numpy, decoding of stored images, and the map
of 8-bit values to the model's range [−1, 1] (the 256 bins of the discretised decoder, Eq. 13)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def uint8_to_model_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """8-bit images (any shape) → float32 tensor in [−1, 1] on the 256-bin grid."""
    return torch.as_tensor(np.asarray(images), dtype=torch.float32) / 127.5 - 1.0


def model_range_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`uint8_to_model_range`: images in [−1, 1] → uint8 tensor, each value on its nearest level."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_8bit(image: Image.Image, channels: int) -> Image.Image:
    """An image of any supported mode → mode ``"L"`` (``channels=1``) or ``"RGB"`` (``channels=3``), 8 bits.

    16-bit grey (``I;16``, ``I``) is reduced by dividing by 257 (65535 → 255); alpha is dropped.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("L" if channels == 1 else "RGB")


def resize_image(image: Image.Image, *, resolution: int, channels: int) -> np.ndarray:
    """One image → uint8 array ``[channels, H, W]`` whose shorter side is ``resolution`` (bilinear; skipped when it
    already is)."""
    image = to_8bit(image, channels)
    width, height = image.size
    scale = resolution / min(width, height)
    if scale != 1.0:
        size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    array = np.array(image, dtype=np.uint8)  # a writable copy
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def crop_and_flip(
    array: np.ndarray,
    *,
    resolution: int,
    center_crop: bool = True,
    flip: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """A resized uint8 ``[C, H, W]`` → ``[C, resolution, resolution]``: a square crop (centre, or at an offset
    drawn from ``rng`` when ``center_crop`` is False), flipped left-right if ``flip``."""
    _, height, width = array.shape
    if center_crop or rng is None:
        left, top = (width - resolution) // 2, (height - resolution) // 2
    else:
        left = int(rng.integers(0, width - resolution + 1))
        top = int(rng.integers(0, height - resolution + 1))
    array = array[:, top : top + resolution, left : left + resolution]
    return np.ascontiguousarray(array[:, :, ::-1] if flip else array)


def open_stored_image(stored: dict) -> Image.Image:
    """Decode one image stored by a ``datasets.Image(decode=False)`` column (``{"bytes", "path"}``); a ValueError
    saying why it cannot be."""
    try:
        if stored is None:
            raise ValueError("the entry is empty (None)")
        if stored.get("bytes") is not None:
            image = Image.open(io.BytesIO(stored["bytes"]))
        elif stored.get("path"):
            image = Image.open(stored["path"])
        else:
            raise ValueError("the entry has neither bytes nor a path")
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise ValueError(str(error)) from error
    return image


def describe_image(stored: dict | None, split: str, column: str, index: int) -> str:
    """"image 3 (file x.png) in column 'image' of split 'train'", for messages."""
    path = (stored or {}).get("path")
    file = f" (file {path})" if path else ""
    return f"image {index}{file} in column {column!r} of split {split!r}"

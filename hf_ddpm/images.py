"""Image grids: many images → one PIL image (sample grids of the trainer and of ``hf-ddpm sample``), and drawing such a
grid with a pipeline."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image


def to_uint8(images) -> np.ndarray:
    """Images → uint8 array ``(N, H, W, C)``.

    Accepts a list of PIL images, a numpy array ``(N, H, W)`` / ``(N, H, W, C)`` (uint8, or float in [0, 1]) or a
    tensor ``(N, C, H, W)`` (float in [0, 1], or uint8). Floats are mapped by ``round(255·x)`` after clipping.
    """
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is empty: nothing to put in a grid")
        if not all(isinstance(image, Image.Image) for image in images):
            raise ValueError("a list of images must hold PIL images only")
        images = np.stack([np.asarray(image) for image in images])
    elif torch.is_tensor(images):
        if images.ndim != 4:
            raise ValueError(f"a tensor of images must be (N, C, H, W), got shape {tuple(images.shape)}")
        images = images.detach().cpu().permute(0, 2, 3, 1).numpy()
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images must be PIL images, a numpy array or a tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (N, H, W[, C]), got shape {images.shape}")
    if images.dtype != np.uint8:
        images = np.rint(np.clip(images.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    return images


def make_grid(images, nrow: int | None = None, padding: int = 0, pad_value: int = 0) -> Image.Image:
    """Tile images into one PIL image, ``nrow`` per row (default ``ceil(sqrt(N))``), row-major.

    The grid is ``nrow·W + (nrow+1)·padding`` wide and ``rows·H + (rows+1)·padding`` high, with
    ``rows = ceil(N / nrow)``; empty cells and padding hold ``pad_value``. One channel gives mode ``"L"``,
    three ``"RGB"``, four ``"RGBA"``.
    """
    array = to_uint8(images)
    count, height, width, channels = array.shape
    if channels not in (1, 3, 4):
        raise ValueError(f"images must have 1, 3 or 4 channels, got {channels}")
    nrow = math.ceil(math.sqrt(count)) if nrow is None else int(nrow)
    if nrow < 1:
        raise ValueError(f"nrow must be ≥ 1, got {nrow}")
    if padding < 0:
        raise ValueError(f"padding must be ≥ 0, got {padding}")
    rows = math.ceil(count / nrow)
    grid = np.full(
        (rows * height + (rows + 1) * padding, nrow * width + (nrow + 1) * padding, channels), pad_value, np.uint8
    )
    for index, image in enumerate(array):
        row, column = divmod(index, nrow)
        top = padding + row * (height + padding)
        left = padding + column * (width + padding)
        grid[top : top + height, left : left + width] = image
    return Image.fromarray(grid[..., 0] if channels == 1 else grid)


def sample_grid(pipeline, num_images: int, num_inference_steps: int, seed: int, min_size: int = 32, eta: float = 0.0):
    """Draw ``num_images`` with ``pipeline`` from ``seed`` (and DDIM's ``eta``); return (uint8 images ``[N, C, H, W]``,
    PIL grid).

    The images are separated by a grey border of 2 pixels, and images smaller than ``min_size`` pixels are
    enlarged (nearest neighbour) so that they can be seen."""
    generator = torch.Generator(device=pipeline.device).manual_seed(seed)
    images = pipeline(
        batch_size=num_images, generator=generator, num_inference_steps=num_inference_steps, output_type="pt", eta=eta
    ).images
    uint8 = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    grid = make_grid(images.cpu(), padding=2, pad_value=96)
    scale = max(1, -(-min_size // images.shape[-1]))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return uint8, grid

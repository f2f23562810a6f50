"""Images as the library takes them, checked once at the boundary of a call.

The bound (Eq. 5) and its discretised decoder (Eq. 13) score x_0 on the 8-bit grid of [−1, 1]: the 256 values
k/127.5 − 1, k = 0 … 255 (``hf_ddpm.data.uint8_to_model_range`` makes them from 8-bit images).
:func:`check_model_range_images` refuses anything else by name — 0…255 pixel values, images in [0, 1], values off the
grid, NaN or inf, an empty batch, a shape the network does not take — with one read of three numbers from the
device per call.

:func:`read_images` reads images as users hold them, by their type, never by their values:

* PIL images: their 8-bit values (converted to ``"L"`` or ``"RGB"`` for the network's channels);
* arrays and tensors of an integer dtype (``uint8``): 8-bit values 0 … 255;
* arrays and tensors of a floating dtype: values in [0, 1] (as the pipeline's ``output_type="np"``/``"pt"`` gives
  them), each rounded to the nearest of the 256 levels k/255.

Arrays are ``(N, H, W)`` or ``(N, H, W, C)`` (numpy's and PIL's layout); tensors are ``(N, C, H, W)`` (torch's).
"""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import torch

from .errors import ParameterError

LEVELS = 255  # steps between the 256 8-bit values
GRID_STEP = 2.0 / LEVELS  # one step of the 8-bit grid on [−1, 1]
TO_MODEL_RANGE = "hf_ddpm.data.uint8_to_model_range(uint8_images)"
FORMATS = ("PIL images, a uint8 array (N, H, W[, C]) or tensor (N, C, H, W) of 8-bit values, or a float array or "
           "tensor in [0, 1]")


def grid_tolerance(dtype: torch.dtype) -> float:
    """How far, in grid steps, a value of ``dtype`` on the grid may read after rounding: 0.001 of a step, or two
    units in the last place of 1 where that is more (float16: 0.25 of a step; bfloat16: 2 steps, too coarse to tell
    the grid: then only the range is checked)."""
    return max(1e-3, 2 * torch.finfo(dtype).eps / GRID_STEP)


def network_image_shape(model) -> tuple[int | None, tuple[int, int] | None]:
    """(channels, (H, W)) that ``model`` takes, from its ``config`` (a ``UNet2DModel``'s, or that of the ``unet`` a
    wrapper such as :class:`~hf_ddpm.guidance.GuidedModel` holds); None where it says nothing."""
    config = getattr(getattr(model, "unet", model), "config", None)
    channels = getattr(config, "in_channels", None)
    size = getattr(config, "sample_size", None)
    if isinstance(size, int):
        size = (size, size)
    return channels, (tuple(size) if isinstance(size, (tuple, list)) else None)


def check_image_shape(parameter: str, shape, model) -> None:
    """A non-empty batch [N, C, H, W] of the channels and size ``model`` takes (where it says)."""
    shape = tuple(shape)
    if len(shape) != 4:
        raise ParameterError(parameter, f"must be a batch of images [N, C, H, W], got shape {shape}")
    if shape[0] == 0:
        raise ParameterError(parameter, "is an empty batch: give at least one image")
    channels, size = network_image_shape(model)
    if channels is not None and shape[1] != channels:
        raise ParameterError(parameter, f"have {shape[1]} channels (shape {shape}, NCHW), the network takes "
                                        f"{channels} (its config's in_channels)")
    if size is not None and shape[2:] != size:
        raise ParameterError(parameter, f"are {shape[2]}×{shape[3]} (shape {shape}, NCHW), the network takes "
                                        f"{size[0]}×{size[1]} (its config's sample_size)")


def check_model_range_images(parameter: str, images, model=None) -> None:
    """``images``: a float tensor [N, C, H, W] of x_0 on the 8-bit grid of [−1, 1] (module docstring), N ≥ 1, of the
    shape ``model`` takes; else a :class:`ParameterError` naming ``parameter`` that says how to convert."""
    if not torch.is_tensor(images):
        raise ParameterError(parameter, f"must be a tensor [N, C, H, W] in [−1, 1] on the 8-bit grid (from 8-bit "
                                        f"images: {TO_MODEL_RANGE}), got a {type(images).__name__}")
    if not images.is_floating_point():
        raise ParameterError(parameter, f"has dtype {images.dtype}: the bound takes floats in [−1, 1] on the 8-bit "
                                        f"grid; convert 8-bit images with {TO_MODEL_RANGE}")
    check_image_shape(parameter, images.shape, model)
    x = images.detach()
    levels = x.to(torch.promote_types(x.dtype, torch.float32)) * (LEVELS / 2.0) + LEVELS / 2.0  # k, to ~1e-5
    low, high, off_grid = torch.stack([x.min(), x.max(), (levels - levels.round()).abs().max()]).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ParameterError(parameter, "holds NaN or inf values")
    tolerance = grid_tolerance(x.dtype)
    slack = tolerance * GRID_STEP
    if high > 1.0 + slack and low >= 0.0 and high <= LEVELS:
        raise ParameterError(parameter, f"holds values up to {high:g}: 8-bit pixel values (0 … 255)? The bound "
                                        f"takes [−1, 1] on the 8-bit grid: convert with {TO_MODEL_RANGE}")
    if low < -1.0 - slack or high > 1.0 + slack:
        raise ParameterError(parameter, f"must lie in [−1, 1] on the 8-bit grid, got values from {low:g} to "
                                        f"{high:g}; convert 8-bit images with {TO_MODEL_RANGE}")
    if tolerance < 0.5 and off_grid > tolerance:
        hint = ("images in [0, 1]? Quantise and map them with hf_ddpm.data.uint8_to_model_range((x * 255).round()"
                ".byte())" if low >= 0.0 else "quantise with hf_ddpm.data.model_range_to_uint8 and map back with "
                "hf_ddpm.data.uint8_to_model_range")
        raise ParameterError(parameter, f"holds values off the 8-bit grid of [−1, 1] (k/127.5 − 1, k = 0 … 255; "
                                        f"one is {off_grid:.3g} of a step from it), which the discretised decoder "
                                        f"(Eq. 13) cannot score: {hint}")


def check_noise(parameter: str, noise, images: torch.Tensor) -> None:
    """``noise`` None or a float tensor of the images' shape."""
    if noise is None:
        return
    if not torch.is_tensor(noise) or not noise.is_floating_point():
        raise ParameterError(parameter, f"must be a float tensor of the images' shape {tuple(images.shape)}, got "
                                        f"{type(noise).__name__ if not torch.is_tensor(noise) else noise.dtype}")
    if noise.shape != images.shape:
        raise ParameterError(parameter, f"has shape {tuple(noise.shape)}, expected the images' shape "
                                        f"{tuple(images.shape)}")


def _pil_levels(images: list, channels: int) -> np.ndarray:
    mode = "L" if channels == 1 else "RGB"
    if not all(isinstance(image, PIL.Image.Image) for image in images):
        raise ParameterError("images", f"mixes PIL images with other things: give {FORMATS}")
    return np.stack([np.asarray(image.convert(mode), dtype=np.uint8) for image in images])


def read_images(images, parameter: str, model) -> torch.Tensor:
    """Images in a user's format (module docstring) → float32 x_0 [N, C, H, W] on the 8-bit grid of [−1, 1], of the
    shape ``model`` takes; anything else is a :class:`ParameterError` naming ``parameter``."""
    channels, _ = network_image_shape(model)
    if isinstance(images, PIL.Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], PIL.Image.Image):
        images = _pil_levels(images, channels or 3)
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ParameterError(parameter, f"is an array of shape {images.shape}: give (N, H, W) or (N, H, W, C)")
        images = torch.from_numpy(np.ascontiguousarray(images))
        images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    if not torch.is_tensor(images):
        raise ParameterError(parameter, f"must be {FORMATS}; got a {type(images).__name__}")
    check_image_shape(parameter, images.shape, model)
    if images.dtype == torch.bool or images.is_complex():
        raise ParameterError(parameter, f"has dtype {images.dtype}: give {FORMATS}")
    if not images.is_floating_point():
        low, high = torch.stack([images.min(), images.max()]).tolist()
        if low < 0 or high > LEVELS:
            raise ParameterError(parameter, f"is an integer {images.dtype} holding {low} … {high}: integer images are "
                                            "8-bit values 0 … 255")
        return images.float() / (LEVELS / 2.0) - 1.0
    low, high = torch.stack([images.min(), images.max()]).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ParameterError(parameter, "holds NaN or inf values")
    if low < 0 or high > 1:
        hint = " (8-bit values 0 … 255? give them as uint8)" if high <= LEVELS and low >= 0 else ""
        raise ParameterError(parameter, f"are floats, read as images in [0, 1], but hold values from {low:g} to "
                                        f"{high:g}{hint}")
    return torch.round(images.float() * LEVELS) / (LEVELS / 2.0) - 1.0

"""Image batches for the feature networks: one float layout from the inputs users hold, and grey ↔ RGB."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ParameterError

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights for RGB → grey


def _pil_to_array(image, name: str) -> np.ndarray:
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def as_image_batch(images, name: str) -> torch.Tensor:
    """``images`` as a float32 tensor (N, C, H, W) in [0, 1], C = 1 or 3; a ParameterError naming ``name`` otherwise.

    Accepts float arrays/tensors in [0, 1], uint8 arrays/tensors in [0, 255] (divided by 255), shaped
    (N, C, H, W) or (N, H, W), and lists of PIL images of one size. Channels-last arrays are refused rather than
    guessed at (an (N, 8, 8, 3) array could be 8-channel 8 × 3 images).
    """
    if isinstance(images, (list, tuple)):
        if not images or not all(hasattr(image, "convert") for image in images):
            raise ParameterError(name, "as a list must hold PIL images (and at least one)")
        arrays = [_pil_to_array(image, name) for image in images]
        if len({array.shape for array in arrays}) != 1:
            raise ParameterError(name, f"holds PIL images that differ in size or mode: "
                                       f"{sorted({a.shape for a in arrays})}")
        images = np.stack(arrays)
    tensor = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if tensor.ndim == 3:
        tensor = tensor[:, None]
    if tensor.ndim != 4 or tensor.shape[1] not in (1, 3) or tensor.shape[0] == 0:
        raise ParameterError(
            name, f"must be images shaped (N, C, H, W) with C = 1 or 3, or (N, H, W), with N ≥ 1; got shape "
                  f"{tuple(tensor.shape)} (channels-last arrays need .transpose(0, 3, 1, 2) / .permute(0, 3, 1, 2))"
        )
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    if not tensor.is_floating_point():
        raise ParameterError(name, f"must be float images in [0, 1] or uint8 in [0, 255], got dtype {tensor.dtype}")
    tensor = tensor.float()
    low, high = tensor.min().item(), tensor.max().item()
    if not (np.isfinite(low) and np.isfinite(high)) or low < -1e-6 or high > 1 + 1e-6:
        raise ParameterError(
            name, f"as float images must lie in [0, 1], got values in [{low:.4g}, {high:.4g}] "
                  f"(map model-range images from [-1, 1] with (x + 1) / 2; give 0…255 values as uint8)"
        )
    return tensor.clamp(0.0, 1.0)


def match_channels(images: torch.Tensor, num_channels: int) -> torch.Tensor:
    """Grey → RGB by repeating the channel, RGB → grey by BT.601 luma; other counts are a ValueError."""
    have = images.shape[1]
    if have == num_channels:
        return images
    if have == 1 and num_channels == 3:
        return images.expand(-1, 3, -1, -1)
    if have == 3 and num_channels == 1:
        weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert {have}-channel images for a model that takes {num_channels} channels")

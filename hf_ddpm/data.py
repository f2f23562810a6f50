"""Datasets: the built-in digits (scikit-learn's ``load_digits``) and image conversion to the model's range.

Images are stored as 8-bit data and mapped to [−1, 1] by ``x / 127.5 − 1``, so every pixel sits on one of the
256 bins of the discretised decoder (Eq. 13) and bits/dim are per 8-bit dimension.
"""

from __future__ import annotations

import numpy as np
import torch

DIGITS_LEVELS = 16  # scikit-learn's digits hold the grey levels 0 … 16
DIGITS_TEST_EVERY = 5  # test split: image index i with i % 5 == 4


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as 8-bit images ``(N, 1, 8, 8)`` (level·255/16, rounded) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / DIGITS_LEVELS)).astype(np.uint8)[:, None]
    return images, digits.target.astype(np.int64)


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split of the digits: ``"test"`` holds the images with index i % 5 == 4 (359), ``"train"`` the rest (1,438)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = digits_uint8()
    is_test = np.arange(len(images)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    keep = is_test if split == "test" else ~is_test
    return images[keep], labels[keep]


def uint8_to_model_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """8-bit images (any shape) → float32 tensor in [−1, 1] on the 256-bin grid."""
    return torch.as_tensor(np.asarray(images), dtype=torch.float32) / 127.5 - 1.0

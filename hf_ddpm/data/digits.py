"""The built-in digits: scikit-learn's 1,797 handwritten digits (8 × 8, grey levels 0 … 16), no download, split by a
fixed rule (test: image index i % 5 == 4)."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from .dataset import ImageDataset, check_resolution, spread_indices

DIGITS_LEVELS = 16  # scikit-learn's digits hold the grey levels 0 … 16
DIGITS_TEST_EVERY = 5  # test split: image index i with i % 5 == 4
DIGITS_RESOLUTION = 8
DIGITS_NAMES = ("digits",)
DIGITS_CLASS_NAMES = tuple(str(digit) for digit in range(10))


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as 8-bit images ``(N, 1, 8, 8)`` (level·255/16, rounded) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / DIGITS_LEVELS)).astype(np.uint8)[:, None]
    return images, digits.target.astype(np.int64)


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split of the digits: ``"test"`` holds the images with index i % 5 == 4 (359), ``"train"`` the rest
    (1,438)."""
    if split not in ("train", "test"):
        raise ParameterError("split", f"must be 'train' or 'test' for the digits, got {split!r}")
    images, labels = digits_uint8()
    is_test = np.arange(len(images)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    keep = is_test if split == "test" else ~is_test
    return images[keep], labels[keep]


def digits_dataset(
    split: str,
    *,
    resolution: int | None = None,
    num_images: int | None = None,
    center_crop: bool = True,
    random_flip: bool = False,
    seed: int = 0,
    with_labels: bool = False,
) -> ImageDataset:
    """One split of the digits as an :class:`ImageDataset` (8×8 unless ``resolution`` resizes them); with
    ``with_labels``, each digit's class 0 … 9 too."""
    images, labels = digits_split(split)
    resolution = DIGITS_RESOLUTION if resolution is None else check_resolution(resolution, set(), "digits")
    kept = spread_indices(len(images), num_images)
    return ImageDataset(
        images[kept],
        labels=labels[kept] if with_labels else None,
        resolution=resolution,
        channels=1,
        center_crop=center_crop,
        random_flip=random_flip,
        seed=seed,
        name="digits",
        split=split,
    )

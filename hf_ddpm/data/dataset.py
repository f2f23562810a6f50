"""``ImageDataset``: images as float tensors in [−1, 1] (with their class labels, for class-conditional training) for a
DataLoader, with seeded augmentation and the option of keeping them decoded; ``ImageData``: a training set with its
held-out split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import ParameterError
from .transforms import crop_and_flip, describe_image, open_stored_image, resize_image, uint8_to_model_range


class ImageDataset(torch.utils.data.Dataset):
    """Images as float32 tensors ``[C, H, W]`` in [−1, 1] on the 8-bit grid, for a (prepared) DataLoader.

    ``images`` is either a uint8 array ``(N, C, H, W)`` (the digits) or a ``datasets.Dataset`` whose
    ``image_column`` is an ``Image(decode=False)`` feature (decoded here with PIL, per item, so the dataset
    pickles cheaply into DataLoader workers — or once for all, see :meth:`keep_decoded`). Augmentation (random
    crop when ``center_crop`` is False, left-right flip with probability ½ when ``random_flip``) draws from
    ``np.random.default_rng((seed, epoch, index))``.
    """

    def __init__(
        self,
        images,
        *,
        resolution: int,
        channels: int,
        image_column: str | None = None,
        center_crop: bool = True,
        random_flip: bool = False,
        seed: int = 0,
        name: str = "",
        split: str = "",
        labels: np.ndarray | None = None,
    ):
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images = images
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.resolution = resolution
        self.channels = channels
        self.image_column = image_column
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.seed = seed
        self.name = name
        self.split = split
        self.epoch = 0
        self.decoded: list[np.ndarray] | None = None  # resized uint8 images, when kept (keep_decoded)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch``; call before creating the epoch's DataLoader iterator
        (workers copy the dataset when the iterator starts, so do not use ``persistent_workers=True``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def _pil(self, index: int) -> Image.Image:
        if isinstance(self.images, np.ndarray):
            array = self.images[index]
            return Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
        stored = self.images[index][self.image_column]
        try:
            return open_stored_image(stored)
        except ValueError as error:  # a file changed or vanished after the check at loading
            where = describe_image(stored, self.split, self.image_column, index)
            raise ValueError(f"dataset {self.name}: {where} cannot be decoded: {error}") from error

    def resized(self, index: int) -> np.ndarray:
        """Image ``index`` in ``channels`` 8-bit channels, its shorter side resized to ``resolution``."""
        if self.decoded is not None:
            return self.decoded[index]
        if isinstance(self.images, np.ndarray):
            array = self.images[index]
            if array.shape[0] == self.channels and min(array.shape[1:]) == self.resolution:
                return array
        return resize_image(self._pil(index), resolution=self.resolution, channels=self.channels)

    def keep_decoded(self, max_bytes: int) -> bool:
        """Decode and resize every image once and keep them in memory, so that each epoch only crops and flips —
        unless they take more than ``max_bytes``; returns whether they are kept. Items are the same either way."""
        decoded, total = [], 0
        for index in range(len(self)):
            decoded.append(self.resized(index))
            total += decoded[-1].nbytes
            if total > max_bytes:
                return False
        self.decoded = decoded
        return True

    def uint8(self, index: int) -> np.ndarray:
        """Image ``index`` after the transforms, as uint8 ``[C, H, W]``."""
        random = self.random_flip or not self.center_crop
        rng = np.random.default_rng((self.seed, self.epoch, index)) if random else None
        flip = bool(self.random_flip and rng.random() < 0.5)
        return crop_and_flip(
            self.resized(index), resolution=self.resolution, center_crop=self.center_crop, flip=flip, rng=rng
        )

    def __getitem__(self, index: int):
        image = uint8_to_model_range(self.uint8(index))
        return image if self.labels is None else (image, int(self.labels[index]))

    def __getitems__(self, indices: list[int]) -> list:
        """A DataLoader batch's items (``torch.utils.data`` calls this when present): the same items as
        ``__getitem__``, the images converted to floats in one operation instead of one per image."""
        images = list(uint8_to_model_range(np.stack([self.uint8(index) for index in indices])).unbind(0))
        if self.labels is None:
            return images
        return [(image, int(self.labels[index])) for image, index in zip(images, indices)]

    def label_tensor(self) -> torch.Tensor | None:
        """All labels as one int64 tensor ``[N]`` (None when the dataset has no labels)."""
        return None if self.labels is None else torch.from_numpy(self.labels.copy())

    def tensor(self) -> torch.Tensor:
        """All images as one float32 tensor ``[N, C, H, W]`` in [−1, 1]."""
        if len(self) == 0:
            return torch.empty(0, self.channels, self.resolution, self.resolution)
        return uint8_to_model_range(np.stack([self.uint8(i) for i in range(len(self))]))


@dataclass
class ImageData:
    """A training set and its held-out split, with the shape the model must have; for class-conditional training,
    the classes' names (label id i is ``class_names[i]``; both splits then carry labels)."""

    train: ImageDataset
    eval: ImageDataset
    channels: int
    resolution: int
    name: str
    eval_split: str
    class_names: tuple[str, ...] | None = None

    @property
    def class_frequencies(self) -> list[float] | None:
        """π(y): each class's share of the training labels (None without labels)."""
        if self.class_names is None:
            return None
        counts = np.bincount(self.train.labels, minlength=len(self.class_names))
        return (counts / counts.sum()).tolist()


def spread_indices(total: int, count: int | None) -> np.ndarray:
    """``count`` indices evenly spread over ``range(total)`` (all of them if ``count`` is None or ≥ total)."""
    if count is None or count >= total:
        return np.arange(total)
    if count < 1:
        raise ParameterError("num_images", f"must be ≥ 1, got {count}")
    return np.unique(np.rint(np.linspace(0, total - 1, count)).astype(np.int64))


def check_resolution(resolution: int | None, sizes: set[tuple[int, int]], where: str) -> int:
    """``resolution`` if given, else the images' one square size (``where`` names them in the error)."""
    if resolution is not None:
        if isinstance(resolution, bool) or int(resolution) != resolution or resolution < 1:
            raise ParameterError("resolution", f"must be a positive integer, got {resolution!r}")
        return int(resolution)
    if len(sizes) == 1 and len(set(next(iter(sizes)))) == 1:
        return next(iter(sizes))[0]
    shown = sorted(sizes)[:5]
    raise ParameterError("resolution", f"is needed: {where} holds images of sizes {shown}"
                                       f"{' …' if len(sizes) > 5 else ''}")

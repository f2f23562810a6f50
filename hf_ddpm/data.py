"""Datasets: the built-in digits, image datasets through 🤗 `datasets`, and the conversion to the model's range.

Images are stored as 8-bit data and mapped to [−1, 1] by ``x / 127.5 − 1``, so every pixel sits on one of the
256 bins of the discretised decoder (Eq. 13) and bits/dim are per 8-bit dimension.

Two sources feed training and evaluation, both as an :class:`ImageDataset` of ``[C, H, W]`` float tensors:

* the digits (scikit-learn's ``load_digits``, 8×8 grey, no download), split by a fixed rule, and
* any image dataset ``datasets.load_dataset`` can open: a Hub id (served from the local cache when
  ``HF_HUB_OFFLINE=1``) or an image folder (``imagefolder``). See :func:`load_image_data` for what is
  checked before training starts.

Transforms use PIL and numpy only: resize the shorter side to the resolution (bilinear), crop a square
(centre, or a random offset), optionally flip left-right. Random choices are a pure function of
``(seed, epoch, index)`` (:meth:`ImageDataset.set_epoch`), so they do not depend on worker processes and a
resumed run sees the same augmented images as an uninterrupted one. A training set that fits in memory is
decoded and resized once (:meth:`ImageDataset.keep_decoded`); each epoch then only crops and flips.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

DIGITS_LEVELS = 16  # scikit-learn's digits hold the grey levels 0 … 16
DIGITS_TEST_EVERY = 5  # test split: image index i with i % 5 == 4
DIGITS_RESOLUTION = 8
DIGITS_NAMES = ("digits",)

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
HELD_OUT_SPLITS = ("test", "validation", "valid", "val")


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
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = digits_uint8()
    is_test = np.arange(len(images)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    keep = is_test if split == "test" else ~is_test
    return images[keep], labels[keep]


def uint8_to_model_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """8-bit images (any shape) → float32 tensor in [−1, 1] on the 256-bin grid."""
    return torch.as_tensor(np.asarray(images), dtype=torch.float32) / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------------------
# Single-image transforms (PIL + numpy)


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


def _open_stored_image(stored: dict, where: str) -> Image.Image:
    """Decode one image stored by a ``datasets.Image(decode=False)`` column (``{"bytes", "path"}``)."""
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
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise ValueError(f"{where} cannot be decoded: {error}") from error
    return image


def _describe(stored: dict | None, dataset: str, split: str, column: str, index: int) -> str:
    path = (stored or {}).get("path")
    file = f" (file {path})" if path else ""
    return f"{dataset}: image {index}{file} in column {column!r} of split {split!r}"


# --------------------------------------------------------------------------------------------------------------
# The torch Dataset


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
    ):
        self.images = images
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
        return _open_stored_image(stored, _describe(stored, self.name, self.split, self.image_column, index))

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

    def __getitem__(self, index: int) -> torch.Tensor:
        return uint8_to_model_range(self.uint8(index))

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        """A DataLoader batch's items (``torch.utils.data`` calls this when present): the same tensors as
        ``__getitem__``, converted to floats in one operation instead of one per image."""
        return list(uint8_to_model_range(np.stack([self.uint8(index) for index in indices])).unbind(0))

    def tensor(self) -> torch.Tensor:
        """All images as one float32 tensor ``[N, C, H, W]`` in [−1, 1]."""
        if len(self) == 0:
            return torch.empty(0, self.channels, self.resolution, self.resolution)
        return uint8_to_model_range(np.stack([self.uint8(i) for i in range(len(self))]))


def collate_images(batch: list[torch.Tensor]) -> torch.Tensor:
    """Stack a list of ``[C, H, W]`` tensors into a batch ``[B, C, H, W]``."""
    return torch.stack(batch)


# --------------------------------------------------------------------------------------------------------------
# Loading through `datasets`


@dataclass
class ImageData:
    """A training set and its held-out split, with the shape the model must have."""

    train: ImageDataset
    eval: ImageDataset
    channels: int
    resolution: int
    name: str
    eval_split: str


def _load_dataset_dict(dataset_name, dataset_config_name, train_data_dir, cache_dir):
    """``datasets.load_dataset`` → a DatasetDict, with loading failures turned into a ValueError naming the source."""
    import datasets

    if train_data_dir is not None:
        if not os.path.isdir(train_data_dir):
            raise ValueError(f"--train_data_dir {train_data_dir!r} is not a directory")
        flag, args, kwargs = "--train_data_dir", ("imagefolder",), {"data_dir": train_data_dir}
    else:
        flag, args, kwargs = "--dataset_name", (dataset_name, dataset_config_name), {}
    source = train_data_dir if train_data_dir is not None else dataset_name
    try:
        loaded = datasets.load_dataset(*args, cache_dir=cache_dir, **kwargs)
    except (FileNotFoundError, ConnectionError, ValueError, datasets.exceptions.DatasetsError) as error:
        # ValueError: e.g. 'Instruction "test" corresponds to no data!' for a split without rows
        offline = " (HF_HUB_OFFLINE is set: only datasets already in the local cache can be loaded)"
        hint = offline if datasets.config.HF_HUB_OFFLINE else ""
        raise ValueError(f"{flag} {source!r} could not be loaded{hint}: {error}") from error
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded, f"{flag} {source!r}"


def _image_column(dataset, image_column: str | None, where: str) -> str:
    """The column holding the images: ``image_column`` if given (checked), else the single ``Image`` feature."""
    import datasets

    features = dataset.features
    if image_column is not None:
        if image_column not in features:
            raise ValueError(
                f"--image_column {image_column!r} is not a column of {where}; its columns are {list(features)}"
            )
        if not isinstance(features[image_column], datasets.Image):
            raise ValueError(
                f"--image_column {image_column!r} of {where} holds {features[image_column]!r}, not images "
                f"(a datasets.Image feature)"
            )
        return image_column
    candidates = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"{where} has no image column (datasets.Image feature); its features are {dict(features)}")
    raise ValueError(f"{where} has several image columns {candidates}; choose one with --image_column")


def _scan_images(dataset, column: str, where: str, split: str) -> tuple[set[str], set[tuple[int, int]]]:
    """Decode every image once (full decode, not just the header); return the modes and sizes seen."""
    modes, sizes = set(), set()
    for start in range(0, len(dataset), 512):
        stored_batch = dataset[start : start + 512][column]
        for offset, stored in enumerate(stored_batch):
            description = _describe(stored, where, split, column, start + offset)
            image = _open_stored_image(stored, description)
            if image.mode not in GREY_MODES | COLOUR_MODES:
                raise ValueError(f"{description} has the unsupported mode {image.mode!r}")
            modes.add(image.mode)
            sizes.add(image.size)
    return modes, sizes


def _spread_indices(total: int, count: int | None) -> np.ndarray:
    """``count`` indices evenly spread over ``range(total)`` (all of them if ``count`` is None or ≥ total)."""
    if count is None or count >= total:
        return np.arange(total)
    if count < 1:
        raise ValueError(f"the number of evaluation images must be ≥ 1, got {count}")
    return np.unique(np.rint(np.linspace(0, total - 1, count)).astype(np.int64))


def _held_out(dataset_dict, eval_split, validation_fraction, seed, where):
    """(train split, held-out split, held-out name): the dataset's own split, else a seeded random fraction."""
    names = list(dataset_dict)
    if "train" in dataset_dict:
        train_name = "train"
    elif len(names) == 1:
        train_name = names[0]
    else:
        raise ValueError(f"{where} has no 'train' split; its splits are {names}")
    if eval_split is not None:
        if eval_split not in dataset_dict:
            raise ValueError(f"split {eval_split!r} is not in {where}; its splits are {names}")
        return dataset_dict[train_name], dataset_dict[eval_split], eval_split
    for name in HELD_OUT_SPLITS:
        if name in dataset_dict:
            return dataset_dict[train_name], dataset_dict[name], name
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"{where} has no test/validation split, so --validation_fraction must be in (0, 1); "
            f"got {validation_fraction}"
        )
    train = dataset_dict[train_name]
    if len(train) < 2:
        raise ValueError(f"{where} has {len(train)} image(s) in split {train_name!r}: too few to hold some out")
    parts = train.train_test_split(test_size=validation_fraction, seed=seed)
    return parts["train"], parts["test"], f"{train_name}[validation_fraction={validation_fraction}, seed={seed}]"


def _check_resolution(resolution: int | None, sizes: set[tuple[int, int]], where: str) -> int:
    if resolution is not None:
        if int(resolution) < 1:
            raise ValueError(f"--resolution must be a positive integer, got {resolution}")
        return int(resolution)
    if len(sizes) == 1 and len(set(next(iter(sizes)))) == 1:
        return next(iter(sizes))[0]
    shown = sorted(sizes)[:5]
    raise ValueError(f"{where} holds images of sizes {shown}{' …' if len(sizes) > 5 else ''}; set --resolution")


def _is_digits(dataset_name: str | None, train_data_dir: str | None) -> bool:
    return train_data_dir is None and (dataset_name is None or dataset_name in DIGITS_NAMES)


def digits_dataset(
    split: str,
    *,
    resolution: int | None = None,
    num_images: int | None = None,
    center_crop: bool = True,
    random_flip: bool = False,
    seed: int = 0,
) -> ImageDataset:
    """One split of the digits as an :class:`ImageDataset` (8×8 unless ``resolution`` resizes them)."""
    images, _ = digits_split(split)
    resolution = DIGITS_RESOLUTION if resolution is None else _check_resolution(resolution, set(), "digits")
    return ImageDataset(
        images[_spread_indices(len(images), num_images)],
        resolution=resolution,
        channels=1,
        center_crop=center_crop,
        random_flip=random_flip,
        seed=seed,
        name="digits",
        split=split,
    )


def load_image_data(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    image_column: str | None = None,
    resolution: int | None = None,
    center_crop: bool = False,
    random_flip: bool = False,
    validation_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: str | None = None,
    eval_split: str | None = None,
    max_eval_images: int | None = None,
) -> ImageData:
    """The training images and a held-out split, checked and ready for a DataLoader.

    Source: the built-in digits when neither ``dataset_name`` nor ``train_data_dir`` is given (or
    ``dataset_name="digits"``); else ``datasets.load_dataset(dataset_name, dataset_config_name)`` (a Hub id,
    served from the local cache under ``HF_HUB_OFFLINE=1``, or a local dataset folder) or the image folder
    ``train_data_dir`` (``imagefolder``; ``train/``/``test/`` sub-folders become splits).

    Held out: ``eval_split`` if given, else the dataset's ``test``, ``validation``, ``valid`` or ``val`` split,
    else a ``validation_fraction`` of the train split drawn with ``seed``. ``max_eval_images`` keeps that many
    held-out images, evenly spread over the split. The held-out set is centre-cropped and never flipped.

    Checked before returning (each failure is a ValueError naming the flag, dataset, column, split or file):
    both ``dataset_name`` and ``train_data_dir`` given; the source cannot be loaded (missing folder, a Hub id
    not in the cache offline); ``image_column`` missing or not a ``datasets.Image`` feature (or no or several
    image columns when it is not given); an empty train or held-out split; every image of both splits is fully
    decoded once with PIL — a corrupt or unreadable file, or a mode other than grey (1, L, LA, 16-bit I) or
    colour (RGB, RGBA, P, CMYK, …), is reported with its index and file; ``resolution`` not given while the
    images are not all square of one size. Channels: 1 if every image is grey, else 3 (grey images are then
    repeated to RGB).
    """
    if _is_digits(dataset_name, train_data_dir):
        if eval_split not in (None, "test"):
            raise ValueError(f"the digits hold out the split 'test' only, got eval_split={eval_split!r}")
        train = digits_dataset(
            "train", resolution=resolution, center_crop=center_crop, random_flip=random_flip, seed=seed
        )
        held_out = digits_dataset("test", resolution=resolution, num_images=max_eval_images, seed=seed)
        return ImageData(train, held_out, 1, train.resolution, "digits", "test")
    where, column, train, held_out, held_out_name = _hub_splits(
        dataset_name, dataset_config_name, train_data_dir, image_column, cache_dir, eval_split,
        validation_fraction, seed, max_eval_images,
    )
    channels, resolution = _scan_splits([("train", train), (held_out_name, held_out)], column, where, resolution)
    common = dict(resolution=resolution, channels=channels, image_column=column, seed=seed, name=where)
    return ImageData(
        train=ImageDataset(train, center_crop=center_crop, random_flip=random_flip, split="train", **common),
        eval=ImageDataset(held_out, split=held_out_name, **common),
        channels=channels,
        resolution=resolution,
        name=train_data_dir if train_data_dir is not None else dataset_name,
        eval_split=held_out_name,
    )


def load_eval_images(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    split: str | None = None,
    image_column: str | None = None,
    resolution: int | None = None,
    num_images: int | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: str | None = None,
) -> ImageDataset:
    """The held-out images alone (centre-cropped, unflipped), chosen and checked as in :func:`load_image_data`.

    ``split=None`` picks the same held-out split training used (with the same ``validation_fraction`` and
    ``seed`` when the dataset has none); ``split="train"`` etc. names one. Only the chosen split is decoded.
    """
    if _is_digits(dataset_name, train_data_dir):
        return digits_dataset("test" if split is None else split, resolution=resolution, num_images=num_images)
    where, column, _, held_out, held_out_name = _hub_splits(
        dataset_name, dataset_config_name, train_data_dir, image_column, cache_dir, split,
        validation_fraction, seed, num_images,
    )
    channels, resolution = _scan_splits([(held_out_name, held_out)], column, where, resolution)
    return ImageDataset(
        held_out, resolution=resolution, channels=channels, image_column=column, name=where, split=held_out_name
    )


def _hub_splits(dataset_name, dataset_config_name, train_data_dir, image_column, cache_dir, eval_split,
                validation_fraction, seed, max_eval_images):
    """Load through `datasets`, choose the splits and the image column; images left undecoded (bytes/paths)."""
    import datasets

    if dataset_name is not None and train_data_dir is not None:
        raise ValueError(
            f"give either --dataset_name ({dataset_name!r}) or --train_data_dir ({train_data_dir!r}), not both"
        )
    dataset_dict, where = _load_dataset_dict(dataset_name, dataset_config_name, train_data_dir, cache_dir)
    train, held_out, held_out_name = _held_out(dataset_dict, eval_split, validation_fraction, seed, where)
    column = _image_column(train, image_column, where)
    train = train.cast_column(column, datasets.Image(decode=False))
    held_out = held_out.cast_column(column, datasets.Image(decode=False))
    held_out = held_out.select(_spread_indices(len(held_out), max_eval_images))
    return where, column, train, held_out, held_out_name


def _scan_splits(parts, column, where, resolution) -> tuple[int, int]:
    """Check every split is non-empty and decodes; return (channels, resolution) chosen from the data."""
    modes, sizes = set(), set()
    for split, part in parts:
        if len(part) == 0:
            raise ValueError(f"{where}: split {split!r} is empty")
        part_modes, part_sizes = _scan_images(part, column, where, split)
        modes |= part_modes
        sizes |= part_sizes
    channels = 1 if modes <= GREY_MODES else 3
    return channels, _check_resolution(resolution, sizes, where)

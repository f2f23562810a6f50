"""Image datasets through 🤗 ``datasets`` (a Hub id, a local dataset folder or an image folder), their held-out split,
and every check made before training starts; the built-in digits when no source is named."""

from __future__ import annotations

import os
from typing import NamedTuple

from ..errors import ParameterError
from .dataset import ImageData, ImageDataset, check_resolution, spread_indices
from .digits import DIGITS_CLASS_NAMES, DIGITS_NAMES, digits_dataset
from .labels import read_labels, split_labels
from .transforms import COLOUR_MODES, GREY_MODES, describe_image, open_stored_image

HELD_OUT_SPLITS = ("test", "validation", "valid", "val")


class Source(NamedTuple):
    """Where the images come from: the parameter that named them (``dataset_name`` or ``train_data_dir``) and its
    value. Errors about the data name that parameter."""

    parameter: str
    value: str

    def __str__(self) -> str:
        return f"{self.parameter} {self.value!r}"

    def error(self, detail: str) -> ParameterError:
        return ParameterError(self.parameter, f"{self.value!r}: {detail}")


def _load_dataset_dict(dataset_name, dataset_config_name, train_data_dir, cache_dir):
    """``datasets.load_dataset`` → (a DatasetDict, its :class:`Source`); a failure is a ParameterError naming it."""
    import datasets

    if train_data_dir is not None:
        source = Source("train_data_dir", train_data_dir)
        if not os.path.isdir(train_data_dir):
            raise source.error("is not a directory")
        args, kwargs = ("imagefolder",), {"data_dir": train_data_dir}
    else:
        source = Source("dataset_name", dataset_name)
        args, kwargs = (dataset_name, dataset_config_name), {}
    try:
        loaded = datasets.load_dataset(*args, cache_dir=cache_dir, **kwargs)
    except (FileNotFoundError, ConnectionError, ValueError, datasets.exceptions.DatasetsError) as error:
        # ValueError: e.g. 'Instruction "test" corresponds to no data!' for a split without rows
        offline = " (HF_HUB_OFFLINE is set: only datasets already in the local cache can be loaded)"
        raise source.error(f"could not be loaded{offline if datasets.config.HF_HUB_OFFLINE else ''}: {error}") from error
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded, source


def _image_column(dataset, image_column: str | None, source: Source) -> str:
    """The column holding the images: ``image_column`` if given (checked), else the single ``Image`` feature."""
    import datasets

    features = dataset.features
    if image_column is not None:
        if image_column not in features:
            raise ParameterError("image_column", f"{image_column!r} is not a column of {source}; its columns are "
                                                 f"{list(features)}")
        if not isinstance(features[image_column], datasets.Image):
            raise ParameterError("image_column", f"{image_column!r} of {source} holds {features[image_column]!r}, "
                                                 "not images (a datasets.Image feature)")
        return image_column
    candidates = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise source.error(f"has no image column (datasets.Image feature); its features are {dict(features)}")
    raise ParameterError("image_column", f"is needed: {source} has several image columns {candidates}")


def _scan_images(dataset, column: str, source: Source, split: str) -> tuple[set[str], set[tuple[int, int]]]:
    """Decode every image once (full decode, not just the header); return the modes and sizes seen."""
    modes, sizes = set(), set()
    for start in range(0, len(dataset), 512):
        stored_batch = dataset[start : start + 512][column]
        for offset, stored in enumerate(stored_batch):
            image_name = describe_image(stored, split, column, start + offset)
            try:
                image = open_stored_image(stored)
            except ValueError as error:
                raise source.error(f"{image_name} cannot be decoded: {error}") from error
            if image.mode not in GREY_MODES | COLOUR_MODES:
                raise source.error(f"{image_name} has the unsupported mode {image.mode!r}")
            modes.add(image.mode)
            sizes.add(image.size)
    return modes, sizes


def _held_out(dataset_dict, eval_split, validation_fraction, seed, source: Source):
    """(train split, held-out split, held-out name): the dataset's own split, else a seeded random fraction."""
    names = list(dataset_dict)
    if "train" in dataset_dict:
        train_name = "train"
    elif len(names) == 1:
        train_name = names[0]
    else:
        raise source.error(f"has no 'train' split; its splits are {names}")
    if eval_split is not None:
        if eval_split not in dataset_dict:
            raise ParameterError("split", f"{eval_split!r} is not in {source}; its splits are {names}")
        return dataset_dict[train_name], dataset_dict[eval_split], eval_split
    for name in HELD_OUT_SPLITS:
        if name in dataset_dict:
            return dataset_dict[train_name], dataset_dict[name], name
    if not 0.0 < validation_fraction < 1.0:
        raise ParameterError("validation_fraction", f"must be in (0, 1): {source} has no test/validation split; "
                                                    f"got {validation_fraction}")
    train = dataset_dict[train_name]
    if len(train) < 2:
        raise source.error(f"has {len(train)} image(s) in split {train_name!r}: too few to hold some out")
    parts = train.train_test_split(test_size=validation_fraction, seed=seed)
    return parts["train"], parts["test"], f"{train_name}[validation_fraction={validation_fraction}, seed={seed}]"


def is_digits(dataset_name: str | None, train_data_dir: str | None) -> bool:
    """The source is the built-in digits: neither a dataset (other than 'digits') nor a folder is named."""
    return train_data_dir is None and (dataset_name is None or dataset_name in DIGITS_NAMES)


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
    label_column: str | None = None,
) -> ImageData:
    """The training images and a held-out split, checked and ready for a DataLoader.

    Source: the built-in digits when neither ``dataset_name`` nor ``train_data_dir`` is given (or
    ``dataset_name="digits"``); else ``datasets.load_dataset(dataset_name, dataset_config_name)`` (a Hub id,
    served from the local cache under ``HF_HUB_OFFLINE=1``, or a local dataset folder) or the image folder
    ``train_data_dir`` (``imagefolder``; ``train/``/``test/`` sub-folders become splits).

    Held out: ``eval_split`` if given, else the dataset's ``test``, ``validation``, ``valid`` or ``val`` split,
    else a ``validation_fraction`` of the train split drawn with ``seed``. ``max_eval_images`` keeps that many
    held-out images, evenly spread over the split. The held-out set is centre-cropped and never flipped.

    Checked before returning (each failure is a ``ParameterError`` naming the parameter — ``dataset_name`` or
    ``train_data_dir``, ``image_column``, ``resolution`` … — and the dataset, column, split or file):
    both ``dataset_name`` and ``train_data_dir`` given; the source cannot be loaded (missing folder, a Hub id
    not in the cache offline); ``image_column`` missing or not a ``datasets.Image`` feature (or no or several
    image columns when it is not given); an empty train or held-out split; every image of both splits is fully
    decoded once with PIL — a corrupt or unreadable file, or a mode other than grey (1, L, LA, 16-bit I) or
    colour (RGB, RGBA, P, CMYK, …), is reported with its index and file; ``resolution`` not given while the
    images are not all square of one size. Channels: 1 if every image is grey, else 3 (grey images are then
    repeated to RGB).

    ``label_column``: for class-conditional training, both splits also carry the class labels of this column (a
    ``ClassLabel`` or integer column; ``imagefolder``'s class sub-folders give ``label``; the digits their digit,
    whatever the name), and ``class_names`` is set (:func:`~hf_ddpm.data.labels.read_labels` checks them).
    """
    if is_digits(dataset_name, train_data_dir):
        if eval_split not in (None, "test"):
            raise ParameterError("eval_split", f"must be 'test' for the digits (their only held-out split), got {eval_split!r}")
        labelled = label_column is not None
        train = digits_dataset(
            "train", resolution=resolution, center_crop=center_crop, random_flip=random_flip, seed=seed,
            with_labels=labelled,
        )
        held_out = digits_dataset("test", resolution=resolution, num_images=max_eval_images, seed=seed,
                                  with_labels=labelled)
        return ImageData(train, held_out, 1, train.resolution, "digits", "test",
                         class_names=DIGITS_CLASS_NAMES if labelled else None)
    source, column, train, held_out, held_out_name = _hub_splits(
        dataset_name, dataset_config_name, train_data_dir, image_column, cache_dir, eval_split,
        validation_fraction, seed, max_eval_images,
    )
    train_labels = held_out_labels = class_names = None
    if label_column is not None:  # checked before the images are decoded
        train_labels, held_out_labels, class_names = read_labels(train, held_out, label_column, source)
    channels, resolution = _scan_splits([("train", train), (held_out_name, held_out)], column, source, resolution)
    common = dict(resolution=resolution, channels=channels, image_column=column, seed=seed, name=source.value)
    return ImageData(
        train=ImageDataset(train, center_crop=center_crop, random_flip=random_flip, split="train",
                           labels=train_labels, **common),
        eval=ImageDataset(held_out, split=held_out_name, labels=held_out_labels, **common),
        channels=channels,
        resolution=resolution,
        name=source.value,
        eval_split=held_out_name,
        class_names=class_names,
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
    label_column: str | None = None,
) -> ImageDataset:
    """The held-out images alone (centre-cropped, unflipped), chosen and checked as in :func:`load_image_data`.

    ``split=None`` picks the same held-out split training used (with the same ``validation_fraction`` and
    ``seed`` when the dataset has none); ``split="train"`` etc. names one. Only the chosen split is decoded.
    ``label_column``: the images' class labels too (the digits: their digit).
    """
    if is_digits(dataset_name, train_data_dir):
        return digits_dataset("test" if split is None else split, resolution=resolution, num_images=num_images,
                              with_labels=label_column is not None)
    source, column, _, held_out, held_out_name = _hub_splits(
        dataset_name, dataset_config_name, train_data_dir, image_column, cache_dir, split,
        validation_fraction, seed, num_images,
    )
    labels = None if label_column is None else split_labels(held_out, label_column, source)
    channels, resolution = _scan_splits([(held_out_name, held_out)], column, source, resolution)
    return ImageDataset(
        held_out, resolution=resolution, channels=channels, image_column=column, name=source.value,
        split=held_out_name, labels=labels,
    )


def _hub_splits(dataset_name, dataset_config_name, train_data_dir, image_column, cache_dir, eval_split,
                validation_fraction, seed, max_eval_images):
    """Load through `datasets`, choose the splits and the image column; images left undecoded (bytes/paths)."""
    import datasets

    if dataset_name is not None and train_data_dir is not None:
        raise ParameterError("train_data_dir", f"({train_data_dir!r}) cannot be given with dataset_name "
                                               f"({dataset_name!r}), not both: choose one source")
    dataset_dict, source = _load_dataset_dict(dataset_name, dataset_config_name, train_data_dir, cache_dir)
    train, held_out, held_out_name = _held_out(dataset_dict, eval_split, validation_fraction, seed, source)
    column = _image_column(train, image_column, source)
    train = train.cast_column(column, datasets.Image(decode=False))
    held_out = held_out.cast_column(column, datasets.Image(decode=False))
    held_out = held_out.select(spread_indices(len(held_out), max_eval_images))
    return source, column, train, held_out, held_out_name


def _scan_splits(parts, column, source: Source, resolution) -> tuple[int, int]:
    """Check every split is non-empty and decodes; return (channels, resolution) chosen from the data."""
    modes, sizes = set(), set()
    for split, part in parts:
        if len(part) == 0:
            raise source.error(f"split {split!r} is empty")
        part_modes, part_sizes = _scan_images(part, column, source, split)
        modes |= part_modes
        sizes |= part_sizes
    channels = 1 if modes <= GREY_MODES else 3
    return channels, check_resolution(resolution, sizes, str(source))

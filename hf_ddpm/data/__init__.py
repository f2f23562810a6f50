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

Modules: :mod:`.transforms` (8-bit conversion, resize, crop, flip, decoding), :mod:`.dataset` (``ImageDataset``),
:mod:`.digits` (the built-in digits), :mod:`.loading` (``datasets`` sources, splits and the checks before training).
"""

from .dataset import ImageData, ImageDataset
from .digits import DIGITS_LEVELS, DIGITS_RESOLUTION, digits_dataset, digits_split, digits_uint8
from .loading import is_digits, load_eval_images, load_image_data
from .transforms import crop_and_flip, model_range_to_uint8, resize_image, to_8bit, uint8_to_model_range

__all__ = ["DIGITS_LEVELS", "DIGITS_RESOLUTION", "ImageData", "ImageDataset", "crop_and_flip", "digits_dataset",
           "digits_split", "digits_uint8", "is_digits", "load_eval_images", "load_image_data", "model_range_to_uint8",
           "resize_image", "to_8bit", "uint8_to_model_range"]

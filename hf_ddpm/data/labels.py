"""Class labels for class-conditional training: read from a ``datasets`` column (an image folder's class sub-folders
give the ``label`` column of ``imagefolder``; a Hub dataset names its own), checked before training starts."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError


def _label_feature(dataset, column: str, source):
    """The feature of ``column``: a ``ClassLabel`` or an integer ``Value``; anything else is refused by name."""
    import datasets

    features = dataset.features
    if column not in features:
        raise ParameterError("label_column", f"{column!r} is not a column of {source}, whose columns are "
                                             f"{list(features)}: class-conditional training needs class labels (an "
                                             "image folder gives them through class sub-folders)")
    feature = features[column]
    if isinstance(feature, datasets.ClassLabel):
        return feature
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        return feature
    raise ParameterError("label_column", f"{column!r} of {source} holds {feature!r}, not integer class labels")


def split_labels(dataset, column: str, source) -> np.ndarray:
    """The label ids of ``column`` in one split (checked to be a label column)."""
    _label_feature(dataset, column, source)
    return np.asarray(dataset[column], dtype=np.int64)


def read_labels(train, held_out, column: str, source) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(training labels, held-out labels, class names): the ids of ``column`` in both splits, and each id's name —
    the ``ClassLabel`` names, or the ids as text for an integer column (classes 0 … max over the training split)."""
    feature = _label_feature(train, column, source)
    train_labels = split_labels(train, column, source)
    held_out_labels = split_labels(held_out, column, source)
    names = getattr(feature, "names", None)
    num_classes = len(names) if names else int(train_labels.max()) + 1
    for split, labels in (("training", train_labels), ("held-out", held_out_labels)):
        outside = labels[(labels < 0) | (labels >= num_classes)]
        if outside.size:
            raise ParameterError("label_column", f"{column!r} of {source} holds the {split} label "
                                                 f"{int(outside[0])}, outside the {num_classes} classes 0 … "
                                                 f"{num_classes - 1}")
    if len(np.unique(train_labels)) < 2:
        raise ParameterError("label_column", f"{column!r} of {source} holds a single class in the training split: "
                                             "nothing to condition on")
    return train_labels, held_out_labels, tuple(names) if names else tuple(str(i) for i in range(num_classes))

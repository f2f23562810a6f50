"""Reference points for the sample-quality numbers: what real, blurred and noise images score on the digits.

A number like "FD (digits classifier) = 3.1" means little alone: FD is biased upwards at small N and depends on
the features. These rows put it on a scale, at the same N as the samples being judged, against the digits' test
split: real train digits (the floor a perfect model would reach), the same digits blurred with a 3 × 3 box
filter, and uniform noise. Each row averages ``repeats`` disjoint draws and reports the spread.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import digits_split
from .quality import sample_quality

NUMBERS = ("fd", "inception_score", "precision", "recall")


def box_blur(images_uint8: np.ndarray) -> torch.Tensor:
    """3 × 3 box blur (edges replicated) of uint8 images (N, C, H, W) → float in [0, 1]."""
    x = torch.from_numpy(np.asarray(images_uint8)).float() / 255.0
    return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def reference_points(num_samples: int, *, repeats: int = 4, seed: int = 0, **quality_kwargs) -> list[dict]:
    """Rows {"name", "num_samples", "repeats", <number>_mean/_std for fd, score, precision, recall, "fd_name"}.

    Real and blurred rows use ``repeats`` disjoint sets of ``num_samples`` train digits (so at most
    1,438 // num_samples); noise rows ``repeats`` seeds. ``quality_kwargs`` go to :func:`sample_quality`
    (e.g. ``feature_model``).
    """
    train, _ = digits_split("train")
    test, _ = digits_split("test")
    if not 1 <= repeats <= len(train) // num_samples:
        raise ValueError(f"repeats must be in [1, {len(train) // num_samples}] for num_samples={num_samples}, "
                         f"got {repeats}")
    subsets = [train[i * num_samples:(i + 1) * num_samples] for i in range(repeats)]
    shape = (num_samples, *train.shape[1:])
    candidates = {
        "real train digits (floor)": subsets,
        "blurred train digits (3×3 box)": [box_blur(subset) for subset in subsets],
        "uniform noise": [np.random.default_rng(seed + i).uniform(size=shape).astype(np.float32)
                          for i in range(repeats)],
    }
    rows = []
    for name, sets in candidates.items():
        results = [sample_quality(images, test, progress=False, **quality_kwargs) for images in sets]
        row = {"name": name, "num_samples": num_samples, "num_reference": len(test), "repeats": repeats,
               "fd_name": results[0]["fd_name"], "feature_model": results[0]["feature_model"]}
        for key in NUMBERS:
            values = [r[key] for r in results if r[key] is not None]
            row[f"{key}_mean"] = float(np.mean(values)) if values else None
            row[f"{key}_std"] = float(np.std(values)) if values else None
        rows.append(row)
    return rows

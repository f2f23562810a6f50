"""Reference statistics: the feature mean and covariance of a dataset, computed once and saved, as pytorch-fid and
clean-fid keep them (``mu``, ``sigma`` in an ``.npz``), with the feature model that made them.

``hf-ddpm reference-stats --dataset … --split … --out stats.npz`` writes them; ``hf-ddpm evaluate --reference
stats.npz`` computes the Fréchet distance against them instead of against held-out images. FD needs only these two
moments; precision/recall need the reference features themselves, so they are not computed against a stats file.
Stats made with one feature model are refused for another: their distance would mean nothing.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from .statistics import covariance_factor, feature_moments, frechet_distance_of_moments

FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """``mean`` (D,) and ``covariance`` (D, D), float64, of ``num_images`` images' features under ``feature_model``
    (its name as the metrics report it), and ``source``: which images (dataset, split) in words."""

    mean: np.ndarray
    covariance: np.ndarray
    num_images: int
    feature_model: str
    source: str

    @classmethod
    def of_features(cls, features, feature_model: str, source: str) -> ReferenceStats:
        """The stats of a feature set (N, D) with N ≥ 2."""
        mean, factor = feature_moments(features, "features")
        return cls(mean, factor.T @ factor, len(np.asarray(features)), feature_model, source)

    def frechet_distance(self, features) -> float:
        """The Fréchet distance between a feature set (N, D) and these stats (``hf_ddpm.metrics.frechet_distance``,
        with the reference's covariance factored by its eigendecomposition)."""
        mean, factor = feature_moments(features, "generated features")
        if mean.shape != self.mean.shape:
            raise ParameterError("reference", f"holds {self.mean.shape[0]}-dimensional features, the samples' have "
                                              f"{mean.shape[0]}")
        return frechet_distance_of_moments(mean, factor, self.mean, covariance_factor(self.covariance))

    def save(self, path: str) -> None:
        """Write ``mu``, ``sigma`` (pytorch-fid's and clean-fid's names), ``num_images``, ``feature_model``,
        ``source`` and ``format_version`` to ``path`` (``.npz``), atomically."""
        from ..atomic_files import atomic_write

        atomic_write(path, lambda handle: np.savez(
            handle, mu=self.mean, sigma=self.covariance, num_images=np.int64(self.num_images),
            feature_model=np.str_(self.feature_model), source=np.str_(self.source),
            format_version=np.int64(FORMAT_VERSION)))

    @classmethod
    def load(cls, path: str, feature_model: str | None = None, parameter: str = "reference") -> ReferenceStats:
        """Read stats written by :meth:`save`; ``feature_model``: the name of the features they will be compared with,
        refused when the stats were made with another. Any problem is one ParameterError naming ``parameter``."""
        try:
            with np.load(path) as data:
                missing = {"mu", "sigma", "feature_model"} - set(data.files)
                if missing:
                    raise ParameterError(parameter, f"{path!r} lacks {sorted(missing)}: not a stats file of hf-ddpm "
                                                    "reference-stats (which records the feature model)")
                stats = cls(data["mu"].astype(np.float64), data["sigma"].astype(np.float64),
                            int(data["num_images"]) if "num_images" in data.files else 0, str(data["feature_model"]),
                            str(data["source"]) if "source" in data.files else "unknown")
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
            if isinstance(error, ParameterError):
                raise
            raise ParameterError(parameter, f"{path!r} is not a readable .npz stats file ({error})") from error
        d = stats.mean.shape[0] if stats.mean.ndim == 1 else -1
        if d < 1 or stats.covariance.shape != (d, d) or not np.isfinite(stats.covariance).all():
            raise ParameterError(parameter, f"{path!r}: mu has shape {stats.mean.shape} and sigma "
                                            f"{stats.covariance.shape}; expected (D,) and a finite (D, D)")
        if feature_model is not None and stats.feature_model != feature_model:
            raise ParameterError(parameter, f"{path!r} was computed with the features of {stats.feature_model!r}, "
                                            f"but this evaluation uses {feature_model!r}: their distance would mean "
                                            "nothing; use the same --feature-model, or compute the stats again")
        return stats

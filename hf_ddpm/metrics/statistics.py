"""Sample-quality statistics on feature sets and class probabilities, in float64.

Each function takes plain arrays (numpy or torch, converted to float64) and returns plain Python numbers:
the feature networks that produce the arrays live in :mod:`hf_ddpm.metrics.features`.

- :func:`frechet_distance`: the Fréchet (2-Wasserstein) distance between Gaussians fitted to two feature sets.
- :func:`inception_score`: the Inception-style score exp E_x KL(p(y|x) ‖ p(y)) of class probabilities.
- :func:`inception_score_splits`: its mean and spread over splits, as papers report it.
- :func:`class_histogram`: how many samples a classifier puts in each class.
- :func:`label_accuracy`: the share of samples a classifier puts in the class they were generated for.
- :func:`precision_recall`: fidelity and coverage on k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ParameterError

_PR_BLOCK = 1024  # rows of the distance matrix held at once by precision_recall


def _feature_matrix(x, name: str) -> np.ndarray:
    """``x`` as a finite float64 matrix (N, D) with N ≥ 2, or a ValueError naming ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ParameterError(name, f"must be a feature matrix shaped (N, D), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ParameterError(name, f"needs at least 2 rows (samples), got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ParameterError(name, "holds non-finite values (NaN or inf)")
    return x


def covariance_factor(covariance: np.ndarray) -> np.ndarray:
    """A matrix F (D × D) with FᵀF = ``covariance`` (symmetric positive semi-definite): diag(√w) Vᵀ from its
    eigendecomposition, negative rounding in w clipped to 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))).T


def _covariance_factor(centered: np.ndarray) -> np.ndarray:
    """A matrix F (min(N, D) × D) with FᵀF = the sample covariance of the centered rows.

    With N ≤ D the scaled centered data is such a factor as it is (no D × D matrix is formed, nothing is lost to
    rank deficiency); with N > D it is :func:`covariance_factor` of the D × D covariance.
    """
    n, d = centered.shape
    if n <= d:
        return centered / np.sqrt(n - 1)
    return covariance_factor(centered.T @ centered / (n - 1))


def feature_moments(x, name: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """The mean (D,) and a covariance factor F (FᵀF = the unbiased covariance) of a feature set (N, D), float64."""
    x = _feature_matrix(x, name)
    mean = x.mean(axis=0)
    return mean, _covariance_factor(x - mean)


def frechet_distance_of_moments(mean_a: np.ndarray, factor_a: np.ndarray, mean_b: np.ndarray,
                                factor_b: np.ndarray) -> float:
    """The Fréchet distance of :func:`frechet_distance` between Gaussians given by means and covariance factors
    (FᵢᵀFᵢ = Σᵢ): ‖μ₁ − μ₂‖² + ‖F₁‖² + ‖F₂‖² − 2 ‖F₁ F₂ᵀ‖_*, clipped at 0."""
    if mean_a.shape != mean_b.shape:
        raise ParameterError("mean_b", f"has feature dimension {mean_b.shape[0]}, that of mean_a is "
                                       f"{mean_a.shape[0]}: the two feature sets must have the same dimension")
    cross_trace = np.linalg.svd(factor_a @ factor_b.T, compute_uv=False).sum()
    d2 = np.sum((mean_a - mean_b) ** 2) + np.sum(factor_a**2) + np.sum(factor_b**2) - 2.0 * cross_trace
    return float(max(d2, 0.0))


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N₁, D) and ``b`` (N₂, D), in float64.

    d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½, with unbiased (N − 1) covariances. This is the
    quantity called FID when the features are Inception-v3's; name it after the features used (``FD_DINOv2``).

    The trace term is computed as the nuclear norm ‖F₁ F₂ᵀ‖_* of covariance factors (FᵢᵀFᵢ = Σᵢ), which equals
    tr (Σ₁^½ Σ₂ Σ₁^½)^½ exactly, and a factor is the centered data itself when N ≤ D. So no matrix square root of
    a singular matrix is ever taken: the result is exact to rounding for well-conditioned covariances and stays
    finite and accurate when N < D. Measured against ``eigvals(Σ₁Σ₂)`` (torchmetrics' route) and
    ``scipy.linalg.sqrtm``: those err by ~5e-8 relative at N = 100, D = 768 and give FD(x, x) ≈ −1e-4 there;
    this route gives ≤ 1e-12 (see benchmarks/bench_metrics.py). Rounding can leave d² a hair below zero
    (~1e-13 relative); it is clipped at 0.
    """
    a = _feature_matrix(a, "a")
    b = _feature_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ParameterError("b", f"has feature dimension {b.shape[1]}, a has {a.shape[1]}: a and b must have the "
                                  "same feature dimension")
    return frechet_distance_of_moments(*feature_moments(a, "a"), *feature_moments(b, "b"))


def _probability_matrix(probs) -> np.ndarray:
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().numpy()
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] < 1:
        raise ParameterError("probs", f"must be class probabilities shaped (N, K) with N ≥ 1, got shape "
                                      f"{probs.shape}")
    if not np.isfinite(probs).all() or probs.min() < 0 or np.abs(probs.sum(axis=1) - 1.0).max() > 1e-4:
        raise ParameterError("probs", "must be non-negative rows summing to 1 (pass softmax(logits), not logits)")
    return probs


def inception_score(probs) -> float:
    """Inception-style score exp(E_x KL(p(y|x) ‖ p(y))) of class probabilities ``probs`` (N, K), in float64.

    p(y) is the mean of the rows; 0·log 0 counts as 0. It lies in [1, K]: K when the samples are confidently
    classified and spread evenly over the K classes, 1 when every sample gets the same prediction. Computed on
    the whole set at once: torchmetrics' ``InceptionScore`` instead averages over splits of a permutation drawn from
    the global RNG, which makes the number depend on unrelated random state, and with a few hundred samples each
    split's p(y) is noisy. Name it after the classifier ("IS (digits classifier)").
    """
    probs = _probability_matrix(probs)
    marginal = probs.mean(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * (np.log(probs) - np.log(marginal)), 0.0)
    return float(np.exp(terms.sum(axis=1).mean()))


def inception_score_splits(probs, splits: int = 10) -> list[float]:
    """[mean, standard deviation] of :func:`inception_score` over ``splits`` consecutive equal parts of ``probs``:
    the form Salimans et al.'s code reports and papers quote (10 splits of 50,000 samples)."""
    probs = _probability_matrix(probs)
    if not 1 <= splits <= len(probs):
        raise ParameterError("splits", f"must be in [1, {len(probs)}], got {splits}")
    scores = [inception_score(part) for part in np.array_split(probs, splits)]
    return [float(np.mean(scores)), float(np.std(scores))]


def class_histogram(probs) -> list[int]:
    """Number of samples whose most probable class is k, for each of the K classes of ``probs`` (N, K)."""
    probs = _probability_matrix(probs)
    return np.bincount(probs.argmax(axis=1), minlength=probs.shape[1]).tolist()


def label_accuracy(probs, requested) -> float:
    """The share of the N samples whose most probable class under ``probs`` (N, K) is the one they were generated
    for, ``requested`` (N class indices in 0 … K − 1): a class-conditional generator's label accuracy."""
    probs = _probability_matrix(probs)
    requested = np.asarray(requested, dtype=np.int64)
    if requested.shape != (len(probs),) or (requested < 0).any() or (requested >= probs.shape[1]).any():
        raise ParameterError("requested", f"must hold one class index in [0, {probs.shape[1]}) per sample "
                                          f"({len(probs)}), got shape {requested.shape}")
    return float((probs.argmax(axis=1) == requested).mean())


def class_balance_chi2(histogram) -> float:
    """Pearson's χ² of class counts against even proportions, Σ_k (n_k − N/K)² / (N/K) on K − 1 degrees of freedom:
    about K − 1 for a balanced sample, large when the samples over- or under-draw classes."""
    counts = np.asarray(histogram, dtype=np.float64)
    if counts.ndim != 1 or len(counts) < 2 or counts.sum() <= 0 or (counts < 0).any():
        raise ParameterError("histogram", f"must hold at least two non-negative counts, not all 0; got "
                                          f"{histogram!r}")
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2).sum() / expected)


def _kth_neighbour_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row (the row itself is the 0-th)."""
    return torch.cat([torch.cdist(block, x).kthvalue(k + 1, dim=1).values for block in x.split(_PR_BLOCK)])


def _inside_manifold(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether each point lies in at least one ball (center, radius)."""
    return torch.cat([(torch.cdist(block, centers) <= radii).any(dim=1) for block in points.split(_PR_BLOCK)])


def precision_recall(reference, generated, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``generated`` against ``reference`` features.

    Each set's manifold is the union of balls around its points with radius the distance to the point's k-th
    nearest neighbour in the same set. Precision: the fraction of generated points inside the reference manifold
    (fidelity). Recall: the fraction of reference points inside the generated manifold (coverage).
    Distances in float64; memory O(1024 · N).
    """
    reference = torch.from_numpy(_feature_matrix(reference, "reference"))
    generated = torch.from_numpy(_feature_matrix(generated, "generated"))
    if reference.shape[1] != generated.shape[1]:
        raise ParameterError("generated", f"has feature dimension {generated.shape[1]}, reference has "
                                          f"{reference.shape[1]}: they must have the same feature dimension")
    smallest = min(len(reference), len(generated))
    if not 1 <= k < smallest:
        raise ParameterError("k", f"must satisfy 1 ≤ k < the smaller set size ({smallest}), got k={k}")
    precision = _inside_manifold(generated, reference, _kth_neighbour_radii(reference, k)).double().mean()
    recall = _inside_manifold(reference, generated, _kth_neighbour_radii(generated, k)).double().mean()
    return float(precision), float(recall)

"""The held-out bound of a pipeline on a dataset, summarised for people and JSON, and its per-timestep plot."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .likelihood import VariationalBound


@dataclass
class BoundSummary:
    """The bound (bits/dim) averaged over ``num_images`` held-out images, split into its parts.

    ``bits_per_dim = prior + decoder_contribution + rate`` exactly, where ``prior`` is L_T, ``rate`` is
    T/K · Σ_{t∈S, t≥1} L_t (Σ_{t≥1} L_t when all T timesteps were evaluated) and the decoder's contribution is
    T/K · L_0 if timestep 0 is in the evaluated set S (``decoder`` is L_0 as measured, None if not evaluated).
    ``standard_error``: over the images; when only K < T timesteps were evaluated, the error from choosing them
    (T² (1 − K/T) Var_t[L̄_t] / K, without-replacement sampling) is added in quadrature.
    ``timesteps`` and ``terms`` (mean term per timestep, ascending t) are lists, ready for JSON.
    """

    bits_per_dim: float
    standard_error: float
    prior: float
    decoder: float | None
    rate: float
    num_images: int
    num_timesteps: int
    num_train_timesteps: int
    timesteps: list[int]
    terms: list[float]

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """A few human-readable lines."""
        subset = self.num_timesteps < self.num_train_timesteps
        estimate = f" (unbiased estimate from {self.num_timesteps} of {self.num_train_timesteps} timesteps)"
        decoder = "not evaluated" if self.decoder is None else f"{self.decoder:.4f}"
        largest = max(range(len(self.terms)), key=self.terms.__getitem__)
        return "\n".join(
            [
                f"bound: {self.bits_per_dim:.4f} ± {self.standard_error:.4f} bits/dim on {self.num_images} images"
                + (estimate if subset else ""),
                f"  L_T (prior)          {self.prior:.6f}",
                f"  L_0 (decoder)        {decoder}",
                f"  rate Σ L_(t-1), t>1  {self.rate:.4f}",
                f"  largest term: t={self.timesteps[largest]} with {self.terms[largest]:.4f} bits/dim",
            ]
        )


def summarize_bound(bound: VariationalBound, num_train_timesteps: int) -> BoundSummary:
    """Average a per-image ``VariationalBound`` into a :class:`BoundSummary`."""
    total = bound.total.double().cpu()
    terms = bound.terms.double().cpu()
    timesteps = bound.timesteps.cpu()
    count, k = terms.shape
    scale = num_train_timesteps / k
    mean_terms = terms.mean(dim=0)
    has_decoder = bool((timesteps == 0).any())
    decoder = float(mean_terms[timesteps == 0].sum()) if has_decoder else None
    rate = float(mean_terms[timesteps > 0].sum()) * scale
    variance = float(total.var(unbiased=True)) / count if count > 1 else 0.0
    if 1 < k < num_train_timesteps:
        fraction_left = 1.0 - k / num_train_timesteps
        variance += num_train_timesteps**2 * fraction_left * float(mean_terms.var(unbiased=True)) / k
    return BoundSummary(
        bits_per_dim=float(total.mean()),
        standard_error=math.sqrt(variance),
        prior=float(bound.prior.double().mean()),
        decoder=decoder,
        rate=rate,
        num_images=count,
        num_timesteps=k,
        num_train_timesteps=num_train_timesteps,
        timesteps=[int(t) for t in timesteps],
        terms=[float(v) for v in mean_terms],
    )


def plot_terms(summary: BoundSummary, path: str, title: str | None = None) -> None:
    """Save a plot of the mean term L_t (bits/dim, log scale) against t; L_0 is marked apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timesteps = torch.tensor(summary.timesteps)
    terms = torch.tensor(summary.terms)
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    later = timesteps > 0
    marker = "." if summary.num_timesteps < summary.num_train_timesteps else None
    axes.plot(timesteps[later], terms[later].clamp_min(1e-12), marker=marker, lw=1, label="L_t = KL term")
    if summary.decoder is not None:
        axes.plot([0], [summary.decoder], "o", color="C3", label="L_0 = decoder NLL")
    axes.set_yscale("log")
    axes.set_xlabel("timestep t")
    axes.set_ylabel("bits/dim")
    axes.set_title(title or f"per-timestep terms; bound {summary.bits_per_dim:.3f} bits/dim")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

"""The held-out bound of a pipeline on a dataset, summarised for people and JSON, and its per-timestep plot."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .likelihood import VariationalBound


@dataclass
class BoundSummary:
    """The bound (bits/dim) averaged over ``num_images`` held-out images, split into its parts.

    ``bits_per_dim = prior + decoder_contribution + rate`` exactly, where ``prior`` is L_T, ``rate`` is the
    weighted sum of the evaluated L_t, t ≥ 1 (see :func:`summarize_bound`; Σ_{t≥1} L_t when all T timesteps were
    evaluated) and the decoder's contribution is L_0 times its weight (``decoder`` is L_0 as measured, None if
    not evaluated). ``standard_error``: over the images, plus the error of the drawn timesteps when fewer than T
    were evaluated.
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


def summarize_bound(bound: VariationalBound, num_train_timesteps: int, exact: int = 0) -> BoundSummary:
    """Average a per-image ``VariationalBound`` into a :class:`BoundSummary`.

    ``bound`` holds its ``exact`` first columns for the ``exact`` smallest timesteps (evaluated exactly) and the
    rest for k timesteps drawn uniformly without replacement from the other T − exact; the estimate is
    L_T + Σ_{t<exact} L_t + (T − exact)/k · Σ_{t∈S} L_t (with ``exact = 0``: L_T + T/k · Σ_S L_t, the bound itself
    when k = T). The error of choosing S, (T−exact)² (1 − k/(T−exact)) Var_{t∈S}[L̄_t] / k, is added in
    quadrature to the spread over images."""
    T = num_train_timesteps
    terms = bound.terms.double().cpu()
    timesteps = bound.timesteps.cpu()
    count, columns = terms.shape
    drawn = columns - exact
    scale = torch.ones(columns, dtype=torch.float64)
    scale[exact:] = (T - exact) / drawn
    total = bound.prior.double().cpu() + (terms * scale).sum(dim=1)
    mean_terms = terms.mean(dim=0)
    variance = float(total.var(unbiased=True)) / count if count > 1 else 0.0
    if 1 < drawn < T - exact:
        variance += (T - exact) ** 2 * (1 - drawn / (T - exact)) * float(mean_terms[exact:].var(unbiased=True)) / drawn
    has_decoder = bool((timesteps == 0).any())
    return BoundSummary(
        bits_per_dim=float(total.mean()),
        standard_error=math.sqrt(variance),
        prior=float(bound.prior.double().mean()),
        decoder=float(mean_terms[timesteps == 0].sum()) if has_decoder else None,
        rate=float((mean_terms * scale)[timesteps > 0].sum()),
        num_images=count,
        num_timesteps=columns,
        num_train_timesteps=T,
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

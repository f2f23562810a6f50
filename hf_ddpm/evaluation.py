"""The per-timestep plot of a held-out bound."""

from __future__ import annotations

from .variational_bound import VariationalBound


def plot_terms(bound: VariationalBound, path: str, title: str | None = None) -> None:
    """Save a plot of the mean term L_t (bits/dim, log scale) against t; L_0 is marked apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timesteps, terms = bound.timesteps, bound.term_means
    decoder = bound.plan.decoder_mask
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    marker = None if bound.plan.is_complete else "."
    axes.plot(timesteps[~decoder], terms[~decoder].clamp_min(1e-12), marker=marker, lw=1, label="L_t = KL term")
    if bound.decoder is not None:
        axes.plot(timesteps[decoder], terms[decoder], "o", color="C3", label="L_0 = decoder NLL")
    axes.set_yscale("log")
    axes.set_xlabel("timestep t")
    axes.set_ylabel("bits/dim")
    axes.set_title(title or f"per-timestep terms; bound {bound.bits_per_dim:.3f} bits/dim")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

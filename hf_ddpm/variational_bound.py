"""The variational bound of a set of images, per image and per term, and what follows from it: the total (Eq. 5),
its standard error, the per-term summary, a description for people and a JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .timestep_plan import TimestepPlan


@dataclass(frozen=True, eq=False)
class VariationalBound:
    """The bound of ``num_images`` images in bits/dim, as evaluated under ``plan``: the bound of ``plan.chain`` (the
    training chain, or a sampling chain of fewer steps).

    ``prior`` [B]: L_T of each image, at the chain's last step; ``terms`` [B, K]: each image's term at
    ``plan.timesteps`` (ascending t; the column of the chain's first step is the decoder L_0 = −log p_θ(x_0 | x_{τ_0}),
    the others KL terms). Everything else
    is derived from these and the plan's weights: ``total`` [B] = L_T + Σ_k w_k L_{t_k} (the bound itself when the
    plan evaluates every term, else an unbiased estimate of it).
    """

    plan: TimestepPlan
    prior: torch.Tensor
    terms: torch.Tensor

    def __post_init__(self):
        K = len(self.plan.timesteps)
        if self.terms.ndim != 2 or self.terms.shape[1] != K or self.prior.shape != self.terms.shape[:1]:
            raise ValueError(
                f"terms must be [images, {K}] and prior [images], got {tuple(self.terms.shape)} and "
                f"{tuple(self.prior.shape)}"
            )

    @property
    def timesteps(self) -> torch.Tensor:
        """[K]: the timesteps of the columns of ``terms``."""
        return self.plan.timesteps

    @property
    def total(self) -> torch.Tensor:
        """[B]: L_T + Σ_k w_k L_{t_k} per image."""
        return self.prior + self.terms @ self.plan.weights.to(self.terms.device, self.terms.dtype)

    def mean(self) -> float:
        """The bound averaged over the images, bits/dim."""
        return float(self.total.mean())

    @property
    def bits_per_dim(self) -> float:
        """The bound averaged over the images (:meth:`mean`), as the JSON form names it."""
        return self.mean()

    @property
    def num_images(self) -> int:
        return self.terms.shape[0]

    @property
    def num_timesteps(self) -> int:
        """K: how many terms were evaluated."""
        return self.terms.shape[1]

    @property
    def num_train_timesteps(self) -> int:
        return self.plan.num_train_timesteps

    @property
    def term_means(self) -> torch.Tensor:
        """[K] float64 on the CPU: each evaluated term averaged over the images."""
        return self.terms.double().mean(dim=0).cpu()

    @property
    def decoder(self) -> float | None:
        """L_0 averaged over the images, as measured (before its weight); None if it was not evaluated."""
        mask = self.plan.decoder_mask
        return float(self.term_means[mask].sum()) if bool(mask.any()) else None

    @property
    def rate(self) -> float:
        """The weighted sum of the mean KL terms (every evaluated term but the decoder)."""
        kl = ~self.plan.decoder_mask
        return float((self.term_means * self.plan.weights)[kl].sum())

    @property
    def standard_error(self) -> float:
        """The standard error of :attr:`bits_per_dim`: the spread of ``total`` over the images, plus, in quadrature,
        the error of the drawn timesteps S (k of the M = N − num_exact steps, drawn without replacement):
        M² (1 − k/M) Var_{t∈S}[L̄_t] / k, where L̄_t is the term's mean over the images."""
        plan, n = self.plan, self.num_images
        variance = float(self.total.double().var(unbiased=True)) / n if n > 1 else 0.0
        k, M = plan.num_drawn, plan.population
        if 1 < k < M:
            drawn_means = self.term_means[plan.num_exact :]
            variance += M**2 * (1 - k / M) * float(drawn_means.var(unbiased=True)) / k
        return math.sqrt(variance)

    def to_dict(self) -> dict:
        """The averages, ready for JSON (metrics.json, the model card, ``hf-ddpm evaluate --json``):
        bits_per_dim = prior + (the decoder's weighted contribution) + rate; ``chain``: the ascending timesteps of the
        chain whose bound it is (all T of them for the training chain)."""
        return {
            "bits_per_dim": self.bits_per_dim,
            "standard_error": self.standard_error,
            "prior": float(self.prior.double().mean()),
            "decoder": self.decoder,
            "rate": self.rate,
            "num_images": self.num_images,
            "num_timesteps": self.num_timesteps,
            "num_train_timesteps": self.num_train_timesteps,
            "chain": self.plan.chain.tolist(),
            "timesteps": self.timesteps.tolist(),
            "terms": self.term_means.tolist(),
        }

    def describe(self) -> str:
        """A few human-readable lines."""
        summary = self.to_dict()
        estimate = "" if self.plan.is_complete else \
            f" (unbiased estimate from {self.num_timesteps} of {len(self.plan.chain)} timesteps)"
        decoder = "not evaluated" if summary["decoder"] is None else f"{summary['decoder']:.4f}"
        largest = int(self.term_means.argmax())
        return "\n".join(
            [
                f"bound: {summary['bits_per_dim']:.4f} ± {summary['standard_error']:.4f} bits/dim on "
                f"{self.num_images} images{estimate}",
                f"  of {self.plan.describe_chain()}",
                f"  L_T (prior)          {summary['prior']:.6f}",
                f"  L_0 (decoder)        {decoder}",
                f"  rate Σ L_(t-1), t>1  {summary['rate']:.4f}",
                f"  largest term: t={summary['timesteps'][largest]} with {summary['terms'][largest]:.4f} bits/dim",
            ]
        )

    def cpu(self) -> VariationalBound:
        """The same bound with its per-image tensors on the CPU."""
        return replace(self, prior=self.prior.cpu(), terms=self.terms.cpu())

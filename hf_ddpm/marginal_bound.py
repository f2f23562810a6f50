"""The marginal bound of a class-conditional model, and the classifier it gives (``shared/docs/guidance-math.md``).

With the label frequencies π(y) the model's marginal is p(x) = Σ_y π(y) p(x | y), and p(x | y) ≥ 2^(−D·L_y(x)) for the
conditional bound L_y in bits/dim (D dimensions), so

    −log₂ p(x) / D ≤ −log₂ Σ_y π(y) 2^(−D·L_y(x)) / D,

a valid bound on the marginal, comparable with an unconditional model's. It lies in [min_y L_y, min_y L_y +
log₂(1/π(y*))/D] (y* the minimiser). argmin_y L_y(x) classifies x by its bound: a generative classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .variational_bound import VariationalBound


@dataclass(frozen=True, eq=False)
class MarginalBound:
    """The per-class bounds L_y of the same images (one :class:`VariationalBound` per class, all under the same plan
    and the same ε) and π(y): the marginal bound per image, its mean, and the generative classifier."""

    per_class: tuple[VariationalBound, ...]
    frequencies: torch.Tensor
    class_ids: torch.Tensor
    num_dims: int

    def __post_init__(self):
        if len(self.per_class) != len(self.frequencies) or len(self.per_class) != len(self.class_ids):
            raise ValueError(f"{len(self.per_class)} per-class bounds for {len(self.frequencies)} frequencies and "
                             f"{len(self.class_ids)} class ids")

    @property
    def class_totals(self) -> torch.Tensor:
        """[N, K] float64: L_y of each image under each class, bits/dim."""
        return torch.stack([bound.total.double() for bound in self.per_class], dim=1)

    @property
    def total(self) -> torch.Tensor:
        """[N] float64: −log₂ Σ_y π(y) 2^(−D·L_y) / D per image, computed with log-sum-exp in nats."""
        nats = self.class_totals * (self.num_dims * math.log(2.0))
        log_pi = self.frequencies.double().log().to(nats.device)
        return -torch.logsumexp(log_pi - nats, dim=1) / (self.num_dims * math.log(2.0))

    def mean(self) -> float:
        return float(self.total.mean())

    @property
    def bits_per_dim(self) -> float:
        """The marginal bound averaged over the images (:meth:`mean`)."""
        return self.mean()

    @property
    def num_images(self) -> int:
        return self.per_class[0].num_images

    @property
    def standard_error(self) -> float:
        """The spread of :attr:`total` over the images, and, in quadrature, the error of the drawn timesteps: every
        class shares the plan and ε and the marginal is a smooth minimum of the class bounds, so the largest class's
        timestep error is taken."""
        n = self.num_images
        spread = float(self.total.var(unbiased=True)) / n if n > 1 else 0.0
        timestep = max(max(b.standard_error**2 - (float(b.total.double().var(unbiased=True)) / n if n > 1 else 0.0),
                           0.0) for b in self.per_class)
        return math.sqrt(spread + timestep)

    @property
    def predicted_labels(self) -> torch.Tensor:
        """[N]: argmin_y L_y(x), as label ids (the generative classifier)."""
        return self.class_ids[self.class_totals.argmin(dim=1).cpu()]

    def accuracy(self, class_labels: torch.Tensor) -> float:
        """The share of images whose :attr:`predicted_labels` equal ``class_labels``."""
        return float((self.predicted_labels == class_labels.cpu()).double().mean())

    def to_dict(self) -> dict:
        """The averages, ready for JSON."""
        return {
            "bits_per_dim": self.bits_per_dim,
            "standard_error": self.standard_error,
            "num_images": self.num_images,
            "class_bits_per_dim": [bound.bits_per_dim for bound in self.per_class],
            "class_frequencies": self.frequencies.tolist(),
            "plan": self.per_class[0].plan.describe(),
        }

    def describe(self) -> str:
        return (f"marginal bound: {self.bits_per_dim:.4f} ± {self.standard_error:.4f} bits/dim on {self.num_images} "
                f"images (−log₂ Σ_y π(y) 2^(−D·L_y) / D over {len(self.per_class)} classes; "
                f"{self.per_class[0].plan.describe()})")

"""The marginal bound of a class-conditional model, and the classifier it gives (``shared/docs/guidance-math.md``).

With the label frequencies π(y) the model's marginal is p(x) = Σ_y π(y) p(x | y), and p(x | y) ≥ 2^(−D·L_y(x)) for the
conditional bound L_y in bits/dim (D dimensions), so

    −log₂ p(x) / D ≤ −log₂ Σ_y π(y) 2^(−D·L_y(x)) / D,

a valid bound on the marginal, comparable with an unconditional model's. It lies in [min_y L_y, min_y L_y +
log₂(1/π(y*))/D] (y* the minimiser). argmin_y L_y(x) classifies x by its bound: a generative classifier.

Every class's bound is evaluated under the same plan with the same ε (:func:`class_bounds`), so the differences
L_y − L_y' have little variance even when each L_y is estimated from a few timesteps. An estimate is anchored on the
full conditional bound of the true labels when there is one: L̂_y − L̂_true + L_true is still unbiased for L_y, with
the variance of the difference only (a control variate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .likelihood import estimate_bound
from .timestep_plan import TimestepPlan
from .variational_bound import VariationalBound, variance_of_mean


def class_bounds(model, scheduler, x0: torch.Tensor, plan: TimestepPlan, class_ids: torch.Tensor, *, seed: int = 0,
                 noise: torch.Tensor | None = None, batch_size: int | None = None) -> list[VariationalBound]:
    """L_y of images ``x0`` for every label id in ``class_ids``, each under ``plan`` with the same ε (``noise``, or
    drawn from one generator seeded by ``seed`` and replayed for every class); ``model(x_t, t, class_labels=y)``."""
    bounds = []
    for label in class_ids.tolist():
        generator = None if noise is not None else torch.Generator(device=x0.device).manual_seed(seed)
        labels = torch.full((x0.shape[0],), label, dtype=torch.long, device=x0.device)
        bounds.append(estimate_bound(model, scheduler, x0, plan, noise=noise, generator=generator,
                                     batch_size=batch_size, class_labels=labels).cpu())
    return bounds


@dataclass(frozen=True, eq=False)
class MarginalBound:
    """The bounds L_y of the same images under every class, ``class_totals`` [N, K] bits/dim (columns in the order of
    ``class_ids``), with π(y) ``frequencies``: the marginal bound per image, its mean and standard error, and the
    generative classifier. ``num_dims``: D; ``method``: how the L_y were evaluated, in words; ``timestep_variance``:
    the variance of the mean that the timestep draws add (0 for full bounds)."""

    class_totals: torch.Tensor
    frequencies: torch.Tensor
    class_ids: torch.Tensor
    num_dims: int
    method: str
    timestep_variance: float = 0.0

    def __post_init__(self):
        K = len(self.class_ids)
        if self.class_totals.ndim != 2 or self.class_totals.shape[1] != K or len(self.frequencies) != K:
            raise ValueError(f"class_totals must be [images, {K}] with {K} frequencies, got "
                             f"{tuple(self.class_totals.shape)} and {len(self.frequencies)}")

    @classmethod
    def from_class_bounds(cls, per_class: list[VariationalBound], frequencies: torch.Tensor, class_ids: torch.Tensor,
                          num_dims: int, *, anchor: VariationalBound | None = None,
                          labels: torch.Tensor | None = None) -> MarginalBound:
        """The marginal of per-class bounds (:func:`class_bounds`). ``anchor``: the conditional bound of the same
        images with their true ``labels``, evaluated more precisely (e.g. every timestep): each L̂_y is then
        L̂_y − L̂_true + L_true (unbiased, and as precise as the differences).

        The timestep variance is the delta method's: the marginal of image x moves with L_y by the posterior weight
        w_y(x) = π(y) 2^(−D·L_y) / Σ_y' π(y') 2^(−D·L_y'), so its drawn terms are Σ_y w_y(x) times the class's terms
        (their differences from the true class's, when anchored), whose timestep variance is taken."""
        totals = torch.stack([bound.total.double() for bound in per_class], dim=1)
        terms = torch.stack([bound.terms.double() for bound in per_class])  # [K, N, timesteps]
        plan = per_class[0].plan
        method = plan.describe()
        if anchor is not None:
            column = {label: k for k, label in enumerate(class_ids.tolist())}
            true = torch.tensor([column[label] for label in labels.tolist()])
            images = torch.arange(len(true))
            totals = totals - totals[images, true][:, None] + anchor.total.double()[:, None]
            terms = terms - terms[true, images]
            method += f", anchored on the true labels' bound ({anchor.plan.describe()})"
        marginal = cls(totals, frequencies.double(), class_ids, num_dims, method)
        moved = torch.einsum("nk,kns->ns", marginal.class_posterior, terms)  # the marginal's own drawn terms
        moved_bound = VariationalBound(plan, torch.zeros(len(totals), dtype=torch.float64), moved)
        variance = max(moved_bound.standard_error**2 - variance_of_mean(moved_bound.total), 0.0)
        return replace(marginal, timestep_variance=variance)

    def _log_joint(self) -> torch.Tensor:
        """[N, K] nats: log π(y) − D·L_y(x)·ln 2, the log of each class's share of the bound on p(x)."""
        nats = self.class_totals * (self.num_dims * math.log(2.0))
        return self.frequencies.log().to(nats.device) - nats

    @property
    def total(self) -> torch.Tensor:
        """[N] float64: −log₂ Σ_y π(y) 2^(−D·L_y) / D per image, computed with log-sum-exp in nats."""
        return -torch.logsumexp(self._log_joint(), dim=1) / (self.num_dims * math.log(2.0))

    @property
    def class_posterior(self) -> torch.Tensor:
        """[N, K]: w_y(x) = π(y) 2^(−D·L_y) / Σ_y' π(y') 2^(−D·L_y'), the posterior over the classes that the bounds
        give (the weight of L_y in the marginal: ∂ total / ∂ L_y)."""
        return torch.softmax(self._log_joint(), dim=1)

    def mean(self) -> float:
        return float(self.total.mean())

    @property
    def bits_per_dim(self) -> float:
        """The marginal bound averaged over the images (:meth:`mean`)."""
        return self.mean()

    @property
    def num_images(self) -> int:
        return self.class_totals.shape[0]

    @property
    def standard_error(self) -> float:
        """The spread of :attr:`total` over the images and, in quadrature, the error of the drawn timesteps (the
        delta method's, see :meth:`from_class_bounds`)."""
        return math.sqrt(variance_of_mean(self.total) + self.timestep_variance)

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
            "class_bits_per_dim": self.class_totals.mean(dim=0).tolist(),
            "class_frequencies": self.frequencies.tolist(),
            "method": self.method,
        }

    def describe(self) -> str:
        return (f"marginal bound: {self.bits_per_dim:.4f} ± {self.standard_error:.4f} bits/dim on {self.num_images} "
                f"images (−log₂ Σ_y π(y) 2^(−D·L_y) / D over {len(self.class_ids)} classes; {self.method})")

"""The variational bound of a set of images, per image and per term, and what follows from it: the total (Eq. 5),
its standard error, a warning where an estimate from few timesteps cannot be trusted, the per-term summary, a
description for people and a JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .errors import ParameterError
from .timestep_plan import TimestepPlan

NORMAL_TWO_SIGMA = math.erf(math.sqrt(2.0))  # P(|Z| ≤ 2) = 0.9545 for a standard normal Z
# When an estimate from drawn timesteps is not to be trusted (measured on the digits: docs/guides/bound-estimates.md).
MIN_TRUSTED_DRAWS = 6  # fewer: off by more than 10 % too often, even with the learned proposal
MAX_DRAW_ERROR = 0.15  # the draws' relative error without strata (learned or pilot proposal: ≈ 0.04 from 8 draws)

def student_two_sigma(dof: int) -> float:
    """t such that P(|T| ≤ t) = P(|Z| ≤ 2) for Student's T with ``dof`` ≥ 1 degrees of freedom: the half-width, in
    estimated standard errors, of the interval that holds the mean as often as ±2σ holds a normal variable. P(|T| ≤ t)
    is a finite sum in θ = atan(t/√dof) (Abramowitz & Stegun 26.7.3–4), solved for t by bisection."""

    def inside(t: float) -> float:
        theta = math.atan(t / math.sqrt(dof))
        cos2, term, total = math.cos(theta) ** 2, 1.0, 1.0
        if dof % 2:
            term = total = math.cos(theta) if dof > 1 else 0.0
            for k in range(3, dof - 1, 2):  # cos θ Π_{j<k} j/(j+1) … up to cos^{dof−2} θ
                term *= cos2 * (k - 1) / k
                total += term
            return 2 / math.pi * (theta + math.sin(theta) * total)
        for k in range(2, dof - 1, 2):
            term *= cos2 * (k - 1) / k
            total += term
        return math.sin(theta) * total

    low, high = 2.0, 1e4
    for _ in range(100):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if inside(middle) < NORMAL_TWO_SIGMA else (low, middle)
    return math.sqrt(low * high)


def variance_of_mean(values: torch.Tensor) -> float:
    """The variance of the mean of per-image ``values`` from their spread: Var/N (0 for a single image)."""
    n = len(values)
    return float(values.double().var(unbiased=True)) / n if n > 1 else 0.0


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
        if not isinstance(self.plan, TimestepPlan):
            raise ParameterError("plan", f"must be a TimestepPlan, got {type(self.plan).__name__}")
        for name in ("prior", "terms"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise ParameterError(name, f"must be a tensor, got {type(getattr(self, name)).__name__}")
        K = len(self.plan.timesteps)
        if self.terms.ndim != 2 or self.terms.shape[1] != K:
            raise ParameterError("terms", f"must be [images, {K}] (one column per timestep of the plan), got "
                                          f"{tuple(self.terms.shape)}")
        if self.prior.shape != self.terms.shape[:1]:
            raise ParameterError("prior", f"must be [images] = {tuple(self.terms.shape[:1])} like terms, got "
                                          f"{tuple(self.prior.shape)}")

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

    def _draw_contributions(self) -> torch.Tensor:
        """[n] float64: c_j = w_j L̄_{t_j}, each draw's weighted term mean."""
        plan = self.plan
        return plan.draw_weights * self.term_means[plan.draw_columns]

    @property
    def timestep_variance(self) -> float:
        """The variance the drawn timesteps add to :attr:`bits_per_dim`, estimated without bias from the draws
        (``hf_ddpm.timestep_plan``): Σ_h r_h / (r_h − 1) Σ_{j∈h} (c_j − c̄_h)² over the strata h of r_h draws, with
        c_j = w_j L̄_{t_j} (L̄_t: the term's mean over the images); 0 without draws. A stratum of one draw adds
        nothing (its variance cannot be estimated; :attr:`warning` says so)."""
        plan = self.plan
        if not len(plan.draws):
            return 0.0
        c = self._draw_contributions()
        sizes = torch.bincount(plan.strata).double()
        means = torch.zeros_like(sizes).index_add(0, plan.strata, c) / sizes.clamp(min=1)
        squares = torch.zeros_like(sizes).index_add(0, plan.strata, (c - means[plan.strata]) ** 2)
        estimable = sizes > 1
        return float((sizes[estimable] / (sizes[estimable] - 1) * squares[estimable]).sum())

    @property
    def timestep_degrees_of_freedom(self) -> int:
        """ν = n − H: the degrees of freedom of :attr:`timestep_variance` (n draws in H strata; 0 without draws)."""
        return len(self.plan.draws) - self.plan.num_strata

    @property
    def standard_error(self) -> float:
        """The standard error of :attr:`bits_per_dim`: the spread of ``total`` over the images, plus, in quadrature,
        the error of the drawn timesteps, √:attr:`timestep_variance` widened by t_ν / 2 (:func:`student_two_sigma`,
        ν = :attr:`timestep_degrees_of_freedom`): a variance estimated from few draws is itself uncertain, and with the
        widening ±2 SE holds the bound as often as ±2σ holds a normal variable (95 %), as measured on the digits
        (``docs/guides/bound-estimates.md``)."""
        spread = variance_of_mean(self.total)
        dof = self.timestep_degrees_of_freedom
        widening = (student_two_sigma(dof) / 2) ** 2 if dof > 0 else 1.0
        return math.sqrt(spread + widening * self.timestep_variance)

    @property
    def warning(self) -> str | None:
        """Why this estimate from drawn timesteps cannot be trusted, in plain words; None when it can (or when every
        term was evaluated). The rule, measured on the digits (``docs/guides/bound-estimates.md``): a stratum with
        a single draw (its error is unknown); fewer than :data:`MIN_TRUSTED_DRAWS` draws; or draws whose weighted
        terms c_j spread so much that their mean, without strata, would err by more than :data:`MAX_DRAW_ERROR` of
        itself (s / (c̄ √n)): the proposal does not follow the terms, the draws can miss where they are large, and
        the standard error with them."""
        plan = self.plan
        n = len(plan.draws)
        if not n:
            return None
        advice = "evaluate more timesteps (or all of them for the exact bound)"
        if bool((torch.bincount(plan.strata) < 2).any()):
            return f"not trustworthy: a stratum holds a single drawn timestep, whose error is unknown; {advice}"
        if n < MIN_TRUSTED_DRAWS:
            return (f"not trustworthy: only {n} drawn timesteps (estimates from fewer than {MIN_TRUSTED_DRAWS} are "
                    f"too often off by more than 10 %); {advice}")
        c = self._draw_contributions()
        spread = float(c.std() / c.mean()) if float(c.mean()) > 0 else math.inf
        if spread / math.sqrt(n) > MAX_DRAW_ERROR:
            return (f"not trustworthy: the drawn terms do not follow the proposal ({plan.proposal}); their weighted "
                    f"values spread by {spread:.0%} of their mean, too much for {n} draws: they may have missed where "
                    f"the terms are large, and the standard error with them; {advice}")
        return None

    def to_dict(self) -> dict:
        """The averages, ready for JSON (metrics.json, the model card, ``hf-ddpm evaluate --json``):
        bits_per_dim = prior + Σ_k weights_k terms_k = prior + (the decoder's weighted contribution) + rate; ``chain``:
        the ascending timesteps of the chain whose bound it is (all T of them for the training chain); ``warning``:
        :attr:`warning`."""
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
            "weights": self.plan.weights.tolist(),
            "warning": self.warning,
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
            + ([] if summary["warning"] is None else [f"  warning: this estimate is {summary['warning']}"])
        )

    def cpu(self) -> VariationalBound:
        """The same bound with its per-image tensors on the CPU."""
        return replace(self, prior=self.prior.cpu(), terms=self.terms.cpu())

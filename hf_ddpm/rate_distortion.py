"""The rate–distortion behaviour of the reverse process (Ho et al. 2020, Sec. 4.3, Table 4 and Fig. 5).

Read the bound (Eq. 5) as a code: a receiver that starts from p(x_T) is sent x_T, then x_{T−1}, …, each costing
its term, L_T for x_T and L_{s−1} for x_{s−1} given x_s. When it holds x_t (paper's t) it has received

    rate(t) = L_T + Σ_{s > t} L_{s−1}   bits/dim,

and its best guess of the image is the model's x̂_0(x_t) (Eq. 15, clipped as the sampler clips it), at a distortion
of RMSE(x_0, x̂_0) on the 0–255 scale. After t = 1 the decoder L_0 sends x_0 itself: rate(1) + L_0 is the bound.

Every x_t is made with one ε per image (x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, Eq. 4), so the rates are the terms of
``estimate_bound(..., noise=ε)`` — the bound of the same images with the same noise — and each distortion is read off
the same model output as the term at that t. In code timesteps (t − 1) everything is stored in ascending order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .errors import ParameterError, check_at_least
from .likelihood import _as_output_tensor, estimate_bound, mean_over_dims
from .timestep_plan import TimestepPlan
from .variational_bound import VariationalBound

PIXEL_SCALE = 127.5  # one unit of [−1, 1] in 0–255 pixel levels
IMPERCEPTIBLE_RMSE = 1.0  # the paper's "imperceptible" distortion: under one pixel level of RMSE


@dataclass(frozen=True, eq=False)
class RateDistortion:
    """The rate and distortion of ``num_images`` images at every timestep of the chain.

    ``bound``: their full bound (prior L_T [B] and every term [B, T], ascending code timestep, the column 0 being
    the decoder L_0), evaluated with one ε per image. ``distortion`` [B, T] float64: at code timestep t (paper's
    t + 1), the RMSE between x_0 and x̂_0(x_t) in 0–255 pixel levels. The rates are derived from the bound's terms.
    """

    bound: VariationalBound
    distortion: torch.Tensor

    def __post_init__(self):
        if not self.bound.plan.is_complete:
            raise ValueError("bound must evaluate every term of the chain (TimestepPlan.full_chain): the rate sums "
                             "them")
        if self.distortion.shape != self.bound.terms.shape:
            raise ValueError(f"distortion must be [images, timesteps] = {tuple(self.bound.terms.shape)}, "
                             f"got {tuple(self.distortion.shape)}")

    @property
    def timesteps(self) -> torch.Tensor:
        """[T]: the code timesteps 0 … T − 1 of the columns (the paper's t is one more)."""
        return self.bound.timesteps

    @property
    def rate(self) -> torch.Tensor:
        """[B, T] float64, bits/dim: at code timestep t, L_T plus every term above t — what a receiver holding x_t
        (paper's t + 1) has been sent. Non-decreasing as t falls; at t = T − 1 it is L_T."""
        terms = self.bound.terms.double()
        above = terms.flip(1).cumsum(1).flip(1)  # Σ_{k ≥ t}
        above = torch.cat([above[:, 1:], torch.zeros_like(above[:, :1])], dim=1)  # Σ_{k > t}
        return self.bound.prior.double()[:, None] + above

    @property
    def mean_rate(self) -> torch.Tensor:
        """[T] float64 on the CPU: the rate averaged over the images."""
        return self.rate.mean(0).cpu()

    @property
    def mean_distortion(self) -> torch.Tensor:
        """[T] float64 on the CPU: the distortion (per-image RMSE) averaged over the images."""
        return self.distortion.double().mean(0).cpu()

    def summary(self, threshold: float = IMPERCEPTIBLE_RMSE) -> dict:
        """The numbers of Table 4 and of the paper's "more than half of the lossless codelength describes
        imperceptible distortions", JSON-ready (paper's t).

        ``bits_per_dim`` = ``rate_bits_per_dim`` (the rate at t = 1) + ``decoder_bits_per_dim`` (L_0);
        ``distortion_rmse`` is the distortion at t = 1. ``imperceptible``: the first t of the reverse process (from
        T down) where the mean distortion falls below ``threshold``, the rate spent to get there and
        ``share_of_codelength``, the fraction of the bound spent after it (None if the distortion never falls below).
        """
        rate, distortion = self.mean_rate, self.mean_distortion
        bits = self.bound.bits_per_dim
        below = torch.nonzero(distortion < threshold).flatten()
        imperceptible = None
        if below.numel():
            k = int(below.max())  # the largest code timestep: the first reached in the reverse process
            imperceptible = {"t": k + 1, "rate_bits_per_dim": float(rate[k]), "distortion_rmse": float(distortion[k]),
                             "share_of_codelength": (bits - float(rate[k])) / bits}
        return {
            "num_images": self.bound.num_images,
            "num_train_timesteps": self.bound.num_train_timesteps,
            "bits_per_dim": bits,
            "rate_bits_per_dim": float(rate[0]),
            "decoder_bits_per_dim": self.bound.decoder,
            "prior_bits_per_dim": float(rate[-1]),
            "distortion_rmse": float(distortion[0]),
            "threshold_rmse": threshold,
            "imperceptible": imperceptible,
        }

    def rows(self) -> list[dict]:
        """One row per paper's t, from T down to 1 (the order of the reverse process): ``t``, ``rate_bits_per_dim``
        and ``distortion_rmse`` averaged over the images."""
        rate, distortion = self.mean_rate.tolist(), self.mean_distortion.tolist()
        return [{"t": k + 1, "rate_bits_per_dim": rate[k], "distortion_rmse": distortion[k]}
                for k in reversed(range(len(rate)))]

    def cpu(self) -> RateDistortion:
        return replace(self, bound=self.bound.cpu(), distortion=self.distortion.cpu())


def describe_summary(summary: dict) -> str:
    """:meth:`RateDistortion.summary` in a few lines for people."""
    lines = [
        f"rate–distortion of {summary['num_images']} images: bound {summary['bits_per_dim']:.4f} bits/dim = rate "
        f"{summary['rate_bits_per_dim']:.4f} + L_0 {summary['decoder_bits_per_dim']:.4f}; distortion at t=1 "
        f"{summary['distortion_rmse']:.3f} (RMSE, 0–255)",
    ]
    point = summary["imperceptible"]
    if point is None:
        lines.append(f"  the distortion never falls below {summary['threshold_rmse']:g}")
    else:
        lines.append(f"  distortion below {summary['threshold_rmse']:g} from t={point['t']}, after "
                     f"{point['rate_bits_per_dim']:.4f} bits/dim: {point['share_of_codelength']:.1%} of the "
                     f"codelength describes the rest")
    return "\n".join(lines)


class _DistortionProbe:
    """``model(x_t, t)`` for :func:`estimate_bound` that also records, at each timestep, the distortion of the x̂_0 the
    scheduler forms from the same output (``p_mean_variance``, in float64 as the bound's terms are)."""

    def __init__(self, model, scheduler, x0: torch.Tensor):
        self.model, self.scheduler, self.x0 = model, scheduler, x0.double()
        self.by_timestep: dict[int, torch.Tensor] = {}

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **labels):
        output = _as_output_tensor(self.model(x_t, t, **labels))
        timestep = int(t[0])  # estimate_bound evaluates one timestep for the whole chunk
        x0_hat = self.scheduler.p_mean_variance(output.double(), x_t.double(), timestep).pred_original_sample
        self.by_timestep[timestep] = PIXEL_SCALE * mean_over_dims((x0_hat - self.x0) ** 2).sqrt()
        return output

    def distortion(self, timesteps: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.by_timestep[t] for t in timesteps.tolist()], dim=1)


@torch.no_grad()
def estimate_rate_distortion(model, scheduler, x0: torch.Tensor, noise: torch.Tensor, *,
                             batch_size: int | None = None,
                             class_labels: torch.Tensor | None = None) -> RateDistortion:
    """The rate and distortion of images ``x0`` (in [−1, 1] on the 8-bit grid) at every timestep, with the one ε per
    image ``noise`` at every t. ``model(x_t, t)`` as for :func:`~hf_ddpm.likelihood.estimate_bound` (called as
    ``model(x_t, t, class_labels=y)`` with ``class_labels``, one id per image); the images go through it
    ``batch_size`` at a time (None: all at once), T calls per chunk."""
    if noise.shape != x0.shape:
        raise ParameterError("noise", f"has shape {tuple(noise.shape)}, expected the images' shape {tuple(x0.shape)}")
    check_at_least("batch_size", batch_size, 1, optional=True)
    plan = TimestepPlan.full_chain(scheduler.config.num_train_timesteps)
    size = batch_size or len(x0)
    labels = (None,) * len(x0.split(size)) if class_labels is None else class_labels.split(size)
    bounds, distortions = [], []
    for chunk, eps, y in zip(x0.split(size), noise.split(size), labels):
        probe = _DistortionProbe(model, scheduler, chunk)
        bounds.append(estimate_bound(probe, scheduler, chunk, plan, noise=eps, class_labels=y))
        distortions.append(probe.distortion(plan.timesteps))
    bound = VariationalBound(plan, torch.cat([b.prior for b in bounds]), torch.cat([b.terms for b in bounds]))
    return RateDistortion(bound, torch.cat(distortions))

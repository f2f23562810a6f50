"""The variational bound of Ho et al. 2020, in bits per dimension.

−log p_θ(x_0) ≤ L_T + Σ_{t>1} L_{t−1} + L_0 (Eq. 5), with
L_T = KL(q(x_T | x_0) ‖ N(0, I)), L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) and the discretised
Gaussian decoder L_0 = −log p_θ(x_0 | x_1) over the 256 bins of 8-bit data scaled to [−1, 1] (Eq. 13).
Every per-term value is averaged over the data dimensions and divided by ln 2: bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from .scheduler import DDPMDocScheduler

BIN_HALF_WIDTH = 1.0 / 255.0  # half of an 8-bit bin on [−1, 1]
EDGE = 1.0 - BIN_HALF_WIDTH  # pixels beyond ±EDGE sit in the open-ended edge bins


def normal_kl(mean1: torch.Tensor, logvar1, mean2: torch.Tensor, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats, elementwise (broadcasting)."""
    logvar1 = torch.as_tensor(logvar1, dtype=mean1.dtype, device=mean1.device)
    logvar2 = torch.as_tensor(logvar2, dtype=mean1.dtype, device=mean1.device)
    return 0.5 * (logvar2 - logvar1 - 1.0 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − e^x) for x ≤ 0, accurate near 0 and for very negative x (Mächler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_normal_cdf_difference(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Φ(upper) − Φ(lower)) for lower < upper, without cancellation in either tail: an interval right of 0 is
    mirrored to the left (Φ(b) − Φ(a) = Φ(−a) − Φ(−b)), then log Φ(b) + log(1 − Φ(a)/Φ(b)) in log space."""
    mirror = lower > 0
    a = torch.where(mirror, -upper, lower)
    b = torch.where(mirror, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    return log_b + _log1mexp(torch.special.log_ndtr(a) - log_b)


def discretized_gaussian_log_likelihood(x: torch.Tensor, *, means: torch.Tensor, log_scales) -> torch.Tensor:
    """log of the N(means, e^{2·log_scales}) mass of x's 8-bit bin (Eq. 13), in nats, elementwise.

    ``x`` lies on the 256-bin grid of [−1, 1]; the bins are [x − 1/255, x + 1/255], and the two edge bins extend to
    −∞ (x = −1) and +∞ (x = 1).
    """
    inv_scale = torch.exp(-torch.as_tensor(log_scales, dtype=means.dtype, device=means.device))
    lower = (x - means - BIN_HALF_WIDTH) * inv_scale
    upper = (x - means + BIN_HALF_WIDTH) * inv_scale
    inner = log_normal_cdf_difference(lower, upper)
    left_edge = torch.special.log_ndtr(upper)  # mass of (−∞, x + 1/255]
    right_edge = torch.special.log_ndtr(-lower)  # mass of [x − 1/255, ∞)
    return torch.where(x < -EDGE, left_edge, torch.where(x > EDGE, right_edge, inner))


def mean_over_dims(x: torch.Tensor) -> torch.Tensor:
    """Average over every dimension but the batch one."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def prior_bpd(scheduler: DDPMDocScheduler, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per image, bits/dim (a constant of the data when β is fixed)."""
    tables = scheduler.train_tables
    alpha_bar_T = float(tables.alphas_cumprod[-1])
    kl = normal_kl(math.sqrt(alpha_bar_T) * x0, math.log1p(-alpha_bar_T), torch.zeros_like(x0), 0.0)
    return mean_over_dims(kl) / math.log(2.0)


def bound_term(
    scheduler: DDPMDocScheduler,
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor | int,
) -> torch.Tensor:
    """The bound's term at each example's timestep, bits/dim, shape [B]: L_{t−1} = KL(q ‖ p_θ) (Eqs. 5, 6)
    for code timestep t > 0, and the decoder L_0 = −log p_θ(x_0 | x_1) (Eq. 13) for t = 0.

    p_θ is exactly the distribution ``scheduler.step`` samples from (same prediction type, variance type and
    clipping of x̂_0)."""
    p = scheduler.p_mean_variance(model_output, x_t, timesteps)

    def kl():
        q = scheduler.q_posterior(x0, x_t, timesteps)
        return mean_over_dims(normal_kl(q.mean, q.log_variance, p.mean, p.log_variance))

    def decoder_nll():
        log_scales = 0.5 * torch.as_tensor(p.log_variance)
        return -mean_over_dims(discretized_gaussian_log_likelihood(x0, means=p.mean, log_scales=log_scales))

    if isinstance(timesteps, int):  # one timestep for the whole batch: compute only its term
        return (decoder_nll() if timesteps == 0 else kl()) / math.log(2.0)
    return torch.where(timesteps.to(x0.device) == 0, decoder_nll(), kl()) / math.log(2.0)


@dataclass
class VariationalBound:
    """The bound per image, in bits/dim.

    ``total`` [B]: L_T + Σ_t L_t — or, when only a subset S of the T timesteps was evaluated,
    L_T + T/|S| · Σ_{t∈S} L_t, an unbiased estimate of it when S is drawn uniformly at random;
    ``prior`` [B]: L_T; ``terms`` [B, K]: the per-timestep terms at ``timesteps`` [K] in ascending order
    (the column of timestep 0 is the decoder L_0, column t > 0 is the paper's L_t).
    """

    total: torch.Tensor
    prior: torch.Tensor
    terms: torch.Tensor
    timesteps: torch.Tensor

    def mean(self) -> float:
        """The bound averaged over the images."""
        return float(self.total.mean())


def _as_output_tensor(output) -> torch.Tensor:
    return output.sample if hasattr(output, "sample") else output


@torch.no_grad()
def bits_per_dim(
    model,
    scheduler: DDPMDocScheduler,
    x0: torch.Tensor,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    timesteps: torch.Tensor | list[int] | None = None,
) -> VariationalBound:
    """The variational bound (Eq. 5) of images ``x0`` (in [−1, 1] on the 8-bit grid), bits/dim per image.

    ``model(x_t, t)`` returns the network output (a tensor or an object with ``.sample``, e.g. ``UNet2DModel``).
    ``noise``: the ε used at every timestep (a reproducible evaluation); otherwise fresh ε is drawn for every
    timestep from ``generator``. ``timesteps``: evaluate only these timesteps (see ``VariationalBound.total``).
    The terms are computed in float64 from the model's outputs.
    """
    T = scheduler.config.num_train_timesteps
    if timesteps is None:
        timesteps = torch.arange(T)
    timesteps = torch.as_tensor(timesteps, dtype=torch.long).flatten().cpu()
    if timesteps.numel() == 0 or len(timesteps.unique()) != len(timesteps):
        raise ValueError("timesteps must be a non-empty set of distinct timesteps")
    if timesteps.min() < 0 or timesteps.max() >= T:
        raise ValueError(f"timesteps must lie in [0, {T}), got values from {int(timesteps.min())} to {int(timesteps.max())}")
    timesteps = timesteps.sort().values
    if noise is not None and noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected the images' shape {tuple(x0.shape)}")
    x0_64 = x0.double()
    terms = []
    for t in timesteps.tolist():
        eps = noise if noise is not None else randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = scheduler.add_noise(x0, eps, t)
        t_batch = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
        model_output = _as_output_tensor(model(x_t, t_batch)).double()
        terms.append(bound_term(scheduler, model_output, x0_64, x_t.double(), t))
    terms = torch.stack(terms, dim=1)
    prior = prior_bpd(scheduler, x0_64)
    return VariationalBound(
        total=prior + terms.sum(dim=1) * (T / len(timesteps)), prior=prior, terms=terms, timesteps=timesteps
    )

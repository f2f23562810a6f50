"""β schedules and the per-timestep tables of a diffusion chain, built once in float64.

Index convention (stated here only): code timestep ``t = 0 … T−1`` is the paper's step ``t + 1``; so
``betas[t]`` is the paper's β_{t+1}, and ``alphas_cumprod_prev[0] = ᾱ_0 = 1``.

A *chain* is the ascending list of train timesteps τ_0 < τ_1 < … < τ_{K−1} that sampling visits. The full chain
(τ_k = k, K = T) is the training process; a respaced chain (fewer sampling steps) is itself a diffusion process
with ᾱ'_k = ᾱ_{τ_k} and β'_k = 1 − ᾱ_{τ_k} / ᾱ_{τ_{k−1}}, so every table below is built the same way for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
COSINE_MAX_BETA = 0.999  # the cosine schedule caps β_t to keep the last steps invertible (improved DDPM, Eq. 17)


def make_betas(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas=None,
) -> np.ndarray:
    """β_1 … β_T in float64 for one of ``BETA_SCHEDULES`` (or the given ``trained_betas``)."""
    T = num_train_timesteps
    if trained_betas is not None:
        return np.asarray(trained_betas, dtype=np.float64)
    if beta_schedule == "linear":  # the paper's schedule (Sec. 4: 1e-4 → 0.02)
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if beta_schedule == "scaled_linear":  # linear in √β (latent diffusion)
        return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":  # ᾱ(s) = cos²((s + 0.008)/1.008 · π/2), improved DDPM Eq. 17
        s = np.arange(T + 1, dtype=np.float64) / T
        alpha_bar = np.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], COSINE_MAX_BETA)
    if beta_schedule == "sigmoid":  # GeoDiff: β_start + (β_end − β_start)·sigmoid(linspace(−6, 6))
        return beta_start + (beta_end - beta_start) / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T, dtype=np.float64)))
    raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")


def rescale_to_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Shift and scale √ᾱ_t so that ᾱ_T = 0 while √ᾱ_1 is unchanged (Lin et al. 2023, "Common diffusion noise
    schedules and sample steps are flawed", Algorithm 1); returns the β that produce it (β_T becomes 1)."""
    sqrt_alpha_bar = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_alpha_bar[0], sqrt_alpha_bar[-1]
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * first / (first - last)
    alpha_bar = sqrt_alpha_bar**2
    return 1.0 - alpha_bar / np.concatenate([[1.0], alpha_bar[:-1]])


@dataclass(frozen=True)
class ChainTables:
    """Every per-step quantity of one chain, float64, entry ``k`` for chain step ``k`` (ascending).

    Symbols (for the chain's own β'_k, ᾱ'_k; for the full chain these are the paper's β_t, ᾱ_t):
    ``betas`` β_t, ``alphas`` α_t = 1 − β_t, ``alphas_cumprod`` ᾱ_t, ``alphas_cumprod_prev`` ᾱ_{t−1},
    ``posterior_variance`` β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t (Eq. 7; 0 at the first step),
    ``posterior_log_variance_clipped`` log β̃_t with the first step's value replaced by the second step's
    (the decoder p(x_0 | x_1) needs a positive variance), ``log_betas_clipped`` log β_t with the same first entry
    (the "fixed_large" variance of the paper's code), the posterior mean coefficients of Eq. 7,
    ``posterior_mean_x0_coef`` = √ᾱ_{t−1} β_t / (1 − ᾱ_t) and ``posterior_mean_xt_coef`` = √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t),
    the ε-form mean coefficients of Eq. 11, ``recip_sqrt_alphas`` 1/√α_t and ``eps_coef`` β_t / √(1 − ᾱ_t),
    Eq. 4's ``sqrt_alphas_cumprod`` and ``sqrt_one_minus_alphas_cumprod``, and Eq. 15's x̂_0 coefficients
    ``sqrt_recip_alphas_cumprod`` 1/√ᾱ_t and ``sqrt_recipm1_alphas_cumprod`` √(1/ᾱ_t − 1).
    """

    timesteps: torch.Tensor  # int64 train timestep τ_k of each chain step
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    log_betas_clipped: torch.Tensor
    posterior_mean_x0_coef: torch.Tensor
    posterior_mean_xt_coef: torch.Tensor
    recip_sqrt_alphas: torch.Tensor
    eps_coef: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor

    @classmethod
    def from_betas(cls, betas: np.ndarray, chain: np.ndarray | None = None) -> "ChainTables":
        """Tables of the chain visiting the ascending train timesteps ``chain`` (default: all of them).

        The chain's β'_k = 1 − Π_{τ_{k−1} < s ≤ τ_k} α_s is formed as −expm1(Σ log1p(−β_s)), exact in float64
        even where β is tiny (1 − ᾱ_t/ᾱ_{t−1} in float32 loses up to 1e-3 relative accuracy at small t).
        """
        # Two infinities are intended, so numpy's divide-by-zero warnings are silenced: log β̃ = −inf at the first
        # step (replaced by the second step's value), and under zero terminal SNR (β_T = 1, α_T = ᾱ_T = 0) the logs
        # and reciprocals of α_T, ᾱ_T (only v-prediction, which never divides by them, can sample such a chain).
        with np.errstate(divide="ignore"):
            chain, columns = _chain_columns(np.asarray(betas, dtype=np.float64), chain)
        return cls(
            timesteps=torch.from_numpy(chain.copy()),
            **{name: torch.from_numpy(values) for name, values in columns.items()},
        )

    def __len__(self) -> int:
        return len(self.timesteps)

    @staticmethod
    def column_names() -> tuple[str, ...]:
        """The float64 columns (every field but ``timesteps``), in a fixed order."""
        return tuple(f.name for f in fields(ChainTables) if f.name != "timesteps")


def _chain_columns(betas: np.ndarray, chain: np.ndarray | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The float64 columns of :class:`ChainTables` for ``chain`` (see :meth:`ChainTables.from_betas`)."""
    log_alphas = np.log1p(-betas)
    chain = np.arange(len(log_alphas)) if chain is None else np.asarray(chain, dtype=np.int64)
    log_alpha_bar = np.cumsum(log_alphas)[chain]  # log ᾱ_{τ_k}
    log_alpha = np.diff(log_alpha_bar, prepend=0.0)  # log α'_k
    beta = -np.expm1(log_alpha)
    alpha = np.exp(log_alpha)
    alpha_bar = np.exp(log_alpha_bar)
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    one_minus_alpha_bar = -np.expm1(log_alpha_bar)
    one_minus_alpha_bar_prev = np.concatenate([[0.0], one_minus_alpha_bar[:-1]])
    posterior_variance = beta * one_minus_alpha_bar_prev / one_minus_alpha_bar
    # At the first step β̃ = 0; the decoder uses the second step's β̃ (or β'_0 on a one-step chain).
    first_log_variance = np.log(posterior_variance[1] if len(chain) > 1 else beta[0])
    posterior_log_variance = np.log(posterior_variance)  # −inf at the first step, replaced below
    columns = dict(
        betas=beta,
        alphas=alpha,
        alphas_cumprod=alpha_bar,
        alphas_cumprod_prev=alpha_bar_prev,
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=np.concatenate([[first_log_variance], posterior_log_variance[1:]]),
        log_betas_clipped=np.concatenate([[first_log_variance], np.log(beta[1:])]),
        posterior_mean_x0_coef=np.sqrt(alpha_bar_prev) * beta / one_minus_alpha_bar,
        posterior_mean_xt_coef=np.sqrt(alpha) * one_minus_alpha_bar_prev / one_minus_alpha_bar,
        recip_sqrt_alphas=1.0 / np.sqrt(alpha),
        eps_coef=beta / np.sqrt(one_minus_alpha_bar),
        sqrt_alphas_cumprod=np.sqrt(alpha_bar),
        sqrt_one_minus_alphas_cumprod=np.sqrt(one_minus_alpha_bar),
        sqrt_recip_alphas_cumprod=1.0 / np.sqrt(alpha_bar),
        sqrt_recipm1_alphas_cumprod=np.sqrt(one_minus_alpha_bar / alpha_bar),
    )
    return chain, columns

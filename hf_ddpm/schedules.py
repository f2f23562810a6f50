"""β schedules and the tables of a diffusion chain: built once in float64, read through one accessor.

Index convention (stated here only): code timestep ``t = 0 … T−1`` is the paper's step ``t + 1``; so
``betas[t]`` is the paper's β_{t+1}, and ``alphas_cumprod_prev[0] = ᾱ_0 = 1``.

A *chain* is the ascending list of train timesteps τ_0 < τ_1 < … < τ_{K−1} that sampling visits. The full chain
(τ_k = k, K = T) is the training process; a respaced chain (fewer sampling steps) is itself a diffusion process
with ᾱ'_k = ᾱ_{τ_k} and β'_k = 1 − ᾱ_{τ_k} / ᾱ_{τ_{k−1}}, so every table below is built the same way for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from .errors import check_choice
from .options import BETA_SCHEDULES

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
    check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    if beta_schedule == "linear":  # the paper's schedule (Sec. 4: 1e-4 → 0.02)
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if beta_schedule == "scaled_linear":  # linear in √β (latent diffusion)
        return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":  # ᾱ(s) = cos²((s + 0.008)/1.008 · π/2), improved DDPM Eq. 17
        s = np.arange(T + 1, dtype=np.float64) / T
        alpha_bar = np.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], COSINE_MAX_BETA)
    # sigmoid (GeoDiff): β_start + (β_end − β_start)·sigmoid(linspace(−6, 6))
    return beta_start + (beta_end - beta_start) / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T, dtype=np.float64)))


def rescale_to_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Shift and scale √ᾱ_t so that ᾱ_T = 0 while √ᾱ_1 is unchanged (Lin et al. 2023, "Common diffusion noise
    schedules and sample steps are flawed", Algorithm 1); returns the β that produce it (β_T becomes 1)."""
    sqrt_alpha_bar = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_alpha_bar[0], sqrt_alpha_bar[-1]
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * first / (first - last)
    alpha_bar = sqrt_alpha_bar**2
    return 1.0 - alpha_bar / np.concatenate([[1.0], alpha_bar[:-1]])


def spaced_timesteps(num_train_timesteps: int, K: int, timestep_spacing: str, steps_offset: int) -> np.ndarray:
    """K descending train timesteps spaced by ``timestep_spacing`` (``TIMESTEP_SPACINGS``; Lin et al. 2023, Table 2)."""
    T = num_train_timesteps
    if timestep_spacing == "linspace":
        return np.round(np.linspace(0, T - 1, K))[::-1].astype(np.int64)
    if timestep_spacing == "leading":
        descending = (np.arange(K) * (T // K))[::-1].astype(np.int64) + steps_offset
        if descending[0] >= T:
            raise ValueError(
                f"steps_offset={steps_offset} with {K} leading-spaced steps reaches timestep {descending[0]} ≥ "
                f"num_train_timesteps={T}"
            )
        return descending
    return np.round(T - np.arange(K) * (T / K)).astype(np.int64) - 1  # trailing


def custom_timesteps(timesteps, num_train_timesteps: int) -> np.ndarray:
    """Caller-given sampling timesteps (a list or tensor) as a strictly descending int64 array, validated."""
    descending = np.asarray(timesteps.cpu() if torch.is_tensor(timesteps) else timesteps, dtype=np.int64)
    if descending.ndim != 1 or descending.size == 0:
        raise ValueError(f"timesteps must be a non-empty list of integers, got {timesteps!r}")
    if np.any(np.diff(descending) >= 0):
        raise ValueError(f"timesteps must be strictly descending, got {descending.tolist()}")
    for t in (int(descending[0]), int(descending[-1])):
        _check_timestep(t, num_train_timesteps)
    return descending


def _check_timestep(t: int, num_train_timesteps: int) -> None:
    """The one range check of a host timestep."""
    if not 0 <= t < num_train_timesteps:
        raise ValueError(f"timesteps must lie in [0, {num_train_timesteps}) (num_train_timesteps), got {t}")


@dataclass(frozen=True, eq=False)
class ChainTables:
    """Every per-step quantity of one chain, float64, entry ``k`` for chain step ``k`` (ascending), and the map from
    train timesteps to chain steps.

    Symbols (for the chain's own β'_k, ᾱ'_k; for the full chain these are the paper's β_t, ᾱ_t):
    ``betas`` β_t, ``alphas`` α_t = 1 − β_t, ``alphas_cumprod`` ᾱ_t, ``alphas_cumprod_prev`` ᾱ_{t−1}, ``log_betas``
    log β_t, ``posterior_variance`` β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t (Eq. 7; 0 at the first step),
    ``posterior_log_variance_clipped`` log β̃_t with the first step's value replaced by the second step's (the decoder
    p(x_0 | x_1) needs a positive variance; a one-step chain has no second step and uses β_1: see below),
    ``fixed_variance`` and ``fixed_log_variance``: σ_t² and log σ_t² of the fixed variance types, β̃_t or β_t
    (``large_variance``) with the same first entry, ``sampling_std`` σ_t for ancestral sampling, 0 at the first step
    (Algorithm 2 adds no noise at its last iteration), the posterior mean coefficients of Eq. 7,
    ``posterior_mean_x0_coef`` = √ᾱ_{t−1} β_t / (1 − ᾱ_t) and ``posterior_mean_xt_coef`` = √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t),
    the ε-form mean coefficients of Eq. 11, μ_θ = ``recip_sqrt_alphas`` · x_t − ``mean_eps_coef`` · ε_θ with
    1/√α_t and β_t / (√α_t √(1 − ᾱ_t)), Eq. 4's ``sqrt_alphas_cumprod`` and ``sqrt_one_minus_alphas_cumprod``, and
    Eq. 15's x̂_0 coefficients ``sqrt_recip_alphas_cumprod`` 1/√ᾱ_t and ``sqrt_recipm1_alphas_cumprod`` √(1/ᾱ_t − 1).

    A one-step chain (``num_train_timesteps=1``, or one sampling step) has no second step's β̃ to borrow: its decoder
    variance is β'_0 = 1 − ᾱ_{τ_0} for both fixed types, the variance of q(x_{τ_0} | x_0) itself and the
    "fixed_large" choice σ_t² = β_t (Sec. 3.2: the upper end of the reverse-process variance), the only positive
    per-step variance such a chain defines.

    Read the columns with :meth:`read` at chain indices from :meth:`index`, never by position: those two are the one
    place a timestep is resolved and validated and a column is brought to a device and dtype.
    """

    timesteps: torch.Tensor  # int64 train timestep τ_k of each chain step
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    log_betas: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    fixed_variance: torch.Tensor
    fixed_log_variance: torch.Tensor
    sampling_std: torch.Tensor
    posterior_mean_x0_coef: torch.Tensor
    posterior_mean_xt_coef: torch.Tensor
    recip_sqrt_alphas: torch.Tensor
    mean_eps_coef: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    num_train_timesteps: int
    # Derived on construction: whether the last step has ᾱ = 0 (zero terminal SNR), where x̂_0 cannot be formed from
    # ε; the map train timestep → chain index (−1 off the chain); and the device copies made by ``index``/``read``.
    ends_at_zero_snr: bool = field(init=False)
    _positions: list[int] = field(init=False, repr=False)
    _positions_on_device: dict = field(init=False, repr=False)
    _copies: dict = field(init=False, repr=False)

    def __post_init__(self):
        positions = np.full(self.num_train_timesteps, -1, dtype=np.int64)
        positions[self.timesteps.numpy()] = np.arange(len(self.timesteps))
        derived = dict(ends_at_zero_snr=bool(self.alphas_cumprod.numpy()[-1] == 0.0), _positions=positions.tolist(),
                       _positions_on_device={}, _copies={})
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_betas(cls, betas: np.ndarray, chain: np.ndarray | None = None, *, large_variance: bool = False) -> "ChainTables":
        """Tables of the chain visiting the ascending train timesteps ``chain`` (default: all of them), with the fixed
        variance σ_t² = β_t if ``large_variance`` else β̃_t.

        The chain's β'_k = 1 − Π_{τ_{k−1} < s ≤ τ_k} α_s is formed as −expm1(Σ log1p(−β_s)), exact in float64
        even where β is tiny (1 − ᾱ_t/ᾱ_{t−1} in float32 loses up to 1e-3 relative accuracy at small t).
        """
        # Two infinities are intended, so numpy's divide-by-zero warnings are silenced: log β̃ = −inf at the first
        # step (replaced by the second step's value), and under zero terminal SNR (β_T = 1, α_T = ᾱ_T = 0) the logs
        # and reciprocals of α_T, ᾱ_T (read only where x̂_0 is not formed from ε: see DDPMDocScheduler).
        betas = np.asarray(betas, dtype=np.float64)
        with np.errstate(divide="ignore"):
            chain, columns = _chain_columns(betas, chain, large_variance)
        return cls(
            timesteps=torch.from_numpy(chain.copy()),
            num_train_timesteps=len(betas),
            **{name: torch.from_numpy(values) for name, values in columns.items()},
        )

    def __len__(self) -> int:
        return len(self.timesteps)

    @staticmethod
    def column_names() -> tuple[str, ...]:
        """The float64 columns, in a fixed order."""
        return tuple(f.name for f in fields(ChainTables) if f.init and f.name not in ("timesteps", "num_train_timesteps"))

    # ------------------------------------------------------------------ timesteps → chain indices

    def host_index(self, timestep: int) -> int:
        """Chain index of one train timestep given as a host integer (``ValueError`` naming it if invalid)."""
        _check_timestep(timestep, self.num_train_timesteps)
        k = self._positions[timestep]
        if k < 0:
            raise ValueError(
                f"timestep {timestep} is not in the current schedule (call set_timesteps, or pass one of "
                f"{self.timesteps.flip(0).tolist()})"
            )
        return k

    def previous_timestep(self, timestep: int) -> int:
        """The chain's timestep before ``timestep`` in ascending order — the next one sampled (−1 after the first)."""
        k = self.host_index(timestep)
        return int(self.timesteps[k - 1]) if k > 0 else -1

    def index(self, timesteps: int | torch.Tensor, like: torch.Tensor) -> int | torch.Tensor:
        """Chain index k of train ``timesteps`` for a batch ``like``: an ``int`` for one host timestep (a Python or
        NumPy integer, or a one-element CPU tensor), else an int64 tensor on ``like``'s device, one per sample (or one
        for all), validated where it lives with ``torch._assert_async`` — never read back to the host, so no
        host–device synchronisation (it raises at once on CPU, at the next synchronisation on CUDA)."""
        if not isinstance(timesteps, torch.Tensor) or (timesteps.is_cpu and timesteps.numel() == 1):
            return self.host_index(int(timesteps))
        t = timesteps.to(device=like.device, dtype=torch.long).reshape(-1)
        if t.shape[0] not in (1, like.shape[0]):
            raise ValueError(f"per-sample timesteps must have shape ({like.shape[0]},), got {tuple(timesteps.shape)}")
        T = self.num_train_timesteps
        torch._assert_async(((t >= 0) & (t < T)).all(), f"timesteps must lie in [0, {T}) (num_train_timesteps)")
        if len(self) == T:  # the full chain: k = t
            return t
        k = self._positions_on(like.device).index_select(0, t)
        torch._assert_async((k >= 0).all(), f"timesteps are not all in the current schedule of {len(self)} steps")
        return k

    def _positions_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._positions_on_device:
            self._positions_on_device[device] = torch.tensor(self._positions, device=device)
        return self._positions_on_device[device]

    # ------------------------------------------------------------------ the columns

    def read(self, k: int | torch.Tensor, like: torch.Tensor, *names: str) -> tuple[torch.Tensor, ...]:
        """Columns ``names`` at chain index ``k`` (from :meth:`index`), in ``like``'s dtype on its device: 0-d
        tensors for an ``int`` k, ``[B, 1, …]`` tensors broadcasting against ``like`` for an index tensor. They come
        from one copy of the table per device and dtype, made on first use; treat them as read-only."""
        key = (like.device, like.dtype)
        copy = self._copies.get(key)
        if copy is None:
            copy = self._copies[key] = _TableCopy(self, like.device, like.dtype)
        if isinstance(k, int):
            return tuple([copy.entries[name][k] for name in names])
        shape = (-1,) + (1,) * (like.ndim - 1)
        return tuple([copy.columns[name].index_select(0, k).view(shape) for name in names])


class _TableCopy:
    """The columns of a chain on one device in one dtype: one transfer of the stacked table; for ``int`` indices,
    ``entries[name]``, the column's entries as 0-d views, split off once per column on first use (a step then reads
    its coefficients without dispatching any tensor operation)."""

    def __init__(self, tables: ChainTables, device: torch.device, dtype: torch.dtype):
        names = ChainTables.column_names()
        stacked = torch.stack([getattr(tables, name) for name in names]).to(device=device, dtype=dtype)
        self.columns = dict(zip(names, stacked.unbind(0)))
        self.entries = _Entries(self.columns)


class _Entries(dict):
    """column name → its entries as 0-d tensors, made on first access."""

    def __init__(self, columns: dict[str, torch.Tensor]):
        super().__init__()
        self._columns = columns

    def __missing__(self, name: str) -> tuple[torch.Tensor, ...]:
        self[name] = self._columns[name].unbind(0)
        return self[name]


def _chain_columns(betas: np.ndarray, chain: np.ndarray | None, large_variance: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
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
    first_variance = posterior_variance[1] if len(chain) > 1 else beta[0]
    fixed_variance = np.concatenate([[first_variance], (beta if large_variance else posterior_variance)[1:]])
    sampling_std = np.concatenate([[0.0], np.sqrt(fixed_variance[1:])])
    columns = dict(
        betas=beta,
        alphas=alpha,
        alphas_cumprod=alpha_bar,
        alphas_cumprod_prev=alpha_bar_prev,
        log_betas=np.log(beta),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=np.log(np.concatenate([[first_variance], posterior_variance[1:]])),
        fixed_variance=fixed_variance,
        fixed_log_variance=np.log(fixed_variance),
        sampling_std=sampling_std,
        posterior_mean_x0_coef=np.sqrt(alpha_bar_prev) * beta / one_minus_alpha_bar,
        posterior_mean_xt_coef=np.sqrt(alpha) * one_minus_alpha_bar_prev / one_minus_alpha_bar,
        recip_sqrt_alphas=1.0 / np.sqrt(alpha),
        mean_eps_coef=beta / (np.sqrt(alpha) * np.sqrt(one_minus_alpha_bar)),
        sqrt_alphas_cumprod=np.sqrt(alpha_bar),
        sqrt_one_minus_alphas_cumprod=np.sqrt(one_minus_alpha_bar),
        sqrt_recip_alphas_cumprod=1.0 / np.sqrt(alpha_bar),
        sqrt_recipm1_alphas_cumprod=np.sqrt(one_minus_alpha_bar / alpha_bar),
    )
    return chain, columns

"""``DDPMDocScheduler``: the DDPM forward and reverse processes (Ho et al. 2020) as a diffusers scheduler.

Written from the paper's equations; configuration-compatible with diffusers' ``DDPMScheduler`` (same option names
and defaults, so ``from_config`` works both ways) and sample-compatible with it: a seeded chain draws its noise
with the generator exactly as diffusers does, so both produce the same samples within float32 rounding wherever
they implement the same distribution. Deliberate differences (they change the bound, never the samples, or fix a
diffusers defect) are listed in the class docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .schedules import BETA_SCHEDULES, ChainTables, make_betas, rescale_to_zero_terminal_snr

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")

Scalar = float  # a table entry read at one python-int chain index
Coefficient = float | torch.Tensor  # … or at a [B] index tensor, broadcast to the sample's rank


@dataclass
class DDPMDocSchedulerOutput(BaseOutput):
    """Output of ``DDPMDocScheduler.step``: x_{t−1} and the model's estimate x̂_0 (Eq. 15)."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class GaussianParams(NamedTuple):
    """A diagonal Gaussian: mean, variance and log-variance (the variance may be omitted where unused)."""

    mean: torch.Tensor
    variance: Coefficient | None
    log_variance: Coefficient


class ReverseStep(NamedTuple):
    """p_θ(x_{t−1} | x_t) = N(mean, exp(log_variance)) and the x̂_0 its mean was built from."""

    mean: torch.Tensor
    log_variance: Coefficient
    pred_original_sample: torch.Tensor


def _combine(a: Coefficient, x: torch.Tensor, b: Coefficient, y: torch.Tensor) -> torch.Tensor:
    """a·x + b·y in two elementwise passes (a, b: python floats or tensors broadcastable to x)."""
    if isinstance(b, float):
        return torch.mul(x, a).add_(y, alpha=b)
    return torch.addcmul(x * a, y, b)


class TableReader:
    """Reads the columns of one chain at a chain index: python floats for an ``int`` index (so a batch-1 step does
    no tensor work for its coefficients), ``[B, 1, …]`` tensors for a ``[B]`` index tensor, gathered from one copy
    of the tables per device and dtype, made on first use."""

    def __init__(self, columns: dict[str, torch.Tensor]):
        self._row = {name: i for i, name in enumerate(columns)}
        self._stacked = torch.stack(list(columns.values()))  # float64 [columns, K]
        self._floats = {name: values.tolist() for name, values in columns.items()}
        self._copies: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def read(self, name: str, k: int | torch.Tensor, like: torch.Tensor) -> Coefficient:
        """Column ``name`` at chain index ``k`` (int, or [B] tensor), shaped to broadcast against ``like``."""
        if isinstance(k, int):
            return self._floats[name][k]
        key = (like.device, like.dtype)
        if key not in self._copies:
            self._copies[key] = self._stacked.to(device=like.device, dtype=like.dtype)
        values = self._copies[key][self._row[name]].index_select(0, k.to(like.device))
        return values.view(-1, *([1] * (like.ndim - 1)))


class DDPMDocScheduler(SchedulerMixin, ConfigMixin):
    """The DDPM noise schedule, forward process q and ancestral reverse step p_θ (Ho et al. 2020).

    Configuration (names and defaults are diffusers' ``DDPMScheduler``'s):
        num_train_timesteps: T, the number of diffusion steps (≥ 2).
        beta_start, beta_end, beta_schedule: β schedule, one of ``"linear"`` (the paper's), ``"scaled_linear"``,
            ``"squaredcos_cap_v2"`` (cosine), ``"sigmoid"``; or ``trained_betas``: T values in (0, 1).
        variance_type: Σ_θ = σ_t² I with ``"fixed_small"`` σ_t² = β̃_t, ``"fixed_large"`` σ_t² = β_t
            (``"*_log"``: the same variances, the names kept for configuration compatibility), or learned:
            ``"learned"`` — the network's extra channels are the log-variance log σ_t² (as in the paper's and
            improved DDPM's code; diffusers reads them as a variance), ``"learned_range"`` — they are v ∈ [−1, 1]
            with log σ_t² = (v+1)/2 · log β_t + (1−v)/2 · log β̃_t (improved DDPM, Eq. 15).
        prediction_type: the network predicts ``"epsilon"`` (ε, Eq. 11), ``"sample"`` (x_0) or ``"v_prediction"``
            (v = √ᾱ_t ε − √(1−ᾱ_t) x_0).
        clip_sample, clip_sample_range: clip x̂_0 to [−range, range] before forming the mean (Eq. 7).
        thresholding, dynamic_thresholding_ratio, sample_max_value: Imagen's dynamic thresholding of x̂_0.
        timestep_spacing, steps_offset: how ``set_timesteps`` spaces fewer sampling steps.
        rescale_betas_zero_snr: rescale β so that ᾱ_T = 0 (needs a prediction type other than ``"epsilon"``).

    Differences from diffusers' ``DDPMScheduler``, chosen deliberately:
        * Every table is computed once in float64 (diffusers recomputes β_t = 1 − ᾱ_t/ᾱ_{t−1} in float32 inside
          every step, up to 1e-3 relative error at small t); ``step`` only gathers and combines.
        * The decoder variance at t = 1 (code timestep 0), where β̃ = 0, is β̃ of the second step for both fixed
          types, and log β̃ is clipped there the same way, as in the paper's code (diffusers: β_1 for
          ``fixed_large`` and log(1e-20) for the learned range). No noise is added at the last step, so this
          changes the bound's L_0, not the samples.
        * ``"learned"`` outputs are log-variances (see above); ``"fixed_large_log"`` samples with σ_t = √β_t
          (diffusers takes the square root of log β_t and produces NaN).
        * The last step never adds noise; diffusers adds it whenever the last timestep is > 0 (``"trailing"``
          spacing, ``steps_offset`` > 0, custom timesteps), which with ``fixed_large`` leaves noise in the image.
        * Invalid options and inputs raise ``ValueError`` naming the value.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        self._validate_config()
        betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        if rescale_betas_zero_snr:
            betas = rescale_to_zero_terminal_snr(betas)
        self._validate_betas(betas)
        self._betas = betas
        self.train_tables = ChainTables.from_betas(betas)
        self._train = self._reader(self.train_tables)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.custom_timesteps = False
        self._use_chain(self.train_tables, self._train, device=None)

    # ------------------------------------------------------------------ validation

    def _validate_config(self) -> None:
        c = self.config
        if not (isinstance(c.num_train_timesteps, (int, np.integer)) and c.num_train_timesteps >= 2):
            raise ValueError(f"num_train_timesteps must be an integer ≥ 2, got {c.num_train_timesteps!r}")
        if c.trained_betas is None and c.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {c.beta_schedule!r}")
        if c.trained_betas is not None and len(c.trained_betas) != c.num_train_timesteps:
            raise ValueError(
                f"trained_betas has {len(c.trained_betas)} values but num_train_timesteps is {c.num_train_timesteps}"
            )
        for name, value, choices in (
            ("variance_type", c.variance_type, VARIANCE_TYPES),
            ("prediction_type", c.prediction_type, PREDICTION_TYPES),
            ("timestep_spacing", c.timestep_spacing, TIMESTEP_SPACINGS),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if not 0.0 < c.dynamic_thresholding_ratio <= 1.0:
            raise ValueError(f"dynamic_thresholding_ratio must be in (0, 1], got {c.dynamic_thresholding_ratio!r}")
        if c.thresholding and c.sample_max_value < 1.0:
            raise ValueError(f"sample_max_value must be ≥ 1 for thresholding, got {c.sample_max_value!r}")
        if c.clip_sample and c.clip_sample_range <= 0:
            raise ValueError(f"clip_sample_range must be > 0, got {c.clip_sample_range!r}")
        if not (isinstance(c.steps_offset, (int, np.integer)) and 0 <= c.steps_offset < c.num_train_timesteps):
            raise ValueError(f"steps_offset must be an integer in [0, num_train_timesteps), got {c.steps_offset!r}")
        if c.rescale_betas_zero_snr and c.prediction_type == "epsilon":
            raise ValueError(
                "rescale_betas_zero_snr=True makes ᾱ_T = 0, where x_0 cannot be recovered from a predicted ε; "
                "use prediction_type='v_prediction' or 'sample'"
            )

    def _validate_betas(self, betas: np.ndarray) -> None:
        # Zero terminal SNR sets β_T = 1 by construction; everywhere else β must lie in (0, 1).
        interior = betas[:-1] if self.config.rescale_betas_zero_snr else betas
        bad = ~((interior > 0) & (interior < 1)) | ~np.isfinite(interior)
        if bad.any():
            t = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"betas must lie in (0, 1): beta at timestep {t} is {interior[t]!r} "
                f"(beta_schedule={self.config.beta_schedule!r}, beta_start={self.config.beta_start!r}, "
                f"beta_end={self.config.beta_end!r}, trained_betas given: {self.config.trained_betas is not None})"
            )

    def _validate_timesteps(self, t: np.ndarray | int, what: str) -> None:
        T = self.config.num_train_timesteps
        low, high = (t, t) if isinstance(t, int) else (t.min(), t.max())
        if low < 0 or high >= T:
            raise ValueError(f"{what} must lie in [0, {T}) (num_train_timesteps), got values from {low} to {high}")

    # ------------------------------------------------------------------ tables

    def _reader(self, tables: ChainTables) -> TableReader:
        """The table reader of a chain: its columns plus those that depend on ``variance_type``.

        ``fixed_log_variance`` is log σ_t² of the fixed variance types; ``sampling_std`` is σ_t for ancestral
        sampling (0 at the chain's first step, Algorithm 2: no noise at the last iteration); ``vlb_weight`` is
        λ_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t)), the weight that turns ‖ε − ε_θ‖² into L_{t−1} (Eq. 12).
        """
        columns = {name: getattr(tables, name) for name in ChainTables.column_names()}
        columns["log_betas"] = torch.log(tables.betas)
        large = self.config.variance_type in ("fixed_large", "fixed_large_log")
        fixed_log_variance = tables.log_betas_clipped if large else tables.posterior_log_variance_clipped
        columns["fixed_log_variance"] = fixed_log_variance
        sampling_std = torch.exp(0.5 * fixed_log_variance)
        sampling_std[0] = 0.0
        columns["sampling_std"] = sampling_std
        columns["vlb_weight"] = tables.betas**2 / (
            2.0 * torch.exp(fixed_log_variance) * tables.alphas * (1.0 - tables.alphas_cumprod)
        )
        return TableReader(columns)

    def _use_chain(self, tables: ChainTables, reader: TableReader, device) -> None:
        """Make ``tables`` the sampling chain: ``timesteps`` descending, and the timestep → chain-index map."""
        self._chain = tables
        self._chain_reader = reader
        self._position = np.full(self.config.num_train_timesteps, -1, dtype=np.int64)
        self._position[tables.timesteps.numpy()] = np.arange(len(tables))
        self._position_list = self._position.tolist()
        self._position_tensors: dict[torch.device, torch.Tensor] = {}
        self.timesteps = tables.timesteps.flip(0).to(device)

    @property
    def betas(self) -> torch.Tensor:
        """β_t of the training process (float64)."""
        return self.train_tables.betas

    @property
    def alphas(self) -> torch.Tensor:
        """α_t = 1 − β_t of the training process (float64)."""
        return self.train_tables.alphas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t of the training process (float64)."""
        return self.train_tables.alphas_cumprod

    # ------------------------------------------------------------------ sampling chain

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the sampling chain: ``num_inference_steps`` spaced by ``config.timestep_spacing``, or custom
        strictly descending ``timesteps``. A shorter chain is sampled with its own respaced β'_k (see
        ``ChainTables.from_betas``), so each step is still an exact posterior step of the respaced process."""
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps to set_timesteps")
        if timesteps is not None:
            descending = np.asarray(timesteps.cpu() if torch.is_tensor(timesteps) else timesteps, dtype=np.int64)
            if descending.ndim != 1 or descending.size == 0:
                raise ValueError(f"timesteps must be a non-empty list of integers, got {timesteps!r}")
            if np.any(np.diff(descending) >= 0):
                raise ValueError(f"timesteps must be strictly descending, got {descending.tolist()}")
            self._validate_timesteps(descending, "timesteps")
            self.custom_timesteps, self.num_inference_steps = True, len(descending)
        else:
            if not (isinstance(num_inference_steps, (int, np.integer)) and 1 <= num_inference_steps <= T):
                raise ValueError(
                    f"num_inference_steps must be an integer in [1, {T}] (num_train_timesteps), got {num_inference_steps!r}"
                )
            descending = self._spaced_timesteps(int(num_inference_steps))
            self.custom_timesteps, self.num_inference_steps = False, int(num_inference_steps)
        chain = ChainTables.from_betas(self._betas, descending[::-1])
        self._use_chain(chain, self._reader(chain), device)

    def _spaced_timesteps(self, K: int) -> np.ndarray:
        """K descending timesteps by ``timestep_spacing`` (Lin et al. 2023, Table 2)."""
        T, spacing = self.config.num_train_timesteps, self.config.timestep_spacing
        if spacing == "linspace":
            return np.round(np.linspace(0, T - 1, K))[::-1].astype(np.int64)
        if spacing == "leading":
            descending = (np.arange(K) * (T // K))[::-1].astype(np.int64) + self.config.steps_offset
            if descending[0] >= T:
                raise ValueError(
                    f"steps_offset={self.config.steps_offset} with {K} leading-spaced steps reaches timestep "
                    f"{descending[0]} ≥ num_train_timesteps={T}"
                )
            return descending
        return np.round(T - np.arange(K) * (T / K)).astype(np.int64) - 1  # trailing

    def _chain_index(self, timestep: int | torch.Tensor, like: torch.Tensor) -> int | torch.Tensor:
        """Chain index k of a timestep of the current chain: an int, or a [B] tensor for per-sample timesteps."""
        if torch.is_tensor(timestep) and timestep.numel() > 1:
            if timestep.shape != (like.shape[0],):
                raise ValueError(f"per-sample timesteps must have shape ({like.shape[0]},), got {tuple(timestep.shape)}")
            self._validate_timesteps(timestep.cpu().numpy(), "timestep")
            if like.device not in self._position_tensors:
                self._position_tensors[like.device] = torch.from_numpy(self._position).to(like.device)
            k = self._position_tensors[like.device][timestep.to(like.device)]
            if bool((k < 0).any()):
                raise ValueError(f"timestep values {timestep.tolist()} are not all in the current schedule {self.timesteps.tolist()}")
            return k
        t = int(timestep)
        self._validate_timesteps(t, "timestep")
        k = self._position_list[t]
        if k < 0:
            raise ValueError(f"timestep {t} is not in the current schedule (call set_timesteps, or pass one of {self.timesteps.tolist()})")
        return k

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The timestep after ``timestep`` in the sampling chain (−1 after the last one)."""
        chain = self._chain.timesteps
        if torch.is_tensor(timestep):
            self._validate_timesteps(timestep.cpu().numpy(), "timestep")
            k = torch.from_numpy(self._position)[timestep.cpu()]
            if bool((k < 0).any()):
                raise ValueError(f"timestep {timestep.tolist()} is not in the current schedule")
            return torch.where(k > 0, chain[(k - 1).clamp(min=0)], torch.full_like(k, -1)).to(timestep.device)
        k = self._chain_index(timestep, self._chain.timesteps)
        return int(chain[k - 1]) if k > 0 else -1

    # ------------------------------------------------------------------ q: the forward process

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (Eq. 4), ``timesteps`` an int or one per sample."""
        k = self._train_index(timesteps, original_samples)
        return _combine(
            self._train.read("sqrt_alphas_cumprod", k, original_samples),
            original_samples,
            self._train.read("sqrt_one_minus_alphas_cumprod", k, original_samples),
            noise,
        )

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        """The v-prediction target v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (``sample`` is x_0)."""
        k = self._train_index(timesteps, sample)
        return _combine(
            self._train.read("sqrt_alphas_cumprod", k, sample),
            noise,
            -self._train.read("sqrt_one_minus_alphas_cumprod", k, sample),
            sample,
        )

    def q_posterior(self, original_samples: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor | int) -> GaussianParams:
        """q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (Eqs. 6–7) of the training process. ``variance`` is β̃_t
        (0 at t = 0); ``log_variance`` is clipped there to the second step's value."""
        k = self._train_index(timesteps, sample)
        read = self._train.read
        mean = _combine(read("posterior_mean_x0_coef", k, sample), original_samples, read("posterior_mean_xt_coef", k, sample), sample)
        return GaussianParams(mean, read("posterior_variance", k, sample), read("posterior_log_variance_clipped", k, sample))

    def _train_index(self, timesteps: torch.Tensor | int, like: torch.Tensor) -> int | torch.Tensor:
        """Training-chain index (= the timestep itself) as an int or a [B] int64 tensor on ``like``'s device."""
        if torch.is_tensor(timesteps) and timesteps.numel() > 1:
            self._validate_timesteps(timesteps.cpu().numpy(), "timesteps")
            return timesteps.to(device=like.device, dtype=torch.long).flatten()
        self._validate_timesteps(int(timesteps), "timesteps")
        return int(timesteps)

    # ------------------------------------------------------------------ p_θ: the reverse process

    def split_model_output(self, model_output: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prediction, variance output): the variance channels are the second half for learned variances."""
        learned = self.config.variance_type in LEARNED_VARIANCE_TYPES
        expected = (sample.shape[0], sample.shape[1] * (2 if learned else 1), *sample.shape[2:])
        if tuple(model_output.shape) != expected:
            hint = f" (variance_type={self.config.variance_type!r} needs twice the sample's channels)" if learned else ""
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)}, expected {expected} for a sample of shape "
                f"{tuple(sample.shape)}{hint}"
            )
        if learned:
            prediction, variance_output = model_output.chunk(2, dim=1)
            return prediction, variance_output
        return model_output, None

    def _predict_original(self, read, prediction: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """x̂_0 from the network's prediction: Eq. 15 for ε, the output itself for x_0, or from v."""
        kind = self.config.prediction_type
        if kind == "epsilon":
            return _combine(read("sqrt_recip_alphas_cumprod"), sample, -read("sqrt_recipm1_alphas_cumprod"), prediction)
        if kind == "sample":
            return prediction
        return _combine(read("sqrt_alphas_cumprod"), sample, -read("sqrt_one_minus_alphas_cumprod"), prediction)

    def _clip_original(self, pred_original_sample: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding (Imagen, Saharia et al. 2022) or clipping of x̂_0, as configured."""
        c = self.config
        if c.thresholding:
            x0 = pred_original_sample
            flat = x0.reshape(x0.shape[0], -1)
            flat = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
            s = torch.quantile(flat.abs(), c.dynamic_thresholding_ratio, dim=1).clamp(1.0, c.sample_max_value)
            s = s.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
            return torch.maximum(torch.minimum(x0, s), -s) / s
        if c.clip_sample:
            return pred_original_sample.clamp(-c.clip_sample_range, c.clip_sample_range)
        return pred_original_sample

    def _reverse_step(self, reader: TableReader, k, model_output: torch.Tensor, sample: torch.Tensor) -> ReverseStep:
        """p_θ(x_{t−1} | x_t) on a chain: the one path shared by ``step``, the losses and the bound."""
        prediction, variance_output = self.split_model_output(model_output, sample)

        def read(name):
            return reader.read(name, k, sample)

        c = self.config
        if c.prediction_type == "epsilon" and not (c.clip_sample or c.thresholding):
            # Eq. 11: μ_θ = 1/√α_t · (x_t − β_t/√(1−ᾱ_t) · ε_θ), without forming x̂_0 first.
            r = read("recip_sqrt_alphas")
            mean = _combine(r, sample, -r * read("eps_coef"), prediction)
            pred_original_sample = self._predict_original(read, prediction, sample)
        else:
            pred_original_sample = self._clip_original(self._predict_original(read, prediction, sample))
            # Eq. 7: μ̃_t(x_t, x̂_0)
            mean = _combine(read("posterior_mean_x0_coef"), pred_original_sample, read("posterior_mean_xt_coef"), sample)
        return ReverseStep(mean, self._model_log_variance(read, variance_output), pred_original_sample)

    def _model_log_variance(self, read, variance_output: torch.Tensor | None) -> Coefficient:
        """log σ_t² of p_θ in every variance mode (the fixed ones from the tables)."""
        kind = self.config.variance_type
        if kind == "learned":
            return variance_output
        if kind == "learned_range":  # improved DDPM Eq. 15 with v = (output + 1) / 2
            frac = (variance_output + 1.0) / 2.0
            return _combine(read("log_betas"), frac, read("posterior_log_variance_clipped"), 1.0 - frac)
        return read("fixed_log_variance")

    def p_mean_variance(self, model_output: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor | int) -> ReverseStep:
        """p_θ(x_{t−1} | x_t) of the training process at ``timesteps`` (int or per sample), for losses and the bound."""
        return self._reverse_step(self._train, self._train_index(timesteps, sample), model_output, sample)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """DDPM feeds x_t to the network unscaled."""
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DDPMDocSchedulerOutput | tuple:
        """One ancestral step x_t → x_{t−1} = μ_θ(x_t, t) + σ_t z (Algorithm 2).

        ``timestep`` is an int (or 0-d tensor) of the current schedule, or a ``[B]`` tensor of per-sample
        timesteps. z is drawn with ``randn_tensor`` in the shape and dtype of the sample, from ``generator``
        (one, or one per sample), and only when noise is added: for an int timestep never at the last step, so a
        seeded chain consumes the generator as diffusers' ``DDPMScheduler`` does; for per-sample timesteps always,
        with σ = 0 for the samples at their last step.
        """
        k = self._chain_index(timestep, sample)
        mean, log_variance, pred_original_sample = self._reverse_step(self._chain_reader, k, model_output, sample)
        per_sample = torch.is_tensor(k)
        if per_sample or k > 0:
            z = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            if self.config.variance_type in LEARNED_VARIANCE_TYPES:
                std = torch.exp(0.5 * log_variance)
                if per_sample:
                    std = torch.where((k > 0).view(-1, *([1] * (sample.ndim - 1))), std, torch.zeros_like(std))
                mean = mean.addcmul_(z, std)
            else:
                std = self._chain_reader.read("sampling_std", k, sample)
                mean = mean.add_(z, alpha=std) if isinstance(std, float) else mean.addcmul_(z, std)
        if not return_dict:
            return (mean, pred_original_sample)
        return DDPMDocSchedulerOutput(prev_sample=mean, pred_original_sample=pred_original_sample)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

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

# The option tables stay importable from here (training/train.py and others import them from this module).
from .errors import ParameterError, check_choice
from .options import BETA_SCHEDULES, LEARNED_VARIANCE_TYPES, PREDICTION_TYPES, TIMESTEP_SPACINGS, VARIANCE_TYPES
from .schedules import ChainTables, custom_timesteps, make_betas, rescale_to_zero_terminal_snr, spaced_timesteps


@dataclass
class DDPMDocSchedulerOutput(BaseOutput):
    """Output of ``DDPMDocScheduler.step``: x_{t−1} and the model's estimate x̂_0 (Eq. 15)."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class Gaussian(NamedTuple):
    """A diagonal Gaussian over x_{t−1}, N(mean, variance·I), for q(x_{t−1} | x_t, x_0) and p_θ(x_{t−1} | x_t) alike.

    ``pred_original_sample`` is the x_0 the mean is the posterior mean of (Eq. 7): the given x_0 for q, the model's
    x̂_0 for p_θ. At a chain's first step q is a point mass: ``variance`` is β̃ = 0 there while ``log_variance`` is
    clipped to p_θ's decoder variance, so that KL(q ‖ p_θ) stays finite. Variances are tensors in the inputs' dtype
    broadcasting against ``mean`` (0-d for one timestep, [B, 1, …] per sample, full-size when learned)."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    pred_original_sample: torch.Tensor


def check_num_inference_steps(num_inference_steps, num_train_timesteps: int) -> None:
    """K an integer in [1, T]: the steps of a sampling chain over T training timesteps (any scheduler's)."""
    integer = isinstance(num_inference_steps, (int, np.integer)) and not isinstance(num_inference_steps, bool)
    if not (integer and 1 <= num_inference_steps <= num_train_timesteps):
        raise ParameterError("num_inference_steps", f"must be an integer in [1, {num_train_timesteps}] "
                                                    f"(num_train_timesteps), got {num_inference_steps!r}")


def _combine(a: torch.Tensor, x: torch.Tensor, b: torch.Tensor, y: torch.Tensor, sign: int = 1) -> torch.Tensor:
    """a·x + sign·b·y in two elementwise passes (a, b: tensors broadcasting against x and y)."""
    if sign == 1:
        return torch.mul(x, a).addcmul_(y, b)
    return torch.mul(x, a).addcmul_(y, b, value=sign)


class DDPMDocScheduler(SchedulerMixin, ConfigMixin):
    """The DDPM noise schedule, forward process q and ancestral reverse step p_θ (Ho et al. 2020).

    Configuration (names and defaults are diffusers' ``DDPMScheduler``'s; what each choice of ``beta_schedule``,
    ``variance_type``, ``prediction_type`` and ``timestep_spacing`` means is stated once, in ``hf_ddpm.options``):
        num_train_timesteps: T, the number of diffusion steps (≥ 1; see ``ChainTables`` for T = 1's decoder).
        beta_start, beta_end, beta_schedule: the β schedule; or ``trained_betas``: T values in (0, 1).
        variance_type: Σ_θ = σ_t² I. ``"learned"`` outputs are log-variances, as in the paper's and improved DDPM's
            code (diffusers reads them as variances); ``"learned_range"`` outputs are v ∈ [−1, 1] with
            log σ_t² = (v+1)/2 · log β_t + (1−v)/2 · log β̃_t (improved DDPM, Eq. 15).
        prediction_type: what the network predicts (ε, x_0 or v).
        clip_sample, clip_sample_range: clip x̂_0 to [−range, range] before forming the mean (Eq. 7).
        thresholding, dynamic_thresholding_ratio, sample_max_value: Imagen's dynamic thresholding of x̂_0, the
            threshold clamped to [1, sample_max_value] as diffusers does (so exactly sample_max_value when it is < 1).
        timestep_spacing, steps_offset: how ``set_timesteps`` spaces fewer sampling steps.
        rescale_betas_zero_snr: rescale β so that ᾱ_T = 0. With ε-prediction x̂_0 is undefined at that one timestep:
            a step, loss or bound term that needs it there raises an error naming it; chains that never visit it
            (e.g. ``"leading"`` spacing) sample as in diffusers.

    Differences from diffusers' ``DDPMScheduler``, chosen deliberately:
        * Every table is computed once in float64 (diffusers recomputes β_t = 1 − ᾱ_t/ᾱ_{t−1} in float32 inside
          every step, up to 1e-3 relative error at small t); ``step`` only gathers and combines.
        * The decoder variance at t = 1 (code timestep 0), where β̃ = 0, is β̃ of the second step for both fixed
          types, and log β̃ is clipped there the same way, as in the paper's code (diffusers: β_1 for
          ``fixed_large`` and log(1e-20) for the learned range). No noise is added at the last step, so this
          changes the bound's L_0, not the samples.
        * ``"learned"`` reads log-variances; ``"fixed_large_log"`` samples with σ_t = √β_t (diffusers takes the
          square root of log β_t and produces NaN): ``VARIANCE_TYPES[name].diffusers_difference``.
        * The last step never adds noise; diffusers adds it whenever the last timestep is > 0 (``"trailing"``
          spacing, ``steps_offset`` > 0, custom timesteps), which with ``fixed_large`` leaves noise in the image.
        * ε-prediction at ᾱ = 0 (zero terminal SNR) raises an error; diffusers divides by √ᾱ = 0 there.
        * Invalid options and inputs raise ``ValueError`` naming the value (timestep tensors that are not host values
          are checked where they live, without reading them back: ``ChainTables.index``).
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
        self.train_tables = ChainTables.from_betas(betas, large_variance=VARIANCE_TYPES[variance_type].large)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.custom_timesteps = False
        self._install(self.train_tables, device=None)

    # ------------------------------------------------------------------ validation

    def _validate_config(self) -> None:
        c = self.config
        if not (isinstance(c.num_train_timesteps, (int, np.integer)) and c.num_train_timesteps >= 1):
            raise ValueError(f"num_train_timesteps must be an integer ≥ 1, got {c.num_train_timesteps!r}")
        if c.trained_betas is None:
            check_choice("beta_schedule", c.beta_schedule, BETA_SCHEDULES)
        elif len(c.trained_betas) != c.num_train_timesteps:
            raise ValueError(
                f"trained_betas has {len(c.trained_betas)} values but num_train_timesteps is {c.num_train_timesteps}"
            )
        check_choice("variance_type", c.variance_type, VARIANCE_TYPES)
        check_choice("prediction_type", c.prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", c.timestep_spacing, TIMESTEP_SPACINGS)
        if not 0.0 < c.dynamic_thresholding_ratio <= 1.0:
            raise ValueError(f"dynamic_thresholding_ratio must be in (0, 1], got {c.dynamic_thresholding_ratio!r}")
        if c.thresholding and not c.sample_max_value > 0:
            raise ValueError(f"sample_max_value must be > 0 for thresholding, got {c.sample_max_value!r}")
        if c.clip_sample and c.clip_sample_range <= 0:
            raise ValueError(f"clip_sample_range must be > 0, got {c.clip_sample_range!r}")
        if not (isinstance(c.steps_offset, (int, np.integer)) and 0 <= c.steps_offset < c.num_train_timesteps):
            raise ValueError(f"steps_offset must be an integer in [0, num_train_timesteps), got {c.steps_offset!r}")
        if c.rescale_betas_zero_snr and c.num_train_timesteps < 2:
            raise ValueError(
                "rescale_betas_zero_snr=True needs num_train_timesteps ≥ 2: it keeps ᾱ_1 and sets ᾱ_T = 0, "
                f"got num_train_timesteps={c.num_train_timesteps}"
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

    # ------------------------------------------------------------------ chains

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

    def chain(self, num_inference_steps: int | None = None, timesteps: list[int] | None = None) -> ChainTables:
        """The chain ``set_timesteps`` would install, without installing it (same validation, same spacing); with
        neither argument, the training chain. A pure function of the configuration: pass the result as ``chain=`` to
        ``q_posterior`` and ``p_mean_variance`` for the respaced process that ``step`` samples on it."""
        T = self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("pass at most one of num_inference_steps or timesteps")
        if timesteps is not None:
            descending = custom_timesteps(timesteps, T)
        elif num_inference_steps is not None:
            check_num_inference_steps(num_inference_steps, T)
            c = self.config
            descending = spaced_timesteps(T, int(num_inference_steps), c.timestep_spacing, c.steps_offset)
        else:
            return self.train_tables
        if len(descending) == T:  # strictly descending in [0, T): all of them
            return self.train_tables
        return ChainTables.from_betas(self._betas, descending[::-1], large_variance=VARIANCE_TYPES[self.config.variance_type].large)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the sampling chain: ``num_inference_steps`` spaced by ``config.timestep_spacing``, or custom
        strictly descending ``timesteps``. A shorter chain is sampled with its own respaced β'_k (see
        ``ChainTables.from_betas``), so each step is still an exact posterior step of the respaced process."""
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps to set_timesteps")
        chain = self.chain(num_inference_steps, timesteps)
        self._install(chain, device)
        self.custom_timesteps, self.num_inference_steps = timesteps is not None, len(chain)

    def _install(self, chain: ChainTables, device) -> None:
        """Make ``chain`` the sampling chain, with ``timesteps`` descending."""
        self._chain = chain
        self.timesteps = chain.timesteps.flip(0).to(device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The timestep after ``timestep`` in the sampling chain (−1 after the last one). Not a per-step path: a
        tensor of timesteps is read back to the host."""
        if torch.is_tensor(timestep):
            previous = [self._chain.previous_timestep(t) for t in timestep.reshape(-1).tolist()]
            return torch.tensor(previous, device=timestep.device).view(timestep.shape)
        return self._chain.previous_timestep(int(timestep))

    # ------------------------------------------------------------------ q: the forward process

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (Eq. 4), ``timesteps`` an int or one per sample."""
        k = self.train_tables.index(timesteps, original_samples)
        a, b = self.train_tables.read(k, original_samples, "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")
        return _combine(a, original_samples, b, noise)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        """The v-prediction target v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (``sample`` is x_0)."""
        k = self.train_tables.index(timesteps, sample)
        a, b = self.train_tables.read(k, sample, "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")
        return _combine(a, noise, b, sample, -1)

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor | int, *, chain: ChainTables | None = None
    ) -> Gaussian:
        """q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (Eqs. 6–7) at train ``timesteps`` (int or per sample) on ``chain``
        (default: the training chain; a chain from ``self.chain(...)`` gives the respaced process's posterior)."""
        chain = self.train_tables if chain is None else chain
        k = chain.index(timesteps, x_t)
        a, b, variance, log_variance = chain.read(
            k, x_t, "posterior_mean_x0_coef", "posterior_mean_xt_coef", "posterior_variance", "posterior_log_variance_clipped"
        )
        return Gaussian(_combine(a, x0, b, x_t), variance, log_variance, x0)

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

    def p_mean_variance(
        self, model_output: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor | int, *, chain: ChainTables | None = None
    ) -> Gaussian:
        """p_θ(x_{t−1} | x_t) at train ``timesteps`` (int or per sample) on ``chain`` (default: the training chain;
        a chain from ``self.chain(...)`` gives exactly the distribution ``step`` samples from on it)."""
        chain = self.train_tables if chain is None else chain
        return self._p(chain, chain.index(timesteps, x_t), model_output, x_t)

    def _p(self, chain: ChainTables, k: int | torch.Tensor, model_output: torch.Tensor, x_t: torch.Tensor) -> Gaussian:
        """p_θ(x_{t−1} | x_t) at chain index k: the one path shared by ``step``, the losses and the bound."""
        prediction, variance_output = self.split_model_output(model_output, x_t)
        self._require_x0_defined(chain, k)
        c = self.config
        if c.prediction_type == "epsilon" and not (c.clip_sample or c.thresholding):
            # Eq. 11: μ_θ = 1/√α_t · x_t − β_t/(√α_t √(1−ᾱ_t)) · ε_θ, without forming x̂_0 first.
            r, e = chain.read(k, x_t, "recip_sqrt_alphas", "mean_eps_coef")
            mean = _combine(r, x_t, e, prediction, -1)
            pred_original_sample = self._predict_original(chain, k, prediction, x_t)
        else:
            pred_original_sample = self._clip_original(self._predict_original(chain, k, prediction, x_t))
            a, b = chain.read(k, x_t, "posterior_mean_x0_coef", "posterior_mean_xt_coef")
            mean = _combine(a, pred_original_sample, b, x_t)  # Eq. 7: μ̃_t(x_t, x̂_0)
        return Gaussian(mean, *self._model_variance(chain, k, variance_output, x_t), pred_original_sample)

    def _require_x0_defined(self, chain: ChainTables, k: int | torch.Tensor) -> None:
        """ε-prediction cannot give x̂_0 where ᾱ = 0 (the last timestep under zero terminal SNR): refuse there,
        on the host for a host timestep, on the device (no read-back) for index tensors."""
        if self.config.prediction_type != "epsilon" or not chain.ends_at_zero_snr:
            return
        T, last = self.config.num_train_timesteps, len(chain) - 1
        message = (
            f"prediction_type='epsilon' cannot recover x̂_0 at timestep {T - 1}, where ᾱ = 0 "
            "(rescale_betas_zero_snr=True); use prediction_type='v_prediction' or 'sample', or a chain that stops "
            f"short of timestep {T - 1} (e.g. timestep_spacing='leading')"
        )
        if isinstance(k, torch.Tensor):
            torch._assert_async((k != last).all(), message)
        elif k == last:
            raise ValueError(message)

    def _predict_original(self, chain: ChainTables, k, prediction: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """x̂_0 from the network's prediction: Eq. 15 for ε, the output itself for x_0, or from v."""
        kind = self.config.prediction_type
        if kind == "sample":
            return prediction
        names = ("sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod") if kind == "epsilon" else (
            "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")
        a, b = chain.read(k, x_t, *names)
        return _combine(a, x_t, b, prediction, -1)

    def _clip_original(self, pred_original_sample: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding (Imagen, Saharia et al. 2022) or clipping of x̂_0, as configured."""
        c = self.config
        if c.thresholding:
            x0 = pred_original_sample
            flat = x0.reshape(x0.shape[0], -1)
            flat = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
            # s clamped to [1, sample_max_value]: torch.clamp gives sample_max_value when it is below 1, as diffusers
            s = torch.quantile(flat.abs(), c.dynamic_thresholding_ratio, dim=1).clamp(1.0, c.sample_max_value)
            s = s.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
            return torch.maximum(torch.minimum(x0, s), -s) / s
        if c.clip_sample:
            return pred_original_sample.clamp(-c.clip_sample_range, c.clip_sample_range)
        return pred_original_sample

    def _model_variance(self, chain: ChainTables, k, variance_output: torch.Tensor | None, x_t: torch.Tensor):
        """(σ_t², log σ_t²) of p_θ in every variance mode: the fixed ones from the tables, the learned ones from the
        network (``"learned"``: its output is log σ_t²)."""
        kind = self.config.variance_type
        if kind not in LEARNED_VARIANCE_TYPES:
            return chain.read(k, x_t, "fixed_variance", "fixed_log_variance")
        log_variance = variance_output
        if kind == "learned_range":  # improved DDPM Eq. 15 with v = (output + 1) / 2
            frac = (variance_output + 1.0) / 2.0
            log_beta, log_beta_tilde = chain.read(k, x_t, "log_betas", "posterior_log_variance_clipped")
            log_variance = _combine(log_beta, frac, log_beta_tilde, 1.0 - frac)
        return torch.exp(log_variance), log_variance

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

        ``timestep`` is one timestep of the current schedule (an int, or a one-element tensor) or a ``[B]`` tensor
        of per-sample timesteps. z is drawn with ``randn_tensor`` in the shape and dtype of the sample, from
        ``generator`` (one, or one per sample), and only when noise is added: for a host timestep (an int or a CPU
        tensor) never at the last step, so a seeded chain consumes the generator as diffusers' ``DDPMScheduler``
        does; for timesteps on a device or per sample always, with σ = 0 for the samples at their last step (no
        value is read back from the device).
        """
        chain = self._chain
        k = chain.index(timestep, sample)
        p = self._p(chain, k, model_output, sample)
        prev_sample = p.mean
        per_sample = isinstance(k, torch.Tensor)
        if per_sample or k > 0:
            z = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            if self.config.variance_type not in LEARNED_VARIANCE_TYPES:
                (std,) = chain.read(k, sample, "sampling_std")  # σ_t, 0 at the chain's first step
            else:
                std = p.variance.sqrt()
                std = std * (k > 0).view(-1, *([1] * (sample.ndim - 1))) if per_sample else std
            prev_sample = prev_sample.addcmul_(z, std)
        if not return_dict:
            return (prev_sample, p.pred_original_sample)
        return DDPMDocSchedulerOutput(prev_sample=prev_sample, pred_original_sample=p.pred_original_sample)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

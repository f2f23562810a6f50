"""openai's diffusion flags as the ``DDPMDocScheduler`` configuration of the same process.

============================================  =================================================================
openai (``create_gaussian_diffusion``)         ``DDPMDocScheduler``
============================================  =================================================================
``diffusion_steps`` T                          ``num_train_timesteps`` T
``noise_schedule linear``: β from 1e-4·1000/T  ``beta_schedule="linear"``, ``beta_start``/``beta_end`` the same
to 0.02·1000/T                                 (so T = 4000 runs from 2.5e-5 to 0.005)
``noise_schedule cosine`` (β capped at 0.999)  ``beta_schedule="squaredcos_cap_v2"`` (improved DDPM Eq. 17)
``learn_sigma``: ``LEARNED_RANGE``             ``variance_type="learned_range"`` (improved DDPM Eq. 15)
otherwise ``FIXED_LARGE`` (σ² = β_t, the       ``"fixed_large"``; ``"fixed_small"`` (β̃_t) for improved-diffusion's
first step β̃_2), or ``sigma_small``            ``sigma_small``
``predict_xstart``                             ``prediction_type="sample"``, else ``"epsilon"``
the samplers' ``clip_denoised``                ``clip_sample`` (x̂_0 clipped to [−1, 1])
``rescale_timesteps`` (network sees t·1000/T)  the pipeline's ``rescale_timesteps`` (``hf_ddpm.guidance``)
``use_kl``, ``rescale_learned_sigmas``         training losses only: nothing to convert
============================================  =================================================================

``timestep_spacing="linspace"`` makes ``pipe(num_inference_steps=K)`` stride from 0 to T − 1 as openai's respacing
does; openai's exact choice of timesteps (its rounding differs from linspace's for some K) is
:func:`~hf_ddpm.convert.respacing.respaced_timesteps`.
"""

from __future__ import annotations

from .flags import OpenAIFlags

LINEAR_BETA_START, LINEAR_BETA_END = 0.0001, 0.02  # for T = 1000, scaled by 1000/T


def scheduler_config(flags: OpenAIFlags) -> dict:
    """The ``DDPMDocScheduler`` configuration of openai's diffusion."""
    T = flags.diffusion_steps
    scale = 1000 / T  # openai's get_named_beta_schedule("linear", T)
    if flags.learn_sigma:
        variance_type = "learned_range"
    else:
        variance_type = "fixed_small" if flags.sigma_small else "fixed_large"
    return dict(
        num_train_timesteps=T,
        beta_schedule="linear" if flags.noise_schedule == "linear" else "squaredcos_cap_v2",
        beta_start=scale * LINEAR_BETA_START,
        beta_end=scale * LINEAR_BETA_END,
        variance_type=variance_type,
        prediction_type="sample" if flags.predict_xstart else "epsilon",
        clip_sample=flags.clip_denoised,
        clip_sample_range=1.0,
        timestep_spacing="linspace",
    )

"""What each option means, in the card's words: one table per option, keyed by the option lists they describe.

The scheduler's options (``VARIANCE_TYPES``, ``PREDICTION_TYPES``, ``BETA_SCHEDULES``) and the trainer's
(``LOSS_TYPES``, ``TIMESTEP_SAMPLERS``, ``MIXED_PRECISIONS``) are described here and nowhere else in the card code;
``tests/test_hub_card.py`` checks that each table covers exactly its option list, so an option added to a list
without a text here fails there. (The scheduler's options are moving beside their descriptions, in
``hf_ddpm/options.py`` on the scheduler's branch; the card will then read those.)
"""

from __future__ import annotations

_POSTERIOR = "σ_t² = β̃_t (the posterior variance)"
VARIANCE_TEXT = {
    "fixed_small": _POSTERIOR,
    "fixed_small_log": _POSTERIOR,
    "fixed_large": "σ_t² = β_t",
    "fixed_large_log": "σ_t² = β_t",
    "learned": "learned; the network's extra channels are log σ_t²",
    "learned_range": "learned; log σ_t² interpolates between log β_t and log β̃_t (improved DDPM)",
}

# Why diffusers' own DDPMScheduler does not reproduce our chains for a variance type (absent: it does, as
# tests/test_scheduler.py shows for fixed_small_log and learned_range).
DIFFUSERS_VARIANCE_DIFFERENCE = {
    "learned": "this model's variance type `learned` means something else in diffusers' `DDPMScheduler` "
               "(hf-ddpm's `learned` is a log-variance, diffusers reads a variance)",
    "fixed_large_log": "diffusers' `DDPMScheduler` samples NaN with the variance type `fixed_large_log`",
}

# The training target and the network output, as symbols.
PREDICTION_SYMBOLS = {"epsilon": ("ε", "ε_θ"), "sample": ("x_0", "x̂_θ"), "v_prediction": ("v", "v_θ")}

# β schedules given by their end points, and the others (named as they are).
BETA_ENDPOINT_SCHEDULES = ("linear", "scaled_linear")


def beta_text(beta_schedule: str, beta_start: float, beta_end: float, trained_betas: bool) -> str:
    """The β schedule in one line."""
    if trained_betas:
        return "given explicitly (trained_betas)"
    if beta_schedule in BETA_ENDPOINT_SCHEDULES:
        return f"{beta_schedule}, β_1 = {beta_start:g} → β_T = {beta_end:g}"
    return f"`{beta_schedule}`"


def loss_text(loss_type: str, target_symbol: str) -> str:
    """The training objective in one line."""
    return {
        "simple": f"L_simple, the unweighted MSE on {target_symbol} (Eq. 14)",
        "vlb": "the variational bound L_vlb (Eq. 5)",
        "hybrid": "L_hybrid = L_simple + λ·L_vlb (improved DDPM)",
    }[loss_type]


SAMPLER_TEXT = {"uniform": "uniform", "importance": "importance (importance sampling of t by the bound's terms)"}

PRECISION_TEXT = {"no": "float32", "fp16": "float16 mixed", "bf16": "bfloat16 mixed"}

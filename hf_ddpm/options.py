"""The choices of ``DDPMDocScheduler``'s string-valued settings, each with what it means: the one place an option is
described. The scheduler validates against these tables, the command line offers their keys (``choices=``), and the
model card renders their texts, so a new option cannot be described in one place and forgotten in another.

Each table is a dict keyed by the option's name, so ``name in VARIANCE_TYPES`` and ``choices=VARIANCE_TYPES`` work.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VarianceType:
    """One choice of Σ_θ = σ_t² I for p_θ(x_{t−1} | x_t) (Eq. 1; Sec. 3.2).

    ``variance``: σ_t² in one line. ``learned``: the network outputs twice the sample's channels, the second half
    read as described. ``large``: for a fixed type, σ_t² = β_t (else β̃_t). ``diffusers_difference``: why diffusers'
    own ``DDPMScheduler`` cannot reproduce our chains for this option (None where it does, tested).
    """

    variance: str
    learned: bool = False
    large: bool = False
    diffusers_difference: str | None = None


_SMALL = "σ_t² = β̃_t (the posterior variance)"
VARIANCE_TYPES: dict[str, VarianceType] = {
    "fixed_small": VarianceType(_SMALL),
    "fixed_small_log": VarianceType(_SMALL),  # the same variance; the name is kept for configuration compatibility
    "fixed_large": VarianceType("σ_t² = β_t", large=True),
    "fixed_large_log": VarianceType(
        "σ_t² = β_t",
        large=True,
        diffusers_difference="diffusers' `DDPMScheduler` samples NaN with the variance type `fixed_large_log`",
    ),
    "learned": VarianceType(
        "learned; the network's extra channels are log σ_t²",
        learned=True,
        diffusers_difference="this model's variance type `learned` means something else in diffusers' "
        "`DDPMScheduler` (hf-ddpm's `learned` is a log-variance, diffusers reads a variance)",
    ),
    "learned_range": VarianceType(
        "learned; log σ_t² interpolates between log β_t and log β̃_t (improved DDPM)", learned=True
    ),
}
LEARNED_VARIANCE_TYPES = tuple(name for name, option in VARIANCE_TYPES.items() if option.learned)


@dataclass(frozen=True)
class PredictionType:
    """What the network predicts: the training target's symbol, the network output's symbol, and the definition;
    the two symbols also in LaTeX, for formulas (the model card's, rendered by KaTeX)."""

    target: str
    output: str
    description: str
    target_latex: str
    output_latex: str


PREDICTION_TYPES: dict[str, PredictionType] = {
    "epsilon": PredictionType("ε", "ε_θ", "the noise ε of x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (Eq. 11)", r"\epsilon",
                              r"\epsilon_\theta"),
    "sample": PredictionType("x_0", "x̂_θ", "the clean sample x_0", "x_0", r"\hat x_\theta"),
    "v_prediction": PredictionType("v", "v_θ", "the velocity v = √ᾱ_t ε − √(1−ᾱ_t) x_0", "v", r"v_\theta"),
}

# β schedules; ``{beta_start}`` and ``{beta_end}`` in a description are the configuration's values (format with
# ``describe_beta_schedule``).
BETA_SCHEDULES: dict[str, str] = {
    "linear": "linear, β_1 = {beta_start:g} → β_T = {beta_end:g} (the paper's schedule)",
    "scaled_linear": "scaled_linear: linear in √β, β_1 = {beta_start:g} → β_T = {beta_end:g} (latent diffusion)",
    "squaredcos_cap_v2": "`squaredcos_cap_v2`: the cosine schedule ᾱ_t ∝ cos²((t/T + 0.008)/1.008 · π/2), "
    "β_t capped at 0.999 (improved DDPM, Eq. 17)",
    "sigmoid": "sigmoid: β_1 = {beta_start:g} + ({beta_end:g} − {beta_start:g}) · sigmoid(s), s from −6 to 6 (GeoDiff)",
}

TIMESTEP_SPACINGS: dict[str, str] = {
    "linspace": "K timesteps evenly spaced from T−1 down to 0, rounded",
    "leading": "every ⌊T/K⌋-th timestep from 0, plus steps_offset",
    "trailing": "every T/K-th timestep counted back from T−1, rounded",
}


def describe_beta_schedule(beta_schedule: str, beta_start: float, beta_end: float) -> str:
    """The description of ``beta_schedule`` with the configuration's β_1 and β_T filled in."""
    return BETA_SCHEDULES[beta_schedule].format(beta_start=beta_start, beta_end=beta_end)

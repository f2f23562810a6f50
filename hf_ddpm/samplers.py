"""The samplers of a trained DDPM: diffusers' schedulers by the names the command line and the steps trade-off use,
which of them cannot sample a model (and why), and which chains have a variational bound.

Any scheduler of ``DDPMDocScheduler.compatibles`` built with ``from_config`` from the model's scheduler configuration
discretises the same forward process (β schedule, T, prediction type, spacing), and the pipeline drives it by
diffusers' protocol. The exceptions are refused by name before sampling (:func:`check_can_sample`).

The bound (Eq. 5) is that of a chain of Gaussians p_θ(x_{t'} | x_t). Our ancestral chain is one; so is DDIM with
η = 1 (Song et al. 2021, Eq. 12 and 16). With t' the step before t, ᾱ = ᾱ_t, ᾱ' = ᾱ_{t'}, α' = ᾱ/ᾱ', β' = 1 − α' and
the x̂_0 the step uses (clipped as configured) with ε̂ = (x_t − √ᾱ x̂_0)/√(1 − ᾱ) (the pipeline has DDIM re-derive ε̂
from the clipped x̂_0, as openai's DDIM does), DDIM's step is N(√ᾱ' x̂_0 + √(1 − ᾱ' − σ²) ε̂, σ²) with
σ² = η² (1 − ᾱ')/(1 − ᾱ) · β'. At η = 1, σ² = β̃' (the respaced posterior variance), and
1 − ᾱ' − β̃' = (1 − ᾱ')² ᾱ / (ᾱ'(1 − ᾱ)), so √(1 − ᾱ' − β̃') = (1 − ᾱ')√α' / √(1 − ᾱ) and the mean is
[√ᾱ' − (1 − ᾱ')ᾱ/(√ᾱ'(1 − ᾱ))] x̂_0 + √α'(1 − ᾱ')/(1 − ᾱ) x_t = √ᾱ' β'/(1 − ᾱ) x̂_0 + √α'(1 − ᾱ')/(1 − ᾱ) x_t:
the posterior mean μ̃'(x_t, x̂_0) of the respaced process (Eq. 7 with β'). DDIM with η = 1 is therefore our
``fixed_small`` chain on the same timesteps, and its bound is that chain's (:func:`bound_chain`). Every other
sampler is an ODE solver (deterministic: each step is a point mass, so no bound exists) or an SDE sampler whose steps
are not the respaced posteriors.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import typing

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       PNDMScheduler, UniPCMultistepScheduler)

from .errors import ParameterError, check_choice
from .likelihood import sampling_chain
from .scheduler import DDPMDocScheduler, check_num_inference_steps


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A named sampler: the scheduler class, the configuration it overrides, and what it is in one line."""

    scheduler_class: type
    overrides: dict
    description: str


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(DDPMDocScheduler, {}, "ancestral sampling on the respaced chain (Algorithm 2); its bound exists"),
    "ddim": Sampler(DDIMScheduler, {}, "DDIM (Song et al. 2021): deterministic at η = 0; η = 1 is the respaced "
                                       "chain with β̃′"),
    "dpmsolver++": Sampler(DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"},
                           "DPM-Solver++ (Lu et al. 2022), a second-order multistep ODE solver"),
    "unipc": Sampler(UniPCMultistepScheduler, {}, "UniPC (Zhao et al. 2023), a predictor–corrector ODE solver"),
    "euler": Sampler(EulerDiscreteScheduler, {}, "Euler's method on the probability-flow ODE (Karras et al. 2022)"),
    "pndm": Sampler(PNDMScheduler, {}, "PNDM (Liu et al. 2022), pseudo numerical methods"),
}

# The sampler docs/guides/samplers.md recommends for samples, with its steps, and the model card's usage snippet shows:
# on the digits model DPM-Solver++ at 20 steps lost nothing measurable against 100 (FD, score, class balance).
RECOMMENDED = ("dpmsolver++", 20)
# Schedulers that cannot sample a model with these prediction types (diffusers raises inside ``step`` otherwise).
UNSUPPORTED_PREDICTION_TYPES = {
    "PNDMScheduler": ("sample",),
    "EulerAncestralDiscreteScheduler": ("sample",),
    "KDPM2DiscreteScheduler": ("sample",),
    "KDPM2AncestralDiscreteScheduler": ("sample",),
    "DPMSolverSDEScheduler": ("sample",),
}
# Schedulers that cannot sample a DDPM at all, and why.
NOT_DDPM_SAMPLERS = {
    "EDMEulerScheduler": "it samples EDM's own noise levels (sigma_min … sigma_max, sigma_data) and feeds the network "
                         "EDM's c_noise = ¼ log σ as its timestep, not the model's training timesteps 0 … T−1",
}
# Multistep solvers that step from their last timestep on to σ = 0: with `leading` or `linspace` spacing they place
# K + 1 points on the T timesteps, so they take at most T − 1 steps (at K = T diffusers fails inside them).
PAST_ZERO_SOLVERS = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler")
# Samplers that draw noise at every step but whose steps are not the respaced DDPM posteriors.
STOCHASTIC_SAMPLERS = ("EulerAncestralDiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler")


def scheduler_from_config(scheduler_class: type, config, **overrides):
    """``scheduler_class.from_config(config, **overrides)`` with every value of ``config`` taken as given. (diffusers'
    ``from_config`` gives the new class its own defaults for the values the configuration's scheduler took by default
    when it was built in memory, e.g. ``HeunDiscreteScheduler``'s β_T = 0.012 for a ``DDPMDocScheduler()``'s 0.02: a
    different process. A configuration loaded from a file lists no such values.) A configuration the class cannot
    take (e.g. a β schedule it does not implement) is a :class:`ParameterError` naming the scheduler."""
    given = {key: value for key, value in dict(config).items() if key != "_use_default_values"}
    try:
        return scheduler_class.from_config(given, **overrides)
    except NotImplementedError as error:
        raise ParameterError("scheduler", f"is {scheduler_class.__name__}, which cannot be built from this model's "
                                          f"scheduler configuration: {error}") from error


def make_scheduler(name: str, config, **overrides):
    """The scheduler of sampler ``name`` (a key of :data:`SAMPLERS`) for a model whose scheduler configuration is
    ``config``, with the sampler's own overrides (and ``overrides``): ``Scheduler.from_config(pipe.scheduler.config)``
    (:func:`scheduler_from_config`)."""
    check_choice("scheduler", name, SAMPLERS)
    sampler = SAMPLERS[name]
    return scheduler_from_config(sampler.scheduler_class, config, **{**sampler.overrides, **overrides})


def parse_sampler(spec: str) -> tuple[str, float]:
    """A sampler as the command line and the steps trade-off name it: a key of :data:`SAMPLERS`, for DDIM optionally
    with its η after a colon ("ddim:1"; default 0), as (name, η)."""
    name, _, eta = str(spec).partition(":")
    check_choice("samplers", name, SAMPLERS)
    if not eta:
        return name, 0.0
    try:
        value = float(eta)
    except ValueError:
        raise ParameterError("samplers", f"gives η {eta!r} for {name!r}: write e.g. 'ddim:1'") from None
    if SAMPLERS[name].scheduler_class is not DDIMScheduler or not 0.0 <= value <= 1.0:
        raise ParameterError("samplers", f"gives η = {eta} for {name!r}: only 'ddim' takes an η, in [0, 1]")
    return name, value


def check_can_sample(scheduler, num_inference_steps: int | None = None) -> None:
    """Refuse, before any work, a scheduler that cannot sample a DDPM model configured as ``scheduler.config`` (its
    prediction type), or not with ``num_inference_steps`` (an integer in [1, T] for every scheduler): a
    :class:`ParameterError` naming the scheduler or the steps and why."""
    name = type(scheduler).__name__
    T, spacing = scheduler.config.num_train_timesteps, getattr(scheduler.config, "timestep_spacing", None)
    if num_inference_steps is not None:
        check_num_inference_steps(num_inference_steps, T)
    if name in PAST_ZERO_SOLVERS and spacing in ("leading", "linspace") and num_inference_steps is not None \
            and num_inference_steps >= T:
        raise ParameterError("num_inference_steps", f"is {num_inference_steps}, but {name} with timestep_spacing="
                                                    f"{spacing!r} takes at most T − 1 = {T - 1} steps: it steps on "
                                                    "past timestep 0 to σ = 0, K + 1 points of the T timesteps")
    warm_up = getattr(scheduler, "pndm_order", None)  # PNDM's Runge–Kutta start takes that many steps
    if warm_up and not scheduler.config.skip_prk_steps and num_inference_steps is not None \
            and num_inference_steps < warm_up:
        raise ParameterError("num_inference_steps", f"is {num_inference_steps}, but {name}'s Runge–Kutta start "
                                                    f"(skip_prk_steps=False) takes at least {warm_up} steps; give "
                                                    f"≥ {warm_up}, or build it with skip_prk_steps=True")
    if name in NOT_DDPM_SAMPLERS:
        raise ParameterError("scheduler", f"is {name}, which cannot sample a DDPM: {NOT_DDPM_SAMPLERS[name]}")
    prediction_type = getattr(scheduler.config, "prediction_type", None)
    if prediction_type in UNSUPPORTED_PREDICTION_TYPES.get(name, ()):
        raise ParameterError("scheduler", f"is {name}, which cannot sample a model with prediction_type="
                                          f"{prediction_type!r} (it takes 'epsilon' or 'v_prediction' only)")


def returns_original_sample(scheduler) -> bool:
    """Whether ``scheduler.step`` returns x̂_0 (``pred_original_sample``), read from its declared output class (DDIM,
    Euler and ours do; DPM-Solver, UniPC, DEIS and PNDM do not)."""
    returned = typing.get_type_hints(type(scheduler).step).get("return")
    return any(dataclasses.is_dataclass(kind) and "pred_original_sample" in {f.name for f in dataclasses.fields(kind)}
               for kind in typing.get_args(returned) or (returned,))


def is_deterministic(scheduler, eta: float = 0.0) -> bool:
    """Whether ``scheduler`` (with DDIM's ``eta``) maps x_T to x_0 deterministically: an ODE solver."""
    if isinstance(scheduler, (DDPMDocScheduler, DDPMScheduler)):
        return False
    if isinstance(scheduler, DDIMScheduler):
        return eta == 0.0
    if type(scheduler).__name__ in STOCHASTIC_SAMPLERS:
        return False
    return not str(getattr(scheduler.config, "algorithm_type", "")).startswith("sde")


def _bound_scheduler(scheduler, eta: float) -> DDPMDocScheduler:
    """The ``DDPMDocScheduler`` whose chains are the chains ``scheduler`` samples with DDIM's ``eta`` (the pipeline's
    ``eta``): the scheduler itself; for diffusers' ``DDPMScheduler`` ours of the same configuration (as the pipeline
    replaces it); for ``DDIMScheduler`` with η = 1 our ``fixed_small`` scheduler of its configuration (the identity in
    the module docstring). Otherwise no bound of the sampler's chain exists here: a :class:`ParameterError` saying
    why (``eta`` for DDIM, ``scheduler`` for the others)."""
    name = type(scheduler).__name__
    if isinstance(scheduler, DDPMDocScheduler):
        return scheduler
    if isinstance(scheduler, DDPMScheduler):
        return DDPMDocScheduler.from_config(scheduler.config)
    if isinstance(scheduler, DDIMScheduler):
        if eta == 0.0:
            raise ParameterError("eta", "is 0: DDIM with η = 0 is deterministic (an ODE solver), so its chain has no "
                                        "likelihood and no variational bound; with eta=1 it is the respaced DDPM "
                                        "chain with β̃′, whose bound this computes")
        if eta != 1.0:
            raise ParameterError("eta", f"is {eta}: the bound is computed for DDIM with η = 1 (the respaced DDPM "
                                        "chain with β̃′) only; for 0 < η < 1 DDIM's chain is not a DDPM chain")
        if not scheduler.config.set_alpha_to_one:
            raise ParameterError("scheduler", f"is {name} with set_alpha_to_one=False: its last step ends at ᾱ_0 < 1 "
                                              "and adds noise there, which is not the DDPM chain; set it to True")
        ours = inspect.signature(DDPMDocScheduler.__init__).parameters
        config = {key: value for key, value in scheduler.config.items() if key in ours}
        return DDPMDocScheduler.from_config({**config, "variance_type": "fixed_small"})
    if is_deterministic(scheduler, eta):
        raise ParameterError("scheduler", f"is {name}, a deterministic sampler (an ODE solver): every step is a point "
                                          "mass, so its chain has no likelihood and no variational bound; the bound "
                                          "exists for DDPMDocScheduler and for DDIMScheduler with eta=1")
    raise ParameterError("scheduler", f"is {name}, whose noisy steps are not the posteriors of a respaced DDPM chain: "
                                      "the variational bound computed here is not its bound; it exists for "
                                      "DDPMDocScheduler and for DDIMScheduler with eta=1")


def bound_chain(scheduler, eta: float = 0.0, num_inference_steps: int | None = None,
                inference_timesteps=None) -> tuple[DDPMDocScheduler, torch.Tensor]:
    """The chain whose variational bound is the bound of what ``scheduler`` samples with DDIM's ``eta`` and
    ``num_inference_steps`` K (or custom ``inference_timesteps``; neither: the full chain), as (the
    ``DDPMDocScheduler`` of that chain, its ascending timesteps). The one rule of which samplers have a bound: ours
    and diffusers' ``DDPMScheduler`` (the chain ``sampling_chain`` gives), DDIM with η = 1 (our ``fixed_small``
    chain on DDIM's timesteps, see the module docstring); every other sampler is refused with a
    :class:`ParameterError` saying why."""
    ours = _bound_scheduler(scheduler, eta)
    if isinstance(scheduler, DDIMScheduler):
        if inference_timesteps is not None:
            raise ParameterError("inference_timesteps", "are not a chain DDIMScheduler samples: its set_timesteps "
                                                        "takes no custom timesteps")
        T = scheduler.config.num_train_timesteps
        inference_timesteps, num_inference_steps = ddim_chain(scheduler, num_inference_steps or T), None
    return ours, sampling_chain(ours, num_inference_steps, inference_timesteps)


def ddim_chain(scheduler: DDIMScheduler, num_inference_steps: int) -> list[int]:
    """The strictly descending timesteps DDIM samples on with ``num_inference_steps`` steps, checked to be a chain:
    DDIM steps from t to t − ⌊T/K⌋ (``prev_timestep``), which must be the next timestep of its schedule (and below 0
    after the last one); a spacing where it is not (e.g. ``linspace`` when K does not divide T − 1) is refused."""
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(num_inference_steps)
    timesteps = probe.timesteps.tolist()
    stride = probe.config.num_train_timesteps // probe.num_inference_steps
    following = timesteps[1:] + [-1]
    if any((t - stride != t_next) if t_next >= 0 else (t - stride >= 0) for t, t_next in zip(timesteps, following)):
        raise ParameterError("num_inference_steps", f"={num_inference_steps}: DDIMScheduler with timestep_spacing="
                                                    f"{probe.config.timestep_spacing!r} steps from t to t − "
                                                    f"{stride}, which is not the next timestep of its schedule "
                                                    f"{timesteps[:4]}…, so its steps form no chain to bound")
    return timesteps

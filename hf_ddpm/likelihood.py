"""The variational bound of Ho et al. 2020, in bits per dimension.

−log p_θ(x_0) ≤ L_T + Σ_{t>1} L_{t−1} + L_0 (Eq. 5), with
L_T = KL(q(x_T | x_0) ‖ N(0, I)), L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) and the discretised
Gaussian decoder L_0 = −log p_θ(x_0 | x_1) over the 256 bins of 8-bit data scaled to [−1, 1] (Eq. 13).
Every per-term value is averaged over the data dimensions and divided by ln 2: bits/dim, computed in float64.

The bound is that of a chain: by default the training chain (all T steps); for a sampler of K < T steps, the K-step
chain τ_0 < … < τ_{K−1} it samples on (:func:`sampling_chain`), a diffusion process of its own with β'_k =
1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}} (``hf_ddpm.schedules``): its prior at τ_{K−1}, its decoder at τ_0, its KL terms between its own
posterior and the p_θ that ``step`` samples from on it, the network called at the original timesteps τ_k.

This module holds the terms and the one loop that evaluates a model on images under a
:class:`~hf_ddpm.timestep_plan.TimestepPlan` (:func:`estimate_bound`; :func:`bits_per_dim` for one batch); the result
is a :class:`~hf_ddpm.variational_bound.VariationalBound`.
"""

from __future__ import annotations

import math

import torch
from diffusers.utils.torch_utils import randn_tensor

from .errors import ParameterError
from .guidance import GuidedModel, check_guidance_scale
from .image_inputs import check_model_range_images, check_noise
from .scheduler import DDPMDocScheduler
from .schedules import ChainTables
from .timestep_plan import EXACT_STEPS, TimestepPlan, check_num_timesteps
from .timestep_proposal import (PILOT_IMAGES, check_bound_proposal, learned_proposal, pilot_proposal,
                                pilot_timesteps)
from .variational_bound import VariationalBound

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


def prior_bpd(scheduler: DDPMDocScheduler, x0: torch.Tensor, timestep: int) -> torch.Tensor:
    """L_T = KL(q(x_t | x_0) ‖ N(0, I)) per image at a chain's last ``timestep`` (T − 1 for the training chain),
    bits/dim (a constant of the data when β is fixed)."""
    alpha_bar = float(scheduler.train_tables.alphas_cumprod[timestep])
    kl = normal_kl(math.sqrt(alpha_bar) * x0, math.log1p(-alpha_bar), torch.zeros_like(x0), 0.0)
    return mean_over_dims(kl) / math.log(2.0)


def bound_term(
    scheduler: DDPMDocScheduler,
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor | int,
    *,
    chain: ChainTables | None = None,
) -> torch.Tensor:
    """The bound's term at each example's timestep of ``chain``, bits/dim, shape [B]: the decoder
    L_0 = −log p_θ(x_0 | x_{τ_0}) (Eq. 13) at the chain's first step τ_0, and L_{k−1} = KL(q(x_{τ_{k−1}} | x_{τ_k}, x_0)
    ‖ p_θ(x_{τ_{k−1}} | x_{τ_k})) (Eqs. 5, 6) at every other step τ_k.

    ``chain``: the training chain (default; τ_k = k, so the decoder is at code timestep 0) or a sampling chain from
    ``scheduler.chain(...)``. p_θ is exactly the distribution ``scheduler.step`` samples from on that chain (same
    prediction type, variance type and clipping of x̂_0)."""
    chain = scheduler.train_tables if chain is None else chain
    p = scheduler.p_mean_variance(model_output, x_t, timesteps, chain=chain)

    def kl():
        q = scheduler.q_posterior(x0, x_t, timesteps, chain=chain)
        return mean_over_dims(normal_kl(q.mean, q.log_variance, p.mean, p.log_variance))

    def decoder_nll():  # log σ = ½ log σ², a float64 tensor: never rounded to float32
        log_scales = 0.5 * p.log_variance
        return -mean_over_dims(discretized_gaussian_log_likelihood(x0, means=p.mean, log_scales=log_scales))

    k = chain.index(timesteps, x_t)
    if isinstance(k, int):  # one timestep for the whole batch: compute only its term
        return (decoder_nll() if k == 0 else kl()) / math.log(2.0)
    return torch.where(k == 0, decoder_nll(), kl()) / math.log(2.0)


def sampling_chain(
    scheduler: DDPMDocScheduler, num_inference_steps: int | None = None, inference_timesteps=None
) -> torch.Tensor:
    """The ascending train timesteps of the chain that ``pipe(num_inference_steps=K)`` samples on (spaced by the
    scheduler's ``timestep_spacing`` and ``steps_offset``, as ``set_timesteps(K)``), or of custom strictly descending
    ``inference_timesteps`` (as ``set_timesteps(timesteps=…)`` takes them); neither: the training chain 0 … T−1."""
    if num_inference_steps is not None and inference_timesteps is not None:
        raise ValueError("pass at most one of num_inference_steps or inference_timesteps")
    try:
        return scheduler.chain(num_inference_steps, inference_timesteps).timesteps
    except ValueError as error:
        if inference_timesteps is None:
            raise
        raise ParameterError("inference_timesteps", f"is not a chain set_timesteps accepts: {error}") from error


def _as_output_tensor(output) -> torch.Tensor:
    return output.sample if hasattr(output, "sample") else output


def _chunk_terms(model, scheduler, chain: ChainTables, x0, timesteps: torch.Tensor, noise, generator,
                 class_labels) -> torch.Tensor:
    """[B, K] float64: the terms of images ``x0`` at ``timesteps`` of ``chain``, in ascending t, each from one ε
    (``noise``, or drawn from ``generator``), x_t = add_noise(x_0, ε, t) (Eq. 4) and the model's output at (x_t, t)
    (and ``class_labels``, when given)."""
    x0_64 = x0.double()
    labels = {} if class_labels is None else {"class_labels": class_labels}
    terms = []
    for t in timesteps.tolist():
        eps = noise if noise is not None else \
            randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = scheduler.add_noise(x0, eps, t)
        t_batch = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
        model_output = _as_output_tensor(model(x_t, t_batch, **labels)).double()
        terms.append(bound_term(scheduler, model_output, x0_64, x_t.double(), t, chain=chain))
    return torch.stack(terms, dim=1)


@torch.no_grad()
def estimate_bound(
    model,
    scheduler: DDPMDocScheduler,
    x0: torch.Tensor,
    plan: TimestepPlan,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    batch_size: int | None = None,
    class_labels: torch.Tensor | None = None,
) -> VariationalBound:
    """The variational bound (Eq. 5) of images ``x0`` (in [−1, 1] on the 8-bit grid) under ``plan``, bits/dim: the
    bound of ``plan.chain`` (the training chain, or the sampling chain ``plan`` was built on), estimated from the
    plan's terms.

    ``model(x_t, t)`` returns the network output (a tensor or an object with ``.sample``, e.g. ``UNet2DModel``);
    with ``class_labels`` (one id per image) it is called as ``model(x_t, t, class_labels=y)``: the conditional bound
    L_y, or, with a :class:`~hf_ddpm.guidance.GuidedModel`, the bound of the guided chain.
    The images go through the model ``batch_size`` at a time (None: all at once); within a chunk every planned
    timestep is evaluated in ascending order. ``noise``: the ε used at every timestep (a reproducible evaluation);
    otherwise fresh ε is drawn for every chunk and timestep from ``generator`` (or a list of generators, one per image,
    each drawing its image's ε). The terms are computed in float64 from the model's outputs.

    ``x0`` anywhere else — 0…255 pixel values, images in [0, 1], values off the grid, NaN or inf, an empty batch, a
    shape the network's config does not take — is a ``ParameterError`` naming ``x0`` that says how to convert
    (:func:`~hf_ddpm.image_inputs.check_model_range_images`; from 8-bit images: ``hf_ddpm.data.uint8_to_model_range``).
    """
    T = scheduler.config.num_train_timesteps
    if plan.num_train_timesteps != T:
        raise ParameterError("plan", f"must be for the scheduler's num_train_timesteps={T}, got a plan for "
                                     f"num_train_timesteps={plan.num_train_timesteps}")
    check_model_range_images("x0", x0, model)
    check_noise("noise", noise, x0)
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ParameterError("batch_size", f"must be a positive integer or None, got {batch_size!r}")
    if isinstance(generator, list) and len(generator) != len(x0):
        raise ParameterError("generator", f"is a list of {len(generator)} generators: give one per image ({len(x0)})")
    if class_labels is not None and tuple(class_labels.shape) != (x0.shape[0],):
        raise ParameterError("class_labels", f"has shape {tuple(class_labels.shape)}, expected one label per image "
                                             f"({x0.shape[0]},)")
    chain = scheduler.chain(timesteps=plan.chain.flip(0))  # the training chain's own tables when it is that one
    chunks = x0.split(batch_size) if batch_size else (x0,)
    noises = noise.split(batch_size) if noise is not None and batch_size else (noise,) * len(chunks)
    labels = class_labels.split(batch_size) if class_labels is not None and batch_size else \
        (class_labels,) * len(chunks)
    generators = [generator[i:i + len(chunk)] for i, chunk in zip(range(0, len(x0), batch_size or len(x0)), chunks)] \
        if isinstance(generator, list) else (generator,) * len(chunks)
    priors, terms = [], []
    for chunk, eps, y, g in zip(chunks, noises, labels, generators):
        priors.append(prior_bpd(scheduler, chunk.double(), plan.prior_timestep))
        terms.append(_chunk_terms(model, scheduler, chain, chunk, plan.timesteps, eps, g, y))
    return VariationalBound(plan, torch.cat(priors), torch.cat(terms))


def _check_timesteps(timesteps, chain: torch.Tensor):
    """``timesteps`` None or distinct integer steps of ``chain`` (ascending train timesteps), as a CPU tensor."""
    if timesteps is None:
        return None
    steps = torch.as_tensor(timesteps).flatten().cpu()
    described = f"0 … {len(chain) - 1}" if torch.equal(chain, torch.arange(len(chain))) else str(chain.tolist())
    if steps.is_floating_point() or steps.dtype == torch.bool or steps.numel() == 0 or \
            len(steps.unique()) != len(steps):
        raise ParameterError("timesteps", f"must be distinct integer steps of the chain {described}, got "
                                          f"{steps.tolist()}")
    outside = steps[~torch.isin(steps, chain)]
    if outside.numel():
        raise ParameterError("timesteps", f"{outside.tolist()} are not steps of the chain {described}")
    return steps


LEARNED = "learned in training (the importance sampler's √E[L_t²], saved with the pipeline)"


def bound_plan(
    model,
    scheduler: DDPMDocScheduler,
    x0: torch.Tensor,
    *,
    chain: torch.Tensor | None = None,
    timesteps: torch.Tensor | list[int] | None = None,
    num_timesteps: int | None = None,
    bound_proposal=None,
    generator: torch.Generator | None = None,
    class_labels: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> TimestepPlan:
    """Which terms of the bound of ``chain`` (ascending train timesteps; None: the training chain) to evaluate: the
    one choice behind :func:`bits_per_dim`, ``DDPMDocPipeline.log_likelihood``, ``held_out_bound`` and ``hf-ddpm
    evaluate``.

    ``num_timesteps`` K: the unbiased importance-sampling estimate from K timesteps (:meth:`TimestepPlan.importance`:
    the decoder exactly, K − 1 draws in strata of two). Its proposal (``hf_ddpm.timestep_proposal``): learned in
    training when ``bound_proposal`` (√E[L_t²] of every training timestep, a pipeline's ``config.bound_proposal``) is
    given; otherwise a pilot pass of ``model`` at a few log-spaced steps on :data:`PILOT_IMAGES` of the images ``x0``
    (with their ``class_labels``, ``batch_size`` at a time). ``generator`` draws the pilot's images and noise and the
    timesteps (a seeded CPU generator makes the plan reproducible). ``timesteps``: these steps of the chain instead,
    taken as drawn uniformly (:meth:`TimestepPlan.uniform`). Neither: every step (:meth:`TimestepPlan.full_chain`).
    """
    T = scheduler.config.num_train_timesteps
    chain = torch.arange(T) if chain is None else torch.as_tensor(chain).cpu()
    if timesteps is not None and num_timesteps is not None:
        raise ParameterError("num_timesteps", "cannot be combined with timesteps: pass one of them")
    if timesteps is not None or check_num_timesteps(num_timesteps, len(chain)):
        return TimestepPlan.uniform(T, _check_timesteps(timesteps, chain), chain=chain)
    proposal = check_bound_proposal(bound_proposal, T)
    if proposal is not None:
        return TimestepPlan.importance(T, num_timesteps, learned_proposal(proposal, chain), chain=chain,
                                       generator=generator, description=LEARNED)
    device = generator.device if generator is not None else "cpu"
    chosen = torch.randperm(len(x0), generator=generator, device=device)[:PILOT_IMAGES].to(x0.device)
    steps = pilot_timesteps(chain, num_exact=EXACT_STEPS)
    pilot = estimate_bound(model, scheduler, x0[chosen], TimestepPlan(T, chain, steps, num_exact=0),
                           generator=generator, batch_size=batch_size,
                           class_labels=None if class_labels is None else class_labels[chosen])
    description = f"a pilot pass at {len(steps)} log-spaced timesteps on {len(chosen)} of the images"
    return TimestepPlan.importance(T, num_timesteps, pilot_proposal(chain, steps, pilot.term_means), chain=chain,
                                   generator=generator, description=description)


def bits_per_dim(
    model,
    scheduler: DDPMDocScheduler,
    x0: torch.Tensor,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    timesteps: torch.Tensor | list[int] | None = None,
    num_timesteps: int | None = None,
    bound_proposal=None,
    num_inference_steps: int | None = None,
    inference_timesteps: torch.Tensor | list[int] | None = None,
    class_labels: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    null_class_label: int | None = None,
) -> VariationalBound:
    """The variational bound (Eq. 5) of the batch ``x0`` (in [−1, 1] on the 8-bit grid, checked as in
    :func:`estimate_bound`), bits/dim per image.

    ``class_labels`` (one id per image): the conditional bound L_y ≥ −log p_θ(x | y) of a class-conditional network;
    with ``guidance_scale`` s ≠ 1 (and the network's ``null_class_label``), the bound of the guided chain, ε̃ in every
    term (:class:`~hf_ddpm.guidance.GuidedModel`).

    ``num_inference_steps`` K: the bound of exactly the distribution ``pipe(num_inference_steps=K)`` samples from, on
    its K-step chain; ``inference_timesteps``: that of the chain ``set_timesteps(timesteps=inference_timesteps)``
    installs (:func:`sampling_chain`); neither: the full T-step chain. ``num_timesteps`` K: the unbiased estimate
    from K of the chain's steps, drawn by importance (:func:`bound_plan`, with the proposal ``bound_proposal`` learned
    in training, else a pilot pass; the draws from ``generator``, or from its first generator when it is a list);
    ``timesteps``: evaluate only these steps of the chain, for the unbiased estimate L_T + N/|S| · Σ_{t∈S} L_t when
    they were drawn uniformly from its N steps (:meth:`TimestepPlan.uniform`); neither: every step. ``model``,
    ``noise``, ``generator``: as in :func:`estimate_bound`.
    """
    check_model_range_images("x0", x0, model)  # before the plan: a pilot pass would run on them
    scale = check_guidance_scale(guidance_scale)
    if class_labels is None and scale != 1.0:
        raise ParameterError("guidance_scale", f"is {scale}: guidance needs class_labels")
    if class_labels is not None:
        model = GuidedModel(model, scale, null_class_label)
    plan = bound_plan(model, scheduler, x0, chain=sampling_chain(scheduler, num_inference_steps, inference_timesteps),
                      timesteps=timesteps, num_timesteps=num_timesteps, bound_proposal=bound_proposal,
                      generator=generator[0] if isinstance(generator, list) else generator, class_labels=class_labels)
    return estimate_bound(model, scheduler, x0, plan, noise=noise, generator=generator, class_labels=class_labels)

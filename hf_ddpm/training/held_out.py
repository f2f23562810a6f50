"""The held-out bound of a run: during training (an estimate from ``eval_timesteps``) and at its end (every timestep,
unless ``final_eval_timesteps`` says fewer)."""

from __future__ import annotations

import torch

from ..likelihood import bound_plan, estimate_bound, sampling_chain
from ..timestep_plan import TimestepPlan
from ..variational_bound import VariationalBound


def held_out_plan(
    model,
    scheduler,
    images: torch.Tensor,
    *,
    num_timesteps: int | None,
    seed: int,
    batch_size: int,
    num_inference_steps: int | None = None,
    class_labels: torch.Tensor | None = None,
    bound_proposal=None,
) -> TimestepPlan:
    """The terms :func:`held_out_bound` evaluates (the same arguments): :func:`~hf_ddpm.likelihood.bound_plan` on the
    chain of ``num_inference_steps``, its draws from a CPU generator seeded by ``seed``."""
    return bound_plan(model, scheduler, images, chain=sampling_chain(scheduler, num_inference_steps),
                      num_timesteps=num_timesteps, bound_proposal=bound_proposal, batch_size=batch_size,
                      generator=torch.Generator().manual_seed(seed), class_labels=class_labels)


def held_out_bound(
    model,
    scheduler,
    images: torch.Tensor,
    *,
    num_timesteps: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    num_inference_steps: int | None = None,
    class_labels: torch.Tensor | None = None,
    bound_proposal=None,
) -> VariationalBound:
    """The bound (Eq. 5) of ``images`` (in [−1, 1], 8-bit grid) in bits/dim, per image and averaged.

    ``num_timesteps`` None or ≥ T: every timestep (the full bound). Fewer (K): an unbiased estimate from K timesteps
    drawn by importance with ``seed`` (:func:`~hf_ddpm.likelihood.bound_plan`), from ``bound_proposal`` (√E[L_t²] of
    every training timestep, learned in training) or else a short pilot pass; its ``standard_error`` combines the
    spread over images with the error of the draws, and its ``warning`` says when it cannot be trusted. Images go
    through the model in chunks of ``batch_size``; the noise is drawn from ``seed``.
    ``num_inference_steps`` N: the bound of the N-step sampler (:func:`~hf_ddpm.likelihood.sampling_chain`), its
    terms chosen as above among the chain's N steps (K ≥ N: all of them); None: the full T-step chain.
    ``class_labels``: the images' labels, for the conditional bound of a class-conditional ``model``."""
    plan = held_out_plan(model, scheduler, images, num_timesteps=num_timesteps, seed=seed, batch_size=batch_size,
                         num_inference_steps=num_inference_steps, class_labels=class_labels,
                         bound_proposal=bound_proposal)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    return estimate_bound(model, scheduler, images, plan, generator=generator, batch_size=batch_size,
                          class_labels=class_labels)

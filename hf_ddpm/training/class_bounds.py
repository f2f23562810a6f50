"""The final bounds of a class-conditional run (``shared/docs/guidance-math.md``): beside the conditional bound of
the held-out images with their true labels, the marginal bound over every class, the null-label bound, and the
generative classifier argmin_y L_y."""

from __future__ import annotations

import torch

from ..guidance import GuidedModel
from ..likelihood import bound_plan
from ..marginal_bound import MarginalBound, class_bounds
from ..timestep_plan import MIN_STRATIFIED_TIMESTEPS
from ..variational_bound import VariationalBound
from .held_out import held_out_bound


def class_bound_timesteps(num_classes: int, num_train_timesteps: int,
                          max_timesteps: int | None = None) -> tuple[int, int]:
    """(the timesteps each class's bound is estimated from, the null label's): T / (4K) and T / (2K), each at least
    ``MIN_STRATIFIED_TIMESTEPS`` and at most ``max_timesteps``. The K classes together cost a quarter of a full bound
    pass: anchored on the conditional bound, only their differences are estimated (on the digits the classifier's
    accuracy was 0.986 from T / (4K) and 0.989 from T / (2K), the marginal's error the same); the null label, without
    an anchor, gets twice as many."""
    T = num_train_timesteps

    def capped(count: int) -> int:
        return max(MIN_STRATIFIED_TIMESTEPS, min(count, max_timesteps or T))

    return capped(T // (4 * num_classes)), capped(T // (2 * num_classes))


def anchored_marginal(pipeline, images: torch.Tensor, labels: torch.Tensor, conditional: VariationalBound, *,
                      seed: int, num_timesteps: int, batch_size: int = 512) -> MarginalBound:
    """The marginal bound of ``images`` (and the generative classifier) from every class's L_y estimated from
    ``num_timesteps`` timesteps (:func:`~hf_ddpm.likelihood.bound_plan` with the pipeline's ``bound_proposal``, the
    same timesteps and ε for every class), anchored on ``conditional``, their bound with the true ``labels``."""
    conditioning, scheduler = pipeline.conditioning, pipeline.scheduler
    plan = bound_plan(GuidedModel(pipeline.unet, 1.0, conditioning.null_class_label), scheduler, images,
                      num_timesteps=num_timesteps, bound_proposal=pipeline.config.bound_proposal, class_labels=labels,
                      generator=torch.Generator().manual_seed(seed), batch_size=batch_size)
    per_class = class_bounds(pipeline.unet, scheduler, images, plan, conditioning.class_ids, seed=seed,
                             batch_size=batch_size)
    return MarginalBound.from_class_bounds(per_class, conditioning.frequencies, conditioning.class_ids,
                                           images[0].numel(), anchor=conditional, labels=labels)


def final_class_bounds(pipeline, images: torch.Tensor, labels: torch.Tensor, conditional: VariationalBound, *,
                       seed: int, max_timesteps: int | None = None, batch_size: int = 512) -> dict:
    """``class_bounds`` of ``metrics.json``: the ``conditional`` bound (already evaluated, with the true ``labels``),
    the ``marginal`` bound, the ``null_label`` bound and the ``classifier_accuracy`` of argmin_y L_y on ``images``.

    Every class's L_y is estimated from T / (4K) timesteps (:func:`class_bound_timesteps`) and anchored on
    ``conditional`` (:func:`anchored_marginal`); the null-label bound from T / (2K). ``max_timesteps`` (the run's ``final_eval_timesteps``): at most that many."""
    conditioning, scheduler = pipeline.conditioning, pipeline.scheduler
    num_timesteps, null_timesteps = class_bound_timesteps(conditioning.num_classes,
                                                          scheduler.config.num_train_timesteps, max_timesteps)
    marginal = anchored_marginal(pipeline, images, labels, conditional, seed=seed, num_timesteps=num_timesteps,
                                 batch_size=batch_size)
    null = held_out_bound(GuidedModel(pipeline.unet, 0.0, conditioning.null_class_label), scheduler, images,
                          num_timesteps=null_timesteps, seed=seed, batch_size=batch_size,
                          class_labels=torch.zeros_like(labels), bound_proposal=pipeline.config.bound_proposal)
    return {
        "conditional": conditional.to_dict(),
        "marginal": marginal.to_dict(),
        "null_label": null.to_dict(),
        "classifier_accuracy": marginal.accuracy(labels),
        "classifier_timesteps": num_timesteps,
    }

"""What ``hf-ddpm evaluate`` adds for a class-conditional model: beside the conditional bound (the held-out images
with their true labels), the marginal and null-label bounds with the generative classifier argmin_y L_y
(:func:`~hf_ddpm.training.class_bounds.final_class_bounds`, as the trainer's final evaluation reports them), and with
``--guidance-scale`` the bound of the guided chain."""

from __future__ import annotations

import torch


def class_bounds_of(pipeline, images: torch.Tensor, labels: torch.Tensor, conditional, args, steps: int) -> dict | None:
    """The marginal and null-label bounds and the generative classifier of ``images`` (model range, on the device)
    with their ``labels``, anchored on the ``conditional`` bound; None, saying why, where they are not computed: for a
    sampling chain shorter than T (the per-class bounds are of the training chain) or a model without a null label."""
    from ..training.class_bounds import final_class_bounds

    T = pipeline.scheduler.config.num_train_timesteps
    if steps != T:
        print(f"(the marginal and null-label bounds and the generative classifier are of the full {T}-step chain: "
              "evaluate without --num-inference-steps for them)")
        return None
    if pipeline.conditioning.null_class_label is None:
        print("(this model has no null label: no null-label bound, and the marginal bound is not computed)")
        return None
    bounds = final_class_bounds(pipeline, images, labels, conditional, seed=args.seed, batch_size=args.batch_size)
    print(f"marginal bound: {bounds['marginal']['bits_per_dim']:.4f} ± {bounds['marginal']['standard_error']:.4f} "
          f"bits/dim; null-label bound: {bounds['null_label']['bits_per_dim']:.4f} ± "
          f"{bounds['null_label']['standard_error']:.4f} bits/dim")
    print(f"generative classifier argmin_y L_y ({bounds['classifier_timesteps']} timesteps per class): accuracy "
          f"{bounds['classifier_accuracy']:.4f} on {len(labels)} images")
    return bounds


def guided_bound_of(pipeline, images: torch.Tensor, labels: torch.Tensor, args, steps: int, num_timesteps):
    """``--guidance-scale`` s ≠ 1: the bound of the guided chain (ε̃ in every term) of ``images`` with their
    ``labels``, on the same chain and plan as the conditional bound; None at s = 1 (the conditional bound is it)."""
    from ..training.held_out import held_out_bound

    scale = pipeline.conditioning.check_guidance(args.guidance_scale)
    if scale == 1.0:
        return None
    bound = held_out_bound(pipeline.network(scale), pipeline.scheduler, images, num_timesteps=num_timesteps,
                           seed=args.seed, batch_size=args.batch_size, num_inference_steps=steps,
                           class_labels=labels, bound_proposal=pipeline.config.bound_proposal)
    print(f"guided chain (s = {scale:g}): {bound.bits_per_dim:.4f} ± {bound.standard_error:.4f} bits/dim — the bound "
          "of what the guided sampler draws, not of the model")
    return bound

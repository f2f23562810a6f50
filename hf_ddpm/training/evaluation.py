"""Evaluations during training, on the main process with the EMA weights in float32: sample grids every
``save_images_steps``, and every ``eval_steps`` an estimate of the held-out bound (logged and kept in the history)."""

from __future__ import annotations

import os

from tqdm.auto import tqdm

from ..images import sample_grid
from .held_out import held_out_bound


def periodic_evaluation(trainer, step: int, logs: dict, *, sample: bool, evaluate: bool) -> None:
    """Draw the step's sample grid (``sample``) and/or estimate the held-out bound (``evaluate``, into ``logs`` and
    the run's history)."""
    output = trainer.config.output
    if sample:
        _, grid = sample_grid(trainer.pipeline(), output.num_samples, output.num_inference_steps, trainer.config.optim.seed)
        os.makedirs(os.path.join(output.output_dir, "samples"), exist_ok=True)
        grid.save(os.path.join(output.output_dir, "samples", f"step-{step:06d}.png"))
    if evaluate:
        bound = held_out_bound(trainer.evaluation_unet(), trainer.scheduler, trainer.eval_images,
                                 num_timesteps=output.eval_timesteps, seed=trainer.config.optim.seed)
        logs.update(eval_bits_per_dim=bound.bits_per_dim, eval_bits_per_dim_stderr=bound.standard_error)
        trainer.history.evaluations.append({"step": step, **logs})
        tqdm.write(f"step {step}: held-out bound ≈ {bound.bits_per_dim:.4f} ± {bound.standard_error:.4f} "
                   f"bits/dim ({bound.num_timesteps} timesteps)")

"""Evaluations during training, on the main process with the EMA weights in float32: sample grids every
``save_images_steps``; every ``eval_steps`` an estimate of the held-out bound and, cheaply, the quality of samples
(FD, score, class balance) — logged to the tracker, kept in the run's history and plotted, so that both curves show
where a run is best."""

from __future__ import annotations

import os

from tqdm.auto import tqdm

from ..data import model_range_to_uint8
from ..images import sample_grid
from .held_out import held_out_bound


def periodic_evaluation(trainer, step: int, logs: dict, *, sample: bool, evaluate: bool) -> None:
    """Draw the step's sample grid (``sample``) and/or evaluate (``evaluate``: into ``logs`` and the history)."""
    output, seed = trainer.config.output, trainer.config.optim.seed
    if sample:
        _, grid = sample_grid(trainer.pipeline(), output.num_samples, output.num_inference_steps, seed)
        os.makedirs(os.path.join(output.output_dir, "samples"), exist_ok=True)
        grid.save(os.path.join(output.output_dir, "samples", f"step-{step:06d}.png"))
    if not evaluate:
        return
    bound = held_out_bound(trainer.evaluation_unet(), trainer.scheduler, trainer.eval_images,
                           num_timesteps=output.eval_timesteps, seed=seed, class_labels=trainer.eval_labels,
                           bound_proposal=trainer.timestep_sampler.term_scale())
    logs.update(eval_bits_per_dim=bound.bits_per_dim, eval_bits_per_dim_stderr=bound.standard_error)
    message = f"step {step}: held-out bound ≈ {bound.bits_per_dim:.4f} ± {bound.standard_error:.4f} bits/dim " \
              f"({bound.num_timesteps} timesteps)"
    entry = {"step": step, **logs}
    if output.eval_samples > 0 and trainer.config.judges_samples:
        quality = training_sample_quality(trainer)
        logs.update({key: quality[key] for key in ("eval_fd", "eval_score", "eval_class_chi2") if quality[key] is not None})
        entry.update(quality)
        message += f"; {quality['eval_quality_setting']}: {quality['eval_fd_name']} {quality['eval_fd']:.3f}" + (
            "" if quality["eval_score"] is None else
            f", score {quality['eval_score']:.3f}, classes {quality['eval_class_histogram']} "
            f"(χ² {quality['eval_class_chi2']:.1f})")
    trainer.history.evaluations.append({**entry, **logs})
    tqdm.write(message if bound.warning is None else f"{message} — the bound estimate is {bound.warning}")


def judge_samples(trainer, samples) -> dict:
    """``hf_ddpm.metrics.sample_quality`` of uint8 ``samples`` against the held-out images, with the run's
    ``feature_model`` and ``classifier`` (default: the digits evaluator): the one judge of the evaluations during
    training and of the final samples."""
    from ..metrics import sample_quality

    output = trainer.config.output
    return sample_quality(samples, model_range_to_uint8(trainer.eval_images), feature_model=output.feature_model,
                          classifier=output.classifier, device=trainer.accelerator.device, progress=False)


def training_sample_quality(trainer) -> dict:
    """``eval_samples`` samples of the evaluation network, drawn with the respaced ``eval_inference_steps``-step chain
    from the run's seed (the same noise at every evaluation, so the curve follows the model, not the draw), judged
    against the held-out images: FD, score, class histogram and its χ² against even classes, precision, recall."""
    from ..metrics import class_balance_chi2

    output, steps = trainer.config.output, trainer.config.eval_chain_steps
    samples, _ = sample_grid(trainer.pipeline(), output.eval_samples, steps, trainer.config.optim.seed)
    quality = judge_samples(trainer, samples)
    histogram = quality["class_histogram"]
    return {
        "eval_quality_setting": f"{output.eval_samples} samples, {steps}-step chain",
        "eval_fd": quality["fd"], "eval_fd_name": quality["fd_name"], "eval_score": quality["inception_score"],
        "eval_class_histogram": histogram, "eval_class_chi2": None if histogram is None else class_balance_chi2(histogram),
        "eval_precision": quality["precision"], "eval_recall": quality["recall"],
    }

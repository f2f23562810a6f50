"""The end of a run, on the main process: the EMA pipeline, the final sample grid, the held-out bound, the loss plot,
the paper's figures (``--figures``), the record (``metrics.json``, ``training_run.json``) and the model card; then the
push to the Hub if asked."""

from __future__ import annotations

import os
import sys
import time

import torch

from ..figures import FIGURES_DIR, card_figures, write_figures
from ..images import sample_grid
from ..pipelines.paper_experiments import to_unit_range
from ..rate_distortion import describe_summary
from .class_bounds import final_class_bounds
from .estimate import final_evaluation
from .evaluation import judge_samples
from .held_out import held_out_bound
from .history import save_evaluation_plot, save_loss_plot
from .machine import describe_hardware
from .record import RunRecord, RunResults

SAMPLE_GRID = "samples.png"
LOSS_PLOT = "loss.png"
EVALUATION_PLOT = "evaluations.png"


def finish(trainer, step: int, train_seconds: float, progress) -> RunRecord | None:
    """Write the run's outputs into ``output_dir`` (main process; None elsewhere) and return its record. ``progress``:
    the :class:`~hf_ddpm.progress.NetworkProgress` of the evaluation network, given each phase of
    :func:`.estimate.final_evaluation` as it starts."""
    accelerator, config = trainer.accelerator, trainer.config
    images_seen = int(accelerator.reduce(torch.tensor(trainer.images_seen, device=accelerator.device), "sum"))
    if not accelerator.is_main_process:
        return None
    output = config.output
    phases = final_evaluation(config, len(trainer.eval_images), trainer.num_classes)
    pipeline = trainer.pipeline()
    pipeline.save_pretrained(output.output_dir)
    sampling_started = time.time()
    progress.start(phases.samples)
    samples, grid = sample_grid(pipeline, output.num_samples, output.num_inference_steps, config.optim.seed)
    grid.save(os.path.join(output.output_dir, SAMPLE_GRID))
    sampling_seconds = time.time() - sampling_started
    eval_started = time.time()
    # With the figures and the full final bound, one pass gives both: the rate–distortion pass evaluates every term
    # (with one ε per image, drawn from the seed), and its bound is the held-out bound.
    rate_distortion = None
    progress.start(phases.bound)
    if config.draws_figures and output.final_eval_timesteps is None:
        rate_distortion = pipeline.rate_distortion(to_unit_range(trainer.eval_images), class_labels=trainer.eval_labels,
                                                   generator=torch.Generator().manual_seed(config.optim.seed))
        bound = rate_distortion.bound
    else:
        bound = held_out_bound(pipeline.unet, trainer.scheduler, trainer.eval_images,
                               num_timesteps=output.final_eval_timesteps, seed=config.optim.seed,
                               class_labels=trainer.eval_labels, bound_proposal=pipeline.config.bound_proposal)
    progress.start(phases.class_bounds)
    class_bounds = None if trainer.eval_labels is None else \
        final_class_bounds(pipeline, trainer.eval_images, trainer.eval_labels, bound, seed=config.optim.seed,
                           max_timesteps=output.final_eval_timesteps)
    eval_seconds = time.time() - eval_started
    save_loss_plot(trainer.history, os.path.join(output.output_dir, LOSS_PLOT))
    images = {"samples": SAMPLE_GRID, "loss": LOSS_PLOT}
    if save_evaluation_plot(trainer.history, os.path.join(output.output_dir, EVALUATION_PLOT)):
        images["evaluations"] = EVALUATION_PLOT
    progress.start(*phases.figures)
    figures = _figures(pipeline, trainer, rate_distortion) if config.draws_figures else None
    progress.start()  # the network's work is done
    if figures is not None:
        images.update(card_figures(output.output_dir, os.path.join(output.output_dir, FIGURES_DIR)))
    results = RunResults(
        global_step=step,
        global_batch_size=config.optim.train_batch_size * accelerator.num_processes
        * config.optim.gradient_accumulation_steps,
        num_processes=accelerator.num_processes,
        threads_per_process=trainer.threads.threads,
        hardware=describe_hardware(accelerator.num_processes, trainer.threads.threads),
        images_seen=images_seen,
        train_seconds=train_seconds,
        sampling_seconds=sampling_seconds,
        eval_seconds=eval_seconds,
        total_seconds=time.time() - trainer.started,
        test_bits_per_dim=bound.bits_per_dim,
        test_bits_per_dim_stderr=bound.standard_error,
        test_bits_per_dim_timesteps=bound.num_timesteps,
        test_bits_per_dim_method=bound.plan.describe(),
        test_bound=bound.to_dict(),
        test_split=f"{trainer.data.name}, {trainer.data.eval_split} ({len(trainer.eval_images)} images)",
        num_test_images=len(trainer.eval_images),
        final_train_loss=trainer.history.recent_mean(100),
        train_loss_history={"steps": trainer.history.steps, "losses": trainer.history.losses},
        eval_log=trainer.history.evaluations,
        num_samples=output.num_samples,
        num_inference_steps=output.num_inference_steps,
        sample_quality=judge_samples(trainer, samples) if config.judges_samples else None,
        figures=figures,
        class_bounds=class_bounds,
    )
    record = RunRecord(config, results, images=images)
    record.save(output.output_dir)
    _write_card(output.output_dir, record)
    print(bound.describe())
    if class_bounds is not None:
        print(f"marginal bound {class_bounds['marginal']['bits_per_dim']:.4f}, null-label bound "
              f"{class_bounds['null_label']['bits_per_dim']:.4f} bits/dim; generative classifier (argmin_y L_y, "
              f"{class_bounds['classifier_timesteps']} timesteps per class): accuracy "
              f"{class_bounds['classifier_accuracy']:.3f}")
    print(f"held-out bound: {bound.bits_per_dim:.4f} ± {bound.standard_error:.4f} bits/dim "
          f"({results.test_bits_per_dim_method}); outputs in {output.output_dir}")
    return record


def _figures(pipeline, trainer, rate_distortion) -> dict:
    """The paper's figures of the final pipeline on the held-out images (``hf_ddpm.figures``) in
    ``output_dir/figures``, reusing the final evaluation's rate–distortion pass when there was one; ``figures.json``'s
    content."""
    data, config = trainer.data, trainer.config
    settings = {"model": "this run's final EMA pipeline", "dataset": data.name, "split": data.eval_split}
    # The figures the card shows and the rate–distortion table (from the final bound's pass); a class-conditional
    # run adds the class grid and the guidance trade-off (its samples judged where the run's are). Figs. 7–8 (about
    # 50 s on the digits) are left to `hf-ddpm figures`: the default runs keep to their 8-minute budget.
    guidance = None if config.judges_samples else {"num_samples": 0}
    summary = write_figures(pipeline, to_unit_range(trainer.eval_images),
                            os.path.join(config.output.output_dir, FIGURES_DIR), seed=config.optim.seed,
                            settings=settings, rate_distortion=rate_distortion, class_labels=trainer.eval_labels,
                            feature_model=config.output.feature_model, classifier=config.output.classifier,
                            guidance_options=guidance, latent_figures=False)
    print(describe_summary(summary["rate_distortion"]))
    return summary


def _write_card(output_dir: str, record: RunRecord) -> None:
    from .. import hub

    hub.write_model_card(output_dir, record)


def push(trainer) -> str | None:
    """Wait for checkpoint pushes in flight (their failures are reported, never raised), then push the output folder
    if ``push_to_hub`` (main process): the commit URL, or :class:`~hf_ddpm.hub.HubPushError` — the local output is
    complete either way."""
    from .. import hub

    if trainer.pusher is not None:
        for error in trainer.pusher.close():
            print(f"checkpoint push failed: {error}", file=sys.stderr)
    config = trainer.config.hub
    if not (config.push_to_hub and trainer.accelerator.is_main_process):
        return None
    return hub.push_output_folder(trainer.config.output.output_dir, config.hub_model_id, token=config.hub_token,
                                  private=config.hub_private_repo)

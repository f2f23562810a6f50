"""A training run's cost, said before its first step: the training (a step timed at the run's batch size, plus the
evaluations during training) and the final evaluation phase by phase (:mod:`hf_ddpm.cost`), with one line of advice
when the final evaluation would take longer than the training, or over 10 minutes on a CPU, and one when a CPU
trains the paper's full-size network. The phases of the final evaluation (:class:`FinalEvaluation`) are also what its
progress bars count (:func:`hf_ddpm.training.outputs.finish`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import cost
from ..cost import NetworkCost, Phase, describe_phases, describe_seconds
from ..guidance_figures import GRID_SAMPLES, TRADEOFF_SAMPLES, TRADEOFF_TIMESTEPS
from ..presets import preset_unet_config
from .class_bounds import class_bound_timesteps

# What the advice line proposes, where the run asks for more: the flags that shorten the final evaluation.
SHORT_EVALUATION = {"num_samples": 16, "num_inference_steps": 100, "final_eval_timesteps": 100}
PAPER_WIDTH = 128  # channels of the first level of the paper's networks (and of the presets from 32×32 up)
GUIDE = "docs/guides/progress-and-cost.md"
GUIDANCE_FIGURES = {"grid_samples": GRID_SAMPLES, "num_samples": TRADEOFF_SAMPLES, "num_inference_steps": None,
                    "num_timesteps": TRADEOFF_TIMESTEPS}  # write_guidance_figures' defaults, which the trainer uses


@dataclass(frozen=True)
class FinalEvaluation:
    """The phases of a run's final evaluation, in the order :func:`~hf_ddpm.training.outputs.finish` runs them."""

    samples: Phase
    bound: Phase
    class_bounds: Phase
    figures: tuple[Phase, ...]

    @property
    def phases(self) -> tuple[Phase, ...]:
        return (self.samples, self.bound, self.class_bounds, *self.figures)


def final_evaluation(config, num_eval_images: int, num_classes: int | None = None) -> FinalEvaluation:
    """The final evaluation of a run of ``config`` (a ``RunConfig``) on ``num_eval_images`` held-out images: the
    sample grid, the held-out bound (with the figures and every timestep, the rate–distortion pass that gives it), a
    class-conditional run's class bounds (``num_classes`` K; None: an unconditional run) and the figures (which then
    reuse that pass, and add the guidance figures of a class-conditional run)."""
    output, T = config.output, config.process.num_train_timesteps
    K = output.final_eval_timesteps
    full = K is None or K >= T
    if config.draws_figures and K is None:
        bound = cost.bound("full bound (rate–distortion pass)", num_eval_images, T)
    else:
        bound = cost.bound("held-out bound" if full else "held-out bound estimate", num_eval_images,
                           T if full else K)
    guidance = None if num_classes is None else \
        {**GUIDANCE_FIGURES, **({} if config.judges_samples else {"num_samples": 0})}  # as outputs._figures asks
    figures = cost.figure_phases(config.process.scheduler(), num_eval_images, rate_distortion=K is not None,
                                 guidance=guidance, num_classes=num_classes, latent_figures=False) \
        if config.draws_figures else ()
    return FinalEvaluation(cost.sampling("final samples", output.num_samples, output.num_inference_steps), bound,
                           class_bounds_phase(T, num_eval_images, num_classes, K), figures)


def class_bounds_phase(num_train_timesteps: int, num_images: int, num_classes: int | None,
                       max_timesteps: int | None) -> Phase:
    """:func:`~hf_ddpm.training.class_bounds.final_class_bounds`: the bound of every class and of the null label,
    each from :func:`~hf_ddpm.training.class_bounds.class_bound_timesteps`; no work without classes."""
    if num_classes is None:
        return Phase("class bounds", 0, 0, "")
    terms, null_terms = class_bound_timesteps(num_classes, num_train_timesteps, max_timesteps)
    classes, null = cost.bound("", num_classes * num_images, terms), cost.bound("", num_images, null_terms)
    return Phase("class bounds", classes.images + null.images, classes.calls + null.calls,
                 f"{num_classes} classes × {num_images} images × {terms} timesteps, the null label × {null_terms}")


def training_evaluations(config, num_eval_images: int, start_step: int, max_train_steps: int) -> tuple[Phase, ...]:
    """The sample grids (every ``save_images_steps``) and held-out evaluations (every ``eval_steps``) of the steps
    after ``start_step`` and before ``max_train_steps``."""
    output = config.output

    def count(every: int) -> int:
        return 0 if not every else max((max_train_steps - 1) // every - start_step // every, 0)

    grids, evaluations = count(output.save_images_steps), count(output.eval_steps)
    judged = output.eval_samples if config.judges_samples else 0
    steps = config.eval_chain_steps
    return (
        cost.sampling("sample grids", grids * output.num_samples, output.num_inference_steps),
        cost.bound("bound estimates", evaluations * num_eval_images, output.eval_timesteps),
        cost.sampling("judged samples", evaluations * judged, steps),
    )


def shorter_evaluation(config) -> dict:
    """The settings of :data:`SHORT_EVALUATION` (and no figures) that shorten this run's final evaluation."""
    T = config.process.num_train_timesteps  # final_eval_timesteps None: all T
    changes = {name: value for name, value in SHORT_EVALUATION.items() if (getattr(config.output, name) or T) > value}
    if config.draws_figures:
        changes["figures"] = False
    return changes


def flags_of(changes: dict) -> str:
    return " ".join(f"--no-{name}" if value is False else f"--{name} {value}" for name, value in changes.items())


def advice(config, num_eval_images: int, network: NetworkCost, *, train_seconds: float, on_cpu: bool,
           num_classes: int | None = None) -> str | None:
    """One line when the final evaluation would take longer than ``train_seconds`` or, ``on_cpu``, longer than
    :data:`~hf_ddpm.cost.CPU_LIMIT_SECONDS`: the flags that shorten it, with what it would then take; else None."""
    seconds = network.seconds(*final_evaluation(config, num_eval_images, num_classes).phases)
    if seconds <= train_seconds and not (on_cpu and seconds > cost.CPU_LIMIT_SECONDS):
        return None
    why = f"would take longer than the training (≈ {describe_seconds(train_seconds)})" \
        if seconds > train_seconds else "is long for a CPU"
    changes = shorter_evaluation(config)
    shorter = ""
    if changes:
        short = network.seconds(*final_evaluation(config.replace(**changes), num_eval_images, num_classes).phases)
        shorter = f"{flags_of(changes)} would make it ≈ {describe_seconds(short)}; "
    return (f"the final evaluation (≈ {describe_seconds(seconds)}) {why}: {shorter}a smaller network "
            f"(--model_config_name_or_path) makes every phase cheaper")


def full_size_preset(config) -> bool:
    """Whether the run's network is the preset for its resolution at the paper's width (the presets from 32×32 up)."""
    return config.model.model_config_name_or_path is None and \
        preset_unet_config(config.data.resolution)["block_out_channels"][0] >= PAPER_WIDTH


def describe_run_cost(config, *, num_eval_images: int, start_step: int, max_train_steps: int, step_seconds: float,
                      network: NetworkCost, num_parameters: int, on_cpu: bool,
                      num_classes: int | None = None) -> list[str]:
    """The lines the trainer prints before its first step: the training (``step_seconds`` per optimizer step,
    ``max_train_steps`` − ``start_step`` steps, and the evaluations during training), the final evaluation by
    phase (``num_classes``: of a class-conditional run), :func:`advice`, and on a CPU with the full-size preset what
    a step costs and where smaller networks are."""
    steps = max_train_steps - start_step
    evaluations = training_evaluations(config, num_eval_images, start_step, max_train_steps)
    train_seconds = steps * step_seconds + network.seconds(*evaluations)
    lines = [f"estimated on this machine: training ≈ {describe_seconds(train_seconds)} ({steps} steps × "
             f"{describe_seconds(step_seconds)}, forward and backward; evaluations during training "
             f"≈ {describe_seconds(network.seconds(*evaluations))})"]
    lines += describe_phases("final evaluation", final_evaluation(config, num_eval_images, num_classes).phases, network)
    line = advice(config, num_eval_images, network, train_seconds=train_seconds, on_cpu=on_cpu,
                  num_classes=num_classes)
    if line is not None:
        lines.append(line)
    if on_cpu and full_size_preset(config):
        resolution = config.data.resolution
        lines.append(f"the {resolution}×{resolution} preset is the paper's full-size U-Net "
                     f"({num_parameters / 1e6:.1f}M parameters): a step of {config.optim.train_batch_size} images "
                     f"takes ≈ {describe_seconds(step_seconds)} on this CPU; a narrower UNet2DModel config through "
                     f"--model_config_name_or_path trains many times faster ({GUIDE} shows how to write one)")
    return lines

"""The guidance trade-off of a class-conditional pipeline, as figures (classifier-free guidance, Ho & Salimans 2022;
``shared/docs/guidance-math.md``): what ``hf-ddpm figures`` and the trainer's ``--figures`` add for such a model.

==========================  =========================================================================================
``class_grid.png``          one row per class, samples at guidance scales s = 0, 1, 2, 4 side by side (the same x_T
                            and noise at every s, so the columns differ by s alone)
``guidance_tradeoff.csv``   one row per s in {0, 0.5, 1, 1.5, 2, 3, 4}: ``guidance_scale, fd, score, precision,
                            recall, label_accuracy, bits_per_dim``
``guidance_tradeoff.png``   the same against s
==========================  =========================================================================================

A row's samples are drawn with s from one seed, with labels cycling through the classes (balanced), and judged by
``hf_ddpm.metrics`` against the held-out images; ``label_accuracy`` is the share the classifier (the digits evaluator,
or the user's) assigns to the class each sample was asked for. ``bits_per_dim`` is the bound of the guided chain
itself — ε̃ in every term, on the chain the samples were drawn from — of the held-out images with their labels: at
s = 1 the conditional bound, elsewhere the bound of the distribution the guided sampler draws from (not a bound on the
unguided model's likelihood).

The defaults are the trainer's, chosen to be cheap: :data:`TRADEOFF_SAMPLES` samples per s on a
:data:`TRADEOFF_STEPS`-step chain, the bound from :data:`TRADEOFF_TIMESTEPS` of that chain's terms (an
importance-sampled estimate), :data:`GRID_SAMPLES` samples per class and s in the grid. ``hf-ddpm figures`` asks for
more.
"""

from __future__ import annotations

import csv
import os
import time

import torch

from .errors import ParameterError, check_at_least
from .plotting import DPI, pyplot, save_grid
from .training.config import MIN_JUDGED_IMAGES
from .training.held_out import held_out_bound

CLASS_GRID = "class_grid.png"
GUIDANCE_TRADEOFF_CSV = "guidance_tradeoff.csv"
GUIDANCE_TRADEOFF_PLOT = "guidance_tradeoff.png"
GRID_SCALES = (0.0, 1.0, 2.0, 4.0)
TRADEOFF_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
TRADEOFF_COLUMNS = ("guidance_scale", "fd", "score", "precision", "recall", "label_accuracy", "bits_per_dim")
GRID_SAMPLES = 2  # samples per class and guidance scale in class_grid.png
GRID_MAX_CLASSES = 10  # rows of class_grid.png: the first classes
TRADEOFF_SAMPLES = 50  # samples judged per guidance scale (the trainer's default; hf-ddpm figures: 400)
TRADEOFF_STEPS = 100  # steps of the sampling chain (at most T)
TRADEOFF_TIMESTEPS = 10  # terms of that chain in the bound's estimate (None: all of them)


def balanced_labels(conditioning, count: int) -> torch.Tensor:
    """[count] label ids cycling through the classes in id order: as even a share of each class as ``count``
    allows."""
    return conditioning.class_ids[torch.arange(count) % conditioning.num_classes]


def _conditioning_with_null(pipeline):
    conditioning = pipeline.conditioning
    if conditioning is None or conditioning.null_class_label is None:
        raise ParameterError("pipeline", "must be a class-conditional model with a null label (null_class_label) for "
                                         "the guidance figures")
    return conditioning


def class_grid(pipeline, *, scales=GRID_SCALES, samples_per_class: int = GRID_SAMPLES, num_inference_steps: int,
               seed: int = 0, max_classes: int = GRID_MAX_CLASSES) -> torch.Tensor:
    """[K, S·n, C, H, W] in [0, 1]: for each of the first ``max_classes`` classes (K) a row of ``samples_per_class``
    (n) samples at each guidance scale of ``scales`` (S), scale by scale; every scale's samples are
    ``pipeline(class_labels=…, guidance_scale=s, num_inference_steps=…)``'s from one generator seeded by ``seed``."""
    conditioning = _conditioning_with_null(pipeline)
    check_at_least("samples_per_class", samples_per_class, 1)
    ids = conditioning.class_ids[:max_classes]
    labels = ids.repeat_interleave(samples_per_class)
    blocks = []
    for scale in scales:
        images = pipeline(class_labels=labels, guidance_scale=scale, num_inference_steps=num_inference_steps,
                          generator=torch.Generator(device=pipeline.device).manual_seed(seed),
                          output_type="pt").images.cpu()
        blocks.append(images.view(len(ids), samples_per_class, *images.shape[1:]))
    return torch.cat(blocks, dim=1)


def guided_samples(pipeline, num_samples: int, guidance_scale: float, *, num_inference_steps: int,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N, C, H, W] in [0, 1], their label ids [N]): ``num_samples`` samples drawn with ``guidance_scale``
    from one generator seeded by ``seed``, their labels cycling through the classes (:func:`balanced_labels`)."""
    labels = balanced_labels(pipeline.conditioning, num_samples)
    output = pipeline(class_labels=labels, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                      generator=torch.Generator(device=pipeline.device).manual_seed(seed), output_type="pt")
    return output.images.cpu(), output.class_labels


def guidance_tradeoff(pipeline, images: torch.Tensor, class_labels: torch.Tensor, scales=TRADEOFF_SCALES, *,
                      num_samples: int = TRADEOFF_SAMPLES, num_inference_steps: int | None = None,
                      num_timesteps: int | None = TRADEOFF_TIMESTEPS, seed: int = 0, feature_model: str | None = None,
                      classifier: str | None = None, batch_size: int = 256) -> list[dict]:
    """One row per guidance scale s of ``scales``: the quality of ``num_samples`` samples drawn with s (``fd``,
    ``fd_name``, ``score``, ``precision``, ``recall``, ``label_accuracy``; None with 0 samples) and the bound of the
    guided chain of held-out ``images`` ([N, C, H, W] in [0, 1]) with their ``class_labels`` (``bits_per_dim``,
    ``standard_error``, ``bound``: how it was evaluated), with ``num_samples``, ``num_inference_steps`` and the row's
    ``seconds``.

    The samples come from a ``num_inference_steps``-step chain (default: :data:`TRADEOFF_STEPS`, at most T) and the
    bound is that chain's, from ``num_timesteps`` of its terms (:func:`~hf_ddpm.likelihood.bound_plan` with ``seed``
    and the pipeline's ``bound_proposal``; None: all of them, the bound of ``pipeline.log_likelihood(images,
    class_labels=…, guidance_scale=s, num_inference_steps=…)`` for a generator seeded by ``seed``). ``feature_model``/``classifier``:
    as for :func:`hf_ddpm.metrics.sample_quality` (default: the digits evaluator)."""
    from .metrics import sample_quality

    conditioning = _conditioning_with_null(pipeline)
    T = pipeline.scheduler.config.num_train_timesteps
    steps = min(TRADEOFF_STEPS, T) if num_inference_steps is None else num_inference_steps
    check_at_least("num_samples", num_samples, 0)
    if 0 < num_samples < MIN_JUDGED_IMAGES:
        raise ParameterError("num_samples", f"must be 0 (the bound only) or at least {MIN_JUDGED_IMAGES} (FD and "
                                            f"precision/recall need them), got {num_samples}")
    labels = conditioning.label_ids(class_labels)
    if len(labels) != len(images):
        raise ParameterError("class_labels", f"has {len(labels)} labels for {len(images)} images: give one per image")
    x0 = pipeline._x0(images)
    rows = []
    for scale in scales:
        started = time.perf_counter()
        scale = conditioning.check_guidance(scale)
        bound = held_out_bound(pipeline.network(scale), pipeline.scheduler, x0, num_timesteps=num_timesteps,
                               seed=seed, batch_size=batch_size, num_inference_steps=steps,
                               class_labels=labels.to(pipeline.device), bound_proposal=pipeline.config.bound_proposal)
        quality = {}
        if num_samples:
            samples, asked = guided_samples(pipeline, num_samples, scale, num_inference_steps=steps, seed=seed)
            quality = sample_quality(samples, images, feature_model=feature_model, classifier=classifier,
                                     device=pipeline.device, progress=False,
                                     requested_classes=conditioning.names_of(asked))
        rows.append({"guidance_scale": scale, "fd": quality.get("fd"), "score": quality.get("inception_score"),
                     "precision": quality.get("precision"), "recall": quality.get("recall"),
                     "label_accuracy": quality.get("label_accuracy"), "bits_per_dim": bound.bits_per_dim,
                     "standard_error": bound.standard_error, "bound": bound.plan.describe(),
                     "fd_name": quality.get("fd_name"), "score_name": quality.get("score_name"),
                     "num_samples": num_samples, "num_inference_steps": steps,
                     "seconds": time.perf_counter() - started})
    return rows


def write_guidance_figures(pipeline, images: torch.Tensor, class_labels: torch.Tensor, out_dir: str | os.PathLike, *,
                           seed: int = 0, grid_samples: int = GRID_SAMPLES, num_samples: int = TRADEOFF_SAMPLES,
                           num_inference_steps: int | None = None, num_timesteps: int | None = TRADEOFF_TIMESTEPS,
                           feature_model: str | None = None, classifier: str | None = None,
                           batch_size: int = 256) -> dict:
    """Write ``class_grid.png`` and ``guidance_tradeoff.csv``/``.png`` (the module docstring) into ``out_dir`` for a
    class-conditional ``pipeline`` with a null label; return their summary for ``figures.json``: ``class_grid`` (its
    settings), ``guidance_tradeoff`` (the rows of :func:`guidance_tradeoff`) and ``seconds``.

    ``images`` [N, C, H, W] in [0, 1] and ``class_labels`` (one per image): held-out images and their labels.
    ``grid_samples``: samples per class and scale in the grid; ``num_samples``, ``num_inference_steps`` (default
    :data:`TRADEOFF_STEPS`, at most T; the grid's chain too), ``num_timesteps``, ``feature_model``, ``classifier``,
    ``batch_size``: as for :func:`guidance_tradeoff` (``num_samples`` 0: the bound only, e.g. for data without a
    feature model). Every figure is seeded by ``seed``."""
    conditioning = _conditioning_with_null(pipeline)
    T = pipeline.scheduler.config.num_train_timesteps
    steps = min(TRADEOFF_STEPS, T) if num_inference_steps is None else num_inference_steps
    check_at_least("num_inference_steps", steps, 1)
    if steps > T:
        raise ParameterError("num_inference_steps", f"must be at most the model's num_train_timesteps={T}, got {steps}")
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    grid = class_grid(pipeline, samples_per_class=grid_samples, num_inference_steps=steps, seed=seed)
    shown = conditioning.class_ids[:GRID_MAX_CLASSES]
    save_grid(grid, os.path.join(out_dir, CLASS_GRID),
              column_labels=[f"s={s:g}" for s in GRID_SCALES for _ in range(grid_samples)],
              row_labels=conditioning.names_of(shown),
              title=f"One row per class, by guidance scale s ({steps} steps)")
    seconds = {"class_grid": time.perf_counter() - started}
    started = time.perf_counter()
    rows = guidance_tradeoff(pipeline, images, class_labels, num_samples=num_samples, num_inference_steps=steps,
                             num_timesteps=num_timesteps, seed=seed, feature_model=feature_model,
                             classifier=classifier, batch_size=batch_size)
    write_guidance_tradeoff(rows, out_dir)
    seconds["guidance_tradeoff"] = time.perf_counter() - started
    return {
        "class_grid": {"guidance_scales": list(GRID_SCALES), "samples_per_class": grid_samples,
                       "classes": conditioning.names_of(shown), "num_inference_steps": steps},
        "guidance_tradeoff": rows,
        "seconds": seconds,
    }


def write_guidance_tradeoff(rows: list[dict], out_dir: str | os.PathLike) -> None:
    """``guidance_tradeoff.csv`` (:data:`TRADEOFF_COLUMNS`, one row per s) and ``guidance_tradeoff.png``: the samples'
    FD and score, their precision, recall and label accuracy, and the guided chain's bound, each against s."""
    with open(os.path.join(out_dir, GUIDANCE_TRADEOFF_CSV), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRADEOFF_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plt = pyplot()
    scales = [row["guidance_scale"] for row in rows]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    judged = rows[0]["fd"] is not None
    if judged:
        axes[0].plot(scales, [row["fd"] for row in rows], marker="o", label=rows[0]["fd_name"])
        axes[0].set(xlabel="guidance scale s", ylabel=rows[0]["fd_name"])
        if rows[0]["score"] is not None:
            twin = axes[0].twinx()
            twin.plot(scales, [row["score"] for row in rows], marker="s", color="C1")
            twin.set_ylabel(rows[0]["score_name"], color="C1")
        for key in ("precision", "recall", "label_accuracy"):
            if rows[0][key] is not None:
                axes[1].plot(scales, [row[key] for row in rows], marker="o", label=key.replace("_", " "))
        axes[1].set(xlabel="guidance scale s", ylim=(0, 1.02))
        axes[1].legend(fontsize=7)
        axes[1].set_title(f"{rows[0]['num_samples']} samples per s, {rows[0]['num_inference_steps']} steps", fontsize=9)
    else:
        for axis in axes[:2]:
            axis.set_axis_off()
    axes[2].errorbar(scales, [row["bits_per_dim"] for row in rows], yerr=[row["standard_error"] for row in rows],
                     marker="o", capsize=3)
    axes[2].set(xlabel="guidance scale s", ylabel="bound of the guided chain (bits/dim)")
    figure.suptitle("Classifier-free guidance: sample quality against the bound of the chain that draws them",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, GUIDANCE_TRADEOFF_PLOT), dpi=DPI)
    plt.close(figure)

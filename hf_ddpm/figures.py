"""The paper's figures for a trained pipeline, drawn from the pipeline's experiment methods
(:class:`~hf_ddpm.pipelines.paper_experiments.PaperExperimentsMixin`), as ``hf-ddpm figures`` and the trainer's
``--figures`` write them:

=========================  ==========================================================================================
``progressive.png``        Fig. 6: rows of samples, columns the predicted x̂_0 at evenly spaced steps, then the sample
``shared_latents.png``     Fig. 7: held-out x_0, its x_t at t = 1000, 750, 500, 250 (scaled to T), samples of
                           p_θ(x_0 │ x_t)
``interpolation.png``      Fig. 8: pairs encoded at t = T/4, T/2, 3T/4 with the same ε, decoded for λ = 0, 0.1, …, 1
``rate_distortion.csv``    Table 4: rate (bits/dim) and distortion (RMSE, 0–255) at every t, T … 1
``rate_distortion.png``    Fig. 5: distortion and rate against the reverse process's steps, distortion against rate
``steps_tradeoff.csv``     for each sampler and number of sampling steps K: the bound of the K-step sampler (where
                           it has one) and its samples' quality (:mod:`hf_ddpm.steps_tradeoff`; ``hf-ddpm figures``
                           only — it takes minutes)
``steps_tradeoff.png``     the same against K, a line per sampler
``class_grid.png``         a class-conditional model's samples, one row per class, guidance scales 0, 1, 2, 4 side by
                           side (:mod:`hf_ddpm.guidance_figures`; models with a null label)
``guidance_tradeoff.csv``  one row per guidance scale s: the samples' FD, score, precision, recall, label accuracy and
                           the guided chain's bound (``.png``: the same against s)
``figures.json``           the settings, the rate–distortion summary, the K table, the guidance figures' summary and
                           the seconds each figure took
=========================  ==========================================================================================

Each figure is drawn with a fresh generator seeded by ``seed``: ``progressive.png``'s samples are
``hf-ddpm sample --seed S``'s. On a class-conditional model the held-out images come with their labels: the
progressive samples draw theirs (as ``hf-ddpm sample`` does), the shared latents and the rate–distortion pass use the
images' labels (its bound is then the conditional bound), and the interpolation, whose pairs may be of two classes,
the null label (the first image's label for a model without one).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from pathlib import Path

import torch

from .errors import ParameterError
from .guidance_figures import CLASS_GRID, GUIDANCE_TRADEOFF_PLOT, write_guidance_figures
from .pipelines.paper_experiments import INTERPOLATION_LAMBDAS, paper_timestep, to_unit_range
from .plotting import DPI, pyplot, save_grid
from .rate_distortion import RateDistortion
from .steps_tradeoff import steps_tradeoff
from .training.record import RunRecord, write_json

FIGURES_DIR = "figures"
PROGRESSIVE = "progressive.png"
SHARED_LATENTS = "shared_latents.png"
INTERPOLATION = "interpolation.png"
RATE_DISTORTION_CSV = "rate_distortion.csv"
RATE_DISTORTION_PLOT = "rate_distortion.png"
STEPS_TRADEOFF_CSV = "steps_tradeoff.csv"
STEPS_TRADEOFF_PLOT = "steps_tradeoff.png"
SUMMARY = "figures.json"
CARD_FIGURES = {"progressive": PROGRESSIVE, "class_grid": CLASS_GRID, "guidance_tradeoff": GUIDANCE_TRADEOFF_PLOT}

PROGRESSIVE_SAMPLES, PROGRESSIVE_COLUMNS = 8, 10
SHARED_IMAGES, SHARED_SAMPLES = 2, 5
INTERPOLATION_PAIRS = 2
INTERPOLATION_FRACTIONS = (0.25, 0.5, 0.75)  # t = T/4 (reconstructions), T/2 (the paper's Fig. 8), 3T/4


def write_figures(pipeline, images: torch.Tensor, out_dir: str | os.PathLike, *, seed: int = 0,
                  settings: dict | None = None, batch_size: int = 256,
                  rate_distortion: RateDistortion | None = None, steps=None, steps_samples: int = 400,
                  steps_samplers=("ddpm",),
                  feature_model: str | None = None, classifier: str | None = None, class_labels=None,
                  guidance_options: dict | None = None, latent_figures: bool = True) -> dict:
    """Write the figures of the module docstring into ``out_dir`` and return ``figures.json``'s content
    (``latent_figures`` False: without Figs. 7 and 8, the shared latents and the interpolation).

    ``images`` [N, C, H, W] in [0, 1]: held-out images. All N give the rate–distortion numbers; the first
    2 × ``INTERPOLATION_PAIRS`` are paired (0 with 1, 2 with 3, …) for the interpolation and the first
    ``SHARED_IMAGES`` encoded for the shared latents. ``settings``: what to record beside the figures' own
    settings (the model and data, e.g.); ``batch_size``: images per UNet call of the rate–distortion pass;
    ``rate_distortion``: that pass of these ``images`` already made (``pipeline.rate_distortion``), to reuse.
    ``steps``: the numbers of sampling steps K of ``steps_tradeoff.csv/png`` (None: not drawn), each judged on
    ``steps_samples`` samples with ``feature_model``/``classifier`` (``hf_ddpm.metrics``; default: the digits
    evaluator), for each sampler of ``steps_samplers`` (:func:`~hf_ddpm.steps_tradeoff.steps_tradeoff`).

    A class-conditional pipeline needs ``class_labels``, one per image; with a null label it also gets the guidance
    figures (:func:`~hf_ddpm.guidance_figures.write_guidance_figures`, given ``guidance_options``: its keyword
    arguments ``grid_samples``, ``num_samples``, ``num_inference_steps``, ``num_timesteps``; None: its defaults, the
    trainer's)."""
    conditioning = pipeline.conditioning
    if conditioning is not None and class_labels is None:
        raise ParameterError("class_labels", "are needed for a class-conditional model's figures: the held-out "
                                             "images' labels, one per image")
    labels = None if conditioning is None else conditioning.label_ids(class_labels)
    os.makedirs(out_dir, exist_ok=True)
    T = pipeline.scheduler.config.num_train_timesteps
    seconds, timesteps = {}, {}

    started = time.perf_counter()
    progressive = pipeline.progressive(PROGRESSIVE_SAMPLES, num_columns=PROGRESSIVE_COLUMNS,
                                       num_inference_steps=T, generator=_seeded(seed))
    save_grid(progressive.images, os.path.join(out_dir, PROGRESSIVE),
              column_labels=[f"x̂₀ at t={t + 1}" for t in progressive.timesteps.tolist()] + ["sample"],
              row_labels=None if conditioning is None else conditioning.names_of(progressive.class_labels),
              title="Progressive generation (Fig. 6): the predicted x̂₀ along the reverse process")
    seconds["progressive"], started = time.perf_counter() - started, time.perf_counter()
    timesteps["progressive"] = progressive.timesteps.tolist()

    if latent_figures:
        timesteps.update(_write_latent_figures(pipeline, images, labels, out_dir, seed, seconds))
        started = time.perf_counter()

    rd = rate_distortion or pipeline.rate_distortion(images, generator=_seeded(seed), batch_size=batch_size,
                                                     class_labels=labels)
    write_rate_distortion_csv(rd, os.path.join(out_dir, RATE_DISTORTION_CSV))
    plot_rate_distortion(rd, os.path.join(out_dir, RATE_DISTORTION_PLOT))
    seconds["rate_distortion"], started = time.perf_counter() - started, time.perf_counter()

    tradeoff = None
    if steps is not None:
        tradeoff = steps_tradeoff(pipeline, images.to(pipeline.device) * 2 - 1, steps, samplers=steps_samplers,
                                  num_samples=steps_samples,
                                  seed=seed, feature_model=feature_model, classifier=classifier, batch_size=batch_size,
                                  full_bound=rd.bound, class_labels=labels)
        write_steps_tradeoff(tradeoff, out_dir)
        seconds["steps_tradeoff"], started = time.perf_counter() - started, time.perf_counter()

    guidance = None
    if conditioning is not None and conditioning.null_class_label is not None:
        guidance = write_guidance_figures(pipeline, images, labels, out_dir, seed=seed, feature_model=feature_model,
                                          classifier=classifier, batch_size=batch_size, **(guidance_options or {}))
        seconds.update(guidance.pop("seconds"))

    summary = {
        "settings": {**(settings or {}), "seed": seed, "num_images": len(images), "num_train_timesteps": T,
                     "timesteps": {name: [t + 1 for t in values] for name, values in timesteps.items()},
                     "timesteps_are": "the paper's t (code timestep + 1)",
                     "interpolation_lambdas": list(INTERPOLATION_LAMBDAS)},
        "rate_distortion": rd.summary(),
        "steps_tradeoff": tradeoff,
        "guidance": guidance,
        "seconds": seconds,
    }
    write_json(os.path.join(out_dir, SUMMARY), summary)
    return summary


def _seeded(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded by ``seed``: each figure starts from its own."""
    return torch.Generator().manual_seed(seed)


def _write_latent_figures(pipeline, images: torch.Tensor, labels, out_dir, seed: int, seconds: dict) -> dict:
    """Figs. 7 and 8, which decode encoded held-out ``images`` (their ``labels`` ids, or None): ``shared_latents.png``
    and ``interpolation.png`` in ``out_dir``, each one's seconds into ``seconds``; the timesteps of each."""
    conditioning, T = pipeline.conditioning, pipeline.scheduler.config.num_train_timesteps

    started = time.perf_counter()
    shared = pipeline.shared_latents(images[:SHARED_IMAGES], num_samples=SHARED_SAMPLES, generator=_seeded(seed),
                                     class_labels=None if labels is None else labels[:SHARED_IMAGES])
    rows = torch.cat([shared.images[:, None, None].expand(-1, len(shared.timesteps), 1, -1, -1, -1),
                      to_unit_range(shared.latents)[:, :, None], shared.samples], dim=2).flatten(0, 1)
    save_grid(rows, os.path.join(out_dir, SHARED_LATENTS),
              column_labels=["x₀", "x_t"] + [f"sample {s + 1}" for s in range(SHARED_SAMPLES)],
              row_labels=[f"#{i + 1}, t={t + 1}" for i in range(len(shared.images)) for t in shared.timesteps.tolist()],
              title="Samples sharing x_t (Fig. 7): draws of p(x₀ | x_t)")
    seconds["shared_latents"], started = time.perf_counter() - started, time.perf_counter()

    pairs = min(INTERPOLATION_PAIRS, len(images) // 2)
    pair_labels = None if conditioning is None or conditioning.null_class_label is not None else \
        labels[0 : 2 * pairs : 2]
    blocks, row_labels = [], []
    for fraction in INTERPOLATION_FRACTIONS:
        t = paper_timestep(T, fraction)
        result = pipeline.interpolate(images[0 : 2 * pairs : 2], images[1 : 2 * pairs : 2], timestep=t,
                                      generator=_seeded(seed), class_labels=pair_labels)
        blocks.append(torch.cat([result.images[:, None], result.decoded, result.other_images[:, None]], dim=1))
        row_labels += [f"#{p + 1}, t={t + 1}" for p in range(pairs)]
    save_grid(torch.cat(blocks), os.path.join(out_dir, INTERPOLATION),
              column_labels=["x₀"] + [f"λ={w:g}" for w in INTERPOLATION_LAMBDAS] + ["x'₀"], row_labels=row_labels,
              title="Interpolation through q (Fig. 8): (1−λ)x_t + λx'_t decoded with the same noise")
    seconds["interpolation"] = time.perf_counter() - started
    return {"shared_latents": shared.timesteps.tolist(),
            "interpolation": [paper_timestep(T, f) for f in INTERPOLATION_FRACTIONS]}


def card_figures(folder: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, str]:
    """The figures in ``out_dir`` that the model card shows, by role: {role: path relative to ``folder``} for each of
    :data:`CARD_FIGURES` that was drawn (``out_dir`` inside ``folder``)."""
    folder = Path(folder).resolve()
    return {role: Path(out_dir, name).resolve().relative_to(folder).as_posix() for role, name in CARD_FIGURES.items()
            if Path(out_dir, name).is_file()}


def add_to_record(folder: str | os.PathLike, out_dir: str | os.PathLike, summary: dict) -> bool:
    """Name ``out_dir``'s figures that the card shows (:func:`card_figures`: the progressive figure, and a
    class-conditional model's class grid and guidance trade-off) in the run record of ``folder`` (its
    ``training_run.json``; images by role) and put ``summary`` in its results (``figures``), so that the model card
    shows them. False, changing nothing, when ``folder`` has no record or ``out_dir`` lies outside it."""
    folder = Path(folder).resolve()
    record = RunRecord.load(folder)
    if record is None or not Path(out_dir, PROGRESSIVE).resolve().is_relative_to(folder):
        return False
    results = None if record.results is None else dataclasses.replace(record.results, figures=summary)
    RunRecord(record.config, results, {**record.images, **card_figures(folder, out_dir)}).save(folder)
    return True


def write_steps_tradeoff(rows: list[dict], out_dir: str | os.PathLike) -> None:
    """``steps_tradeoff.csv`` (one row per sampler and K: the bound of that K-step sampler where it has one, and its
    samples' quality) and ``steps_tradeoff.png`` (both against K, a line per sampler)."""
    columns = ("sampler", "eta", "num_inference_steps", "bits_per_dim", "standard_error", "decoder", "prior",
               "no_bound", "fd", "score", "class_chi2", "precision", "recall", "num_samples", "sampling_seconds",
               "seconds")
    with open(os.path.join(out_dir, STEPS_TRADEOFF_CSV), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    series = {}
    for row in rows:
        series.setdefault(row["sampler"] + (f" η={row['eta']:g}" if row["sampler"] == "ddim" else ""), []).append(row)
    judged = [row for row in rows if row["fd"] is not None]
    twin = axes[1].twinx() if any(row["score"] is not None for row in judged) else None
    for index, (label, own) in enumerate(series.items()):
        bounded = [row for row in own if row["bits_per_dim"] is not None]
        if bounded:
            axes[0].errorbar([row["num_inference_steps"] for row in bounded], [row["bits_per_dim"] for row in bounded],
                             yerr=[row["standard_error"] for row in bounded], marker="o", capsize=3, color=f"C{index}",
                             label=label)
        scored = [row for row in own if row["fd"] is not None]
        if scored:
            axes[1].plot([row["num_inference_steps"] for row in scored], [row["fd"] for row in scored], marker="o",
                         color=f"C{index}", label=label)
        with_score = [row for row in scored if row["score"] is not None]
        if twin is not None and with_score:
            twin.plot([row["num_inference_steps"] for row in with_score], [row["score"] for row in with_score],
                      marker="s", linestyle="--", color=f"C{index}")
    axes[0].set(xscale="log", yscale="log", xlabel="sampling steps K", ylabel="bound of the K-step sampler (bits/dim)")
    axes[0].legend(fontsize=7)
    if judged:
        axes[1].set(xscale="log", xlabel="sampling steps K", ylabel=judged[0]["fd_name"])
        axes[1].set_title(f"{judged[0]['num_samples']} samples per sampler and K", fontsize=9)
        axes[1].legend(fontsize=7)
    if twin is not None:
        twin.set_ylabel("score (dashed)")
    figure.suptitle("Fewer sampling steps: the bound of exactly the K-step sampler where it has one, and its samples",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, STEPS_TRADEOFF_PLOT), dpi=DPI)
    plt.close(figure)


def write_rate_distortion_csv(rd: RateDistortion, path: str | os.PathLike) -> None:
    """Table 4 as CSV: ``t`` (paper's, T … 1), ``rate_bits_per_dim``, ``distortion_rmse``."""
    rows = rd.rows()
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_rate_distortion(rd: RateDistortion, path) -> None:
    """Fig. 5: distortion and rate against the reverse process's steps T − t, and distortion against rate."""
    plt = pyplot()
    T = rd.bound.num_train_timesteps
    steps = T - (rd.timesteps + 1)  # reverse process steps taken when the receiver holds x_t
    rate, distortion = rd.mean_rate, rd.mean_distortion
    summary = rd.summary()
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[0].plot(steps, distortion)
    axes[0].set(xlabel="reverse process steps (T − t)", ylabel="distortion (RMSE, 0–255)")
    axes[1].plot(steps, rate)
    axes[1].set(xlabel="reverse process steps (T − t)", ylabel="rate (bits/dim)")
    axes[2].plot(rate, distortion)
    axes[2].set(xlabel="rate (bits/dim)", ylabel="distortion (RMSE, 0–255)")
    point = summary["imperceptible"]
    if point is not None:
        axes[2].plot([point["rate_bits_per_dim"]], [point["distortion_rmse"]], "o", color="C3",
                     label=f"RMSE < 1 from t={point['t']}: {point['share_of_codelength']:.0%} of the bound after it")
        axes[2].legend(fontsize=7)
    figure.suptitle(f"Rate–distortion of {summary['num_images']} held-out images (Table 4, Fig. 5): bound "
                    f"{summary['bits_per_dim']:.3f} = rate {summary['rate_bits_per_dim']:.3f} + "
                    f"L₀ {summary['decoder_bits_per_dim']:.3f} bits/dim", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)

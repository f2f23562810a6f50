"""Fewer sampling steps and other samplers, measured: for each sampler and number of steps K, the bound of exactly that
sampler (where one exists) and the quality of its samples, so that a user chooses a sampler and K by numbers.

The bound of a K-step chain (spaced by the scheduler's ``timestep_spacing``) is the bound of the distribution
``pipe(num_inference_steps=K)`` samples from (:func:`~hf_ddpm.likelihood.sampling_chain`, every term of that chain);
of the other samplers only DDIM with η = 1 has one, that of our ``fixed_small`` chain on its timesteps
(:func:`~hf_ddpm.samplers.bound_chain`). The samples are drawn with K steps from one seed and judged by
``hf_ddpm.metrics`` against the held-out images.
"""

from __future__ import annotations

import time

import torch

from .data import model_range_to_uint8
from .errors import ParameterError, check_at_least
from .images import sample_grid
from .samplers import bound_chain, make_scheduler, parse_sampler
from .variational_bound import VariationalBound

DEFAULT_STEPS = (1000, 250, 100, 50, 20, 10)
# The comparison of docs/guides/samplers.md: our ancestral chain, DDIM at η = 0 and 1, DPM-Solver++, at K ≤ 100.
SAMPLER_COMPARISON = ("ddpm", "ddim", "ddim:1", "dpmsolver++")
SAMPLER_STEPS = (100, 50, 20, 10)


def steps_tradeoff(pipeline, images: torch.Tensor, steps=DEFAULT_STEPS, *, samplers=("ddpm",), num_samples: int = 400,
                   seed: int = 0, feature_model: str | None = None, classifier: str | None = None,
                   batch_size: int = 256, full_bound: VariationalBound | None = None,
                   class_labels: torch.Tensor | None = None) -> list[dict]:
    """One row per sampler of ``samplers`` (:func:`~hf_ddpm.samplers.parse_sampler`: "ddpm", "ddim", "ddim:1",
    "dpmsolver++", …, each built from the pipeline's scheduler configuration) and K in ``steps`` (each in [1, T]):
    ``sampler``, ``eta``, ``num_inference_steps``; the bound of exactly that sampler of ``images`` ([N, C, H, W] in
    [−1, 1] on the 8-bit grid; ``bits_per_dim``, ``standard_error``, ``decoder``, ``prior``, ``chain``) with fresh ε
    per term from ``seed``, or None and ``no_bound`` (why) where the sampler has none; the quality of ``num_samples``
    samples drawn with K steps from ``seed`` (``fd``, ``fd_name``, ``score``, ``class_histogram``, ``class_chi2``,
    ``precision``, ``recall``; 0 samples: None); ``sampling_seconds``, the wall clock of drawing them, and the row's
    ``seconds``. ``full_bound``: the full T-step bound of these images already evaluated (e.g. by the rate–distortion
    pass), used for our sampler at K = T instead of evaluating it again. ``class_labels`` (label ids, one per image):
    a class-conditional model's bound given the images' labels; its samples draw their labels uniformly."""
    from .metrics import class_balance_chi2, sample_quality

    T = pipeline.scheduler.config.num_train_timesteps
    steps = [int(k) for k in steps]
    if not steps or any(not 1 <= k <= T for k in steps):
        raise ParameterError("steps", f"must be numbers of sampling steps in [1, {T}], got {steps}")
    check_at_least("num_samples", num_samples, 0)
    chosen = [parse_sampler(spec) for spec in samplers]
    if not chosen:
        raise ParameterError("samplers", "must name at least one sampler")
    reference = model_range_to_uint8(images)
    unit_images = (images.cpu().float() + 1) / 2
    original, rows = pipeline.scheduler, []
    try:
        for name, eta in chosen:
            pipeline.scheduler = make_scheduler(name, original.config)
            for k in steps:
                started = time.time()
                row = {"sampler": name, "eta": eta, "num_inference_steps": k,
                       **_bound_columns(pipeline, unit_images, k, eta, seed, batch_size, class_labels,
                                        full_bound if name == "ddpm" and k == T else None)}
                quality, sampling_seconds = {}, None
                if num_samples:
                    sampling_started = time.time()
                    samples, _ = sample_grid(pipeline, num_samples, k, seed, eta=eta)
                    sampling_seconds = time.time() - sampling_started
                    quality = sample_quality(samples, reference, feature_model=feature_model, classifier=classifier,
                                             device=pipeline.device, progress=False)
                histogram = quality.get("class_histogram")
                row.update(fd=quality.get("fd"), fd_name=quality.get("fd_name"), score=quality.get("inception_score"),
                           class_histogram=histogram,
                           class_chi2=None if histogram is None else class_balance_chi2(histogram),
                           precision=quality.get("precision"), recall=quality.get("recall"), num_samples=num_samples,
                           sampling_seconds=sampling_seconds, seconds=time.time() - started)
                rows.append(row)
    finally:
        pipeline.scheduler = original
    return rows


def _bound_columns(pipeline, unit_images, k: int, eta: float, seed: int, batch_size: int, class_labels,
                   known: VariationalBound | None) -> dict:
    """The row's bound columns: the bound of the pipeline's sampler at K steps (``known`` when given), or None with
    ``no_bound`` saying why that sampler has none."""
    try:
        bound_chain(pipeline.scheduler, eta, k)
    except ParameterError as refusal:
        return {"bits_per_dim": None, "standard_error": None, "decoder": None, "prior": None, "chain": None,
                "no_bound": refusal.detail}
    bound = known or pipeline.log_likelihood(
        unit_images, num_inference_steps=k, eta=eta, class_labels=class_labels, batch_size=batch_size,
        generator=torch.Generator(device=pipeline.device).manual_seed(seed))
    prior = getattr(bound, "prior", None)
    return {"bits_per_dim": bound.bits_per_dim, "standard_error": bound.standard_error,
            "decoder": getattr(bound, "decoder", None), "prior": None if prior is None else float(prior.mean()),
            "chain": bound.plan.describe_chain() if hasattr(bound, "plan") else None, "no_bound": None}

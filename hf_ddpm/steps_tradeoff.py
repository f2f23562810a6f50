"""Fewer sampling steps, measured: for each number of steps K, the bound of exactly the K-step sampler and the quality
of its samples, so that a user chooses K by numbers.

The bound of a K-step chain (spaced by the scheduler's ``timestep_spacing``) is the bound of the distribution
``pipe(num_inference_steps=K)`` samples from (:func:`~hf_ddpm.likelihood.sampling_chain`, every term of that chain);
the samples are drawn with K steps from one seed and judged by ``hf_ddpm.metrics`` against the held-out images.
"""

from __future__ import annotations

import time

import torch

from .data import model_range_to_uint8
from .errors import ParameterError, check_at_least
from .images import sample_grid
from .likelihood import estimate_bound, sampling_chain
from .timestep_plan import TimestepPlan
from .variational_bound import VariationalBound

DEFAULT_STEPS = (1000, 250, 100, 50, 20, 10)


def steps_tradeoff(pipeline, images: torch.Tensor, steps=DEFAULT_STEPS, *, num_samples: int = 400, seed: int = 0,
                   feature_model: str | None = None, classifier: str | None = None, batch_size: int = 256,
                   full_bound: VariationalBound | None = None, class_labels: torch.Tensor | None = None) -> list[dict]:
    """One row per K in ``steps`` (each in [1, T]): ``num_inference_steps``, the K-step bound of ``images``
    ([N, C, H, W] in [−1, 1] on the 8-bit grid; ``bits_per_dim``, ``standard_error``, ``decoder``, ``prior``, ``chain``)
    with fresh ε per term from ``seed``, and the quality of ``num_samples`` samples drawn with K steps from ``seed``
    (``fd``, ``fd_name``, ``score``, ``class_histogram``, ``class_chi2``, ``precision``, ``recall``; 0 samples: None),
    and the row's ``seconds``. ``full_bound``: the full T-step bound of these images already evaluated (e.g. by the
    rate–distortion pass), used for K = T instead of evaluating it again. ``class_labels`` (label ids, one per image):
    a class-conditional model's bound given the images' labels; its samples draw their labels uniformly."""
    from .metrics import class_balance_chi2, sample_quality

    T = pipeline.scheduler.config.num_train_timesteps
    steps = [int(k) for k in steps]
    if not steps or any(not 1 <= k <= T for k in steps):
        raise ParameterError("steps", f"must be numbers of sampling steps in [1, {T}], got {steps}")
    check_at_least("num_samples", num_samples, 0)
    reference = model_range_to_uint8(images)
    rows = []
    for k in steps:
        started = time.time()
        if k == T and full_bound is not None:
            bound = full_bound
        else:
            plan = TimestepPlan.full_chain(T, chain=sampling_chain(pipeline.scheduler, k))
            bound = estimate_bound(pipeline.unet, pipeline.scheduler, images.to(pipeline.device, pipeline.unet.dtype),
                                   plan, generator=torch.Generator(device=pipeline.device).manual_seed(seed),
                                   batch_size=batch_size,
                                   class_labels=None if class_labels is None else class_labels.to(pipeline.device))
        row = {"num_inference_steps": k, "bits_per_dim": bound.bits_per_dim, "standard_error": bound.standard_error,
               "decoder": bound.decoder, "prior": float(bound.prior.mean()), "chain": bound.plan.describe_chain()}
        quality = {}
        if num_samples:
            samples, _ = sample_grid(pipeline, num_samples, k, seed)
            quality = sample_quality(samples, reference, feature_model=feature_model, classifier=classifier,
                                     device=pipeline.device, progress=False)
        histogram = quality.get("class_histogram")
        row.update(fd=quality.get("fd"), fd_name=quality.get("fd_name"), score=quality.get("inception_score"),
                   class_histogram=histogram, class_chi2=None if histogram is None else class_balance_chi2(histogram),
                   precision=quality.get("precision"), recall=quality.get("recall"), num_samples=num_samples,
                   seconds=time.time() - started)
        rows.append(row)
    return rows

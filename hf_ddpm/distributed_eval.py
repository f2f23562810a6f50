"""Evaluation split over the processes ``accelerate launch`` starts, gathered so that every number equals a
one-process run's: each process takes a contiguous share of the images, computes their features (FD, IS,
precision/recall) or their per-image bounds, and the shares are gathered in index order.

The bound's ε of held-out image j comes from its own generator, seeded by (seed, j) in the bound's stream
(:mod:`hf_ddpm.image_seeds`), so an image's bound does not depend on which process or batch evaluates it; the plan
(which timesteps, their weights) is made once, on the main process, and broadcast. Everything here also runs in one
process (``state`` None), the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from .image_seeds import BOUND, image_generators
from .likelihood import estimate_bound
from .timestep_plan import TimestepPlan
from .variational_bound import VariationalBound


def share(num_items: int, state=None) -> range:
    """This process's contiguous share of ``num_items`` N: process p of P takes items ⌊p·N/P⌋ up to, not including,
    ⌊(p+1)·N/P⌋."""
    index, count = (0, 1) if state is None else (state.process_index, state.num_processes)
    return range(index * num_items // count, (index + 1) * num_items // count)


def gather_rows(array, state=None) -> np.ndarray | None:
    """The processes' arrays (this one's ``array``: rows of its :func:`share`, None for an empty share or nothing to
    give, e.g. no classifier) concatenated in process order, on every process; None where every process gave None."""
    if state is None or state.num_processes == 1:
        return array
    from accelerate.utils import gather_object

    parts = [part for part in gather_object([array]) if part is not None]
    return np.concatenate(parts) if parts else None


def broadcast(value, state=None):
    """The main process's ``value`` on every process."""
    if state is None or state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def gathered_bound(model, scheduler, images: torch.Tensor, plan: TimestepPlan, *, seed: int, batch_size: int,
                   class_labels: torch.Tensor | None = None, state=None, progress: bool = True) -> VariationalBound:
    """The bound (Eq. 5) of ``images`` (model range, 8-bit grid) under ``plan``, per image, with image j's ε drawn from
    its generator seeded by (``seed``, j): this process's :func:`share`, ``batch_size`` at a time, gathered. Equal,
    per image, to ``estimate_bound(model, scheduler, images[j:j+1], plan, generator=[that generator])``."""
    from tqdm.auto import tqdm

    from .progress import bar_options

    mine = share(len(images), state)
    starts = range(mine.start, mine.stop, batch_size)
    is_main = state is None or state.is_main_process
    priors, terms = [torch.zeros(0, dtype=torch.float64)], [torch.zeros(0, len(plan.timesteps), dtype=torch.float64)]
    for start in tqdm(starts, unit="batch", **bar_options("held-out bound", enabled=progress and is_main)):
        stop = min(start + batch_size, mine.stop)
        bound = estimate_bound(model, scheduler, images[start:stop], plan,
                               generator=image_generators(seed, range(start, stop), BOUND),
                               class_labels=None if class_labels is None else class_labels[start:stop])
        priors.append(bound.prior.double().cpu())
        terms.append(bound.terms.double().cpu())
    prior = gather_rows(torch.cat(priors).numpy(), state)
    term = gather_rows(torch.cat(terms).numpy(), state)
    return VariationalBound(plan, torch.from_numpy(prior), torch.from_numpy(term))


def gathered_features(compute, num_items: int, state=None) -> tuple:
    """``compute(indices)`` → a tuple of arrays (rows: those items, or None) on this process's :func:`share`,
    each gathered over the processes."""
    return tuple(gather_rows(part, state) for part in compute(share(num_items, state)))


def dataset_features(models, dataset, state=None) -> np.ndarray:
    """The FD features of every image of ``dataset`` (an ``hf_ddpm.data.ImageDataset``) under ``models`` (a
    :class:`~hf_ddpm.metrics.quality.QualityModels`), each process decoding and judging its share, gathered."""

    def compute(indices):
        if not len(indices):
            return (None,)
        return (models.features(torch.from_numpy(np.stack([dataset.uint8(i) for i in indices]))),)

    return gathered_features(compute, len(dataset), state)[0]

"""The held-out bound during and after training (moving to the bound estimator's module)."""

from __future__ import annotations

import torch

from ..evaluation import BoundSummary, summarize_bound
from ..likelihood import VariationalBound, bits_per_dim


def estimate_timesteps(num_train_timesteps: int, count: int, seed: int) -> tuple[torch.Tensor, int] | None:
    """The timesteps of a bound estimate from ``count`` of the T: the ``count // 2`` smallest (where the terms are
    largest and change fastest: evaluated exactly) plus ``count − count // 2`` drawn uniformly without replacement
    from the rest with ``seed``. Returns (ascending timesteps, number evaluated exactly), or None when
    ``count`` ≥ T (all of them)."""
    T = num_train_timesteps
    if count >= T:
        return None
    if count < 4:
        raise ValueError(f"a bound estimate needs at least 4 timesteps (for its standard error), got {count}")
    exact = count // 2
    generator = torch.Generator().manual_seed(seed)
    drawn = exact + torch.randperm(T - exact, generator=generator)[: count - exact]
    return torch.cat([torch.arange(exact), drawn.sort().values]), exact


@torch.no_grad()
def held_out_bound(
    model,
    scheduler,
    images: torch.Tensor,
    *,
    num_timesteps: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
) -> BoundSummary:
    """The bound (Eq. 5) of ``images`` (in [−1, 1], 8-bit grid) in bits/dim, averaged over the images.

    ``num_timesteps`` None or ≥ T: every timestep (the full bound). Fewer (K): an unbiased estimate from the K/2
    smallest timesteps, evaluated exactly, and K/2 drawn uniformly without replacement from the rest (see
    :func:`estimate_timesteps`), whose ``standard_error`` combines the spread over images with the error of the
    drawn subset. Images go through the model in chunks of ``batch_size``; the noise is drawn from ``seed``."""
    T = scheduler.config.num_train_timesteps
    plan = estimate_timesteps(T, num_timesteps, seed) if num_timesteps is not None else None
    generator = torch.Generator(device=images.device).manual_seed(seed)
    parts = [
        bits_per_dim(model, scheduler, chunk, generator=generator, timesteps=None if plan is None else plan[0])
        for chunk in images.split(batch_size)
    ]
    bound = VariationalBound(
        total=torch.cat([p.total for p in parts]),
        prior=torch.cat([p.prior for p in parts]),
        terms=torch.cat([p.terms for p in parts]),
        timesteps=parts[0].timesteps,
    )
    return summarize_bound(bound, num_train_timesteps=T, exact=0 if plan is None else plan[1])

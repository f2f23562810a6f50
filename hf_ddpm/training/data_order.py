"""The order of a run's random draws, as pure functions of the seed, so a resumed run draws what an uninterrupted one
would: the timesteps and noise of micro-batch m come from (seed, m); the order of epoch e from (seed, e)."""

from __future__ import annotations

import numpy as np
import torch


def seeded_generator(*keys: int, device="cpu") -> torch.Generator:
    """A torch generator seeded from the integers ``keys`` (through numpy's SeedSequence, so nearby keys give
    unrelated streams)."""
    (state,) = np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)
    return torch.Generator(device=device).manual_seed(int(state))


def step_generator(seed: int, micro_step: int, device="cpu") -> torch.Generator:
    """The generator of one global micro-batch's timesteps and noise: a pure function of (seed, micro_step), so a
    resumed run draws exactly what an uninterrupted one would, without saving generator states."""
    return seeded_generator(seed, micro_step, device=device)


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A random permutation of ``range(num_items)`` per epoch, drawn from ``(seed, epoch)`` alone.

    Call :meth:`set_epoch` before each epoch (Accelerate's prepared DataLoader forwards its ``set_epoch`` here)."""

    def __init__(self, num_items: int, seed: int):
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        return iter(torch.randperm(self.num_items, generator=seeded_generator(self.seed, self.epoch)).tolist())

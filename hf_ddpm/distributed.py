"""Multi-process launch checks and small helpers for a training loop run under Accelerate."""

from __future__ import annotations

import os

import numpy as np
import torch


def launched_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE`` as torchrun / ``accelerate launch`` set it), 1 if none."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def check_process_group(accelerator) -> None:
    """Stop with a clear error when the launcher started several processes but they do not form one process group.

    ``accelerate launch --multi_gpu --num_processes N`` on a machine without GPUs (and without
    ``ACCELERATE_USE_CPU=1``) starts N independent processes, each believing it is alone: each would train on all
    the data and write the same output folder. Detected here as ``WORLD_SIZE > 1`` while the accelerator sees one
    process."""
    launched = launched_world_size()
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes (WORLD_SIZE={launched}, LOCAL_RANK="
            f"{os.environ.get('LOCAL_RANK', '?')}) but this one sees {accelerator.num_processes} process(es) with "
            f"distributed type {accelerator.distributed_type}: they would train independently and overwrite each "
            "other's output. On a CPU-only machine run `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu "
            "--num_processes N ...` (or use training/configs/cpu_2_processes.yaml); otherwise drop --multi_gpu."
        )


def step_generator(seed: int, step: int, process_index: int, device="cpu") -> torch.Generator:
    """A generator for the noise and timesteps of one micro-batch, seeded from (seed, step, process).

    Seeding per micro-batch makes the draws a pure function of where the run is, so a resumed run draws exactly
    what an uninterrupted one would, without saving generator states."""
    (state,) = np.random.SeedSequence([seed, step, process_index]).generate_state(1, dtype=np.uint64)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(state))
    return generator

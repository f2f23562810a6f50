"""The multi-process launch check of a training run under Accelerate."""

from __future__ import annotations

import os


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
            "--num_processes N ...` (the variable is needed with training/configs/cpu_2_processes.yaml too); "
            "otherwise drop --multi_gpu."
        )

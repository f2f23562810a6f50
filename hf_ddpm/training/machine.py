"""The machine a run computes on: how many CPU threads a training process uses (the cores it is given, unless somebody
chose), and a description of the hardware for the record.

``accelerate launch`` sets ``OMP_NUM_THREADS`` for the processes it starts: to ``--num_cpu_threads_per_process``
when given, else to the launcher's own ``OMP_NUM_THREADS``, else to **1** (only ``--cpu`` launches get a per-core
count). A process cannot tell that default 1 from a user's ``OMP_NUM_THREADS=1`` by its environment alone, so
:func:`cpu_threads` looks at the launcher: the ``accelerate launch`` process among its ancestors, whose *initial*
environment (``/proc/<pid>/environ``, as it was started) and command line say whether the user set either. The
choice, in order:

1. ``num_threads`` (the trainer's ``--num_threads``);
2. ``OMP_NUM_THREADS`` as the user set it (in the shell, or through ``--num_cpu_threads_per_process``);
3. otherwise the cores in this process's CPU affinity divided among the processes of this machine
   (``LOCAL_WORLD_SIZE``), at least 1 — also when ``OMP_NUM_THREADS=1`` is only ``accelerate launch``'s default. Such
   a count then follows the machine during the run (:func:`hf_ddpm.contention.follow_the_machine`): fewer threads
   while other processes keep cores busy.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..contention import usable_core_ids

LAUNCHER_THREADS_FLAG = "--num_cpu_threads_per_process"
CHOSEN = ("num_threads", "OMP_NUM_THREADS")  # the reasons of a count somebody chose


class ThreadChoice(NamedTuple):
    threads: int
    reason: str

    @property
    def chosen(self) -> bool:
        """Whether somebody chose the count (``--num_threads``, ``OMP_NUM_THREADS``): it never changes then."""
        return self.reason in CHOSEN


def usable_cores() -> int:
    """How many cores this process may run on (its CPU affinity; every core where affinity is unknown)."""
    return len(usable_core_ids())


def accelerate_launcher() -> "psutil.Process | None":  # noqa: F821
    """The ``accelerate launch`` process that started this one (an ancestor), or None."""
    import psutil

    try:
        for ancestor in psutil.Process().parents():
            command = " ".join(ancestor.cmdline())
            if "accelerate" in command and "launch" in command:
                return ancestor
    except psutil.Error:  # a process gone, or not ours to read
        return None
    return None


def omp_set_by_user(environ=os.environ) -> bool:
    """Whether ``OMP_NUM_THREADS`` in ``environ`` is the user's choice rather than ``accelerate launch``'s default."""
    if "OMP_NUM_THREADS" not in environ:
        return False
    launcher = accelerate_launcher()
    if launcher is None:  # started directly (python train.py, torchrun): whoever set it meant it
        return True
    import psutil

    try:
        return "OMP_NUM_THREADS" in launcher.environ() or LAUNCHER_THREADS_FLAG in " ".join(launcher.cmdline())
    except psutil.Error:  # cannot read the launcher: trust the variable
        return True


def cpu_threads(num_threads: int | None = None, environ=os.environ) -> ThreadChoice:
    """The intra-op thread count for this process and why (see the module docstring)."""
    if num_threads is not None:
        return ThreadChoice(num_threads, CHOSEN[0])
    if omp_set_by_user(environ):
        return ThreadChoice(max(1, int(environ["OMP_NUM_THREADS"])), CHOSEN[1])
    local_processes = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    cores = usable_cores()
    return ThreadChoice(max(1, cores // local_processes), f"the {cores} usable core(s) / {local_processes} local "
                        "process(es)")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def describe_hardware(num_processes: int, threads: int) -> str:
    """E.g. "2 × NVIDIA H100" or "Intel(R) Xeon(R) Processor, 2 usable cores; 1 process × 2 threads"."""
    import torch

    if torch.cuda.is_available():
        return f"{num_processes} × {torch.cuda.get_device_name(0)}"
    processes = f"{num_processes} process{'es' if num_processes != 1 else ''}"
    return f"{cpu_model()}, {usable_cores()} usable cores; {processes} × {threads} thread{'s' if threads != 1 else ''}"

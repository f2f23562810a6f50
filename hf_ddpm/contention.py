"""Sharing a busy CPU machine: what a process of hf-ddpm does so that two of them (or one beside another job) do not
slow each other down far beyond their fair share. Imports nothing heavy: :func:`bound_spinning` must run before torch
loads its OpenMP runtime.

Measured on a 2-core machine (issue 22 §3): two default training runs started together ran 4.8× slower each, not 2×:
torch's OpenMP threads spin at every barrier (libgomp's default ``GOMP_SPINCOUNT`` is 300,000 spins) while the thread
they wait for is descheduled by the other process. ``OMP_WAIT_POLICY=PASSIVE`` (never spin) fixed the pair but cost
a lone run 41 %. Two measures, each switchable for ``benchmarks/bench_contention.py``:

- **spin**: a bounded spin count, :data:`SPIN_COUNT`, set as ``GOMP_SPINCOUNT`` before torch starts (by
  ``import hf_ddpm``): a thread spins that long at a barrier, then sleeps — enough for a lone run's short gaps, far
  shorter than a time slice of the other process. A user's ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` wins; it has no
  effect where torch was imported before hf_ddpm.
- **threads**: the thread count chosen from the load at start (``hf_ddpm.training.machine.cpu_threads``): the cores
  that the 1-minute load average shows busy are left to whoever uses them, with a warning that names
  ``--num_threads``.

``HF_DDPM_CONTENTION``: ``spin`` (the default), ``on`` (both), ``threads`` or ``off`` (neither: OpenMP's and the
cores' defaults). Measured by ``benchmarks/bench_contention.py`` on the 2-core AMD EPYC, nothing else running,
2026-12-07 (300 steps of the default run; ``hf-ddpm evaluate --timesteps 200``), against ``off``:

=============================  ==========  ====================  ====================
                               ``off``     spin count 10,000     spin count 1,000
=============================  ==========  ====================  ====================
two trainings started together 5.5× each   7.4× each             **2.5× each**
training beside evaluate       3.3×, 4.0×  2.6×, 3.1×            **1.6×, 1.6×**
alone (step/s, 4 runs each)    13.9 mean   –                     13.0 mean (0.94×; medians 0.95×)
=============================  ==========  ====================  ====================

so the spin measure is on by default with :data:`SPIN_COUNT` = 1,000 (alone it costs about 5 %, within the ±8 % that
identical runs vary by here). The threads measure stays opt-in: two runs started together see no load at their
start, and it would take a core from a run started right after other work (the 1-minute load average decays
slowly, e.g. to about 1 just after ``pip install``).
"""

from __future__ import annotations

import os
import sys

SWITCH = "HF_DDPM_CONTENTION"
MODES = ("on", "spin", "threads", "off")
DEFAULT_MODE = "spin"  # measured (module docstring)
SPIN_COUNT = 1_000  # GOMP_SPINCOUNT: libgomp's default is 300,000 (and 100 when a process has more threads than CPUs)


def mode(environ=os.environ) -> str:
    """The measures in force: ``HF_DDPM_CONTENTION`` (default ``spin``); an unknown value is an error."""
    value = environ.get(SWITCH, DEFAULT_MODE).strip().lower() or DEFAULT_MODE
    if value not in MODES:
        raise ValueError(f"{SWITCH} must be one of {MODES}, got {environ[SWITCH]!r}")
    return value


def bound_spinning(environ=os.environ) -> bool:
    """Set ``GOMP_SPINCOUNT`` = :data:`SPIN_COUNT` in ``environ`` when the spin measure is on, torch has not loaded
    its OpenMP runtime yet, and the user chose neither a spin count nor a wait policy. Whether it was set."""
    if mode(environ) not in ("on", "spin") or "torch" in sys.modules:
        return False
    if "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return False
    environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return True


def busy_cores(cores: int, environ=os.environ, load: float | None = None) -> tuple[int, float]:
    """(how many of ``cores`` the machine's 1-minute load average shows busy, that load) when the threads measure is
    on: the load (or ``load``) rounded, at most ``cores`` − 1 (a process keeps one); (0, 0.0) when off or where the
    load is unknown."""
    if mode(environ) not in ("on", "threads"):
        return 0, 0.0
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not Unix
            return 0, 0.0
    return max(0, min(cores - 1, int(load + 0.5))), float(load)

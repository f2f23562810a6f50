"""Sharing a busy CPU machine: what a process of hf-ddpm does so that two of them (or one beside another job) do not
slow each other down far beyond their fair share. Imports nothing heavy: :func:`bound_spinning` must run before torch
loads its OpenMP runtime.

Measured on a 2-core machine (issue 22 §3): two default training runs started together ran 4.8–5.5× slower each, not
2×: torch's OpenMP threads spin at every barrier (libgomp's default ``GOMP_SPINCOUNT`` is 300,000 spins) while the
thread they wait for is descheduled by the other process. ``OMP_WAIT_POLICY=PASSIVE`` (never spin) fixed the pair
but cost a lone run 41 %; no spin count served both (300: the pair 1.6× but alone 0.73×; 1,000: 2.5–2.7×; 3,000:
4.4×). Two measures, each switchable for ``benchmarks/bench_contention.py``:

- **threads**: the intra-op thread count follows the machine during the run (:class:`ThreadGovernor`, installed by
  :func:`follow_the_machine` in the trainer and the ``hf-ddpm`` command): about once a second, at a network call, the
  CPU time other processes took on this process's cores is read from ``/proc/stat`` (the cores' busy time less this
  process's own), and the threads become the process's cores less those others use, at least 1 and at most what the
  process started with. Two runs on 2 cores then run one thread each — no barrier left to spin at — and a run left
  alone returns to all its threads within a second. A thread count somebody chose (``--num_threads``,
  ``OMP_NUM_THREADS``) is never changed.
- **spin**: a bounded spin count, :data:`SPIN_COUNT`, set as ``GOMP_SPINCOUNT`` before torch starts (by ``import
  hf_ddpm``): a thread spins that long at a barrier, then sleeps. A user's ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``
  wins; it has no effect where torch was imported before hf_ddpm.

``HF_DDPM_CONTENTION``: ``threads`` (the default), ``on`` (both), ``spin`` or ``off`` (neither: OpenMP's and the
cores' defaults). The default was chosen by ``benchmarks/bench_contention.py`` on the 2-core AMD EPYC, nothing else
running (docs/performance.md, "Sharing a busy machine", has the table).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

SWITCH = "HF_DDPM_CONTENTION"
MODES = ("on", "spin", "threads", "off")
DEFAULT_MODE = "threads"  # measured (module docstring)
SPIN_COUNT = 1_000  # GOMP_SPINCOUNT: libgomp's default is 300,000 (and 100 when a process has more threads than CPUs)
INTERVAL = 1.0  # seconds between two looks of the ThreadGovernor at the machine
REPORT = "hf-ddpm: other processes keep"  # how the ThreadGovernor's one line begins


def mode(environ=os.environ) -> str:
    """The measures in force: ``HF_DDPM_CONTENTION`` (default :data:`DEFAULT_MODE`); an unknown value is an error."""
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


def busy_seconds(cores: set[int]) -> float | None:
    """CPU seconds the ``cores`` have worked since boot (``/proc/stat``: user, nice, system, irq and softirq time; idle,
    I/O wait and time taken by a hypervisor are not work here), or None where ``/proc/stat`` cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            lines = handle.read().split("\n")
    except OSError:
        return None
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0][:3] == "cpu" and fields[0][3:].isdigit() and int(fields[0][3:]) in cores:
            user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[1:8])
            ticks += user + nice + system + irq + softirq
    return ticks / os.sysconf("SC_CLK_TCK")


def usable_core_ids() -> set[int]:
    """The cores this process may run on (its CPU affinity; every core where affinity is unknown)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


class ThreadGovernor:
    """The intra-op thread count of this process, following the machine (the threads measure of the module
    docstring). Called with any arguments (it serves as a forward pre-hook), it looks at most once per ``interval``
    seconds: the cores other processes kept busy since its last look, ``others`` = (the cores' work − this process's
    own CPU time) / wall time, and the threads become ``cores − round(others)``, at least 1 and at most ``threads``,
    the count the process started with — fewer only while the process itself got less than its threads less half a
    core (``own``), so that processes that fit beside it (the other processes of its own launch, each on its share)
    do not take threads away. A count that other code set meanwhile (e.g. a metric network that runs on one thread)
    is left alone. ``busy``, ``own`` and ``clock`` are the readings (:func:`busy_seconds`,
    ``time.process_time``, ``time.monotonic``)."""

    def __init__(self, threads: int, cores: set[int] | None = None, interval: float = INTERVAL, busy=busy_seconds,
                 own=time.process_time, clock=time.monotonic, report=None):
        self.most = self.threads = threads
        self.cores = usable_core_ids() if cores is None else set(cores)
        self.interval, self.busy, self.own, self.clock = interval, busy, own, clock
        self.report = report or (lambda line: print(line, file=sys.stderr, flush=True))
        self.reported = False
        self.last = self.reading()

    def reading(self) -> tuple[float, float, float]:
        return self.clock(), self.busy(self.cores), self.own()

    def __call__(self, *_) -> None:
        if self.clock() - self.last[0] < self.interval:
            return
        import torch

        then, now = self.last, self.reading()
        self.last = now
        wall = now[0] - then[0]
        own = (now[2] - then[2]) / wall
        others = max(0.0, (now[1] - then[1]) / wall - own)
        threads = max(1, min(self.most, len(self.cores) - int(others + 0.5)))
        if threads < self.threads and own >= self.threads - 0.5:
            return  # it got its cores: the others fit beside it (e.g. the other processes of its own launch)
        if threads == self.threads or torch.get_num_threads() != self.threads:
            return
        torch.set_num_threads(threads)
        self.threads = threads
        if threads < self.most and not self.reported:
            self.reported = True
            self.report(f"{REPORT} {others:.1f} of this process's {len(self.cores)} cores busy: "
                        f"{threads} CPU thread(s) instead of {self.most} while they do ({SWITCH}=off keeps "
                        f"{self.most}; OMP_NUM_THREADS=N, or the trainer's --num_threads N, fixes the count)")


@contextmanager
def follow_the_machine(choice, environ=os.environ):
    """Within: a :class:`ThreadGovernor` at every network call of this process (a forward pre-hook of every torch
    module), when ``choice`` (a :class:`hf_ddpm.training.machine.ThreadChoice`, or None: nothing to follow) was not
    somebody's (``--num_threads``, ``OMP_NUM_THREADS``), the threads measure is on, the process has more than one
    thread to give back and ``/proc/stat`` can be read. Yields the governor (or None); on exit the hook is removed and
    the process's count restored."""
    if choice is None or choice.chosen or choice.threads < 2 or mode(environ) not in ("on", "threads") \
            or busy_seconds(usable_core_ids()) is None:
        yield None
        return
    import torch

    governor = ThreadGovernor(choice.threads)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(governor)
    try:
        yield governor
    finally:
        handle.remove()
        if torch.get_num_threads() == governor.threads:
            torch.set_num_threads(governor.most)


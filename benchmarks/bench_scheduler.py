"""Side-by-side speed of ``DDPMDocScheduler`` / ``DDPMDocPipeline`` against diffusers' ``DDPMScheduler`` /
``DDPMPipeline``, measured in one run on one machine, with ratios against the issue's targets.

What is timed
-------------
* ``step``: one ``scheduler.step(model_output, t, sample, generator=g)`` call at a mid-chain timestep of the
  1000-step chain (t = 499, so noise is drawn), ``t`` being a 0-d tensor taken from ``scheduler.timesteps`` as the
  pipelines pass it, with a seeded ``torch.Generator``. ``clip_sample=False`` is the ε-form (Eq. 11) path.
* ``limit``: what any ancestral step must do. ``torch.randn(shape, generator=g, out=z)`` (the noise draw from the
  generator) followed by ``torch.addcmul(sample, model_output, z, out=x)``: one elementwise kernel that reads the
  three tensors and writes the result, into preallocated buffers. (A real step needs other coefficients and a
  second output, x̂_0; the limit is a floor, not a competitor.)
* ``pipeline``: a full 1000-step ``__call__`` of ``DDPMDocPipeline`` and ``DDPMPipeline`` with the same small
  ``UNet2DModel`` and seed; the images must agree within float32 rounding.

Contenders are measured interleaved: every round times a block of calls (about ``--block`` seconds) of each
contender in turn, the order rotating, so drift in machine load hits all of them alike. A time is the median over
rounds of the per-call mean of a block, on the wall clock and on the process CPU clock (see
``interleaved_timings``). Threads are pinned with ``torch.set_num_threads``. Targets (issue 2): at batch 1 ours
≥ 2× faster than diffusers; at batch ≥ 16 ours within 1.5× of the limit; the pipeline no slower.

Usage::

    python benchmarks/bench_scheduler.py                   # steps with 1 and 2 threads, pipeline with 1
    python benchmarks/bench_scheduler.py --threads 1 --skip-pipeline --rounds 21
    python benchmarks/bench_scheduler.py --ops             # also count the aten ops one step dispatches
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import diffusers
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from torch.utils._python_dispatch import TorchDispatchMode

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler

SHAPES = ((1, 3, 32, 32), (16, 3, 32, 32), (64, 3, 64, 64))
VARIANCE_TYPES = ("fixed_small", "fixed_large")
CLIP_SAMPLE = (True, False)
TARGET_SPEEDUP_BATCH_1 = 2.0  # ours at least 2× faster than diffusers at batch 1
TARGET_OVER_LIMIT = 1.5  # ours within 1.5× of the limit at batch ≥ 16
MID_CHAIN = 500  # index into the descending 1000-step schedule: timestep 499


@dataclass
class Timing:
    """Per-call seconds of one contender: medians over blocks of wall-clock and of process CPU time."""

    wall: float
    cpu: float


def interleaved_timings(contenders: dict[str, Callable[[], object]], rounds: int, block_s: float,
                        synchronize: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Time blocks of calls of each contender, interleaved over ``rounds`` (the order rotating every round).

    Each block is timed on the wall clock and on the process CPU clock. On a machine shared with other work, the
    wall clock includes the time this process waited for a core; the CPU time of a one-thread run does not, so it
    is the steadier measure of what a call costs (with more threads it adds up the work of all of them).
    ``synchronize`` (e.g. ``torch.cuda.synchronize``): called before and after every block, so that the wall clock
    of a block covers the device's work, not only its queueing; blocks are then sized on the wall clock."""
    sync = synchronize or (lambda: None)
    clock = time.perf_counter if synchronize else time.process_time
    numbers = {}
    for name, f in contenders.items():  # warm up, then size a block to about block_s (one call if block_s = 0)
        f()
        if block_s > 0:  # without a device, sized on the CPU clock: a wall-clock estimate is inflated whenever the
            # process waits
            sync()
            start = clock()
            for _ in range(20):
                f()
            sync()
            numbers[name] = max(1, int(block_s / max((clock() - start) / 20, 1e-7)))
        else:
            numbers[name] = 1
    wall, cpu = {name: [] for name in contenders}, {name: [] for name in contenders}
    names = list(contenders)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                f, n = contenders[name], numbers[name]
                sync()
                wall_start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(n):
                    f()
                sync()
                cpu[name].append((time.process_time() - cpu_start) / n)
                wall[name].append((time.perf_counter() - wall_start) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Timing(statistics.median(wall[name]), statistics.median(cpu[name])) for name in names}


def make_schedulers(variance_type: str, clip_sample: bool) -> tuple[DDPMDocScheduler, DDPMScheduler]:
    config = dict(num_train_timesteps=1000, variance_type=variance_type, clip_sample=clip_sample)
    ours, theirs = DDPMDocScheduler(**config), DDPMScheduler(**config)
    ours.set_timesteps(1000)
    theirs.set_timesteps(1000)
    return ours, theirs


def step_contenders(shape: tuple[int, ...], variance_type: str, clip_sample: bool, device="cpu",
                    dtype: torch.dtype = torch.float32):
    """The three callables timed for one configuration, and max |ours − diffusers| of one step from one seed; sample,
    model output and noise in ``dtype`` on ``device``, drawn from generators on ``device``."""
    ours, theirs = make_schedulers(variance_type, clip_sample)
    g = torch.Generator().manual_seed(1234)
    sample, model_output = (torch.randn(shape, generator=g).to(device, dtype) for _ in range(2))
    t = theirs.timesteps[MID_CHAIN]
    if int(t) != int(ours.timesteps[MID_CHAIN]) or int(t) == 0:
        raise RuntimeError(f"the two 1000-step schedules disagree at index {MID_CHAIN}")
    ours_out = ours.step(model_output, t, sample, generator=torch.Generator(device).manual_seed(0)).prev_sample
    theirs_out = theirs.step(model_output, t, sample, generator=torch.Generator(device).manual_seed(0)).prev_sample
    max_diff = (ours_out.float() - theirs_out.float()).abs().max().item()

    g_ours, g_theirs, g_limit = (torch.Generator(device).manual_seed(s) for s in (1, 2, 3))
    z, out = torch.empty(shape, device=device, dtype=dtype), torch.empty(shape, device=device, dtype=dtype)

    def limit():
        torch.randn(shape, generator=g_limit, out=z)
        return torch.addcmul(sample, model_output, z, out=out)

    contenders = {
        "diffusers": lambda: theirs.step(model_output, t, sample, generator=g_theirs),
        "ours": lambda: ours.step(model_output, t, sample, generator=g_ours),
        "limit": limit,
    }
    return contenders, max_diff


class OpCounter(TorchDispatchMode):
    """Counts the aten ops that reach the dispatcher (each one kernel: a pass over memory or a scalar op)."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> Counter:
    with OpCounter() as counter:
        fn()
    return counter.ops


def bench_steps(threads: int, rounds: int, block_s: float, show_ops: bool) -> list[dict]:
    torch.set_num_threads(threads)
    rows = []
    for shape in SHAPES:
        for variance_type in VARIANCE_TYPES:
            for clip_sample in CLIP_SAMPLE:
                contenders, max_diff = step_contenders(shape, variance_type, clip_sample)
                row = dict(threads=threads, shape=shape, variance_type=variance_type, clip_sample=clip_sample,
                           max_diff=max_diff, **interleaved_timings(contenders, rounds, block_s))
                print(format_step_row(row), flush=True)
                if show_ops:
                    for name in ("ours", "diffusers"):
                        ops = count_ops(contenders[name])
                        print(f"    {name}: {sum(ops.values())} aten ops {dict(ops)}", flush=True)
                rows.append(row)
    return rows


def small_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()


def bench_pipeline(threads: int, rounds: int, batch_size: int) -> dict:
    """Full 1000-step sampling with both pipelines, the same UNet and seed, run alternately ``rounds`` times each.

    Per run: CPU and wall time, and the CPU time spent inside the UNet (forward hooks), so that the part the two
    pipelines differ in, everything outside the UNet, is measured on its own. The ratio ours/diffusers is taken per
    round (the two runs adjacent in time) and its median reported with its range."""
    torch.set_num_threads(threads)
    unet = small_unet()
    unet_cpu = [0.0]
    unet.register_forward_pre_hook(lambda module, args: unet_cpu.__setitem__(0, unet_cpu[0] - time.process_time()))
    unet.register_forward_hook(lambda module, args, out: unet_cpu.__setitem__(0, unet_cpu[0] + time.process_time()))
    pipes = {
        "diffusers": DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)),
        "ours": DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler(num_train_timesteps=1000)),
    }
    images, runs = {}, {name: [] for name in pipes}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    names = list(pipes)
    for r in range(rounds + 1):  # round 0 warms up
        for name in names[r % 2:] + names[: r % 2]:
            unet_cpu[0] = 0.0
            wall, cpu = time.perf_counter(), time.process_time()
            images[name] = pipes[name](batch_size=batch_size, generator=torch.Generator().manual_seed(0),
                                       num_inference_steps=1000, output_type="np").images
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if r:
                runs[name].append(dict(cpu=cpu, wall=wall, outside_unet=cpu - unet_cpu[0]))
    row = dict(threads=threads, batch_size=batch_size, params=sum(p.numel() for p in unet.parameters()),
               max_diff=float(abs(images["ours"] - images["diffusers"]).max()))
    for name, measured in runs.items():
        row[name] = Timing(statistics.median(m["wall"] for m in measured), statistics.median(m["cpu"] for m in measured))
        row[f"{name}_outside_unet"] = statistics.median(m["outside_unet"] for m in measured)
    for clock in ("cpu", "wall"):
        paired = sorted(o[clock] / d[clock] for o, d in zip(runs["ours"], runs["diffusers"]))
        row[f"paired_{clock}"] = (statistics.median(paired), paired[0], paired[-1])
    return row


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def verdict(row: dict, clock: str) -> str:
    ours, theirs, limit = (getattr(row[name], clock) for name in ("ours", "diffusers", "limit"))
    if row["shape"][0] == 1:
        return "ok" if theirs / ours >= TARGET_SPEEDUP_BATCH_1 else "MISS"
    return "ok" if ours / limit <= TARGET_OVER_LIMIT else "MISS"


STEP_HEADER = (
    "| threads | shape | variance | clip | diffusers µs | ours µs | limit µs | diffusers/ours | ours/limit | "
    "wall: diffusers/ours | wall: ours/limit | target (CPU; wall) | max abs diff |\n"
    "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|"
)


def format_step_row(row: dict) -> str:
    """Times and the first two ratios: CPU-time medians; then the same ratios from wall-clock medians."""
    cpu = {name: row[name].cpu for name in ("diffusers", "ours", "limit")}
    wall = {name: row[name].wall for name in ("diffusers", "ours", "limit")}
    target = "≥2× faster" if row["shape"][0] == 1 else "≤1.5× limit"
    return (
        f"| {row['threads']} | {'×'.join(map(str, row['shape']))} | {row['variance_type']} | {row['clip_sample']} | "
        f"{us(cpu['diffusers'])} | {us(cpu['ours'])} | {us(cpu['limit'])} | "
        f"{cpu['diffusers'] / cpu['ours']:.2f}× | {cpu['ours'] / cpu['limit']:.2f}× | "
        f"{wall['diffusers'] / wall['ours']:.2f}× | {wall['ours'] / wall['limit']:.2f}× | "
        f"{target}: {verdict(row, 'cpu')}; {verdict(row, 'wall')} | {row['max_diff']:.1e} |"
    )


PIPELINE_HEADER = (
    "| threads | UNet | batch | diffusers DDPMPipeline | DDPMDocPipeline | ours/diffusers, CPU (range) | "
    "ours/diffusers, wall (range) | outside the UNet, per step: diffusers / ours | max abs diff of images |\n"
    "|---|---|---|--:|--:|--:|--:|--:|--:|"
)


def format_pipeline_row(row: dict) -> str:
    d, o = row["diffusers"], row["ours"]
    ratio = {clock: "{:.3f} ({:.3f}–{:.3f})".format(*row[f"paired_{clock}"]) for clock in ("cpu", "wall")}
    return (
        f"| {row['threads']} | 1×8×8, {row['params'] / 1e3:.0f}k params | {row['batch_size']} | "
        f"{d.cpu:.2f} s CPU, {d.wall:.2f} s wall | {o.cpu:.2f} s CPU, {o.wall:.2f} s wall | {ratio['cpu']} | "
        f"{ratio['wall']} | {us(row['diffusers_outside_unet'] / 1000)} µs / {us(row['ours_outside_unet'] / 1000)} µs | "
        f"{row['max_diff']:.1e} |"
    )


def machine_description() -> str:
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, torch {torch.__version__}, "
        f"diffusers {diffusers.__version__}"
    )


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch.set_num_threads values")
    parser.add_argument("--rounds", type=int, default=41, help="interleaved rounds per step configuration")
    parser.add_argument("--block", type=float, default=0.005, help="seconds per timed block of step calls")
    parser.add_argument("--pipeline-threads", type=int, nargs="+", default=[1],
                        help="torch.set_num_threads values for the pipeline runs (its UNet has dozens of parallel "
                        "regions per step: on a busy machine more threads mostly time the OS scheduler)")
    parser.add_argument("--pipeline-rounds", type=int, default=5, help="full 1000-step runs per pipeline")
    parser.add_argument("--pipeline-batch", type=int, default=4)
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--ops", action="store_true", help="count the aten ops one step dispatches")
    args = parser.parse_args()

    print(f"machine: {machine_description()}")
    print(f"load before: {load_average()}\n")
    step_rows, pipeline_rows = [], []
    if not args.skip_steps:
        print("One step, median per-call time over interleaved blocks (process CPU time; wall-clock ratios alongside)")
        print(STEP_HEADER)
        for threads in args.threads:
            step_rows += bench_steps(threads, args.rounds, args.block, args.ops)
    if not args.skip_pipeline:
        print("\nFull 1000-step sampling, median over interleaved runs\n" + PIPELINE_HEADER)
        for threads in args.pipeline_threads:
            pipeline_rows.append(bench_pipeline(threads, args.pipeline_rounds, args.pipeline_batch))
            print(format_pipeline_row(pipeline_rows[-1]), flush=True)
    print(f"\nload after: {load_average()}\n")
    print_summary(step_rows, pipeline_rows)


def print_summary(step_rows: list[dict], pipeline_rows: list[dict]) -> None:
    """The worst case of each target per thread count, on the CPU clock and on the wall clock."""
    for clock in ("cpu", "wall"):
        for threads in sorted({row["threads"] for row in step_rows + pipeline_rows}):
            parts = []
            batch_1 = [r for r in step_rows if r["threads"] == threads and r["shape"][0] == 1]
            if batch_1:
                worst = min(getattr(r["diffusers"], clock) / getattr(r["ours"], clock) for r in batch_1)
                parts.append(f"batch 1: ours ≥ {worst:.2f}× faster than diffusers (target ≥ {TARGET_SPEEDUP_BATCH_1}×)")
            batched = [r for r in step_rows if r["threads"] == threads and r["shape"][0] >= 16]
            if batched:
                worst = max(getattr(r["ours"], clock) / getattr(r["limit"], clock) for r in batched)
                parts.append(f"batch ≥ 16: ours ≤ {worst:.2f}× the limit (target ≤ {TARGET_OVER_LIMIT}×)")
            for r in (r for r in pipeline_rows if r["threads"] == threads):
                ratio = r[f"paired_{clock}"][0]
                parts.append(f"pipeline: ours/diffusers {ratio:.3f} (target ≤ 1), images max |Δ| {r['max_diff']:.1e}")
            print(f"{clock:>4}, {threads} thread(s): " + "; ".join(parts))


if __name__ == "__main__":
    main()

"""The cost of classifier-free guidance: a sampling step of ``DDPMDocPipeline`` with ``guidance_scale`` s ≠ 1 (both
branches, conditional and null label, in one batched UNet call of twice the batch) against s = 1 (the conditional
branch alone), on the digits preset's class-conditional UNet (10 classes + the null label, learned variances).

What is timed: a ``num_inference_steps``-step ``pipe(...)`` call of ``--batch`` images, per step, for s = 1, s = 3
and s = 0 (the null branch alone), interleaved over rounds as ``bench_scheduler.interleaved_timings`` does. The
target (issue 20): guided ≤ 2.2× conditional per step. Random weights: the cost does not depend on them.

Usage::

    python benchmarks/bench_guidance.py                  # 2 threads, batch 64, 50 steps
    python benchmarks/bench_guidance.py --threads 1 --batch 16
"""

from __future__ import annotations

import argparse

import torch

from bench_scheduler import interleaved_timings, load_average, machine_description
from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler
from hf_ddpm.presets import build_unet

TARGET_RATIO = 2.2
NUM_CLASSES = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = build_unet(8, 1, learned_variance=True, fourier_periods=(2.0, 4.0, 8.0, 16.0),
                      num_class_embeds=NUM_CLASSES + 1).eval()
    pipe = DDPMDocPipeline(unet, DDPMDocScheduler(variance_type="learned_range"), null_class_label=NUM_CLASSES)
    pipe.set_progress_bar_config(disable=True)
    labels = torch.arange(args.batch) % NUM_CLASSES

    def sample(scale: float):
        return lambda: pipe(class_labels=labels, guidance_scale=scale, num_inference_steps=args.steps,
                            generator=torch.Generator().manual_seed(0), output_type="pt")

    contenders = {"s = 1 (conditional)": sample(1.0), "s = 3 (guided)": sample(3.0), "s = 0 (null label)": sample(0.0)}
    timings = interleaved_timings(contenders, rounds=args.rounds, block_s=0)
    print(machine_description(), load_average(), sep="; ")
    print(f"batch {args.batch}, {args.steps}-step chain, {args.threads} thread(s); ms per step (median of "
          f"{args.rounds} rounds, process CPU time and wall clock)")
    base = timings["s = 1 (conditional)"]
    for name, timing in timings.items():
        print(f"  {name:22s} cpu {1e3 * timing.cpu / args.steps:8.2f}  wall {1e3 * timing.wall / args.steps:8.2f}"
              f"  ×{timing.wall / base.wall:5.2f} of s = 1 (wall)")
    ratio = timings["s = 3 (guided)"].wall / base.wall
    print(f"guided / conditional = {ratio:.2f} (target ≤ {TARGET_RATIO}): {'met' if ratio <= TARGET_RATIO else 'MISSED'}")


if __name__ == "__main__":
    main()

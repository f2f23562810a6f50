"""The GPU check (issue 13 §5): one command that prints, as markdown tables,

(a) seeded parity with diffusers on the device: ``DDPMDocScheduler`` chains against ``DDPMScheduler``'s (a smooth
    stand-in network, device generators) and ``DDPMDocPipeline`` images against ``DDPMPipeline``'s (the same UNet and
    seed), with TF32 off so that only the schedulers differ;
(b) the step benchmark (``bench_scheduler.py``'s contenders: ours, diffusers' and the randn + fused-pass limit) on the
    device, for fp32, bf16 and fp16 samples;
(c) training throughput and peak memory of ``Trainer.train`` against diffusers' example loop (``bench_training.py``:
    each loop in a fresh process) with the paper's 35.7M-parameter CIFAR-10 UNet preset at 32×32, batch 128, fp32
    and bf16, on synthetic CIFAR-sized images;
(d) 1000-step sampling time of ``DDPMDocPipeline`` and ``DDPMPipeline`` with that UNet;
(e) host–device synchronisations (the paths: sync_paths.py): the scheduler's step paths, the losses and the bound
    term, the pipeline loop and the trainer's micro-step (training step, backward, clipping, optimizer, EMA, the
    importance sampler's update) run under ``torch.cuda.set_sync_debug_mode("error")`` after a warm-up — any
    synchronising call raises, so "0" means none per step; then the whole ``Trainer.train`` loop under ``"warn"``, its synchronisations per step counted by
    where they come from (information: the trainer's own loop is not among these paths).

    python benchmarks/gpu_check.py                 # on a machine with a CUDA GPU: the full check
    python benchmarks/gpu_check.py --device cpu    # tiny sizes on a CPU, in one process (tests/test_gpu_check.py)
    python benchmarks/gpu_check.py --sections a e  # some sections only

On a CPU everything runs at tiny sizes and the synchronisation checks only run their code (``set_sync_debug_mode`` is
CUDA's; tests/test_hot_path_syncs.py and tests/test_scheduler_syncs.py count the same paths on a CPU). TF32 stays at
torch's defaults (cuDNN convolutions on, matmuls off) outside the parity section. Exit status 1 if a parity or
synchronisation check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from functools import partial

import diffusers
import torch
from accelerate.state import AcceleratorState
from diffusers import DDPMPipeline, DDPMScheduler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_scheduler  # noqa: E402
import bench_training  # noqa: E402
import sync_paths  # noqa: E402

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler  # noqa: E402
from hf_ddpm.presets import build_unet  # noqa: E402

# (a)'s bounds. Chains: 1e-3 of the samples' scale, the bound — diffusers recomputes β_t = 1 − ᾱ_t/ᾱ_{t−1} in
# float32 in every step, up to 3e-4 relative at β_t = 1e-4, and a chain carries such errors on (derivation in
# tests/test_scheduler_parity.py). Images in [0, 1]: 1e-4, the bound tests/test_pipeline.py holds on a CPU.
CHAIN_TOLERANCE = 1e-3
IMAGE_TOLERANCE = 1e-4
CHAIN_CONFIGS = [
    dict(),  # fixed_small, ε, clipped x̂_0: diffusers' defaults
    dict(variance_type="fixed_large", clip_sample=False),  # the ε-form mean (Eq. 11)
    dict(variance_type="learned_range"),
    dict(prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2"),
    dict(prediction_type="sample", clip_sample=False, thresholding=True, sample_max_value=2.0),
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = {"no": "fp32", "bf16": "bf16"}  # Accelerate's mixed_precision → label


@dataclass(frozen=True)
class Sizes:
    chain_shape: tuple[int, ...]
    chain_steps: tuple[int, ...]
    pipeline_steps: int  # parity of the pipelines with the small UNet
    preset_pipeline_steps: int  # parity with the preset UNet
    step_shapes: tuple[tuple[int, ...], ...]
    step_dtypes: tuple[str, ...]
    step_rounds: int
    step_block_s: float
    resolution: int  # the preset UNet of (c), (d)
    train_batch: int
    train_steps: int
    train_warmup: int
    train_images: int | None
    train_loops: tuple[str, ...]
    sampling_batch: int
    sampling_steps: int
    sampling_rounds: int
    threads: int | None  # torch's CPU threads (None: as set; the trainers: their own choice)


FULL = Sizes(chain_shape=(4, 3, 32, 32), chain_steps=(1000, 50), pipeline_steps=1000, preset_pipeline_steps=50,
             step_shapes=bench_scheduler.SHAPES, step_dtypes=("fp32", "bf16", "fp16"), step_rounds=11,
             step_block_s=0.01,
             resolution=32, train_batch=128, train_steps=30, train_warmup=5, train_images=None,
             train_loops=("ours", "diffusers"), sampling_batch=16, sampling_steps=1000, sampling_rounds=2,
             threads=None)
TINY = Sizes(chain_shape=(2, 1, 8, 8), chain_steps=(50, 7), pipeline_steps=20, preset_pipeline_steps=5,
             step_shapes=((1, 1, 8, 8), (4, 1, 8, 8)), step_dtypes=("fp32", "bf16"), step_rounds=3, step_block_s=0.0,
             resolution=8, train_batch=16, train_steps=2, train_warmup=1, train_images=64,
             train_loops=("ours", "diffusers_loop"), sampling_batch=2, sampling_steps=20, sampling_rounds=1,
             threads=1)


class Report:
    """The tables as they are printed, and the checks that failed."""

    def __init__(self):
        self.failures: list[str] = []

    def section(self, title: str, header: list[str]) -> None:
        print(f"\n## {title}\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)

    def row(self, *cells) -> None:
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)

    def verdict(self, ok: bool, what: str) -> str:
        if not ok:
            self.failures.append(what)
        return "ok" if ok else "FAIL"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for cuDNN convolutions and matmuls on or off inside the block; torch's settings restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def preset_unet(resolution: int, channels: int = 3, learned_variance: bool = False) -> torch.nn.Module:
    """The UNet preset for ``resolution`` (hf_ddpm.presets; 32: the paper's 35.7M CIFAR-10 network), seeded."""
    torch.manual_seed(0)
    return build_unet(resolution, channels, learned_variance=learned_variance).eval()


# ------------------------------------------------------------------------------------------------ (a) parity


def stand_in_network(x: torch.Tensor, t, channels: int) -> torch.Tensor:
    """A smooth, bounded, deterministic output depending on x_t and t (the variance channels, if any, in [−1, 1])."""
    y = torch.tanh(0.6 * x + 0.001 * float(t))
    return y if channels == x.shape[1] else torch.cat([y, -0.5 * y], dim=1)


def seeded_chain(scheduler, steps: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """x_0 from ``steps`` ancestral steps of ``scheduler`` from seeded noise, drawn with a device generator."""
    scheduler.set_timesteps(steps)
    channels = shape[1] * (2 if scheduler.config.variance_type.startswith("learned") else 1)
    x = torch.randn(shape, generator=torch.Generator(device).manual_seed(42), device=device)
    generator = torch.Generator(device).manual_seed(0)
    for t in scheduler.timesteps:
        x = scheduler.step(stand_in_network(x, t, channels), t, x, generator=generator).prev_sample
    return x


def pipeline_images(pipe, device: torch.device, batch_size: int, steps: int):
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=batch_size, num_inference_steps=steps, output_type="np",
                generator=torch.Generator(device).manual_seed(0)).images


def section_parity(report: Report, device: torch.device, sizes: Sizes, workdir: str) -> None:
    report.section(f"(a) Seeded parity with diffusers on {device} (TF32 off)",
                   ["what", "configuration", "steps", "max abs difference", "bound", "verdict"])
    with tf32(False):
        for config in CHAIN_CONFIGS:
            for steps in sizes.chain_steps:
                ours = seeded_chain(DDPMDocScheduler(**config), steps, sizes.chain_shape, device)
                theirs = seeded_chain(DDPMScheduler(**config), steps, sizes.chain_shape, device)
                scale = max(1.0, float(theirs.abs().max()))
                diff = float((ours - theirs).abs().max())
                name = ", ".join(f"{k}={v}" for k, v in config.items()) or "defaults"
                ok = bool(torch.isfinite(ours).all()) and diff <= CHAIN_TOLERANCE * scale
                report.row("scheduler chain", name, steps, f"{diff:.1e}", f"{CHAIN_TOLERANCE * scale:.1e}",
                           report.verdict(ok, f"(a) chain {name}, {steps} steps"))
        for label, unet, steps in [("small UNet (bench_scheduler), batch 4", bench_scheduler.small_unet(),
                                    sizes.pipeline_steps),
                                   (f"{sizes.resolution}×{sizes.resolution} preset UNet, batch 4",
                                    preset_unet(sizes.resolution), sizes.preset_pipeline_steps)]:
            unet = unet.to(device)
            ours = pipeline_images(DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler()), device, 4, steps)
            theirs = pipeline_images(DDPMPipeline(unet=unet, scheduler=DDPMScheduler()), device, 4, steps)
            diff = float(abs(ours - theirs).max())
            report.row("pipeline images", label, steps, f"{diff:.1e}", f"{IMAGE_TOLERANCE:.0e}",
                       report.verdict(diff <= IMAGE_TOLERANCE, f"(a) pipeline {label}"))


# ------------------------------------------------------------------------------------------------ (b) steps


def section_steps(report: Report, device: torch.device, sizes: Sizes, workdir: str) -> None:
    clock = "wall clock, synchronised per block" if device.type == "cuda" else "process CPU time"
    report.section(f"(b) One step on {device}, median µs per call over interleaved blocks ({clock})",
                   ["dtype", "shape", "variance", "clip", "diffusers", "ours", "limit", "diffusers/ours",
                    "ours/limit", "max abs diff of one step"])
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    for dtype_name in sizes.step_dtypes:
        for shape in sizes.step_shapes:
            for variance_type in bench_scheduler.VARIANCE_TYPES:
                for clip_sample in bench_scheduler.CLIP_SAMPLE:
                    contenders, max_diff = bench_scheduler.step_contenders(shape, variance_type, clip_sample, device,
                                                                           DTYPES[dtype_name])
                    timings = bench_scheduler.interleaved_timings(contenders, sizes.step_rounds, sizes.step_block_s,
                                                                  synchronize=sync)
                    t = {name: (timing.wall if sync else timing.cpu) for name, timing in timings.items()}
                    report.row(dtype_name, "×".join(map(str, shape)), variance_type, clip_sample,
                               *(bench_scheduler.us(t[name]) for name in ("diffusers", "ours", "limit")),
                               f"{t['diffusers'] / t['ours']:.2f}×", f"{t['ours'] / t['limit']:.2f}×",
                               f"{max_diff:.1e}")


# ------------------------------------------------------------------------------------------------ (c) training


def training_options(sizes: Sizes, precision: str, workdir: str):
    flags = [f"--resolution={sizes.resolution}", f"--batch_size={sizes.train_batch}", f"--steps={sizes.train_steps}",
             f"--warmup={sizes.train_warmup}", f"--mixed_precision={precision}", f"--workdir={workdir}"]
    flags += [f"--num_images={sizes.train_images}"] if sizes.train_images else []
    flags += [f"--threads={sizes.threads}"] if sizes.threads else []
    return bench_training.build_parser().parse_args(flags)


def section_training(report: Report, device: torch.device, sizes: Sizes, workdir: str) -> None:
    in_process = device.type != "cuda"  # tiny sizes: start-up would dominate
    params = sum(p.numel() for p in preset_unet(sizes.resolution).parameters()) / 1e6
    where = "in this process (peak memory not separable)" if in_process else "each in a fresh process"
    report.section(f"(c) Training throughput on {device}: {sizes.resolution}×{sizes.resolution} preset UNet "
                   f"({params:.1f}M parameters), batch {sizes.train_batch}, {sizes.train_steps} timed steps after "
                   f"{sizes.train_warmup}, {where}",
                   ["loop", "precision", "images/s", "peak memory (MiB)", "ours / this loop"])
    for precision, label in PRECISIONS.items():
        opts = training_options(sizes, precision, workdir)
        results = {}
        for name in sizes.train_loops:
            if in_process:
                AcceleratorState._reset_state(True)
                results[name] = {**bench_training.LOOPS[name][0](opts), "peak_memory_mib": None}
            else:
                results[name] = bench_training.measure(name, opts)
        for name, result in results.items():
            memory = "—" if result["peak_memory_mib"] is None else f"{result['peak_memory_mib']:.0f}"
            ratio = results["ours"]["throughput"] / result["throughput"]
            report.row(bench_training.LOOPS[name][1], label, f"{result['throughput']:.1f}", memory, f"{ratio:.2f}×")


# ------------------------------------------------------------------------------------------------ (d) sampling


def section_sampling(report: Report, device: torch.device, sizes: Sizes, workdir: str) -> None:
    report.section(f"(d) {sizes.sampling_steps}-step sampling on {device}: {sizes.resolution}×{sizes.resolution} "
                   f"preset UNet, batch {sizes.sampling_batch}, seeded device generator, output_type='pt', wall clock "
                   f"to the device's end (best of {sizes.sampling_rounds})",
                   ["pipeline", "UNet dtype", "seconds", "ms per step", "ours / diffusers"])
    for dtype_name in ("fp32", "bf16"):
        unet = preset_unet(sizes.resolution).to(device, DTYPES[dtype_name])
        pipes = {"diffusers `DDPMPipeline`": DDPMPipeline(unet=unet, scheduler=DDPMScheduler()),
                 "`DDPMDocPipeline`": DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler())}
        seconds = {name: [] for name in pipes}
        for pipe in pipes.values():  # warm-up: kernels chosen, memory allocated
            pipe.set_progress_bar_config(disable=True)
            pipe(batch_size=sizes.sampling_batch, num_inference_steps=2, output_type="pt")
        for round_index in range(sizes.sampling_rounds):
            for name in list(pipes) if round_index % 2 == 0 else list(reversed(pipes)):
                synchronize(device)
                start = time.perf_counter()
                pipes[name](batch_size=sizes.sampling_batch, num_inference_steps=sizes.sampling_steps,
                            output_type="pt", generator=torch.Generator(device).manual_seed(0))
                synchronize(device)
                seconds[name].append(time.perf_counter() - start)
        best = {name: min(values) for name, values in seconds.items()}
        for name in pipes:
            report.row(name, dtype_name, f"{best[name]:.2f}", f"{1e3 * best[name] / sizes.sampling_steps:.2f}",
                       f"{best['`DDPMDocPipeline`'] / best[name]:.3f}")


# ------------------------------------------------------------------------------------------------ (e) syncs


def section_syncs(report: Report, device: torch.device, sizes: Sizes, workdir: str) -> None:
    checked = device.type == "cuda"
    report.section(f"(e) Host–device synchronisations on {device}, after a warm-up call, under "
                   "torch.cuda.set_sync_debug_mode('error')", ["path", "per step", "verdict"])
    paths = {  # name: what builds the call (one at a time: each micro-step check has its own Accelerator)
        "scheduler: add_noise, get_velocity, step (per-sample device timesteps; host ints)":
            partial(sync_paths.scheduler_paths, device),
        "training_loss (simple, vlb, hybrid) and bound_term": partial(sync_paths.loss_paths, device),
        f"DDPMDocPipeline loop, steps 2–{sizes.pipeline_steps}":
            partial(sync_paths.pipeline_loop, device, sizes.pipeline_steps),
    }
    for precision, label in PRECISIONS.items():
        for sampler_name, loss_type, variance_type in (("uniform", "simple", "fixed_small"),
                                                       ("importance", "hybrid", "learned_range")):
            unet = preset_unet(8, 1, learned_variance=variance_type.startswith("learned"))
            paths[f"trainer micro-step, {label}, {sampler_name} t, {loss_type}"] = partial(
                sync_paths.trainer_micro_steps, device, unet, precision, sampler_name, loss_type, variance_type)
    for name, build in paths.items():
        try:
            call = build()
            call()  # warm-up: tables and positions copied to the device once, kernels and pinned buffers allocated
            synchronize(device)
            with sync_paths.syncs_are_errors(device):
                call()
            synchronize(device)  # device-side checks (torch._assert_async) report here
            found = "0" if checked else "not checked (CPU)"
        except RuntimeError as error:  # "called a synchronizing CUDA operation", or whatever else went wrong
            found = f"{type(error).__name__}: " + (str(error).strip().splitlines() or [""])[0][:120]
        report.row(name, found, report.verdict(found in ("0", "not checked (CPU)"), f"(e) {name}"))
    if checked:
        per_step, where = sync_paths.trainer_loop_syncs(workdir)
        places = "; ".join(f"{place} ×{count}" for place, count in where.most_common()) or "none"
        report.row(f"Trainer.train loop (information; 'warn' mode): {places}", f"{per_step:.1f}", "info")
    else:
        report.row("Trainer.train loop (information; 'warn' mode)", "not measured (CPU)", "info")


# ------------------------------------------------------------------------------------------------ main

SECTIONS = {"a": section_parity, "b": section_steps, "c": section_training, "d": section_sampling, "e": section_syncs}


def describe(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else bench_scheduler.machine_description()
    return (f"{name}; torch {torch.__version__} (CUDA {torch.version.cuda}), diffusers {diffusers.__version__}; "
            f"TF32: cuDNN {torch.backends.cudnn.allow_tf32}, matmul {torch.backends.cuda.matmul.allow_tf32}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "hf_ddpm_gpu_check"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    sizes = FULL if device.type == "cuda" else TINY
    if sizes.threads:
        torch.set_num_threads(sizes.threads)
    os.makedirs(args.workdir, exist_ok=True)
    report = Report()
    print(f"# hf-ddpm GPU check on {describe(device)}; {'full' if sizes is FULL else 'tiny'} sizes")
    started = time.perf_counter()
    for key in args.sections:
        section_started = time.perf_counter()
        try:
            SECTIONS[key](report, device, sizes, args.workdir)
        except Exception as error:  # noqa: BLE001 — the other sections' tables still come out
            traceback.print_exc()
            report.failures.append(f"({key}) stopped: {type(error).__name__}: {str(error).strip()[:300]}")
        print(f"\n({key}: {time.perf_counter() - section_started:.0f} s)", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; " + (
        "all parity and synchronisation checks passed" if not report.failures else
        f"FAILED: {'; '.join(report.failures)}"))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput (images/s) and peak memory: ``training/train.py``'s loop against diffusers' example loop.

    python benchmarks/bench_training.py                  # the digits default UNet, batch 128, fp32, CPU threads as set
    python benchmarks/bench_training.py --steps 60 --rounds 3 --batch_size 128 --resolution 8

Both loops train the same UNet (the preset for ``--resolution``, ε-prediction with a fixed variance and the plain
MSE objective, so the work per step is the same), from the same seed, on the same images (the digits, or random
images at other resolutions) through the same DataLoader, batch size and precision, under Accelerate, with EMA
and gradient clipping as both scripts do. Each measurement runs in a fresh process (the peak memory is that
process's: peak resident set size on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU); the two loops
alternate, ``--rounds`` times each, and the table reports the median throughput of the timed steps (after
``--warmup`` steps) and the largest peak.

The reference is the loop of diffusers' ``examples/unconditional_image_generation/train_unconditional.py`` as
written in diffusers 0.3x (re-expressed here, step for step): ``torch.randn`` noise and ``torch.randint``
timesteps, ``DDPMScheduler.add_noise``, ``F.mse_loss``, ``accelerator.accumulate``/``backward``/
``clip_grad_norm_``, ``AdamW`` with its defaults, ``EMAModel`` (default, per-tensor updates), a progress bar and
``accelerator.log`` each step. Our loop is ``training/train.py``'s ``train`` function itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(REPO, "training", "train.py")


def load_train_script():
    spec = importlib.util.spec_from_file_location("hf_ddpm_train_script", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def common_flags(opts) -> list[str]:
    flags = ["--variance_type", "fixed_small", "--loss_type", "simple", "--timestep_sampler", "uniform",
             "--train_batch_size", str(opts.batch_size), "--max_train_steps", str(opts.warmup + opts.steps),
             "--mixed_precision", opts.mixed_precision, "--learning_rate", "1e-4", "--lr_warmup_steps", "0",
             "--checkpointing_steps", "0", "--eval_steps", "0", "--save_images_steps", "0",
             "--output_dir", os.path.join(opts.workdir, "unused")]
    if opts.resolution != 8:
        flags += ["--train_data_dir", image_folder(opts), "--resolution", str(opts.resolution)]
    return flags


def image_folder(opts) -> str:
    """A folder of random RGB images at ``--resolution`` (the digits are 8×8 only)."""
    import numpy as np
    from PIL import Image

    folder = os.path.join(opts.workdir, f"images{opts.resolution}", "train")
    if not os.path.isdir(folder):
        os.makedirs(folder)
        rng = np.random.default_rng(0)
        for i in range(max(4 * opts.batch_size, 256)):
            pixels = rng.integers(0, 256, (opts.resolution, opts.resolution, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:05d}.png"))
    return os.path.dirname(folder)


class StepTimer:
    """Wall-clock time of each optimizer step (synchronising the GPU), from a per-step hook."""

    def __init__(self, device):
        self.device = device
        self.times = [time.perf_counter()]

    def tick(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def throughput(self, warmup: int, images_per_step: int) -> float:
        timed = self.times[warmup:]
        return images_per_step * (len(timed) - 1) / (timed[-1] - timed[0])


def run_ours(opts) -> dict:
    """Time ``train`` of training/train.py on the prepared run (the script's own set-up)."""
    script = load_train_script()
    args = script.parse_args(common_flags(opts))
    accelerator = script.build_accelerator(args)
    torch.manual_seed(args.seed)
    run = script.prepare_run(args, accelerator)
    run.start_step = 0
    timer = StepTimer(accelerator.device)
    original = script.periodic_work

    def periodic_work(*a, **k):  # the script's own per-step bookkeeping, plus the clock
        original(*a, **k)
        timer.tick()

    script.periodic_work = periodic_work
    script.train(args, accelerator, run, 0)
    return {"throughput": timer.throughput(opts.warmup, opts.batch_size), "device": str(accelerator.device)}


def run_diffusers_example(opts) -> dict:
    """The loop of diffusers' train_unconditional.py, on the same run set-up."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    script = load_train_script()
    args = script.parse_args(common_flags(opts))
    accelerator = script.build_accelerator(args)
    torch.manual_seed(args.seed)
    data = script.load_image_data(dataset_name=args.dataset_name, train_data_dir=args.train_data_dir,
                                  resolution=args.resolution, seed=args.seed)  # as prepare_run loads it
    model = script.build_unet(data.resolution, data.channels)  # the same preset UNet, same seed
    loader = script.build_dataloader(args, data)
    max_train_steps = args.max_train_steps
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.999),
                                  weight_decay=1e-6, eps=1e-8)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=0,
                                 num_training_steps=max_train_steps)
    ema_model = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    weight_dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.mixed_precision]
    timer = StepTimer(accelerator.device)
    progress_bar = tqdm(total=max_train_steps, disable=not accelerator.is_local_main_process)
    global_step = 0
    for epoch in range(max_train_steps):
        model.train()
        for batch in loader:
            clean_images = batch.to(weight_dtype)
            noise = torch.randn(clean_images.shape, dtype=weight_dtype, device=clean_images.device)
            timesteps = torch.randint(0, 1000, (clean_images.shape[0],), device=clean_images.device).long()
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
            with accelerator.accumulate(model):
                model_output = model(noisy_images, timesteps).sample
                loss = F.mse_loss(model_output.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                ema_model.step(model.parameters())
                progress_bar.update(1)
                global_step += 1
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], "step": global_step,
                    "ema_decay": ema_model.cur_decay_value}
            progress_bar.set_postfix(**logs)
            accelerator.log(logs, step=global_step)
            timer.tick()
            if global_step >= max_train_steps:
                break
        if global_step >= max_train_steps:
            break
    progress_bar.close()
    return {"throughput": timer.throughput(opts.warmup, opts.batch_size), "device": str(accelerator.device)}


def peak_memory_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(opts) -> None:
    result = {"ours": run_ours, "diffusers": run_diffusers_example}[opts.child](opts)
    result["peak_memory_mib"] = peak_memory_mib(result["device"])
    print("RESULT " + json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per loop, alternating")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=8)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "hf_ddpm_bench_training"))
    parser.add_argument("--child", default=None, choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    opts = parser.parse_args()
    os.makedirs(opts.workdir, exist_ok=True)
    if opts.child:
        return child(opts)
    results = {"ours": [], "diffusers": []}
    for round_index in range(opts.rounds):
        for name in ("diffusers", "ours") if round_index % 2 == 0 else ("ours", "diffusers"):
            command = [sys.executable, __file__, "--child", name] + [
                f"--{k}={v}" for k, v in vars(opts).items() if k not in ("child",)
            ]
            output = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
            if output.returncode != 0 or not lines:
                sys.exit(f"{name} failed:\n{output.stderr[-3000:]}")
            results[name].append(json.loads(lines[-1][len("RESULT "):]))
            print(f"round {round_index + 1} {name:9s} {results[name][-1]['throughput']:8.1f} images/s", flush=True)
    rows = {}
    for name, runs in results.items():
        rows[name] = (statistics.median(r["throughput"] for r in runs), max(r["peak_memory_mib"] for r in runs))
    device = results["ours"][0]["device"]
    print(f"\nresolution {opts.resolution}, batch {opts.batch_size}, precision {opts.mixed_precision}, device {device}, "
          f"torch threads {torch.get_num_threads()}, {opts.steps} timed steps × {opts.rounds} rounds")
    print("| loop | images/s (median) | peak memory (MiB) |")
    print("|---|---:|---:|")
    for name, label in (("diffusers", "diffusers train_unconditional.py loop"), ("ours", "training/train.py")):
        print(f"| {label} | {rows[name][0]:.1f} | {rows[name][1]:.0f} |")
    print(f"| ratio (ours / diffusers) | {rows['ours'][0] / rows['diffusers'][0]:.2f}× | "
          f"{rows['ours'][1] / rows['diffusers'][1]:.2f}× |")


if __name__ == "__main__":
    main()

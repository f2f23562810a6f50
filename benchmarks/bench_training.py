"""Training throughput (images/s) and peak memory: ``training/train.py`` against diffusers' example loop.

    python benchmarks/bench_training.py                  # the digits, the default UNet, batch 128, fp32
    python benchmarks/bench_training.py --steps 60 --rounds 3 --batch_size 128 --resolution 8

The data: the digits' train split written as 8-bit PNG files into an image folder (random RGB images at other
resolutions), read by both scripts with centre crops and no flips. Both train the same UNet (the preset for
``--resolution``, ε-prediction with a fixed variance and the plain MSE objective, so the model's work per step is
the same), from the same seed, batch size and precision, under Accelerate, with EMA and gradient clipping as both
scripts do. Each measurement runs in a fresh process (peak memory is that process's: peak resident set size on a
CPU, ``torch.cuda.max_memory_allocated`` on a GPU); the loops alternate, ``--rounds`` times each; the table
reports the median throughput of the timed steps (after ``--warmup`` steps), the largest peak, and the median over
rounds of each round's throughput ratio (robust to slow spells of a shared machine, which hit a round's loops alike).

Three loops:

* ``diffusers`` — diffusers' ``examples/unconditional_image_generation/train_unconditional.py`` re-expressed
  step for step: its data path (``datasets``' imagefolder; each image decoded, resized (bilinear), centre-cropped,
  converted to a tensor and normalised to [−1, 1] by a per-image transform in ``with_transform``, every epoch;
  a shuffled DataLoader with its default 0 workers; torchvision's transforms written with PIL and numpy, to the
  same pixels — grey images stay grey so that the UNet is the same), ``torch.randn`` noise and ``torch.randint``
  timesteps, ``DDPMScheduler.add_noise``, ``F.mse_loss``, ``accelerator.accumulate``/``backward``/
  ``clip_grad_norm_``, ``AdamW`` with its defaults, ``EMAModel`` with its defaults (per-tensor updates), a
  progress bar and ``accelerator.log`` each step.
* ``diffusers_loop`` — the same loop fed by ``training/train.py``'s DataLoader instead: the difference between
  the two rows is the data path alone.
* ``ours`` — ``Trainer.train``, the loop ``training/train.py`` runs, reading the same folder with ``--train_data_dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

def run_config(opts):
    """The run both loops train: ``training/train.py``'s configuration with a fixed variance and L_simple."""
    from hf_ddpm.training.config import RunConfig

    return RunConfig.from_settings(dict(
        variance_type="fixed_small", loss_type="simple", timestep_sampler="uniform", train_batch_size=opts.batch_size,
        max_train_steps=opts.warmup + opts.steps, mixed_precision=opts.mixed_precision, learning_rate=1e-4,
        lr_warmup_steps=0, checkpointing_steps=0, eval_steps=0, save_images_steps=0, center_crop=True,
        output_dir=os.path.join(opts.workdir, "unused"), fourier_periods=(), train_data_dir=image_folder(opts),
        resolution=opts.resolution, num_threads=opts.threads,
    ))


def image_folder(opts) -> str:
    """An image folder with ``train/`` and ``test/``: the digits' splits at resolution 8, else random RGB images."""
    import numpy as np
    from PIL import Image

    from hf_ddpm.data import digits_split

    root = os.path.join(opts.workdir, f"images{opts.resolution}")
    if not os.path.isdir(root):
        rng = np.random.default_rng(0)
        for split in ("train", "test"):
            os.makedirs(os.path.join(root, split))
            if opts.resolution == 8:
                arrays = [image[0] for image in digits_split(split)[0]]
            else:
                count = max(4 * opts.batch_size, 256) if split == "train" else 16
                arrays = rng.integers(0, 256, (count, opts.resolution, opts.resolution, 3), dtype=np.uint8)
            for i, array in enumerate(arrays):
                Image.fromarray(array).save(os.path.join(root, split, f"{i:05d}.png"))
    return root


def example_dataloader(folder: str, resolution: int, channels: int, batch_size: int, cache_dir: str):
    """The data path of diffusers' example: transforms applied per image, per epoch, in ``with_transform``."""
    import datasets
    import numpy as np
    from PIL import Image

    dataset = datasets.load_dataset("imagefolder", data_dir=folder, split="train", cache_dir=cache_dir)
    mode = "L" if channels == 1 else "RGB"

    def augment(image):  # Resize(bilinear) → CenterCrop → ToTensor → Normalize([0.5], [0.5])
        width, height = image.size
        scale = resolution / min(width, height)
        if scale != 1:
            image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
        left, top = (image.size[0] - resolution) // 2, (image.size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        pixels = torch.from_numpy(np.array(image, copy=True))
        pixels = (pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)).contiguous().float().div(255)
        return pixels.sub_(0.5).div_(0.5)

    def transform_images(examples):
        return {"input": [augment(image.convert(mode)) for image in examples["image"]]}

    dataset.set_transform(transform_images)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)


class StepTimer:
    """Wall-clock time (synchronising the GPU) and images seen so far at each optimizer step, from a per-step hook."""

    def __init__(self, device):
        self.device = device
        self.times, self.images = [time.perf_counter()], [0]

    def tick(self, images_seen: int):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        self.images.append(images_seen)

    def throughput(self, warmup: int) -> float:
        return (self.images[-1] - self.images[warmup]) / (self.times[-1] - self.times[warmup])


def run_ours(opts) -> dict:
    """Time ``Trainer.train``, the loop of training/train.py, on its own set-up."""
    from hf_ddpm.training.trainer import Trainer

    class TimedTrainer(Trainer):
        def _periodic_work(self, step, logs):  # the loop's own per-step bookkeeping, plus the clock
            super()._periodic_work(step, logs)
            timer.tick(self.images_seen)

    trainer = TimedTrainer(run_config(opts))
    timer = StepTimer(trainer.accelerator.device)
    trainer.train()
    return {"throughput": timer.throughput(opts.warmup), "device": str(trainer.accelerator.device)}


def run_diffusers_example(opts, own_data: bool = True) -> dict:
    """The loop of diffusers' train_unconditional.py, on the same run set-up; with its own data path, or with
    training/train.py's DataLoader (``own_data=False``)."""
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from hf_ddpm.data import load_image_data
    from hf_ddpm.presets import build_unet
    from hf_ddpm.training.machine import cpu_threads
    from hf_ddpm.training.trainer import training_dataloader

    config = run_config(opts)
    torch.set_num_threads(cpu_threads(config.compute.num_threads).threads)  # as the Trainer does
    accelerator = Accelerator(mixed_precision=config.compute.mixed_precision)
    torch.manual_seed(config.optim.seed)
    data = load_image_data(train_data_dir=config.data.train_data_dir, resolution=config.data.resolution,
                           center_crop=True, seed=config.optim.seed)  # as the Trainer loads it
    model = build_unet(data.resolution, data.channels)  # the same preset UNet, same seed
    batch_size = config.optim.train_batch_size
    if own_data:
        loader = example_dataloader(config.data.train_data_dir, data.resolution, data.channels, batch_size,
                                    os.path.join(opts.workdir, "datasets-cache"))
    else:
        data.train.keep_decoded(config.compute.keep_decoded_mib * 2**20)
        loader = training_dataloader(data.train, config)
    max_train_steps = config.optim.max_train_steps
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.learning_rate, betas=(0.9, 0.999),
                                  weight_decay=1e-6, eps=1e-8)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=0,
                                 num_training_steps=max_train_steps)
    ema_model = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    weight_dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.compute.mixed_precision]
    timer = StepTimer(accelerator.device)
    progress_bar = tqdm(total=max_train_steps, disable=not accelerator.is_local_main_process)
    global_step = images_seen = 0
    for epoch in range(max_train_steps):
        model.train()
        for batch in loader:
            clean_images = (batch["input"] if own_data else batch).to(weight_dtype)
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
            images_seen += clean_images.shape[0]
            timer.tick(images_seen)
            if global_step >= max_train_steps:
                break
        if global_step >= max_train_steps:
            break
    progress_bar.close()
    return {"throughput": timer.throughput(opts.warmup), "device": str(accelerator.device)}


def peak_memory_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


LOOPS = {  # name: (function, table label)
    "diffusers": (run_diffusers_example, "diffusers `train_unconditional.py` (its data path)"),
    "diffusers_loop": (lambda opts: run_diffusers_example(opts, own_data=False),
                       "the same loop, fed by training/train.py's DataLoader"),
    "ours": (run_ours, "`training/train.py`"),
}


def child(opts) -> None:
    result = LOOPS[opts.child][0](opts)
    result["peak_memory_mib"] = peak_memory_mib(result["device"])
    result["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per loop, alternating")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=8)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per loop (default: the trainer's choice, the usable cores)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "hf_ddpm_bench_training"))
    parser.add_argument("--child", default=None, choices=list(LOOPS), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    os.makedirs(opts.workdir, exist_ok=True)
    if opts.child:
        return child(opts)
    results = {name: [] for name in LOOPS}
    for round_index in range(opts.rounds):
        for name in list(LOOPS) if round_index % 2 == 0 else list(reversed(LOOPS)):
            command = [sys.executable, __file__, "--child", name] + [
                f"--{k}={v}" for k, v in vars(opts).items() if k != "child" and v is not None
            ]
            output = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
            if output.returncode != 0 or not lines:
                sys.exit(f"{name} failed:\n{output.stderr[-3000:]}")
            results[name].append(json.loads(lines[-1][len("RESULT "):]))
            print(f"round {round_index + 1} {name:14s} {results[name][-1]['throughput']:8.1f} images/s", flush=True)
    rows = {}
    for name, runs in results.items():
        rows[name] = (statistics.median(r["throughput"] for r in runs), max(r["peak_memory_mib"] for r in runs))
    device = results["ours"][0]["device"]
    threads = results["ours"][0]["threads"]
    print(f"\nresolution {opts.resolution}, batch {opts.batch_size}, precision {opts.mixed_precision}, device {device}, "
          f"torch threads {threads}, {opts.steps} timed steps × {opts.rounds} rounds")
    print("| loop | images/s (median) | peak memory (MiB) |")
    print("|---|---:|---:|")
    for name, (_, label) in LOOPS.items():
        print(f"| {label} | {rows[name][0]:.1f} | {rows[name][1]:.0f} |")
    for name in ("diffusers", "diffusers_loop"):
        paired = sorted(o["throughput"] / r["throughput"] for o, r in zip(results["ours"], results[name]))
        print(f"| ratio: ours / {name} | {statistics.median(paired):.2f}× (rounds: {paired[0]:.2f}–{paired[-1]:.2f}×) | "
              f"{rows['ours'][1] / rows[name][1]:.2f}× |")
    print("ratios: the median over rounds of each round's ratio (the loops of one round run back to back, so a slow "
          "spell of a shared machine affects both)")


if __name__ == "__main__":
    main()

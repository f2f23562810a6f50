#!/usr/bin/env python
"""Train a DDPM (Ho et al. 2020) with 🤗 Accelerate.

    accelerate launch training/train.py                  # the built-in digits: ≤ 10 minutes on 2 CPU cores
    accelerate launch training/train.py --dataset_name cifar10 --resolution 32 --variance_type fixed_large \
        --loss_type simple --timestep_sampler uniform --beta_start 1e-4
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 training/train.py   # 2-process DDP on CPU
    accelerate launch --config_file training/configs/multi_gpu.yaml training/train.py ...

The file reads top to bottom: building the run (model, scheduler, data, optimizer — every check happens here,
before the first step), one training step (Algorithm 1), the loop with its periodic checkpoints, sample grids and
held-out bound estimates, the final evaluation and outputs, ``main``, and the command-line flags. Checkpointing,
data order, evaluation and the model card live in ``hf_ddpm`` where the tests reach them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from types import SimpleNamespace

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, hub
from hf_ddpm.errors import ParameterError
from hf_ddpm.training.checkpointing import StopRequest, check_resumable, resolve_resume, save_checkpoint
from hf_ddpm.data import collate_images, load_image_data
from hf_ddpm.training.distributed import check_process_group
from hf_ddpm.fourier_unet import check_fourier_periods
from hf_ddpm.losses import LOSS_TYPES, TIMESTEP_SAMPLERS, check_objective, make_timestep_sampler, training_loss
from hf_ddpm.presets import build_unet, preset_unet_config
from hf_ddpm.scheduler import LEARNED_VARIANCE_TYPES, PREDICTION_TYPES, VARIANCE_TYPES
from hf_ddpm.schedules import BETA_SCHEDULES
from hf_ddpm.images import sample_grid
from hf_ddpm.training import (
    EpochShuffleSampler,
    TrainingHistory,
    held_out_bound,
    save_loss_plot,
    step_generator,
    write_json,
)
from hf_ddpm.training.config import HubConfig, RunConfig
from hf_ddpm.training.record import RunRecord, RunResults

# The tuned default for the built-in digits (see the README's training results): the flags' defaults.
DIGITS_DEFAULTS = dict(
    beta_start=1e-5, variance_type="learned_range", loss_type="vlb", timestep_sampler="importance",
    train_batch_size=128, max_train_steps=2500, learning_rate=2e-3, lr_scheduler="cosine", lr_warmup_steps=100,
    ema_max_decay=0.999, ema_power=0.75, eval_steps=1000, fourier_periods="2,4,8,16",
)

# ------------------------------------------------------------------------------------------------ building the run


def build_accelerator(args) -> Accelerator:
    """The Accelerator, after checking that the processes the launcher started form one process group."""
    log_with = None if args.logger == "none" else args.logger
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=args.logging_dir),
    )
    check_process_group(accelerator)
    return accelerator


def build_scheduler(args) -> DDPMDocScheduler:
    return DDPMDocScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        beta_start=args.beta_start,
        beta_end=args.beta_end,
        variance_type=args.variance_type,
        prediction_type=args.prediction_type,
    )


def build_dataloader(args, data):
    """Shuffled batches whose order is a function of (seed, epoch); Accelerate shards them over processes. The
    training images are decoded once and kept when they fit in ``--keep_decoded_mib``."""
    if args.keep_decoded_mib > 0:
        data.train.keep_decoded(args.keep_decoded_mib * 2**20)
    return torch.utils.data.DataLoader(
        data.train,
        batch_size=args.train_batch_size,
        sampler=EpochShuffleSampler(len(data.train), args.seed),
        collate_fn=collate_images,
        num_workers=args.dataloader_num_workers,
        drop_last=True,
    )


def build_ema(args, unet):
    if not args.use_ema:
        return None
    return EMAModel(
        unet.parameters(),
        decay=args.ema_max_decay,
        use_ema_warmup=True,
        inv_gamma=args.ema_inv_gamma,
        power=args.ema_power,
        foreach=True,
    )


def run_settings(args, data, unet) -> dict:
    """What a checkpoint must share with the run that resumes it, keyed by flag name."""
    settings = {name: getattr(args, name) for name in RESUME_MUST_MATCH}
    settings["dataset_name"] = data.name
    settings["resolution"] = data.resolution
    settings["model_config_name_or_path"] = (
        f"{args.model_config_name_or_path or 'preset'}: block_out_channels="
        f"{list(unet.config.block_out_channels)}, layers_per_block={unet.config.layers_per_block}, "
        f"out_channels={unet.config.out_channels}"
    )
    return settings


RESUME_MUST_MATCH = (
    "num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "variance_type", "prediction_type",
    "loss_type", "timestep_sampler", "fourier_periods", "use_ema", "train_batch_size", "gradient_accumulation_steps",
    "seed",
)


# ------------------------------------------------------------------------------------------------ one training step


def training_step(args, accelerator, unet, scheduler, timestep_sampler, clean, micro_step):
    """Algorithm 1 on one micro-batch: draw t and ε, noise the images (Eq. 4), predict, return the weighted loss
    and, for the importance sampler, every process's timesteps and bound terms L_t.

    t and ε are drawn for the whole global micro-batch from (seed, micro_step) and each process takes its slice, so
    a run's draws do not depend on how its global batch is split over processes."""
    generator = step_generator(args.seed, micro_step)
    size, rank, processes = clean.shape[0], accelerator.process_index, accelerator.num_processes
    timesteps, weights = timestep_sampler.sample(size * processes, clean.device, generator=generator)
    noise = randn_tensor((size * processes, *clean.shape[1:]), generator=generator, device=clean.device, dtype=clean.dtype)
    mine = slice(rank * size, (rank + 1) * size)
    timesteps, weights, noise = timesteps[mine], weights[mine], noise[mine]
    noisy = scheduler.add_noise(clean, noise, timesteps)
    model_output = unet(noisy, timesteps).sample
    importance = args.timestep_sampler != "uniform"
    per_example, terms = training_loss(scheduler, model_output, clean, noisy, noise, timesteps, args.loss_type,
                                       bound_terms=importance)
    loss = (per_example * weights).mean()
    if not importance:
        return loss, None
    return loss, (accelerator.gather(timesteps), accelerator.gather(terms.float()))


# ------------------------------------------------------------------------------------------------ the loop


def train(args, accelerator, run, start_step: int) -> int:
    """Optimizer steps from ``start_step`` to ``run.max_train_steps``; returns the last step done."""
    unet, optimizer, lr_scheduler, loader = run.unet, run.optimizer, run.lr_scheduler, run.loader
    first_epoch, step_in_epoch = divmod(start_step, run.steps_per_epoch)
    skip = step_in_epoch * args.gradient_accumulation_steps  # micro-batches of the epoch already done
    progress = tqdm(
        total=run.max_train_steps, initial=start_step, desc="training", unit="step",
        disable=not accelerator.is_local_main_process,
    )
    step = start_step
    with StopRequest() as stop:
        for epoch in range(first_epoch, run.num_epochs):
            run.data.train.set_epoch(epoch)
            loader.set_epoch(epoch)
            batches = accelerator.skip_first_batches(loader, skip) if epoch == first_epoch and skip else loader
            unet.train()
            for batch_index, clean in enumerate(batches, start=skip if epoch == first_epoch else 0):
                micro_step = epoch * len(loader) + batch_index
                run.images_seen += clean.shape[0]
                with accelerator.accumulate(unet):
                    loss, importance = training_step(
                        args, accelerator, unet, run.scheduler, run.timestep_sampler, clean, micro_step
                    )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                if importance is not None:
                    run.timestep_sampler.update(*importance)
                if not accelerator.sync_gradients:
                    continue
                step += 1
                if run.ema is not None:
                    run.ema.step(unet.parameters())
                mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
                run.history.append(step, mean_loss)
                logs = {"loss": mean_loss, "lr": lr_scheduler.get_last_lr()[0]}
                progress.update(1)
                progress.set_postfix(loss=f"{run.history.recent_mean(50):.4f}", lr=f"{logs['lr']:.2e}")
                periodic_work(args, accelerator, run, step, logs)
                accelerator.log(logs, step=step)
                if stop.agreed(accelerator):
                    progress.close()
                    save_checkpoint(accelerator, args.output_dir, step, run.settings, args.checkpoints_total_limit)
                    accelerator.print(f"stopped on request at step {step}; checkpoint written, resume with "
                                      f"--resume_from_checkpoint latest")
                    raise KeyboardInterrupt
                if step >= run.max_train_steps:
                    break
            skip = 0
            if step >= run.max_train_steps:
                break
    progress.close()
    return step


def periodic_work(args, accelerator, run, step, logs) -> None:
    """Checkpoints every ``--checkpointing_steps``, sample grids every ``--save_images_steps``, held-out bound
    estimates every ``--eval_steps`` (logged into ``logs``)."""
    if args.checkpointing_steps and step % args.checkpointing_steps == 0 and step < run.max_train_steps:
        save_checkpoint(accelerator, args.output_dir, step, run.settings, args.checkpoints_total_limit)
        if run.pusher is not None and accelerator.is_main_process:  # --push_every_checkpoint, in the background
            with ema_weights(accelerator, run) as unet:
                run.pusher.push_pipeline(pipeline_for(unet, run.scheduler), step)
    sample_now = args.save_images_steps and step % args.save_images_steps == 0 and step < run.max_train_steps
    eval_now = args.eval_steps and step % args.eval_steps == 0 and step < run.max_train_steps
    if accelerator.is_main_process and (sample_now or eval_now):
        with ema_weights(accelerator, run) as unet:
            if sample_now:
                _, grid = sample_grid(pipeline_for(unet, run.scheduler), args.num_samples, args.num_inference_steps, args.seed)
                os.makedirs(os.path.join(args.output_dir, "samples"), exist_ok=True)
                grid.save(os.path.join(args.output_dir, "samples", f"step-{step:06d}.png"))
            if eval_now:
                summary = held_out_bound(
                    unet, run.scheduler, run.eval_images, num_timesteps=args.eval_timesteps, seed=args.seed
                )
                logs.update(eval_bits_per_dim=summary.bits_per_dim, eval_bits_per_dim_stderr=summary.standard_error)
                run.history.evaluations.append({"step": step, **logs})
                tqdm.write(f"step {step}: held-out bound ≈ {summary.bits_per_dim:.4f} ± "
                           f"{summary.standard_error:.4f} bits/dim ({summary.num_timesteps} timesteps)")
    if sample_now or eval_now:
        accelerator.wait_for_everyone()  # the other processes wait for the main one's evaluation


class ema_weights:
    """Context: the unwrapped UNet with the EMA weights in it, computing in float32 like the saved pipeline (the raw
    weights, and under --mixed_precision the autocast forward Accelerate set on the instance, are restored on exit)."""

    def __init__(self, accelerator, run):
        self.unet = accelerator.unwrap_model(run.unet)
        self.ema = run.ema

    def __enter__(self):
        self.unet.eval()
        self.autocast_forward = self.unet.__dict__.pop("forward", None)  # None without mixed precision
        if self.ema is not None:
            self.ema.store(self.unet.parameters())
            self.ema.copy_to(self.unet.parameters())
        return self.unet

    def __exit__(self, *exc):
        if self.ema is not None:
            self.ema.restore(self.unet.parameters())
        if self.autocast_forward is not None:
            self.unet.forward = self.autocast_forward
        self.unet.train()


# ------------------------------------------------------------------------------------------------ the end of a run


def finish(args, accelerator, run, step: int, started: float) -> dict:
    """On the main process: save the EMA pipeline, the final sample grid, the held-out bound, the loss plot,
    metrics JSON and the model card. Returns the metrics."""
    train_seconds = time.time() - started
    if not accelerator.is_main_process:
        return {}
    metrics = {}
    with ema_weights(accelerator, run) as unet:
        pipeline = pipeline_for(unet, run.scheduler)
        pipeline.save_pretrained(args.output_dir)
        sampling_started = time.time()
        samples, grid = sample_grid(pipeline, args.num_samples, args.num_inference_steps, args.seed)
        grid.save(os.path.join(args.output_dir, "samples.png"))
        metrics["sampling_seconds"] = time.time() - sampling_started
        eval_started = time.time()
        summary = held_out_bound(
            unet, run.scheduler, run.eval_images, num_timesteps=args.final_eval_timesteps, seed=args.seed
        )
        metrics["eval_seconds"] = time.time() - eval_started
    save_loss_plot(run.history, os.path.join(args.output_dir, "loss.png"))
    full = summary.num_timesteps == summary.num_train_timesteps
    metrics.update(
        test_bits_per_dim=summary.bits_per_dim,
        test_bits_per_dim_stderr=summary.standard_error,
        test_bits_per_dim_timesteps=summary.num_timesteps,
        test_bits_per_dim_method="full bound over all timesteps" if full else
        f"unbiased estimate from {summary.num_timesteps} timesteps: the {summary.num_timesteps // 2} smallest exactly, "
        f"{summary.num_timesteps - summary.num_timesteps // 2} drawn uniformly without replacement from the rest",
        test_bound=summary.to_dict(),
        test_split=f"{run.data.name}, {run.data.eval_split} ({len(run.eval_images)} images)",
        num_test_images=len(run.eval_images),
        final_train_loss=run.history.recent_mean(100),
        train_loss_history={"steps": run.history.steps, "losses": run.history.losses},
        global_step=step,
        global_batch_size=args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        num_processes=accelerator.num_processes,
        images_seen=run.images_seen,
        train_seconds=train_seconds,
        eval_log=run.history.evaluations,
        num_samples=args.num_samples,
        num_inference_steps=args.num_inference_steps,
    )
    metrics.update(sample_metrics(samples, run))
    metrics["total_seconds"] = time.time() - started + run.setup_seconds
    write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
    write_card(args, accelerator, metrics, step, train_seconds)
    print(summary.describe())
    print(f"held-out bound: {summary.bits_per_dim:.4f} ± {summary.standard_error:.4f} bits/dim "
          f"({metrics['test_bits_per_dim_method']}); outputs in {args.output_dir}")
    return metrics


def sample_metrics(samples, run) -> dict:
    """Sample-quality numbers of the final grid against the held-out images (``hf_ddpm.metrics``), if available."""
    try:
        from hf_ddpm.metrics import sample_quality
    except ImportError:
        return {}
    reference = ((run.eval_images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    quality = sample_quality(samples, reference)
    return {"sample_quality": quality}


def write_card(args, accelerator, metrics, step, train_seconds) -> None:
    """The run record (training_run.json, metrics.json) and the model card README.md rendered from it."""
    processes = accelerator.num_processes
    on_gpu = torch.cuda.is_available()
    hardware = (f"{processes} × {torch.cuda.get_device_name(0)}" if on_gpu else
                f"CPU ({os.cpu_count()} cores), {processes} process{'es' if processes != 1 else ''}")
    results = RunResults(**metrics, threads_per_process=0 if on_gpu else torch.get_num_threads(), hardware=hardware)
    record = RunRecord(RunConfig.from_settings(vars(args)), results, images={"samples": "samples.png", "loss": "loss.png"})
    record.save(args.output_dir)
    hub.write_model_card(args.output_dir, record)


def push(args, run) -> None:
    """Wait for checkpoint pushes in flight, then push the output folder if ``--push_to_hub`` (main process)."""
    if run.pusher is not None:
        for error in run.pusher.close():
            print(f"checkpoint push failed: {error}", file=sys.stderr)
    if args.push_to_hub:
        try:
            url = hub.push_output_folder(args.output_dir, args.hub_model_id, token=args.hub_token,
                                         private=args.hub_private_repo)
        except hub.HubPushError as error:
            sys.exit(f"--push_to_hub: {error} (the local output in {args.output_dir} is complete)")
        print(f"pushed to {url}")


# ------------------------------------------------------------------------------------------------ main


class Run(SimpleNamespace):
    """Everything the loop touches, built (and checked) before the first step."""


def prepare_run(args, accelerator) -> Run:
    run = Run()
    run.scheduler = build_scheduler(args)  # ValueError naming a bad schedule / variance / prediction type
    check_objective(args.variance_type, args.loss_type)
    if args.resolution is not None and args.model_config_name_or_path is None:
        preset_unet_config(args.resolution)  # a resolution without a preset fails before the data is read
    run.data = load_image_data(
        dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir, image_column=args.image_column, resolution=args.resolution,
        center_crop=args.center_crop, random_flip=args.random_flip, validation_fraction=args.validation_fraction,
        seed=args.seed, cache_dir=args.cache_dir, max_eval_images=args.max_eval_images,
    )
    learned = args.variance_type in LEARNED_VARIANCE_TYPES
    unet = build_unet(run.data.resolution, run.data.channels, learned_variance=learned,
                      config_name_or_path=args.model_config_name_or_path, fourier_periods=args.fourier_periods)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    run.settings = run_settings(args, run.data, unet)
    loader = build_dataloader(args, run.data)
    if args.keep_decoded_mib > 0 and run.data.train.decoded is None:
        accelerator.print(f"the training images exceed --keep_decoded_mib {args.keep_decoded_mib}: decoding per item")
    if len(loader) < accelerator.num_processes * args.gradient_accumulation_steps:
        raise ValueError(
            f"--train_batch_size {args.train_batch_size} × {accelerator.num_processes} process(es) × "
            f"--gradient_accumulation_steps {args.gradient_accumulation_steps} exceeds the {len(run.data.train)} "
            "training images: not one optimizer step per epoch"
        )
    optimizer = torch.optim.AdamW(
        unet.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon, fused=True,
    )
    batches_per_epoch = math.ceil(len(loader) / accelerator.num_processes)  # per process, as prepared below
    run.steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)  # the last may be short
    run.max_train_steps = args.max_train_steps or args.num_epochs * run.steps_per_epoch
    run.num_epochs = math.ceil(run.max_train_steps / run.steps_per_epoch)
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=run.max_train_steps * accelerator.num_processes,
    )
    run.ema = build_ema(args, unet)
    run.timestep_sampler = make_timestep_sampler(args.timestep_sampler, args.num_train_timesteps)
    run.history = TrainingHistory()
    run.images_seen = 0  # by this process, in this session
    run.unet, run.optimizer, run.loader, run.lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    for state in (run.ema, run.timestep_sampler, run.history):
        if state is not None:
            accelerator.register_for_checkpointing(state)
    run.eval_images = run.data.eval.tensor().to(accelerator.device)
    run.pusher = None
    if args.push_every_checkpoint and accelerator.is_main_process:
        run.pusher = hub.CheckpointPusher(args.hub_model_id, token=args.hub_token, private=args.hub_private_repo)
    return run


def pipeline_for(unet, scheduler) -> DDPMDocPipeline:
    pipeline = DDPMDocPipeline(unet=unet, scheduler=DDPMDocScheduler.from_config(scheduler.config))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def resume(args, accelerator, run) -> int:
    """Load the checkpoint named by ``--resume_from_checkpoint`` (if any); return the step to continue from."""
    path = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    if path is None:
        if args.resume_from_checkpoint is not None:
            accelerator.print(f"no checkpoint in {args.output_dir} yet; starting from step 0")
        return 0
    step = check_resumable(path, run.settings)
    try:
        accelerator.load_state(path)
    except (RuntimeError, KeyError, FileNotFoundError) as error:
        raise ValueError(f"--resume_from_checkpoint {path!r} could not be loaded into this run: {error}") from error
    accelerator.print(f"resumed from {path} at step {step}")
    return step


def tracker_config(args) -> dict:
    """The flags as the tracker's hyper-parameters: scalars as they are, lists as text (TensorBoard's hparams take
    nothing else), the Hub token left out."""
    return {name: value if isinstance(value, (int, float, str, bool)) else str(value)
            for name, value in vars(args).items() if value is not None and name != "hub_token"}


def main(argv: list[str] | None = None) -> dict:
    started = time.time()
    args = parse_args(argv)
    accelerator = build_accelerator(args)
    set_seed(args.seed)  # the UNet's initial weights
    run = prepare_run(args, accelerator)
    run.start_step = resume(args, accelerator, run)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        if args.logger != "none":  # TensorBoard events and wandb's run folder both go under --logging_dir
            os.makedirs(args.logging_dir, exist_ok=True)
            accelerator.init_trackers("hf-ddpm", config=tracker_config(args), init_kwargs={"wandb": {"dir": args.logging_dir}})
    run.setup_seconds = time.time() - started
    accelerator.print(f"{run.data.name}: {len(run.data.train)} training images ({run.data.resolution}px, "
                      f"{run.data.channels} channel(s)); {sum(p.numel() for p in run.unet.parameters()) / 1e6:.2f}M "
                      f"parameters; {run.max_train_steps} steps of {args.train_batch_size} × "
                      f"{accelerator.num_processes} process(es) × {args.gradient_accumulation_steps} images")
    train_started = time.time()
    try:
        step = train(args, accelerator, run, run.start_step)
    except KeyboardInterrupt:
        accelerator.end_training()
        sys.exit(130)
    if args.checkpointing_steps:
        save_checkpoint(accelerator, args.output_dir, step, run.settings, args.checkpoints_total_limit)
    run.images_seen = int(accelerator.reduce(torch.tensor(run.images_seen, device=accelerator.device), "sum"))
    metrics = finish(args, accelerator, run, step, train_started)
    if accelerator.is_main_process:
        push(args, run)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return metrics


# ------------------------------------------------------------------------------------------------ flags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data (default: scikit-learn's digits, held-out split i % 5 == 4)")
    data.add_argument("--dataset_name", default=None, help="a Hub dataset id or a local dataset folder; 'digits' = the built-in digits")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--train_data_dir", default=None, help="an image folder (datasets' imagefolder)")
    data.add_argument("--image_column", default=None, help="the image column (default: the only Image column)")
    data.add_argument("--resolution", type=int, default=None, help="image size (default: the data's own, 8 for the digits)")
    data.add_argument("--center_crop", action="store_true", help="centre-crop (default: random crop)")
    data.add_argument("--random_flip", action="store_true")
    data.add_argument("--validation_fraction", type=float, default=0.1, help="held out when the dataset has no test/validation split")
    data.add_argument("--max_eval_images", type=int, default=None, help="evaluate the bound on at most this many held-out images")
    data.add_argument("--cache_dir", default=None)
    data.add_argument("--dataloader_num_workers", type=int, default=0)
    data.add_argument("--keep_decoded_mib", type=int, default=2048,
                      help="decode the training images once and keep them if they fit in this many MiB (0: decode per item)")

    model = p.add_argument_group("model and diffusion process")
    model.add_argument("--model_config_name_or_path", default=None, help="a UNet2DModel config (default: the preset for the resolution)")
    model.add_argument("--fourier_periods", default=DIGITS_DEFAULTS["fourier_periods"],
                       help="comma-separated periods (8-bit units) of the Fourier features the UNet reads; 'none': a plain UNet2DModel")
    model.add_argument("--num_train_timesteps", type=int, default=1000)
    model.add_argument("--beta_schedule", default="linear", choices=BETA_SCHEDULES)
    model.add_argument("--beta_start", type=float, default=DIGITS_DEFAULTS["beta_start"])
    model.add_argument("--beta_end", type=float, default=0.02)
    model.add_argument("--variance_type", default=DIGITS_DEFAULTS["variance_type"], choices=VARIANCE_TYPES)
    model.add_argument("--prediction_type", default="epsilon", choices=PREDICTION_TYPES)
    model.add_argument("--loss_type", default=DIGITS_DEFAULTS["loss_type"], choices=LOSS_TYPES)
    model.add_argument("--timestep_sampler", default=DIGITS_DEFAULTS["timestep_sampler"], choices=TIMESTEP_SAMPLERS)

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--train_batch_size", type=int, default=DIGITS_DEFAULTS["train_batch_size"], help="per process")
    opt.add_argument("--num_epochs", type=int, default=100, help="used when --max_train_steps is not given")
    opt.add_argument("--max_train_steps", type=int, default=DIGITS_DEFAULTS["max_train_steps"], help="optimizer steps (overrides --num_epochs)")
    opt.add_argument("--gradient_accumulation_steps", type=int, default=1)
    opt.add_argument("--learning_rate", type=float, default=DIGITS_DEFAULTS["learning_rate"])
    opt.add_argument("--lr_scheduler", default=DIGITS_DEFAULTS["lr_scheduler"],
                     choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"])
    opt.add_argument("--lr_warmup_steps", type=int, default=DIGITS_DEFAULTS["lr_warmup_steps"])
    opt.add_argument("--adam_beta1", type=float, default=0.9)
    opt.add_argument("--adam_beta2", type=float, default=0.999)
    opt.add_argument("--adam_weight_decay", type=float, default=0.0)
    opt.add_argument("--adam_epsilon", type=float, default=1e-8)
    opt.add_argument("--max_grad_norm", type=float, default=1.0, help="0 disables clipping")
    opt.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    opt.add_argument("--ema_max_decay", type=float, default=DIGITS_DEFAULTS["ema_max_decay"])
    opt.add_argument("--ema_inv_gamma", type=float, default=1.0)
    opt.add_argument("--ema_power", type=float, default=DIGITS_DEFAULTS["ema_power"])
    opt.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    opt.add_argument("--gradient_checkpointing", action="store_true")

    out = p.add_argument_group("outputs, checkpoints and evaluation")
    out.add_argument("--output_dir", default="ddpm-digits")
    out.add_argument("--checkpointing_steps", type=int, default=500, help="a checkpoint every N optimizer steps and at the end (0: none)")
    out.add_argument("--checkpoints_total_limit", type=int, default=2)
    out.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder, or 'latest'")
    out.add_argument("--save_images_steps", type=int, default=0, help="a sample grid every N steps (0: only at the end)")
    out.add_argument("--eval_steps", type=int, default=DIGITS_DEFAULTS["eval_steps"], help="a held-out bound estimate every N steps (0: only at the end)")
    out.add_argument("--eval_timesteps", type=int, default=100, help="timesteps of each estimate during training")
    out.add_argument("--final_eval_timesteps", type=int, default=None, help="timesteps of the final bound (default: all T)")
    out.add_argument("--num_samples", type=int, default=64, help="images in each sample grid")
    out.add_argument("--num_inference_steps", type=int, default=1000, help="ancestral steps per sample")
    out.add_argument("--logger", default="none", choices=["none", "tensorboard", "wandb"])
    out.add_argument("--logging_dir", default="logs", help="relative to --output_dir")
    group = p.add_argument_group("Hugging Face Hub")
    group.add_argument("--push_to_hub", action="store_true",
                       help="Push the final pipeline, model card and sample grids to the Hub in one commit.")
    group.add_argument("--hub_model_id", type=str, default=None,
                       help="Repo to push to: 'user/name', 'org/name' or 'name' (your namespace). Created if missing.")
    group.add_argument("--hub_token", type=str, default=None,
                       help="Hub token (default: $HF_TOKEN or the token saved by `hf auth login`).")
    group.add_argument("--hub_private_repo", action="store_true", help="Create the repo as private.")
    group.add_argument("--push_every_checkpoint", action="store_true",
                       help="Also push the (EMA) pipeline at every checkpoint, in the background (needs --push_to_hub).")
    args = p.parse_args(argv)
    check_args(p, args)
    args.logging_dir = os.path.join(args.output_dir, args.logging_dir)
    if args.train_data_dir is not None:  # recorded in training_run.json: `hf-ddpm evaluate` must find it from anywhere
        args.train_data_dir = os.path.abspath(os.path.expanduser(args.train_data_dir))
    try:  # contradictory or malformed Hub flags, before any work or network call
        HubConfig(push_to_hub=args.push_to_hub, hub_model_id=args.hub_model_id, hub_token=args.hub_token,
                  hub_private_repo=args.hub_private_repo, push_every_checkpoint=args.push_every_checkpoint)
    except ParameterError as error:
        raise ValueError(error.with_name(f"--{error.parameter}")) from None
    return args


def check_args(parser, args) -> None:
    """Flag values that contradict each other or cannot work: a parser error naming the flag, before any work."""
    positive = ("train_batch_size", "gradient_accumulation_steps", "num_epochs", "num_train_timesteps",
                "num_inference_steps", "num_samples", "eval_timesteps")
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    for name in ("max_train_steps", "checkpoints_total_limit", "final_eval_timesteps", "resolution", "max_eval_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be ≥ 1, got {value}")
    for name in ("checkpointing_steps", "save_images_steps", "eval_steps", "lr_warmup_steps", "dataloader_num_workers",
                 "keep_decoded_mib"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be ≥ 0, got {getattr(args, name)}")
    if args.dataset_name is not None and args.train_data_dir is not None:
        parser.error("give --dataset_name or --train_data_dir, not both")
    try:
        args.fourier_periods = [] if args.fourier_periods == "none" else list(
            check_fourier_periods(args.fourier_periods.split(","))
        )
    except ValueError:
        parser.error(f"--fourier_periods must be 'none' or comma-separated positive numbers, got {args.fourier_periods!r}")
    if args.num_inference_steps > args.num_train_timesteps:
        parser.error(f"--num_inference_steps {args.num_inference_steps} exceeds --num_train_timesteps {args.num_train_timesteps}")
    for name in ("eval_timesteps", "final_eval_timesteps"):
        if getattr(args, name) is not None and getattr(args, name) < 4:
            parser.error(f"--{name} must be ≥ 4 (half exact, half drawn: its standard error needs two drawn)")
    if args.loss_type == "simple" and args.variance_type in LEARNED_VARIANCE_TYPES:
        parser.error(f"--loss_type simple does not train the variance of --variance_type {args.variance_type}; "
                     "use --loss_type hybrid or vlb, or a fixed --variance_type")
    if args.loss_type == "hybrid" and args.variance_type not in LEARNED_VARIANCE_TYPES:
        parser.error(f"--loss_type hybrid trains a learned variance but --variance_type {args.variance_type} is fixed; "
                     "use --variance_type learned or learned_range, or --loss_type simple")
    if not 0.0 < args.ema_max_decay < 1.0:
        parser.error(f"--ema_max_decay must lie in (0, 1), got {args.ema_max_decay}")
    if args.mixed_precision == "fp16" and not torch.cuda.is_available():
        parser.error("--mixed_precision fp16 needs a GPU; use bf16 or no on a CPU")
    if args.logger != "none":
        from accelerate.utils import is_tensorboard_available, is_wandb_available

        if not {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}[args.logger]():
            parser.error(f"--logger {args.logger}: the package is not installed (pip install {args.logger})")


if __name__ == "__main__":
    main()

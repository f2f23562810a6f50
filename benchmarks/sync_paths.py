"""The paths benchmarks/gpu_check.py (e) runs under ``torch.cuda.set_sync_debug_mode``: each builder returns a call
that runs one path (after a warm-up call, the checked one); and the count of the trainer loop's synchronisations."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import Counter

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from diffusers.training_utils import EMAModel

import bench_scheduler
import bench_training
from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, training_loss
from hf_ddpm.likelihood import bound_term
from hf_ddpm.losses import make_timestep_sampler
from hf_ddpm.training.step import training_step
from hf_ddpm.training.trainer import Trainer


@contextlib.contextmanager
def syncs_are_errors(device: torch.device):
    """On CUDA, every synchronising call raises RuntimeError inside the block; elsewhere nothing is checked."""
    if device.type != "cuda":
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def scheduler_paths(device: torch.device):
    """add_noise / get_velocity / step with per-sample device timesteps and with host ints, for two configurations."""
    shape, calls = (4, 3, 16, 16), []
    for config in (dict(), dict(variance_type="learned_range", prediction_type="v_prediction")):
        s = DDPMDocScheduler(**config)
        s.set_timesteps(50)
        channels = shape[1] * (2 if s.config.variance_type.startswith("learned") else 1)
        x0 = torch.rand(shape, device=device) * 2 - 1
        noise, out = torch.randn(shape, device=device), torch.randn(shape[0], channels, *shape[2:], device=device)
        t_train, t_chain = torch.tensor([0, 5, 500, 999], device=device), s.timesteps[[0, 10, 20, 49]].to(device)
        g = torch.Generator(device).manual_seed(0)

        def call(s=s, x0=x0, noise=noise, out=out, t_train=t_train, t_chain=t_chain, g=g):
            x_t = s.add_noise(x0, noise, t_train)
            s.get_velocity(x0, noise, t_train)
            s.step(out, t_chain, x_t, generator=g)  # per-sample timesteps on the device
            s.add_noise(x0, noise, 17)
            s.step(out, int(s.timesteps[10]), x_t, generator=g)  # a host int, as the pipeline passes them
            s.step(out, 0, x_t)
        calls.append(call)
    return lambda: [call() for call in calls]


def loss_paths(device: torch.device):
    """training_loss of every objective (with the bound terms) and bound_term, at per-sample device timesteps."""
    shape, calls = (4, 3, 16, 16), []
    for variance_type, loss_types in (("fixed_small", ("simple", "vlb")), ("learned_range", ("vlb", "hybrid"))):
        s = DDPMDocScheduler(variance_type=variance_type)
        channels = shape[1] * (2 if variance_type.startswith("learned") else 1)
        x0, noise = torch.rand(shape, device=device) * 2 - 1, torch.randn(shape, device=device)
        out = torch.randn(shape[0], channels, *shape[2:], device=device).tanh()
        t = torch.tensor([0, 1, 500, 999], device=device)

        def call(s=s, x0=x0, noise=noise, out=out, t=t, loss_types=loss_types):
            x_t = s.add_noise(x0, noise, t)
            for loss_type in loss_types:
                training_loss(s, out, x0, x_t, noise, t, loss_type, bound_terms=True)
            bound_term(s, out, x0, x_t, t)
        calls.append(call)
    return lambda: [call() for call in calls]


def pipeline_loop(device: torch.device, steps: int):
    """A DDPMDocPipeline call whose steps after the first run under the check (switched on and off by the step
    callback: the draw of the initial noise, the tables' first copy to the device and the NaN check after the loop
    are once per call, outside it)."""
    pipe = DDPMDocPipeline(unet=bench_scheduler.small_unet().to(device), scheduler=DDPMDocScheduler())
    pipe.set_progress_bar_config(disable=True)

    def switch(p, i, t, kwargs):  # after step i: on for the steps that follow, off after the last
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error" if i < steps - 1 else "default")
        return {}

    def call():
        try:
            pipe(batch_size=2, num_inference_steps=steps, output_type="pt", callback_on_step_end=switch,
                 generator=torch.Generator(device).manual_seed(0))
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    return call


def trainer_micro_steps(device: torch.device, unet: torch.nn.Module, precision: str, sampler_name: str, loss_type: str,
                        variance_type: str):
    """Micro-steps of ``unet`` (1 channel, 8×8) in the order Trainer.train runs them: training_step, backward, gradient
    clipping, fused AdamW, zero_grad, the importance sampler's update, the foreach EMA update (not its loss history's
    ``.item()``). The sampler's wait for its copy at the next ``sample`` is an event wait, which
    ``set_sync_debug_mode`` does not flag: see the README on where to call ``update``."""
    AcceleratorState._reset_state(True)
    accelerator = Accelerator(mixed_precision=precision, cpu=device.type == "cpu")
    unet = unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=True)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, foreach=True)
    ema.to(accelerator.device)
    scheduler, sampler = DDPMDocScheduler(variance_type=variance_type), make_timestep_sampler(sampler_name, 1000)
    importance = sampler_name == "importance"
    if importance:  # a full history: the checked steps sample t from it
        sampler.update(torch.arange(1000).repeat(10), torch.rand(10_000) + 0.5)
    clean = torch.rand(16, 1, 8, 8, device=accelerator.device) * 2 - 1
    counter = iter(range(10**6))

    def micro_step():
        result = training_step(accelerator, unet, scheduler, sampler, clean, seed=0, micro_step=next(counter),
                               loss_type=loss_type, importance=importance)
        accelerator.backward(result.loss)
        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if importance:
            sampler.update(result.timesteps, result.bound_terms)
        ema.step(unet.parameters())
    return lambda: [micro_step() for _ in range(3)]


def trainer_loop_syncs(workdir: str) -> tuple[float, Counter]:
    """Trainer.train on CUDA (bench_training's run: 8×8 preset, 64 digits, uniform t, L_simple, 6 steps) with
    synchronising calls made warnings from the end of its first step to the end of its last: (syncs per step, where
    they come from)."""
    opts = bench_training.build_parser().parse_args(["--resolution=8", "--batch_size=16", "--steps=5", "--warmup=1",
                                                     "--num_images=64", "--mixed_precision=no", f"--workdir={workdir}"])
    steps = opts.steps + opts.warmup

    class CountingTrainer(Trainer):
        def _periodic_work(self, step, logs):
            super()._periodic_work(step, logs)
            torch.cuda.set_sync_debug_mode("warn" if step < steps else "default")

    AcceleratorState._reset_state(True)
    trainer = CountingTrainer(bench_training.run_config(opts))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer.train()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchronizing" in str(w.message)]
    where = Counter(f"{os.path.relpath(w.filename)}:{w.lineno}" for w in syncs)
    return len(syncs) / (steps - 1), where

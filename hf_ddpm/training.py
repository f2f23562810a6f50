"""The reusable parts of ``training/train.py``: data order, run records, and evaluation during training.

* :func:`step_generator` — the timesteps and noise of a micro-batch are a pure function of (seed, micro-step).
* :class:`EpochShuffleSampler` — the order of an epoch is a pure function of (seed, epoch), so a resumed run (with
  Accelerate's ``skip_first_batches``) sees exactly the batches an uninterrupted run would.
* :class:`TrainingHistory` — the per-step training loss and the evaluations, saved in checkpoints; the loss is
  plotted by :func:`save_loss_plot`.
* :func:`held_out_bound` — the bound on held-out images in bits/dim, over all T timesteps or an unbiased estimate
  from K of them (the smallest exactly, a uniform subset of the rest), with its standard error
  (:func:`hf_ddpm.likelihood.estimate_bound` under a stratified :class:`~hf_ddpm.timestep_plan.TimestepPlan`).
* :func:`sample_grid` — draw images with the pipeline and lay them out as one PNG-ready grid.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from .images import make_grid
from .likelihood import estimate_bound
from .timestep_plan import TimestepPlan
from .variational_bound import VariationalBound


def seeded_generator(*keys: int, device="cpu") -> torch.Generator:
    """A torch generator seeded from the integers ``keys`` (through numpy's SeedSequence, so nearby keys give
    unrelated streams)."""
    (state,) = np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)
    return torch.Generator(device=device).manual_seed(int(state))


def step_generator(seed: int, micro_step: int, device="cpu") -> torch.Generator:
    """The generator of one global micro-batch's timesteps and noise: a pure function of (seed, micro_step), so a
    resumed run draws exactly what an uninterrupted one would, without saving generator states."""
    return seeded_generator(seed, micro_step, device=device)


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A random permutation of ``range(num_items)`` per epoch, drawn from ``(seed, epoch)`` alone.

    Call :meth:`set_epoch` before each epoch (Accelerate's prepared DataLoader forwards its ``set_epoch`` here)."""

    def __init__(self, num_items: int, seed: int):
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        return iter(torch.randperm(self.num_items, generator=seeded_generator(self.seed, self.epoch)).tolist())


class TrainingHistory:
    """The mean training loss of every optimizer step (over all processes) and the held-out evaluations made during
    training, checkpointed with the run so that a resumed run's records are complete."""

    def __init__(self):
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.evaluations: list[dict] = []

    def append(self, step: int, loss: float) -> None:
        self.steps.append(int(step))
        self.losses.append(float(loss))

    def recent_mean(self, count: int = 100) -> float:
        """Mean of the last ``count`` losses (nan before the first)."""
        return float(np.mean(self.losses[-count:])) if self.losses else float("nan")

    def state_dict(self) -> dict:
        return {"steps": list(self.steps), "losses": list(self.losses), "evaluations": list(self.evaluations)}

    def load_state_dict(self, state: dict) -> None:
        self.steps = [int(s) for s in state["steps"]]
        self.losses = [float(v) for v in state["losses"]]
        self.evaluations = [dict(e) for e in state["evaluations"]]


def save_loss_plot(history: TrainingHistory, path: str, title: str = "training loss") -> None:
    """Plot the per-step loss (light) and its running mean over ~2 % of the run (dark), log scale, to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = np.asarray(history.steps), np.asarray(history.losses)
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    if len(losses):
        window = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes.plot(steps, losses, color="C0", alpha=0.3, lw=0.5, label="per step")
        axes.plot(steps[window - 1 :], smooth, color="C0", lw=1.5, label=f"mean of {window} steps")
        if (losses > 0).all():
            axes.set_yscale("log")
        axes.legend()
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_json(path: str, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically (a temporary file renamed over ``path``)."""
    staging = path + ".tmp"
    with open(staging, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(staging, path)


def held_out_bound(
    model,
    scheduler,
    images: torch.Tensor,
    *,
    num_timesteps: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
) -> VariationalBound:
    """The bound (Eq. 5) of ``images`` (in [−1, 1], 8-bit grid) in bits/dim, per image and averaged.

    ``num_timesteps`` None or ≥ T: every timestep (the full bound). Fewer (K): an unbiased estimate from the K/2
    smallest timesteps, evaluated exactly, and K/2 drawn uniformly without replacement from the rest with ``seed``
    (:meth:`TimestepPlan.stratified`), whose ``standard_error`` combines the spread over images with the error of
    the drawn subset. Images go through the model in chunks of ``batch_size``; the noise is drawn from ``seed``."""
    plan = TimestepPlan.stratified(scheduler.config.num_train_timesteps, num_timesteps, seed)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    return estimate_bound(model, scheduler, images, plan, generator=generator, batch_size=batch_size)


def sample_grid(pipeline, num_images: int, num_inference_steps: int, seed: int, min_size: int = 32):
    """Draw ``num_images`` with ``pipeline`` from ``seed``; return (uint8 images ``[N, C, H, W]``, PIL grid).

    The images are separated by a grey border of 2 pixels, and images smaller than ``min_size`` pixels are
    enlarged (nearest neighbour) so that they can be seen."""
    from PIL import Image

    generator = torch.Generator(device=pipeline.device).manual_seed(seed)
    images = pipeline(
        batch_size=num_images, generator=generator, num_inference_steps=num_inference_steps, output_type="pt"
    ).images
    uint8 = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    grid = make_grid(images.cpu(), padding=2, pad_value=96)
    scale = max(1, -(-min_size // images.shape[-1]))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return uint8, grid

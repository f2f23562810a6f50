"""One training step (Algorithm 1) and the network that evaluations run on.

:func:`training_step` draws t and ε for a micro-batch from (seed, micro-step), noises the images (Eq. 4), runs the
network and returns the weighted loss with the timesteps and bound terms the importance sampler learns from — all
without a host–device synchronisation: t, the weights and ε are drawn on the host and copied to the device without
waiting (:func:`~hf_ddpm.host_transfers.to_device`), and nothing is read back.
:class:`EvaluationNetwork` is a float32 copy of the UNet, made before Accelerate wraps the training one, into which
the EMA (or raw) weights are copied for sampling, the held-out bound and the saved pipeline — so evaluating never
touches the training network, its mixed-precision forward or its optimizer state.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch

from ..host_transfers import to_device
from ..losses import training_loss
from .data_order import step_generator


class StepResult(NamedTuple):
    """The loss to back-propagate; and every process's timesteps and bound terms L_t of the micro-batch (gathered),
    for the importance sampler — None with uniform sampling."""

    loss: torch.Tensor
    timesteps: torch.Tensor | None
    bound_terms: torch.Tensor | None


def training_step(accelerator, unet, scheduler, timestep_sampler, clean: torch.Tensor, *, seed: int,
                  micro_step: int, loss_type: str, importance: bool, simple_weight: float = 1.0,
                  class_labels: torch.Tensor | None = None, label_dropout: float = 0.0,
                  null_class_label: int | None = None) -> StepResult:
    """Algorithm 1 on one micro-batch of clean images x_0 (this process's share of the global micro-batch), with the
    objective ``loss_type`` (``simple_weight``: its c when it is ``"vlb_simple"``).

    t and ε are drawn on the host for the whole global micro-batch from (seed, micro_step) and each process takes its
    slice, so a run's draws depend neither on how its global batch is split over processes nor on the device.
    ``class_labels`` (class-conditional training): each is replaced by ``null_class_label`` with probability
    ``label_dropout`` (classifier-free guidance), drawn after t and ε from the same generator — seeded and resumable
    like them."""
    generator = step_generator(seed, micro_step)
    size, rank, processes = clean.shape[0], accelerator.process_index, accelerator.num_processes
    timesteps, weights = timestep_sampler.sample(size * processes, clean.device, generator=generator)
    noise = torch.randn((size * processes, *clean.shape[1:]), generator=generator, dtype=clean.dtype)
    mine = slice(rank * size, (rank + 1) * size)
    timesteps, weights, noise = timesteps[mine], weights[mine], to_device(noise[mine], clean.device)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    conditioning = {}
    if class_labels is not None:
        dropped = torch.rand(size * processes, generator=generator)[mine] < label_dropout
        conditioning["class_labels"] = torch.where(to_device(dropped, class_labels.device), null_class_label,
                                                   class_labels)
    model_output = unet(noisy, timesteps, **conditioning).sample
    per_example, terms = training_loss(scheduler, model_output, clean, noisy, noise, timesteps, loss_type,
                                       simple_weight=simple_weight, bound_terms=importance)
    loss = (per_example * weights).mean()
    if not importance:
        return StepResult(loss, None, None)
    return StepResult(loss, accelerator.gather(timesteps), accelerator.gather(terms.float()))


class EvaluationNetwork:
    """A float32 copy of the UNet for evaluation: :meth:`load` copies the EMA weights (or, without EMA, the training
    network's current weights) into it and returns it, in eval mode without gradients."""

    def __init__(self, unet: torch.nn.Module, device):
        self.unet = copy.deepcopy(unet).to(device).eval().requires_grad_(False)  # built in float32

    def load(self, training_unet: torch.nn.Module, ema=None) -> torch.nn.Module:
        """The copy holding the weights to evaluate; ``training_unet`` is the unwrapped training network."""
        if ema is not None:
            ema.copy_to(self.unet.parameters())
        else:
            self.unet.load_state_dict(training_unet.state_dict())
        return self.unet

"""No host–device synchronisation per step in the losses, the bound term, the pipeline loop and the training step,
counted with tests/host_syncs.py (CPU tensors stand in for device tensors; benchmarks/gpu_check.py checks the same
paths on a GPU under ``torch.cuda.set_sync_debug_mode("error")``, which also sees host → device copies)."""

import os

import numpy as np
import pytest
import torch
from accelerate import Accelerator

import hf_ddpm.host_transfers
from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler, training_loss
from hf_ddpm.likelihood import bound_term
from hf_ddpm.losses import LOSS_TYPES, check_objective, make_timestep_sampler
from hf_ddpm.training.step import training_step
from helpers import tiny_unet
from host_syncs import HostSyncCounter

SHAPE = (4, 1, 8, 8)
CONFIGS = [dict(), dict(variance_type="fixed_large", clip_sample=False, prediction_type="v_prediction"),
           dict(thresholding=True, prediction_type="sample"), dict(variance_type="learned_range"),
           dict(variance_type="learned", rescale_betas_zero_snr=True, prediction_type="v_prediction")]


def objectives(variance_type: str) -> list[str]:
    """The loss types ``check_objective`` accepts for ``variance_type``."""
    accepted = []
    for loss_type in LOSS_TYPES:
        try:
            check_objective(variance_type, loss_type)
        except ValueError:
            continue
        accepted.append(loss_type)
    return accepted


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_losses_and_bound_term_make_no_host_sync(config):
    """training_loss (every objective the variance type accepts, with the bound terms the importance sampler takes)
    and bound_term at per-sample timesteps, the decoder's t = 0 and the last t among them: 0 reads."""
    s = DDPMDocScheduler(**config)
    channels = SHAPE[1] * (2 if s.config.variance_type.startswith("learned") else 1)
    x0, noise = torch.rand(SHAPE) * 2 - 1, torch.randn(SHAPE)
    t = torch.tensor([0, 1, 500, 998])
    out = torch.randn(SHAPE[0], channels, *SHAPE[2:]).tanh()
    for loss_type in objectives(s.config.variance_type):
        with HostSyncCounter() as syncs:
            x_t = s.add_noise(x0, noise, t)
            loss = training_loss(s, out, x0, x_t, noise, t, loss_type, bound_terms=True)
            bound_term(s, out, x0, x_t, t)
        assert syncs.count == 0, f"{loss_type}: {syncs.report()}"
        assert loss.bound_terms.shape == (SHAPE[0],) and torch.isfinite(loss.per_example).all()


@pytest.mark.parametrize("callback", [False, True])
def test_pipeline_loop_makes_no_host_sync_per_step(callback):
    """A 3-step and an 11-step call read the same number of values back: every read is once per call (building the
    chain's tables on the host, its timesteps as host ints, the NaN check after the loop), none per step."""
    pipe = DDPMDocPipeline(unet=tiny_unet(), scheduler=DDPMDocScheduler(variance_type="fixed_large"))
    pipe.set_progress_bar_config(disable=True)
    seen = []
    on_step = (lambda p, i, t, kwargs: seen.append(i) or {}) if callback else None
    counts = {}
    for steps in (3, 11):
        with HostSyncCounter() as syncs:
            pipe(batch_size=2, num_inference_steps=steps, output_type="pt", callback_on_step_end=on_step,
                 generator=torch.Generator().manual_seed(0))
        counts[steps] = syncs.calls
    assert len(counts[3]) == len(counts[11]), (counts[3], counts[11])
    assert seen == (list(range(3)) + list(range(11)) if callback else [])


@pytest.mark.parametrize("sampler_name, loss_type, variance_type",
                         [("uniform", "simple", "fixed_small"), ("importance", "hybrid", "learned_range"),
                          ("importance", "vlb", "fixed_large"), ("importance", "vlb_simple", "learned_range")])
def test_training_step_makes_no_host_sync(sampler_name, loss_type, variance_type):
    """Micro-steps as the trainer runs them (training_step, backward, optimizer step, the sampler's update): nothing
    the step computes is read back. The importance sampler reads only its host copies of the previous step's terms
    (``HostCopy.tolist``, in host_transfers.py: on a GPU, pinned host memory that a non-blocking copy filled, behind
    an event; on this CPU the counter cannot tell them from device tensors and counts them)."""
    accelerator = Accelerator(cpu=True)
    scheduler = DDPMDocScheduler(num_train_timesteps=20, variance_type=variance_type)
    unet = tiny_unet(out_channels=2 if variance_type.startswith("learned") else 1)
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3, fused=True)  # as the trainer builds it
    sampler = make_timestep_sampler(sampler_name, 20)
    importance = sampler_name == "importance"
    clean = torch.rand(8, 1, 8, 8) * 2 - 1

    def micro_step(index: int):
        result = training_step(accelerator, unet, scheduler, sampler, clean, seed=0, micro_step=index,
                               loss_type=loss_type, importance=importance, simple_weight=20.0)
        if importance:
            sampler.update(result.timesteps, result.bound_terms)
        accelerator.backward(result.loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if importance:  # a full history at every t: the steps below sample from it
        sampler.update(torch.arange(20).repeat(10), torch.rand(200) + 0.5)
    for index in range(2):
        micro_step(index)
    with HostSyncCounter() as syncs:
        for index in range(2, 5):
            micro_step(index)
    host_copy_reads = [where for name, where in syncs.calls if name == "tolist"
                       and where.rsplit(":", 1)[0] == os.path.abspath(hf_ddpm.host_transfers.__file__)]
    assert len(host_copy_reads) == syncs.count, syncs.report()
    assert syncs.count == (2 * 3 if importance else 0), syncs.report()  # timesteps and terms of each earlier update
    if importance:
        assert not np.allclose(sampler.probabilities(), 1 / 20)  # the steps sampled t from the history

"""openai's improved-diffusion and guided-diffusion ("ADM") checkpoints as :class:`DDPMDocPipeline` s.

``from_guided_diffusion(state_dict, **flags)`` and ``from_improved_diffusion(state_dict, **flags)`` take a
checkpoint's state dict (``load_checkpoint(path)`` reads one) and the model and diffusion flags it was trained with,
as openai's READMEs write them (``MODEL_FLAGS``/``DIFFUSION_FLAGS``; the rest take the codebase's defaults), and
return a pipeline with a diffusers ``UNet2DModel`` computing the same network (:mod:`.unet_mapping`) and a
``DDPMDocScheduler`` of the same diffusion (:mod:`.diffusion`). ``respaced_timesteps`` gives the chains of openai's
``timestep_respacing``.

Example:
    >>> from hf_ddpm.convert import from_guided_diffusion, load_checkpoint, respaced_timesteps
    >>> pipe = from_guided_diffusion(load_checkpoint("256x256_diffusion_uncond.pt"), image_size=256,
    ...     num_channels=256, num_res_blocks=2, num_head_channels=64, attention_resolutions="32,16,8",
    ...     resblock_updown=True, use_fp16=True, learn_sigma=True, noise_schedule="linear")
    >>> images = pipe(batch_size=4, timesteps=respaced_timesteps(1000, "250")).images
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from ..pipelines import DDPMDocPipeline
from ..scheduler import DDPMDocScheduler
from .checkpoint import check_state_dict, load_checkpoint
from .diagnosis import check_keys
from .diffusion import scheduler_config
from .flags import CODEBASES, GUIDED_DIFFUSION, IMPROVED_DIFFUSION, Codebase
from .respacing import respaced_timesteps
from .unet_mapping import convert_state_dict, expected_keys, key_maps, unet_config

__all__ = ["CODEBASES", "from_guided_diffusion", "from_improved_diffusion", "from_openai", "load_checkpoint",
           "respaced_timesteps"]


def from_openai(codebase: Codebase, state_dict, flags: dict) -> DDPMDocPipeline:
    """The pipeline of an openai checkpoint of ``codebase`` trained with ``flags``. Flags the codebase does not
    have, values of the wrong type, what ``UNet2DModel`` cannot express and a state dict whose keys or shapes do not
    fit the flags are each a :class:`~hf_ddpm.errors.ParameterError` naming the flag (or ``state_dict``), raised
    before anything is built."""
    resolved = codebase.resolve(flags)
    state_dict = check_state_dict(state_dict)
    config = unet_config(resolved)
    with torch.device("meta"):  # shapes only: the weights come from the checkpoint
        unet = UNet2DModel(**config)
    maps = key_maps(unet, resolved)
    check_keys(state_dict, expected_keys(maps), resolved)
    unet.load_state_dict(convert_state_dict(state_dict, maps), strict=True, assign=True)
    scheduler = DDPMDocScheduler(**scheduler_config(resolved))
    return DDPMDocPipeline(unet=unet.eval(), scheduler=scheduler, rescale_timesteps=resolved.rescale_timesteps)


def from_guided_diffusion(state_dict, **flags) -> DDPMDocPipeline:
    """A guided-diffusion ("ADM") checkpoint's pipeline; ``flags``: its model and diffusion flags (defaults:
    guided-diffusion's ``model_and_diffusion_defaults()``, and ``clip_denoised=True``)."""
    return from_openai(GUIDED_DIFFUSION, state_dict, flags)


def from_improved_diffusion(state_dict, **flags) -> DDPMDocPipeline:
    """An improved-diffusion checkpoint's pipeline; ``flags``: its model and diffusion flags (defaults:
    improved-diffusion's ``model_and_diffusion_defaults()``, with ``rescale_timesteps=True``, and
    ``clip_denoised=True``)."""
    return from_openai(IMPROVED_DIFFUSION, state_dict, flags)

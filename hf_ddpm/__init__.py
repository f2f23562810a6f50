"""hf-ddpm: Denoising Diffusion Probabilistic Models (Ho et al. 2020) for the Hugging Face ecosystem."""

from .contention import bound_spinning as _bound_spinning

_bound_spinning()  # OpenMP's spin count, before torch loads it (hf_ddpm.contention)

import diffusers as _diffusers  # noqa: E402

from .fourier_unet import FourierUNet2DModel
from .likelihood import bits_per_dim, estimate_bound
from .losses import ImportanceSampler, UniformSampler, training_loss
from .pipelines import DDPMDocPipeline
from .scheduler import DDPMDocScheduler, DDPMDocSchedulerOutput
from .timestep_plan import TimestepPlan
from .variational_bound import VariationalBound

# DiffusionPipeline.from_pretrained looks model_index.json's "_class_name" up as an attribute of the diffusers module
# and never imports the library a repository names; exposing the class there makes plain
# DiffusionPipeline.from_pretrained(<our folder or repo id>) return a DDPMDocPipeline once hf_ddpm is imported.
setattr(_diffusers, "DDPMDocPipeline", DDPMDocPipeline)

__version__ = "0.1.0"
__all__ = [
    "DDPMDocPipeline",
    "DDPMDocScheduler",
    "DDPMDocSchedulerOutput",
    "FourierUNet2DModel",
    "ImportanceSampler",
    "TimestepPlan",
    "UniformSampler",
    "VariationalBound",
    "bits_per_dim",
    "estimate_bound",
    "training_loss",
]

"""hf-ddpm: Denoising Diffusion Probabilistic Models (Ho et al. 2020) for the Hugging Face ecosystem."""

from .likelihood import VariationalBound, bits_per_dim
from .losses import ImportanceSampler, UniformSampler, training_loss
from .pipelines import DDPMDocPipeline
from .scheduler import DDPMDocScheduler, DDPMDocSchedulerOutput

__version__ = "0.1.0"
__all__ = [
    "DDPMDocPipeline",
    "DDPMDocScheduler",
    "DDPMDocSchedulerOutput",
    "ImportanceSampler",
    "UniformSampler",
    "VariationalBound",
    "bits_per_dim",
    "training_loss",
]

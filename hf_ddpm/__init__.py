"""hf-ddpm: Denoising Diffusion Probabilistic Models (Ho et al. 2020) for the Hugging Face ecosystem."""

from .scheduler import DDPMDocScheduler, DDPMDocSchedulerOutput

__version__ = "0.1.0"
__all__ = ["DDPMDocScheduler", "DDPMDocSchedulerOutput"]

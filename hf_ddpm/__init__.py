"""hf-ddpm: Denoising Diffusion Probabilistic Models (Ho et al. 2020) for the Hugging Face ecosystem."""

__version__ = "0.1.0"

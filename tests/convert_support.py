"""openai's reference models for the converter's tests: random-weight guided-diffusion ``UNetModel`` s of tiny widths,
built by guided-diffusion's own ``create_model_and_diffusion`` from the flags the converter is given."""

import torch
from guided_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults

# Two levels at 8×8 (32 and 64 channels), one ResBlock per level, attention at the 4×4 level and in the middle.
TINY = dict(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="4")


def random_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with every parameter drawn from N(0, 0.2²) (openai zero-initialises the last layer of each block,
    which would hide every mapping error behind a zero output), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def openai_model_and_diffusion(seed: int = 0, **flags):
    """guided-diffusion's ``UNetModel`` (random weights) and ``SpacedDiffusion`` for ``flags`` over its
    ``model_and_diffusion_defaults()``."""
    model, diffusion = create_model_and_diffusion(**{**model_and_diffusion_defaults(), **flags})
    return random_weights(model, seed), diffusion


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """‖ours − reference‖ / ‖reference‖."""
    return float((ours.double() - reference.double()).norm() / reference.double().norm())

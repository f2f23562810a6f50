"""Small building blocks shared by the tests: the tiny UNet (one config for every test), with seeded random weights."""

import torch
from diffusers import UNet2DModel

# A few thousand parameters for 8×8 images: two levels, attention at 4×4 (the layout of the presets).
TINY_UNET = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                 norm_num_groups=4, attention_head_dim=8)


def tiny_unet(channels: int = 1, size: int = 8, out_channels: int | None = None, seed: int = 0,
              fourier_periods=None) -> UNet2DModel:
    """The tiny UNet for ``channels``-channel images with random weights (seeded), in eval mode; with
    ``fourier_periods`` the same network as a ``FourierUNet2DModel``."""
    from hf_ddpm import FourierUNet2DModel

    torch.manual_seed(seed)
    config = {**TINY_UNET, "sample_size": size, "in_channels": channels, "out_channels": out_channels or channels}
    unet = FourierUNet2DModel(fourier_periods=fourier_periods, **config) if fourier_periods else UNet2DModel(**config)
    return unet.eval()


def tiny_unet_model(out_channels: int = 1, seed: int = 0):
    """``model(x_t, t) -> tensor`` from a tiny 1-channel UNet (the signature ``bits_per_dim`` takes)."""
    unet = tiny_unet(channels=1, out_channels=out_channels, seed=seed)
    return lambda x, t: unet(x.float(), t).sample

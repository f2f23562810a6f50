"""Small building blocks shared by the tests: tiny UNets with seeded random weights."""

import torch
from diffusers import UNet2DModel


def tiny_unet(channels: int = 1, size: int = 8, out_channels: int | None = None, seed: int = 0) -> UNet2DModel:
    """A UNet2DModel of a few thousand parameters with random weights (seeded)."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=out_channels or channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def tiny_unet_model(out_channels: int = 1, seed: int = 0):
    """``model(x_t, t) -> tensor`` from a tiny 1-channel UNet (the signature ``bits_per_dim`` takes)."""
    unet = tiny_unet(channels=1, out_channels=out_channels, seed=seed)
    return lambda x, t: unet(x.float(), t).sample

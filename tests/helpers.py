"""Small building blocks shared by the tests: the tiny UNet (one config for every test), with seeded random weights."""

import torch
from diffusers import UNet2DModel

# A few thousand parameters for 8×8 images: two levels, attention at 4×4 (the layout of the presets).
TINY_UNET = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                 norm_num_groups=4, attention_head_dim=8)


def tiny_unet(channels: int = 1, size: int = 8, out_channels: int | None = None, seed: int = 0,
              fourier_periods=None, num_class_embeds: int | None = None) -> UNet2DModel:
    """The tiny UNet for ``channels``-channel images with random weights (seeded), in eval mode; with
    ``fourier_periods`` the same network as a ``FourierUNet2DModel``; with ``num_class_embeds`` class-conditional."""
    from hf_ddpm import FourierUNet2DModel

    torch.manual_seed(seed)
    config = {**TINY_UNET, "sample_size": size, "in_channels": channels, "out_channels": out_channels or channels,
              "num_class_embeds": num_class_embeds}
    unet = FourierUNet2DModel(fourier_periods=fourier_periods, **config) if fourier_periods else UNet2DModel(**config)
    return unet.eval()


def tiny_unet_model(out_channels: int = 1, seed: int = 0):
    """``model(x_t, t) -> tensor`` from a tiny 1-channel UNet (the signature ``bits_per_dim`` takes)."""
    unet = tiny_unet(channels=1, out_channels=out_channels, seed=seed)
    return lambda x, t: unet(x.float(), t).sample


CLASS_NAMES = ("cat", "dog", "emu")


def tiny_conditional_pipeline(class_names=CLASS_NAMES, *, null: bool = True, class_frequencies=None,
                              out_channels: int | None = None, seed: int = 0, **scheduler_config):
    """A DDPMDocPipeline with the tiny UNet conditioned on ``class_names`` (K classes; with ``null``, the null label
    K as the trainer saves it, num_class_embeds = K + 1), progress bars off; ``scheduler_config``: the
    DDPMDocScheduler's (default T = 8)."""
    from hf_ddpm import DDPMDocPipeline, DDPMDocScheduler

    K = len(class_names)
    unet = tiny_unet(out_channels=out_channels, seed=seed, num_class_embeds=K + 1 if null else K)
    scheduler = DDPMDocScheduler(**{"num_train_timesteps": 8, **scheduler_config})
    pipe = DDPMDocPipeline(unet=unet, scheduler=scheduler, class_names=list(class_names),
                           null_class_label=K if null else None, class_frequencies=class_frequencies)
    pipe.set_progress_bar_config(disable=True)
    return pipe

"""A ``UNet2DModel`` that also sees Fourier features of its input: where x_t sits within the 8-bit grid.

At small t the reverse step needs x_0 to a precision far below the spacing of the data's values: with
ε-prediction, ε_θ must return (x_t − √ᾱ_t x_0)/√(1 − ᾱ_t), the input's offset from the nearest data value
divided by a noise scale of a few thousandths. A smooth network of x_t resolves that offset poorly, and every
unresolved halving of σ_t costs about a bit per pixel in the bound (L_{t−1} and L_0, Eq. 5). Periodic functions
of the input measure the offset directly (the Fourier features of Kingma et al. 2021, "Variational Diffusion
Models", §3.4 and Appendix C): with u = 127.5 (x + 1) the input in 8-bit units, each period P adds

    sin(2π u / P),  cos(2π u / P)

per image channel, and the network's first convolution reads ``[x, features]``. Periods that are powers of two
of the 8-bit bin match data stored as 8-bit values: P places u within a cycle of P bins (P = 16 is the spacing of
the digits' 17 levels; P = 1 would place it within one bin, but at all but the first few t that feature is noise).

The config is ``UNet2DModel``'s (``in_channels`` stays the image's channels, so pipelines draw noise of the right
shape) plus ``fourier_periods``; ``save_pretrained``/``from_pretrained`` and ``DiffusionPipeline`` loading work as
for any diffusers model once ``hf_ddpm`` is importable.
"""

from __future__ import annotations

import math

import torch
from diffusers import ModelMixin, UNet2DModel  # noqa: F401 — ModelMixin: see below
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .errors import ParameterError

# A pipeline's model_index.json names this module as the unet's library; diffusers' loader then looks the base
# classes it knows (ModelMixin, …) up as attributes of this module to find from_pretrained, so ModelMixin is
# imported here.

EIGHT_BIT_HALF_RANGE = 127.5  # x ∈ [−1, 1] ↔ u = 127.5 (x + 1) ∈ [0, 255]


def fourier_features(sample: torch.Tensor, periods: tuple[float, ...]) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, 2·len(periods)·C, H, W]``: sin and cos of 2π u / P for each period P (u in 8-bit
    units), computed in float32 at least (the phase reaches 2π·255/P)."""
    u = (sample.to(torch.promote_types(sample.dtype, torch.float32)) + 1.0) * EIGHT_BIT_HALF_RANGE
    features = []
    for period in periods:
        phase = u * (2.0 * math.pi / period)
        features += [torch.sin(phase), torch.cos(phase)]
    return torch.cat(features, dim=1).to(sample.dtype)


def input_channels(image_channels: int, periods) -> int:
    """The channels ``conv_in`` reads: the image's and, per image channel, a sin and a cos for each period."""
    return image_channels * (1 + 2 * len(periods))


def check_fourier_periods(periods) -> tuple[float, ...]:
    """The periods as a tuple of positive floats; a ``ParameterError`` naming the bad value otherwise."""
    try:
        values = tuple(float(period) for period in periods)
    except (TypeError, ValueError) as error:
        raise ParameterError("fourier_periods", f"must be a sequence of positive numbers, got {periods!r}") from error
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ParameterError("fourier_periods", f"must be a non-empty sequence of positive numbers, got {periods!r}")
    return values


class FourierUNet2DModel(UNet2DModel):
    """``UNet2DModel`` whose ``conv_in`` reads the image and its :func:`fourier_features`.

    Args:
        fourier_periods: the periods P in 8-bit units (default 2, 4, 8, 16).
        **kwargs: ``UNet2DModel``'s arguments; ``in_channels`` is the image's channel count.
    """

    @register_to_config
    def __init__(self, fourier_periods: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0), **kwargs):
        periods = check_fourier_periods(fourier_periods)
        super().__init__(**kwargs)
        self.register_to_config(fourier_periods=list(periods))
        image_conv = self.conv_in
        self.conv_in = torch.nn.Conv2d(
            input_channels(image_conv.in_channels, periods),
            image_conv.out_channels,
            kernel_size=image_conv.kernel_size,
            padding=image_conv.padding,
        )

    @staticmethod
    def _get_init_keys(input_class):
        """The config keys ``from_config`` passes on: ``fourier_periods`` and every ``UNet2DModel`` argument (this
        ``__init__`` takes them as ``**kwargs``)."""
        keys = ConfigMixin._get_init_keys(input_class)
        if isinstance(input_class, type) and issubclass(input_class, FourierUNet2DModel):
            keys |= ConfigMixin._get_init_keys(UNet2DModel)
        return keys

    def forward(self, sample: torch.Tensor, timestep, *args, **kwargs):
        """``UNet2DModel.forward`` on ``[x, fourier_features(x)]``; same arguments and outputs."""
        periods = tuple(self.config.fourier_periods)
        return super().forward(torch.cat([sample, fourier_features(sample, periods)], dim=1), timestep, *args, **kwargs)
